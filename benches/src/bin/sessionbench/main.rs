//! `sessionbench`: what a session costs, against a request that uses none, in the same run.
//!
//! 1. Starts its own `redis-server` (from PATH, free port, no persistence) and the `baton` host
//!    with `--sessions redis://127.0.0.1:PORT/0`, serving `hello` and `counter`; and, for
//!    reference, a second host with the in-memory store serving the same modules.
//! 2. Rounds: the same keep-alive load (N connections, each keeping its own cookie, so one
//!    session per connection) on `/hello/`, then `/counter/` (Redis), then `/counter/` (memory),
//!    `--rounds` times. Every `counter` body must be `count N`, N one more than the
//!    connection's previous one; anything else is a failed request.
//! 3. Prints a table and, with `--json FILE`, writes every figure as JSON.

mod report;

use std::time::Duration;

use anyhow::Context;
use baton_benches::cli::{Common, HelloCounter, Rounds};
use baton_benches::load::{self, Recorded, Target, run_for};
use baton_benches::procfs;
use baton_benches::servers::{self, start_baton};
use baton_testkit::{HostProc, RedisServer};
use clap::Parser;

/// Sessions under keep-alive load: counter (Redis) against hello, one session per connection.
#[derive(Debug, Clone, Parser)]
#[command(name = "sessionbench")]
struct Options {
    /// Keep-alive connections of the load, each one client with its own session.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    #[command(flatten)]
    rounds: Rounds,
    /// Skip the reference host with in-memory sessions.
    #[arg(long)]
    no_memory: bool,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    apps: HelloCounter,
}

/// The settings of a run, as reported.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Settings {
    connections: usize,
    #[serde(flatten)]
    rounds: Rounds,
    memory_reference: bool,
    #[serde(flatten)]
    common: Common,
}

/// What is measured: a path on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// `/hello/` on the Redis host: no session touched.
    Hello,
    /// `/counter/` on the Redis host.
    CounterRedis,
    /// `/counter/` on the in-memory host.
    CounterMemory,
}

impl Kind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Hello => "hello",
            Kind::CounterRedis => "counter (redis)",
            Kind::CounterMemory => "counter (memory)",
        }
    }
}

/// One target's share of one round.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Measure {
    pub(crate) kind: Kind,
    pub(crate) requests: usize,
    pub(crate) rps: f64,
    pub(crate) failed: usize,
    /// Counter bodies that were not the next count (included in `failed`).
    pub(crate) count_mismatches: usize,
    /// Counter bodies checked and right.
    pub(crate) counts_ok: usize,
    /// Session cookies the connections were given: one per connection when none is lost.
    pub(crate) sessions: usize,
    pub(crate) latency: baton_benches::stats::Latency,
    /// CPU the host and `redis-server` used during the round, µs per successful request.
    pub(crate) host_cpu_us_per_request: f64,
    pub(crate) redis_cpu_us_per_request: f64,
    pub(crate) errors: Vec<String>,
}

/// The processes a round runs against.
struct Bench {
    redis: RedisServer,
    redis_host: HostProc,
    memory_host: Option<HostProc>,
    timeout: Duration,
    connections: usize,
}

impl Bench {
    fn host(&self, kind: Kind) -> Option<&HostProc> {
        match kind {
            Kind::Hello | Kind::CounterRedis => Some(&self.redis_host),
            Kind::CounterMemory => self.memory_host.as_ref(),
        }
    }

    fn target(&self, kind: Kind) -> Option<Target> {
        let host = self.host(kind)?;
        let path = if kind == Kind::Hello {
            "/hello/"
        } else {
            "/counter/"
        };
        Some(Target {
            cookies: true,
            counter: kind != Kind::Hello,
            ..Target::new(host.addr, path, self.timeout)
        })
    }

    fn kinds(&self) -> Vec<Kind> {
        let mut kinds = vec![Kind::Hello, Kind::CounterRedis];
        if self.memory_host.is_some() {
            kinds.push(Kind::CounterMemory);
        }
        kinds
    }

    async fn measure(&self, kind: Kind, secs: f64) -> Option<Measure> {
        let target = self.target(kind)?;
        let host = self.host(kind)?;
        let cpu = || {
            (
                procfs::cpu_secs(host.pid()).unwrap_or(0.0),
                procfs::cpu_secs(self.redis.pid()).unwrap_or(0.0),
            )
        };
        let before = cpu();
        let recorded = run_for(&target, self.connections, secs).await;
        let after = cpu();
        Some(Measure::new(
            kind,
            &recorded,
            (after.0 - before.0, after.1 - before.1),
        ))
    }
}

impl Measure {
    fn new(kind: Kind, recorded: &Recorded, (host_cpu, redis_cpu): (f64, f64)) -> Measure {
        Measure {
            kind,
            requests: recorded.samples.len(),
            rps: recorded.rps(),
            failed: recorded.failed(),
            count_mismatches: recorded.with_outcome(load::FAIL_BODY),
            counts_ok: recorded.counts_ok,
            sessions: recorded.cookies_set,
            latency: recorded.latency(),
            host_cpu_us_per_request: recorded.cpu_us_per_request(host_cpu),
            redis_cpu_us_per_request: recorded.cpu_us_per_request(redis_cpu),
            errors: recorded.first_errors(),
        }
    }
}

async fn bench(options: &Options, settings: &Settings) -> anyhow::Result<report::Result> {
    let (baton, modules) = options.apps.build(&options.common)?;
    let apps = [modules[0].as_path(), modules[1].as_path()];
    let redis = RedisServer::try_start()?;
    let url = redis.url();
    let redis_host = start_baton(&baton, &apps, "", &["--sessions", &url], false)
        .context("starting baton with Redis sessions")?;
    let memory_host = if options.no_memory {
        None
    } else {
        Some(start_baton(&baton, &apps, "", &[], false).context("starting baton (memory)")?)
    };
    let mut bench = Bench {
        redis,
        redis_host,
        memory_host,
        timeout: options.common.timeout(),
        connections: options.connections,
    };
    for kind in bench.kinds() {
        let host = bench.host(kind).context("host")?;
        servers::wait_ready(host, &bench.target(kind).context("target")?.path).await?;
    }
    for kind in bench.kinds() {
        bench.measure(kind, options.rounds.warmup_secs).await;
    }
    let mut rounds = Vec::new();
    for i in 0..options.rounds.rounds {
        let mut round = Vec::new();
        for kind in bench.kinds() {
            let measure = bench
                .measure(kind, options.rounds.round_secs)
                .await
                .context("measure")?;
            eprintln!(
                "round {}: {:<17} {:>8.0} req/s  p99 {:.2} ms  failed {}",
                i + 1,
                kind.label(),
                measure.rps,
                measure.latency.p99_ms,
                measure.failed
            );
            round.push(measure);
        }
        rounds.push(round);
    }
    let mut warnings = bench.redis_host.warnings();
    if let Some(host) = &bench.memory_host {
        warnings.extend(host.warnings());
    }
    let mut alive = bench.redis_host.alive();
    if let Some(host) = &mut bench.memory_host {
        alive &= host.alive();
    }
    Ok(report::Result::new(
        settings.clone(),
        url,
        rounds,
        alive,
        warnings,
    ))
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let settings = Settings {
        connections: options.connections,
        rounds: options.rounds.clone(),
        memory_reference: !options.no_memory,
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
