//! Shared helpers for the host's integration tests, over the test kit (`baton-testkit`): a real
//! `baton` process on port 0 with its own directories ([`HostProc`]), module variants built
//! for a test, its JSON log, and real HTTP to it.
#![allow(dead_code, unreachable_pub, unused_imports)]

pub mod body;
pub mod http;
pub mod jar;
pub mod load;
pub mod tls;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use baton_testkit::redis;
pub use baton_testkit::{HostOptions, HostProc, Signal, running};

/// Builds the cdylib crate `package` with `env` set at compile time (e.g.
/// `BATON_APP_VERSION`), once per distinct (package, env) and sources, and returns a private
/// copy of it.
pub fn module(package: &str, env: &[(&str, &str)]) -> PathBuf {
    baton_testkit::build::module(package, env, false).unwrap_or_else(|e| panic!("{e:#}"))
}

/// The `baton` binary built with `BATON_BUILD_VERSION=version` (in its own target directory, so
/// the test build is not disturbed), for upgrades to a different binary.
pub fn baton_binary(version: &str) -> PathBuf {
    let root = baton_testkit::build::workspace()
        .join("target")
        .join("test-baton");
    std::fs::create_dir_all(&root).unwrap();
    let lock = std::fs::File::create(root.join(".lock")).unwrap();
    lock.lock().unwrap();
    // Cargo rebuilds only what changed since the last test run.
    let mut cmd = baton_testkit::build::cargo();
    cmd.args(["build", "--quiet", "-p", "baton-host", "--bin", "baton"])
        .env("CARGO_TARGET_DIR", root.join("build"))
        .env("BATON_BUILD_VERSION", version);
    baton_testkit::build::run(cmd).unwrap_or_else(|e| panic!("building baton {version}: {e:#}"));
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

/// The `fixture-faulty` module (see its docs) claiming the app name `app` at `version`, with
/// `fault` ("" for none).
pub fn faulty(app: &str, version: &str, fault: &str) -> PathBuf {
    let mut env = vec![("BATON_FIXTURE_APP", app), ("BATON_APP_VERSION", version)];
    if !fault.is_empty() {
        env.push(("BATON_FAULT", fault));
    }
    module("fixture-faulty", &env)
}

/// Configuration that turns the guard window off (an inline table, so it combines with any
/// other top-level keys). Tests that measure the old version's drain and unload right after a
/// switch set it explicitly; the guard's own tests are in `guard.rs`.
pub const GUARD_OFF: &str = "guard = { window_secs = 0 }\n";

/// An admin API call to `host` with `Authorization: Bearer TOKEN`; panics on a transport error.
pub async fn admin_call(
    host: &HostProc,
    token: &str,
    method: &str,
    path: &str,
    body: impl Into<bytes::Bytes>,
) -> http::Reply {
    let auth = format!("Bearer {token}");
    http::Http::new()
        .send(
            method,
            &host.admin_url(path),
            &[("authorization", &auth)],
            body,
        )
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
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
pub fn kill(pid: u32, signal: Signal) {
    baton_testkit::signal(pid, signal).unwrap_or_else(|e| panic!("{e:#}"));
}

/// `GET path` on `host`'s HTTP listener with a fresh client; panics on a transport error.
pub async fn get(host: &HostProc, path: &str) -> http::Reply {
    http::Http::new().get(&host.url(path)).await
}

/// Sends `GET path` in the background and waits until `host` has it in flight (on the first
/// listed version of app `name`): a request that a stop, a crash or a swap must let finish.
/// Returns the request's task.
pub async fn in_flight(
    host: &HostProc,
    name: &str,
    path: &str,
) -> tokio::task::JoinHandle<Result<http::Reply, String>> {
    let url = host.url(path);
    let request = tokio::spawn(async move { http::Http::new().send("GET", &url, &[], "").await });
    eventually(
        Duration::from_secs(60),
        "the request in flight",
        async || {
            let status = status(host).await;
            (app(&status, name)["versions"][0]["in_flight"] == 1).then_some(())
        },
    )
    .await;
    request
}

/// Stops `host` twice: SIGTERM, then, once it logs that its graceful shutdown began, SIGTERM
/// again, and asserts that it exits with `code` within `within` of the second signal.
pub fn stop_twice(host: &mut HostProc, code: i32, within: Duration) {
    let wait = Duration::from_secs(60);
    host.signal(Signal::TERM);
    host.wait_log(wait, |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("graceful shutdown"))
    });
    let second = Instant::now();
    host.signal(Signal::TERM);
    let status = host.wait_exit(wait);
    let after_second = second.elapsed();
    assert_eq!(status.code(), Some(code), "{status:?}");
    assert!(
        after_second < within,
        "exited {after_second:?} after the second signal"
    );
}

/// Waits for the log line `message` and asserts that its `error` contains `part`; returns it.
pub fn logged_error(host: &HostProc, message: &str, part: &str) -> serde_json::Value {
    let line = host.wait_log(Duration::from_secs(60), |l| l["message"] == message);
    let error = line["error"].as_str().unwrap_or_default();
    assert!(error.contains(part), "{line}");
    line
}

/// Waits until process `pid` (a serving process, say) has exited.
pub async fn gone(pid: u32) {
    eventually(Duration::from_secs(60), "the process gone", async || {
        (!running(pid)).then_some(())
    })
    .await;
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

impl CliRun {
    /// Asserts that the run succeeded and printed `expected` on stdout.
    pub fn assert_says(&self, expected: &str) {
        assert!(self.ok && self.stdout.contains(expected), "{self:?}");
    }
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
pub async fn chromium_dom(url: &str, budget_ms: u64) -> String {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || chromium_dom_blocking(&url, budget_ms))
        .await
        .expect("chromium's runner does not panic")
}

fn chromium_dom_blocking(url: &str, budget_ms: u64) -> String {
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
