//! A `baton serve` child process on port 0 with directories of its own: a modules directory it
//! watches, its state directory and its configuration file, all in one temporary directory
//! that outlives restarts of the host ([`HostProc::restart`], [`HostProc::relaunch`]).
//!
//! The host logs JSON lines to a file in that directory (one file per launch);
//! [`HostProc::wait_log`] polls it for a line, and it says where the host listens.
//!
//! By default the host runs as one process (`--no-supervisor`), so its figures (RSS, mappings)
//! are those of the process that serves; [`HostOptions::supervised`] starts it the way
//! `baton serve` runs by default instead, a supervisor and its serving process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::log::{self, LogTail};
use crate::process::{Signal, signal};

/// How long a host may take to start listening, and a graceful stop or exit to finish.
const STARTUP: Duration = Duration::from_secs(60);
/// How often the log and the process are looked at while waiting.
const POLL: Duration = Duration::from_millis(10);

/// Options for starting a host.
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    /// Module files copied into the modules directory before start, in this order, each as
    /// `NN-<file name>` (see [`HostProc::module_file`]).
    pub modules: Vec<PathBuf>,
    /// The config file's TOML.
    pub config: String,
    /// Extra command-line arguments after the others of `serve`.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Run under the supervisor (the default of `baton serve`); otherwise `--no-supervisor`.
    pub supervised: bool,
    /// Soft and hard limits on open files, set with util-linux's `prlimit` before the host
    /// starts (`prlimit` execs the host, so the pid is the host's).
    pub open_files_limit: Option<(u64, u64)>,
    /// The `baton` binary to run [default: `baton` in the directory of the running test's
    /// executable, or its parent when that is `deps/`: where cargo builds the package's
    /// binaries for its integration tests].
    pub binary: Option<PathBuf>,
}

/// The log of one launch: its file, read as it grows, and the lines read so far.
#[derive(Debug)]
struct Log {
    path: PathBuf,
    tail: LogTail,
    lines: Vec<Value>,
}

impl Log {
    /// Reads what the host wrote since the last look; returns every line so far.
    fn refresh(&mut self) -> &[Value] {
        if let Ok(new) = self.tail.lines() {
            self.lines.extend(new.iter().map(|l| log::parse(l)));
        }
        &self.lines
    }
}

/// A `baton serve` child process with its own temporary directories; stopped when dropped (a
/// supervised one is asked first, with SIGTERM, so that its serving process drains and exits
/// with it instead of outliving the test).
#[derive(Debug)]
pub struct HostProc {
    child: Child,
    log: Mutex<Log>,
    /// The HTTP listener's address.
    pub addr: std::net::SocketAddr,
    /// The admin listener's address.
    pub admin: std::net::SocketAddr,
    /// The HTTPS listener's address, when the host has one.
    pub tls_addr: Option<std::net::SocketAddr>,
    /// The directory holding the modules, state and config (and the logs).
    pub dir: tempfile::TempDir,
    options: HostOptions,
    /// Which start on these directories this is, from 1.
    launch: u32,
}

impl HostProc {
    /// Starts a host with `modules` and default settings.
    ///
    /// # Panics
    /// If it does not start listening (see [`HostProc::try_start`]).
    pub fn start(modules: &[PathBuf]) -> HostProc {
        Self::start_with(HostOptions {
            modules: modules.to_vec(),
            ..HostOptions::default()
        })
    }

    /// Starts a host with `modules` and `config` as its config file.
    ///
    /// # Panics
    /// If it does not start listening (see [`HostProc::try_start`]).
    pub fn start_with_config(modules: &[PathBuf], config: &str) -> HostProc {
        Self::start_with(HostOptions {
            modules: modules.to_vec(),
            config: config.to_owned(),
            ..HostOptions::default()
        })
    }

    /// Starts a host and waits until it listens.
    ///
    /// # Panics
    /// If it does not start listening (see [`HostProc::try_start`]).
    pub fn start_with(options: HostOptions) -> HostProc {
        Self::try_start(options).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Starts a host and waits until it listens.
    ///
    /// # Errors
    /// If a module cannot be copied, or the host does not start listening within a minute
    /// (the error holds its log).
    pub fn try_start(options: HostOptions) -> anyhow::Result<HostProc> {
        let dir = tempfile::tempdir()?;
        let modules = dir.path().join("modules");
        std::fs::create_dir_all(&modules)?;
        for (i, module) in options.modules.iter().enumerate() {
            std::fs::copy(module, module_file(&modules, i, module))
                .with_context(|| format!("cannot copy {}", module.display()))?;
        }
        Self::launch(dir, options, 1)
    }

    /// Stops the host gracefully (SIGTERM, exit 0) and starts a new one on the same
    /// directories, modules and state.
    ///
    /// # Panics
    /// If the host does not exit 0 within a minute, or the new one does not start.
    pub fn restart(mut self) -> HostProc {
        self.signal(Signal::TERM);
        let status = self.wait_exit(STARTUP);
        assert!(status.success(), "graceful stop failed: {status:?}");
        self.relaunch()
    }

    /// Starts a new host on the same directories, modules and state once this one has exited
    /// (crashed, or stopped), as a supervisor would.
    ///
    /// # Panics
    /// If this one does not exit within a minute, or the new one does not start.
    pub fn relaunch(mut self) -> HostProc {
        self.wait_exit(STARTUP);
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Self::launch(dir, self.options.clone(), self.launch + 1).unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn launch(dir: tempfile::TempDir, options: HostOptions, launch: u32) -> anyhow::Result<Self> {
        let config = dir.path().join("baton.toml");
        std::fs::write(&config, &options.config)?;
        let binary = options.binary.clone().unwrap_or_else(default_binary);
        let mut cmd = match options.open_files_limit {
            Some((soft, hard)) => {
                let mut cmd = Command::new("prlimit");
                cmd.arg(format!("--nofile={soft}:{hard}"))
                    .arg("--")
                    .arg(&binary);
                cmd
            }
            None => Command::new(&binary),
        };
        let log_path = dir.path().join(format!("baton-{launch}.log"));
        // Appending, so that a supervisor's and its serving process's lines never overwrite
        // each other.
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .arg("--modules")
            .arg(dir.path().join("modules"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args((!options.supervised).then_some("--no-supervisor"))
            .args(&options.args)
            .env("BATON_LOG_FORMAT", "json")
            .env("BATON_LOG", "info")
            .env_remove("RUST_LOG")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file));
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut host = HostProc {
            child,
            log: Mutex::new(Log {
                tail: LogTail::from_start(&log_path)?,
                path: log_path,
                lines: Vec::new(),
            }),
            addr: ([0, 0, 0, 0], 0).into(),
            admin: ([0, 0, 0, 0], 0).into(),
            tls_addr: None,
            dir,
            options,
            launch,
        };
        let admin = host.until_logged(|l| l["message"] == "admin listening")?;
        host.admin = address(&admin["addr"])?;
        let listening = host.until_logged(|l| l["message"] == "listening")?;
        host.addr = address(&listening["addr"])?;
        if !listening["tls_addr"].is_null() {
            host.tls_addr = Some(address(&listening["tls_addr"])?);
        }
        Ok(host)
    }

    /// Waits for the first log line matching `pred` while the host starts.
    fn until_logged(&mut self, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(found) = self.log().refresh().iter().find(|l| pred(l)) {
                return Ok(found.clone());
            }
            if !self.alive() {
                bail!(
                    "baton exited before listening; its log:\n{}",
                    self.log_text()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "baton did not start listening within {STARTUP:?}; its log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn log_text(&self) -> String {
        let lines: Vec<String> = self.log().refresh().iter().map(Value::to_string).collect();
        lines.join("\n")
    }

    /// The modules directory this host watches.
    pub fn modules_dir(&self) -> PathBuf {
        self.dir.path().join("modules")
    }

    /// The host's private module store (`state/store`).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("state").join("store")
    }

    /// The file the `index`th of [`HostOptions::modules`] was copied to before start.
    ///
    /// # Panics
    /// If there is no such module.
    pub fn module_file(&self, index: usize) -> PathBuf {
        module_file(&self.modules_dir(), index, &self.options.modules[index])
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://ADMIN{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Drops a module file into the watched directory the way operators should: copy to a
    /// hidden temporary name, then rename. Returns the final path right after the rename.
    ///
    /// # Panics
    /// If the file cannot be copied or renamed.
    pub fn drop_module(&self, module: &Path, name: &str) -> PathBuf {
        let dir = self.modules_dir();
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::copy(module, &tmp)
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", module.display()));
        let target = dir.join(name);
        std::fs::rename(&tmp, &target)
            .unwrap_or_else(|e| panic!("cannot rename to {}: {e}", target.display()));
        target
    }

    /// The process id: the serving process's, or the supervisor's when supervised.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for a log line matching `pred` (from the start of this launch's log).
    ///
    /// # Panics
    /// After `timeout`, with the whole log.
    pub fn wait_log(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let mut log = self.log();
            let lines = log.refresh();
            if let Some(found) = lines.iter().find(|l| pred(l)) {
                return found.clone();
            }
            if Instant::now() >= deadline {
                let all: Vec<String> = lines.iter().map(Value::to_string).collect();
                panic!(
                    "log line not seen within {timeout:?}; log:\n{}",
                    all.join("\n")
                );
            }
            drop(log);
            std::thread::sleep(POLL);
        }
    }

    /// Every log line of this launch so far.
    pub fn log_lines(&self) -> Vec<Value> {
        self.log().refresh().to_vec()
    }

    /// This launch's log file (JSON lines; the supervisor's and every serving process's).
    pub fn log_file(&self) -> PathBuf {
        self.log().path.clone()
    }

    /// Reads the lines this launch logs from now on.
    ///
    /// # Errors
    /// If the log file cannot be opened.
    pub fn log_tail(&self) -> std::io::Result<LogTail> {
        LogTail::from_end(&self.log_file())
    }

    /// Warnings and errors this launch logged so far, and anything it printed that was not
    /// JSON, at most 1,000. Reads the file afresh, without keeping what it read: a benchmark's
    /// access log can be long.
    pub fn warnings(&self) -> Vec<String> {
        LogTail::from_start(&self.log_file())
            .and_then(|mut tail| tail.lines())
            .unwrap_or_default()
            .into_iter()
            .filter(|line| log::is_warning(line))
            .take(1000)
            .collect()
    }

    /// Sends a signal to the process.
    ///
    /// # Panics
    /// If it cannot be sent (the process was reaped).
    pub fn signal(&self, sig: Signal) {
        signal(self.pid(), sig).unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Waits for the process to exit.
    ///
    /// # Panics
    /// After `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("the host can be waited for") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "host did not exit within {timeout:?}"
            );
            std::thread::sleep(POLL);
        }
    }
}

/// How many of a host's last log lines, access lines left out, a failing test prints.
const LOG_LINES_ON_FAILURE: usize = 60;
/// How much of the end of a host's log a failing test reads.
const LOG_TAIL_BYTES: u64 = 4 << 20;

impl HostProc {
    /// The end of the log for a failed test: the last lines other than access lines (those
    /// drown the rest under load), then the very last line.
    fn last_words(&self) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let mut tail = Vec::new();
        if let Ok(mut file) = std::fs::File::open(self.log_file()) {
            let len = file.metadata().map_or(0, |m| m.len());
            let _ = file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
            let _ = file.read_to_end(&mut tail);
        }
        let text = String::from_utf8_lossy(&tail);
        let lines: Vec<&str> = text.lines().collect();
        let told: Vec<&str> = lines
            .iter()
            .filter(|l| !l.contains(r#""target":"baton::access""#))
            .copied()
            .collect();
        let shown = &told[told.len().saturating_sub(LOG_LINES_ON_FAILURE)..];
        format!(
            "--- the host on {}: its last {} log lines but access lines ---\n{}\n--- its last line ---\n{}",
            self.addr,
            shown.len(),
            shown.join("\n"),
            lines.last().unwrap_or(&"")
        )
    }
}

impl Drop for HostProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The test failed: what the host said last is usually why.
            eprintln!("{}", self.last_words());
        }
        if self.options.supervised && signal(self.pid(), Signal::TERM).is_ok() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.alive() && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the `index`th module is copied in `modules`: numbered, so the host loads them in order.
fn module_file(modules: &Path, index: usize, module: &Path) -> PathBuf {
    let name = module.file_name().map(|n| n.to_string_lossy().into_owned());
    modules.join(format!("{index:02}-{}", name.unwrap_or_default()))
}

/// `baton` where cargo builds the package's binaries for its integration tests.
fn default_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable has a path");
    let mut dir = exe.parent().map(Path::to_owned).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("baton")
}

fn address(value: &Value) -> anyhow::Result<std::net::SocketAddr> {
    value
        .as_str()
        .with_context(|| format!("{value} is not an address"))?
        .parse()
        .with_context(|| format!("{value} is not an address"))
}
