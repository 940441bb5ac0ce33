//! Prometheus metrics, served by the admin listener at `GET /metrics` (OpenMetrics text).
//!
//! The request path pays for two updates through handles resolved once per version
//! ([`VersionMetrics`]): no label lookup, no allocation per request. Gauges that describe the
//! registry (in-flight requests, traffic weights) are read from it when scraped.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry as MetricRegistry;

use crate::deploy::Registry;
use crate::session::StoreOp;

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
struct SessionLabels {
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

/// Status classes, indexed by `status / 100 - 1`.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Every metric the host exports.
#[derive(Debug)]
pub struct Metrics {
    registry: MetricRegistry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily<VersionLabels>,
    in_flight: Family<VersionLabels, Gauge>,
    stuck: Family<VersionLabels, Gauge>,
    weight: Family<VersionLabels, Gauge>,
    swaps: Family<AppLabels, Counter>,
    swap_seconds: HistogramFamily<AppLabels>,
    drain_seconds: HistogramFamily<AppLabels>,
    warmup_failures: Family<AppLabels, Counter>,
    rollbacks: Family<RollbackLabels, Counter>,
    quarantined: Family<VersionLabels, Gauge>,
    rejected: Counter,
    session_ops: Family<SessionLabels, Counter>,
    session_errors: Family<SessionLabels, Counter>,
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
            in_flight: Family::default(),
            stuck: Family::default(),
            weight: Family::default(),
            swaps: Family::default(),
            swap_seconds: Family::new_with_constructor(swap_histogram as fn() -> Histogram),
            drain_seconds: Family::new_with_constructor(swap_histogram as fn() -> Histogram),
            warmup_failures: Family::default(),
            rollbacks: Family::default(),
            quarantined: Family::default(),
            rejected: Counter::default(),
            session_ops: Family::default(),
            session_errors: Family::default(),
            registry: MetricRegistry::default(),
        };
        registry.register(
            "requests",
            "Requests answered by an app version, by status class",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its response, per app version",
            m.latency.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Requests running on an app version now",
            m.in_flight.clone(),
        );
        registry.register(
            "stuck_handlers",
            "Handlers of an app version running past the request timeout",
            m.stuck.clone(),
        );
        registry.register(
            "version_weight_percent",
            "Share of an app's new requests a version takes",
            m.weight.clone(),
        );
        registry.register(
            "swaps",
            "Switches of an app's active version from one version to another",
            m.swaps.clone(),
        );
        registry.register(
            "swap_duration_seconds",
            "Time from a module file's detection (or upload) to the switch",
            m.swap_seconds.clone(),
        );
        registry.register(
            "drain_duration_seconds",
            "Time from a switch until the old version's last request finished",
            m.drain_seconds.clone(),
        );
        registry.register(
            "warmup_failures",
            "New versions refused because init, the warm-up hook or a warm-up request failed",
            m.warmup_failures.clone(),
        );
        registry.register(
            "rollbacks",
            "Automatic switches back to the previous version during a guard window, by cause",
            m.rollbacks.clone(),
        );
        registry.register(
            "quarantined_versions",
            "Versions quarantined because they crashed the serving process (1 while quarantined)",
            m.quarantined.clone(),
        );
        registry.register(
            "module_rejections",
            "Module files refused by the loader (truncated or not a library for this host, no entry symbol, ABI)",
            m.rejected.clone(),
        );
        registry.register(
            "session_store_operations",
            "Session store operations, by operation",
            m.session_ops.clone(),
        );
        registry.register(
            "session_store_errors",
            "Session store operations that failed, by operation",
            m.session_errors.clone(),
        );
        Metrics { registry, ..m }
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

    /// The handles the session front updates, one pair per store operation, resolved once.
    pub fn session_store(&self) -> SessionStoreMetrics {
        let resolve = |family: &Family<SessionLabels, Counter>| {
            StoreOp::ALL.map(|op| family.get_or_create_owned(&SessionLabels { op: op.name() }))
        };
        SessionStoreMetrics {
            ops: resolve(&self.session_ops),
            errors: resolve(&self.session_errors),
        }
    }

    /// The exposition of every metric, with the gauges read from `registry` now.
    pub fn encode(&self, registry: &Registry) -> String {
        self.in_flight.clear();
        self.stuck.clear();
        self.weight.clear();
        self.quarantined.clear();
        for q in registry.quarantine() {
            self.quarantined
                .get_or_create(&VersionLabels {
                    app: q.app,
                    version: q.version,
                })
                .set(1);
        }
        for slot in registry.apps() {
            for version in slot.versions() {
                if matches!(
                    version.state(),
                    crate::deploy::State::Retired | crate::deploy::State::Failed
                ) {
                    continue;
                }
                let labels = VersionLabels {
                    app: slot.name().to_owned(),
                    version: version.info().version.clone(),
                };
                // Two live versions can share a version string (the same version rebuilt).
                self.in_flight
                    .get_or_create(&labels)
                    .inc_by(version.in_flight() as i64);
                self.stuck
                    .get_or_create(&labels)
                    .inc_by(version.stuck() as i64);
                self.weight
                    .get_or_create(&labels)
                    .inc_by(i64::from(slot.weight(&version)));
            }
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            out = format!("# metrics do not encode: {e}\n");
        }
        out
    }
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

/// Session store operations and their failures, by operation: what the session front counts
/// on every store call (one relaxed atomic add, two when it failed).
#[derive(Debug, Clone, Default)]
pub struct SessionStoreMetrics {
    ops: [Counter; StoreOp::ALL.len()],
    errors: [Counter; StoreOp::ALL.len()],
}

impl SessionStoreMetrics {
    /// Counts one store call of kind `op`, and whether it failed.
    pub fn record(&self, op: StoreOp, failed: bool) {
        self.ops[op.index()].inc();
        if failed {
            self.errors[op.index()].inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_handles_count_into_the_exposition() {
        let metrics = Metrics::new();
        let v = metrics.version("hello", "1.0.0");
        v.observe(http::StatusCode::OK, Duration::from_millis(2));
        v.observe(http::StatusCode::NOT_FOUND, Duration::from_millis(1));
        metrics.swapped("hello", Duration::from_millis(30));
        metrics.rolled_back("hello", "errors");
        let sessions = metrics.session_store();
        sessions.record(StoreOp::Load, true);
        sessions.record(StoreOp::Save, false);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &metrics.registry).unwrap();
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
}
