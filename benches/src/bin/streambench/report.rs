//! Turns the rounds into figures, ratios and checks; prints a table.

use std::fmt::Write;

use baton_benches::report::{self, Machine, checks_table, latency_row};
use baton_benches::stats::{Latency, median};
use serde::Serialize;

use crate::{Kind, Measure, Settings};

/// The streaming target: baton's large bodies per second over bare hyper's, at least this.
const STREAMING_TARGET: f64 = 0.9;

/// One target over all rounds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    kind: Kind,
    /// Median of the rounds.
    rps: f64,
    /// Median of the rounds.
    mib_per_sec: f64,
    /// The kind compared with ([`Kind::base`]).
    base: Option<Kind>,
    /// Median of each round's req/s ratio to the base's in the same round.
    rps_ratio: Option<f64>,
    /// Median of each round's p99 ratio to the base's in the same round.
    p99_ratio: Option<f64>,
    /// Requests over all rounds; each percentile the median of the rounds'; max over all.
    latency: Latency,
    server_cpu_us_per_request: f64,
    requests: usize,
    failed: usize,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Result {
    machine: Machine,
    settings: Settings,
    /// Notes `GET /notes/api/notes` listed before the rounds.
    notes_listed: usize,
    summary: Vec<Summary>,
    /// Median over the rounds of baton's large-body req/s over hyper's.
    streaming_ratio_median: f64,
    /// Median over the rounds of `/notes/api/notes` req/s over `/hello/`'s.
    notes_ratio_median: f64,
    failed_requests: usize,
    rounds: Vec<Vec<Measure>>,
    targets: Vec<report::Check>,
    checks: Vec<report::Check>,
    host_alive: bool,
    warnings: Vec<String>,
}

/// The median over the rounds of `f(kind) / f(base)` within each round; `None` when no round
/// has both.
fn ratio(rounds: &[Vec<Measure>], kind: Kind, base: Kind, f: fn(&Measure) -> f64) -> Option<f64> {
    baton_benches::stats::median_round_ratio(rounds, |m| m.kind, kind, base, f)
}

fn summarise(kind: Kind, rounds: &[Vec<Measure>]) -> Summary {
    let mine: Vec<&Measure> = rounds.iter().flatten().filter(|m| m.kind == kind).collect();
    let med = |f: fn(&Measure) -> f64| median(&mine.iter().map(|m| f(m)).collect::<Vec<_>>());
    let base = kind.base();
    Summary {
        kind,
        rps: med(|m| m.rps),
        mib_per_sec: med(|m| m.mib_per_sec),
        base,
        rps_ratio: base.and_then(|b| ratio(rounds, kind, b, |m| m.rps)),
        p99_ratio: base.and_then(|b| ratio(rounds, kind, b, |m| m.latency.p99_ms)),
        latency: Latency {
            count: mine.iter().map(|m| m.latency.count).sum(),
            p50_ms: med(|m| m.latency.p50_ms),
            p99_ms: med(|m| m.latency.p99_ms),
            p999_ms: med(|m| m.latency.p999_ms),
            max_ms: mine.iter().map(|m| m.latency.max_ms).fold(0.0, f64::max),
        },
        server_cpu_us_per_request: med(|m| m.server_cpu_us_per_request),
        requests: mine.iter().map(|m| m.requests).sum(),
        failed: mine.iter().map(|m| m.failed).sum(),
    }
}

/// `1 MiB`, `64 KiB`, or bytes.
pub(crate) fn size_label(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

impl Result {
    pub(crate) fn new(
        settings: Settings,
        notes_listed: usize,
        rounds: Vec<Vec<Measure>>,
        host_alive: bool,
        warnings: Vec<String>,
    ) -> Result {
        let summary: Vec<Summary> = Kind::ALL.iter().map(|&k| summarise(k, &rounds)).collect();
        let all = || rounds.iter().flatten();
        let requests: usize = all().map(|m| m.requests).sum();
        let failed: usize = all().map(|m| m.failed).sum();
        let streaming =
            ratio(&rounds, Kind::BatonBytes, Kind::HyperBytes, |m| m.rps).unwrap_or(f64::NAN);
        let notes = ratio(&rounds, Kind::Notes, Kind::Hello, |m| m.rps).unwrap_or(f64::NAN);
        let targets = vec![report::Check {
            name: "streaming / bare hyper (req/s)",
            target: format!(">= {STREAMING_TARGET}"),
            measured: format!(
                "{streaming:.3} (median of {} rounds, {} bodies)",
                rounds.len(),
                size_label(settings.body_bytes)
            ),
            met: streaming >= STREAMING_TARGET,
        }];
        // The API lists at most 100 notes by default.
        let expected_notes = settings.notes.min(100);
        let checks = vec![
            report::Check {
                name: "failed requests",
                target: "0".into(),
                measured: format!("{failed} of {requests}"),
                met: failed == 0 && requests > 0,
            },
            report::Check {
                name: "notes listed by the API",
                target: expected_notes.to_string(),
                measured: notes_listed.to_string(),
                met: notes_listed == expected_notes,
            },
            report::Check {
                name: "host alive at the end",
                target: "yes".into(),
                measured: if host_alive { "yes" } else { "no" }.into(),
                met: host_alive,
            },
        ];
        Result {
            machine: Machine::current(),
            settings,
            notes_listed,
            summary,
            streaming_ratio_median: streaming,
            notes_ratio_median: notes,
            failed_requests: failed,
            rounds,
            targets,
            checks,
            host_alive,
            warnings: warnings.into_iter().take(20).collect(),
        }
    }

    /// Every check passed (the targets are reported, not enforced).
    pub(crate) fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.met)
    }
}

/// The table for people.
pub(crate) fn table(r: &Result) -> String {
    let mut out = String::new();
    let s = &r.settings;
    let size = size_label(s.body_bytes);
    let _ = writeln!(
        out,
        "\nstreambench: {} cores ({}), {} connections, {size} bodies, {} client threads, {} build",
        r.machine.cores,
        r.machine.cpu,
        s.connections,
        s.common.client_threads,
        s.common.profile(),
    );
    let _ = writeln!(
        out,
        "  {:<24} hyper-hello: 64 KiB frames (slices of one shared block), chunked",
        Kind::HyperBytes.label()
    );
    let _ = writeln!(
        out,
        "  {:<24} the hello app streams 64 KiB writes, chunked; default host config, max_streams = {}",
        Kind::BatonBytes.label(),
        crate::MAX_STREAMS
    );
    let _ = writeln!(
        out,
        "  {:<24} {} notes listed as JSON from SQLite, same host",
        Kind::Notes.label(),
        r.notes_listed
    );
    let _ = writeln!(
        out,
        "\nthroughput ({} rounds of {} s per target, in turn; ratio to the one before)",
        s.rounds.rounds, s.rounds.round_secs
    );
    for (i, round) in r.rounds.iter().enumerate() {
        let _ = writeln!(out, "  round {}:", i + 1);
        for m in round {
            let base = m
                .kind
                .base()
                .and_then(|b| round.iter().find(|o| o.kind == b));
            let _ = write!(
                out,
                "    {:<24} {:>8.0} req/s {:>9.1} MiB/s  p50 {:>7.2} ms  p99 {:>7.2} ms  failed {}",
                m.kind.label(),
                m.rps,
                m.mib_per_sec,
                m.latency.p50_ms,
                m.latency.p99_ms,
                m.failed
            );
            if let Some(base) = base {
                let _ = write!(out, "  ratio {:.3}", m.rps / base.rps);
            }
            let _ = writeln!(out);
        }
    }
    let _ = writeln!(out, "  median:");
    for m in &r.summary {
        let _ = writeln!(
            out,
            "    {:<24} {:>8.0} req/s {:>9.1} MiB/s",
            m.kind.label(),
            m.rps,
            m.mib_per_sec
        );
    }
    let _ = writeln!(
        out,
        "\nlatency (each percentile the median of the rounds'; max over all rounds)"
    );
    for m in &r.summary {
        latency_row(&mut out, m.kind.label(), &m.latency);
    }
    let _ = writeln!(out, "\nratios (medians of the per-round ratios)");
    for m in &r.summary {
        if let (Some(base), Some(rps), Some(p99)) = (m.base, m.rps_ratio, m.p99_ratio) {
            let _ = writeln!(
                out,
                "  {:<24} / {:<18} req/s {:.3}   p99 {:.2}",
                m.kind.label(),
                base.label(),
                rps,
                p99
            );
        }
    }
    let _ = writeln!(out, "\nserver CPU per request (median of the rounds)");
    for m in &r.summary {
        let _ = writeln!(
            out,
            "  {:<24} {:>8.1} us",
            m.kind.label(),
            m.server_cpu_us_per_request
        );
    }
    for e in r.rounds.iter().flatten().flat_map(|m| &m.errors).take(10) {
        let _ = writeln!(out, "  error: {e}");
    }
    if !r.warnings.is_empty() {
        let _ = writeln!(out, "  host warnings/errors logged: {}", r.warnings.len());
    }
    checks_table(&mut out, &r.targets);
    let _ = writeln!(
        out,
        "  streaming ({size} bodies) / bare hyper: target >= {STREAMING_TARGET}: {}",
        if r.targets.iter().all(|c| c.met) {
            "met"
        } else {
            "not met"
        }
    );
    let _ = writeln!(
        out,
        "  notes API / hello (req/s): {:.3} (reported, no target)",
        r.notes_ratio_median
    );
    let _ = writeln!(out, "\nchecks");
    for c in &r.checks {
        let _ = writeln!(
            out,
            "  [{}] {:<28} expected {:<6} measured {}",
            if c.met { "ok" } else { "FAILED" },
            c.name,
            c.target,
            c.measured
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_named_in_binary_units() {
        assert_eq!(size_label(1 << 20), "1 MiB");
        assert_eq!(size_label(64 * 1024), "64 KiB");
        assert_eq!(size_label(1000), "1000 bytes");
    }
}
