//! The events under load: upgrades (`SIGUSR2` to the supervisor) and crash restarts (`SIGKILL`
//! to the serving process), each timed from outside through `/status`.

use std::time::{Duration, Instant};

use anyhow::bail;
use baton_benches::load::{Load, Sample, Target};
use baton_benches::servers;
use baton_testkit::log::LogTail;
use baton_testkit::{HostProc, Signal, running, signal};
use serde::Serialize;

use crate::Settings;

const POLL: Duration = Duration::from_millis(5);
/// What the supervisor logs once it has re-executed itself and handles signals again.
const REEXECUTED: &str = "watching the serving process again";

/// What happens to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// `SIGUSR2` to the supervisor: a new serving process takes over from the old one.
    Upgrade,
    /// `SIGKILL` to the serving process: the supervisor starts a new one.
    Crash,
}

/// One event as observed from outside; times in µs after the phase's load started.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Event {
    /// 1-based.
    pub(crate) index: usize,
    pub(crate) ok: bool,
    pub(crate) error: Option<String>,
    pub(crate) old_pid: u32,
    pub(crate) new_pid: Option<u32>,
    /// The signal was sent.
    pub(crate) sent_us: u64,
    /// `/status` first answered with a new `host.pid`.
    pub(crate) serving_us: Option<u64>,
    /// The event is over: new pid serving and the old process gone.
    pub(crate) done_us: Option<u64>,
    /// Upgrades: the supervisor re-executed itself (seen in its log).
    pub(crate) reexecuted_us: Option<u64>,
}

impl Event {
    /// The event's window: from the signal to done (or to the give-up).
    pub(crate) fn window(&self) -> (u64, u64) {
        (self.sent_us, self.done_us.unwrap_or(self.sent_us))
    }
}

/// Everything one phase recorded.
#[derive(Debug)]
pub(crate) struct Phase {
    pub(crate) kind: Kind,
    pub(crate) requested: usize,
    pub(crate) events: Vec<Event>,
    /// Every request of both loads, start times on the phase's clock.
    pub(crate) samples: Vec<Sample>,
    pub(crate) elapsed: Duration,
    pub(crate) errors: Vec<String>,
    /// Session cookies given to the `/counter/` connections, and counts checked right.
    pub(crate) sessions: usize,
    pub(crate) counts_ok: usize,
}

fn micros(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Polls `/status` until `done` accepts its pid, or fails at `deadline`.
async fn until_pid(
    baton: &HostProc,
    deadline: Instant,
    what: &str,
    done: impl Fn(u32) -> bool,
) -> anyhow::Result<u32> {
    loop {
        // A call waits in the listen backlog while no process accepts: bound it.
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(Ok(pid)) = tokio::time::timeout(left, servers::serving_pid(baton)).await
            && done(pid)
        {
            return Ok(pid);
        }
        if Instant::now() > deadline {
            bail!("{what} not seen in time");
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn until(deadline: Instant, what: &str, done: impl Fn() -> bool) -> anyhow::Result<()> {
    while !done() {
        if Instant::now() > deadline {
            bail!("{what} not seen in time");
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// Sends one event and follows it to its end, filling `event` as it goes.
async fn one(
    baton: &HostProc,
    kind: Kind,
    origin: Instant,
    timeout: Duration,
    log: &mut LogTail,
    event: &mut Event,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let old = event.old_pid;
    let (pid, sig) = match kind {
        Kind::Upgrade => (baton.pid(), Signal::USR2),
        Kind::Crash => (old, Signal::KILL),
    };
    event.sent_us = micros(origin);
    signal(pid, sig)?;
    let new = until_pid(baton, deadline, "a new serving process", |p| p != old).await?;
    event.serving_us = Some(micros(origin));
    event.new_pid = Some(new);
    until(deadline, "the old serving process gone", || !running(old)).await?;
    event.done_us = Some(micros(origin));
    if kind == Kind::Upgrade {
        // Until the supervisor has re-executed itself, another SIGUSR2 could find it without
        // its handler (and end it).
        let mut seen = false;
        while !seen {
            seen = log.lines()?.iter().any(|l| l.contains(REEXECUTED));
            if Instant::now() > deadline {
                bail!("the supervisor's re-execution not seen in time");
            }
            tokio::time::sleep(POLL).await;
        }
        event.reexecuted_us = Some(micros(origin));
    }
    Ok(())
}

/// Runs one phase: fresh load on both paths, `settings.upgrades` or `settings.crashes` events.
pub(crate) async fn phase(
    baton: &HostProc,
    kind: Kind,
    settings: &Settings,
) -> anyhow::Result<Phase> {
    let timeout = Duration::from_millis(settings.common.timeout_ms);
    let hello = Target::new(baton.addr, "/hello/", timeout);
    let counter = Target {
        cookies: true,
        counter: true,
        ..Target::new(baton.addr, "/counter/", timeout)
    };
    let requested = match kind {
        Kind::Upgrade => settings.upgrades,
        Kind::Crash => settings.crashes,
    };
    let gap = Duration::from_millis(settings.gap_ms);
    let min_uptime = Duration::from_secs_f64(settings.min_uptime_secs);
    let event_timeout = Duration::from_secs(settings.event_timeout_secs);
    let mut log = baton.log_tail()?;
    let origin = Instant::now();
    let loads = [
        Load::start(&hello, settings.connections),
        Load::start(&counter, settings.session_connections),
    ];
    // The serving process now serving, and since when it is known to.
    let mut serving_since = Instant::now();
    let mut events = Vec::new();
    for index in 1..=requested {
        tokio::time::sleep(gap).await;
        if kind == Kind::Crash {
            tokio::time::sleep(min_uptime.saturating_sub(serving_since.elapsed())).await;
        }
        let mut event = Event {
            index,
            ok: false,
            error: None,
            old_pid: servers::serving_pid(baton).await?,
            new_pid: None,
            sent_us: 0,
            serving_us: None,
            done_us: None,
            reexecuted_us: None,
        };
        let outcome = one(baton, kind, origin, event_timeout, &mut log, &mut event).await;
        serving_since = Instant::now();
        event.ok = outcome.is_ok();
        event.error = outcome.err().map(|e| format!("{e:#}"));
        let failed = !event.ok;
        eprintln!(
            "{kind:?} {index}: {}",
            event.error.as_deref().map_or_else(
                || format!(
                    "new serving process {} ms after the signal",
                    (event.serving_us.unwrap_or(0) - event.sent_us) / 1000
                ),
                str::to_owned
            )
        );
        events.push(event);
        if failed {
            break;
        }
    }
    tokio::time::sleep(gap).await;
    let elapsed = origin.elapsed();
    let mut phase = Phase {
        kind,
        requested,
        events,
        samples: Vec::new(),
        elapsed,
        errors: Vec::new(),
        sessions: 0,
        counts_ok: 0,
    };
    for load in loads {
        // Each load's clock starts when it did: move its samples onto the phase's.
        let offset =
            u32::try_from(load.started().duration_since(origin).as_micros()).unwrap_or(u32::MAX);
        let recorded = load.stop().await;
        phase.errors.extend(recorded.first_errors());
        // Only `/counter/` sets cookies and has its counts checked.
        phase.sessions += recorded.cookies_set;
        phase.counts_ok += recorded.counts_ok;
        phase
            .samples
            .extend(recorded.samples.into_iter().map(|mut s| {
                s.start_us = s.start_us.saturating_add(offset);
                s
            }));
    }
    Ok(phase)
}
