//! The servers under test, as child processes: the `baton` host on a temporary modules
//! directory, and the `hyper-hello` baseline. Both listen on port 0 and say where on stderr.
//!
//! The host runs as one process (`--no-supervisor`), so its figures (RSS, mappings) are those of
//! the process that serves; [`Baton::start_supervised`] starts it the way `baton serve` runs by
//! default instead, a supervisor and its serving process, whose pid `/status` tells
//! ([`Baton::serving_pid`]).
//!
//! The host's log goes to a file, as it would in production: the harness reads it only until
//! the host says where it listens, and again at the end for warnings, so its own work on the log
//! (a line per request with the access log) never competes with the host it measures.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use rustix::process::{Pid, Signal};
use serde_json::Value;

use crate::load;

/// A child process that is killed when dropped; a supervisor is asked to stop first (SIGTERM),
/// so its serving process drains and exits with it instead of outliving the run.
#[derive(Debug)]
struct Killed {
    child: Child,
    supervised: bool,
}

impl Drop for Killed {
    fn drop(&mut self) {
        if self.supervised && signal(self.child.id(), Signal::TERM).is_ok() {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

/// Whether process `pid` is running: it exists and is not a zombie waiting to be reaped.
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

/// A running `baton serve`.
#[derive(Debug)]
pub struct Baton {
    child: Killed,
    /// HTTP listener.
    pub addr: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// HTTPS listener, when started with `--listen-tls`.
    pub tls_addr: Option<SocketAddr>,
    /// The watched modules directory.
    pub modules: PathBuf,
    /// The host's private module store (`state/store`).
    pub store: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Baton {
    /// Starts `baton` serving `module` (as `hello.so`), with `config` as its config file.
    ///
    /// # Errors
    /// If it does not start listening within a minute.
    pub fn start(binary: &Path, module: &Path, config: &str) -> anyhow::Result<Baton> {
        Baton::start_with(binary, &[("hello", module)], config, &[])
    }

    /// Starts `baton` serving each `(app, module)` as `app.so` (at `/app/`), with `config` as
    /// its config file and `args` after the others on its command line.
    ///
    /// # Errors
    /// If it does not start listening within a minute.
    pub fn start_with(
        binary: &Path,
        apps: &[(&str, &Path)],
        config: &str,
        args: &[&str],
    ) -> anyhow::Result<Baton> {
        Baton::launch(binary, apps, config, args, false)
    }

    /// Like [`Baton::start_with`], but as `baton serve` runs by default: a supervisor that holds
    /// the listeners and a serving process it starts (and restarts, and upgrades). [`Baton::pid`]
    /// is then the supervisor's; [`Baton::serving_pid`] asks `/status` for the serving one.
    ///
    /// # Errors
    /// If it does not start listening within a minute.
    pub fn start_supervised(
        binary: &Path,
        apps: &[(&str, &Path)],
        config: &str,
        args: &[&str],
    ) -> anyhow::Result<Baton> {
        Baton::launch(binary, apps, config, args, true)
    }

    fn launch(
        binary: &Path,
        apps: &[(&str, &Path)],
        config: &str,
        args: &[&str],
        supervised: bool,
    ) -> anyhow::Result<Baton> {
        let dir = tempfile::tempdir()?;
        let modules = dir.path().join("modules");
        std::fs::create_dir_all(&modules)?;
        for (app, module) in apps {
            std::fs::copy(module, modules.join(format!("{app}.so")))
                .with_context(|| format!("cannot copy {}", module.display()))?;
        }
        let config_file = dir.path().join("baton.toml");
        std::fs::write(&config_file, config)?;
        let state = dir.path().join("state");
        let log = dir.path().join("baton.log");
        let child = Command::new(binary)
            .arg("serve")
            .args((!supervised).then_some("--no-supervisor"))
            .arg("--config")
            .arg(&config_file)
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .arg("--modules")
            .arg(&modules)
            .arg("--state-dir")
            .arg(&state)
            .args(args)
            .env("BATON_LOG_FORMAT", "json")
            .env("BATON_LOG", "info")
            .env_remove("RUST_LOG")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log)?))
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut child = Killed { child, supervised };
        let (mut addr, mut admin, mut tls_addr) = (None, None, None);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut reader = BufReader::new(std::fs::File::open(&log)?);
        let mut line = String::new();
        while addr.is_none() || admin.is_none() {
            line.clear();
            if reader.read_line(&mut line)? == 0 || !line.ends_with('\n') {
                // Not a whole line yet: wait for the host to write more.
                if std::time::Instant::now() > deadline {
                    bail!("baton did not start listening within 60 s");
                }
                if !matches!(child.child.try_wait(), Ok(None)) {
                    bail!("baton exited before listening; its log: {}", log.display());
                }
                std::thread::sleep(Duration::from_millis(10));
                if !line.is_empty() {
                    // Re-read the partial line from its start next time.
                    reader.seek_relative(-(line.len() as i64))?;
                }
                continue;
            }
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(at) = value["addr"].as_str() {
                let at: SocketAddr = at.parse()?;
                match value["message"].as_str() {
                    Some("listening") => {
                        addr = Some(at);
                        tls_addr = value["tls_addr"].as_str().map(str::parse).transpose()?;
                    }
                    Some("admin listening") => admin = Some(at),
                    _ => {}
                }
            }
        }
        Ok(Baton {
            child,
            addr: addr.context("no address")?,
            admin: admin.context("no admin address")?,
            tls_addr,
            modules,
            store: state.join("store"),
            log,
            _dir: dir,
        })
    }

    /// Process id: the serving process's, or the supervisor's when started supervised.
    pub fn pid(&self) -> u32 {
        self.child.child.id()
    }

    /// Waits until `path` answers 200 over plain HTTP.
    ///
    /// # Errors
    /// If it does not within a minute.
    pub async fn wait_ready(&self, path: &str) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match crate::load::get(self.addr, path).await {
                Ok((200, _)) => return Ok(()),
                answer if std::time::Instant::now() > deadline => {
                    bail!("{path} does not answer 200 within 60 s: {answer:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.child.try_wait(), Ok(None))
    }

    /// `GET /status` on the admin listener, as JSON.
    ///
    /// # Errors
    /// If it cannot be reached or does not answer 200 with JSON.
    pub async fn status(&self) -> anyhow::Result<Value> {
        let (code, body) = load::get(self.admin, "/status").await?;
        if code != 200 {
            bail!("/status answered {code}");
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// The serving process's pid, from `/status` (`host.pid`): which process answered.
    ///
    /// # Errors
    /// As [`Baton::status`], or a status without a pid.
    pub async fn serving_pid(&self) -> anyhow::Result<u32> {
        self.status().await?["host"]["pid"]
            .as_u64()
            .and_then(|pid| u32::try_from(pid).ok())
            .context("/status has no host.pid")
    }

    /// The host's log file (JSON lines; the supervisor's and every serving process's).
    pub fn log_file(&self) -> &Path {
        &self.log
    }

    /// Warnings and errors the host logged so far (and anything it printed that was not JSON),
    /// at most 1,000.
    pub fn warnings(&self) -> Vec<String> {
        let Ok(file) = std::fs::File::open(&self.log) else {
            return Vec::new();
        };
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter(|line| {
                !line.contains(r#""target":"baton::access""#)
                    && serde_json::from_str::<serde_json::Value>(line).map_or(true, |v| {
                        matches!(v["level"].as_str(), Some("WARN" | "ERROR"))
                    })
            })
            .take(1000)
            .collect()
    }

    /// Drops `module` into the watched directory as `hello.so` the way operators should: copy to
    /// a hidden temporary name, then rename. Returns right after the rename.
    ///
    /// # Errors
    /// File system errors.
    pub fn drop_module(&self, module: &Path) -> anyhow::Result<()> {
        let tmp = self.modules.join(".hello.so.tmp");
        std::fs::copy(module, &tmp)?;
        std::fs::rename(&tmp, self.modules.join("hello.so"))?;
        Ok(())
    }
}

/// A running `hyper-hello`.
#[derive(Debug)]
pub struct HyperHello {
    child: Killed,
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
        let child = Killed {
            child,
            supervised: false,
        };
        let mut stderr = BufReader::new(stderr);
        let mut line = String::new();
        stderr.read_line(&mut line)?;
        // Keep reading, so the server never writes into a closed pipe.
        std::thread::spawn(move || for _ in stderr.lines().map_while(Result::ok) {});
        let Some(addr) = line.trim().strip_prefix("listening addr=") else {
            bail!("hyper-hello said {line:?}");
        };
        Ok(HyperHello {
            addr: addr.parse()?,
            child,
        })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.child.id()
    }
}
