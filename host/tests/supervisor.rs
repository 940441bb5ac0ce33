//! The supervisor, end to end: `baton serve` as it runs by default (a supervising process that
//! owns the listeners and a serving process that inherits them), real signals, real crashes
//! and real HTTP under keep-alive load.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::http::Http;
use support::{HostOptions, HostProc, eventually, hello, module};

const WAIT: Duration = Duration::from_secs(60);

fn supervised(modules: Vec<std::path::PathBuf>) -> HostProc {
    HostProc::start_with(HostOptions {
        modules,
        supervised: true,
        ..HostOptions::default()
    })
}

/// The pid of the serving process that logged "listening" last.
fn serving_pid(host: &HostProc) -> u32 {
    host.log_lines()
        .iter()
        .rev()
        .find(|l| l["message"] == "listening")
        .and_then(|l| l["pid"].as_u64())
        .expect("a serving process logged its pid") as u32
}

/// Waits until a serving process other than `old` logs "listening"; returns its pid.
fn next_serving_pid(host: &HostProc, old: u32) -> u32 {
    let line = host.wait_log(WAIT, |l| {
        l["message"] == "listening" && l["pid"].as_u64().is_some_and(|p| p != u64::from(old))
    });
    line["pid"].as_u64().unwrap() as u32
}

fn kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a process this test started (or its child).
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid as i32, signal) };
    assert_eq!(rc, 0, "kill {pid} failed");
}

/// Whether `pid` is gone (or a zombie nobody reaped yet).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// What a keep-alive load saw.
#[derive(Debug, Default)]
struct Seen {
    ok: usize,
    failed: Vec<String>,
}

/// `connections` keep-alive clients sending `GET url` in a loop until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Seen>>,
}

impl Load {
    fn start(url: String, connections: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..connections)
            .map(|_| {
                let (url, stop) = (url.clone(), Arc::clone(&stop));
                tokio::spawn(async move {
                    let http = Http::new();
                    let mut seen = Seen::default();
                    while !stop.load(Ordering::Relaxed) {
                        match http.send("GET", &url, &[], "").await {
                            Ok(r) if r.status == 200 => seen.ok += 1,
                            Ok(r) => seen.failed.push(format!("status {}", r.status)),
                            Err(e) => seen.failed.push(e),
                        }
                    }
                    seen
                })
            })
            .collect();
        Load { stop, tasks }
    }

    async fn stop(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Seen::default();
        for task in self.tasks {
            let seen = task.await.unwrap();
            all.ok += seen.ok;
            all.failed.extend(seen.failed);
        }
        all
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_serving_process_under_load_refuses_no_connection() {
    const CONNECTIONS: usize = 8;
    let host = supervised(vec![hello("1.0.0")]);
    let first = serving_pid(&host);
    assert_ne!(first, host.pid(), "a separate serving process");
    let load = Load::start(host.url("/hello/"), CONNECTIONS);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let killed = Instant::now();
    kill(first, libc::SIGKILL);
    let second = next_serving_pid(&host, first);
    let back = eventually(WAIT, "served again", async || {
        let r = Http::new().get(&host.url("/hello/")).await;
        (r.status == 200).then(|| killed.elapsed())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = load.stop().await;
    println!(
        "kill -9 -> served again in {} ms; {} ok, {} failed: {:?}",
        back.as_millis(),
        seen.ok,
        seen.failed.len(),
        seen.failed
    );
    assert_ne!(second, first);
    assert!(seen.ok > 0);
    assert!(
        seen.failed
            .iter()
            .all(|e| !e.contains("Connection refused") && !e.contains("ConnectError")),
        "no connection may be refused: {:?}",
        seen.failed
    );
    assert!(
        seen.failed.len() <= CONNECTIONS,
        "only the requests in flight in the dead process may fail: {:?}",
        seen.failed
    );
    assert!(!gone(host.pid()), "the supervisor lives on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_to_the_supervisor_drains_the_serving_process_and_both_exit_0() {
    let mut host = supervised(vec![hello("1.0.0")]);
    let child = serving_pid(&host);
    let slow = tokio::spawn({
        let url = host.url("/hello/slow?ms=1500");
        async move { Http::new().get(&url).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    host.signal(libc::SIGTERM);
    let reply = slow.await.unwrap();
    assert_eq!(
        reply.status, 200,
        "the running request finishes: {}",
        reply.body
    );
    let status = host.wait_exit(WAIT);
    assert!(status.success(), "{status:?}");
    eventually(WAIT, "serving process gone", async || {
        gone(child).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_serving_process_drains_and_exits_when_its_supervisor_dies() {
    let host = supervised(vec![hello("1.0.0")]);
    let child = serving_pid(&host);
    kill(host.pid(), libc::SIGKILL);
    host.wait_log(WAIT, |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("graceful shutdown"))
    });
    eventually(WAIT, "serving process gone", async || {
        gone(child).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_that_overflows_its_stack_costs_a_restart_not_the_host() {
    let host = supervised(vec![
        hello("1.0.0"),
        module("fixture-faulty", &[("BATON_APP_VERSION", "1.0.0")]),
    ]);
    let first = serving_pid(&host);
    let crashed = Http::new()
        .send("GET", &host.url("/faulty/recurse?kib=1000000"), &[], "")
        .await;
    assert!(crashed.is_err(), "{crashed:?}");
    host.wait_log(WAIT, |l| {
        l["message"] == "serving process died; starting a new one" && l["code"] == 134
    });
    next_serving_pid(&host, first);
    for path in ["/hello/", "/faulty/"] {
        let reply = Http::new().get(&host.url(path)).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn systemd_socket_activation_passes_the_listeners() {
    // Two free ports, released again for systemd-socket-activate to bind.
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (http, admin) = (free(), free());
    let dir = tempfile::tempdir().unwrap();
    let modules = dir.path().join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    std::fs::copy(hello("1.0.0"), modules.join("libhello.so")).unwrap();
    let mut child = std::process::Command::new("systemd-socket-activate")
        .arg(format!("--listen={http}"))
        .arg(format!("--listen={admin}"))
        .arg("--fdname=http:admin")
        .arg(env!("CARGO_BIN_EXE_baton"))
        .arg("serve")
        .arg("--modules")
        .arg(&modules)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        // Addresses that would clash: the inherited sockets win.
        .args(["--listen", "127.0.0.1:1", "--admin", "127.0.0.1:2"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("systemd-socket-activate runs (Debian's systemd package; .ci/run installs it)");
    // Socket activation: the first connection starts the host; it waits in the backlog.
    let reply = eventually(WAIT, "hello through the activated socket", async || {
        Http::new()
            .send("GET", &format!("http://{http}/hello/"), &[], "")
            .await
            .ok()
    })
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let health = Http::new().get(&format!("http://{admin}/healthz")).await;
    assert_eq!(health.status, 200);
    let _ = child.kill();
    let _ = child.wait();
}
