//! A fleet: three `baton` hosts sharing one `redis-server`, behind Debian's nginx or HAProxy
//! running the configurations in `docs/` (the test kit's balancer puts these hosts' addresses in
//! place of the example ones). Rolling deploys with the real `baton deploy --admin … ×3` under
//! load through the balancer fail no request and break no session's count; a version that fails
//! its guard on the second host stops the deploy and leaves every host on the old version; a
//! host stopped with SIGTERM fails no request: HAProxy sees its `/readyz` turn 503 and stops
//! sending, nginx retries an idempotent request on the next host; and `baton upgrade` of each
//! host in turn fails none either.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use baton_testkit::balancer::{Backend, Balancer, Kind};
use serde_json::Value;
use support::jar::Jar;
use support::load::{Load, assert_no_failures_but_from, assert_served};
use support::redis::RedisServer;
use support::{
    CliRun, HostOptions, HostProc, Signal, admin_call, baton, counter, eventually, faulty, hello,
    version,
};

const WAIT: Duration = Duration::from_secs(60);
const COOKIE: &str = "BATON_SESSION";

/// Three hosts serving `hello` and `counter` 1.0.0 with their sessions in one Redis, and a
/// balancer in front of them.
struct Fleet {
    hosts: Vec<HostProc>,
    balancer: Balancer,
    _redis: RedisServer,
}

impl Fleet {
    /// Starts the hosts (in parallel), host `i` with what `options(i)` adds to the defaults,
    /// then `kind` in front of them, and waits until the balancer serves.
    async fn start(kind: Kind, options: impl Fn(usize) -> HostOptions + Sync) -> Fleet {
        let redis = RedisServer::start();
        let url = redis.url();
        let hosts = std::thread::scope(|s| {
            let started: Vec<_> = (0..3)
                .map(|i| {
                    let mut o = options(i);
                    o.modules = vec![hello("1.0.0"), counter("1.0.0")];
                    o.args.extend(["--sessions".to_owned(), url.clone()]);
                    s.spawn(move || HostProc::start_with(o))
                })
                .collect();
            started
                .into_iter()
                .map(|h| h.join().expect("the host started"))
                .collect::<Vec<_>>()
        });
        let backends: Vec<Backend> = hosts
            .iter()
            .map(|h| Backend {
                addr: h.addr,
                admin: h.admin,
            })
            .collect();
        let balancer = Balancer::start(kind, &backends);
        let http = support::http::Http::new();
        eventually(WAIT, "the balancer serving", async || {
            let r = http.send("GET", &balancer.url("/hello/"), &[], "").await;
            r.is_ok_and(|r| r.status == 200).then_some(())
        })
        .await;
        Fleet {
            hosts,
            balancer,
            _redis: redis,
        }
    }

    /// `baton deploy` of `file` to every host in order, with `extra` arguments and `env`.
    async fn deploy(&self, file: &Path, extra: &[&str], env: &[(&str, &str)]) -> CliRun {
        let admins: Vec<String> = self.hosts.iter().map(|h| h.admin.to_string()).collect();
        let mut args = vec!["deploy"];
        for admin in &admins {
            args.extend(["--admin", admin]);
        }
        args.extend(extra);
        args.push(file.to_str().unwrap());
        baton(&args, env).await
    }
}

/// `[guard] window_secs` and an admin token.
fn guarded(window_secs: u64, token: &str) -> HostOptions {
    HostOptions {
        config: format!("[guard]\nwindow_secs = {window_secs}\n"),
        args: vec!["--admin-token".to_owned(), token.to_owned()],
        ..HostOptions::default()
    }
}

/// `GET /apps/{name}` on `host` with `token`.
async fn app_status(host: &HostProc, token: &str, name: &str) -> Value {
    let r = admin_call(host, token, "GET", &format!("/apps/{name}"), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// What one counting client saw.
#[derive(Debug, Default)]
struct Counted {
    /// Answers that were not the previous count plus one.
    broken: Vec<String>,
    last: u64,
    first_version: String,
    last_version: String,
}

/// Clients counting through the balancer as fast as they can, each with a session of its own:
/// every answer must be its previous count plus one.
struct Counting {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Counted>>,
}

impl Counting {
    fn start(url: String, clients: usize) -> Counting {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let (url, stop) = (url.clone(), Arc::clone(&stop));
                tokio::spawn(async move {
                    let jar = Jar::new(COOKIE);
                    let mut counted = Counted::default();
                    while !stop.load(Ordering::Relaxed) {
                        let r = jar.get(&url).await;
                        let expected = format!("count {}\n", counted.last + 1);
                        if r.status != 200 || r.body != expected {
                            counted.broken.push(format!(
                                "{} {:?} from {:?} after count {}",
                                r.status,
                                r.body,
                                r.version(),
                                counted.last
                            ));
                            continue;
                        }
                        counted.last += 1;
                        if counted.first_version.is_empty() {
                            counted.first_version = r.version().to_owned();
                        }
                        counted.last_version = r.version().to_owned();
                    }
                    counted
                })
            })
            .collect();
        Counting { stop, tasks }
    }

    /// Stops the clients; asserts that every count went up by one each time, past `at_least`.
    async fn stop(self, at_least: u64) -> Vec<Counted> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for task in self.tasks {
            let counted = task.await.expect("a counting client");
            assert!(counted.broken.is_empty(), "a count broke: {counted:?}");
            assert!(
                counted.last >= at_least,
                "a client counted too little: {counted:?}"
            );
            all.push(counted);
        }
        all
    }
}

/// Lets the load run until both kinds of client have been served through the balancer.
async fn warmed_up(fleet: &Fleet) {
    let http = support::http::Http::new();
    for _ in 0..20 {
        let r = http.get(&fleet.balancer.url("/hello/")).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Runs each balancer-generic test `$body` as two tests, `$nginx` behind nginx and `$haproxy`
/// behind HAProxy.
macro_rules! both_balancers {
    ($($body:ident: $nginx:ident, $haproxy:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $nginx() {
            $body(Kind::Nginx).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $haproxy() {
            $body(Kind::Haproxy).await;
        }
    )*};
}

both_balancers! {
    a_rolling_deploy_fails_no_request_and_breaks_no_session:
        a_rolling_deploy_behind_nginx_fails_no_request_and_breaks_no_session,
        a_rolling_deploy_behind_haproxy_fails_no_request_and_breaks_no_session;
    a_version_failing_its_guard_on_the_second_host_is_rolled_back_everywhere:
        a_guard_failure_on_the_second_host_behind_nginx_leaves_every_host_on_the_old_version,
        a_guard_failure_on_the_second_host_behind_haproxy_leaves_every_host_on_the_old_version;
}

/// A rolling deploy of `counter` 2.0.0 through `kind` under load, with a token per host.
async fn a_rolling_deploy_fails_no_request_and_breaks_no_session(kind: Kind) {
    let tokens = ["token-a", "token-b", "token-c"];
    let fleet = Fleet::start(kind, |i| guarded(2, tokens[i])).await;
    let plain = Load::start(fleet.balancer.url("/hello/"), 4);
    let counting = Counting::start(fleet.balancer.url("/counter/"), 4);
    warmed_up(&fleet).await;

    let v2 = counter("2.0.0");
    let per_host: Vec<&str> = tokens.iter().flat_map(|t| ["--admin-token", t]).collect();
    let run = fleet.deploy(&v2, &per_host, &[]).await;
    assert!(run.ok, "{run:?}");

    // Host after host, each through its whole deploy and guard window before the next.
    let mut at = 0;
    for host in &fleet.hosts {
        for step in [
            "uploading",
            "active   counter 2.0.0 (replaced 1.0.0)",
            "guarding counter 2.0.0",
            "retired  counter 1.0.0",
            "passed   counter 2.0.0",
        ] {
            let line = format!("[{}] {step}", host.admin);
            at += run.stdout[at..]
                .find(&line)
                .unwrap_or_else(|| panic!("{line:?} not in order in {}", run.stdout));
        }
    }
    assert!(
        run.stdout.contains("done     counter 2.0.0 on all 3 hosts"),
        "{run:?}"
    );
    let mut window_ended = 0;
    for (host, token) in fleet.hosts.iter().zip(tokens) {
        let a = app_status(host, token, "counter").await;
        assert_eq!(a["active"], "2.0.0", "{a:#}");
        let guard = &a["last_swap"]["guard"];
        assert_eq!(guard["state"], "passed", "{a:#}");
        let loaded = version(&a, "2.0.0")["loaded_unix_ms"].as_u64().unwrap();
        assert!(
            loaded >= window_ended,
            "loaded {loaded}, before the previous host's window ended at {window_ended}"
        );
        window_ended = guard["ends_unix_ms"].as_u64().unwrap();
    }

    // The clients carry on with v2 on every host.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_served(&plain.stop().await, 100);
    for counted in counting.stop(20).await {
        assert_eq!(
            (
                counted.first_version.as_str(),
                counted.last_version.as_str()
            ),
            ("counter@1.0.0", "counter@2.0.0"),
            "{counted:?}"
        );
    }
}

/// A rolling deploy through `kind` of a `hello` 2.0.0 that fails half its requests, which only
/// the second host's clients see, with one token for all hosts and a `--json` report.
async fn a_version_failing_its_guard_on_the_second_host_is_rolled_back_everywhere(kind: Kind) {
    const TOKEN: &str = "fleet-token";
    // The second host's window is long so that its clients are sure to reach the guard's
    // minimum of requests inside it; the rollback comes as soon as they do.
    let fleet = Fleet::start(kind, |i| guarded(if i == 1 { 30 } else { 2 }, TOKEN)).await;
    let counting = Counting::start(fleet.balancer.url("/counter/"), 4);
    // Only the second host's `hello` has clients, so its guard is the one that sees the errors.
    let direct = Load::start(fleet.hosts[1].url("/hello/"), 8);
    warmed_up(&fleet).await;

    let bad = faulty("hello", "2.0.0", "errors-half");
    let run = fleet
        .deploy(&bad, &["--json"], &[("BATON_ADMIN_TOKEN", TOKEN)])
        .await;
    assert_eq!(run.code, Some(1), "{run:?}");
    let (first, second, third) = (
        fleet.hosts[0].admin.to_string(),
        fleet.hosts[1].admin.to_string(),
        fleet.hosts[2].admin.to_string(),
    );
    assert!(
        run.stderr
            .contains(&format!("rolling deploy stopped at {second} (2 of 3)"))
            && run.stderr.contains("was rolled back to 1.0.0")
            && run.stderr.contains(&format!("rolled back {first}")),
        "{run:?}"
    );
    let report: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"));
    assert_eq!(
        (
            report["outcome"].as_str(),
            report["app"].as_str(),
            report["version"].as_str()
        ),
        (Some("failed"), Some("hello"), Some("2.0.0")),
        "{report:#}"
    );
    let hosts = report["hosts"].as_array().unwrap();
    let outcome = |i: usize| {
        (
            hosts[i]["admin"].as_str().unwrap().to_owned(),
            hosts[i]["outcome"].as_str().unwrap().to_owned(),
            hosts[i]["replaced"].as_str().map(str::to_owned),
        )
    };
    let old = Some("1.0.0".to_owned());
    assert_eq!(outcome(0), (first, "rolled_back".to_owned(), old.clone()));
    assert_eq!(outcome(1), (second, "failed".to_owned(), old));
    assert_eq!(outcome(2), (third, "not_deployed".to_owned(), None));
    assert!(
        hosts[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("5xx ratio")),
        "{report:#}"
    );

    // Every host serves 1.0.0; the third never had 2.0.0.
    for (i, host) in fleet.hosts.iter().enumerate() {
        let a = app_status(host, TOKEN, "hello").await;
        assert_eq!(a["active"], "1.0.0", "host {i}: {a:#}");
        let had_v2 = a["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["version"] == "2.0.0");
        assert_eq!(had_v2, i < 2, "host {i}: {a:#}");
    }
    let http = support::http::Http::new();
    for _ in 0..6 {
        let r = http.get(&fleet.balancer.url("/hello/")).await;
        assert_eq!((r.status, r.version()), (200, "hello@1.0.0"));
    }

    assert_no_failures_but_from(&direct.stop().await, "hello@2.0.0");
    counting.stop(20).await;
}

/// Stops the second host with SIGTERM under load through `kind`; no request fails.
async fn a_stopped_host_fails_no_request(kind: Kind, config: &str) -> Fleet {
    let mut fleet = Fleet::start(kind, |_| HostOptions {
        config: config.to_owned(),
        ..HostOptions::default()
    })
    .await;
    let plain = Load::start(fleet.balancer.url("/hello/"), 8);
    let counting = Counting::start(fleet.balancer.url("/counter/"), 4);
    warmed_up(&fleet).await;
    let stopped = &mut fleet.hosts[1];
    stopped.signal(Signal::TERM);
    let status = stopped.wait_exit(WAIT);
    assert!(status.success(), "{status:?}");
    // The other two serve everything.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let samples = plain.stop().await;
    assert_served(&samples, 100);
    counting.stop(20).await;
    fleet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_stopped_behind_haproxy_is_taken_out_by_its_readyz_before_it_stops_accepting() {
    // Two failed checks a second apart, and a second to spare.
    let fleet = a_stopped_host_fails_no_request(Kind::Haproxy, "shutdown_grace_ms = 3000\n").await;
    let log = fleet.balancer.log();
    assert!(
        log.contains("baton2 is DOWN") && log.contains("503"),
        "HAProxy saw /readyz turn 503:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_stopped_behind_nginx_fails_no_idempotent_request() {
    // No grace: nginx learns from the refused connections and retries on the next host.
    a_stopped_host_fails_no_request(Kind::Nginx, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_timeouts_and_unreachable_hosts_stop_a_rolling_deploy() {
    let modules = vec![hello("1.0.0")];
    let (first, second) = std::thread::scope(|s| {
        let first = s.spawn(|| HostProc::start(&modules));
        // Takes no module of a real size.
        let second =
            s.spawn(|| HostProc::start_with_config(&modules, "[uploads]\nmax_bytes = 4096\n"));
        (first.join().unwrap(), second.join().unwrap())
    });
    let (a, b) = (first.admin.to_string(), second.admin.to_string());
    let new_app = counter("1.0.0");
    let file = new_app.to_str().unwrap();

    // A second host that is not listening: nothing is uploaded anywhere.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = dead.local_addr().unwrap().to_string();
    drop(dead);
    let run = baton(&["deploy", "--admin", &a, "--admin", &nobody, file], &[]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("stopped at {nobody} (2 of 2)"))
            && run.stderr.contains("cannot reach"),
        "{run:?}"
    );
    assert!(!run.stdout.contains("uploading"), "{run:?}");
    assert_eq!(support::get(&first, "/counter/").await.status, 404);

    // Tokens: one for all, or one per host.
    let run = baton(
        &["deploy", "--admin", &a, "--admin", &b, "--admin", &nobody]
            .into_iter()
            .chain(["--admin-token", "x", "--admin-token", "y", file])
            .collect::<Vec<_>>(),
        &[],
    )
    .await;
    assert!(
        run.code == Some(1) && run.stderr.contains("2 --admin-token for 3 --admin"),
        "{run:?}"
    );
    // A rolling deploy waits for every host: no canary, no `--no-wait`.
    let run = baton(
        &["deploy", "--admin", &a, "--admin", &b, "--no-wait", file],
        &[],
    )
    .await;
    assert!(
        run.code == Some(1) && run.stderr.contains("--no-wait deploy to one host"),
        "{run:?}"
    );

    // The second host refuses the upload: the app, new on the first, is undeployed there.
    let run = baton(&["deploy", "--admin", &a, "--admin", &b, file], &[]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    let mut at = 0;
    for line in [
        format!("[{a}] active   counter 1.0.0"),
        format!("[{b}] uploading"),
        format!("[{b}] failed "),
        format!("stopped  at {b} (2 of 2)"),
        format!("[{a}] counter: undeployed 1.0.0"),
    ] {
        at += run.stdout[at..]
            .find(&line)
            .unwrap_or_else(|| panic!("{line:?} not in order in {}", run.stdout));
    }
    assert!(run.stderr.contains(&format!("rolled back {a}")), "{run:?}");
    assert_eq!(support::get(&first, "/counter/").await.status, 404);
    assert_eq!(support::get(&second, "/counter/").await.status, 404);
    assert_eq!(support::get(&first, "/hello/").await.status, 200);

    // The first host's guard window (30 s by default) outlasts the wait: the deploy stops,
    // and the new version, active there, is switched back.
    let v2 = hello("2.0.0");
    let run = baton(
        &[
            "deploy",
            "--admin",
            &a,
            "--admin",
            &b,
            "--timeout-secs",
            "1",
        ]
        .into_iter()
        .chain([v2.to_str().unwrap()])
        .collect::<Vec<_>>(),
        &[],
    )
    .await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains(&format!("stopped at {a} (1 of 2)"))
            && run.stderr.contains("did not retire within 1 s")
            && run.stderr.contains(&format!("rolled back {a}")),
        "{run:?}"
    );
    assert!(
        run.stdout.contains(&format!(
            "[{a}] hello: rolled back to 1.0.0 (replaced 2.0.0)"
        )),
        "{run:?}"
    );
    for host in [&first, &second] {
        let r = support::get(host, "/hello/").await;
        assert_eq!((r.status, r.version()), (200, "hello@1.0.0"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrading_the_hosts_one_at_a_time_behind_haproxy_fails_no_request() {
    let fleet = Fleet::start(Kind::Haproxy, |_| HostOptions {
        supervised: true,
        ..HostOptions::default()
    })
    .await;
    let plain = Load::start(fleet.balancer.url("/hello/"), 8);
    let counting = Counting::start(fleet.balancer.url("/counter/"), 4);
    warmed_up(&fleet).await;
    for host in &fleet.hosts {
        let before = support::status(host).await["host"]["pid"].as_u64();
        // Well inside the test's own wait, so a stuck upgrade says why.
        let admin = host.admin.to_string();
        let run = baton(
            &["upgrade", "--admin", &admin, "--timeout-secs", "120"],
            &[],
        )
        .await;
        assert!(run.ok, "{run:?}");
        assert_ne!(support::status(host).await["host"]["pid"].as_u64(), before);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_served(&plain.stop().await, 100);
    counting.stop(20).await;
}
