//! Handlers that overrun their time and handlers that need deep stacks, end to end: a real
//! `baton` process serving the `faulty` fixture, whose `/spin?ms=N` keeps a worker thread busy
//! and whose `/recurse?kib=N` recurses through N KiB of stack.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::http::Http;
use support::{HostProc, eventually, get};

const WAIT: Duration = Duration::from_secs(60);

fn faulty(version: &str) -> std::path::PathBuf {
    support::faulty("faulty", version, "")
}

fn host(config: &str) -> HostProc {
    HostProc::start_with_config(&[faulty("1.0.0")], config)
}

/// The status entry of the newest version `v` of app `faulty`.
async fn version(host: &HostProc, v: &str) -> Value {
    try_version(host, v)
        .await
        .unwrap_or_else(|| panic!("no version {v} of faulty in /status"))
}

/// The status entry of the newest version `v` of app `faulty`, if it is there.
async fn try_version(host: &HostProc, v: &str) -> Option<Value> {
    let r = Http::new().get(&host.admin_url("/status")).await;
    assert_eq!(r.status, 200);
    let status = r.json();
    let app = status["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "faulty")?
        .clone();
    app["versions"]
        .as_array()?
        .iter()
        .rev()
        .find(|e| e["version"] == v)
        .cloned()
}

/// Starts `GET path` in the background.
fn spawn_get(host: &HostProc, path: &str) -> tokio::task::JoinHandle<support::http::Reply> {
    let url = host.url(path);
    tokio::spawn(async move { Http::new().get(&url).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stuck_handler_gets_a_504_is_reported_and_its_thread_is_replaced() {
    let host =
        host("[limits]\nworker_threads = 2\nrequest_timeout_ms = 2500\nmax_stuck_threads = 4\n");
    // Both workers spin far past the timeout.
    let stuck = [
        spawn_get(&host, "/faulty/spin?ms=9000"),
        spawn_get(&host, "/faulty/spin?ms=9000"),
    ];
    for reply in stuck {
        assert_eq!(reply.await.unwrap().status, 504);
    }

    let v1 = version(&host, "1.0.0").await;
    assert_eq!(v1["stuck"], 2, "{v1:#}");
    assert_eq!(v1["unhealthy"], false, "{v1:#}");
    assert_eq!(
        v1["worker_threads"], 4,
        "two threads started in place of the stuck ones"
    );
    let running = v1["running"].as_array().unwrap();
    assert_eq!(running.len(), 2, "{v1:#}");
    assert!(
        running
            .iter()
            .all(|r| r["stuck"] == true && r["path"] == "/spin" && r["method"] == "GET"),
        "{v1:#}"
    );
    let metrics = Http::new().get(&host.admin_url("/metrics")).await.body;
    assert!(
        metrics.contains(r#"baton_stuck_handlers{app="faulty",version="1.0.0"} 2"#),
        "{metrics}"
    );
    let line = host.wait_log(WAIT, |l| {
        l["message"] == "handler stuck past the request timeout; still running"
    });
    // The request's span names the request; the event says how long it ran.
    let request = &line["span"];
    assert_eq!(request["app"], "faulty", "{line}");
    assert_eq!(request["version"], "1.0.0", "{line}");
    assert_eq!(request["method"], "GET", "{line}");
    assert_eq!(request["path"], "/spin", "{line}");
    assert!(line["elapsed_ms"].as_u64().unwrap() >= 2500, "{line}");

    // Full capacity while they spin: two requests that each take 1.5 s both finish within the
    // 2.5 s timeout only if they run side by side, not one after the other.
    let side_by_side = [
        spawn_get(&host, "/faulty/spin?ms=1500"),
        spawn_get(&host, "/faulty/spin?ms=1500"),
    ];
    for reply in side_by_side {
        let reply = reply.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_eq!(version(&host, "1.0.0").await["stuck"], 2);

    // Once the stuck handlers return, the pool settles back to its size.
    eventually(WAIT, "stuck handlers returned", async || {
        let v1 = version(&host, "1.0.0").await;
        (v1["stuck"] == 0 && v1["worker_threads"] == 2).then_some(())
    })
    .await;
    // Logged on the handler's own worker thread, inside the request's span.
    let returned = host.wait_log(WAIT, |l| l["message"] == "stuck handler returned");
    assert_eq!(
        (
            returned["span"]["app"].as_str(),
            returned["span"]["path"].as_str()
        ),
        (Some("faulty"), Some("/spin")),
        "{returned}"
    );
    assert_eq!(get(&host, "/faulty/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_version_with_too_many_stuck_handlers_answers_503_until_they_return() {
    let host =
        host("[limits]\nworker_threads = 2\nrequest_timeout_ms = 1000\nmax_stuck_threads = 0\n");
    assert_eq!(get(&host, "/faulty/spin?ms=5000").await.status, 504);
    let v1 = version(&host, "1.0.0").await;
    assert_eq!(
        (v1["stuck"].as_u64(), v1["unhealthy"].as_bool()),
        (Some(1), Some(true))
    );
    assert_eq!(
        v1["worker_threads"], 2,
        "no replacement beyond max_stuck_threads"
    );
    let refused = get(&host, "/faulty/").await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.header("retry-after"), "1");
    assert!(refused.body.contains("stuck"), "{}", refused.body);
    eventually(WAIT, "healthy again", async || {
        (get(&host, "/faulty/").await.status == 200).then_some(())
    })
    .await;
    assert_eq!(version(&host, "1.0.0").await["unhealthy"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_version_with_a_stuck_handler_is_swapped_out_and_unmapped_once_it_returns() {
    // The guard window off: this test follows the old version's drain right after the switch.
    let host = host(&format!(
        "{}drain_timeout_secs = 1\n[limits]\nworker_threads = 2\nrequest_timeout_ms = 1000\n",
        support::GUARD_OFF
    ));
    assert_eq!(get(&host, "/faulty/spin?ms=6000").await.status, 504);
    let v1 = version(&host, "1.0.0").await;
    let copy = v1["copy"].as_str().unwrap().to_owned();
    host.drop_module(&faulty("2.0.0"), "libfaulty.so");
    eventually(WAIT, "v2 serving", async || {
        (get(&host, "/faulty/").await.version() == "faulty@2.0.0").then_some(())
    })
    .await;
    // Past the drain timeout, the old version says why it is still mapped.
    let draining = eventually(WAIT, "v1 past its drain timeout", async || {
        let v1 = version(&host, "1.0.0").await;
        v1["error"]
            .as_str()
            .is_some_and(|e| e.contains("1 stuck"))
            .then_some(v1)
    })
    .await;
    assert_eq!(draining["state"], "draining", "{draining:#}");
    assert!(!support::mapped(host.pid(), &copy).is_empty());
    eventually(WAIT, "v1 retired", async || {
        (version(&host, "1.0.0").await["state"] == "retired").then_some(())
    })
    .await;
    assert!(
        support::mapped(host.pid(), &copy).is_empty(),
        "v1 still mapped after its stuck handler returned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_warmup_hook_that_hangs_is_refused_and_holds_up_no_later_deploy() {
    let host = host("[apps.faulty]\nstart_timeout_ms = 500\n");
    let hanging = support::faulty("faulty", "2.0.0", "warmup-hang");
    host.drop_module(&hanging, "libfaulty.so");
    let v2 = eventually(WAIT, "v2 refused", async || {
        let v2 = try_version(&host, "2.0.0").await?;
        (v2["state"] == "failed").then_some(v2)
    })
    .await;
    let error = v2["error"].as_str().unwrap_or_default();
    assert!(error.contains("did not return within 500 ms"), "{v2:#}");
    let reply = get(&host, "/faulty/").await;
    assert_eq!((reply.status, reply.version()), (200, "faulty@1.0.0"));

    // The hook sleeps 10 s; the next version deploys meanwhile, while v2 is still mapped.
    let copy = v2["copy"].as_str().unwrap().to_owned();
    host.drop_module(&faulty("3.0.0"), "libfaulty.so");
    eventually(WAIT, "v3 serving", async || {
        (get(&host, "/faulty/").await.version() == "faulty@3.0.0").then_some(())
    })
    .await;
    assert!(
        !support::mapped(host.pid(), &copy).is_empty(),
        "v2's hook should still be running"
    );
    eventually(WAIT, "v2 unmapped once its hook returned", async || {
        support::mapped(host.pid(), &copy).is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_threads_have_room_for_deep_recursion() {
    // Rust gives spawned threads 2 MiB; workers get 8 MiB by default, and what is configured.
    let host = host("[apps.faulty.limits]\nworker_stack_mib = 64\n");
    for kib in [3 * 1024, 32 * 1024] {
        let reply = get(&host, &format!("/faulty/recurse?kib={kib}")).await;
        assert_eq!(reply.status, 200, "{kib} KiB: {}", reply.body);
    }
    let host = self::host("");
    let reply = get(&host, "/faulty/recurse?kib=3072").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stack_overflow_in_a_handler_ends_the_process_and_a_restart_serves_again() {
    // What the README says the host cannot survive: no in-process host can turn it into a 500.
    let mut host = host("");
    let reply = Http::new()
        .send("GET", &host.url("/faulty/recurse?kib=1000000"), &[], "")
        .await;
    assert!(reply.is_err(), "the request cannot be answered: {reply:?}");
    let status = host.wait_exit(WAIT);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
    host.wait_log(WAIT, |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.contains("has overflowed its stack"))
    });
    // Restarted as a supervisor would, it serves the same version from its state.
    let host = host.relaunch();
    let reply = get(&host, "/faulty/").await;
    assert_eq!((reply.status, reply.version()), (200, "faulty@1.0.0"));
}
