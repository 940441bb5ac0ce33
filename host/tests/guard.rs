//! The guard window after a switch, end to end: real `baton` processes, real module files, real
//! HTTP under keep-alive load. A new version that fails (5xx) or slows down is switched back to
//! the previous one automatically, which is still loaded; a healthy one keeps serving and the
//! previous version retires when the window ends; operator actions during a window stay
//! correct; `baton deploy` reports a rollback.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::http::Http;
use support::load::{Load, Sample, assert_no_failures, assert_no_failures_but_from};
use support::{HostOptions, HostProc, baton, eventually, get, hello, mapped, version as entry};

const WAIT: Duration = Duration::from_secs(60);

async fn app_status(host: &HostProc) -> Value {
    let r = Http::new().get(&host.admin_url("/apps/hello")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// Waits until the newest `version` of hello is in `state`; returns the app's status.
async fn in_state(host: &HostProc, version: &str, state: &str) -> Value {
    eventually(WAIT, &format!("hello {version} {state}"), async || {
        let a = app_status(host).await;
        (entry(&a, version)["state"] == state).then_some(a)
    })
    .await
}

/// `hello` 2.0.0 as the faulty fixture with `fault` (see its docs).
fn bad_v2(fault: &str) -> PathBuf {
    support::faulty("hello", "2.0.0", fault)
}

fn guarded(window_secs: u64) -> HostOptions {
    HostOptions {
        modules: vec![hello("1.0.0")],
        config: format!("[guard]\nwindow_secs = {window_secs}\n"),
        ..HostOptions::default()
    }
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

async fn metrics(host: &HostProc) -> String {
    Http::new().get(&host.admin_url("/metrics")).await.body
}

/// What [`rolled_back_under_load`] saw.
struct RolledBack {
    /// The app's status once the rollback showed.
    app: Value,
    samples: Vec<Sample>,
    v1_id: u64,
    /// When the rollback showed in the status.
    seen: Instant,
}

/// Deploys a bad v2 under load over a good v1 and waits for the rollback.
async fn rolled_back_under_load(host: &HostProc, bad: &std::path::Path) -> RolledBack {
    let load = Load::start(host.url("/hello/"), 16);
    // A baseline of v1's own traffic before the switch.
    eventually(WAIT, "a baseline on v1", async || {
        let a = app_status(host).await;
        (entry(&a, "1.0.0")["served"].as_u64() >= Some(500)).then_some(())
    })
    .await;
    let v1_id = entry(&app_status(host).await, "1.0.0")["id"]
        .as_u64()
        .unwrap();
    host.drop_module(bad, "00-hello.so");
    let a = eventually(WAIT, "the rollback", async || {
        let a = app_status(host).await;
        a["last_swap"]["rolled_back"].is_object().then_some(a)
    })
    .await;
    let seen = Instant::now();
    // Keep the load on a little longer: v1 serves it again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    RolledBack {
        app: a,
        samples: load.stop().await,
        v1_id,
        seen,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_v2_failing_half_its_requests_is_rolled_back_under_load() {
    let host = HostProc::start_with(guarded(30));
    let RolledBack {
        app: a,
        samples,
        v1_id,
        seen: rollback_seen,
    } = rolled_back_under_load(&host, &bad_v2("errors-half")).await;

    // No request failed except the 500s the bad version gave itself, and it did give some.
    assert_no_failures_but_from(&samples, "hello@2.0.0");
    assert!(
        samples
            .iter()
            .any(|s| s.status == 500 && s.version == "hello@2.0.0")
    );
    let last: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.started > rollback_seen)
        .collect();
    assert!(
        !last.is_empty() && last.iter().all(|s| s.version == "hello@1.0.0"),
        "after the rollback v1 serves everything: {:?}\n{:#?}",
        last.iter().find(|s| s.version != "hello@1.0.0"),
        host.log_lines()
            .iter()
            .filter(|l| l["target"] != "baton::access")
            .collect::<Vec<_>>()
    );

    // The record says why, with the figures, within the window.
    let swap = &a["last_swap"];
    assert_eq!(
        (swap["from"].as_str(), swap["to"].as_str()),
        (Some("1.0.0"), Some("2.0.0"))
    );
    let back = &swap["rolled_back"];
    assert_eq!(back["cause"], "errors", "{swap:#}");
    assert!(
        back["reason"].as_str().unwrap().contains("5xx ratio"),
        "{back}"
    );
    assert!(back["after_switch_ms"].as_u64().unwrap() < 30_000, "{back}");
    assert!(back["new"]["requests"].as_u64().unwrap() >= 100, "{back}");
    assert!(back["new"]["error_ratio"].as_f64().unwrap() > 0.3, "{back}");
    assert!(
        back["baseline"]["requests"].as_u64().unwrap() >= 100,
        "{back}"
    );
    assert_eq!(back["baseline"]["errors_5xx"], 0, "{back}");
    assert!(back["at_unix_ms"].is_u64());
    assert_eq!(swap["guard"]["state"], "rolled_back");

    // The very same v1 (still loaded and warm) is active again.
    assert_eq!(a["active"], "1.0.0");
    assert_eq!(entry(&a, "1.0.0")["id"].as_u64(), Some(v1_id));
    let r = get(&host, "/hello/").await;
    assert_eq!((r.status, r.version()), (200, "hello@1.0.0"));

    // v2 drains, retires, is unmapped and its copy is gone (no `baton rollback` to it).
    let a = in_state(&host, "2.0.0", "retired").await;
    let v2 = entry(&a, "2.0.0");
    let copy = v2["copy"].as_str().unwrap();
    assert!(mapped(host.pid(), copy).is_empty(), "v2 still mapped");
    assert!(!std::path::Path::new(copy).exists(), "v2's copy is kept");
    assert_eq!(v2["stored"], false);

    // The log and the metric say so; the host state names v1.
    let line = host.wait_log(WAIT, |l| l["message"] == "rolled back");
    assert_eq!(
        (
            line["app"].as_str(),
            line["version"].as_str(),
            line["active"].as_str()
        ),
        (Some("hello"), Some("2.0.0"), Some("1.0.0"))
    );
    assert!(
        line["reason"].as_str().unwrap().contains("5xx ratio"),
        "{line}"
    );
    let m = metrics(&host).await;
    assert_eq!(
        metric(&m, r#"baton_rollbacks_total{app="hello",cause="errors"}"#),
        Some(1.0),
        "{m}"
    );
    let state = host.dir.path().join("state").join("state.json");
    let saved: Value = serde_json::from_slice(&std::fs::read(state).unwrap()).unwrap();
    assert_eq!(
        saved["apps"]["hello"]["active"]["version"], "1.0.0",
        "{saved}"
    );

    // The dashboard shows the rollback and why.
    let page = host.admin_url("/");
    let dom = support::chromium_dom(&page, 2500).await;
    let at = dom
        .find(r#"data-rolled-back="2.0.0""#)
        .unwrap_or_else(|| panic!("no rollback on the dashboard:\n{dom}"));
    let shown = &dom[at..dom[at..].find("</p>").map_or(dom.len(), |e| at + e)];
    assert!(shown.contains("rolled back 2.0.0 → 1.0.0"), "{shown}");
    assert!(shown.contains("5xx ratio"), "{shown}");

    // The bad bytes are not deployed again from the modules directory (the file is still
    // there); an upload tries them again.
    host.drop_module(&bad_v2("errors-half"), "00-hello.so");
    host.wait_log(WAIT, |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("these module bytes were rolled back"))
    });
    assert_eq!(app_status(&host).await["active"], "1.0.0");
    let bytes = std::fs::read(bad_v2("errors-half")).unwrap();
    let r = Http::new()
        .send(
            "POST",
            &host.admin_url("/apps?name=libhello.so"),
            &[],
            bytes,
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()["version"].as_str()),
        (200, Some("2.0.0")),
        "{}",
        r.body
    );
    assert_eq!(app_status(&host).await["active"], "2.0.0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_v2_is_rolled_back_on_latency() {
    let host = HostProc::start_with(guarded(30));
    let RolledBack {
        app: a, samples, ..
    } = rolled_back_under_load(&host, &bad_v2("slow")).await;
    assert_no_failures(&samples);
    let back = &a["last_swap"]["rolled_back"];
    assert_eq!(back["cause"], "latency", "{back:#}");
    assert!(
        back["reason"].as_str().unwrap().contains("p90 latency"),
        "{back}"
    );
    assert!(back["new"]["p90_ms"].as_f64().unwrap() >= 250.0, "{back}");
    assert_eq!(a["active"], "1.0.0");
    in_state(&host, "2.0.0", "retired").await;
    let m = metrics(&host).await;
    assert_eq!(
        metric(&m, r#"baton_rollbacks_total{app="hello",cause="latency"}"#),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_v2_is_kept_and_v1_retires_after_the_window() {
    let host = HostProc::start_with(guarded(3));
    let load = Load::start(host.url("/hello/"), 8);
    eventually(WAIT, "traffic on v1", async || {
        let a = app_status(&host).await;
        (entry(&a, "1.0.0")["served"].as_u64() >= Some(200)).then_some(())
    })
    .await;
    host.drop_module(&hello("2.0.0"), "00-hello.so");
    // The swap's record follows the switch itself by a moment.
    let a = eventually(WAIT, "v2 active", async || {
        let a = app_status(&host).await;
        (a["active"] == "2.0.0" && a["last_swap"]["to"] == "2.0.0").then_some(a)
    })
    .await;
    // During the window v1 waits in standby, loaded, taking nothing new.
    let v1 = entry(&a, "1.0.0");
    assert_eq!(
        (v1["state"].as_str(), v1["weight"].as_u64()),
        (Some("standby"), Some(0))
    );
    assert_eq!(a["last_swap"]["guard"]["state"], "watching", "{a:#}");
    assert_eq!(a["last_swap"]["guard"]["window_ms"], 3000);
    let v1_copy = v1["copy"].as_str().unwrap().to_owned();
    assert!(
        !mapped(host.pid(), &v1_copy).is_empty(),
        "v1 unloaded during the window"
    );
    // Once the requests it had finished, its count stays put.
    let served = eventually(WAIT, "v1's own requests finished", async || {
        let a = app_status(&host).await;
        let v1 = entry(&a, "1.0.0");
        (v1["in_flight"] == 0).then(|| v1["served"].as_u64().unwrap())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = app_status(&host).await;
    assert_eq!(
        entry(&a, "1.0.0")["served"].as_u64(),
        Some(served),
        "v1 took new requests"
    );

    // After the window: v1 retires and is unmapped; v2 stays. The swap's record of the
    // retirement follows the version's state by a moment.
    in_state(&host, "1.0.0", "retired").await;
    let a = eventually(WAIT, "the retirement recorded", async || {
        let a = app_status(&host).await;
        a["last_swap"]["retired_ms"].is_u64().then_some(a)
    })
    .await;
    let samples = load.stop().await;
    assert_no_failures(&samples);
    let swap = &a["last_swap"];
    assert_eq!(a["active"], "2.0.0");
    assert_eq!(swap["guard"]["state"], "passed", "{swap:#}");
    assert!(swap["rolled_back"].is_null(), "{swap:#}");
    let window = swap["retired_ms"].as_u64().unwrap() - swap["switched_ms"].as_u64().unwrap();
    assert!(window >= 3000, "v1 retired {window} ms after the switch");
    let drained = swap["drained_ms"].as_u64().expect("drain recorded");
    assert!(drained <= swap["retired_ms"].as_u64().unwrap(), "{swap:#}");
    assert!(
        swap["guard"]["new"]["requests"].as_u64().unwrap() > 0,
        "{swap:#}"
    );
    assert!(mapped(host.pid(), &v1_copy).is_empty(), "v1 still mapped");
    let m = metrics(&host).await;
    assert!(!m.contains("baton_rollbacks_total{"), "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn baton_deploy_reports_a_rollback_and_exits_non_zero() {
    let host = HostProc::start_with(guarded(30));
    let addr = host.admin.to_string();
    let env = [("BATON_ADMIN", addr.as_str())];
    let load = Load::start(host.url("/hello/"), 8);
    eventually(WAIT, "a baseline on v1", async || {
        let a = app_status(&host).await;
        (entry(&a, "1.0.0")["served"].as_u64() >= Some(300)).then_some(())
    })
    .await;
    let bad = bad_v2("errors-half");
    let run = baton(&["deploy", bad.to_str().unwrap()], &env).await;
    assert!(!run.ok && run.code == Some(1), "{run:?}");
    assert!(
        run.stdout.contains("active   hello 2.0.0 (replaced 1.0.0)"),
        "{run:?}"
    );
    assert!(
        run.stdout.contains("rolled back hello 2.0.0 -> 1.0.0"),
        "{run:?}"
    );
    assert!(
        run.stderr.contains("rolled back to 1.0.0") && run.stderr.contains("5xx ratio"),
        "{run:?}"
    );
    let run = baton(&["status"], &env).await;
    assert!(run.stdout.contains("rolled back 2.0.0 -> 1.0.0"), "{run:?}");

    // `--no-wait` returns once the new version is active, the window still open.
    let run = baton(
        &["deploy", "--no-wait", hello("2.0.0").to_str().unwrap()],
        &env,
    )
    .await;
    assert!(run.ok, "{run:?}");
    assert!(run.stdout.contains("not waiting"), "{run:?}");
    let a = app_status(&host).await;
    assert_eq!(a["active"], "2.0.0");
    assert_eq!(entry(&a, "1.0.0")["state"], "standby", "{a:#}");
    assert_no_failures_but_from(&load.stop().await, "hello@2.0.0");
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_actions_during_a_window_stay_correct() {
    let (v1, v2, v3) = (hello("1.0.0"), hello("2.0.0"), hello("3.0.0"));
    let host = HostProc::start_with(guarded(600));
    let http = Http::new();

    // A newer deploy during a window: the oldest version goes at once, one fallback is kept.
    host.drop_module(&v2, "00-hello.so");
    in_state(&host, "1.0.0", "standby").await;
    host.drop_module(&v3, "00-hello.so");
    let a = in_state(&host, "1.0.0", "retired").await;
    assert_eq!(a["active"], "3.0.0");
    assert_eq!(entry(&a, "2.0.0")["state"], "standby");
    let v2_id = entry(&a, "2.0.0")["id"].as_u64();
    assert_eq!(a["last_swap"]["from"], "2.0.0");

    // The operator's rollback during a window switches back to the loaded fallback.
    let r = http
        .send("POST", &host.admin_url("/apps/hello/rollback"), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.json()["version"].as_str(), r.json()["replaced"].as_str()),
        (Some("2.0.0"), Some("3.0.0"))
    );
    assert_eq!(
        http.get(&host.url("/hello/")).await.version(),
        "hello@2.0.0"
    );
    let a = in_state(&host, "3.0.0", "retired").await;
    assert_eq!(
        entry(&a, "2.0.0")["id"].as_u64(),
        v2_id,
        "the same, warm 2.0.0"
    );
    assert_eq!(a["last_swap"]["rolled_back"]["cause"], "operator");
    let m = metrics(&host).await;
    assert!(
        !m.contains("baton_rollbacks_total{"),
        "only automatic rollbacks count: {m}"
    );

    // A restart does not bring the rolled-back version back, though its file is in the
    // modules directory.
    let host = host.restart();
    let a = app_status(&host).await;
    assert_eq!(a["active"], "2.0.0", "{a:#}");

    // Shutdown during a window: the active version is restored, the fallback is not loaded
    // (only its copy is kept, as the previous version a quarantine would fall back to).
    host.drop_module(&v1, "00-hello.so");
    in_state(&host, "2.0.0", "standby").await;
    let host = host.restart();
    let a = app_status(&host).await;
    assert_eq!(a["active"], "1.0.0", "{a:#}");
    assert_eq!(a["versions"].as_array().unwrap().len(), 1, "{a:#}");
    assert!(
        a["last_swap"]["guard"].is_null(),
        "no window reopened: {a:#}"
    );
    let store = std::fs::read_dir(host.dir.path().join("state").join("store"))
        .unwrap()
        .count();
    assert_eq!(
        store, 2,
        "the active version's copy and the previous one's are kept"
    );

    // A canary during a window ends it: the fallback retires.
    host.drop_module(&v3, "00-hello.so");
    in_state(&host, "1.0.0", "standby").await;
    let bytes = std::fs::read(&v2).unwrap();
    let r = http
        .send(
            "POST",
            &host.admin_url("/apps?name=libhello.so&canary=10"),
            &[],
            bytes,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let a = in_state(&host, "1.0.0", "retired").await;
    assert_eq!(
        (a["active"].as_str(), a["canary"]["version"].as_str()),
        (Some("3.0.0"), Some("2.0.0"))
    );
    assert_eq!(a["last_swap"]["guard"]["state"], "ended", "{a:#}");

    // Undeploy during a window: both versions go.
    let r = http
        .send("DELETE", &host.admin_url("/apps/hello/canary"), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    host.drop_module(&v1, "00-hello.so");
    in_state(&host, "3.0.0", "standby").await;
    let r = http
        .send("DELETE", &host.admin_url("/apps/hello"), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(http.get(&host.url("/hello/")).await.status, 404);
    in_state(&host, "3.0.0", "retired").await;
    in_state(&host, "1.0.0", "retired").await;
}
