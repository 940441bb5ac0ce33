//! Turns what the run recorded into figures, checks them against the targets, prints a table.

use std::fmt::Write;

use baton_benches::load::OK_UNTAGGED;
use baton_benches::report::{Check, Machine, checks_table, latency_row, spread_row};
use baton_benches::stats::{self, Latency, Spread};
use serde::Serialize;

use crate::guard::GuardPhase;
use crate::swaps::{SwapPhase, SwapRecord};
use crate::{Round, Settings};

/// Requests in the first moments of the load (connections ramping up) are not steady state.
const RAMP_US: u32 = 500_000;

/// The host process, from `/proc` and `/status`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Host {
    pub(crate) alive: bool,
    /// Before the swap phase, without load.
    pub(crate) rss_idle_kib: u64,
    /// Under load, just before the first swap.
    pub(crate) rss_start_kib: u64,
    pub(crate) rss_end_kib: u64,
    pub(crate) rss_peak_kib: u64,
    pub(crate) copies_mapped_at_end: Vec<String>,
    pub(crate) pthread_keys_in_use_start: Option<u64>,
    pub(crate) pthread_keys_in_use_end: Option<u64>,
    pub(crate) pthread_keys_reclaimed: Option<u64>,
    pub(crate) restart_required: Option<bool>,
    pub(crate) warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Throughput {
    rounds: Vec<Round>,
    hyper_rps_median: f64,
    baton_rps_median: f64,
    /// Median of the per-round ratios baton / hyper.
    ratio_median: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Swaps {
    pub(crate) requested: usize,
    pub(crate) completed: usize,
    pub(crate) failed_swaps: usize,
    pub(crate) requests: usize,
    pub(crate) failed_requests: usize,
    pub(crate) request_errors: Vec<String>,
    pub(crate) swap_errors: Vec<String>,
    pub(crate) duration_s: f64,
    pub(crate) throughput_rps: f64,
    pub(crate) steady: Latency,
    pub(crate) in_swap_windows: Latency,
    pub(crate) window: Spread,
    pub(crate) landed_to_new_version: Spread,
    pub(crate) switch_to_unmapped: Spread,
    pub(crate) old_copy_mapped_after_retire: usize,
    /// (swaps done, RSS KiB, pthread keys in use).
    pub(crate) progress: Vec<(usize, u64, Option<u64>)>,
    pub(crate) per_swap: Vec<SwapRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Result {
    machine: Machine,
    settings: Settings,
    throughput: Throughput,
    pub(crate) swaps: Swaps,
    pub(crate) host: Host,
    /// The guard phase, if it ran.
    pub(crate) guard: Option<GuardPhase>,
    targets: Vec<Check>,
}

fn analyse(settings: &Settings, phase: SwapPhase) -> Swaps {
    let SwapPhase {
        recorded,
        swaps,
        progress,
        rss_before_kib: _,
    } = phase;
    // Windows in landing order: [landed, window end].
    let windows: Vec<(u64, u64)> = swaps
        .iter()
        .map(|s| (s.landed_us, s.window_end_us))
        .collect();
    let window_of = |t: u64| -> Option<usize> {
        let i = windows.partition_point(|&(landed, _)| landed <= t);
        i.checked_sub(1)
    };
    let mut steady = Vec::new();
    let mut inside = Vec::new();
    let mut first_new: Vec<Option<u64>> = vec![None; swaps.len()];
    for sample in &recorded.samples {
        let start = u64::from(sample.start_us);
        match window_of(start) {
            Some(i) if start <= windows[i].1 => inside.push(sample.latency_us),
            _ if sample.start_us >= RAMP_US => steady.push(sample.latency_us),
            _ => {}
        }
        // First response from the version a swap switched to, after its file landed.
        let end = u64::from(sample.end_us());
        if sample.outcome != OK_UNTAGGED
            && !sample.failed()
            && let Some(i) = window_of(end)
            && swaps[i].new_tag == sample.outcome
        {
            let first = &mut first_new[i];
            *first = Some(first.map_or(end, |f| f.min(end)));
        }
    }
    let completed: Vec<&SwapRecord> = swaps.iter().filter(|s| s.ok).collect();
    let landed_to_new: Vec<f64> = swaps
        .iter()
        .zip(&first_new)
        .filter_map(|(s, first)| first.map(|f| (f - s.landed_us) as f64 / 1000.0))
        .collect();
    let window: Vec<f64> = completed
        .iter()
        .map(|s| (s.window_end_us - s.landed_us) as f64 / 1000.0)
        .collect();
    let unmapped: Vec<f64> = completed
        .iter()
        .filter_map(|s| Some((s.host_retired_ms? - s.host_switched_ms?) as f64))
        .collect();
    let failed_requests = recorded.failed();
    let requests = recorded.samples.len();
    Swaps {
        requested: settings.swaps,
        completed: completed.len(),
        failed_swaps: swaps.len() - completed.len() + (settings.swaps - swaps.len()),
        requests,
        failed_requests,
        request_errors: recorded.errors.clone(),
        swap_errors: swaps
            .iter()
            .filter_map(|s| s.error.as_ref().map(|e| format!("swap {}: {e}", s.index)))
            .take(20)
            .collect(),
        duration_s: recorded.elapsed.as_secs_f64(),
        throughput_rps: (requests - failed_requests) as f64 / recorded.elapsed.as_secs_f64(),
        steady: Latency::from_micros(&mut steady),
        in_swap_windows: Latency::from_micros(&mut inside),
        window: Spread::from_ms(&window),
        landed_to_new_version: Spread::from_ms(&landed_to_new),
        switch_to_unmapped: Spread::from_ms(&unmapped),
        old_copy_mapped_after_retire: completed.iter().filter(|s| s.old_copy_mapped).count(),
        progress,
        per_swap: swaps,
    }
}

impl Result {
    pub(crate) fn new(
        settings: Settings,
        rounds: Vec<Round>,
        phase: SwapPhase,
        host: Host,
        guard: Option<GuardPhase>,
    ) -> Self {
        let swaps = analyse(&settings, phase);
        let hyper: Vec<f64> = rounds.iter().map(|r| r.hyper_rps).collect();
        let baton: Vec<f64> = rounds.iter().map(|r| r.baton_rps).collect();
        let ratios: Vec<f64> = rounds.iter().map(|r| r.ratio).collect();
        let throughput = Throughput {
            hyper_rps_median: stats::median(&hyper),
            baton_rps_median: stats::median(&baton),
            ratio_median: stats::median(&ratios),
            rounds,
        };
        let mut targets = vec![Check {
            name: "failed requests during swaps",
            target: "0".into(),
            measured: format!(
                "{} of {} over {} swaps",
                swaps.failed_requests, swaps.requests, swaps.completed
            ),
            met: swaps.failed_requests == 0 && swaps.failed_swaps == 0,
        }];
        if !throughput.rounds.is_empty() {
            targets.push(Check {
                name: "throughput baton / hyper",
                target: ">= 0.9".into(),
                measured: format!("{:.3}", throughput.ratio_median),
                met: throughput.ratio_median >= 0.9,
            });
        }
        targets.push(Check {
            name: "file landed -> new version serving, p50",
            target: "<= 50 ms".into(),
            measured: format!("{:.1} ms", swaps.landed_to_new_version.p50_ms),
            met: swaps.landed_to_new_version.count > 0
                && swaps.landed_to_new_version.p50_ms <= 50.0,
        });
        targets.push(Check {
            name: "p99 in swap windows / steady p99",
            target: "<= 1.5".into(),
            measured: format!(
                "{:.2} ({:.2} ms / {:.2} ms)",
                swaps.in_swap_windows.p99_ms / swaps.steady.p99_ms,
                swaps.in_swap_windows.p99_ms,
                swaps.steady.p99_ms
            ),
            met: swaps.in_swap_windows.p99_ms <= 1.5 * swaps.steady.p99_ms,
        });
        if settings.swaps >= 1000 {
            let growth = host.rss_end_kib as i64 - host.rss_start_kib as i64;
            targets.push(Check {
                name: "RSS growth over the swaps (under load)",
                target: "<= 10 MB".into(),
                measured: format!("{:.1} MB", growth as f64 / 1024.0),
                met: growth <= 10 * 1024,
            });
            targets.push(Check {
                name: "old versions left mapped",
                target: "0".into(),
                measured: format!(
                    "{} at end, {} right after retiring",
                    host.copies_mapped_at_end.len().saturating_sub(1),
                    swaps.old_copy_mapped_after_retire
                ),
                met: host.copies_mapped_at_end.len() <= 1
                    && swaps.old_copy_mapped_after_retire == 0,
            });
        }
        if let Some(g) = &guard {
            targets.push(Check {
                name: "failed requests, guard on (bad 5xx aside)",
                target: "0".into(),
                measured: format!(
                    "{} of {}; {} of {} bad versions rolled back",
                    g.failed_requests, g.requests, g.rolled_back, g.requested
                ),
                met: g.failed_requests == 0 && g.rolled_back == g.requested,
            });
        }
        Result {
            machine: Machine::current(),
            settings,
            throughput,
            swaps,
            host,
            guard,
            targets,
        }
    }
}

/// The table for people.
pub(crate) fn table(r: &Result) -> String {
    let mut out = String::new();
    let s = &r.settings;
    let _ = writeln!(
        out,
        "\nswapbench: {} cores ({}), {} connections, {} client threads, {} build, path {}",
        r.machine.cores,
        r.machine.cpu,
        s.connections,
        s.common.client_threads,
        s.common.profile(),
        s.path
    );
    if !r.throughput.rounds.is_empty() {
        let _ = writeln!(
            out,
            "\nthroughput ({} rounds of {} s each)",
            s.rounds, s.round_secs
        );
        for (i, round) in r.throughput.rounds.iter().enumerate() {
            let _ = writeln!(
                out,
                "  round {}: hyper {:>8.0} req/s   baton {:>8.0} req/s   ratio {:.3}   failed {}/{}",
                i + 1,
                round.hyper_rps,
                round.baton_rps,
                round.ratio,
                round.hyper_failed,
                round.baton_failed
            );
        }
        let t = &r.throughput;
        let _ = writeln!(
            out,
            "  median:  hyper {:>8.0} req/s   baton {:>8.0} req/s   ratio {:.3}",
            t.hyper_rps_median, t.baton_rps_median, t.ratio_median
        );
        if let Some(last) = t.rounds.last() {
            latency_row(&mut out, "hyper latency (last round)", &last.hyper_latency);
            latency_row(&mut out, "baton latency (last round)", &last.baton_latency);
        }
    }
    let w = &r.swaps;
    let _ = writeln!(
        out,
        "\nswaps: {} of {} completed in {:.1} s; requests {} total, {} failed; {:.0} req/s",
        w.completed, w.requested, w.duration_s, w.requests, w.failed_requests, w.throughput_rps
    );
    latency_row(&mut out, "steady state", &w.steady);
    latency_row(&mut out, "inside swap windows", &w.in_swap_windows);
    spread_row(&mut out, "swap window (landed -> old retired)", &w.window);
    spread_row(
        &mut out,
        "file landed -> first new-version reply",
        &w.landed_to_new_version,
    );
    spread_row(
        &mut out,
        "switch -> old version unmapped (host)",
        &w.switch_to_unmapped,
    );
    for e in w.request_errors.iter().chain(&w.swap_errors).take(10) {
        let _ = writeln!(out, "  error: {e}");
    }
    if let Some(g) = &r.guard {
        let _ = writeln!(
            out,
            "\nguard on ({} s window): {} of {} bad versions rolled back under load; requests {} \
             total, {} failed (the bad version's own 5xx aside), {} answered 5xx by the bad version",
            g.window_secs,
            g.rolled_back,
            g.requested,
            g.requests,
            g.failed_requests,
            g.bad_version_5xx
        );
        spread_row(
            &mut out,
            "switch -> rolled back (host)",
            &g.switch_to_rollback,
        );
        spread_row(
            &mut out,
            "upload sent -> rollback in /status",
            &g.upload_to_rollback_seen,
        );
        for e in g
            .request_errors
            .iter()
            .chain(g.per_rollback.iter().filter_map(|r| r.error.as_ref()))
            .take(10)
        {
            let _ = writeln!(out, "  error: {e}");
        }
    }
    let h = &r.host;
    let mb = |kib: u64| kib as f64 / 1024.0;
    let _ = writeln!(
        out,
        "\nhost: RSS idle before the swap phase {:.1} MB; under load: start (before the first swap) \
         {:.1} MB, end {:.1} MB, peak {:.1} MB\n  module copies mapped at end {} (the active one \
         included); old copies mapped right after retiring {}; alive {}",
        mb(h.rss_idle_kib),
        mb(h.rss_start_kib),
        mb(h.rss_end_kib),
        mb(h.rss_peak_kib),
        h.copies_mapped_at_end.len(),
        w.old_copy_mapped_after_retire,
        h.alive
    );
    let _ = writeln!(
        out,
        "  pthread keys in use: start {:?}, end {:?}; reclaimed {:?}; restart required {:?}",
        h.pthread_keys_in_use_start,
        h.pthread_keys_in_use_end,
        h.pthread_keys_reclaimed,
        h.restart_required
    );
    if !h.warnings.is_empty() {
        let _ = writeln!(out, "  host warnings/errors logged: {}", h.warnings.len());
    }
    checks_table(&mut out, &r.targets);
    out
}
