//! The foundation, end to end: a real `baton` process, real module files, real HTTP.

mod support;

use std::time::Duration;

use support::http::Http;
use support::{HostProc, Signal, faulty, get, hello, in_flight, module};

/// The error of the failed deploy whose error names `file_part`.
fn refused(host: &HostProc, file_part: &str) -> String {
    let line = host.wait_log(Duration::from_secs(10), |l| {
        l["message"] == "deploy failed" && l["error"].as_str().unwrap_or("").contains(file_part)
    });
    line["error"].as_str().unwrap().to_owned()
}

/// A host serving hello@1.0.0 with these `[apps.hello.limits]`.
fn hello_with_limits(limits: &str) -> HostProc {
    HostProc::start_with_config(&[hello("1.0.0")], &format!("[apps.hello.limits]\n{limits}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn hello_is_served_at_its_mount_with_the_version_header() {
    let host = HostProc::start(&[hello("1.0.0")]);
    let http = Http::new();
    for path in ["/hello", "/hello/"] {
        let r = http.get(&host.url(path)).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body, "hello from hello@1.0.0\n");
        assert_eq!(r.version(), "hello@1.0.0");
    }
    let r = http.get(&host.url("/hellothere")).await;
    assert_eq!(r.status, 404, "a mount matches whole segments only");
    let r = http.get(&host.url("/nope/")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.version(), "", "a host 404 names no app version");
    let r = http.get(&host.url("/hello/no/such/route")).await;
    assert_eq!(r.status, 404, "the app's router answers unknown routes");
    assert_eq!(r.version(), "hello@1.0.0");
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_is_served_too() {
    let host = HostProc::start(&[hello("1.0.0")]);
    let r = Http::h2c().get(&host.url("/hello/")).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "hello from hello@1.0.0\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_the_limit_get_413() {
    let host = HostProc::start_with_config(&[hello("1.0.0")], "[limits]\nmax_body_bytes = 1024\n");
    let http = Http::new();
    let url = host.url("/hello/");
    let r = http
        .send("POST", &url, &[], vec![b'x'; 4096])
        .await
        .unwrap();
    assert_eq!(r.status, 413);
    let r = http.send("POST", &url, &[], vec![b'x'; 512]).await.unwrap();
    assert_eq!(
        r.status, 405,
        "a body within the limit reaches the app (GET-only route)"
    );
    assert_eq!(http.get(&url).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_handler_is_a_500_and_the_next_request_is_fine() {
    let host = HostProc::start(&[hello("1.0.0")]);
    let http = Http::new();
    let r = http.get(&host.url("/hello/panic")).await;
    assert_eq!(r.status, 500);
    let panic = host.wait_log(Duration::from_secs(5), |l| {
        l["message"] == "handler panicked"
    });
    assert!(panic["panic"].as_str().unwrap().contains("asked to panic"));
    // The request's span names the app and version.
    assert_eq!(panic["span"]["app"], "hello", "{panic}");
    assert_eq!(panic["span"]["version"], "1.0.0", "{panic}");
    for _ in 0..5 {
        assert_eq!(http.get(&host.url("/hello/")).await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_request_logs_in_its_own_span_while_others_run_beside_it() {
    // `flaky` answers 500 with an error to every second request, which the host logs; `hello`
    // requests run beside them on the same threads and log nothing. Every error line must
    // carry the span of the request that failed, never another's.
    let host = HostProc::start(&[faulty("flaky", "1.0.0", "errors-half"), hello("1.0.0")]);
    let http = Http::new();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let http = http.clone();
        let url = if i % 2 == 0 {
            host.url("/flaky/")
        } else {
            host.url(&format!("/hello/slow?ms={}", i % 7))
        };
        tasks.push(tokio::spawn(async move { http.get(&url).await.status }));
    }
    let mut failed = 0;
    for task in tasks {
        match task.await.unwrap() {
            500 => failed += 1,
            status => assert_eq!(status, 200),
        }
    }
    assert!(failed >= 5, "{failed} of 20 flaky requests failed");
    host.wait_log(Duration::from_secs(10), |l| {
        l["message"] == "handler error" && l["status"] == 500
    });
    let errors = || {
        host.log_lines()
            .into_iter()
            .filter(|l| l["message"] == "handler error")
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while errors().len() < failed && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let errors = errors();
    assert_eq!(errors.len(), failed, "one error line per failed request");
    for line in &errors {
        let span = &line["span"];
        assert_eq!(
            (
                &span["app"],
                &span["version"],
                &span["method"],
                &span["path"]
            ),
            (&"flaky".into(), &"1.0.0".into(), &"GET".into(), &"/".into()),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_build_time_version_override_is_reported() {
    let host = HostProc::start(&[hello("9.9.9")]);
    let r = get(&host, "/hello/").await;
    assert_eq!(r.version(), "hello@9.9.9");
    assert_eq!(r.body, "hello from hello@9.9.9\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_modules_are_refused_by_name_and_the_others_keep_serving() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.so");
    std::fs::write(&garbage, b"this is not an ELF file").unwrap();
    let host = HostProc::start(&[
        module("fixture-badabi", &[]),
        garbage,
        module("fixture-nosymbol", &[]),
        hello("1.0.0"),
    ]);

    let message = refused(&host, "fixture-badabi");
    let (major, minor) = (baton_sdk::abi::ABI_MAJOR, baton_sdk::abi::ABI_MINOR);
    let theirs = format!("ABI {}.{minor}", major + 1);
    let sdk = baton_sdk::abi::SDK_VERSION;
    assert!(
        message.contains(&format!("built with baton-sdk {sdk} for {theirs}")),
        "{message}"
    );
    assert!(
        message.contains(&format!("ABI {major}.{minor}")),
        "{message}"
    );
    assert!(
        message.contains(&format!("baton-sdk {}", baton_sdk::abi::SDK_VERSION)),
        "{message}"
    );

    let garbage = refused(&host, "garbage.so");
    assert!(
        garbage.contains("not a loadable shared library"),
        "{garbage}"
    );

    let nosym = refused(&host, "fixture-nosymbol");
    assert!(nosym.contains("no `baton_module` symbol"), "{nosym}");

    let http = Http::new();
    assert_eq!(http.get(&host.url("/hello/")).await.status, 200);
    assert_eq!(http.get(&host.url("/badabi/")).await.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn overrunning_handlers_get_504_and_are_named_in_the_log() {
    let host = hello_with_limits("request_timeout_ms = 300\n");
    let http = Http::new();
    let r = http.get(&host.url("/hello/slow?ms=1500")).await;
    assert_eq!(r.status, 504);
    let overran = host.wait_log(Duration::from_secs(5), |l| {
        l["message"].as_str().unwrap_or("").contains("overran")
    });
    assert_eq!(overran["span"]["path"], "/slow", "{overran}");
    assert_eq!(overran["span"]["app"], "hello", "{overran}");
    assert_eq!(http.get(&host.url("/hello/")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_app_answers_503_with_retry_after() {
    let host = hello_with_limits("max_concurrent_requests = 1\nqueue_timeout_ms = 100\n");
    let http = Http::new();
    let slow = {
        let (http, url) = (http.clone(), host.url("/hello/slow?ms=1500"));
        tokio::spawn(async move { http.get(&url).await })
    };
    let busy = support::eventually(Duration::from_secs(5), "a 503", async || {
        let r = http.get(&host.url("/hello/")).await;
        (r.status == 503).then_some(r)
    })
    .await;
    assert_eq!(busy.header("retry-after"), "1");
    assert_eq!(slow.await.unwrap().status, 200);
    assert_eq!(http.get(&host.url("/hello/")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_running_request_finish_then_exits_0() {
    let mut host = HostProc::start(&[hello("1.0.0")]);
    // The handler is running before the signal.
    let slow = in_flight(&host, "hello", "/hello/slow?ms=1500").await;
    host.signal(Signal::TERM);
    let r = slow.await.unwrap().unwrap();
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "slept 1500 ms in hello@1.0.0\n")
    );
    let status = host.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    host.wait_log(Duration::from_secs(1), |l| {
        l["message"] == "stopped" && l["app"] == "hello" && l["unmapped"] == true
    });
    assert!(
        std::net::TcpStream::connect(host.addr).is_err(),
        "nothing listens after exit"
    );
}

#[test]
fn a_bad_config_exits_64_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nno_such_option = 1\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no_such_option"), "{stderr}");
}

/// A shutdown hook that never returns (waiting on a server that does not answer) cannot keep
/// the host from exiting: once the drain timeout and the exit grace are over, it exits anyway,
/// saying what it gave up on.
#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_hook_that_never_returns_does_not_keep_the_host_from_exiting() {
    let module = support::faulty("stubborn", "1.0.0", "shutdown-hang");
    let mut host = HostProc::start_with_config(&[module], "drain_timeout_secs = 1\n");
    assert_eq!(get(&host, "/stubborn/").await.status, 200);
    host.signal(Signal::TERM);
    let status = host.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{status:?}");
    host.wait_log(Duration::from_secs(1), |l| {
        l["level"] == "ERROR"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("still stopping"))
    });
}
