//! Operations, end to end against a real `baton` process: the admin API (with and without its
//! token), the `baton` command line as a client, canary splits, metrics, health, the access log,
//! state across restarts and the dashboard in headless Chromium.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::http::{Http, Reply};
use support::{HostOptions, HostProc, Signal, baton, eventually, get, hello};

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "t0ken-for-tests";

/// A host serving `hello` 1.0.0 with the admin token, and the guard window off: these tests
/// follow swaps to the old version's retirement (the guard's own tests are in `guard.rs`).
fn hello_with_token() -> HostProc {
    let config = format!("admin_token = \"{TOKEN}\"\n{}", support::GUARD_OFF);
    HostProc::start_with_config(&[hello("1.0.0")], &config)
}

/// An admin call with the test token.
async fn admin(host: &HostProc, method: &str, path: &str, body: impl Into<bytes::Bytes>) -> Reply {
    support::admin_call(host, TOKEN, method, path, body).await
}

/// `PUT /apps/hello/canary`: `version` takes `percent` of new traffic.
async fn set_canary(host: &HostProc, version: &str, percent: u8) -> Reply {
    let body = format!(r#"{{"version":"{version}","percent":{percent}}}"#);
    admin(host, "PUT", "/apps/hello/canary", body).await
}

fn json(reply: &Reply) -> Value {
    reply.json()
}

async fn app_status(host: &HostProc, name: &str) -> Value {
    let r = admin(host, "GET", &format!("/apps/{name}"), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    json(&r)
}

/// Waits until `name` has `version` active and every other version retired.
async fn settled(host: &HostProc, name: &str, version: &str) -> Value {
    eventually(
        WAIT,
        &format!("{name}@{version} active, others retired"),
        async || {
            let a = app_status(host, name).await;
            let others_done = a["versions"]
                .as_array()?
                .iter()
                .filter(|v| v["state"] != "active")
                .all(|v| v["state"] == "retired" || v["state"] == "failed");
            (a["active"] == version && a["canary"].is_null() && others_done).then_some(a)
        },
    )
    .await
}

async fn served_by(host: &HostProc, path: &str, headers: &[(&str, &str)]) -> String {
    let r = Http::new().get_with(&host.url(path), headers).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.version().to_owned()
}

async fn upload(host: &HostProc, module: &std::path::Path, query: &str) -> Reply {
    let bytes = std::fs::read(module).unwrap();
    admin(
        host,
        "POST",
        &format!("/apps?name=libhello.so{query}"),
        bytes,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_wants_its_token_and_says_what_is_wrong() {
    let host = hello_with_token();
    let http = Http::new();
    let none = http.get(&host.admin_url("/status")).await;
    assert_eq!(none.status, 401, "{}", none.body);
    assert!(
        json(&none)["error"]
            .as_str()
            .unwrap()
            .contains("admin token")
    );
    assert_eq!(none.header("www-authenticate"), "Bearer");
    for (method, path) in [
        ("POST", "/apps?name=x.so"),
        ("DELETE", "/apps/hello"),
        ("POST", "/apps/hello/rollback"),
        ("PUT", "/apps/hello/canary"),
        ("GET", "/metrics"),
    ] {
        let wrong = http
            .send(
                method,
                &host.admin_url(path),
                &[("authorization", "Bearer nope")],
                "",
            )
            .await
            .unwrap();
        assert_eq!(wrong.status, 401, "{method} {path}: {}", wrong.body);
    }
    // Probes and the dashboard page need no token.
    assert_eq!(http.get(&host.admin_url("/healthz")).await.status, 200);
    assert_eq!(http.get(&host.admin_url("/readyz")).await.status, 200);

    // Unknown app: 404 everywhere.
    for (method, path, body) in [
        ("GET", "/apps/nope", ""),
        ("DELETE", "/apps/nope", ""),
        ("POST", "/apps/nope/rollback", ""),
        (
            "PUT",
            "/apps/nope/canary",
            r#"{"version":"1.0.0","percent":10}"#,
        ),
        ("POST", "/apps/nope/canary/promote", ""),
        ("DELETE", "/apps/nope/canary", ""),
    ] {
        let r = admin(&host, method, path, body).await;
        r.assert_error(404, "nope");
    }
    let r = admin(&host, "GET", "/no/such/thing", "").await;
    assert_eq!(r.status, 404);

    // Bad input: 400 with a message that says what is wrong.
    let r = admin(&host, "POST", "/apps?name=garbage.so", "not a library").await;
    r.assert_error(400, "not a loadable shared library");
    let r = admin(&host, "POST", "/apps?name=empty.so", "").await;
    r.assert_error(400, "empty upload");
    let r = upload(&host, &hello("2.0.0"), "&canary=150").await;
    r.assert_error(400, "between 0 and 100");
    let r = admin(&host, "POST", "/apps?name=../../etc.so", "x").await;
    r.assert_error(400, "bad module file name");
    for body in [
        "{",
        r#"{"version":"2.0.0","percent":101}"#,
        r#"{"percent":10}"#,
    ] {
        let r = admin(&host, "PUT", "/apps/hello/canary", body).await;
        r.assert_error(400, "percent");
    }
    // Well-formed but not possible now: 404 for an unknown version, 409 for a state conflict.
    let r = set_canary(&host, "9.9.9", 10).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = admin(&host, "POST", "/apps/hello/canary/promote", "").await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = admin(&host, "POST", "/apps/hello/rollback", "").await;
    r.assert_error(409, "keep_versions");

    // The refused uploads did not disturb the app.
    assert_eq!(served_by(&host, "/hello/", &[]).await, "hello@1.0.0");
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_by_upload_rollback_and_undeploy_through_the_api() {
    let host = hello_with_token();
    let r = upload(&host, &hello("2.0.0"), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let outcome = json(&r);
    assert_eq!(
        (
            outcome["outcome"].as_str(),
            outcome["app"].as_str(),
            outcome["version"].as_str()
        ),
        (Some("deployed"), Some("hello"), Some("2.0.0"))
    );
    assert_eq!(outcome["replaced"], "1.0.0");
    assert_eq!(served_by(&host, "/hello/", &[]).await, "hello@2.0.0");
    settled(&host, "hello", "2.0.0").await;

    // The same bytes again: nothing to do.
    let r = upload(&host, &hello("2.0.0"), "").await;
    assert_eq!(
        (r.status, json(&r)["outcome"].as_str()),
        (200, Some("unchanged"))
    );

    let r = admin(&host, "POST", "/apps/hello/rollback", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (json(&r)["version"].as_str(), json(&r)["replaced"].as_str()),
        (Some("1.0.0"), Some("2.0.0"))
    );
    assert_eq!(served_by(&host, "/hello/", &[]).await, "hello@1.0.0");
    settled(&host, "hello", "1.0.0").await;

    let r = admin(&host, "DELETE", "/apps/hello", "").await;
    assert_eq!(
        (r.status, json(&r)["undeployed"].as_str()),
        (200, Some("1.0.0"))
    );
    assert_eq!(get(&host, "/hello/").await.status, 404);
    let r = admin(&host, "DELETE", "/apps/hello", "").await;
    assert_eq!(r.status, 409, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_drives_every_admin_call() {
    let host = hello_with_token();
    let addr = host.admin.to_string();
    let env = [("BATON_ADMIN", addr.as_str()), ("BATON_ADMIN_TOKEN", TOKEN)];
    let v2 = hello("2.0.0");
    let v2 = v2.to_str().unwrap();

    // Missing or wrong token: a clear failure.
    let run = baton(&["status", "--admin", &addr], &[]).await;
    assert!(!run.ok && run.stderr.contains("401"), "{run:?}");
    let run = baton(&["status", "--admin", &addr, "--token", "wrong"], &[]).await;
    assert!(!run.ok && run.stderr.contains("401"), "{run:?}");

    let run = baton(&["status"], &env).await;
    assert!(run.ok, "{run:?}");
    assert!(
        run.stdout.contains("hello at /hello: active 1.0.0"),
        "{}",
        run.stdout
    );
    let run = baton(&["status", "--json"], &env).await;
    assert!(run.ok, "{run:?}");
    let status: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(status["apps"][0]["active"], "1.0.0");

    // Deploy v2: every step, in order, ending with v2 active and v1 retired.
    let run = baton(&["deploy", v2], &env).await;
    assert!(run.ok, "{run:?}");
    let steps: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| ["loading", "warming", "active", "drained", "retired"].contains(w))
        .collect();
    assert_eq!(
        steps,
        ["loading", "warming", "active", "drained", "retired"],
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("active   hello 2.0.0 (replaced 1.0.0)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("retired  hello 1.0.0"),
        "{}",
        run.stdout
    );
    let a = app_status(&host, "hello").await;
    assert_eq!(a["active"], "2.0.0");

    // A bad module: non-zero exit with the reason.
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("libbad.so");
    std::fs::write(&garbage, b"not a library").unwrap();
    let run = baton(&["deploy", garbage.to_str().unwrap()], &env).await;
    assert!(!run.ok, "{run:?}");
    assert!(
        run.stderr.contains("not a loadable shared library"),
        "{run:?}"
    );

    baton(&["rollback", "hello"], &env)
        .await
        .assert_says("rolled back to 1.0.0");
    settled(&host, "hello", "1.0.0").await;

    // Canary: 2.0.0 is kept in the store, so it can be the canary again.
    baton(&["canary", "hello", "2.0.0", "30"], &env)
        .await
        .assert_says("canary 2.0.0 takes 30%");
    baton(&["canary", "hello", "2.0.0", "40"], &env)
        .await
        .assert_says("takes 40%");
    let run = baton(&["status"], &env).await;
    assert!(run.stdout.contains("canary 2.0.0 at 40%"), "{}", run.stdout);
    baton(&["abort", "hello"], &env)
        .await
        .assert_says("canary 2.0.0 aborted");
    settled(&host, "hello", "1.0.0").await;
    let run = baton(&["canary", "hello", "2.0.0", "10"], &env).await;
    assert!(run.ok, "{run:?}");
    baton(&["promote", "hello"], &env)
        .await
        .assert_says("2.0.0 is active");
    settled(&host, "hello", "2.0.0").await;

    // Bad input and unknown apps through the CLI.
    let run = baton(&["canary", "hello", "2.0.0", "101"], &env).await;
    assert!(!run.ok, "{run:?}");
    let run = baton(&["canary", "hello", "7.7.7", "10"], &env).await;
    assert!(
        !run.ok && run.stderr.contains("404") && run.stderr.contains("7.7.7"),
        "{run:?}"
    );
    let run = baton(&["promote", "hello"], &env).await;
    assert!(!run.ok && run.stderr.contains("no canary"), "{run:?}");
    let run = baton(&["rollback", "nope"], &env).await;
    assert!(
        !run.ok && run.stderr.contains("404") && run.stderr.contains("no app named nope"),
        "{run:?}"
    );

    baton(&["undeploy", "hello"], &env)
        .await
        .assert_says("undeployed 2.0.0");
    assert_eq!(get(&host, "/hello/").await.status, 404);
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_show_requests_and_the_swap_and_the_access_log_has_a_line_per_request() {
    let host = hello_with_token();
    let http = Http::new();
    for _ in 0..5 {
        assert_eq!(http.get(&host.url("/hello/")).await.status, 200);
    }
    assert_eq!(http.get(&host.url("/hello/no-such-page")).await.status, 404);
    let r = upload(&host, &hello("2.0.0"), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    settled(&host, "hello", "2.0.0").await;
    assert_eq!(served_by(&host, "/hello/", &[]).await, "hello@2.0.0");

    // The gauges are read at the scrape: a request whose answer the client already has may
    // still hold its version for a moment, until the host has finished sending.
    let in_flight = r#"baton_requests_in_flight{app="hello",version="2.0.0"}"#;
    let r = eventually(WAIT, "no request in flight on 2.0.0", async || {
        let r = admin(&host, "GET", "/metrics", "").await;
        (metric(&r.body, in_flight) == Some(0.0)).then_some(r)
    })
    .await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").contains("text"), "{:?}", r.headers);
    let m = &r.body;
    let v1 = r#"{app="hello",version="1.0.0",status="#;
    assert_eq!(
        metric(m, &format!("baton_requests_total{v1}\"2xx\"}}")),
        Some(5.0),
        "{m}"
    );
    assert_eq!(
        metric(m, &format!("baton_requests_total{v1}\"4xx\"}}")),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(
            m,
            r#"baton_requests_total{app="hello",version="2.0.0",status="2xx"}"#
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(
            m,
            r#"baton_request_duration_seconds_count{app="hello",version="1.0.0"}"#
        ),
        Some(6.0),
        "{m}"
    );
    assert_eq!(
        metric(m, r#"baton_swaps_total{app="hello"}"#),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(m, r#"baton_swap_duration_seconds_count{app="hello"}"#),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(m, r#"baton_drain_duration_seconds_count{app="hello"}"#),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(
            m,
            r#"baton_version_weight_percent{app="hello",version="2.0.0"}"#
        ),
        Some(100.0),
        "{m}"
    );
    assert_eq!(metric(m, "baton_module_rejections_total"), Some(0.0), "{m}");

    // A version refused at warm-up is counted.
    let faulty = support::faulty("hello", "2.0.0", "warmup");
    let r = upload(&host, &faulty, "").await;
    r.assert_error(400, "warm-up refused on purpose");
    let m = admin(&host, "GET", "/metrics", "").await.body;
    assert_eq!(
        metric(&m, r#"baton_warmup_failures_total{app="hello"}"#),
        Some(1.0),
        "{m}"
    );

    // One access line per request, with its fields.
    let line = host.wait_log(WAIT, |l| {
        l["target"] == "baton::access" && l["path"] == "/hello/no-such-page"
    });
    assert_eq!(
        (line["app"].as_str(), line["version"].as_str()),
        (Some("hello"), Some("1.0.0"))
    );
    assert_eq!(
        (line["method"].as_str(), line["status"].as_u64()),
        (Some("GET"), Some(404))
    );
    assert!(line["duration_ms"].is_f64(), "{line}");
    let lines = host.log_lines();
    let access = lines
        .iter()
        .filter(|l| l["target"] == "baton::access")
        .count();
    assert_eq!(access, 7, "one line per app request");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_can_be_turned_off() {
    let host = HostProc::start_with_config(&[hello("1.0.0")], "access_log = false\n");
    assert_eq!(served_by(&host, "/hello/", &[]).await, "hello@1.0.0");
    // The admin listener's own requests are not app requests either; ask it something, then
    // check nothing was logged for the app request.
    assert_eq!(
        Http::new().get(&host.admin_url("/status")).await.status,
        200
    );
    assert!(
        !host
            .log_lines()
            .iter()
            .any(|l| l["target"] == "baton::access")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_flips_on_sigterm_before_the_drain() {
    let host = HostProc::start(&[hello("1.0.0")]);
    let mut host = host;
    let http = Http::new();
    assert_eq!(http.get(&host.admin_url("/readyz")).await.status, 200);
    assert_eq!(http.get(&host.admin_url("/healthz")).await.status, 200);
    let slow = {
        let url = host.url("/hello/slow?ms=5000");
        tokio::spawn(async move { Http::new().get(&url).await })
    };
    let running = async || {
        let s: Value =
            serde_json::from_str(&Http::new().get(&host.admin_url("/status")).await.body).unwrap();
        s["apps"][0]["versions"][0]["in_flight"].as_u64()
    };
    eventually(WAIT, "the slow request running", async || {
        (running().await == Some(1)).then_some(())
    })
    .await;
    host.signal(Signal::TERM);
    eventually(WAIT, "/readyz answering 503", async || {
        let r = Http::new().get(&host.admin_url("/readyz")).await;
        (r.status == 503).then_some(())
    })
    .await;
    // Not ready while the slow request is still running: the drain has not finished.
    assert_eq!(
        running().await,
        Some(1),
        "the slow request is still running"
    );
    assert_eq!(http.get(&host.admin_url("/healthz")).await.status, 200);
    let r = slow.await.unwrap();
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "slept 5000 ms in hello@1.0.0\n")
    );
    assert!(host.wait_exit(WAIT).success());
}

/// Sends `n` requests (with `cookie`, if any) and counts the answers of `version`.
async fn count(host: &HostProc, n: usize, cookie: Option<&str>, version: &str) -> usize {
    let http = Http::new();
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    let mut hits = 0;
    for _ in 0..n {
        let r = http.get_with(&host.url("/hello/"), &headers).await;
        assert_eq!(r.status, 200, "{}", r.body);
        hits += usize::from(r.version() == version);
    }
    hits
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_split_sends_its_share_and_sticky_sessions_stay_put() {
    let host = HostProc::start_with(HostOptions {
        modules: vec![hello("1.0.0")],
        config: format!(
            "admin_token = \"{TOKEN}\"\ncanary_sticky = true\n{}",
            support::GUARD_OFF
        ),
        ..HostOptions::default()
    });
    let r = upload(&host, &hello("2.0.0"), "&canary=10").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let outcome = json(&r);
    assert_eq!(
        (outcome["outcome"].as_str(), outcome["percent"].as_u64()),
        (Some("canary"), Some(10))
    );
    let a = app_status(&host, "hello").await;
    assert_eq!(
        (a["active"].as_str(), a["canary"]["percent"].as_u64()),
        (Some("1.0.0"), Some(10))
    );
    let weights: Vec<(String, u64)> = a["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap().to_owned(),
                v["weight"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        weights,
        [("1.0.0".to_owned(), 90), ("2.0.0".to_owned(), 10)]
    );

    // 90/10 over 1,000 requests without a session, within 5 points.
    let canary = count(&host, 1000, None, "hello@2.0.0").await;
    assert!(
        (50..=150).contains(&canary),
        "{canary} of 1000 went to the 10% canary"
    );

    // With the session cookie, each session stays on one version; about 10% of sessions are
    // on the canary (the ids are fixed, so this is deterministic). A malformed cookie before the
    // real one changes nothing: routing keys on the id the session layer uses.
    let mut on_canary = 0;
    for i in 0..200 {
        let cookie = format!("theme=dark; BATON_SESSION=forged-{i}; BATON_SESSION={i:048x}");
        let hits = count(&host, 5, Some(&cookie), "hello@2.0.0").await;
        assert!(
            hits == 0 || hits == 5,
            "session {i} moved between versions ({hits} of 5 on 2.0.0)"
        );
        on_canary += usize::from(hits == 5);
    }
    assert!(
        (10..=30).contains(&on_canary),
        "{on_canary} of 200 sessions on the 10% canary"
    );

    // Weight 0: the canary takes nothing new but stays loaded, ready to be raised again.
    let r = set_canary(&host, "2.0.0", 0).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(count(&host, 100, None, "hello@2.0.0").await, 0);
    let r = set_canary(&host, "2.0.0", 50).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let half = count(&host, 200, None, "hello@2.0.0").await;
    assert!((80..=120).contains(&half), "{half} of 200 at 50%");

    // Promote: everything new goes to 2.0.0, 1.0.0 drains and retires.
    let r = admin(&host, "POST", "/apps/hello/canary/promote", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(count(&host, 50, None, "hello@2.0.0").await, 50);
    settled(&host, "hello", "2.0.0").await;

    // Abort a canary: it drains and retires, the active version takes everything.
    let r = set_canary(&host, "1.0.0", 20).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = admin(&host, "DELETE", "/apps/hello/canary", "").await;
    assert_eq!(
        (r.status, json(&r)["aborted"].as_str()),
        (200, Some("1.0.0"))
    );
    assert_eq!(count(&host, 50, None, "hello@2.0.0").await, 50);
    settled(&host, "hello", "2.0.0").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_brings_back_the_active_versions_and_the_split() {
    let host = hello_with_token();
    let r = upload(&host, &hello("2.0.0"), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    settled(&host, "hello", "2.0.0").await;
    let state = host.dir.path().join("state").join("state.json");
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(
        saved["apps"]["hello"]["active"]["version"], "2.0.0",
        "{saved}"
    );

    // The modules directory still holds 1.0.0's file: the restored 2.0.0 wins.
    let host = host.restart();
    let a = app_status(&host, "hello").await;
    assert_eq!(
        (a["active"].as_str(), a["canary"].as_object()),
        (Some("2.0.0"), None)
    );
    assert_eq!(served_by(&host, "/hello/", &[]).await, "hello@2.0.0");
    host.wait_log(WAIT, |l| {
        l["message"] == "app restored from the host state; this file is ignored at start"
            && l["version"] == "1.0.0"
    });

    // A split survives too.
    let r = upload(&host, &hello("1.0.0"), "&canary=20").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let host = host.restart();
    let a = app_status(&host, "hello").await;
    assert_eq!(a["active"], "2.0.0", "{a:#}");
    assert_eq!(
        (
            a["canary"]["version"].as_str(),
            a["canary"]["percent"].as_u64()
        ),
        (Some("1.0.0"), Some(20))
    );
    let on_canary = count(&host, 100, None, "hello@1.0.0").await;
    assert!((10..=30).contains(&on_canary), "{on_canary} of 100 at 20%");

    // Only the copies of live versions are left in the store.
    let store: Vec<_> = std::fs::read_dir(host.dir.path().join("state").join("store"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(store.len(), 2, "{store:?}");

    // Undeploy is remembered as well.
    let r = admin(&host, "DELETE", "/apps/hello", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(saved["apps"], serde_json::json!({}), "{saved}");
}

/// The `<section>` of `app` in a dumped dashboard.
fn section<'d>(dom: &'d str, app: &str) -> &'d str {
    let start = dom
        .find(&format!("data-app=\"{app}\""))
        .unwrap_or_else(|| panic!("no {app} on the dashboard:\n{dom}"));
    let end = dom[start..]
        .find("</section>")
        .map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

/// Asserts that a dashboard section shows each of `expected`.
fn assert_shows(section: &str, expected: &[&str]) {
    for part in expected {
        assert!(section.contains(part), "{part:?} not in {section}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_the_apps_and_follows_a_swap_in_headless_chromium() {
    let host = hello_with_token();
    let page = format!("{}#token={TOKEN}", host.admin_url("/"));
    let dom = support::chromium_dom(&page, 3500).await;
    assert_shows(
        section(&dom, "hello"),
        &[
            r#"data-active="1.0.0""#,
            r#"data-version="1.0.0" data-state="active""#,
            "100%",
            "req/s",
        ],
    );
    let updates: u32 = dom
        .split("data-updates=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        updates >= 2,
        "the page refreshes by itself ({updates} updates):\n{dom}"
    );

    // Swap to 2.0.0, then a canary of 1.0.0: the page follows.
    let r = upload(&host, &hello("2.0.0"), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    settled(&host, "hello", "2.0.0").await;
    let r = set_canary(&host, "1.0.0", 25).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let dom = support::chromium_dom(&page, 2500).await;
    assert_shows(
        section(&dom, "hello"),
        &[
            r#"data-active="2.0.0""#,
            r#"data-version="2.0.0" data-state="active""#,
            r#"data-version="1.0.0" data-state="retired""#,
            "canary 1.0.0 at 25%",
            "2.0.0 75%",
            "last swap 1.0.0 → 2.0.0",
        ],
    );

    // Without the token the page says what is missing.
    let plain = host.admin_url("/");
    let dom = support::chromium_dom(&plain, 1500).await;
    assert!(dom.contains("needs a token"), "{dom}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_token_the_dashboard_works_from_its_own_origin() {
    // No token: the admin API answers only the local operator, and the page is theirs.
    let host = HostProc::start(&[hello("1.0.0")]);
    let page = format!("http://localhost:{}/", host.admin.port());
    let dom = support::chromium_dom(&page, 2500).await;
    let hello_section = section(&dom, "hello");
    assert!(
        hello_section.contains(r#"data-version="1.0.0" data-state="active""#),
        "{hello_section}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_loopback_admin_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let modules = dir.path().join("modules");
    let state = dir.path().join("state");
    let run = baton(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "0.0.0.0:0",
            "--modules",
            modules.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, Some(64), "{run:?}");
    assert!(
        run.stderr.contains("not a loopback address") && run.stderr.contains("admin_token"),
        "{}",
        run.stderr
    );
}

/// A host that takes the connection and then never answers (hung, or stopped by a debugger)
/// does not hold a command forever: every status read gives up after 30 s and says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_command_against_an_admin_api_that_never_answers_fails_with_its_own_error() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    // Accepts, reads, keeps the connections open, never writes.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            let mut reading = stream.try_clone().unwrap();
            std::thread::spawn(move || std::io::copy(&mut reading, &mut std::io::sink()));
            held.push(stream);
        }
    });
    let started = std::time::Instant::now();
    let status_args = ["status", "--admin", &addr];
    let json_args = ["status", "--json", "--admin", &addr];
    let quarantine_args = ["quarantine", "list", "--admin", &addr];
    let upgrade_args = ["upgrade", "--admin", &addr];
    let count_args = ["sessions", "count", "--admin", &addr];
    let (status, json, quarantine, upgrade, count) = tokio::join!(
        baton(&status_args, &[]),
        baton(&json_args, &[]),
        baton(&quarantine_args, &[]),
        baton(&upgrade_args, &[]),
        // Counting walks the whole store: it waits for its answer, past the 30 s of a status.
        tokio::time::timeout(Duration::from_secs(40), baton(&count_args, &[])),
    );
    assert!(count.is_err(), "sessions count gave up: {count:?}");
    for run in [&status, &json, &quarantine, &upgrade] {
        assert_eq!(run.code, Some(1), "{run:?}");
        assert!(
            run.stderr.contains(": no answer from") && run.stderr.contains("within 30 s"),
            "{run:?}"
        );
    }
    // Both gave up on their own, long before the test's wait for the command.
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );
}

/// A host whose admin listener takes no more connections (its accept queue full) fails a
/// command after the 10 s connect timeout instead of holding it.
#[tokio::test(flavor = "multi_thread")]
async fn a_command_against_an_admin_api_that_takes_no_connection_fails_after_10_s() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = socket.listen(0).unwrap();
    let addr = full.local_addr().unwrap();
    // Fill its queue: connections that are never accepted, until one no longer completes.
    let mut queued = Vec::new();
    while let Ok(stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        queued.push(stream);
        assert!(queued.len() < 64, "the accept queue never filled");
    }
    let started = std::time::Instant::now();
    let run = baton(&["status", "--admin", &addr.to_string()], &[]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("cannot reach the admin API"), "{run:?}");
    // It waited for the connection, then gave up on its own.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(60),
        "{waited:?}"
    );
    drop(full);
}
