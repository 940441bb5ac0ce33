//! Crash restart with quarantine, end to end: `baton serve` under its supervisor, modules that
//! really overflow their stack, real `kill -9`, real HTTP, the real `baton quarantine` command.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use support::http::{Http, Reply};
use support::{
    GUARD_OFF, HostOptions, HostProc, Signal, baton, counter, eventually, get, hello, kill,
    next_serving_pid, serving_pid, status,
};

const WAIT: Duration = Duration::from_secs(60);

fn supervised(modules: Vec<PathBuf>, config: &str) -> HostProc {
    HostProc::start_with(HostOptions {
        modules,
        config: config.to_owned(),
        supervised: true,
        ..HostOptions::default()
    })
}

/// `faulty` built to pose as `app` at `version` (it has `/recurse?kib=N`).
fn faulty_as(app: &str, version: &str) -> PathBuf {
    support::faulty(app, version, "")
}

/// Waits until `path` answers 200 from `version` (`app@version`).
async fn serves(host: &HostProc, path: &str, version: &str) -> Reply {
    eventually(WAIT, &format!("{path} served by {version}"), async || {
        let r = get(host, path).await;
        (r.status == 200 && r.version() == version).then_some(r)
    })
    .await
}

/// Sends a request that overflows a worker's stack, and waits for the next serving process.
async fn crash_by_overflow(host: &HostProc, app: &str) -> u32 {
    let pid = serving_pid(host);
    let crashed = Http::new()
        .send(
            "GET",
            &host.url(&format!("/{app}/recurse?kib=1000000")),
            &[],
            "",
        )
        .await;
    assert!(
        crashed.is_err(),
        "the request dies with the process: {crashed:?}"
    );
    next_serving_pid(host, pid)
}

fn quarantine(status: &Value) -> Vec<Value> {
    status["quarantine"].as_array().cloned().unwrap_or_default()
}

fn named(entry: &Value) -> String {
    format!(
        "{}@{}",
        entry["app"].as_str().unwrap(),
        entry["version"].as_str().unwrap()
    )
}

/// The host's quarantine list, asserted to name exactly `expected` (`app@version`).
async fn quarantined(host: &HostProc, expected: &[&str]) -> Vec<Value> {
    let doc = status(host).await;
    let entries = quarantine(&doc);
    assert_eq!(
        entries.iter().map(named).collect::<Vec<_>>(),
        expected,
        "{doc:#}"
    );
    entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_version_that_crashes_the_host_twice_is_quarantined_and_the_previous_one_serves() {
    let host = supervised(vec![hello("1.0.0"), counter("1.0.0")], "");
    serves(&host, "/hello/", "hello@1.0.0").await;
    // v2 replaces v1's file: only the host's store can bring v1 back.
    let v1_file = std::fs::read_dir(host.modules_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("00-"))
        .unwrap();
    let v2 = faulty_as("hello", "2.0.0");
    host.drop_module(&v2, &v1_file);
    serves(&host, "/hello/", "hello@2.0.0").await;
    guarding(&host, "2.0.0").await;

    // First crash: blamed on hello 2.0.0 by its thread's name; it comes back (in a new guard
    // window over 1.0.0), and so do the other apps.
    crash_by_overflow(&host, "hello").await;
    let blamed = host.wait_log(WAIT, |l| l["message"] == "version blamed for the crash");
    assert_eq!(
        (blamed["app"].as_str(), blamed["version"].as_str()),
        (Some("hello"), Some("2.0.0"))
    );
    assert_eq!(blamed["crashes"], 1);
    assert_eq!(blamed["rule"], "thread");
    serves(&host, "/hello/", "hello@2.0.0").await;
    serves(&host, "/counter/", "counter@1.0.0").await;
    let hello_status = support::app(&status(&host).await, "hello").clone();
    assert!(
        hello_status["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["version"] == "1.0.0" && v["state"] == "standby"),
        "the previous version is the fallback again: {hello_status:#}"
    );

    // Second crash: quarantined.
    let pid = crash_by_overflow(&host, "hello").await;
    let verdict = host.wait_log(WAIT, |l| {
        l["message"]
            == "version quarantined: it crashed the serving process; the next one will not load it"
    });
    assert_eq!(
        (verdict["app"].as_str(), verdict["version"].as_str()),
        (Some("hello"), Some("2.0.0"))
    );
    assert_eq!(verdict["crashes"], 2);
    assert_eq!(verdict["code"], 134, "SIGABRT: {verdict}");
    let clue = verdict["clue"].as_str().unwrap();
    assert!(
        clue.starts_with("thread 'baton-hello'") && clue.ends_with("has overflowed its stack"),
        "{clue}"
    );
    // The new serving process says so at its start, then serves 1.0.0 from its kept copy.
    host.wait_log(WAIT, |l| {
        l["message"] == "quarantined: this version crashed the serving process; it is not loaded"
            && l["app"] == "hello"
            && l["version"] == "2.0.0"
    });
    assert_eq!(serving_pid(&host), pid);
    let reply = serves(&host, "/hello/", "hello@1.0.0").await;
    assert!(reply.body.contains("hello@1.0.0"), "{}", reply.body);
    serves(&host, "/counter/", "counter@1.0.0").await;

    let entries = quarantined(&host, &["hello@2.0.0"]).await;
    let how = &entries[0]["how"];
    assert_eq!(entries[0]["crashes"], 2);
    assert_eq!(how["signal"], 6, "{how:#}");
    assert_eq!(how["rule"], "thread");
    assert!(
        how["last_lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("overflowed its stack")),
        "{how:#}"
    );
    let metrics = get_admin(&host, "/metrics").await;
    assert!(
        metrics.contains(r#"baton_quarantined_versions{app="hello",version="2.0.0"} 1"#),
        "{metrics}"
    );

    // Not from an upload either, until the quarantine is cleared.
    let bytes = std::fs::read(&v2).unwrap();
    let refused =
        support::admin_call(&host, "", "POST", "/apps?name=libhello.so", bytes.clone()).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(refused.body.contains("quarantined"), "{}", refused.body);

    let admin = host.admin.to_string();
    let listed = baton(&["quarantine", "list", "--admin", &admin], &[]).await;
    assert!(listed.ok, "{listed:?}");
    assert!(listed.stdout.contains("hello@2.0.0"), "{}", listed.stdout);
    assert!(
        listed.stdout.contains("overflowed its stack"),
        "{}",
        listed.stdout
    );
    let cleared = baton(
        &["quarantine", "clear", "hello", "2.0.0", "--admin", &admin],
        &[],
    )
    .await;
    assert!(cleared.ok, "{cleared:?}");
    assert!(quarantine(&status(&host).await).is_empty());
    let again = baton(
        &["quarantine", "clear", "hello", "2.0.0", "--admin", &admin],
        &[],
    )
    .await;
    assert!(
        !again.ok && again.stderr.contains("not quarantined"),
        "{again:?}"
    );
    let metrics = get_admin(&host, "/metrics").await;
    assert!(
        !metrics.contains(r#"baton_quarantined_versions{app="hello""#),
        "{metrics}"
    );

    let deployed = support::admin_call(&host, "", "POST", "/apps?name=libhello.so", bytes).await;
    assert_eq!(deployed.status, 200, "{}", deployed.body);
    serves(&host, "/hello/", "hello@2.0.0").await;
}

async fn get_admin(host: &HostProc, path: &str) -> String {
    let r = Http::new().get(&host.admin_url(path)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_innocent_app_beside_the_crashing_one_is_not_quarantined() {
    // No guard windows: nothing changed recently, so without the thread's name every live
    // version would be blamed.
    let host = supervised(
        vec![faulty_as("faulty", "1.0.0"), hello("1.0.0")],
        GUARD_OFF,
    );
    crash_by_overflow(&host, "faulty").await;
    serves(&host, "/faulty/", "faulty@1.0.0").await;
    crash_by_overflow(&host, "faulty").await;
    host.wait_log(WAIT, |l| {
        l["message"] == "quarantined: this version crashed the serving process; it is not loaded"
    });
    serves(&host, "/hello/", "hello@1.0.0").await;
    quarantined(&host, &["faulty@1.0.0"]).await;
    // No previous version of it is kept: it is not served.
    assert_eq!(get(&host, "/faulty/").await.status, 404);
    assert!(
        !host
            .log_lines()
            .iter()
            .any(|l| l["message"] == "version blamed for the crash" && l["app"] == "hello"),
        "hello was never blamed"
    );
}

/// Waits until `hello`'s last swap, to `version`, has its guard window open: the state is saved
/// by then (a crash between the switch and the save restores the version before).
async fn guarding(host: &HostProc, version: &str) {
    eventually(WAIT, "a guard window open", async || {
        let doc = status(host).await;
        let swap = &support::app(&doc, "hello")["last_swap"];
        (swap["to"] == version && swap["guard"]["state"] == "watching").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_twice_during_a_guard_window_quarantines_only_the_new_version() {
    let host = supervised(
        vec![hello("1.0.0"), counter("1.0.0")],
        "guard = { window_secs = 600 }\n",
    );
    serves(&host, "/hello/", "hello@1.0.0").await;
    host.drop_module(&hello("2.0.0"), "libhello-2.so");
    serves(&host, "/hello/", "hello@2.0.0").await;
    guarding(&host, "2.0.0").await;

    for round in 1..=2 {
        let pid = serving_pid(&host);
        kill(pid, Signal::KILL);
        next_serving_pid(&host, pid);
        serves(&host, "/counter/", "counter@1.0.0").await;
        if round == 1 {
            // Still under trial: back in a new window over 1.0.0.
            serves(&host, "/hello/", "hello@2.0.0").await;
            guarding(&host, "2.0.0").await;
            assert!(quarantine(&status(&host).await).is_empty());
        }
    }
    host.wait_log(WAIT, |l| {
        l["message"] == "quarantined: this version crashed the serving process; it is not loaded"
    });
    serves(&host, "/hello/", "hello@1.0.0").await;
    let entries = quarantined(&host, &["hello@2.0.0"]).await;
    assert_eq!(entries[0]["how"]["signal"], 9);
    assert_eq!(entries[0]["how"]["rule"], "recent");
    assert!(entries[0]["how"]["clue"].is_null());
}
