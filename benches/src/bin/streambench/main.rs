//! `streambench`: what a streamed response costs against bare hyper, and what a real app's JSON
//! API costs beside a greeting, in the same run.
//!
//! 1. Starts `hyper-hello` and one `baton` host (default configuration, but for
//!    `limits.max_streams`: see [`host_config`]) serving `hello` and `notes` (SQLite in a
//!    temporary directory); logs in to `notes` through its form, as a script does, and posts a
//!    few notes through its JSON API.
//! 2. Rounds: the same keep-alive load (N connections) on each target in turn, `--rounds`
//!    times: large bodies from `hyper-hello` (`/bytes?n=N`, 64 KiB frames, chunked) and from
//!    `baton` (`/hello/bytes?n=N`, streamed by the app in 64 KiB writes, chunked); then
//!    `/hello/` and `/notes/api/notes` on the same host. A large body of any other length than
//!    asked, like any other failure, fails the run.
//! 3. Prints requests/s, MiB/s, latency and the ratios baton / hyper and notes / hello, each
//!    taken within a round, their medians over the rounds checked against the targets; with
//!    `--json FILE`, writes every figure as JSON.

mod report;
mod seed;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use baton_benches::cli::{Common, Rounds};
use baton_benches::load::{Recorded, Target, run_for};
use baton_benches::servers::{self, HyperHello, start_baton};
use baton_benches::stats::Latency;
use baton_benches::{artifacts, procfs};
use baton_testkit::HostProc;
use clap::Parser;

/// Large streamed responses against bare hyper, and the notes JSON API against hello, under
/// keep-alive load on one baton host.
#[derive(Debug, Clone, Parser)]
#[command(name = "streambench")]
struct Options {
    /// Keep-alive connections of the load.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Bytes of each large response.
    #[arg(long, default_value_t = 1 << 20)]
    body_bytes: u64,
    /// Notes posted through the API before the rounds (`GET /notes/api/notes` lists them).
    #[arg(long, default_value_t = 20)]
    notes: usize,
    #[command(flatten)]
    rounds: Rounds,
    #[command(flatten)]
    common: Common,
    /// The `hyper-hello` binary [default: built with cargo].
    #[arg(long)]
    hyper: Option<PathBuf>,
    /// The `hello` module [default: built with cargo].
    #[arg(long)]
    hello: Option<PathBuf>,
    /// The `notes` module [default: built with cargo].
    #[arg(long = "notes-module")]
    notes_module: Option<PathBuf>,
}

/// The settings of a run, as reported.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Settings {
    connections: usize,
    body_bytes: u64,
    notes: usize,
    #[serde(flatten)]
    rounds: Rounds,
    #[serde(flatten)]
    common: Common,
}

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// `hyper-hello`'s `/bytes?n=N`.
    HyperBytes,
    /// `baton`'s `/hello/bytes?n=N`.
    BatonBytes,
    /// `baton`'s `/hello/`.
    Hello,
    /// `baton`'s `/notes/api/notes`.
    Notes,
}

impl Kind {
    /// Every kind, in the order a round measures them.
    const ALL: [Kind; 4] = [Kind::HyperBytes, Kind::BatonBytes, Kind::Hello, Kind::Notes];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::HyperBytes => "hyper /bytes",
            Kind::BatonBytes => "baton /hello/bytes",
            Kind::Hello => "baton /hello/",
            Kind::Notes => "baton /notes/api/notes",
        }
    }

    /// The kind this one is compared with within a round.
    pub(crate) fn base(self) -> Option<Kind> {
        match self {
            Kind::BatonBytes => Some(Kind::HyperBytes),
            Kind::Notes => Some(Kind::Hello),
            Kind::HyperBytes | Kind::Hello => None,
        }
    }
}

/// One target's share of one round.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Measure {
    pub(crate) kind: Kind,
    pub(crate) requests: usize,
    pub(crate) rps: f64,
    /// Body bytes of the successful responses per second, in MiB.
    pub(crate) mib_per_sec: f64,
    pub(crate) failed: usize,
    pub(crate) latency: Latency,
    /// CPU the server used during the round, µs per successful request.
    pub(crate) server_cpu_us_per_request: f64,
    pub(crate) errors: Vec<String>,
}

impl Measure {
    fn new(kind: Kind, recorded: &Recorded, cpu_secs: f64) -> Measure {
        Measure {
            kind,
            requests: recorded.samples.len(),
            rps: recorded.rps(),
            mib_per_sec: recorded.mib_per_sec(),
            failed: recorded.failed(),
            latency: recorded.latency(),
            server_cpu_us_per_request: recorded.cpu_us_per_request(cpu_secs),
            errors: recorded.first_errors(),
        }
    }
}

/// The servers a round runs against.
struct Bench {
    hyper: HyperHello,
    baton: HostProc,
    body_bytes: u64,
    timeout: Duration,
    connections: usize,
}

impl Bench {
    fn target(&self, kind: Kind) -> Target {
        let bytes = format!("bytes?n={}", self.body_bytes);
        let (addr, path) = match kind {
            Kind::HyperBytes => (self.hyper.addr, format!("/{bytes}")),
            Kind::BatonBytes => (self.baton.addr, format!("/hello/{bytes}")),
            Kind::Hello => (self.baton.addr, "/hello/".to_owned()),
            Kind::Notes => (self.baton.addr, "/notes/api/notes".to_owned()),
        };
        let large = matches!(kind, Kind::HyperBytes | Kind::BatonBytes);
        Target {
            body_bytes: large.then_some(self.body_bytes),
            ..Target::new(addr, path, self.timeout)
        }
    }

    fn pid(&self, kind: Kind) -> u32 {
        match kind {
            Kind::HyperBytes => self.hyper.pid(),
            _ => self.baton.pid(),
        }
    }

    async fn measure(&self, kind: Kind, secs: f64) -> Measure {
        let pid = self.pid(kind);
        let cpu = || procfs::cpu_secs(pid).unwrap_or(0.0);
        let before = cpu();
        let recorded = run_for(&self.target(kind), self.connections, secs).await;
        Measure::new(kind, &recorded, cpu() - before)
    }
}

/// The `baton` binary and the `hello` and `notes` modules, each built unless given.
fn build_host(options: &Options) -> anyhow::Result<(PathBuf, [PathBuf; 2])> {
    let (baton, modules) = artifacts::host_and_apps(
        options.common.release(),
        options.common.baton.clone(),
        &[
            ("hello", options.hello.clone()),
            ("notes", options.notes_module.clone()),
        ],
    )?;
    let [hello, notes] = <[PathBuf; 2]>::try_from(modules)
        .map_err(|_| anyhow::anyhow!("two modules were asked for"))?;
    Ok((baton, [hello, notes]))
}

/// Streamed responses a version may send at once during the run: as many as it has worker
/// threads (`limits.worker_threads`, 16 by default), each of which a stream holds. The
/// default cap (8) would answer a 503 to most of the 32 connections' streams; with this one,
/// connections past the workers wait for one, as any request does, and none is refused.
pub(crate) const MAX_STREAMS: usize = 16;

/// The host's config: `notes` keeps its SQLite file in `data_dir`; every worker may stream;
/// everything else default.
fn host_config(data_dir: &Path) -> String {
    format!(
        "[limits]\nmax_streams = {MAX_STREAMS}\n\n[apps.notes.config]\ndata_dir = {}\n",
        toml_string(&data_dir.to_string_lossy())
    )
}

/// `value` as a TOML basic string.
fn toml_string(value: &str) -> String {
    serde_json::Value::from(value).to_string()
}

async fn bench(options: &Options, settings: &Settings) -> anyhow::Result<report::Result> {
    let release = options.common.release();
    let hyper_binary = artifacts::hyper_hello(release, options.hyper.clone())?;
    let (baton, [hello, notes]) = build_host(options)?;
    let data_dir = tempfile::tempdir()?;
    let hyper = HyperHello::start(&hyper_binary)?;
    let host = start_baton(
        &baton,
        &[&hello, &notes],
        &host_config(data_dir.path()),
        &[],
        false,
    )
    .context("starting baton with hello and notes")?;
    servers::wait_ready(&host, "/hello/").await?;
    servers::wait_ready(&host, "/notes/api/notes").await?;
    let listed = seed::notes(host.addr, options.notes)
        .await
        .context("posting notes through the API")?;
    let mut bench = Bench {
        hyper,
        baton: host,
        body_bytes: options.body_bytes,
        timeout: options.common.timeout(),
        connections: options.connections,
    };
    for kind in Kind::ALL {
        bench.measure(kind, options.rounds.warmup_secs).await;
    }
    let mut rounds = Vec::new();
    for i in 0..options.rounds.rounds {
        let mut round = Vec::new();
        for kind in Kind::ALL {
            let measure = bench.measure(kind, options.rounds.round_secs).await;
            eprintln!(
                "round {}: {:<22} {:>8.0} req/s {:>8.1} MiB/s  p99 {:.2} ms  failed {}",
                i + 1,
                kind.label(),
                measure.rps,
                measure.mib_per_sec,
                measure.latency.p99_ms,
                measure.failed
            );
            round.push(measure);
        }
        rounds.push(round);
    }
    let warnings = bench.baton.warnings();
    let alive = bench.baton.alive();
    Ok(report::Result::new(
        settings.clone(),
        listed,
        rounds,
        alive,
        warnings,
    ))
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let settings = Settings {
        connections: options.connections,
        body_bytes: options.body_bytes,
        notes: options.notes,
        rounds: options.rounds.clone(),
        common: options.common.clone(),
    };
    let result = options
        .common
        .run(bench(&options, &settings), report::table)?;
    if !result.passed() {
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notes_data_dir_is_quoted_for_toml() {
        assert_eq!(
            host_config(Path::new("/tmp/a \"b\"")),
            "[limits]\nmax_streams = 16\n\n[apps.notes.config]\ndata_dir = \"/tmp/a \\\"b\\\"\"\n"
        );
    }
}
