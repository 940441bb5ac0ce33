//! The supervisor: a small process that owns the listening sockets and keeps one serving process
//! running on them.
//!
//! `baton serve` binds its listeners (or takes them from systemd socket activation) and starts
//! itself again as the serving process, which inherits them as descriptors 3 (HTTP), 4
//! (admin) and, with `listen_tls`, 5 (HTTPS) through the `LISTEN_FDS` protocol. Modules are
//! only ever loaded in the serving process, so nothing an app does can crash the supervisor. When the serving process dies, the
//! supervisor starts a new one at once: meanwhile the kernel queues new connections in the
//! listen backlog, so none is refused; only the requests that were running in the dead process
//! fail. Signals are forwarded; a stop signal ends both once the serving process has drained.
//! If the supervisor itself dies, the serving process gets `SIGTERM` (parent-death signal),
//! drains and exits rather than living on unsupervised.
//!
//! The serving process's stderr is relayed through the supervisor, which keeps its last lines:
//! after a death they and the process's `live.json` decide which version to blame, and a
//! version blamed too often is quarantined (see [`crate::crash`]).

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use rustix::process::{Pid, Signal};
use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::crash;
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
/// How long the relay of a dead serving process's stderr may take to reach its end.
const STDERR_END: Duration = Duration::from_secs(2);
/// After a supervisor re-executed itself: the descriptor of its serving process's stderr pipe.
const STDERR_FD_ENV: &str = "BATON_SUPERVISOR_STDERR_FD";

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

impl Listeners {
    /// How many sockets these are.
    fn count(&self) -> i32 {
        if self.https.is_some() { 3 } else { 2 }
    }
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

/// Tells a serving process it is the new one of an upgrade: it signals its supervisor once it is
/// warm, and with sessions in memory waits for the old one to hand them over.
pub const UPGRADE_ENV: &str = "BATON_UPGRADE";
/// After a supervisor re-executed itself: the serving process it keeps watching.
const CHILD_ENV: &str = "BATON_SUPERVISOR_CHILD";
/// How long a new serving process may take to become warm before the upgrade is given up.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(300);

/// A serving process the supervisor watches.
#[derive(Debug)]
struct Serving {
    pid: Pid,
    started: Instant,
    exit: tokio::task::JoinHandle<std::io::Result<ExitStatus>>,
    /// Its stderr, relayed to ours, with the last lines kept.
    tail: Option<crash::Tail>,
    /// The read end of its stderr pipe, handed on when the supervisor re-executes itself.
    stderr: Option<std::os::fd::OwnedFd>,
}

impl Serving {
    fn start(
        program: &std::path::Path,
        args: &[OsString],
        listeners: &Listeners,
        upgrade: bool,
    ) -> Result<Serving> {
        let mut child = spawn(program, args, listeners, upgrade)?;
        let stderr = child
            .stderr
            .as_ref()
            .and_then(|pipe| pipe.as_fd().try_clone_to_owned().ok());
        let tail = child.stderr.take().map(crash::Tail::relay);
        let pid = child
            .id()
            .and_then(|id| Pid::from_raw(id as i32))
            .ok_or_else(|| Error::Config("the serving process has no pid".into()))?;
        tracing::info!(pid = pid.as_raw_pid(), upgrade, "serving process started");
        Ok(Serving {
            pid,
            started: Instant::now(),
            exit: tokio::spawn(async move { child.wait().await }),
            tail,
            stderr,
        })
    }

    /// A serving process started by this supervisor before it re-executed itself; its stderr
    /// pipe, if the old supervisor passed it, is at descriptor `stderr_fd`.
    fn adopt(pid: Pid, stderr_fd: Option<i32>) -> Serving {
        tracing::info!(pid = pid.as_raw_pid(), "watching the serving process again");
        // A pipe opened again through /proc is the same pipe: the relay carries on.
        let pipe = stderr_fd.and_then(|fd| {
            tokio::net::unix::pipe::OpenOptions::new()
                .open_receiver(format!("/proc/self/fd/{fd}"))
                .map_err(|e| tracing::warn!(error = %e, "the serving process's stderr is lost"))
                .ok()
        });
        let stderr = pipe
            .as_ref()
            .and_then(|pipe| pipe.as_fd().try_clone_to_owned().ok());
        Serving {
            pid,
            started: Instant::now(),
            tail: pipe.map(crash::Tail::relay),
            stderr,
            exit: tokio::task::spawn_blocking(move || {
                use std::os::unix::process::ExitStatusExt;
                loop {
                    match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
                    {
                        Ok(Some((_, status))) => return Ok(ExitStatus::from_raw(status.as_raw())),
                        Ok(None) => continue,
                        Err(rustix::io::Errno::INTR) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            }),
        }
    }

    fn signal(&self, signal: Signal) {
        let _ = rustix::process::kill_process(self.pid, signal);
    }

    /// Its last stderr lines, once the relay has reached the end (it died).
    async fn last_lines(&mut self) -> Vec<String> {
        match self.tail.take() {
            Some(tail) => tail.finish(STDERR_END).await,
            None => Vec::new(),
        }
    }
}

/// Waits for the process in `slot` to exit; never resolves for an empty slot.
///
/// # Errors
/// If the process cannot be waited for, or the task waiting for it failed.
async fn exited(slot: &mut Option<Serving>) -> Result<ExitStatus> {
    const WHAT: &str = "cannot wait for the serving process";
    match slot {
        Some(serving) => match (&mut serving.exit).await {
            Ok(status) => status.map_err(|e| Error::io(WHAT, e)),
            Err(source) => Err(Error::Join { what: WHAT, source }),
        },
        None => std::future::pending().await,
    }
}

/// Where an upgrade is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upgrade {
    Idle,
    /// The new serving process is loading and warming its apps.
    Starting {
        deadline: tokio::time::Instant,
    },
    /// The old one was told to hand over: stop accepting, finish, pass on its sessions.
    HandingOver,
}

/// Runs the supervisor until a stop signal: binds (or inherits) the listeners, then keeps a
/// serving process (this binary, with `args`) running on them, and on `SIGUSR2` upgrades it:
/// a new serving process from the binary now on disk takes over from the old one, then the
/// supervisor re-executes that binary itself (`flush_log` runs just before, so no log line is
/// lost). Returns the exit code of the last serving process.
///
/// # Errors
/// If a listener cannot be bound or the serving process cannot be started.
pub async fn run(config: &Config, args: Vec<OsString>, flush_log: fn()) -> Result<i32> {
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

    let adopted = std::env::var(CHILD_ENV)
        .ok()
        .and_then(|pid| pid.parse().ok())
        .and_then(Pid::from_raw);
    let stderr_fd = std::env::var(STDERR_FD_ENV)
        .ok()
        .and_then(|fd| fd.parse().ok());
    let mut current = Some(match adopted {
        Some(pid) => Serving::adopt(pid, stderr_fd),
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

/// `/proc/self/exe` names a replaced binary "PATH (deleted)"; the file to run now is at PATH.
fn strip_deleted(program: std::path::PathBuf) -> std::path::PathBuf {
    match program.to_str().and_then(|p| p.strip_suffix(" (deleted)")) {
        Some(path) => std::path::PathBuf::from(path),
        None => program,
    }
}

/// Replaces this supervisor with the binary now at `program`, keeping its pid, its listeners
/// (passed as `LISTEN_FDS` to itself), its serving process `child` and the pipe of its stderr. Only returns if the exec
/// failed, which it logs.
fn reexec(
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
    std::process::exit(1);
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

fn fd_mappings(listeners: &Listeners) -> Result<Vec<FdMapping>> {
    let dup = |l: &TcpListener| {
        l.as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::io("cannot pass a listener on", e))
    };
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
    Ok(fds)
}

/// `LISTEN_FDS` and `LISTEN_FDNAMES` for the descriptors of [`fd_mappings`].
fn listen_env(listeners: &Listeners) -> [(&'static str, String); 2] {
    let names = match listeners.https {
        Some(_) => format!("{HTTP}:{ADMIN}:{HTTPS}"),
        None => format!("{HTTP}:{ADMIN}"),
    };
    [
        ("LISTEN_FDS", listeners.count().to_string()),
        ("LISTEN_FDNAMES", names),
    ]
}

fn spawn(
    program: &std::path::Path,
    args: &[OsString],
    listeners: &Listeners,
    upgrade: bool,
) -> Result<tokio::process::Child> {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env(SUPERVISOR_PID_ENV, std::process::id().to_string())
        .envs(listen_env(listeners))
        .env_remove("LISTEN_PID")
        .env_remove(CHILD_ENV)
        // Its own process group: a terminal's Ctrl-C reaches the supervisor only, which forwards
        // it once, rather than both (a second stop signal forces the serving process out).
        .process_group(0)
        // Relayed to ours, its last lines kept: they usually say why it died.
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(false);
    if upgrade {
        command.env(UPGRADE_ENV, "1");
    } else {
        command.env_remove(UPGRADE_ENV);
    }
    command
        .fd_mappings(fd_mappings(listeners)?)
        .map_err(|e| Error::Config(format!("listener descriptors collide: {e}")))?;
    command
        .spawn()
        .map_err(|e| Error::io(format!("cannot start {}", program.display()), e))
}

/// Tells this serving process's supervisor (if it has one) that it reached the next step of an
/// upgrade: the new process is warm, or the old one has handed its sessions over.
pub fn tell_supervisor() {
    if std::env::var_os(SUPERVISOR_PID_ENV).is_none() {
        return;
    }
    if let Some(parent) = rustix::process::getppid() {
        let _ = rustix::process::kill_process(parent, Signal::USR1);
    }
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
