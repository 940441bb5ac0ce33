//! Upgrading the `baton` binary under load: the supervisor starts a new serving process from
//! the binary now on disk, the old one hands over (its in-memory sessions included) and exits,
//! and the supervisor re-executes the new binary itself; real processes, real signals, real HTTP.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::http::Http;
use support::jar::Jar;
use support::load::{Load, assert_served};
use support::{
    HostOptions, HostProc, Signal, baton, baton_binary, counter, eventually, get, hello, status,
};

const WAIT: Duration = Duration::from_secs(120);

/// A supervised host started from a copy of this build's binary, which the test can replace.
fn host_from_copy() -> (HostProc, PathBuf, tempfile::TempDir) {
    let bin = tempfile::tempdir().unwrap();
    let binary = bin.path().join("baton");
    std::fs::copy(env!("CARGO_BIN_EXE_baton"), &binary).unwrap();
    let host = HostProc::start_with(HostOptions {
        modules: vec![hello("1.0.0"), counter("1.0.0")],
        supervised: true,
        binary: Some(binary.clone()),
        ..HostOptions::default()
    });
    (host, binary, bin)
}

/// Puts `new` where `binary` is, the way a package upgrade does: a new file renamed over it.
fn replace_binary(binary: &std::path::Path, new: &std::path::Path) {
    let tmp = binary.with_extension("new");
    std::fs::copy(new, &tmp).unwrap();
    std::fs::rename(&tmp, binary).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn baton_upgrade_under_load_fails_nothing_and_keeps_memory_sessions() {
    let upgraded = baton_binary("9.9.9-upgraded");
    let (host, binary, _bin) = host_from_copy();
    let before = status(&host).await;
    let old_pid = before["host"]["pid"].as_u64().unwrap();
    assert_eq!(before["host"]["supervised"], true);
    assert_ne!(before["host"]["version"], "9.9.9-upgraded");

    // Sessions in memory: each client has counted to 3.
    let clients: Vec<Jar> = (0..4).map(|_| Jar::new("BATON_SESSION")).collect();
    for jar in &clients {
        for n in 1..=3 {
            let reply = jar.get(&host.url("/counter/")).await;
            assert_eq!(reply.body.trim(), format!("count {n}"));
        }
    }

    let load = Load::start(host.url("/hello/"), 8);
    tokio::time::sleep(Duration::from_millis(500)).await;
    replace_binary(&binary, &upgraded);
    let admin = host.admin.to_string();
    let run = baton(&["upgrade", "--admin", &admin], &[]).await;
    assert!(run.ok, "{run:?}");
    assert!(run.stdout.contains("upgraded: serving process"), "{run:?}");
    assert!(run.stdout.contains("9.9.9-upgraded"), "{run:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let samples = load.stop().await;
    assert_served(&samples, 100);

    let after = status(&host).await;
    assert_eq!(after["host"]["version"], "9.9.9-upgraded", "{after:#}");
    assert_ne!(after["host"]["pid"].as_u64(), Some(old_pid));
    assert!(
        !support::running(old_pid as u32),
        "the old serving process is gone"
    );
    // Every client's session came along.
    for jar in &clients {
        let reply = jar.get(&host.url("/counter/")).await;
        assert_eq!(reply.body.trim(), "count 4", "a session was lost");
    }
    // The supervisor (same pid) re-executed the new binary too.
    let exe = std::fs::read_link(format!("/proc/{}/exe", host.pid())).unwrap();
    assert_eq!(
        exe, binary,
        "the supervisor runs the file now at the binary's path"
    );
    host.wait_log(WAIT, |l| {
        l["message"] == "supervisor started" && l["version"] == "9.9.9-upgraded"
    });
    // And still supervises: a crash of the new serving process is restarted.
    let new_pid = after["host"]["pid"].as_u64().unwrap();
    support::kill(new_pid as u32, Signal::KILL);
    eventually(WAIT, "a third serving process", async || {
        let s = Http::new()
            .send("GET", &host.admin_url("/status"), &[], "")
            .await
            .ok()?;
        let pid = s.json()["host"]["pid"].as_u64()?;
        (pid != new_pid && pid != old_pid).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_to_a_binary_that_cannot_start_keeps_the_old_one_serving() {
    let (host, binary, bin) = host_from_copy();
    let old_pid = status(&host).await["host"]["pid"].as_u64().unwrap();
    let broken = bin.path().join("broken");
    std::fs::write(&broken, "#!/bin/sh\nexit 3\n").unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    replace_binary(&binary, &broken);
    host.signal(Signal::USR2);
    host.wait_log(WAIT, |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("upgrade failed"))
    });
    let reply = get(&host, "/hello/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(status(&host).await["host"]["pid"].as_u64(), Some(old_pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_supervisor_an_upgrade_is_refused() {
    let host = HostProc::start(&[hello("1.0.0")]);
    let admin = host.admin.to_string();
    let run = baton(&["upgrade", "--admin", &admin], &[]).await;
    assert!(!run.ok, "{run:?}");
    assert!(run.stderr.contains("without a supervisor"), "{run:?}");
    // SIGUSR2 to an unsupervised host is ignored: it keeps serving.
    host.signal(Signal::USR2);
    host.wait_log(WAIT, |l| {
        l["message"] == "SIGUSR2 ignored: only a supervised host hands over"
    });
    assert_eq!(get(&host, "/hello/").await.status, 200);
}

/// One HTTP/1.1 request on a raw keep-alive connection; returns the response head (lowercased)
/// once the whole response is read.
async fn exchange(stream: &mut tokio::net::TcpStream, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed before the response");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed in the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    head
}

/// Whether the peer closes `stream` within `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn during_a_hand_over_keep_alive_clients_reconnect_and_the_host_stays_ready() {
    let host = HostProc::start_with(HostOptions {
        modules: vec![hello("1.0.0")],
        supervised: true,
        ..HostOptions::default()
    });
    let mut talking = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    let mut idle = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    for stream in [&mut talking, &mut idle] {
        let head = exchange(stream, "/hello/").await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
    }
    let readyz = {
        let url = host.admin_url("/readyz");
        tokio::spawn(async move {
            let mut answers = Vec::new();
            let started = std::time::Instant::now();
            while started.elapsed() < Duration::from_secs(8) {
                let reply = Http::new().send("GET", &url, &[], "").await;
                answers.push(reply.map(|r| r.status).unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answers
        })
    };

    host.signal(Signal::USR2);
    host.wait_log(WAIT, |l| {
        l["message"] == "handing over to the new serving process"
    });
    // A request on a kept-alive connection of the old process is answered, then closed.
    let head = exchange(&mut talking, "/hello/").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(closed_within(&mut talking, Duration::from_secs(5)).await);
    // An idle one is closed after the linger.
    assert!(closed_within(&mut idle, Duration::from_secs(10)).await);
    host.wait_log(WAIT, |l| {
        l["message"] == "previous serving process finished its hand-over"
    });
    let answers = readyz.await.unwrap();
    assert!(
        answers.iter().all(|&status| status == 200),
        "/readyz must stay ready during an upgrade: {answers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signal_while_the_supervisor_re_executes_itself_does_not_end_it() {
    let mut host = HostProc::start_with(HostOptions {
        modules: vec![hello("1.0.0")],
        supervised: true,
        ..HostOptions::default()
    });
    host.signal(Signal::USR2);
    host.wait_log(WAIT, |l| {
        l["message"] == "previous serving process finished its hand-over"
    });
    // Right now the supervisor re-executes itself: SIGUSR2's default action would end it.
    host.signal(Signal::USR2);
    host.wait_log(WAIT, |l| {
        l["message"] == "watching the serving process again"
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(support::running(host.pid()), "the supervisor lives on");
    assert_eq!(get(&host, "/hello/").await.status, 200);
    host.signal(Signal::TERM);
    assert!(host.wait_exit(WAIT).success());
}

/// The old serving process of an upgrade gives up on a shutdown hook that never returns, as a
/// stopped host does: the upgrade completes, the new process serves.
#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_completes_when_an_old_shutdown_hook_never_returns() {
    let host = HostProc::start_with(HostOptions {
        modules: vec![support::faulty("stubborn", "1.0.0", "shutdown-hang")],
        config: "drain_timeout_secs = 1\n".to_owned(),
        supervised: true,
        ..HostOptions::default()
    });
    assert_eq!(get(&host, "/stubborn/").await.status, 200);
    let old = status(&host).await["host"]["pid"].as_u64().unwrap();
    let admin = host.admin.to_string();
    let run = baton(
        &["upgrade", "--admin", &admin, "--timeout-secs", "120"],
        &[],
    )
    .await;
    assert!(run.ok, "{run:?}");
    assert_ne!(status(&host).await["host"]["pid"].as_u64(), Some(old));
    assert_eq!(get(&host, "/stubborn/").await.status, 200);
    host.wait_log(WAIT, |l| {
        l["level"] == "ERROR"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("still stopping"))
    });
}
