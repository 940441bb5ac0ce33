//! Upgrades: on `SIGUSR2` a new serving process from the binary now on disk loads and warms its
//! apps, tells the supervisor (`SIGUSR1`), the old one hands over (stops accepting, finishes,
//! passes its in-memory sessions on) and exits, and the supervisor re-executes the new binary
//! itself, keeping its pid, its listeners and the serving process.

use std::ffi::OsString;
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};
use rustix::process::{Pid, Signal};

use super::child::{SUPERVISOR_PID_ENV, Serving};
use super::control_signals;
use super::listeners::{FIRST_FD, Listeners, fd_mappings, listen_env};
use crate::error::{Error, Result};

/// Tells a serving process it is the new one of an upgrade: it signals its supervisor once it is
/// warm, and with sessions in memory waits for the old one to hand them over.
pub const UPGRADE_ENV: &str = "BATON_UPGRADE";
/// After a supervisor re-executed itself: the serving process it keeps watching.
pub(super) const CHILD_ENV: &str = "BATON_SUPERVISOR_CHILD";
/// How long a new serving process may take to become warm before the upgrade is given up.
pub(super) const UPGRADE_TIMEOUT: Duration = Duration::from_secs(300);

/// After a supervisor re-executed itself: the descriptor of its serving process's stderr pipe.
const STDERR_FD_ENV: &str = "BATON_SUPERVISOR_STDERR_FD";

/// Where an upgrade is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Upgrade {
    Idle,
    /// The new serving process is loading and warming its apps.
    Starting {
        deadline: tokio::time::Instant,
    },
    /// The old one was told to hand over: stop accepting, finish, pass on its sessions.
    HandingOver,
}

/// The serving process a supervisor started before it re-executed itself, with the descriptor of
/// its stderr pipe if that was passed on too.
pub(super) fn adopted() -> Option<(Pid, Option<i32>)> {
    let pid = std::env::var(CHILD_ENV)
        .ok()
        .and_then(|pid| pid.parse().ok())
        .and_then(Pid::from_raw)?;
    let stderr_fd = std::env::var(STDERR_FD_ENV)
        .ok()
        .and_then(|fd| fd.parse().ok());
    Some((pid, stderr_fd))
}

/// `/proc/self/exe` names a replaced binary "PATH (deleted)"; the file to run now is at PATH.
pub(super) fn strip_deleted(program: std::path::PathBuf) -> std::path::PathBuf {
    match program.to_str().and_then(|p| p.strip_suffix(" (deleted)")) {
        Some(path) => std::path::PathBuf::from(path),
        None => program,
    }
}

/// Replaces this supervisor with the binary now at `program`, keeping its pid, its listeners
/// (passed as `LISTEN_FDS` to itself), its serving process `child` and the pipe of its stderr.
/// Only returns if the exec failed, which it logs.
pub(super) fn reexec(
    program: &std::path::Path,
    args: &[OsString],
    listeners: &Listeners,
    child: &Serving,
    flush_log: fn(),
) {
    use std::os::unix::process::CommandExt;
    tracing::info!(program = %program.display(), "upgrade: the supervisor re-executes itself");
    let mut command = std::process::Command::new(program);
    command
        .args(args)
        .envs(listen_env(listeners))
        .env("LISTEN_PID", std::process::id().to_string())
        .env(CHILD_ENV, child.pid.as_raw_pid().to_string())
        .env_remove(STDERR_FD_ENV);
    // The descriptor after the listeners'.
    let stderr_fd = FIRST_FD + listeners.count();
    let stderr = child
        .stderr
        .as_ref()
        .and_then(|fd| fd.try_clone().ok())
        .map(|parent_fd| FdMapping {
            parent_fd,
            child_fd: stderr_fd,
        });
    if stderr.is_some() {
        command.env(STDERR_FD_ENV, stderr_fd.to_string());
    }
    let mapped = fd_mappings(listeners).and_then(|mut mappings| {
        mappings.extend(stderr);
        command
            .fd_mappings(mappings)
            .map_err(|e| Error::Config(format!("listener descriptors collide: {e}")))
    });
    if let Err(e) = mapped {
        tracing::error!(error = %e, "cannot re-execute the supervisor; the old one keeps running");
        return;
    }
    // The log is written by a background thread, which the exec ends.
    flush_log();
    // Handlers do not survive the exec, and until the new supervisor has its own, a signal
    // would take the default action (SIGUSR1/2 end the process): block them meanwhile; the
    // mask survives the exec and the new supervisor unblocks them once it handles them.
    let _ = control_signals().thread_block();
    let e = command.exec();
    let _ = control_signals().thread_unblock();
    // The descriptors the runtime used may be gone by now: nothing safe is left to do.
    tracing::error!(error = %e, "cannot re-execute the supervisor");
    flush_log();
    std::process::exit(1);
}

/// Asks this serving process's supervisor to upgrade it.
///
/// # Errors
/// If the process has no supervisor.
pub fn request_upgrade() -> Result<Pid> {
    let supervisor = std::env::var(SUPERVISOR_PID_ENV)
        .ok()
        .and_then(|pid| pid.parse().ok())
        .and_then(Pid::from_raw)
        .filter(|&pid| rustix::process::getppid() == Some(pid))
        .ok_or_else(|| {
            Error::Conflict(
                "this host runs without a supervisor (--no-supervisor): restart it to upgrade"
                    .into(),
            )
        })?;
    rustix::process::kill_process(supervisor, Signal::USR2)
        .map_err(|e| Error::io("cannot signal the supervisor", e.into()))?;
    Ok(supervisor)
}
