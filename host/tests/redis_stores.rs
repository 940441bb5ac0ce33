//! Production Redis as the session store, end to end: real `baton` hosts sharing sessions
//! through a TLS Redis, a Sentinel set and a Cluster, each started by the test on loopback
//! (the test kit's `redis` launchers). The Sentinel master and a Cluster master are killed under
//! load: only session requests fail, for a bounded time, and counts go on where they were.
//! The failover figures are printed (`--nocapture`) for the README.

mod support;

use std::time::{Duration, Instant};

use support::jar::Jar;
use support::load::{Load, assert_no_failures};
use support::redis::{ClientCerts, Cluster, RedisProc, SentinelSet, TlsRedis};
use support::{HostOptions, HostProc, counter, hello};

const COOKIE: &str = "BATON_SESSION";
const WAIT: Duration = Duration::from_secs(15);
/// The longest a failover may keep session requests failing before the test fails: far more
/// than it takes (a few seconds), for a loaded machine.
const FAILOVER_BOUND: Duration = Duration::from_secs(45);
const PASSWORD: &str = "s3cret-Pa55word";
/// `[sessions]` lines that fail a session request after half a second without an answer.
const FAST_FAIL: &str = "op_timeout_ms = 500\n";

/// A host serving `counter` and `hello` with sessions in `store` (given with `--sessions`, as
/// an operator would) and these lines in its `[sessions]` table.
fn host(store: &str, sessions: &str) -> HostProc {
    HostProc::start_with(HostOptions {
        modules: vec![counter("1.0.0"), hello("1.0.0")],
        config: format!("[limits]\nrequest_timeout_ms = 20000\n[sessions]\n{sessions}"),
        args: vec!["--sessions".to_owned(), store.to_owned()],
        ..HostOptions::default()
    })
}

/// The count a `counter` reply shows.
fn count_of(body: &str) -> u64 {
    body.trim()
        .strip_prefix("count ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a count: {body:?}"))
}

/// One increment through `host`; panics unless it succeeds.
async fn count(jar: &Jar, host: &HostProc) -> u64 {
    let r = jar.get(&host.url("/counter/")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    count_of(&r.body)
}

/// Log lines of `host` that mention `text` anywhere.
fn log_mentions(host: &HostProc, text: &str) -> Vec<String> {
    host.log_lines()
        .iter()
        .map(|l| l.to_string())
        .filter(|l| l.contains(text))
        .collect()
}

/// Field `field` of hash `key`, read directly from Redis.
fn hget(conn: &mut impl redis::ConnectionLike, key: &str, field: &str) -> Option<String> {
    redis::cmd("HGET").arg(key).arg(field).query(conn).unwrap()
}

/// The line `host` logs when its session store becomes unavailable.
fn outage_logged(host: &HostProc) -> serde_json::Value {
    host.wait_log(WAIT, |l| {
        l["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("session store unavailable")
    })
}

/// Two hosts on `store` with these `[sessions]` lines, and the session they share after
/// counting through both alternately and a login (which rotates its id).
async fn two_hosts_share_one_session(store: &str, sessions: &str) -> (HostProc, HostProc, Jar) {
    let (a, b) = (host(store, sessions), host(store, sessions));
    let jar = Jar::new(COOKIE);
    assert_eq!(count(&jar, &a).await, 1);
    assert_eq!(count(&jar, &b).await, 2);
    assert_eq!(count(&jar, &a).await, 3);
    let before = jar.id().unwrap();
    let r = jar.get(&b.url("/counter/login?user=ada")).await;
    assert_eq!((r.status, r.body.as_str()), (200, "logged in as ada\n"));
    assert_ne!(jar.id().unwrap(), before, "login rotates the id");
    assert_eq!(jar.get(&a.url("/counter/whoami")).await.body, "ada\n");
    assert_eq!(count(&jar, &a).await, 4, "the count survives the rotation");
    let stale = Jar::new(COOKIE);
    stale.set_id(&before);
    assert_eq!(
        stale.get(&b.url("/counter/whoami")).await.body,
        "anonymous\n",
        "the old id stops working"
    );
    (a, b, jar)
}

/// Counts through `hosts` alternately, one request every 20 ms, while `kill` takes the store's
/// master down, until ten increments in a row succeeded after the failures. Meanwhile
/// requests that need no session go on on both hosts and must all succeed; every failed
/// session request must be a bounded 503; the counts must go on where they were.
async fn failover_under_load(what: &str, hosts: [&HostProc; 2], jar: &Jar, kill: impl FnOnce()) {
    let others: Vec<Load> = hosts
        .iter()
        .map(|h| Load::start(h.url("/hello/"), 1))
        .collect();
    let id = jar.id().expect("a session to count on");
    let mut last = count(jar, hosts[0]).await;
    let killed = Instant::now();
    kill();
    let (mut failed, mut requests, mut after) = (0, 0, Vec::new());
    let mut recovered_after = None;
    while after.len() < 10 {
        assert!(
            killed.elapsed() < FAILOVER_BOUND,
            "session requests still fail {FAILOVER_BOUND:?} after the kill ({failed} failed)"
        );
        let started = Instant::now();
        let r = jar.get(&hosts[requests % 2].url("/counter/")).await;
        requests += 1;
        match r.status {
            200 => {
                let n = count_of(&r.body);
                if failed == 0 {
                    assert_eq!(n, last + 1, "no failure yet, no count lost");
                    last = n;
                } else {
                    recovered_after.get_or_insert(killed.elapsed());
                    after.push(n);
                }
            }
            503 => {
                assert_eq!(r.header("retry-after"), "1");
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "a failed session request took {:?}",
                    started.elapsed()
                );
                failed += 1;
                // A failure after a success is the store flapping: count again from here.
                after.clear();
                recovered_after = None;
            }
            other => panic!("session request answered {other}: {}", r.body),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for load in others {
        assert_no_failures(&load.stop().await);
    }
    assert_eq!(
        jar.id().as_deref(),
        Some(id.as_str()),
        "the session is kept"
    );
    let resumed = after[0];
    // A failed request may have been applied before its answer was lost; Redis replicates
    // asynchronously, so the last acknowledged write may be lost with the master.
    assert!(
        (last..=last + 1 + failed as u64).contains(&resumed),
        "the count went on at {resumed} after {last} and {failed} failures"
    );
    assert!(
        after.windows(2).all(|w| w[1] == w[0] + 1),
        "counts go on one by one: {after:?}"
    );
    assert!(failed > 0, "killing the master failed no session request");
    eprintln!(
        "{what}: {failed} of {requests} session requests failed (503), sessions back {} ms \
         after the master was killed",
        recovered_after.unwrap().as_millis()
    );
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn hosts_share_sessions_through_tls_redis_and_refuse_a_wrong_ca() {
    let redis = TlsRedis::start(ClientCerts::Required);
    let (a, b, jar) =
        two_hosts_share_one_session(&redis.url(), &redis.sessions_config("ca.pem")).await;

    let id = jar.id().unwrap();
    let stored = hget(&mut redis.conn(), &format!("baton:session:{id}"), "count");
    assert_eq!(stored.as_deref(), Some("4"), "stored in the TLS Redis");

    // `#insecure` skips the certificate check (the client certificate is still needed) and
    // says so once, at start.
    let insecure = host(
        &format!("{}#insecure", redis.url()),
        &format!(
            "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
            redis.file("client.pem"),
            redis.file("client-key.pem")
        ),
    );
    assert_eq!(count(&jar, &insecure).await, 5);
    let warnings: Vec<String> = log_mentions(&insecure, "#insecure")
        .into_iter()
        .filter(|l| l.contains("\"WARN\""))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");

    // A CA that did not sign the server's certificate: session requests fail with a 503 and
    // a log line that says why; everything else is served.
    let wrong = host(&redis.url(), &redis.sessions_config("other-ca.pem"));
    let r = jar.get(&wrong.url("/counter/")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(jar.get(&wrong.url("/hello/")).await.status, 200);
    let anonymous = Jar::new(COOKIE);
    assert_eq!(
        anonymous.get(&wrong.url("/counter/whoami")).await.body,
        "anonymous\n"
    );
    let refused = outage_logged(&wrong);
    let error = refused["error"].as_str().unwrap_or("").to_owned();
    assert!(
        error.contains("certificate") || error.contains("UnknownIssuer"),
        "the error says the certificate is not trusted: {refused}"
    );
    assert_eq!(count(&jar, &a).await, 6, "the session is intact");
    assert_eq!(count(&jar, &b).await, 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sentinel_store_follows_a_failover_and_never_shows_its_password() {
    let mut set = SentinelSet::start(PASSWORD);
    let (a, b, jar) = two_hosts_share_one_session(&set.url(), FAST_FAIL).await;
    let id = jar.id().unwrap();
    let stored = hget(
        &mut set.master_conn(),
        &format!("baton:session:{id}"),
        "user",
    );
    assert_eq!(stored.as_deref(), Some("\"ada\""), "stored on the master");

    failover_under_load("sentinel failover", [&a, &b], &jar, || {
        set.kill_master();
    })
    .await;

    // The credentials reached the servers, and were never shown.
    for host in [&a, &b] {
        assert!(log_mentions(host, PASSWORD).is_empty(), "password logged");
        let shown = host.wait_log(WAIT, |l| l["message"] == "session store");
        assert!(
            shown["store"].as_str().unwrap().contains(":***@"),
            "{shown}"
        );
        let status = support::status(host).await.to_string();
        assert!(!status.contains(PASSWORD), "password in /status");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn passwords_stay_hidden_in_errors_and_a_bad_store_url_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisProc::with_password(dir.path(), PASSWORD);
    let master = server.port;

    // A plain redis:// URL with the right password works; a wrong one fails session requests
    // with the reason, not the password.
    let good = host(&format!("redis://:{PASSWORD}@127.0.0.1:{master}/0"), "");
    let jar = Jar::new(COOKIE);
    assert_eq!(count(&jar, &good).await, 1);
    let wrong_password = "not-the-Pa55word";
    let wrong = host(
        &format!("redis://:{wrong_password}@127.0.0.1:{master}/0"),
        "",
    );
    assert_eq!(jar.get(&wrong.url("/counter/")).await.status, 503);
    let refused = outage_logged(&wrong);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("authentication failed"),
        "{refused}"
    );
    for host in [&good, &wrong] {
        for secret in [PASSWORD, wrong_password] {
            assert!(log_mentions(host, secret).is_empty(), "password logged");
        }
        let status = support::status(host).await.to_string();
        assert!(!status.contains(PASSWORD) && !status.contains(wrong_password));
    }

    // A store URL that does not parse is a configuration error, shown without its password.
    for bad in [
        format!("redis+sentinel://:{PASSWORD}@127.0.0.1:1"),
        format!("redis+cluster://:{PASSWORD}@127.0.0.1:1/2"),
        format!("postgres://:{PASSWORD}@127.0.0.1:1"),
    ] {
        let run = support::baton(&["serve", "--no-supervisor", "--sessions", &bad], &[]).await;
        assert_eq!(run.code, Some(64), "{bad}: {run:?}");
        assert!(run.stderr.contains("sessions.store"), "{run:?}");
        assert!(!run.stderr.contains(PASSWORD), "{run:?}");
        assert!(run.stderr.contains(":***@"), "{run:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_store_rotates_expires_counts_exactly_and_survives_a_takeover() {
    let mut cluster = Cluster::start(1);
    let (a, b, jar) = two_hosts_share_one_session(&cluster.url(), FAST_FAIL).await;

    // One hash per session, its id the hash tag; the rotation left nothing behind.
    let id = jar.id().unwrap();
    let mut conn = cluster.conn();
    let stored = hget(&mut conn, &format!("baton:session:{{{id}}}"), "count");
    assert_eq!(
        stored.as_deref(),
        Some("4"),
        "one hash per session, its id the hash tag"
    );
    let stashes: Vec<String> = cluster_keys(&cluster, "baton:session:*~");
    assert!(stashes.is_empty(), "rotation stashes left: {stashes:?}");

    // Concurrent atomic increments through both hosts: each counted exactly once.
    let busy = Jar::new(COOKIE);
    assert_eq!(count(&busy, &a).await, 1);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let (busy, url) = (busy.clone(), [&a, &b][i % 2].url("/counter/"));
        tasks.spawn(async move { busy.get(&url).await });
    }
    let mut counts = Vec::new();
    while let Some(reply) = tasks.join_next().await {
        let reply = reply.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        counts.push(count_of(&reply.body));
    }
    counts.sort_unstable();
    assert_eq!(
        counts,
        (2..=101).collect::<Vec<u64>>(),
        "every increment once"
    );

    // The operators' count and listing walk every master.
    let r = support::http::Http::new()
        .get(&a.admin_url("/sessions/count"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["store"], "redis+cluster");
    assert_eq!(r.json()["count"], 2);

    // Sliding expiry: used, a session outlives its timeout; idle, it ends.
    let expiring = host(&cluster.url(), "timeout_secs = 2\n");
    let short = Jar::new(COOKIE);
    assert_eq!(count(&short, &expiring).await, 1);
    let short_id = short.id().unwrap();
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let r = short.get(&expiring.url("/counter/whoami")).await;
        assert_eq!((r.status, r.body.as_str()), (200, "anonymous\n"));
        assert_eq!(
            short.id().as_deref(),
            Some(short_id.as_str()),
            "still alive"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let key = format!("baton:session:{{{short_id}}}");
    support::eventually(WAIT, "the idle session to expire", async || {
        let exists: i64 = redis::cmd("EXISTS").arg(&key).query(&mut conn).unwrap();
        (exists == 0).then_some(())
    })
    .await;
    assert_eq!(count(&short, &expiring).await, 1, "a fresh session");
    assert_ne!(
        short.id().unwrap(),
        short_id,
        "an expired id is not adopted"
    );

    // The master of the session's slot dies; its replica takes over.
    let key = format!("baton:session:{{{id}}}");
    failover_under_load("cluster takeover", [&a, &b], &jar, || {
        cluster.kill_master_of(&key);
    })
    .await;
}

/// Every key matching `pattern` on any node of `cluster`.
fn cluster_keys(cluster: &Cluster, pattern: &str) -> Vec<String> {
    let mut conn = cluster.conn();
    redis::cmd("KEYS")
        .arg(pattern)
        .query::<Vec<String>>(&mut conn)
        .unwrap()
}
