//! The supervisor: a small process that owns the listening sockets and keeps one serving process
//! running on them.
//!
//! `baton serve` binds its listeners (or takes them from systemd socket activation) and starts
//! itself again as the serving process, which inherits them as descriptors 3 (HTTP), 4
//! (admin) and, with `listen_tls`, 5 (HTTPS) through the `LISTEN_FDS` protocol. Modules are only ever loaded in the serving
//! process, so nothing an app does can crash the supervisor. When the serving process dies, the
//! supervisor starts a new one at once: meanwhile the kernel queues new connections in the
//! listen backlog, so none is refused; only the requests that were running in the dead process
//! fail. Signals are forwarded; a stop signal ends both once the serving process has drained.
//! If the supervisor itself dies, the serving process gets `SIGTERM` (parent-death signal),
//! drains and exits rather than living on unsupervised.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use rustix::process::{Pid, Signal};
use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::error::{Error, Result};

/// The environment variable that tells a `baton serve` process it is the serving process of the
/// supervisor whose pid it holds.
pub const SUPERVISOR_PID_ENV: &str = "BATON_SUPERVISOR_PID";

/// Names of the inherited sockets, in descriptor order, as `LISTEN_FDNAMES` gives them.
const HTTP: &str = "http";
const ADMIN: &str = "admin";
const HTTPS: &str = "https";
/// The first inherited descriptor (`SD_LISTEN_FDS_START`).
const FIRST_FD: i32 = 3;

/// A serving process that dies this soon after it started counts as a crash loop: restarts
/// back off, up to [`MAX_BACKOFF`].
const CRASH_LOOP: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The listening sockets of a host.
#[derive(Debug)]
pub struct Listeners {
    /// The plain HTTP listener.
    pub http: TcpListener,
    /// The admin listener.
    pub admin: TcpListener,
    /// The HTTPS listener, with `listen_tls`.
    pub https: Option<TcpListener>,
}

/// The listening sockets a supervisor or systemd handed to this process (`LISTEN_FDS`): HTTP
/// first, admin second and HTTPS third, or named `http`, `admin` and `https` in
/// `LISTEN_FDNAMES`. `None` when the environment passes none.
///
/// # Errors
/// If descriptors are passed but are not two or three TCP listeners.
pub fn inherited_listeners() -> Result<Option<Listeners>> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|names| names.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let index =
        |name: &str, default: usize| names.iter().position(|n| n == name).unwrap_or(default);
    let passes_https = names.iter().any(|n| n == HTTPS) || fds.len() > 2;
    let mut take = |name: &str, default: usize| {
        let i = index(name, default);
        fds.take_tcp_listener(i)
            .map_err(|e| Error::io(format!("inherited socket {i} ({name}) is unusable"), e))?
            .ok_or_else(|| {
                Error::Config(format!(
                    "LISTEN_FDS passes {} socket(s); the {name} listener (socket {i}) is missing",
                    fds.len()
                ))
            })
    };
    let http = take(HTTP, 0)?;
    let admin = take(ADMIN, 1)?;
    let https = if passes_https {
        Some(take(HTTPS, 2)?)
    } else {
        None
    };
    Ok(Some(Listeners { http, admin, https }))
}

fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| Error::io(format!("cannot listen on {addr} ({what})"), e))
}

/// Called first thing in a serving process started by a supervisor: asks the kernel for
/// `SIGTERM` when the supervisor dies, and stops at once if it is already gone.
///
/// # Errors
/// If the supervisor is gone or the parent-death signal cannot be set.
pub fn bind_to_supervisor(supervisor: &str) -> Result<()> {
    rustix::process::set_parent_process_death_signal(Some(Signal::TERM))
        .map_err(|e| Error::io("cannot set the parent-death signal", e.into()))?;
    let parent = rustix::process::getppid().map(Pid::as_raw_pid);
    if supervisor.parse::<i32>().ok() != parent {
        return Err(Error::Config(format!(
            "the supervisor (pid {supervisor}) is gone; not serving unsupervised"
        )));
    }
    Ok(())
}

/// Runs the supervisor until a stop signal: binds (or inherits) the listeners, then keeps a
/// serving process (this binary, with `args`) running on them. Returns the exit code of the last
/// serving process.
///
/// # Errors
/// If a listener cannot be bound or the serving process cannot be started.
pub async fn run(config: &Config, args: Vec<OsString>) -> Result<i32> {
    let mut listeners = match inherited_listeners()? {
        Some(listeners) => listeners,
        None => Listeners {
            http: bind(config.listen, HTTP)?,
            admin: bind(config.admin, ADMIN)?,
            https: None,
        },
    };
    if let (None, Some(addr)) = (&listeners.https, config.listen_tls) {
        listeners.https = Some(bind(addr, HTTPS)?);
    }
    let local = |l: &TcpListener| {
        l.local_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string())
    };
    tracing::info!(pid = std::process::id(), http = %local(&listeners.http),
        admin = %local(&listeners.admin), https = listeners.https.as_ref().map(local),
        "supervisor started");
    let program = std::env::current_exe()
        .map_err(|e| Error::io("cannot find the baton binary to start", e))?;
    let (mut term, mut int, mut hup) = (
        signal(SignalKind::terminate()).map_err(|e| Error::io("cannot handle SIGTERM", e))?,
        signal(SignalKind::interrupt()).map_err(|e| Error::io("cannot handle SIGINT", e))?,
        signal(SignalKind::hangup()).map_err(|e| Error::io("cannot handle SIGHUP", e))?,
    );
    let mut quick_deaths = 0u32;
    loop {
        let mut child = spawn(&program, &args, &listeners)?;
        let pid = child.id().and_then(|id| Pid::from_raw(id as i32));
        let started = Instant::now();
        tracing::info!(pid = pid.map(Pid::as_raw_pid), "serving process started");
        let mut stopping = false;
        let status = loop {
            let forward = tokio::select! {
                status = child.wait() => break status,
                _ = term.recv() => { stopping = true; Signal::TERM }
                _ = int.recv() => { stopping = true; Signal::INT }
                _ = hup.recv() => Signal::HUP,
            };
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process(pid, forward);
            }
        };
        let status = status.map_err(|e| Error::io("cannot wait for the serving process", e))?;
        let code = exit_code(&status);
        if stopping {
            tracing::info!(code, "serving process stopped; supervisor exits");
            return Ok(code);
        }
        quick_deaths = if started.elapsed() < CRASH_LOOP {
            quick_deaths + 1
        } else {
            0
        };
        let backoff = backoff(quick_deaths);
        tracing::error!(pid = pid.map(Pid::as_raw_pid), %status, code,
            uptime_ms = started.elapsed().as_millis() as u64,
            restart_in_ms = backoff.as_millis() as u64,
            "serving process died; starting a new one");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = term.recv() => return Ok(code),
            _ = int.recv() => return Ok(code),
        }
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

/// The exit code a shell would show: the code, or 128 + the signal.
fn exit_code(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

fn spawn(
    program: &std::path::Path,
    args: &[OsString],
    listeners: &Listeners,
) -> Result<tokio::process::Child> {
    let dup = |l: &TcpListener| {
        l.as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::io("cannot pass a listener to the serving process", e))
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env(SUPERVISOR_PID_ENV, std::process::id().to_string())
        .env(
            "LISTEN_FDS",
            if listeners.https.is_some() { "3" } else { "2" },
        )
        .env(
            "LISTEN_FDNAMES",
            match listeners.https {
                Some(_) => format!("{HTTP}:{ADMIN}:{HTTPS}"),
                None => format!("{HTTP}:{ADMIN}"),
            },
        )
        .env_remove("LISTEN_PID")
        // Its own process group: a terminal's Ctrl-C reaches the supervisor only, which forwards
        // it once, rather than both (a second stop signal forces the serving process out).
        .process_group(0)
        .kill_on_drop(false);
    let mut fds = vec![
        FdMapping {
            parent_fd: dup(&listeners.http)?,
            child_fd: FIRST_FD,
        },
        FdMapping {
            parent_fd: dup(&listeners.admin)?,
            child_fd: FIRST_FD + 1,
        },
    ];
    if let Some(https) = &listeners.https {
        fds.push(FdMapping {
            parent_fd: dup(https)?,
            child_fd: FIRST_FD + 2,
        });
    }
    command
        .fd_mappings(fds)
        .map_err(|e| Error::Config(format!("listener descriptors collide: {e}")))?;
    command
        .spawn()
        .map_err(|e| Error::io(format!("cannot start {}", program.display()), e))
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
