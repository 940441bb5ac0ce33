//! Hot swap, end to end: real module files dropped into the watched directory of a real `baton`
//! process, real HTTP under concurrent keep-alive load, `/status` on the admin listener and
//! `/proc/<pid>/maps` to check unloads.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::http::Http;
use support::load::{Load, Sample, assert_no_failures, assert_served};
use support::{
    GUARD_OFF, HostOptions, HostProc, app, eventually, get, hello, mapped, status, version,
};

const WAIT: Duration = Duration::from_secs(60);

/// Waits until `app` has `version` active.
async fn active(host: &HostProc, name: &str, v: &str) -> Value {
    eventually(WAIT, &format!("{name}@{v} active"), async || {
        let s = status(host).await;
        let a = s["apps"].as_array()?.iter().find(|a| a["name"] == name)?;
        (a["active"] == v).then(|| a.clone())
    })
    .await
}

/// Waits until the last version `v` of `name` is retired; returns its status entry.
async fn retired(host: &HostProc, name: &str, v: &str) -> Value {
    eventually(WAIT, &format!("{name}@{v} retired"), async || {
        let s = status(host).await;
        let a = s["apps"].as_array()?.iter().find(|a| a["name"] == name)?;
        let entry = a["versions"]
            .as_array()?
            .iter()
            .rev()
            .find(|e| e["version"] == v)?;
        (entry["state"] == "retired").then(|| entry.clone())
    })
    .await
}

/// A host serving `modules` with the guard window off: these tests measure the old version's
/// drain and unload right after the switch.
fn start_unguarded(modules: &[std::path::PathBuf]) -> HostProc {
    HostProc::start_with_config(modules, GUARD_OFF)
}

/// Distinct module copies (from the host's private store) with code mapped in `pid`.
fn mapped_copies(pid: u32) -> Vec<String> {
    let mut copies: Vec<String> = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .filter(|l| {
            l.contains("/state/store/") && l.split_whitespace().nth(1).unwrap_or("").contains('x')
        })
        .filter_map(|l| l.split_whitespace().nth(5).map(str::to_owned))
        .collect();
    copies.sort();
    copies.dedup();
    copies
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_swap_under_load_fails_nothing_and_flips_new_requests_to_v2() {
    let (v1, v2) = (hello("1.0.0"), hello("2.0.0"));
    let host = start_unguarded(&[v1]);
    let load = Load::start(host.url("/hello/"), 16);
    tokio::time::sleep(Duration::from_millis(500)).await;
    host.drop_module(&v2, "00-hello.so");
    active(&host, "hello", "2.0.0").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let samples = load.stop().await;

    assert_no_failures(&samples);
    assert!(samples.iter().any(|s| s.version == "hello@1.0.0"));
    let first_v2 = samples
        .iter()
        .filter(|s| s.version == "hello@2.0.0")
        .map(|s| s.finished)
        .min()
        .expect("v2 answered");
    let stale: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.started > first_v2 && s.version != "hello@2.0.0")
        .collect();
    assert!(
        stale.is_empty(),
        "requests started after the switch answered by v1: {stale:?}"
    );

    let old = retired(&host, "hello", "1.0.0").await;
    assert!(mapped(host.pid(), old["copy"].as_str().unwrap()).is_empty());
    let s = status(&host).await;
    let swap = &app(&s, "hello")["last_swap"];
    assert_eq!(
        (swap["from"].as_str(), swap["to"].as_str()),
        (Some("1.0.0"), Some("2.0.0"))
    );
    for field in [
        "loaded_ms",
        "warmed_ms",
        "switched_ms",
        "drained_ms",
        "retired_ms",
    ] {
        assert!(swap[field].is_u64(), "{field} missing in {swap}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_request_finishes_on_v1_then_v1_is_unmapped() {
    let (v1, v2) = (hello("1.0.0"), hello("2.0.0"));
    let host = start_unguarded(&[v1]);
    let http = Http::new();
    let slow = {
        let (http, url) = (http.clone(), host.url("/hello/slow?ms=2000"));
        tokio::spawn(async move { http.get(&url).await })
    };
    eventually(WAIT, "the slow request running", async || {
        let s = status(&host).await;
        (version(app(&s, "hello"), "1.0.0")["in_flight"] == 1).then_some(())
    })
    .await;
    host.drop_module(&v2, "00-hello.so");
    active(&host, "hello", "2.0.0").await;

    let s = status(&host).await;
    let v1_status = version(app(&s, "hello"), "1.0.0");
    assert_eq!(
        v1_status["state"], "draining",
        "v1 waits for its request: {v1_status}"
    );
    assert_eq!(v1_status["running"][0]["path"], "/slow");
    assert_eq!(
        http.get(&host.url("/hello/")).await.version(),
        "hello@2.0.0"
    );

    let r = slow.await.unwrap();
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "slept 2000 ms in hello@1.0.0\n")
    );
    let old = retired(&host, "hello", "1.0.0").await;
    let copy = old["copy"].as_str().unwrap();
    assert!(!copy.is_empty());
    assert_eq!(
        mapped(host.pid(), copy),
        Vec::<String>::new(),
        "v1 still mapped"
    );
}

async fn refused_v2_keeps_v1(fault: &str, expect: &str) {
    let host = HostProc::start(&[hello("1.0.0")]);
    let bad = support::faulty("hello", "2.0.0", fault);
    let load = Load::start(host.url("/hello/"), 4);
    host.drop_module(&bad, "00-hello.so");
    let error = eventually(WAIT, "the deploy error in status", async || {
        let s = status(&host).await;
        app(&s, "hello")["last_error"].as_str().map(str::to_owned)
    })
    .await;
    let samples = load.stop().await;
    assert_no_failures(&samples);
    assert!(error.contains(expect), "{fault}: {error}");
    let s = status(&host).await;
    let a = app(&s, "hello");
    assert_eq!(a["active"], "1.0.0");
    assert_eq!(version(a, "2.0.0")["state"], "failed");
    assert!(samples.iter().all(|s| s.version == "hello@1.0.0"));
    let r = get(&host, "/hello/").await;
    assert_eq!((r.status, r.version()), (200, "hello@1.0.0"));
}

/// One test per way a new version can fail to start: `$fault` refuses it with `$reason`, and
/// v1 keeps serving.
macro_rules! refused_starts {
    ($($name:ident: $fault:literal, $reason:literal;)*) => {$(
        #[tokio::test(flavor = "multi_thread")]
        async fn $name() {
            refused_v2_keeps_v1($fault, $reason).await;
        }
    )*};
}

refused_starts! {
    a_failing_warmup_leaves_v1_serving: "warmup", "warm-up refused on purpose";
    a_panicking_warmup_leaves_v1_serving: "warmup-panic", "warm-up panicked on purpose";
    a_failing_init_leaves_v1_serving: "init", "init refused on purpose";
    a_panicking_init_leaves_v1_serving: "init-panic", "init panicked on purpose";
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_warmup_requests_leave_v1_serving() {
    // hello answers /slow; the faulty fixture posing as hello 2.0.0 does not.
    let host = HostProc::start_with_config(
        &[hello("1.0.0")],
        "[apps.hello]\nwarmup_paths = [\"/\", \"/slow?ms=1\"]\n",
    );
    let v2 = support::faulty("hello", "2.0.0", "");
    host.drop_module(&v2, "00-hello.so");
    let error = eventually(WAIT, "the deploy error", async || {
        app(&status(&host).await, "hello")["last_error"]
            .as_str()
            .map(str::to_owned)
    })
    .await;
    assert!(error.contains("GET /slow answered 404"), "{error}");
    assert_eq!(get(&host, "/hello/").await.version(), "hello@1.0.0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warmup_request_that_overruns_is_logged_in_its_warmup_span() {
    // The warm-up request's span is made only when something logs for it: here the host, on
    // the I/O thread, when the request overruns, and again on the worker when the handler
    // returns at last.
    let host = HostProc::start_with_config(
        &[],
        "[apps.hello]\nwarmup_paths = [\"/slow?ms=1500\"]\nwarmup_timeout_ms = 300\n",
    );
    host.drop_module(&hello("1.0.0"), "00-hello.so");
    for message in [
        "handler stuck past the request timeout; still running",
        "stuck handler returned",
    ] {
        let line = host.wait_log(WAIT, |l| l["message"] == message);
        let span = &line["span"];
        let fields = ["app", "version", "method", "path"].map(|f| span[f].as_str());
        let expected = [Some("hello"), Some("1.0.0"), Some("GET"), Some("/slow")];
        assert_eq!(fields, expected, "{line}");
        assert_eq!(span["warmup"], true, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_file_is_refused_and_retried_when_it_changes() {
    let host = HostProc::start(&[hello("1.0.0")]);
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, b"not a library").unwrap();
    let dropped = host.drop_module(&garbage, "hello-next.so");
    let rejection = eventually(WAIT, "the rejection in status", async || {
        let s = status(&host).await;
        s["rejected"].as_array()?.first().cloned()
    })
    .await;
    assert!(
        rejection["file"]
            .as_str()
            .unwrap()
            .ends_with("hello-next.so")
    );
    assert!(
        rejection["error"]
            .as_str()
            .unwrap()
            .contains("not a loadable shared library")
    );
    assert_eq!(get(&host, "/hello/").await.version(), "hello@1.0.0");

    // The same file name, now with a good module: deployed, and the rejection cleared.
    std::fs::copy(hello("2.0.0"), &dropped).unwrap();
    active(&host, "hello", "2.0.0").await;
    // The rejection is cleared as the deploy's result is recorded, a moment after the switch.
    eventually(WAIT, "the rejection cleared", async || {
        (status(&host).await["rejected"] == serde_json::json!([])).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_written_in_chunks_is_deployed_once_when_complete() {
    use std::io::Write;
    let host = HostProc::start(&[hello("1.0.0")]);
    let bytes = std::fs::read(hello("2.0.0")).unwrap();
    let target = host.modules_dir().join("hello-v2.so");
    let mut file = std::fs::File::create(&target).unwrap();
    for chunk in bytes.chunks(bytes.len() / 4 + 1) {
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            get(&host, "/hello/").await.version(),
            "hello@1.0.0",
            "a partial file must not be deployed"
        );
    }
    drop(file);
    active(&host, "hello", "2.0.0").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = host.log_lines();
    let loads = lines
        .iter()
        .filter(|l| l["message"] == "loading" && l["version"] == "2.0.0")
        .count();
    assert_eq!(loads, 1, "deployed exactly once");
    assert!(
        !lines.iter().any(|l| l["message"] == "deploy failed"),
        "no attempt on a partial file"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_bytes_again_are_a_no_op() {
    let host = HostProc::start(&[hello("1.0.0")]);
    host.drop_module(&hello("1.0.0"), "copy-of-hello.so");
    host.wait_log(WAIT, |l| {
        l["message"]
            .as_str()
            .unwrap_or("")
            .contains("already deployed")
    });
    let s = status(&host).await;
    assert_eq!(app(&s, "hello")["versions"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_by_dropping_v1_again_and_undeploy_by_deleting_the_file() {
    let host = start_unguarded(&[hello("1.0.0")]);
    let http = Http::new();
    let file = host.drop_module(&hello("2.0.0"), "00-hello.so");
    active(&host, "hello", "2.0.0").await;
    retired(&host, "hello", "1.0.0").await;

    host.drop_module(&hello("1.0.0"), "00-hello.so");
    active(&host, "hello", "1.0.0").await;
    assert_eq!(
        http.get(&host.url("/hello/")).await.version(),
        "hello@1.0.0"
    );
    retired(&host, "hello", "2.0.0").await;

    std::fs::remove_file(&file).unwrap();
    let a = eventually(WAIT, "hello undeployed", async || {
        let s = status(&host).await;
        let a = app(&s, "hello").clone();
        a["active"].is_null().then_some(a)
    })
    .await;
    assert_eq!(http.get(&host.url("/hello/")).await.status, 404);
    let v1 = retired(&host, "hello", "1.0.0").await;
    assert!(mapped(host.pid(), v1["copy"].as_str().unwrap()).is_empty());
    assert_eq!(a["mount"], "/hello");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_apps_swap_independently_at_the_same_time() {
    let faulty = |v: &str| support::faulty("faulty", v, "");
    let host = start_unguarded(&[hello("1.0.0"), faulty("1.0.0")]);
    let hello_load = Load::start(host.url("/hello/"), 4);
    let faulty_load = Load::start(host.url("/faulty/"), 4);
    host.drop_module(&hello("2.0.0"), "00-hello.so");
    host.drop_module(&faulty("2.0.0"), "01-faulty.so");
    active(&host, "hello", "2.0.0").await;
    active(&host, "faulty", "2.0.0").await;
    assert_no_failures(&hello_load.stop().await);
    assert_no_failures(&faulty_load.stop().await);
    retired(&host, "hello", "1.0.0").await;
    retired(&host, "faulty", "1.0.0").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_swaps_under_load_fail_nothing_and_leak_no_mappings() {
    let (v1, v2) = (hello("1.0.0"), hello("2.0.0"));
    let host = HostProc::start_with(HostOptions {
        modules: vec![v1.clone()],
        // Few threads per version: 200 pools are created and joined.
        config: format!("{GUARD_OFF}[limits]\nworker_threads = 2\n"),
        ..HostOptions::default()
    });
    let load = Load::start(host.url("/hello/"), 8);
    let mut baseline_rss = 0;
    for i in 1..=200u32 {
        let (module, want) = if i % 2 == 1 {
            (&v2, "2.0.0")
        } else {
            (&v1, "1.0.0")
        };
        host.drop_module(module, "00-hello.so");
        active(&host, "hello", want).await;
        if i == 20 {
            baseline_rss = rss_kib(host.pid());
        }
    }
    let samples = load.stop().await;
    assert_served(&samples, 200);

    // Wait until every old version is retired, then count what is still mapped.
    eventually(WAIT, "all old versions retired", async || {
        let s = status(&host).await;
        let a = app(&s, "hello");
        a["versions"]
            .as_array()?
            .iter()
            .all(|v| v["state"] == "active" || v["state"] == "retired")
            .then_some(())
    })
    .await;
    let copies = mapped_copies(host.pid());
    assert!(copies.len() <= 2, "module copies still mapped: {copies:?}");

    // Each debug-built module maps about 10 MB: a version that was never unmapped would add
    // that much per swap (1.8 GB over 180 swaps). 64 MB over 180 swaps allows allocator and
    // per-load bookkeeping noise (under 400 KB a swap) but no leaked library.
    let growth_kib = rss_kib(host.pid()).saturating_sub(baseline_rss);
    assert!(
        growth_kib < 64 * 1024,
        "RSS grew by {growth_kib} KiB over 180 swaps"
    );
}

/// The nice value of the thread or process whose `/proc/.../stat` this is.
fn nice_of(stat: &str) -> i64 {
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(16))
        .and_then(|nice| nice.parse().ok())
        .unwrap_or_else(|| panic!("no nice value in {stat:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_module_is_opened_and_closed_on_the_deploy_thread_ten_nice_levels_below_the_host() {
    // The probe records, in a constructor `dlopen` runs, the thread that opened it, and in a
    // destructor `dlclose` runs, the thread that closed it.
    let dir = tempfile::tempdir().unwrap();
    let closed_log = dir.path().join("closed.log");
    let host = HostProc::start_with(HostOptions {
        modules: vec![support::faulty("probe", "1.0.0", "")],
        config: GUARD_OFF.to_owned(),
        env: vec![(
            "BATON_PROBE_CLOSED_LOG".to_owned(),
            closed_log.display().to_string(),
        )],
        ..HostOptions::default()
    });
    let host_stat = std::fs::read_to_string(format!("/proc/{}/stat", host.pid())).unwrap();
    let expected = format!(
        "thread=baton/deploy nice={}",
        (nice_of(&host_stat) + 10).min(19)
    );
    active(&host, "probe", "1.0.0").await;
    let at_start = get(&host, "/probe/opened-on").await;
    assert_eq!(at_start.status, 200);
    assert_eq!(at_start.body, expected, "the version loaded at start");
    // A version dropped into the watched directory goes the same way, and the one it replaces
    // is closed there too.
    host.drop_module(&support::faulty("probe", "2.0.0", ""), "probe-2.so");
    active(&host, "probe", "2.0.0").await;
    let dropped = get(&host, "/probe/opened-on").await;
    assert_eq!(dropped.version(), "probe@2.0.0");
    assert_eq!(dropped.body, expected, "a version dropped in later");
    retired(&host, "probe", "1.0.0").await;
    let closed = eventually(WAIT, "probe@1.0.0 closed", async || {
        std::fs::read_to_string(&closed_log)
            .ok()
            .filter(|line| line.ends_with('\n'))
    })
    .await;
    assert_eq!(closed, format!("probe@1.0.0: {expected}\n"));
    // Every other thread of the host kept its priority: none was started from the lowered one.
    let tasks = std::fs::read_dir(format!("/proc/{}/task", host.pid())).unwrap();
    for task in tasks {
        let task = task.unwrap().path();
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join("stat")),
        ) else {
            continue; // It ended meanwhile.
        };
        if name.trim() != "baton/deploy" {
            assert_eq!(
                nice_of(&stat),
                nice_of(&host_stat),
                "thread {}",
                name.trim()
            );
        }
    }
}
