//! Percentiles and summaries.

use serde::Serialize;

/// Nearest-rank percentile `p` (0–100) of sorted values; 0 when empty.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    // The small epsilon keeps float error (99.9 × 1000 / 100 = 999.0000000000001) off the rank.
    let rank = (p * sorted.len() as f64 / 100.0 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of unsorted values; 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The median over rounds of `f(kind) / f(base)`, each ratio taken within one round (where the
/// machine's load was the same for both); `None` when no round measured both. `kind_of` says
/// what a round's measurement is of.
pub fn median_round_ratio<M, K: PartialEq + Copy>(
    rounds: &[Vec<M>],
    kind_of: impl Fn(&M) -> K,
    kind: K,
    base: K,
    f: impl Fn(&M) -> f64,
) -> Option<f64> {
    let find = |round: &[M], k: K| round.iter().find(|m| kind_of(m) == k).map(&f);
    let r: Vec<f64> = rounds
        .iter()
        .filter_map(|round| Some(find(round, kind)? / find(round, base)?))
        .collect();
    (!r.is_empty()).then(|| median(&r))
}

/// Latency percentiles of a set of requests, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Requests.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Latency {
    /// From latencies in µs (sorted in place).
    pub fn from_micros(latencies: &mut [u32]) -> Latency {
        latencies.sort_unstable();
        let ms = |us: u32| f64::from(us) / 1000.0;
        Latency {
            count: latencies.len(),
            p50_ms: ms(percentile(latencies, 50.0)),
            p99_ms: ms(percentile(latencies, 99.0)),
            p999_ms: ms(percentile(latencies, 99.9)),
            max_ms: ms(latencies.last().copied().unwrap_or(0)),
        }
    }
}

/// p50 / p99 / max of a handful of durations, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Spread {
    /// How many.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Spread {
    /// From values in milliseconds.
    pub fn from_ms(values: &[f64]) -> Spread {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Spread {
            count: v.len(),
            p50_ms: percentile(&v, 50.0),
            p99_ms: percentile(&v, 99.0),
            max_ms: v.last().copied().unwrap_or(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_is_taken_within_each_round_then_the_median() {
        // (kind, value): rounds where the base moved with the load.
        let rounds = vec![
            vec![("a", 50.0), ("b", 100.0)],
            vec![("a", 30.0), ("b", 40.0)],
            vec![("a", 10.0), ("b", 100.0)],
            vec![("a", 1.0)],
        ];
        let r = median_round_ratio(&rounds, |m| m.0, "a", "b", |m| m.1).unwrap();
        assert!((r - 0.5).abs() < 1e-9, "{r}");
        assert_eq!(
            median_round_ratio(&rounds, |m| m.0, "a", "c", |m| m.1),
            None
        );
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&v, 50.0), 500);
        assert_eq!(percentile(&v, 99.0), 990);
        assert_eq!(percentile(&v, 99.9), 999);
        assert_eq!(percentile(&v, 100.0), 1000);
        assert_eq!(percentile::<u32>(&[], 50.0), 0);
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
    }
}
