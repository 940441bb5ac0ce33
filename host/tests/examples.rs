//! The README's quick start: `./scripts/run-examples` builds the host and the example apps and
//! serves them on embedded defaults (here as a debug build, in a directory of the test's own).

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::http::Http;
use support::jar::Jar;

/// The script's host, killed with its process group when dropped.
struct Script(std::process::Child);

impl Drop for Script {
    fn drop(&mut self) {
        // The script runs in a process group of its own whose id is its pid (see below).
        let group = i32::try_from(self.0.id()).expect("a pid fits an i32");
        assert!(group > 1, "not a process group to kill: {group}");
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(group),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.0.wait();
    }
}

/// The address of the first JSON log line with this message, once it is logged.
fn logged_addr(log: &std::path::Path, message: &str, deadline: Instant) -> String {
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["message"] == message)
            .and_then(|l| l["addr"].as_str().map(str::to_owned))
        {
            return addr;
        }
        assert!(
            Instant::now() < deadline,
            "no {message:?} in the log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn run_examples_serves_every_example_app_on_embedded_defaults() {
    let workdir = tempfile::tempdir().unwrap();
    let log = workdir.path().join("baton.log");
    let root = baton_testkit::build::workspace();
    let mut script = Command::new(root.join("scripts/run-examples"));
    // A process group of its own (the host and its serving process), killed as one.
    std::os::unix::process::CommandExt::process_group(&mut script, 0);
    script
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env("BATON_PROFILE", "debug")
        .env("BATON_WORKDIR", workdir.path())
        .env("BATON_LOG_FORMAT", "json")
        .env(
            "CARGO_TARGET_DIR",
            root.join("target").join("test-modules").join("build"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // Variables that would change what the script's cargo builds.
    for var in [
        "BATON_APP_VERSION",
        "BATON_BUILD_VERSION",
        "BATON_FAULT",
        "BATON_FIXTURE_APP",
        "BATON_LOG",
    ] {
        script.env_remove(var);
    }
    let _host = Script(script.spawn().expect("run scripts/run-examples"));
    // The first build of the host and the apps may take minutes on a small machine.
    let deadline = Instant::now() + Duration::from_secs(900);
    let addr = logged_addr(&log, "listening", deadline);
    let admin = logged_addr(&log, "admin listening", deadline);
    let url = |path: &str| format!("http://{addr}{path}");
    let http = Http::new();

    let hello = http.get(&url("/hello/")).await;
    assert_eq!(hello.status, 200);
    assert_eq!(hello.version(), "hello@1.0.0");
    assert_eq!(hello.body, "hello from hello@1.0.0\n");

    let jar = Jar::new("BATON_SESSION");
    let first = jar.get(&url("/counter/")).await;
    let second = jar.get(&url("/counter/")).await;
    assert_eq!((first.status, second.status), (200, 200));
    assert!(
        first.body.contains('1') && second.body.contains('2'),
        "{first:?} {second:?}"
    );

    let page = http.get(&url("/notes/")).await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type").starts_with("text/html"),
        "{page:?}"
    );
    let notes = http.get(&url("/notes/api/notes")).await;
    assert_eq!(notes.status, 200);
    assert!(notes.json().is_array(), "{}", notes.body);
    assert!(
        workdir.path().join("data/notes").is_dir(),
        "SQLite under ./data/notes"
    );

    let status = http.get(&format!("http://{admin}/status")).await;
    assert_eq!(status.status, 200);
}
