//! `hostbench`: host upgrades and crash restarts under keep-alive load.
//!
//! 1. Starts `baton` supervised, as `baton serve` runs by default (a supervisor holding the
//!    listeners, a serving process it starts), serving `hello` and `counter` with the default
//!    in-memory sessions.
//! 2. Upgrade phase: keep-alive load on `/hello/` and, one session per connection, on
//!    `/counter/` (every count checked, so a lost session is a failed request); after `--gap-ms`
//!    of steady load each time, `SIGUSR2` to the supervisor, `--upgrades` times. An upgrade is
//!    done when `/status` answers with a new `host.pid` and the old serving process is gone; the
//!    next one waits until the supervisor has re-executed itself (its log says it watches the
//!    serving process again).
//! 3. Crash phase: the same load afresh (new connections, new sessions), and `SIGKILL` to the
//!    serving process `--crashes` times; a crash is done when `/status` answers with a new pid.
//!    Each serving process is left running `--min-uptime-secs` before it is killed, so that the
//!    supervisor's back-off for a crash loop (restarts of a process that died within 10 s of its
//!    start) does not enter the figures.
//! 4. Prints a table and, with `--json FILE`, writes every figure as JSON.
//!
//! Per phase: failed requests by kind; for each event the longest gap between two consecutive
//! successful responses (of all connections) that overlaps the event (time without service);
//! event -> new serving process answering `/status`; latency of the requests that started
//! inside event windows (event sent -> done) against the others.

mod events;
mod report;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use baton_benches::cli::{Common, HelloCounter};
use baton_benches::load;
use baton_benches::servers::{self, start_baton};
use baton_testkit::HostProc;
use clap::Parser;

/// Host upgrades (SIGUSR2) and crash restarts (SIGKILL) of a supervised host under load.
#[derive(Debug, Clone, Parser)]
#[command(name = "hostbench")]
struct Options {
    #[command(flatten)]
    settings: Settings,
    #[command(flatten)]
    apps: HelloCounter,
}

/// The settings of a run, as given and as reported.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub(crate) struct Settings {
    /// Keep-alive connections on /hello/.
    #[arg(long, default_value_t = 16)]
    pub(crate) connections: usize,
    /// Keep-alive connections on /counter/, each one client with its own in-memory session.
    #[arg(long, default_value_t = 16)]
    pub(crate) session_connections: usize,
    /// Upgrades (SIGUSR2 to the supervisor).
    #[arg(long, default_value_t = 10)]
    pub(crate) upgrades: usize,
    /// Crash restarts (SIGKILL to the serving process).
    #[arg(long, default_value_t = 10)]
    pub(crate) crashes: usize,
    /// Steady load before each event, and after the last one of a phase.
    #[arg(long, default_value_t = 2000)]
    pub(crate) gap_ms: u64,
    /// A serving process runs at least this long before it is killed (the supervisor backs off
    /// restarts of one that dies within 10 s of its start).
    #[arg(long, default_value_t = 11.0)]
    pub(crate) min_uptime_secs: f64,
    /// An event not done after this long is failed (and ends its phase).
    #[arg(long, default_value_t = 60)]
    pub(crate) event_timeout_secs: u64,
    /// Extra TOML for the host's configuration file (default: none, the host's defaults).
    #[arg(long, default_value = "")]
    pub(crate) host_config: String,
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) common: Common,
}

fn main() -> anyhow::Result<()> {
    let Options { settings, apps } = Options::parse();
    let (baton, modules) = apps.build(&settings.common)?;
    let result = settings
        .common
        .run(bench(&settings, &baton, &modules), report::table)?;
    if !result.passed() {
        std::process::exit(1);
    }
    Ok(())
}

/// Waits until the host answers `/hello/` and `/status`.
async fn wait_serving(baton: &HostProc) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let hello = load::get(baton.addr, "/hello/").await;
        if matches!(hello, Ok((200, _))) && servers::serving_pid(baton).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the host does not serve /hello/: {hello:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn bench(
    settings: &Settings,
    binary: &std::path::Path,
    modules: &[PathBuf],
) -> anyhow::Result<report::Result> {
    let mut baton = start_baton(
        binary,
        &[&modules[0], &modules[1]],
        &settings.host_config,
        &[],
        true,
    )?;
    wait_serving(&baton).await?;
    let upgrades = events::phase(&baton, events::Kind::Upgrade, settings).await?;
    let crashes = events::phase(&baton, events::Kind::Crash, settings).await?;
    let alive = baton.alive();
    let warnings = baton.warnings();
    Ok(report::Result::new(
        settings.clone(),
        vec![upgrades, crashes],
        alive,
        warnings,
    ))
}
