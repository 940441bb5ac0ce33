//! The supervisor: a small process that owns the listening sockets and keeps one serving process
//! running on them.
//!
//! `baton serve` binds its listeners (or takes them from systemd socket activation) and starts
//! itself again as the serving process, which inherits them as descriptors 3 (HTTP), 4
//! (admin) and, with `listen_tls`, 5 (HTTPS) through the `LISTEN_FDS` protocol. Modules are
//! only ever loaded in the serving process, so nothing an app does can crash the supervisor.
//! When the serving process dies, the supervisor starts a new one at once: meanwhile the kernel
//! queues new connections in the listen backlog, so none is refused; only the requests that
//! were running in the dead process fail. Signals are forwarded; a stop signal ends both once the serving process has drained.
//! If the supervisor itself dies, the serving process gets `SIGTERM` (parent-death signal),
//! drains and exits rather than living on unsupervised.
//!
//! The serving process's stderr is relayed through the supervisor, which keeps its last lines:
//! after a death they and the process's `live.json` decide which version to blame, and a
//! version blamed too often is quarantined (see the `crash` module).
//!
//! This module runs the supervisor's loop ([`run`]); `listeners` binds the sockets and passes
//! them on, `child` starts and watches a serving process (and holds the serving process's side:
//! [`bind_to_supervisor`], [`tell_supervisor`]), and `upgrade` replaces the serving process and
//! then the supervisor itself with the binary now on disk ([`request_upgrade`]).

mod child;
mod listeners;
mod upgrade;

use std::ffi::OsString;
use std::net::TcpListener;
use std::time::Duration;

use rustix::process::Signal;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::crash;
use crate::error::{Error, Result};

pub use child::{SUPERVISOR_PID_ENV, bind_to_supervisor, tell_supervisor};
pub use listeners::{Listeners, inherited_listeners};
pub use upgrade::{UPGRADE_ENV, request_upgrade};

use child::{Serving, exit_code, exited};
use upgrade::{UPGRADE_TIMEOUT, Upgrade, reexec, strip_deleted};

/// A serving process that dies this soon after it started counts as a crash loop: restarts
/// back off, up to [`MAX_BACKOFF`].
const CRASH_LOOP: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs the supervisor until a stop signal: binds (or inherits) the listeners, then keeps a
/// serving process (this binary, with `args`) running on them, and on `SIGUSR2` upgrades it:
/// a new serving process from the binary now on disk takes over from the old one, then the
/// supervisor re-executes that binary itself (`flush_log` runs just before, so no log line is
/// lost). Returns the exit code of the last serving process.
///
/// # Errors
/// If a listener cannot be bound or the serving process cannot be started.
pub async fn run(config: &Config, args: Vec<OsString>, flush_log: fn()) -> Result<i32> {
    let listeners = listeners::bind_all(config)?;
    let local = |l: &TcpListener| {
        l.local_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string())
    };
    tracing::info!(pid = std::process::id(), http = %local(&listeners.http),
        admin = %local(&listeners.admin), https = listeners.https.as_ref().map(local),
        version = crate::VERSION, "supervisor started");
    let program = std::env::current_exe()
        .map_err(|e| Error::io("cannot find the baton binary to start", e))?;
    // After an upgrade the file may have been replaced: start what is at its path now.
    let program = strip_deleted(program);
    let handle = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| Error::io(format!("cannot handle {name}"), e))
    };
    let mut term = handle(SignalKind::terminate(), "SIGTERM")?;
    let mut int = handle(SignalKind::interrupt(), "SIGINT")?;
    let mut hup = handle(SignalKind::hangup(), "SIGHUP")?;
    let mut usr1 = handle(SignalKind::user_defined1(), "SIGUSR1")?;
    let mut usr2 = handle(SignalKind::user_defined2(), "SIGUSR2")?;
    // Blocked by the supervisor this one replaced, if any (see `reexec`): handled now.
    let _ = control_signals().thread_unblock();

    let mut current = Some(match upgrade::adopted() {
        Some((pid, stderr_fd)) => Serving::adopt(pid, stderr_fd),
        None => Serving::start(&program, &args, &listeners, false)?,
    });
    let mut next: Option<Serving> = None;
    let mut upgrade = Upgrade::Idle;
    let mut stopping = false;
    let mut quick_deaths = 0u32;
    loop {
        let deadline = match upgrade {
            Upgrade::Starting { deadline } => deadline,
            _ => tokio::time::Instant::now() + UPGRADE_TIMEOUT,
        };
        tokio::select! {
            status = exited(&mut current) => {
                let Some(mut dead) = current.take() else { continue };
                let status = status?;
                let last_code = exit_code(&status);
                if stopping {
                    if next.is_none() {
                        tracing::info!(code = last_code, "serving process stopped; supervisor exits");
                        return Ok(last_code);
                    }
                    continue;
                }
                if upgrade == Upgrade::HandingOver {
                    tracing::info!(pid = dead.pid.as_raw_pid(), code = last_code,
                        "previous serving process finished its hand-over");
                    // Its last lines are relayed before the exec ends the relay.
                    let _ = dead.last_lines().await;
                    if let Some(new) = next.take() {
                        new.signal(Signal::USR1);
                        current = Some(new);
                    }
                    upgrade = Upgrade::Idle;
                    if let Some(serving) = &current {
                        reexec(&program, &args, &listeners, serving, flush_log);
                    }
                    continue;
                }
                quick_deaths = if dead.started.elapsed() < CRASH_LOOP { quick_deaths + 1 } else { 0 };
                let backoff = backoff(quick_deaths);
                tracing::error!(pid = dead.pid.as_raw_pid(), %status, code = last_code,
                    uptime_ms = crate::clock::millis(dead.started.elapsed()),
                    restart_in_ms = crate::clock::millis(backoff),
                    "serving process died; starting a new one");
                let last_lines = dead.last_lines().await;
                crash::after_death(
                    &config.state_dir,
                    &config.quarantine,
                    dead.pid.as_raw_pid() as u32,
                    &status,
                    last_code,
                    last_lines,
                );
                if next.is_some() {
                    // The new process of an upgrade takes over once it is warm.
                    continue;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = term.recv() => return Ok(last_code),
                    _ = int.recv() => return Ok(last_code),
                }
                current = Some(Serving::start(&program, &args, &listeners, false)?);
            }
            status = exited(&mut next) => {
                let Some(dead) = next.take() else { continue };
                upgrade = Upgrade::Idle;
                let status = status?;
                if stopping {
                    if current.is_none() {
                        return Ok(exit_code(&status));
                    }
                    continue;
                }
                tracing::error!(pid = dead.pid.as_raw_pid(), %status,
                    "upgrade failed: the new serving process exited before it took over; \
                     the old one keeps serving");
                if current.is_none() {
                    current = Some(Serving::start(&program, &args, &listeners, false)?);
                }
            }
            _ = usr2.recv() => {
                if stopping || upgrade != Upgrade::Idle {
                    tracing::warn!("upgrade asked for while one is running or the host stops; ignored");
                    continue;
                }
                tracing::info!(program = %program.display(), "upgrade: starting a new serving process");
                match Serving::start(&program, &args, &listeners, true) {
                    Ok(new) => {
                        next = Some(new);
                        upgrade = Upgrade::Starting {
                            deadline: tokio::time::Instant::now() + UPGRADE_TIMEOUT,
                        };
                    }
                    Err(e) => tracing::error!(error = %e, "upgrade failed: cannot start the new binary"),
                }
            }
            _ = usr1.recv() => match upgrade {
                Upgrade::Starting { .. } => match &current {
                    Some(old) => {
                        tracing::info!(old = old.pid.as_raw_pid(),
                            new = next.as_ref().map(|n| n.pid.as_raw_pid()),
                            "upgrade: the new serving process is warm; the old one hands over");
                        old.signal(Signal::USR2);
                        upgrade = Upgrade::HandingOver;
                    }
                    None => {
                        // The old one died meanwhile: the new one takes over at once.
                        if let Some(new) = next.take() {
                            new.signal(Signal::USR1);
                            current = Some(new);
                        }
                        upgrade = Upgrade::Idle;
                    }
                },
                Upgrade::HandingOver => {
                    // The old process passed its sessions on: the new one may start serving.
                    if let Some(new) = &next {
                        new.signal(Signal::USR1);
                    }
                }
                Upgrade::Idle => {}
            },
            () = tokio::time::sleep_until(deadline), if matches!(upgrade, Upgrade::Starting { .. }) => {
                tracing::error!(timeout_secs = UPGRADE_TIMEOUT.as_secs(),
                    "upgrade failed: the new serving process did not become warm in time");
                if let Some(new) = &next {
                    new.signal(Signal::KILL);
                }
            }
            _ = term.recv() => stop(&mut stopping, &current, &next, Signal::TERM),
            _ = int.recv() => stop(&mut stopping, &current, &next, Signal::INT),
            _ = hup.recv() => forward(&current, &next, Signal::HUP),
        }
    }
}

/// A stop signal: forwarded the first time; a second one kills the serving processes at once.
fn stop(stopping: &mut bool, current: &Option<Serving>, next: &Option<Serving>, signal: Signal) {
    if *stopping {
        tracing::warn!("second stop signal: killing the serving process now");
        forward(current, next, Signal::KILL);
    } else {
        *stopping = true;
        forward(current, next, signal);
    }
}

/// The signals the supervisor acts on.
fn control_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::Signal as S;
    [S::SIGTERM, S::SIGINT, S::SIGHUP, S::SIGUSR1, S::SIGUSR2]
        .into_iter()
        .collect()
}

fn forward(current: &Option<Serving>, next: &Option<Serving>, signal: Signal) {
    for serving in current.iter().chain(next) {
        serving.signal(signal);
    }
}

/// How long to wait before the next start after `quick_deaths` deaths in a row, each soon after
/// its start: none for the first, then doubling from 100 ms up to [`MAX_BACKOFF`].
fn backoff(quick_deaths: u32) -> Duration {
    match quick_deaths {
        0 | 1 => Duration::ZERO,
        n => (Duration::from_millis(100) * 2u32.saturating_pow(n - 2)).min(MAX_BACKOFF),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_only_in_a_crash_loop() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::ZERO);
        assert_eq!(backoff(2), Duration::from_millis(100));
        assert_eq!(backoff(4), Duration::from_millis(400));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
