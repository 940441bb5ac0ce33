//! Turns the rounds into figures and checks, prints a table.

use std::fmt::Write;

use baton_benches::report::{Check as Target, Machine, checks_table, latency_row};
use baton_benches::stats::{Latency, median};
use serde::Serialize;

use crate::{Kind, Measure, Settings};

/// One target over all rounds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    kind: Kind,
    /// Median of the rounds.
    rps: f64,
    /// Median of each round's ratio to hello's req/s in the same round.
    rps_ratio_to_hello: f64,
    /// Median of each round's ratio to hello's p99 in the same round.
    p99_ratio_to_hello: f64,
    /// Median of each round's ratio to counter (redis)'s req/s in the same round (other
    /// counters only).
    rps_ratio_to_redis: Option<f64>,
    /// Median of each round's ratio to counter (redis)'s p99 in the same round.
    p99_ratio_to_redis: Option<f64>,
    /// Requests over all rounds; each percentile the median of the rounds'; max over all.
    latency: Latency,
    host_cpu_us_per_request: f64,
    redis_cpu_us_per_request: f64,
    /// Median of the rounds' Redis commands per request, where counted.
    redis_commands_per_request: Option<f64>,
    requests: usize,
    failed: usize,
    count_mismatches: usize,
    counts_ok: usize,
}

/// Where a kind's host keeps its sessions.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Store {
    kind: Kind,
    /// `--sessions`, or `memory`.
    url: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    name: &'static str,
    expected: String,
    measured: String,
    ok: bool,
}

/// The targets: what a session-using request may cost against one that uses none (medians of
/// the per-round ratios), and the round trips of a counter request.
/// Reported as met or not, never failing the run.
fn targets(summary: &[Summary]) -> Vec<Target> {
    let of = |kind: Kind| summary.iter().find(|m| m.kind == kind);
    let mut targets = Vec::new();
    for (kind, name, floor) in [
        (Kind::CounterRedis, "counter (redis) / hello", 0.6),
        (Kind::CounterMemory, "counter (memory) / hello", 0.95),
    ] {
        if let Some(m) = of(kind) {
            targets.push(Target {
                name,
                target: format!(">= {floor}"),
                measured: format!("{:.3}", m.rps_ratio_to_hello),
                met: m.rps_ratio_to_hello >= floor,
            });
        }
    }
    if let Some(per) = of(Kind::CounterRedis).and_then(|m| m.redis_commands_per_request) {
        targets.push(Target {
            name: "redis commands per counter request",
            target: "<= 1".into(),
            measured: format!("{per:.3}"),
            // Retries after concurrent changes are not expected here: one session per
            // connection, one request at a time.
            met: per <= 1.01,
        });
    }
    targets
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Result {
    machine: Machine,
    settings: Settings,
    stores: Vec<Store>,
    summary: Vec<Summary>,
    rounds: Vec<Vec<Measure>>,
    checks: Vec<Check>,
    targets: Vec<Target>,
    hosts_alive: bool,
    warnings: Vec<String>,
}

/// The median over the rounds of `f(kind) / f(base)` within each round; `None` when no round
/// has both.
fn ratio(rounds: &[Vec<Measure>], kind: Kind, base: Kind, f: fn(&Measure) -> f64) -> Option<f64> {
    baton_benches::stats::median_round_ratio(rounds, |m| m.kind, kind, base, f)
}

fn summarise(kind: Kind, rounds: &[Vec<Measure>]) -> Summary {
    let mine: Vec<&Measure> = rounds.iter().flatten().filter(|m| m.kind == kind).collect();
    let to_redis = |f| {
        (![Kind::Hello, Kind::CounterRedis].contains(&kind))
            .then(|| ratio(rounds, kind, Kind::CounterRedis, f))
            .flatten()
    };
    let med = |f: fn(&Measure) -> f64| median(&mine.iter().map(|m| f(m)).collect::<Vec<_>>());
    Summary {
        kind,
        rps: med(|m| m.rps),
        rps_ratio_to_hello: ratio(rounds, kind, Kind::Hello, |m| m.rps).unwrap_or(f64::NAN),
        p99_ratio_to_hello: ratio(rounds, kind, Kind::Hello, |m| m.latency.p99_ms)
            .unwrap_or(f64::NAN),
        rps_ratio_to_redis: to_redis(|m| m.rps),
        p99_ratio_to_redis: to_redis(|m| m.latency.p99_ms),
        latency: Latency {
            count: mine.iter().map(|m| m.latency.count).sum(),
            p50_ms: med(|m| m.latency.p50_ms),
            p99_ms: med(|m| m.latency.p99_ms),
            p999_ms: med(|m| m.latency.p999_ms),
            max_ms: mine.iter().map(|m| m.latency.max_ms).fold(0.0, f64::max),
        },
        host_cpu_us_per_request: med(|m| m.host_cpu_us_per_request),
        redis_cpu_us_per_request: med(|m| m.redis_cpu_us_per_request),
        redis_commands_per_request: {
            let counted: Vec<f64> = mine
                .iter()
                .filter_map(|m| m.redis_commands_per_request)
                .collect();
            (!counted.is_empty()).then(|| median(&counted))
        },
        requests: mine.iter().map(|m| m.requests).sum(),
        failed: mine.iter().map(|m| m.failed).sum(),
        count_mismatches: mine.iter().map(|m| m.count_mismatches).sum(),
        counts_ok: mine.iter().map(|m| m.counts_ok).sum(),
    }
}

impl Result {
    pub(crate) fn new(
        settings: Settings,
        stores: Vec<(Kind, String)>,
        rounds: Vec<Vec<Measure>>,
        hosts_alive: bool,
        warnings: Vec<String>,
    ) -> Result {
        let kinds: Vec<Kind> = rounds
            .first()
            .map(|r| r.iter().map(|m| m.kind).collect())
            .unwrap_or_default();
        let summary: Vec<Summary> = kinds.iter().map(|&k| summarise(k, &rounds)).collect();
        let all = || rounds.iter().flatten();
        let requests: usize = all().map(|m| m.requests).sum();
        let failed: usize = all().map(|m| m.failed).sum();
        let counter = || all().filter(|m| m.kind != Kind::Hello);
        let mismatches: usize = counter().map(|m| m.count_mismatches).sum();
        let counts_ok: usize = counter().map(|m| m.counts_ok).sum();
        let counter_loads = counter().count();
        let sessions: Vec<usize> = counter().map(|m| m.sessions).collect();
        let checks = vec![
            Check {
                name: "failed requests",
                expected: "0".into(),
                measured: format!("{failed} of {requests}"),
                ok: failed == 0 && requests > 0,
            },
            Check {
                name: "counter bodies: the next count",
                expected: "all".into(),
                measured: format!("{counts_ok} right, {mismatches} wrong"),
                ok: mismatches == 0 && counts_ok > 0,
            },
            Check {
                name: "sessions per counter load",
                expected: format!("{} (one per connection)", settings.connections),
                measured: format!("{} over {counter_loads} loads", describe_counts(&sessions)),
                ok: !sessions.is_empty() && sessions.iter().all(|&s| s == settings.connections),
            },
            Check {
                name: "hosts alive at the end",
                expected: "yes".into(),
                measured: if hosts_alive { "yes" } else { "no" }.into(),
                ok: hosts_alive,
            },
        ];
        Result {
            machine: Machine::current(),
            targets: targets(&summary),
            settings,
            stores: stores
                .into_iter()
                .map(|(kind, url)| Store { kind, url })
                .collect(),
            summary,
            rounds,
            checks,
            hosts_alive,
            warnings: warnings.into_iter().take(20).collect(),
        }
    }

    /// Every check passed.
    pub(crate) fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
}

/// `32` when all are 32, else `min..max`.
fn describe_counts(values: &[usize]) -> String {
    let min = values.iter().min().copied().unwrap_or(0);
    let max = values.iter().max().copied().unwrap_or(0);
    if min == max {
        min.to_string()
    } else {
        format!("{min}..{max}")
    }
}

/// The table for people.
pub(crate) fn table(r: &Result) -> String {
    let mut out = String::new();
    let s = &r.settings;
    let _ = writeln!(
        out,
        "\nsessionbench: {} cores ({}), {} connections (one session each), {} client threads, \
         {} build",
        r.machine.cores,
        r.machine.cpu,
        s.connections,
        s.common.client_threads,
        s.common.profile(),
    );
    for store in &r.stores {
        let store_is = match store.kind {
            Kind::CounterMemory => "baton, in-memory sessions".to_owned(),
            _ => format!("baton --sessions {}", store.url),
        };
        let _ = writeln!(out, "  {:<18} {store_is}", store.kind.label());
    }
    let _ = writeln!(
        out,
        "  {:<18} on the counter (redis) host",
        Kind::Hello.label()
    );
    let _ = writeln!(
        out,
        "\nthroughput ({} rounds of {} s per target, in turn)",
        s.rounds.rounds, s.rounds.round_secs
    );
    for (i, round) in r.rounds.iter().enumerate() {
        let _ = write!(out, "  round {}:", i + 1);
        let hello = round.iter().find(|m| m.kind == Kind::Hello).map(|m| m.rps);
        for m in round {
            let _ = write!(out, "  {} {:>7.0} req/s", m.kind.label(), m.rps);
            if let (Some(hello), true) = (hello, m.kind != Kind::Hello) {
                let _ = write!(out, " ({:.3})", m.rps / hello);
            }
        }
        let failed: Vec<String> = round.iter().map(|m| m.failed.to_string()).collect();
        let _ = writeln!(out, "  failed {}", failed.join("/"));
    }
    let _ = write!(out, "  median: ");
    for m in &r.summary {
        let _ = write!(out, "  {} {:>7.0} req/s", m.kind.label(), m.rps);
        if m.kind != Kind::Hello {
            let _ = write!(out, " ({:.3})", m.rps_ratio_to_hello);
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "\nlatency (each percentile the median of the rounds'; max over all rounds)"
    );
    for m in &r.summary {
        latency_row(&mut out, m.kind.label(), &m.latency);
    }
    let _ = writeln!(out, "\nratios to hello (medians of the per-round ratios)");
    for m in r.summary.iter().filter(|m| m.kind != Kind::Hello) {
        let _ = writeln!(
            out,
            "  {:<18} req/s {:.3}   p99 {:.2}",
            m.kind.label(),
            m.rps_ratio_to_hello,
            m.p99_ratio_to_hello
        );
    }
    if r.summary.iter().any(|m| m.rps_ratio_to_redis.is_some()) {
        let _ = writeln!(
            out,
            "\nratios to counter (redis) (medians of the per-round ratios)"
        );
        for m in &r.summary {
            if let (Some(rps), Some(p99)) = (m.rps_ratio_to_redis, m.p99_ratio_to_redis) {
                let _ = writeln!(
                    out,
                    "  {:<18} req/s {:.3}   p99 {:.2}",
                    m.kind.label(),
                    rps,
                    p99
                );
            }
        }
    }
    let _ = writeln!(out, "\nCPU per request (median of the rounds)");
    for m in &r.summary {
        let _ = write!(
            out,
            "  {:<18} host {:>6.1} us",
            m.kind.label(),
            m.host_cpu_us_per_request
        );
        if m.kind != Kind::CounterMemory {
            let _ = write!(
                out,
                "   redis-server {:>6.1} us",
                m.redis_cpu_us_per_request
            );
        }
        if let Some(per) = m.redis_commands_per_request {
            let _ = write!(out, "   redis commands {per:.3}");
        }
        let _ = writeln!(out);
    }
    for e in r.rounds.iter().flatten().flat_map(|m| &m.errors).take(10) {
        let _ = writeln!(out, "  error: {e}");
    }
    if !r.warnings.is_empty() {
        let _ = writeln!(out, "  host warnings/errors logged: {}", r.warnings.len());
    }
    checks_table(&mut out, &r.targets);
    let _ = writeln!(out, "\nchecks");
    for c in &r.checks {
        let _ = writeln!(
            out,
            "  [{}] {:<32} expected {:<26} measured {}",
            if c.ok { "ok" } else { "FAILED" },
            c.name,
            c.expected,
            c.measured
        );
    }
    out
}
