//! `swapbench`: hot swaps under load, against a bare hyper baseline measured in the same run.
//!
//! 1. Starts `hyper-hello` and `baton` (serving `hello` 1.0.0 from a temporary watched
//!    directory) as child processes.
//! 2. Throughput rounds: the same keep-alive load on each server in turn, `--rounds` times.
//! 3. Swap phase: the load runs on `baton` while `hello` 2.0.0 and 1.0.0 are dropped in turn,
//!    `--swaps` times. Each swap waits until the new version is active and the old one retired,
//!    then lets the load run `--gap-ms` in steady state.
//!    The host runs with its guard window off here, so the old version retires right after the
//!    switch, as it would without the guard.
//! 4. Guard phase (`--guard-rollbacks`, default 3): a second host with the guard window on
//!    serves `hello` 1.0.0 under the same load, and a bad version (answering 500 to every
//!    second request after its warm-up) is uploaded each time: the failed requests other than
//!    the bad version's own 5xx, and the time from its switch to the automatic rollback.
//! 5. Prints a table and, with `--json FILE`, writes every figure as JSON.
//!
//! A swap window runs from the moment the file landed (the rename returned) to the moment
//! `/status` first shows the old version retired (polled every 5 ms). Requests that start
//! inside a window count as "in swap windows", all others (after the first 500 ms) as steady.

mod guard;
mod report;
mod swaps;

use std::path::PathBuf;

use baton_benches::artifacts::{self, VERSIONS};
use baton_benches::cli::Common;
use baton_benches::load::{Target, run_for};
use baton_benches::servers::HyperHello;
use baton_benches::{procfs, stats};
use clap::Parser;

/// Hot swaps under keep-alive load, against bare hyper.
#[derive(Debug, Clone, Parser)]
#[command(name = "swapbench")]
struct Options {
    /// Keep-alive connections of the load.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Swaps (alternating hello 2.0.0 and 1.0.0) [default: 100, 1000 with --soak].
    #[arg(long)]
    swaps: Option<usize>,
    /// Soak: many swaps back to back (default 1000, no steady gap, no throughput rounds), the
    /// load on /hello/thread so that every loaded copy of hello touches std::thread::current().
    #[arg(long)]
    soak: bool,
    /// Seconds each server gets in each throughput round.
    #[arg(long, default_value_t = 5.0)]
    round_secs: f64,
    /// Throughput rounds (hyper, then baton, each round) [default: 2, 0 with --soak].
    #[arg(long)]
    rounds: Option<usize>,
    /// Steady load between one swap's end and the next file [default: 200, 0 with --soak].
    #[arg(long)]
    gap_ms: Option<u64>,
    /// Request path on baton [default: /hello/, /hello/thread with --soak].
    #[arg(long)]
    path: Option<String>,
    /// A swap not finished (new version active, old one retired) after this long is failed.
    #[arg(long, default_value_t = 60)]
    swap_timeout_secs: u64,
    #[command(flatten)]
    common: Common,
    /// The `hyper-hello` binary [default: built with cargo].
    #[arg(long)]
    hyper: Option<PathBuf>,
    /// `hello` built with BATON_APP_VERSION=1.0.0 [default: built with cargo].
    #[arg(long)]
    hello_v1: Option<PathBuf>,
    /// `hello` built with BATON_APP_VERSION=2.0.0 [default: built with cargo].
    #[arg(long)]
    hello_v2: Option<PathBuf>,
    /// Extra TOML for the host's configuration file (default: none, the host's defaults; the
    /// swap phase adds `guard = { window_secs = 0 }` before it, the guard phase a `[guard]`
    /// table after it).
    #[arg(long, default_value = "")]
    host_config: String,
    /// Bad versions deployed (and rolled back) with the guard on [default: 3, 0 with --soak].
    #[arg(long)]
    guard_rollbacks: Option<usize>,
    /// The guard window of the guard phase's host.
    #[arg(long, default_value_t = 30)]
    guard_window_secs: u64,
    /// The bad module of the guard phase [default: the `fixture-faulty` crate built as hello
    /// 6.6.6 with BATON_FAULT=errors-half].
    #[arg(long)]
    hello_bad: Option<PathBuf>,
}

/// Settings after soak defaults are applied.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Settings {
    connections: usize,
    swaps: usize,
    soak: bool,
    round_secs: f64,
    rounds: usize,
    gap_ms: u64,
    path: String,
    host_config: String,
    pub(crate) guard_rollbacks: usize,
    pub(crate) guard_window_secs: u64,
    #[serde(flatten)]
    pub(crate) common: Common,
}

impl Options {
    fn settings(&self) -> Settings {
        Settings {
            connections: self.connections,
            swaps: self.swaps.unwrap_or(if self.soak { 1000 } else { 100 }),
            soak: self.soak,
            round_secs: self.round_secs,
            rounds: self.rounds.unwrap_or(if self.soak { 0 } else { 2 }),
            gap_ms: self.gap_ms.unwrap_or(if self.soak { 0 } else { 200 }),
            path: self.path.clone().unwrap_or_else(|| {
                if self.soak {
                    "/hello/thread"
                } else {
                    "/hello/"
                }
                .to_owned()
            }),
            host_config: self.host_config.clone(),
            guard_rollbacks: self
                .guard_rollbacks
                .unwrap_or(if self.soak { 0 } else { 3 }),
            guard_window_secs: self.guard_window_secs,
            common: self.common.clone(),
        }
    }
}

/// One throughput round.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Round {
    hyper_rps: f64,
    baton_rps: f64,
    ratio: f64,
    hyper_failed: usize,
    baton_failed: usize,
    hyper_latency: stats::Latency,
    baton_latency: stats::Latency,
}

async fn rounds(settings: &Settings, hyper: &Target, baton: &Target) -> anyhow::Result<Vec<Round>> {
    let mut rounds = Vec::new();
    if settings.rounds == 0 {
        return Ok(rounds);
    }
    // Warm both servers (connections, allocator, caches) without recording.
    run_for(hyper, settings.connections, 1.0).await;
    run_for(baton, settings.connections, 1.0).await;
    for i in 0..settings.rounds {
        let h = run_for(hyper, settings.connections, settings.round_secs).await;
        let b = run_for(baton, settings.connections, settings.round_secs).await;
        let round = Round {
            hyper_rps: h.rps(),
            baton_rps: b.rps(),
            ratio: b.rps() / h.rps(),
            hyper_failed: h.failed(),
            baton_failed: b.failed(),
            hyper_latency: h.latency(),
            baton_latency: b.latency(),
        };
        eprintln!(
            "round {}: hyper {:.0} req/s, baton {:.0} req/s, ratio {:.3}",
            i + 1,
            round.hyper_rps,
            round.baton_rps,
            round.ratio
        );
        rounds.push(round);
    }
    Ok(rounds)
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let settings = options.settings();
    let artifacts = artifacts::prepare(
        options.common.release(),
        options.common.baton.clone(),
        options.hyper.clone(),
        [options.hello_v1.clone(), options.hello_v2.clone()],
    )?;
    let bad = match (&options.hello_bad, settings.guard_rollbacks) {
        (Some(path), _) => Some(path.clone()),
        (None, 0) => None,
        (None, _) => Some(artifacts::bad_hello_module(options.common.release())?),
    };
    let result = options.common.run(
        bench(&options, &settings, &artifacts, bad.as_deref()),
        report::table,
    )?;
    let guard_failed = result
        .guard
        .as_ref()
        .is_some_and(|g| g.failed_requests > 0 || g.rolled_back < g.requested);
    if result.swaps.failed_requests > 0
        || result.swaps.failed_swaps > 0
        || !result.host.alive
        || guard_failed
    {
        std::process::exit(1);
    }
    Ok(())
}

async fn bench(
    options: &Options,
    settings: &Settings,
    artifacts: &artifacts::Artifacts,
    bad: Option<&std::path::Path>,
) -> anyhow::Result<report::Result> {
    let hyper = HyperHello::start(&artifacts.hyper_hello)?;
    // Switch -> old version unmapped is measured without the guard window.
    let config = format!("guard = {{ window_secs = 0 }}\n{}", settings.host_config);
    let mut baton = artifacts.start_baton(&config)?;
    let timeout = options.common.timeout();
    let versions: Vec<String> = VERSIONS.iter().map(|v| format!("hello@{v}")).collect();
    let baton_target = Target {
        versions: versions.clone(),
        ..Target::new(baton.addr, settings.path.clone(), timeout)
    };
    let hyper_target = Target::new(hyper.addr, "/", timeout);
    swaps::wait_serving(&baton, &versions[0]).await?;
    let rounds = rounds(settings, &hyper_target, &baton_target).await?;
    drop(hyper);

    let pid = baton.pid();
    let keys_start = swaps::host_status(&baton).await?;
    let rss_idle = procfs::rss_kib(pid).unwrap_or(0);
    let swap_phase = swaps::run(&mut baton, &baton_target, settings, artifacts, options).await?;
    let keys_end = swaps::host_status(&baton).await.ok();
    let alive = baton.alive();
    let host = report::Host {
        alive,
        rss_idle_kib: rss_idle,
        rss_start_kib: swap_phase.rss_before_kib,
        rss_end_kib: procfs::rss_kib(pid).unwrap_or(0),
        rss_peak_kib: procfs::peak_rss_kib(pid).unwrap_or(0),
        copies_mapped_at_end: procfs::mapped_copies(pid, &baton.store_dir()),
        pthread_keys_in_use_start: keys_start["pthread_keys_in_use"].as_u64(),
        pthread_keys_in_use_end: keys_end
            .as_ref()
            .and_then(|k| k["pthread_keys_in_use"].as_u64()),
        pthread_keys_reclaimed: keys_end
            .as_ref()
            .and_then(|k| k["pthread_keys_reclaimed"].as_u64()),
        restart_required: keys_end
            .as_ref()
            .and_then(|k| k["restart_required"].as_bool()),
        warnings: baton.warnings().into_iter().take(20).collect(),
    };
    drop(baton);
    let guard = match bad {
        Some(bad) if settings.guard_rollbacks > 0 => {
            Some(guard::run(settings, artifacts, bad).await?)
        }
        _ => None,
    };
    Ok(report::Result::new(
        settings.clone(),
        rounds,
        swap_phase,
        host,
        guard,
    ))
}
