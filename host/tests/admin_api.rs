//! The admin API's wire format end to end, against a real `baton` process: module files whose
//! names need encoding deploy through the `baton deploy` command line, query strings and path
//! segments are decoded, and a wrong method is answered from the routing table.

mod support;

use std::time::Duration;

use support::http::Http;
use support::{HostOptions, HostProc, baton, eventually, hello};

const TOKEN: &str = "t0ken-for-wire-tests";

/// A host serving `hello` 1.0.0 with an admin token and without a guard window, so a deploy
/// follows the old version to its retirement at once.
fn host() -> HostProc {
    HostProc::start_with(HostOptions {
        modules: vec![hello("1.0.0")],
        config: format!("admin_token = \"{TOKEN}\"\n{}", support::GUARD_OFF),
        ..HostOptions::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn baton_deploy_takes_files_whose_names_need_encoding() {
    let host = host();
    let addr = host.admin.to_string();
    let env = [("BATON_ADMIN", addr.as_str()), ("BATON_ADMIN_TOKEN", TOKEN)];
    let dir = tempfile::tempdir().unwrap();
    for (name, version) in [("hello+1.so", "2.0.0"), ("hello 1.so", "3.0.0")] {
        let file = dir.path().join(name);
        std::fs::copy(hello(version), &file).unwrap();
        let run = baton(&["deploy", file.to_str().unwrap()], &env).await;
        assert!(run.ok, "{name}: {run:?}");
        assert!(
            run.stdout.contains(&format!("active   hello {version}")),
            "{name}: {}",
            run.stdout
        );
        let r = Http::new().get(&host.url("/hello/")).await;
        assert_eq!(r.version(), format!("hello@{version}"), "{name}");
    }
    // The upload kept its name, decoded: the host's copy is named after it.
    let status = support::admin_call(&host, TOKEN, "GET", "/apps/hello", "")
        .await
        .json();
    let sources: Vec<&str> = status["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["source"].as_str())
        .collect();
    assert!(
        sources.iter().any(|s| s.ends_with("-hello+1.so")),
        "{sources:?}"
    );
    assert!(
        sources.iter().any(|s| s.ends_with("-hello_1.so")),
        "{sources:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn query_strings_and_path_segments_are_decoded() {
    let host = host();
    // `%2B` is a plus in the upload's name, as a form-urlencoding client sends it.
    let bytes = std::fs::read(hello("2.0.0")).unwrap();
    let r = support::admin_call(
        &host,
        TOKEN,
        "POST",
        "/apps?name=hello%2B2.so&canary=%31%30",
        bytes,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.json()["outcome"].as_str(), r.json()["percent"].as_u64()),
        (Some("canary"), Some(10))
    );
    // A percent-encoded app name names the app.
    let r = support::admin_call(&host, TOKEN, "GET", "/apps/hell%6F", "").await;
    assert_eq!((r.status, r.json()["name"].as_str()), (200, Some("hello")));
    let r = support::admin_call(&host, TOKEN, "DELETE", "/apps/%68ello/canary", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(Duration::from_secs(60), "the canary gone", async || {
        let a = support::admin_call(&host, TOKEN, "GET", "/apps/hello", "")
            .await
            .json();
        a["canary"].is_null().then_some(())
    })
    .await;
    let r = support::admin_call(&host, TOKEN, "GET", "/sessions?limit=%35", "").await;
    assert_eq!((r.status, r.json()["limit"].as_u64()), (200, Some(5)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_method_lists_the_routes_methods() {
    let host = host();
    for (method, path, allow) in [
        ("PATCH", "/status", "GET"),
        ("DELETE", "/apps", "GET, POST"),
        ("POST", "/apps/hello", "GET, DELETE"),
        ("GET", "/apps/hello/canary", "PUT, DELETE"),
        ("GET", "/upgrade", "POST"),
        ("PUT", "/sessions/0123456789abcdef", "GET, DELETE"),
    ] {
        let r = support::admin_call(&host, TOKEN, method, path, "").await;
        assert_eq!(r.status, 405, "{method} {path}: {}", r.body);
        assert_eq!(r.header("allow"), allow, "{method} {path}");
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap()
                .contains("is not allowed"),
            "{}",
            r.body
        );
    }
    // Without the token a wrong method is refused like any other call.
    let r = Http::new()
        .send("PATCH", &host.admin_url("/status"), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    let r = support::admin_call(&host, TOKEN, "GET", "/apps/hello/nope", "").await;
    assert_eq!(r.status, 404, "{}", r.body);
}
