//! The supervisor, end to end: `baton serve` as it runs by default (a supervising process that
//! owns the listeners and a serving process that inherits them), real signals, real crashes
//! and real HTTP under keep-alive load.

mod support;

use std::time::{Duration, Instant};

use support::http::Http;
use support::load::Load;
use support::{
    HostOptions, HostProc, Signal, eventually, get, hello, in_flight, kill, next_serving_pid,
    serving_pid,
};

const WAIT: Duration = Duration::from_secs(60);

fn supervised(modules: Vec<std::path::PathBuf>) -> HostProc {
    HostProc::start_with(HostOptions {
        modules,
        supervised: true,
        ..HostOptions::default()
    })
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
    kill(first, Signal::KILL);
    let second = next_serving_pid(&host, first);
    let back = eventually(WAIT, "served again", async || {
        let r = get(&host, "/hello/").await;
        (r.status == 200).then(|| killed.elapsed())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let samples = load.stop().await;
    let failed: Vec<&str> = samples
        .iter()
        .filter(|s| s.status != 200)
        .map(|s| s.version.as_str())
        .collect();
    println!(
        "kill -9 -> served again in {} ms; {} requests, {} failed: {failed:?}",
        back.as_millis(),
        samples.len(),
        failed.len(),
    );
    assert_ne!(second, first);
    assert!(samples.len() > failed.len());
    assert!(
        failed
            .iter()
            .all(|e| !e.contains("Connection refused") && !e.contains("ConnectError")),
        "no connection may be refused: {failed:?}"
    );
    assert!(
        failed.len() <= CONNECTIONS,
        "only the requests in flight in the dead process may fail: {failed:?}"
    );
    assert!(support::running(host.pid()), "the supervisor lives on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_to_the_supervisor_drains_the_serving_process_and_both_exit_0() {
    let mut host = supervised(vec![hello("1.0.0")]);
    let child = serving_pid(&host);
    let slow = in_flight(&host, "hello", "/hello/slow?ms=1500").await;
    host.signal(Signal::TERM);
    let reply = slow.await.unwrap().unwrap();
    assert_eq!(
        reply.status, 200,
        "the running request finishes: {}",
        reply.body
    );
    let status = host.wait_exit(WAIT);
    assert!(status.success(), "{status:?}");
    support::gone(child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_stop_signal_kills_the_serving_process_at_once() {
    let mut host = supervised(vec![hello("1.0.0")]);
    let child = serving_pid(&host);
    let slow = in_flight(&host, "hello", "/hello/slow?ms=20000").await;
    support::stop_twice(&mut host, 137, Duration::from_secs(15));
    assert!(
        slow.await.unwrap().is_err(),
        "the running request was cut off"
    );
    support::gone(child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_serving_process_drains_and_exits_when_its_supervisor_dies() {
    // The orphan is adopted by this test, as a service manager adopts the processes of its
    // services. The kernel's parent-death signal then comes once per supervisor thread: the
    // serving process must take them for one stop, not a forced second one.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).unwrap();
    let host = supervised(vec![hello("1.0.0")]);
    let child = serving_pid(&host);
    // Only a request the serving process has taken is its to finish.
    let slow = in_flight(&host, "hello", "/hello/slow?ms=1500").await;
    kill(host.pid(), Signal::KILL);
    // Its log went through the supervisor and is lost with it; the drain shows in the reply.
    let reply = slow.await.unwrap().unwrap();
    assert_eq!(
        reply.status, 200,
        "the running request finishes: {}",
        reply.body
    );
    support::gone(child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_that_overflows_its_stack_costs_a_restart_not_the_host() {
    let host = supervised(vec![hello("1.0.0"), support::faulty("faulty", "1.0.0", "")]);
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
        let reply = get(&host, path).await;
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
