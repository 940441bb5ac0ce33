//! What a version's requests came to, for the guard: answered requests, 5xx answers and a
//! latency histogram, counted on the request path with relaxed atomic adds; one snapshot per
//! second kept for the baseline; and the verdict that compares a new version with it.
//!
//! Latencies go into log-linear buckets (four per power of two of microseconds, so a quantile
//! is known within about 12 %), enough to tell "twice as slow" from noise without sorting.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::GuardConfig;

/// Latency buckets: exact below 4 µs, then four per power of two up to 2^30 µs (about 18 min).
const BUCKETS: usize = 116;
const MAX_MICROS: u64 = (1 << 30) - 1;

fn bucket(micros: u64) -> usize {
    let us = micros.min(MAX_MICROS);
    if us < 4 {
        return us as usize;
    }
    let msb = 63 - us.leading_zeros() as usize;
    let sub = ((us >> (msb - 2)) & 0b11) as usize;
    (msb - 1) * 4 + sub
}

/// The middle of bucket `i`, in microseconds.
fn bucket_mid(i: usize) -> f64 {
    if i < 4 {
        return i as f64;
    }
    let msb = i / 4 + 1;
    let sub = (i % 4) as u64;
    let width = 1u64 << (msb - 2);
    ((4 + sub) * width) as f64 + width as f64 / 2.0
}

/// Counts since a version was loaded (or the difference of two such counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Figures {
    requests: u64,
    errors: u64,
    latency: Box<[u64; BUCKETS]>,
}

impl Default for Figures {
    fn default() -> Self {
        Figures {
            requests: 0,
            errors: 0,
            latency: Box::new([0; BUCKETS]),
        }
    }
}

impl Figures {
    /// Answered requests.
    pub(crate) fn requests(&self) -> u64 {
        self.requests
    }

    fn error_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// The latency below which a fraction `q` of the requests were answered.
    fn quantile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_secs_f64(bucket_mid(i) / 1e6));
            }
        }
        None
    }

    /// `self` minus an earlier count of the same version.
    fn since(&self, earlier: &Figures) -> Figures {
        let mut latency = Box::new([0; BUCKETS]);
        for (i, slot) in latency.iter_mut().enumerate() {
            *slot = self.latency[i].saturating_sub(earlier.latency[i]);
        }
        Figures {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            latency,
        }
    }

    /// The figures as shown in status.
    pub(crate) fn summary(&self) -> Traffic {
        Traffic {
            requests: self.requests,
            errors_5xx: self.errors,
            error_ratio: self.error_ratio(),
            p90_ms: self.quantile(0.9).map(|d| d.as_secs_f64() * 1000.0),
        }
    }
}

/// A version's traffic over a period, as shown in status and the log.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Traffic {
    /// Requests answered.
    pub requests: u64,
    /// Of which answered with a 5xx status (the handler's, or the host's 500/503/504 for it).
    pub errors_5xx: u64,
    /// `errors_5xx / requests` (0 without requests).
    pub error_ratio: f64,
    /// 90th percentile of the time from arrival to response, in milliseconds.
    pub p90_ms: Option<f64>,
}

/// One version's outcome counters and their recent history.
#[derive(Debug)]
pub(crate) struct Outcomes {
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; BUCKETS],
    /// (when, counts then), oldest first, one per second while the version takes traffic.
    history: Mutex<VecDeque<(Instant, Figures)>>,
}

impl Default for Outcomes {
    fn default() -> Self {
        Outcomes {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            history: Mutex::new(VecDeque::new()),
        }
    }
}

impl Outcomes {
    /// Counts one answered request: three relaxed adds at most.
    pub(crate) fn record(&self, status: http::StatusCode, took: Duration) {
        self.requests.fetch_add(1, Relaxed);
        if status.is_server_error() {
            self.errors.fetch_add(1, Relaxed);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.latency[bucket(micros)].fetch_add(1, Relaxed);
    }

    /// Everything counted so far.
    pub(crate) fn now(&self) -> Figures {
        let mut latency = Box::new([0; BUCKETS]);
        for (slot, counter) in latency.iter_mut().zip(&self.latency) {
            *slot = counter.load(Relaxed);
        }
        Figures {
            requests: self.requests.load(Relaxed),
            errors: self.errors.load(Relaxed),
            latency,
        }
    }

    fn history(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, Figures)>> {
        crate::sync::lock(&self.history)
    }

    /// Notes the counts at `now`, keeping one snapshot at or before `now - span` and none older.
    pub(crate) fn snapshot(&self, now: Instant, span: Duration) {
        let figures = self.now();
        let mut history = self.history();
        history.push_back((now, figures));
        let cutoff = now.checked_sub(span);
        while history.len() >= 2 && cutoff.is_some_and(|c| history[1].0 <= c) {
            history.pop_front();
        }
    }

    /// The traffic of the last `span` before `now` (from the newest snapshot at or before
    /// `now - span`; all of it if the version is younger than that).
    pub(crate) fn last(&self, now: Instant, span: Duration) -> Figures {
        let current = self.now();
        let cutoff = now.checked_sub(span);
        let history = self.history();
        match history
            .iter()
            .rev()
            .find(|(at, _)| cutoff.is_some_and(|c| *at <= c))
        {
            Some((_, then)) => current.since(then),
            None => current,
        }
    }
}

/// Why a guarded version is rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    /// Its 5xx ratio rose clearly above the baseline's.
    Errors,
    /// It answered clearly slower than the baseline.
    Latency,
    /// An operator rolled back during the guard window.
    Operator,
}

impl Cause {
    /// The label value of the metric.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Cause::Errors => "errors",
            Cause::Latency => "latency",
            Cause::Operator => "operator",
        }
    }
}

/// A clear regression: its cause and an operator's sentence about it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Regression {
    pub(crate) cause: Cause,
    pub(crate) reason: String,
}

/// How many standard errors the new 5xx ratio must lie above the threshold: at z = 3 a
/// version with no real regression is rolled back on noise about once in 700 verdicts.
const Z: f64 = 3.0;

/// Lower end of the Wilson score interval of `errors / requests` at `Z`.
fn wilson_lower(errors: u64, requests: u64) -> f64 {
    if requests == 0 {
        return 0.0;
    }
    let n = requests as f64;
    let p = errors as f64 / n;
    let z2 = Z * Z;
    let centre = p + z2 / (2.0 * n);
    let spread = Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - spread) / (1.0 + z2 / n)).max(0.0)
}

/// Compares the new version's traffic since the switch with the previous version's baseline.
/// `None` until the new version has answered `min_requests`, and whenever the difference is
/// not clear.
pub(crate) fn judge(new: &Figures, baseline: &Figures, config: &GuardConfig) -> Option<Regression> {
    if new.requests < config.min_requests {
        return None;
    }
    // A baseline of too few requests says nothing: the new version is held to an error-free one.
    let known = baseline.requests >= config.min_requests;
    let base_ratio = if known { baseline.error_ratio() } else { 0.0 };
    let threshold = base_ratio + config.error_ratio_margin;
    if wilson_lower(new.errors, new.requests) > threshold {
        let before = if known {
            format!(
                "{:.1}% over {} requests before the switch",
                base_ratio * 100.0,
                baseline.requests
            )
        } else {
            format!(
                "an error-free baseline (only {} requests before the switch)",
                baseline.requests
            )
        };
        return Some(Regression {
            cause: Cause::Errors,
            reason: format!(
                "5xx ratio {:.1}% over {} requests, against {before}; at most {:.1} points more \
                 are allowed",
                new.error_ratio() * 100.0,
                new.requests,
                config.error_ratio_margin * 100.0
            ),
        });
    }
    if config.latency_factor > 0.0 && known {
        let (Some(now), Some(then)) = (new.quantile(0.9), baseline.quantile(0.9)) else {
            return None;
        };
        let margin = Duration::from_millis(config.latency_margin_ms);
        if now.as_secs_f64() > then.as_secs_f64() * config.latency_factor
            && now.saturating_sub(then) >= margin
        {
            return Some(Regression {
                cause: Cause::Latency,
                reason: format!(
                    "p90 latency {:.1} ms over {} requests, against {:.1} ms over {} requests \
                     before the switch; at most {}x and {} ms more are allowed",
                    now.as_secs_f64() * 1000.0,
                    new.requests,
                    then.as_secs_f64() * 1000.0,
                    baseline.requests,
                    config.latency_factor,
                    config.latency_margin_ms
                ),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn traffic(requests: u64, errors: u64, latency: Duration) -> Figures {
        let outcomes = Outcomes::default();
        for i in 0..requests {
            let status = if i < errors {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            };
            outcomes.record(status, latency);
        }
        outcomes.now()
    }

    #[test]
    fn buckets_are_ordered_and_close() {
        let mut last = 0;
        for us in 0..100_000u64 {
            let b = bucket(us);
            assert!(b >= last && b < BUCKETS, "{us} µs in bucket {b}");
            last = b;
            if us >= 4 {
                let mid = bucket_mid(b);
                assert!((mid - us as f64).abs() / (us as f64) < 0.13, "{us}: {mid}");
            }
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_and_differences() {
        let outcomes = Outcomes::default();
        for ms in 1..=100 {
            outcomes.record(StatusCode::OK, Duration::from_millis(ms));
        }
        let all = outcomes.now();
        let p90 = all.quantile(0.9).unwrap().as_secs_f64() * 1000.0;
        assert!((80.0..100.0).contains(&p90), "{p90}");
        let start = Instant::now();
        outcomes.snapshot(start, Duration::from_secs(60));
        outcomes.record(StatusCode::BAD_GATEWAY, Duration::from_millis(5));
        let later = start + Duration::from_secs(61);
        let recent = outcomes.last(later, Duration::from_secs(60));
        assert_eq!((recent.requests, recent.errors), (1, 1));
        // Younger than the span: everything counts.
        let young = outcomes.last(start + Duration::from_secs(10), Duration::from_secs(60));
        assert_eq!(young.requests, 101);
        // History keeps one snapshot at or before the span and nothing older.
        for s in 1..=200 {
            outcomes.snapshot(start + Duration::from_secs(s), Duration::from_secs(60));
        }
        assert!(
            outcomes.history().len() <= 62,
            "{}",
            outcomes.history().len()
        );
    }

    #[test]
    fn half_errors_is_a_clear_regression_a_few_are_not() {
        let config = GuardConfig::default();
        let ms = Duration::from_millis(1);
        let baseline = traffic(5000, 5, ms);
        let bad = judge(&traffic(100, 50, ms), &baseline, &config).expect("rolled back");
        assert_eq!(bad.cause, Cause::Errors);
        assert!(
            bad.reason.contains("5xx ratio 50.0% over 100 requests"),
            "{}",
            bad.reason
        );
        // Below the minimum count: no verdict, however bad.
        assert_eq!(judge(&traffic(99, 99, ms), &baseline, &config), None);
        // 3 errors in 100 against 0.1 %: within the margin.
        assert_eq!(judge(&traffic(100, 3, ms), &baseline, &config), None);
        // 10 % over 100 requests against a 4 % baseline: not clear enough.
        assert_eq!(
            judge(&traffic(100, 10, ms), &traffic(5000, 200, ms), &config),
            None
        );
        // ... but clear over 2,000 requests.
        assert!(judge(&traffic(2000, 400, ms), &traffic(5000, 200, ms), &config).is_some());
        // A quiet old version: the new one is held to an error-free baseline.
        let quiet = traffic(3, 0, ms);
        assert!(judge(&traffic(200, 100, ms), &quiet, &config).is_some());
        assert_eq!(judge(&traffic(200, 2, ms), &quiet, &config), None);
    }

    #[test]
    fn much_slower_is_a_regression_only_past_factor_and_margin() {
        let config = GuardConfig::default();
        let baseline = traffic(1000, 0, Duration::from_millis(2));
        let slow = judge(
            &traffic(200, 0, Duration::from_millis(300)),
            &baseline,
            &config,
        )
        .expect("rolled back");
        assert_eq!(slow.cause, Cause::Latency);
        // 20 times slower but only 38 ms more: under the margin.
        assert_eq!(
            judge(
                &traffic(200, 0, Duration::from_millis(40)),
                &baseline,
                &config
            ),
            None
        );
        // Off, or no baseline to compare with.
        let off = GuardConfig {
            latency_factor: 0.0,
            ..config
        };
        assert_eq!(
            judge(
                &traffic(200, 0, Duration::from_millis(300)),
                &baseline,
                &off
            ),
            None
        );
        assert_eq!(
            judge(
                &traffic(200, 0, Duration::from_millis(300)),
                &traffic(10, 0, Duration::from_millis(2)),
                &config
            ),
            None
        );
    }
}
