//! A serving process: started (or adopted after a re-execution) and watched by the supervisor,
//! and its own side of the bond, which ends it when the supervisor dies.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use command_fds::CommandFdExt;
use rustix::process::{Pid, Signal};

use super::listeners::{Listeners, fd_mappings, listen_env};
use super::upgrade::{CHILD_ENV, UPGRADE_ENV};
use crate::crash;
use crate::error::{Error, Result};

/// The environment variable that tells a `baton serve` process it is the serving process of the
/// supervisor whose pid it holds.
pub const SUPERVISOR_PID_ENV: &str = "BATON_SUPERVISOR_PID";

/// How long the relay of a dead serving process's stderr may take to reach its end.
const STDERR_END: Duration = Duration::from_secs(2);
/// A serving process the supervisor watches.
#[derive(Debug)]
pub(super) struct Serving {
    pub(super) pid: Pid,
    pub(super) started: Instant,
    exit: tokio::task::JoinHandle<std::io::Result<ExitStatus>>,
    /// Its stderr, relayed to ours, with the last lines kept.
    tail: Option<crash::Tail>,
    /// The read end of its stderr pipe, handed on when the supervisor re-executes itself.
    pub(super) stderr: Option<std::os::fd::OwnedFd>,
}

impl Serving {
    pub(super) fn start(
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
    pub(super) fn adopt(pid: Pid, stderr_fd: Option<i32>) -> Serving {
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

    pub(super) fn signal(&self, signal: Signal) {
        let _ = rustix::process::kill_process(self.pid, signal);
    }

    /// Its last stderr lines, once the relay has reached the end (it died).
    pub(super) async fn last_lines(&mut self) -> Vec<String> {
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
pub(super) async fn exited(slot: &mut Option<Serving>) -> Result<ExitStatus> {
    const WHAT: &str = "cannot wait for the serving process";
    match slot {
        Some(serving) => match (&mut serving.exit).await {
            Ok(status) => status.map_err(|e| Error::io(WHAT, e)),
            Err(source) => Err(Error::Join { what: WHAT, source }),
        },
        None => std::future::pending().await,
    }
}

/// The exit code a shell would show: the code, or 128 + the signal.
pub(super) fn exit_code(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// Starts this binary as a serving process on `listeners`.
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
