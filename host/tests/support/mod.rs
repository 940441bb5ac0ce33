//! Shared helpers for the host's integration tests: build module variants, run a real `baton`
//! process on port 0 with its own directories, read its JSON log, and speak real HTTP to it.
#![allow(dead_code, unreachable_pub)]

pub mod http;
pub mod jar;
pub mod load;
pub mod redis;
pub mod redis_topology;
pub mod tls;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_owned()
}

/// Builds the cdylib crate `package` with `env` set at compile time (e.g.
/// `BATON_APP_VERSION`), once per distinct (package, env), and returns a private copy of it.
///
/// Variants are built in their own target directory so they do not disturb the test build, and
/// under a file lock so parallel test processes do not overwrite each other's output.
pub fn module(package: &str, env: &[(&str, &str)]) -> PathBuf {
    let root = workspace().join("target").join("test-modules");
    let out_dir = root.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut tag = package.to_owned();
    for (k, v) in env {
        tag.push_str(&format!("-{k}={v}"));
    }
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let fingerprint = format!("{:016x}.so", sources_fingerprint());
    let out = out_dir.join(format!("{tag}-{fingerprint}"));
    let lock = std::fs::File::create(root.join(".lock")).unwrap();
    lock.lock().unwrap();
    if !out.exists() {
        // Builds of older sources are never used again.
        for stale in std::fs::read_dir(&out_dir).unwrap().flatten() {
            if !stale.file_name().to_string_lossy().ends_with(&fingerprint) {
                let _ = std::fs::remove_file(stale.path());
            }
        }
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "--lib", "-p", package])
            .env("CARGO_TARGET_DIR", root.join("build"))
            .current_dir(workspace());
        for var in ["BATON_APP_VERSION", "BATON_FAULT", "BATON_FIXTURE_APP"] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building {package} with {env:?} failed");
        let built = root
            .join("build")
            .join("debug")
            .join(format!("lib{}.so", package.replace('-', "_")));
        let tmp = out.with_extension("tmp");
        std::fs::copy(&built, &tmp).unwrap();
        std::fs::rename(&tmp, &out).unwrap();
    }
    drop(lock);
    out
}

/// A hash of every source a module build depends on (the sdk, the example and fixture crates,
/// the lock file), so a cached build is never used after the code changed.
fn sources_fingerprint() -> u64 {
    use std::hash::{Hash, Hasher};
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|e| e == "rs" || e == "toml") {
                files.push(path);
            }
        }
    }
    let root = workspace();
    let mut files = vec![root.join("Cargo.lock"), root.join("Cargo.toml")];
    for dir in ["sdk", "examples", "host/tests/fixtures"] {
        walk(&root.join(dir), &mut files);
    }
    files.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in files {
        file.hash(&mut hasher);
        std::fs::read(&file).unwrap_or_default().hash(&mut hasher);
    }
    hasher.finish()
}

/// The `baton` binary built with `BATON_BUILD_VERSION=version` (in its own target directory, so
/// the test build is not disturbed), for upgrades to a different binary.
pub fn baton_binary(version: &str) -> PathBuf {
    let root = workspace().join("target").join("test-baton");
    let lock = {
        std::fs::create_dir_all(&root).unwrap();
        std::fs::File::create(root.join(".lock")).unwrap()
    };
    lock.lock().unwrap();
    // Cargo rebuilds only what changed since the last test run.
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "baton-host", "--bin", "baton"])
        .env("CARGO_TARGET_DIR", root.join("build"))
        .env("BATON_BUILD_VERSION", version)
        .current_dir(workspace())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building baton {version} failed");
    let out = root.join(format!("baton-{version}"));
    let tmp = out.with_extension("tmp");
    std::fs::copy(root.join("build").join("debug").join("baton"), &tmp).unwrap();
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// `hello` built as `version`.
pub fn hello(version: &str) -> PathBuf {
    module("hello", &[("BATON_APP_VERSION", version)])
}

/// The `counter` example built as `version`.
pub fn counter(version: &str) -> PathBuf {
    module("counter", &[("BATON_APP_VERSION", version)])
}

/// Configuration that turns the guard window off (an inline table, so it combines with any
/// other top-level keys). Tests that measure the old version's drain and unload right after a
/// switch set it explicitly; the guard's own tests are in `guard.rs`.
pub const GUARD_OFF: &str = "guard = { window_secs = 0 }\n";

/// Log lines collected from a host's stderr.
#[derive(Default)]
struct LogBook {
    lines: Mutex<Vec<Value>>,
    changed: Condvar,
}

/// Options for starting a host.
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    /// Module files copied into the modules directory before start.
    pub modules: Vec<PathBuf>,
    /// Extra TOML for the config file.
    pub config: String,
    /// Extra command-line arguments after `serve`.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Run under the supervisor (the default of `baton serve`); otherwise `--no-supervisor`.
    pub supervised: bool,
    /// Soft and hard limits on open files, set with util-linux's `prlimit` before the host
    /// starts (`prlimit` execs the host, so the pid is the host's).
    pub open_files_limit: Option<(u64, u64)>,
    /// The `baton` binary to run, instead of the one this test build made.
    pub binary: Option<PathBuf>,
}

/// A `baton serve` child process with its own temporary directories.
pub struct HostProc {
    child: Child,
    log: Arc<LogBook>,
    pub addr: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
    /// The HTTPS listener's address, when the host has one.
    pub tls_addr: Option<std::net::SocketAddr>,
    pub dir: tempfile::TempDir,
    options: HostOptions,
}

impl HostProc {
    /// Starts a host with `modules` and default settings.
    pub fn start(modules: &[PathBuf]) -> HostProc {
        Self::start_with(HostOptions {
            modules: modules.to_vec(),
            ..HostOptions::default()
        })
    }

    /// Starts a host and waits until it listens.
    pub fn start_with(options: HostOptions) -> HostProc {
        let dir = tempfile::tempdir().unwrap();
        let modules = dir.path().join("modules");
        std::fs::create_dir_all(&modules).unwrap();
        for (i, module) in options.modules.iter().enumerate() {
            let name = module.file_name().unwrap().to_string_lossy().into_owned();
            std::fs::copy(module, modules.join(format!("{i:02}-{name}"))).unwrap();
        }
        Self::start_in(dir, options)
    }

    /// Stops the host gracefully (SIGTERM, exit 0) and starts a new one on the same
    /// directories, modules and state.
    pub fn restart(mut self) -> HostProc {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(Duration::from_secs(60));
        assert!(status.success(), "graceful stop failed: {status:?}");
        self.relaunch()
    }

    /// Starts a new host on the same directories, modules and state once this one has exited
    /// (crashed, or stopped), as a supervisor would.
    pub fn relaunch(mut self) -> HostProc {
        self.wait_exit(Duration::from_secs(60));
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Self::start_in(dir, self.options.clone())
    }

    fn start_in(dir: tempfile::TempDir, options: HostOptions) -> HostProc {
        let modules = dir.path().join("modules");
        let config = dir.path().join("baton.toml");
        std::fs::write(&config, &options.config).unwrap();
        let binary = options
            .binary
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_baton")));
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
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--modules",
            ])
            .arg(&modules)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args((!options.supervised).then_some("--no-supervisor"))
            .args(&options.args)
            .env("BATON_LOG_FORMAT", "json")
            .env("BATON_LOG", "info")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("baton starts");
        let log = Arc::new(LogBook::default());
        let stderr = child.stderr.take().unwrap();
        let book = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "message": line, "raw": true }));
                book.lines.lock().unwrap().push(value);
                book.changed.notify_all();
            }
        });
        let mut host = HostProc {
            child,
            log,
            addr: "0.0.0.0:0".parse().unwrap(),
            admin: "0.0.0.0:0".parse().unwrap(),
            tls_addr: None,
            dir,
            options,
        };
        let admin = host.wait_log(Duration::from_secs(60), |l| {
            l["message"] == "admin listening"
        });
        host.admin = admin["addr"].as_str().unwrap().parse().unwrap();
        let listening = host.wait_log(Duration::from_secs(60), |l| l["message"] == "listening");
        host.addr = listening["addr"].as_str().unwrap().parse().unwrap();
        host.tls_addr = listening["tls_addr"].as_str().map(|a| a.parse().unwrap());
        host
    }

    /// The modules directory this host serves.
    pub fn modules_dir(&self) -> PathBuf {
        self.dir.path().join("modules")
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://ADMIN{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// An admin API call with `Authorization: Bearer TOKEN`; panics on a transport error.
    pub async fn admin_call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: impl Into<bytes::Bytes>,
    ) -> http::Reply {
        let auth = format!("Bearer {token}");
        http::Http::new()
            .send(
                method,
                &self.admin_url(path),
                &[("authorization", &auth)],
                body,
            )
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Drops a module file into the watched directory the way operators should: copy to a
    /// hidden temporary name, then rename. Returns the final path.
    pub fn drop_module(&self, module: &Path, name: &str) -> PathBuf {
        let dir = self.modules_dir();
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::copy(module, &tmp).unwrap();
        let target = dir.join(name);
        std::fs::rename(&tmp, &target).unwrap();
        target
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a log line matching `pred` (from the start of the log); panics after `timeout`
    /// with the whole log.
    pub fn wait_log(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        let mut lines = self.log.lines.lock().unwrap();
        loop {
            if let Some(found) = lines.iter().find(|l| pred(l)) {
                return found.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                let all: Vec<String> = lines.iter().map(Value::to_string).collect();
                panic!(
                    "log line not seen within {timeout:?}; log:\n{}",
                    all.join("\n")
                );
            }
            lines = self
                .log
                .changed
                .wait_timeout(lines, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// Every log line so far.
    pub fn log_lines(&self) -> Vec<Value> {
        self.log.lines.lock().unwrap().clone()
    }

    /// Sends a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "host did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for HostProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pid of the serving process that logged "listening" last (under a supervisor, the
/// supervisor relays its log).
pub fn serving_pid(host: &HostProc) -> u32 {
    host.log_lines()
        .iter()
        .rev()
        .find(|l| l["message"] == "listening")
        .and_then(|l| l["pid"].as_u64())
        .expect("a serving process logged its pid") as u32
}

/// Waits until a serving process other than `old` and those before it logs "listening";
/// returns its pid.
pub fn next_serving_pid(host: &HostProc, old: u32) -> u32 {
    let mut earlier: Vec<u64> = host
        .log_lines()
        .iter()
        .filter(|l| l["message"] == "listening")
        .filter_map(|l| l["pid"].as_u64())
        .collect();
    earlier.push(u64::from(old));
    let line = host.wait_log(Duration::from_secs(60), |l| {
        l["message"] == "listening" && l["pid"].as_u64().is_some_and(|p| !earlier.contains(&p))
    });
    line["pid"].as_u64().unwrap() as u32
}

/// Sends `signal` to process `pid` (a host this test started, or its serving process).
pub fn kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a process this test started (or its child).
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid as i32, signal) };
    assert_eq!(rc, 0, "kill {pid} failed");
}

/// `GET /status` on the admin listener, as JSON.
pub async fn status(host: &HostProc) -> serde_json::Value {
    let r = http::Http::new().get(&host.admin_url("/status")).await;
    assert_eq!(r.status, 200);
    serde_json::from_str(&r.body).unwrap()
}

/// The app called `name` in a status document; panics when it is not there.
pub fn app<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no app {name} in {status:#}"))
}

/// The newest entry of `version` in an app's status; panics when there is none.
pub fn version<'a>(app: &'a serde_json::Value, version: &str) -> &'a serde_json::Value {
    app["versions"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|v| v["version"] == version)
        .unwrap_or_else(|| panic!("no version {version} in {app:#}"))
}

/// Executable or writable mappings of `path` in process `pid` (a read-only mapping may stay:
/// the backtrace symbolizer's).
pub fn mapped(pid: u32, path: &str) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .filter(|l| l.ends_with(path) || l.ends_with(&format!("{path} (deleted)")))
        .filter(|l| {
            let perms = l.split_whitespace().nth(1).unwrap_or("");
            perms.contains('x') || perms.contains('w')
        })
        .map(str::to_owned)
        .collect()
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

/// Polls `f` every 20 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T>(
    timeout: Duration,
    what: &str,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a `baton` command-line run printed, and how it ended.
#[derive(Debug)]
pub struct CliRun {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the real `baton` binary with `args` (a client command) and waits for it.
pub async fn baton(args: &[&str], env: &[(&str, &str)]) -> CliRun {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"));
    cmd.args(args)
        .env_remove("BATON_ADMIN_TOKEN")
        .env_remove("BATON_ADMIN")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("baton finished within 5 minutes")
        .expect("baton runs");
    CliRun {
        ok: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Loads `url` in headless Chromium (Debian's `chromium`), lets its scripts run for
/// `budget_ms` of virtual time, and returns the DOM it ends with. A missing Chromium is a test
/// failure: `.ci/run` installs it.
pub fn chromium_dom(url: &str, budget_ms: u64) -> String {
    let binary = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .expect("chromium is not installed: `apt-get install -y chromium` (.ci/run does this)");
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && !dom.is_empty(),
        "chromium failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    dom
}
