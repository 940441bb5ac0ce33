//! The servers under test, as child processes: the `baton` host (the test kit's [`HostProc`],
//! on a temporary modules directory, its log in a file the harness reads only until the host
//! says where it listens, and again at the end for warnings, so its own work on the log never
//! competes with the host it measures), and the `hyper-hello` baseline. Both listen on port 0
//! and say where on stderr.
//!
//! The host runs as one process (`--no-supervisor`), so its figures (RSS, mappings) are those of
//! the process that serves; [`start_baton`] with `supervised` starts it the way `baton serve`
//! runs by default instead, a supervisor and its serving process, whose pid `/status` tells
//! ([`serving_pid`]).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use baton_testkit::{HostOptions, HostProc};
use serde_json::Value;

use crate::load;

/// Starts `baton` from `binary` serving `modules` (in this order), with `config` as its config
/// file and `args` after the others on its command line; `supervised` as `baton serve` runs by
/// default, a supervisor that holds the listeners and a serving process it starts (and
/// restarts, and upgrades). [`HostProc::pid`] is then the supervisor's.
///
/// # Errors
/// If it does not start listening within a minute.
pub fn start_baton(
    binary: &Path,
    modules: &[&Path],
    config: &str,
    args: &[&str],
    supervised: bool,
) -> anyhow::Result<HostProc> {
    HostProc::try_start(HostOptions {
        binary: Some(binary.to_owned()),
        modules: modules.iter().map(|m| m.to_path_buf()).collect(),
        config: config.to_owned(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        supervised,
        ..HostOptions::default()
    })
}

/// Waits until `path` answers 200 over plain HTTP.
///
/// # Errors
/// If it does not within a minute.
pub async fn wait_ready(host: &HostProc, path: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match load::get(host.addr, path).await {
            Ok((200, _)) => return Ok(()),
            answer if std::time::Instant::now() > deadline => {
                bail!("{path} does not answer 200 within 60 s: {answer:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// `GET /status` on the admin listener, as JSON.
///
/// # Errors
/// If it cannot be reached or does not answer 200 with JSON.
pub async fn status(host: &HostProc) -> anyhow::Result<Value> {
    let (code, body) = load::get(host.admin, "/status").await?;
    if code != 200 {
        bail!("/status answered {code}");
    }
    Ok(serde_json::from_slice(&body)?)
}

/// The serving process's pid, from `/status` (`host.pid`): which process answered.
///
/// # Errors
/// As [`status`], or a status without a pid.
pub async fn serving_pid(host: &HostProc) -> anyhow::Result<u32> {
    status(host).await?["host"]["pid"]
        .as_u64()
        .and_then(|pid| u32::try_from(pid).ok())
        .context("/status has no host.pid")
}

/// The file name the host's first module was installed under: dropping a new file by that
/// name replaces its version.
pub fn first_module_name(host: &HostProc) -> String {
    let file: PathBuf = host.module_file(0);
    file.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A running `hyper-hello`, killed when dropped.
#[derive(Debug)]
pub struct HyperHello {
    child: Child,
    /// HTTP listener.
    pub addr: SocketAddr,
}

impl HyperHello {
    /// Starts the baseline server.
    ///
    /// # Errors
    /// If it does not say where it listens.
    pub fn start(binary: &Path) -> anyhow::Result<HyperHello> {
        HyperHello::start_with(binary, &[])
    }

    /// Starts the baseline server with `args` (e.g. `--tls-cert FILE --tls-key FILE`).
    ///
    /// # Errors
    /// If it does not say where it listens.
    pub fn start_with(binary: &Path, args: &[&str]) -> anyhow::Result<HyperHello> {
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut server = HyperHello {
            child,
            addr: ([0, 0, 0, 0], 0).into(),
        };
        let mut stderr = BufReader::new(stderr);
        let mut line = String::new();
        stderr.read_line(&mut line)?;
        // Keep reading, so the server never writes into a closed pipe.
        std::thread::spawn(move || for _ in stderr.lines().map_while(Result::ok) {});
        let Some(addr) = line.trim().strip_prefix("listening addr=") else {
            bail!("hyper-hello said {line:?}");
        };
        server.addr = addr.parse()?;
        Ok(server)
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for HyperHello {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
