//! `sessionbench`: what a session costs, against a request that uses none, in the same run; and
//! what production-shaped Redis costs against plain Redis.
//!
//! 1. Starts its own Redis from the test kit (from PATH, free ports, no persistence): a plain
//!    `redis-server`, one that speaks only TLS (its certificate from a CA made for the run) and
//!    a cluster of three masters; and a `baton` host on each (`--sessions redis://…`,
//!    `rediss://…` trusting the CA through `sessions.tls_ca_file`, `redis+cluster://…`), all
//!    serving `hello` and `counter`; for reference, a host with the in-memory store.
//! 2. Rounds: the same keep-alive load (N connections, each keeping its own cookie, so one
//!    session per connection) on `/hello/` (the plain Redis host), then `/counter/` on each
//!    host in turn, `--rounds` times. Every `counter` body must be `count N`, N one more than
//!    the connection's previous one; anything else is a failed request.
//! 3. Counts what each `counter (redis)` request costs that Redis: the commands it ran during
//!    the load (`INFO commandstats` before and after), per request.
//! 4. Prints a table with ratios to `hello` and to plain Redis, each taken within a round, the
//!    issue's targets (met or not), and, with `--json FILE`, writes every figure as JSON.

mod report;

use std::time::Duration;

use anyhow::Context;
use baton_benches::cli::{Common, HelloCounter, Rounds};
use baton_benches::load::{self, Recorded, Target, run_for};
use baton_benches::procfs;
use baton_benches::servers::{self, start_baton};
use baton_testkit::HostProc;
use baton_testkit::redis::{ClientCerts, Cluster, RedisServer, TlsRedis};
use clap::Parser;

/// Sessions under keep-alive load: counter on plain, TLS and Cluster Redis and in memory, against
/// hello, one session per connection.
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
    /// Skip the host on a TLS Redis.
    #[arg(long)]
    no_tls: bool,
    /// Skip the host on a Redis Cluster.
    #[arg(long)]
    no_cluster: bool,
    /// Extra TOML at the top of every host's configuration file (default: none, the host's
    /// defaults), e.g. `limits = { worker_threads = 32 }`.
    #[arg(long, default_value = "")]
    host_config: String,
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
    tls: bool,
    cluster: bool,
    host_config: String,
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
    /// `/counter/` on the host whose Redis speaks only TLS.
    CounterTls,
    /// `/counter/` on the host on a Redis Cluster.
    CounterCluster,
    /// `/counter/` on the in-memory host.
    CounterMemory,
}

impl Kind {
    /// Every kind, in the order a round measures them.
    const ALL: [Kind; 5] = [
        Kind::Hello,
        Kind::CounterRedis,
        Kind::CounterTls,
        Kind::CounterCluster,
        Kind::CounterMemory,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Hello => "hello",
            Kind::CounterRedis => "counter (redis)",
            Kind::CounterTls => "counter (tls)",
            Kind::CounterCluster => "counter (cluster)",
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
    /// CPU the host and its `redis-server`s used during the round, µs per successful request.
    pub(crate) host_cpu_us_per_request: f64,
    pub(crate) redis_cpu_us_per_request: f64,
    /// Commands the plain Redis ran per request (`counter (redis)` only).
    pub(crate) redis_commands_per_request: Option<f64>,
    pub(crate) errors: Vec<String>,
}

/// A host and the Redis its sessions are in (none: in memory).
struct Backend {
    host: HostProc,
    /// Its `--sessions` URL, or `memory`.
    store: String,
    redis_pids: Vec<u32>,
    /// A plain Redis's URL, whose command statistics can be read.
    stats_url: Option<String>,
    /// The Redis processes, killed when this is dropped.
    _redis: Option<Box<dyn std::any::Any>>,
}

impl Backend {
    /// A host with `--sessions url` (none: in memory) and `host_config` then `config`, serving
    /// `apps`.
    fn start(
        baton: &std::path::Path,
        apps: &[&std::path::Path],
        url: Option<String>,
        host_config: &str,
        config: &str,
        redis: Option<(Vec<u32>, Box<dyn std::any::Any>)>,
    ) -> anyhow::Result<Backend> {
        let args: Vec<&str> = url.iter().flat_map(|u| ["--sessions", u]).collect();
        let store = url.clone().unwrap_or_else(|| "memory".to_owned());
        let host = start_baton(
            baton,
            apps,
            &format!("{host_config}\n{config}"),
            &args,
            false,
        )
        .with_context(|| format!("starting baton with sessions in {store}"))?;
        let (redis_pids, redis) = redis.map_or((Vec::new(), None), |(p, r)| (p, Some(r)));
        Ok(Backend {
            host,
            store,
            redis_pids,
            stats_url: None,
            _redis: redis,
        })
    }
}

/// The hosts a round runs against.
struct Bench {
    /// Redis's, then TLS's, then Cluster's, then memory's, the skipped ones left out.
    backends: Vec<(Kind, Backend)>,
    timeout: Duration,
    connections: usize,
}

impl Bench {
    fn backend(&self, kind: Kind) -> Option<&Backend> {
        // `hello` runs on the plain Redis host.
        let kind = if kind == Kind::Hello {
            Kind::CounterRedis
        } else {
            kind
        };
        self.backends
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, b)| b)
    }

    fn target(&self, kind: Kind) -> Option<Target> {
        let host = &self.backend(kind)?.host;
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
        Kind::ALL
            .into_iter()
            .filter(|&k| self.backend(k).is_some())
            .collect()
    }

    async fn measure(&self, kind: Kind, secs: f64) -> Option<Measure> {
        let target = self.target(kind)?;
        let backend = self.backend(kind)?;
        let cpu = || {
            let redis: f64 = backend
                .redis_pids
                .iter()
                .map(|&pid| procfs::cpu_secs(pid).unwrap_or(0.0))
                .sum();
            (procfs::cpu_secs(backend.host.pid()).unwrap_or(0.0), redis)
        };
        // Only the counter's requests use that Redis; hello's never do.
        let stats = backend.stats_url.as_deref().filter(|_| kind != Kind::Hello);
        let commands = || stats.and_then(redis_commands);
        let (before, commands_before) = (cpu(), commands());
        let recorded = run_for(&target, self.connections, secs).await;
        let (after, commands_after) = (cpu(), commands());
        let mut measure = Measure::new(kind, &recorded, (after.0 - before.0, after.1 - before.1));
        if let (Some(before), Some(after)) = (commands_before, commands_after) {
            let requests = recorded.samples.len().max(1) as f64;
            measure.redis_commands_per_request =
                Some(after.saturating_sub(before) as f64 / requests);
        }
        Some(measure)
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
            redis_commands_per_request: None,
            errors: recorded.first_errors(),
        }
    }
}

/// The commands the host's Lua scripts run: Redis counts them as well, but the host never
/// sends them itself.
const RUN_BY_SCRIPTS: [&str; 7] = [
    "hget", "hset", "hdel", "hgetall", "exists", "pexpire", "rename",
];

/// Commands clients sent the Redis at `url` since it started (round trips), the readings' own
/// (`INFO`, a new connection's greeting) and those run by scripts left out; `None` if it
/// cannot say.
fn redis_commands(url: &str) -> Option<u64> {
    let mut conn = redis::Client::open(url)
        .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(5)))
        .ok()?;
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .ok()?;
    let own = ["info", "client", "hello", "select", "auth"];
    Some(
        stats
            .lines()
            .filter_map(|line| {
                let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls: u64 = rest
                    .strip_prefix("calls=")?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()?;
                let name = name.split('|').next()?;
                (!own.contains(&name) && !RUN_BY_SCRIPTS.contains(&name)).then_some(calls)
            })
            .sum(),
    )
}

async fn bench(options: &Options, settings: &Settings) -> anyhow::Result<report::Result> {
    let (baton, modules) = options.apps.build(&options.common)?;
    let apps = [modules[0].as_path(), modules[1].as_path()];
    let mut backends = Vec::new();
    let redis = RedisServer::try_start()?;
    let stats_url = redis.url();
    let mut plain = Backend::start(
        &baton,
        &apps,
        Some(redis.url()),
        &options.host_config,
        "",
        Some((vec![redis.pid()], Box::new(redis))),
    )?;
    plain.stats_url = Some(stats_url);
    backends.push((Kind::CounterRedis, plain));
    if !options.no_tls {
        let tls = TlsRedis::try_start(ClientCerts::NotAsked).context("a TLS redis-server")?;
        let config = format!("[sessions]\n{}", tls.sessions_config("ca.pem"));
        backends.push((
            Kind::CounterTls,
            Backend::start(
                &baton,
                &apps,
                Some(tls.url()),
                &options.host_config,
                &config,
                Some((vec![tls.pid()], Box::new(tls))),
            )?,
        ));
    }
    if !options.no_cluster {
        let cluster = Cluster::try_start(0).context("a Redis Cluster")?;
        backends.push((
            Kind::CounterCluster,
            Backend::start(
                &baton,
                &apps,
                Some(cluster.url()),
                &options.host_config,
                "",
                Some((cluster.pids(), Box::new(cluster))),
            )?,
        ));
    }
    if !options.no_memory {
        backends.push((
            Kind::CounterMemory,
            Backend::start(&baton, &apps, None, &options.host_config, "", None)?,
        ));
    }
    let mut bench = Bench {
        backends,
        timeout: options.common.timeout(),
        connections: options.connections,
    };
    for kind in bench.kinds() {
        let host = &bench.backend(kind).context("host")?.host;
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
    let mut warnings = Vec::new();
    let mut alive = true;
    let mut stores = Vec::new();
    for (kind, backend) in &mut bench.backends {
        warnings.extend(backend.host.warnings());
        alive &= backend.host.alive();
        stores.push((*kind, backend.store.clone()));
    }
    Ok(report::Result::new(
        settings.clone(),
        stores,
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
        tls: !options.no_tls,
        cluster: !options.no_cluster,
        host_config: options.host_config.clone(),
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
