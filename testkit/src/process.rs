//! Signals and liveness of processes a test or benchmark started (or their children).

use anyhow::Context;
use rustix::process::Pid;

pub use rustix::process::Signal;

/// Sends `signal` to process `pid`.
///
/// # Errors
/// If the process does not exist or may not be signalled.
pub fn signal(pid: u32, signal: Signal) -> anyhow::Result<()> {
    let target = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .with_context(|| format!("{pid} is not a process id"))?;
    rustix::process::kill_process(target, signal)
        .with_context(|| format!("cannot send {signal:?} to process {pid}"))
}

/// Whether process `pid` runs: it exists and is not a zombie waiting to be reaped.
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}
