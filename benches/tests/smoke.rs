//! Short runs of the benchmark programs (debug builds, a few seconds) so they keep working:
//! `swapbench` must complete every swap without failing a request, `sessionbench` must keep one
//! session per connection and see every count on plain, TLS and Cluster Redis, `tlsbench` must
//! fail no request over TLS, `hostbench` must upgrade the host without failing a request and
//! fail at most one request per connection when the serving process is killed, `streambench`
//! must deliver every large body whole from both servers and list the notes it posted, and
//! `hyper-hello --hand-off` must answer from its pool.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Builds with `args` into a target directory of its own: the one `cargo test` uses is locked
/// while the tests run. Returns its `debug` directory.
fn build_apart(args: &[&str]) -> PathBuf {
    let target = baton_testkit::build::workspace()
        .join("target")
        .join("smoke-build");
    let status = baton_testkit::build::cargo()
        .args(["build", "--quiet"])
        .args(args)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build {args:?} failed");
    target.join("debug")
}

/// The `baton` binary of this build: `cargo test --workspace` builds it next to this package's
/// binaries; otherwise it is built apart.
fn baton() -> PathBuf {
    let sibling = Path::new(env!("CARGO_BIN_EXE_swapbench")).with_file_name("baton");
    if sibling.is_file() {
        return sibling;
    }
    build_apart(&["-p", "baton-host", "--bin", "baton"]).join("baton")
}

/// Runs the benchmark program `program` (a path) with `flags` (split at white space), each
/// `(option, file)` of `files`, and `--json FILE`; returns what it wrote to the file and its
/// table (stdout). Fails the test when the run fails.
fn run_bench(program: &str, flags: &str, files: &[(&str, PathBuf)]) -> (Value, String) {
    let name = Path::new(program).file_name().unwrap().to_string_lossy();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join(format!("{name}.json"));
    let mut cmd = Command::new(program);
    cmd.args(flags.split_whitespace());
    for (option, file) in files {
        cmd.arg(option).arg(file);
    }
    let output = cmd
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap_or_else(|e| panic!("{name} runs: {e}"));
    let table = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{name} failed:\n{table}\n{stderr}");
    let result = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    (result, table)
}

#[test]
fn a_short_swapbench_run_fails_no_request() {
    let (result, table) = run_bench(
        env!("CARGO_BIN_EXE_swapbench"),
        "--debug --swaps 4 --connections 8 --rounds 1 --round-secs 0.5 --gap-ms 100 --guard-rollbacks 1",
        &[
            ("--baton", baton()),
            ("--hyper", PathBuf::from(env!("CARGO_BIN_EXE_hyper-hello"))),
        ],
    );
    let swaps = &result["swaps"];
    assert_eq!(swaps["completed"], 4, "{table}");
    assert_eq!(swaps["failed_requests"], 0, "{table}");
    assert!(swaps["requests"].as_u64().unwrap() > 100, "{table}");
    assert!(
        result["throughput"]["ratio_median"].as_f64().unwrap() > 0.0,
        "{table}"
    );
    assert_eq!(swaps["landed_to_new_version"]["count"], 4, "{table}");
    assert_eq!(
        result["host"]["copies_mapped_at_end"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{table}"
    );
    let guard = &result["guard"];
    assert_eq!(guard["rolled_back"], 1, "{table}");
    assert_eq!(guard["failed_requests"], 0, "{table}");
    assert!(guard["bad_version_5xx"].as_u64().unwrap() > 0, "{table}");
    assert_eq!(guard["switch_to_rollback"]["count"], 1, "{table}");
    assert!(table.contains("targets"), "{table}");
}

#[test]
fn a_short_sessionbench_run_keeps_every_session() {
    let modules = build_apart(&["-p", "hello", "-p", "counter", "--lib"]);
    let (result, table) = run_bench(
        env!("CARGO_BIN_EXE_sessionbench"),
        "--debug --rounds 1 --connections 8 --round-secs 0.5 --warmup-secs 0.2 \
         --host-config access_log=false",
        &[
            ("--baton", baton()),
            ("--hello", modules.join("libhello.so")),
            ("--counter", modules.join("libcounter.so")),
        ],
    );
    assert_eq!(
        result["settings"]["host_config"], "access_log=false",
        "{table}"
    );
    let round = result["rounds"][0].as_array().unwrap();
    let kinds: Vec<&str> = round.iter().map(|m| m["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "hello",
            "counter_redis",
            "counter_tls",
            "counter_cluster",
            "counter_memory"
        ],
        "{table}"
    );
    for measure in round {
        assert_eq!(measure["failed"], 0, "{table}");
        assert!(measure["requests"].as_u64().unwrap() > 8, "{table}");
    }
    for counter in &round[1..] {
        // Every connection's counts went 1, 2, 3, ... in one session of its own.
        assert_eq!(counter["count_mismatches"], 0, "{table}");
        assert_eq!(counter["sessions"], 8, "{table}");
        assert_eq!(counter["counts_ok"], counter["requests"], "{table}");
    }
    assert!(
        result["summary"][1]["rps_ratio_to_hello"].as_f64().unwrap() > 0.0,
        "{table}"
    );
    for (i, kind) in [(2, "counter_tls"), (3, "counter_cluster")] {
        let summary = &result["summary"][i];
        assert_eq!(summary["kind"], kind, "{table}");
        assert!(
            summary["rps_ratio_to_redis"].as_f64().unwrap() > 0.0,
            "{table}"
        );
    }
    assert!(table.contains("ratios to counter (redis)"), "{table}");
    assert!(table.contains("checks"), "{table}");
}

/// `--host-config` reaches every host's configuration: a setting the host refuses stops the
/// run before any load.
#[test]
fn sessionbench_host_config_goes_into_the_hosts_configuration() {
    let modules = build_apart(&["-p", "hello", "-p", "counter", "--lib"]);
    let output = Command::new(env!("CARGO_BIN_EXE_sessionbench"))
        .args([
            "--debug",
            "--rounds",
            "1",
            "--no-tls",
            "--no-cluster",
            "--no-memory",
        ])
        .args(["--host-config", "no_such_option = 1"])
        .arg("--baton")
        .arg(baton())
        .arg("--hello")
        .arg(modules.join("libhello.so"))
        .arg("--counter")
        .arg(modules.join("libcounter.so"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("starting baton"), "{text}");
}

#[test]
fn a_short_tlsbench_run_fails_no_request_over_tls() {
    let modules = build_apart(&["-p", "hello", "--lib"]);
    let (result, table) = run_bench(
        env!("CARGO_BIN_EXE_tlsbench"),
        "--debug --rounds 1 --connections 4 --round-secs 0.5 --warmup-secs 0.2",
        &[
            ("--baton", baton()),
            ("--hyper", PathBuf::from(env!("CARGO_BIN_EXE_hyper-hello"))),
            ("--hello", modules.join("libhello.so")),
        ],
    );
    let round = result["rounds"][0].as_array().unwrap();
    let kinds: Vec<&str> = round.iter().map(|m| m["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "hyper_keep_alive",
            "baton_keep_alive",
            "hyper_handshakes",
            "baton_handshakes",
            "baton_plain_keep_alive"
        ],
        "{table}"
    );
    for measure in round {
        assert_eq!(measure["failed"], 0, "{table}");
        assert!(measure["requests"].as_u64().unwrap() > 4, "{table}");
    }
    assert_eq!(result["failed_requests"], 0, "{table}");
    for ratio in ["keep_alive_ratio_median", "handshake_ratio_median"] {
        assert!(
            result["summary"][ratio].as_f64().unwrap() > 0.0,
            "{ratio}: {table}"
        );
    }
}

#[test]
fn a_short_hostbench_run_upgrades_without_failures_and_bounds_a_crash() {
    let modules = build_apart(&["-p", "hello", "-p", "counter", "--lib"]);
    let (connections, session_connections) = (4, 4);
    let (result, table) = run_bench(
        env!("CARGO_BIN_EXE_hostbench"),
        &format!(
            "--debug --upgrades 1 --crashes 1 --gap-ms 500 --min-uptime-secs 0 \
             --connections {connections} --session-connections {session_connections}"
        ),
        &[
            ("--baton", baton()),
            ("--hello", modules.join("libhello.so")),
            ("--counter", modules.join("libcounter.so")),
        ],
    );
    let (upgrade, crash) = (&result["phases"][0], &result["phases"][1]);
    assert_eq!(upgrade["kind"], "upgrade", "{table}");
    assert_eq!(upgrade["completed"], 1, "{table}");
    assert_eq!(upgrade["failed"]["total"], 0, "{table}");
    assert!(upgrade["requests"].as_u64().unwrap() > 100, "{table}");
    // Every /counter/ connection kept its one session through the upgrade.
    assert_eq!(upgrade["sessions"], session_connections, "{table}");
    let event = &upgrade["per_event"][0];
    assert_ne!(event["old_pid"], event["new_pid"], "{table}");
    assert_eq!(upgrade["without_service"]["count"], 1, "{table}");

    assert_eq!(crash["kind"], "crash", "{table}");
    assert_eq!(crash["completed"], 1, "{table}");
    let failed = &crash["failed"];
    let unanswered = ["io", "timeout", "status"]
        .iter()
        .map(|k| failed[k].as_u64().unwrap())
        .sum::<u64>();
    assert!(
        unanswered <= (connections + session_connections) as u64,
        "{table}"
    );
    // In-memory sessions do not survive a crash: each /counter/ connection loses its one.
    assert!(
        failed["body"].as_u64().unwrap() <= session_connections as u64,
        "{table}"
    );
    assert!(
        crash["signal_to_new_process_serving"]["max_ms"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(table.contains("targets"), "{table}");
}

#[test]
fn a_short_streambench_run_delivers_every_body_whole() {
    let modules = build_apart(&["-p", "hello", "-p", "notes", "--lib"]);
    // 200 KiB: three full 64 KiB frames and a short one.
    let (result, table) = run_bench(
        env!("CARGO_BIN_EXE_streambench"),
        "--debug --rounds 1 --connections 4 --round-secs 0.5 --warmup-secs 0.2 \
         --body-bytes 204800 --notes 3",
        &[
            ("--baton", baton()),
            ("--hyper", PathBuf::from(env!("CARGO_BIN_EXE_hyper-hello"))),
            ("--hello", modules.join("libhello.so")),
            ("--notes-module", modules.join("libnotes.so")),
        ],
    );
    let round = result["rounds"][0].as_array().unwrap();
    let kinds: Vec<&str> = round.iter().map(|m| m["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["hyper_bytes", "baton_bytes", "hello", "notes"],
        "{table}"
    );
    for measure in round {
        // A body shorter or longer than asked is a failed request.
        assert_eq!(measure["failed"], 0, "{table}");
        assert!(measure["requests"].as_u64().unwrap() > 4, "{table}");
    }
    for large in &round[..2] {
        assert!(large["mib_per_sec"].as_f64().unwrap() > 0.0, "{table}");
    }
    assert_eq!(result["failed_requests"], 0, "{table}");
    assert_eq!(result["notes_listed"], 3, "{table}");
    for ratio in ["streaming_ratio_median", "notes_ratio_median"] {
        assert!(result[ratio].as_f64().unwrap() > 0.0, "{ratio}: {table}");
    }
    assert!(
        table.contains("streaming (200 KiB bodies) / bare hyper: target >= 0.9: "),
        "{table}"
    );
}

/// `hyper-hello --hand-off` answers as without it, each answer made on one of the 16 threads of
/// its pool.
#[test]
fn hyper_hello_hands_every_greeting_to_its_pool() {
    use std::io::{BufRead, BufReader, Read, Write};

    /// Kills the server however the test ends.
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    /// The pool's threads, each with its context switches so far.
    fn pool_threads(pid: u32) -> Vec<(String, u64)> {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        tasks
            .filter_map(|task| {
                let dir = task.ok()?.path();
                let name = std::fs::read_to_string(dir.join("comm")).ok()?;
                let status = std::fs::read_to_string(dir.join("status")).ok()?;
                let switches = status
                    .lines()
                    .filter(|l| l.contains("ctxt_switches:"))
                    .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                    .sum();
                name.starts_with("hand-off-").then_some((name, switches))
            })
            .collect()
    }

    let mut server = Server(
        Command::new(env!("CARGO_BIN_EXE_hyper-hello"))
            .args(["--listen", "127.0.0.1:0", "--hand-off"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("hyper-hello starts"),
    );
    let mut line = String::new();
    BufReader::new(server.0.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening addr=")
        .unwrap()
        .to_owned();
    let switches = |threads: &[(String, u64)]| threads.iter().map(|(_, n)| n).sum::<u64>();
    // Once started, the threads spin and yield a little before they sleep: wait until they do.
    let mut before = pool_threads(server.0.id());
    assert_eq!(before.len(), 16, "{before:?}");
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let now = pool_threads(server.0.id());
        if switches(&now) == switches(&before) {
            break;
        }
        before = now;
    }

    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    for _ in 0..3 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        // The whole answer: hyper sends its head and this short body at once, but a read may
        // still end between them.
        let mut answer = Vec::new();
        while !answer.ends_with(b"hello from hyper\n") {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "connection closed after {answer:?}");
            answer.extend_from_slice(&chunk[..n]);
        }
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // A pool thread that made an answer was woken for it and went back to waiting.
    let after = pool_threads(server.0.id());
    assert!(
        switches(&after) > switches(&before),
        "no pool thread ran: {before:?} {after:?}"
    );
}
