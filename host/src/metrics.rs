//! Prometheus metrics, served by the admin listener at `GET /metrics` (OpenMetrics text).
//!
//! A leaf: this module imports nothing else of the host. The request path pays for two updates
//! through handles resolved once per version ([`VersionMetrics`]): no label lookup, no
//! allocation per request. Session store calls are counted through [`OpCounters`], resolved
//! once for the operation names the session front gives. What describes live state (in-flight
//! requests, traffic weights, quarantined versions) is not kept here at all: its owner registers
//! a [`Collector`] ([`Metrics::register_collector`]) that encodes it from that state on each
//! scrape, with [`encode_gauges`], so concurrent scrapes share no mutable gauge.

use std::fmt;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry as MetricRegistry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabels {
    app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    app: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    app: String,
    version: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RollbackLabels {
    app: String,
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

fn swap_histogram() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// A metric of any kind, so that one table can describe them all at registration.
#[derive(Debug)]
struct AnyMetric(Box<dyn Metric>);

impl EncodeMetric for AnyMetric {
    fn encode(&self, encoder: MetricEncoder<'_>) -> fmt::Result {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

/// Status classes, indexed by `status / 100 - 1`.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Every metric the host keeps itself, and the collectors that add the rest on each scrape.
#[derive(Debug)]
pub struct Metrics {
    /// Written only to register a collector (at start); every scrape reads it, concurrently.
    registry: RwLock<MetricRegistry>,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily<VersionLabels>,
    swaps: Family<AppLabels, Counter>,
    swap_seconds: HistogramFamily<AppLabels>,
    drain_seconds: HistogramFamily<AppLabels>,
    warmup_failures: Family<AppLabels, Counter>,
    rollbacks: Family<RollbackLabels, Counter>,
    rejected: Counter,
    session_ops: Family<OpLabels, Counter>,
    session_errors: Family<OpLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All metrics, registered under the `baton_` prefix.
    pub fn new() -> Metrics {
        let mut registry = MetricRegistry::with_prefix("baton");
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            swaps: Family::default(),
            swap_seconds: Family::new_with_constructor(swap_histogram as fn() -> Histogram),
            drain_seconds: Family::new_with_constructor(swap_histogram as fn() -> Histogram),
            warmup_failures: Family::default(),
            rollbacks: Family::default(),
            rejected: Counter::default(),
            session_ops: Family::default(),
            session_errors: Family::default(),
            registry: RwLock::default(),
        };
        #[rustfmt::skip]
        let described: [(&str, Box<dyn Metric>, &str); 10] = [
            ("requests", Box::new(m.requests.clone()), "Requests answered by an app version, by status class"),
            ("request_duration_seconds", Box::new(m.latency.clone()), "Time from a request's arrival to its response, per app version"),
            ("swaps", Box::new(m.swaps.clone()), "Switches of an app's active version from one version to another"),
            ("swap_duration_seconds", Box::new(m.swap_seconds.clone()), "Time from a module file's detection (or upload) to the switch"),
            ("drain_duration_seconds", Box::new(m.drain_seconds.clone()), "Time from a switch until the old version's last request finished"),
            ("warmup_failures", Box::new(m.warmup_failures.clone()), "New versions refused because init, the warm-up hook or a warm-up request failed"),
            ("rollbacks", Box::new(m.rollbacks.clone()), "Automatic switches back to the previous version during a guard window, by cause"),
            ("module_rejections", Box::new(m.rejected.clone()), "Module files refused by the loader (truncated or not a library for this host, no entry symbol, ABI)"),
            ("session_store_operations", Box::new(m.session_ops.clone()), "Session store operations, by operation"),
            ("session_store_errors", Box::new(m.session_errors.clone()), "Session store operations that failed, by operation"),
        ];
        for (name, metric, help) in described {
            registry.register(name, help, AnyMetric(metric));
        }
        Metrics {
            registry: RwLock::new(registry),
            ..m
        }
    }

    /// The handles one version's requests update.
    pub fn version(&self, app: &str, version: &str) -> VersionMetrics {
        let by_class = CLASSES.map(|status| {
            self.requests.get_or_create_owned(&RequestLabels {
                app: app.to_owned(),
                version: version.to_owned(),
                status,
            })
        });
        let latency = self.latency.get_or_create_owned(&VersionLabels {
            app: app.to_owned(),
            version: version.to_owned(),
        });
        VersionMetrics { by_class, latency }
    }

    /// An app's active version was switched, `took` after its file was detected.
    pub fn swapped(&self, app: &str, took: Duration) {
        let labels = AppLabels {
            app: app.to_owned(),
        };
        self.swaps.get_or_create(&labels).inc();
        self.swap_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// An old version of `app` finished its last request `took` after the switch.
    pub fn drained(&self, app: &str, took: Duration) {
        self.drain_seconds
            .get_or_create(&AppLabels {
                app: app.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// A new version of `app` failed to start.
    pub fn warmup_failed(&self, app: &str) {
        self.warmup_failures
            .get_or_create(&AppLabels {
                app: app.to_owned(),
            })
            .inc();
    }

    /// The guard switched `app` back to its previous version because of `cause` (`errors` or
    /// `latency`).
    pub fn rolled_back(&self, app: &str, cause: &'static str) {
        self.rollbacks
            .get_or_create(&RollbackLabels {
                app: app.to_owned(),
                cause,
            })
            .inc();
    }

    /// The loader refused a module file.
    pub fn module_rejected(&self) {
        self.rejected.inc();
    }

    /// The counters the session front updates, one pair per store operation in `ops` (the
    /// `op` label of each), resolved once so that every operation is exported from the start.
    pub fn session_store<const N: usize>(&self, ops: [&'static str; N]) -> OpCounters<N> {
        let resolve = |family: &Family<OpLabels, Counter>| {
            ops.map(|op| family.get_or_create_owned(&OpLabels { op }))
        };
        OpCounters {
            ops: resolve(&self.session_ops),
            errors: resolve(&self.session_errors),
        }
    }

    /// Adds `collector`'s metrics to every later scrape, under the `baton_` prefix.
    pub fn register_collector(&self, collector: Box<dyn Collector>) {
        // Poison is harmless: a registration either pushed its collector or did not.
        self.registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .register_collector(collector);
    }

    /// The exposition of every metric, with the collectors' metrics read now.
    pub fn encode(&self) -> String {
        let registry = self.registry.read().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            out = format!("# metrics do not encode: {e}\n");
        }
        out
    }
}

/// Encodes one gauge family for a [`Collector`]: `name` (prefixed with `baton_`) with `help`,
/// one sample per label set. A family without samples is left out, as a registered one is.
///
/// # Errors
/// The encoder's error.
pub(crate) fn encode_gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, i64)>,
) -> fmt::Result {
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let gauge_type = ConstGauge::new(0_i64).metric_type();
    let mut family = encoder.encode_descriptor(name, help, None, gauge_type)?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One version's request metrics, resolved once.
#[derive(Debug, Clone)]
pub struct VersionMetrics {
    by_class: [Counter; 5],
    latency: Histogram,
}

impl VersionMetrics {
    /// Counts one answered request.
    pub fn observe(&self, status: http::StatusCode, took: Duration) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].inc();
        self.latency.observe(took.as_secs_f64());
    }
}

/// Calls by operation and their failures: what the session front counts on every store call
/// (one relaxed atomic add, two when it failed). Operations are numbered as in the names given to
/// [`Metrics::session_store`]; the default counts into counters no scrape shows.
#[derive(Debug, Clone)]
pub struct OpCounters<const N: usize> {
    ops: [Counter; N],
    errors: [Counter; N],
}

impl<const N: usize> Default for OpCounters<N> {
    fn default() -> Self {
        OpCounters {
            ops: std::array::from_fn(|_| Counter::default()),
            errors: std::array::from_fn(|_| Counter::default()),
        }
    }
}

impl<const N: usize> OpCounters<N> {
    /// Counts one call of operation number `op`, and whether it failed.
    ///
    /// # Panics
    /// If `op` is not below `N`.
    pub fn record(&self, op: usize, failed: bool) {
        self.ops[op].inc();
        if failed {
            self.errors[op].inc();
        }
    }

    /// Calls of operation number `op` so far, and how many of them failed.
    ///
    /// # Panics
    /// If `op` is not below `N`.
    pub fn count(&self, op: usize) -> (u64, u64) {
        (self.ops[op].get(), self.errors[op].get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    #[test]
    fn version_handles_count_into_the_exposition() {
        let metrics = Metrics::new();
        let v = metrics.version("hello", "1.0.0");
        v.observe(http::StatusCode::OK, Duration::from_millis(2));
        v.observe(http::StatusCode::NOT_FOUND, Duration::from_millis(1));
        metrics.swapped("hello", Duration::from_millis(30));
        metrics.rolled_back("hello", "errors");
        let sessions = metrics.session_store(["load", "save"]);
        sessions.record(0, true);
        sessions.record(1, false);
        let out = metrics.encode();
        assert!(
            out.contains(r#"baton_requests_total{app="hello",version="1.0.0",status="2xx"} 1"#),
            "{out}"
        );
        assert!(out.contains(r#"status="4xx"} 1"#), "{out}");
        assert!(out.contains(r#"baton_swaps_total{app="hello"} 1"#), "{out}");
        assert!(
            out.contains(r#"baton_rollbacks_total{app="hello",cause="errors"} 1"#),
            "{out}"
        );
        assert!(
            out.contains("baton_request_duration_seconds_bucket"),
            "{out}"
        );
        assert!(
            out.contains(r#"baton_session_store_errors_total{op="load"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"baton_session_store_operations_total{op="save"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"baton_session_store_errors_total{op="save"} 0"#),
            "every operation is exported from the start: {out}"
        );
    }

    /// Gauges of `apps`, one per app; with `overlap`, each scrape waits inside the collector
    /// until another scrape is there too.
    #[derive(Debug)]
    struct Apps {
        apps: Vec<&'static str>,
        overlap: Option<Arc<AtomicUsize>>,
    }

    impl Collector for Apps {
        fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
            if let Some(inside) = &self.overlap {
                inside.fetch_add(1, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_secs(10);
                while inside.load(Ordering::SeqCst) < 2 {
                    assert!(Instant::now() < deadline, "the scrapes did not overlap");
                    std::thread::yield_now();
                }
            }
            let samples = self
                .apps
                .iter()
                .zip(1..)
                .map(|(app, n)| ([("app", *app)], n));
            encode_gauges(&mut encoder, "apps_seen", "Apps, numbered", samples)?;
            encode_gauges(
                &mut encoder,
                "nothing",
                "Never sampled",
                Vec::<([(&str, &str); 1], i64)>::new(),
            )
        }
    }

    #[test]
    fn collectors_encode_their_gauges_and_leave_empty_ones_out() {
        let metrics = Metrics::new();
        metrics.register_collector(Box::new(Apps {
            apps: vec!["a", "b"],
            overlap: None,
        }));
        let out = metrics.encode();
        assert!(
            out.contains("# HELP baton_apps_seen Apps, numbered\n"),
            "{out}"
        );
        assert!(out.contains("# TYPE baton_apps_seen gauge\n"), "{out}");
        assert!(out.contains("baton_apps_seen{app=\"a\"} 1\n"), "{out}");
        assert!(out.contains("baton_apps_seen{app=\"b\"} 2\n"), "{out}");
        assert!(!out.contains("baton_nothing"), "{out}");
        assert!(out.ends_with("# EOF\n"), "{out}");
    }

    #[test]
    fn overlapping_scrapes_both_see_complete_output() {
        let metrics = Arc::new(Metrics::new());
        metrics.version("hello", "1.0.0");
        metrics.register_collector(Box::new(Apps {
            apps: vec!["a", "b", "c"],
            overlap: Some(Arc::default()),
        }));
        let scrapes: Vec<_> = (0..2)
            .map(|_| {
                let metrics = Arc::clone(&metrics);
                std::thread::spawn(move || metrics.encode())
            })
            .collect();
        for scrape in scrapes {
            let out = scrape.join().expect("a scrape failed");
            for line in [
                r#"baton_apps_seen{app="a"} 1"#,
                r#"baton_apps_seen{app="b"} 2"#,
                r#"baton_apps_seen{app="c"} 3"#,
                r#"baton_requests_total{app="hello",version="1.0.0",status="2xx"} 0"#,
                "# EOF",
            ] {
                assert!(out.contains(line), "{line} missing from {out}");
            }
        }
    }
}
