//! `tlsbench`: Baton over HTTPS against bare hyper with rustls, in the same run.
//!
//! 1. Makes a certificate authority and a server certificate for `localhost` (ECDSA P-256),
//!    starts `hyper-hello --tls-cert --tls-key` and `baton` with `listen_tls` and the same
//!    files (its default configuration otherwise, access log on), serving `hello`; and reads
//!    plain-HTTP `baton` on the same host for reference.
//! 2. Rounds, each target in turn: keep-alive load over TLS (N connections, one request in
//!    flight each), then handshake load (every request on a new connection: TCP connect, a
//!    full TLS 1.3 handshake — the client never resumes a session —, one request, close), and
//!    keep-alive plain HTTP on `baton`. Handshakes per second are the handshake load's
//!    requests per second. Ratios are taken within a round; the report gives their medians.
//! 3. Prints a table and, with `--json FILE`, writes every figure as JSON. Any failed request
//!    fails the run.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use baton_benches::cli::{Common, Rounds};
use baton_benches::load::{self, Recorded, Target, run_for};
use baton_benches::report::{Machine, latency_row};
use baton_benches::servers::{self, HyperHello, start_baton};
use baton_benches::stats::{Latency, median};
use baton_benches::tls::Certs;
use baton_benches::{artifacts, procfs};
use baton_testkit::HostProc;
use clap::Parser;
use serde::Serialize;

/// HTTPS: full handshakes per second and keep-alive throughput, baton against bare hyper.
#[derive(Debug, Clone, Parser)]
#[command(name = "tlsbench")]
struct Options {
    /// Concurrent connections of each load.
    #[arg(long, default_value_t = 32)]
    connections: usize,
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
}

/// What one load measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    HyperKeepAlive,
    BatonKeepAlive,
    HyperHandshakes,
    BatonHandshakes,
    BatonPlainKeepAlive,
}

const KINDS: [Kind; 5] = [
    Kind::HyperKeepAlive,
    Kind::BatonKeepAlive,
    Kind::HyperHandshakes,
    Kind::BatonHandshakes,
    Kind::BatonPlainKeepAlive,
];

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::HyperKeepAlive => "hyper, TLS keep-alive",
            Kind::BatonKeepAlive => "baton, TLS keep-alive",
            Kind::HyperHandshakes => "hyper, TLS handshakes",
            Kind::BatonHandshakes => "baton, TLS handshakes",
            Kind::BatonPlainKeepAlive => "baton, plain keep-alive",
        }
    }
}

/// One load of one round.
#[derive(Debug, Clone, Serialize)]
struct Measure {
    kind: Kind,
    requests: usize,
    /// Successful requests per second (with a new connection per request: handshakes/s).
    rps: f64,
    failed: usize,
    latency: Latency,
    /// CPU the server used during the load, µs per successful request.
    server_cpu_us_per_request: f64,
    errors: Vec<String>,
}

/// Medians over the rounds.
#[derive(Debug, Clone, Serialize)]
struct Summary {
    /// Median requests/s of each kind, in the order of the kinds.
    rps_median: Vec<(Kind, f64)>,
    /// Median of the per-round ratios baton / hyper, keep-alive over TLS.
    keep_alive_ratio_median: f64,
    /// Median of the per-round ratios baton / hyper, handshakes per second.
    handshake_ratio_median: f64,
    /// Median of the per-round ratios baton over TLS / baton plain, keep-alive.
    tls_over_plain_ratio_median: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    machine: Machine,
    connections: usize,
    round_secs: f64,
    rounds: Vec<Vec<Measure>>,
    summary: Summary,
    failed_requests: usize,
    host_warnings: Vec<String>,
    profile: &'static str,
}

struct Servers {
    hyper: HyperHello,
    baton: HostProc,
    tls: load::TlsClient,
    timeout: Duration,
}

impl Servers {
    fn target(&self, kind: Kind) -> anyhow::Result<(Target, u32)> {
        let baton_tls = self
            .baton
            .tls_addr
            .context("baton logged no HTTPS address")?;
        let (addr, path, pid, tls, reconnect) = match kind {
            Kind::HyperKeepAlive => (self.hyper.addr, "/", self.hyper.pid(), true, false),
            Kind::HyperHandshakes => (self.hyper.addr, "/", self.hyper.pid(), true, true),
            Kind::BatonKeepAlive => (baton_tls, "/hello/", self.baton.pid(), true, false),
            Kind::BatonHandshakes => (baton_tls, "/hello/", self.baton.pid(), true, true),
            Kind::BatonPlainKeepAlive => {
                (self.baton.addr, "/hello/", self.baton.pid(), false, false)
            }
        };
        let target = Target {
            tls: tls.then(|| self.tls.clone()),
            reconnect,
            ..Target::new(addr, path, self.timeout)
        };
        Ok((target, pid))
    }

    async fn measure(&self, kind: Kind, connections: usize, secs: f64) -> anyhow::Result<Measure> {
        let (target, pid) = self.target(kind)?;
        let before = procfs::cpu_secs(pid).unwrap_or(0.0);
        let recorded = run_for(&target, connections, secs).await;
        let cpu = procfs::cpu_secs(pid).unwrap_or(0.0) - before;
        Ok(Measure::new(kind, &recorded, cpu))
    }
}

impl Measure {
    fn new(kind: Kind, recorded: &Recorded, cpu: f64) -> Measure {
        Measure {
            kind,
            requests: recorded.samples.len(),
            rps: recorded.rps(),
            failed: recorded.failed(),
            latency: recorded.latency(),
            server_cpu_us_per_request: recorded.cpu_us_per_request(cpu),
            errors: recorded.first_errors(),
        }
    }
}

fn rps(round: &[Measure], kind: Kind) -> f64 {
    round.iter().find(|m| m.kind == kind).map_or(0.0, |m| m.rps)
}

fn summarize(rounds: &[Vec<Measure>]) -> Summary {
    let ratio = |a: Kind, b: Kind| {
        let ratios: Vec<f64> = rounds
            .iter()
            .map(|r| rps(r, a) / rps(r, b).max(f64::MIN_POSITIVE))
            .collect();
        median(&ratios)
    };
    Summary {
        rps_median: KINDS
            .iter()
            .map(|&k| {
                (
                    k,
                    median(&rounds.iter().map(|r| rps(r, k)).collect::<Vec<_>>()),
                )
            })
            .collect(),
        keep_alive_ratio_median: ratio(Kind::BatonKeepAlive, Kind::HyperKeepAlive),
        handshake_ratio_median: ratio(Kind::BatonHandshakes, Kind::HyperHandshakes),
        tls_over_plain_ratio_median: ratio(Kind::BatonKeepAlive, Kind::BatonPlainKeepAlive),
    }
}

fn table(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "tlsbench ({}, {} cores, {}): {} connections, {} rounds of {} s per load",
        report.machine.cpu,
        report.machine.cores,
        report.profile,
        report.connections,
        report.rounds.len(),
        report.round_secs
    );
    for (i, round) in report.rounds.iter().enumerate() {
        let _ = writeln!(out, "round {}", i + 1);
        for m in round {
            let _ = writeln!(
                out,
                "  {:<28} {:>9.0} req/s  failed {}  server CPU {:.1} µs/req",
                m.kind.label(),
                m.rps,
                m.failed,
                m.server_cpu_us_per_request
            );
            latency_row(&mut out, "", &m.latency);
        }
    }
    let s = &report.summary;
    let _ = writeln!(out, "medians");
    for (kind, rps) in &s.rps_median {
        let _ = writeln!(out, "  {:<28} {:>9.0} req/s", kind.label(), rps);
    }
    let _ = writeln!(
        out,
        "  keep-alive over TLS, baton / hyper:    {:.3}\n  handshakes/s, baton / hyper:           {:.3}\n  baton keep-alive, TLS / plain:         {:.3}",
        s.keep_alive_ratio_median, s.handshake_ratio_median, s.tls_over_plain_ratio_median
    );
    let _ = writeln!(
        out,
        "failed requests: {}; host warnings: {}",
        report.failed_requests,
        report.host_warnings.len()
    );
    out
}

async fn bench(options: &Options) -> anyhow::Result<Report> {
    let release = options.common.release();
    let built = artifacts::prepare(
        release,
        options.common.baton.clone(),
        options.hyper.clone(),
        [options.hello.clone(), options.hello.clone()],
    )?;
    let dir = tempfile::tempdir()?;
    let certs = Certs::generate(dir.path());
    let (cert, key) = (certs.cert.to_string_lossy(), certs.key.to_string_lossy());
    let hyper = HyperHello::start_with(
        &built.hyper_hello,
        &["--tls-cert", &cert, "--tls-key", &key],
    )?;
    let baton = start_baton(
        &built.baton,
        &[&built.hello[0]],
        &certs.config,
        &["--listen-tls", "127.0.0.1:0"],
        false,
    )
    .context("starting baton with HTTPS")?;
    servers::wait_ready(&baton, "/hello/").await?;
    let servers = Servers {
        hyper,
        baton,
        tls: certs.client()?,
        timeout: options.common.timeout(),
    };
    for kind in KINDS {
        servers
            .measure(kind, options.connections, options.rounds.warmup_secs)
            .await?;
    }
    let mut rounds = Vec::new();
    for i in 0..options.rounds.rounds {
        let mut round = Vec::new();
        for kind in KINDS {
            let m = servers
                .measure(kind, options.connections, options.rounds.round_secs)
                .await?;
            eprintln!(
                "round {}: {:<24} {:>8.0} req/s  p99 {:.2} ms  failed {}",
                i + 1,
                kind.label(),
                m.rps,
                m.latency.p99_ms,
                m.failed
            );
            round.push(m);
        }
        rounds.push(round);
    }
    let failed_requests = rounds.iter().flatten().map(|m| m.failed).sum();
    Ok(Report {
        machine: Machine::current(),
        connections: options.connections,
        round_secs: options.rounds.round_secs,
        summary: summarize(&rounds),
        rounds,
        failed_requests,
        host_warnings: servers.baton.warnings(),
        profile: options.common.profile(),
    })
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let report = options.common.run(bench(&options), table)?;
    if report.failed_requests > 0 {
        for m in report.rounds.iter().flatten().filter(|m| m.failed > 0) {
            eprintln!("{}: {:?}", m.kind.label(), m.errors);
        }
        std::process::exit(1);
    }
    Ok(())
}
