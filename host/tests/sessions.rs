//! Sessions end to end: a real `baton` process, the `counter` example and a fixture module, a
//! cookie-jar client, and a private `redis-server` that the tests kill and restart on purpose.
//! Each behaviour runs against Redis and, where it applies, the in-memory store.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::jar::Jar;
use support::redis::RedisServer;
use support::{HostOptions, HostProc, counter, hello, module};

const COOKIE: &str = "BATON_SESSION";
const WAIT: Duration = Duration::from_secs(15);

/// Where the host under test keeps its sessions.
enum Store {
    Memory,
    Redis(RedisServer),
}

impl Store {
    fn redis() -> Store {
        Store::Redis(RedisServer::start())
    }

    fn server(&mut self) -> &mut RedisServer {
        match self {
            Store::Redis(server) => server,
            Store::Memory => panic!("not a Redis test"),
        }
    }

    /// A host serving `modules`, with these lines in its `[sessions]` table; Redis is chosen
    /// with the `--sessions` flag, as an operator would.
    fn host(&self, modules: &[PathBuf], sessions: &str) -> HostProc {
        let args = match self {
            Store::Memory => Vec::new(),
            Store::Redis(server) => vec!["--sessions".to_owned(), server.url()],
        };
        HostProc::start_with(HostOptions {
            modules: modules.to_vec(),
            config: format!("[sessions]\n{sessions}\n"),
            args,
            ..HostOptions::default()
        })
    }

    /// A host as [`Store::host`] makes it, and a client logged in to its `counter` as `ada`.
    async fn logged_in(&self, modules: &[PathBuf], sessions: &str) -> (HostProc, Jar) {
        let host = self.host(modules, sessions);
        let jar = Jar::new(COOKIE);
        jar.get(&host.url("/counter/login?user=ada")).await;
        (host, jar)
    }

    /// The Redis hash of session `id`, if Redis holds it.
    fn hash(&self, id: &str) -> Option<Vec<(String, String)>> {
        let Store::Redis(server) = self else {
            return None;
        };
        let fields: Vec<(String, String)> = ::redis::cmd("HGETALL")
            .arg(format!("baton:session:{id}"))
            .query(&mut server.conn())
            .unwrap();
        (!fields.is_empty()).then_some(fields)
    }

    /// Asserts that the store no longer holds session `id` (checked directly in Redis; for the
    /// memory store, through the app: the id gets a fresh session).
    async fn assert_gone(&self, host: &HostProc, id: &str) {
        if let Store::Redis(_) = self {
            assert_eq!(self.hash(id), None, "session {id} still in Redis");
        }
        let stale = Jar::new(COOKIE);
        stale.set_id(id);
        assert_eq!(
            stale.get(&host.url("/counter/whoami")).await.body,
            "anonymous\n"
        );
        assert_eq!(stale.get(&host.url("/counter/")).await.body, "count 1\n");
        assert_ne!(
            stale.id().as_deref(),
            Some(id),
            "an unknown id is never adopted"
        );
    }
}

/// Runs each store-generic test `$body` as two tests, `$redis` against a private
/// `redis-server` and `$memory` against the in-memory store.
macro_rules! both_stores {
    ($($body:ident: $redis:ident, $memory:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread")]
        async fn $redis() {
            $body(Store::redis()).await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn $memory() {
            $body(Store::Memory).await;
        }
    )*};
}

// The tests every store must pass, written once below.
both_stores! {
    counts_per_session:
        the_counter_counts_per_session_with_redis,
        the_counter_counts_per_session_in_memory;
    login_rotates_and_logout_invalidates:
        login_rotates_the_id_and_logout_invalidates_with_redis,
        login_rotates_the_id_and_logout_invalidates_in_memory;
    sessions_slide_then_expire:
        sessions_slide_while_used_and_expire_when_idle_with_redis,
        sessions_slide_while_used_and_expire_when_idle_in_memory;
    forged_ids_are_not_adopted:
        a_forged_id_is_not_adopted_with_redis,
        a_forged_id_is_not_adopted_in_memory;
    concurrent_requests_lose_nothing:
        concurrent_requests_of_one_session_lose_no_update_with_redis,
        concurrent_requests_of_one_session_lose_no_update_in_memory;
    a_session_survives_a_swap_from_v1_to_v2:
        a_session_survives_a_swap_from_v1_to_v2_with_redis,
        a_session_survives_a_swap_from_v1_to_v2_in_memory;
}

fn fixture() -> PathBuf {
    module("fixture-sessions", &[])
}

fn random_id() -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn log_count(host: &HostProc, message: &str) -> usize {
    host.log_lines()
        .iter()
        .filter(|l| l["message"].as_str().unwrap_or("").starts_with(message))
        .count()
}

// ---------------------------------------------------------------------------------------------
// The counter: one count per client; the first write creates the session and its cookie.

async fn counts_per_session(store: Store) {
    let host = store.host(&[counter("1.0.0"), fixture()], "");
    let (ada, bob) = (Jar::new(COOKIE), Jar::new(COOKIE));

    let r = ada.get(&host.url("/counter/whoami")).await;
    assert_eq!((r.status, r.body.as_str()), (200, "anonymous\n"));
    assert_eq!(r.header("set-cookie"), "", "reading creates no session");

    let r = ada.get(&host.url("/counter/")).await;
    assert_eq!((r.status, r.body.as_str()), (200, "count 1\n"));
    let cookie = r.header("set-cookie");
    let id = ada.id().expect("the first write sets the cookie");
    assert_eq!(id.len(), 48, "192-bit ids");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "not Secure unless configured: {cookie}"
    );

    for n in 2..=3 {
        let r = ada.get(&host.url("/counter/")).await;
        assert_eq!(r.body, format!("count {n}\n"));
        assert_eq!(r.header("set-cookie"), "", "same session, no new cookie");
    }
    assert_eq!(bob.get(&host.url("/counter/")).await.body, "count 1\n");
    assert_eq!(ada.get(&host.url("/counter/")).await.body, "count 4\n");

    if let Store::Redis(server) = &store {
        let mut fields = store.hash(&id).expect("one hash per session");
        fields.sort();
        let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            ["#accessed_ms", "#created_ms", "#timeout_ms", "count"]
        );
        assert!(fields.contains(&("count".into(), "4".into())));
        assert!(fields.contains(&("#timeout_ms".into(), "1800000".into())));
        let ttl: i64 = ::redis::cmd("TTL")
            .arg(format!("baton:session:{id}"))
            .query(&mut server.conn())
            .unwrap();
        assert!((1..=1800).contains(&ttl), "sliding TTL = timeout: {ttl}");

        // Requests that do not use the session cost no store call, cookie or not.
        let mut conn = server.conn();
        let _: () = ::redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query(&mut conn)
            .unwrap();
        for _ in 0..10 {
            assert_eq!(ada.get(&host.url("/sessions/plain")).await.status, 200);
        }
        let stats: String = ::redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut conn)
            .unwrap();
        assert!(!stats.contains("cmdstat_eval"), "{stats}");
    }
}

// ---------------------------------------------------------------------------------------------
// Login rotates the id (attributes kept, old id gone); logout invalidates.

async fn login_rotates_and_logout_invalidates(store: Store) {
    let host = store.host(&[counter("1.0.0")], "");
    let jar = Jar::new(COOKIE);
    jar.get(&host.url("/counter/")).await;
    jar.get(&host.url("/counter/")).await;
    let before = jar.id().unwrap();

    let r = jar.get(&host.url("/counter/login?user=ada")).await;
    assert_eq!((r.status, r.body.as_str()), (200, "logged in as ada\n"));
    let after = jar.id().unwrap();
    assert_ne!(after, before, "login gives a new id");
    assert_eq!(jar.get(&host.url("/counter/whoami")).await.body, "ada\n");
    assert_eq!(
        jar.get(&host.url("/counter/")).await.body,
        "count 3\n",
        "attributes survive the rotation"
    );
    store.assert_gone(&host, &before).await;

    let r = jar.get(&host.url("/counter/logout")).await;
    assert_eq!(r.body, "logged out\n");
    assert!(r.header("set-cookie").contains("Max-Age=0"));
    assert_eq!(jar.id(), None, "the cookie is expired");
    assert_eq!(
        jar.get(&host.url("/counter/whoami")).await.body,
        "anonymous\n"
    );
    store.assert_gone(&host, &after).await;
}

// ---------------------------------------------------------------------------------------------
// Expiry: a session in use stays alive past its timeout; an idle one is gone after it.

async fn sessions_slide_then_expire(store: Store) {
    let (host, jar) = store
        .logged_in(&[counter("1.0.0")], "timeout_secs = 2")
        .await;
    let id = jar.id().unwrap();

    // Read-only use for twice the timeout keeps the session.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(jar.get(&host.url("/counter/whoami")).await.body, "ada\n");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Then idle: the session ends by itself.
    match &store {
        Store::Redis(_) => {
            support::eventually(WAIT, "the Redis key to expire", async || {
                store.hash(&id).is_none().then_some(())
            })
            .await;
        }
        // Being idle for longer than the timeout is the behaviour under test.
        Store::Memory => tokio::time::sleep(Duration::from_secs(3)).await,
    }
    assert_eq!(
        jar.get(&host.url("/counter/whoami")).await.body,
        "anonymous\n"
    );
    assert_eq!(jar.id(), None, "the stale cookie is expired");
    assert_eq!(jar.get(&host.url("/counter/")).await.body, "count 1\n");
    assert_ne!(jar.id().unwrap(), id, "expired ids are not reused");
}

// ---------------------------------------------------------------------------------------------
// A forged id is never adopted.

async fn forged_ids_are_not_adopted(store: Store) {
    let host = store.host(&[counter("1.0.0")], "");
    for forged in [random_id(), "../../etc/passwd".to_owned(), "x".repeat(48)] {
        let jar = Jar::new(COOKIE);
        jar.set_id(&forged);
        assert_eq!(jar.get(&host.url("/counter/")).await.body, "count 1\n");
        let id = jar.id().unwrap();
        assert_ne!(id, forged);
        assert_eq!(store.hash(&forged), None);
        assert_eq!(jar.get(&host.url("/counter/")).await.body, "count 2\n");
    }
}

// ---------------------------------------------------------------------------------------------
// Concurrency: atomic increments lose nothing; writes of different attributes lose none.

async fn concurrent_requests_lose_nothing(store: Store) {
    let (host, jar) = store.logged_in(&[counter("1.0.0"), fixture()], "").await;

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (jar, url) = (jar.clone(), host.url("/counter/"));
        tasks.spawn(async move { jar.get(&url).await });
    }
    let mut counts = Vec::new();
    while let Some(reply) = tasks.join_next().await {
        let reply = reply.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        let n: u64 = reply
            .body
            .trim()
            .strip_prefix("count ")
            .unwrap()
            .parse()
            .unwrap();
        counts.push(n);
    }
    counts.sort_unstable();
    assert_eq!(
        counts,
        (1..=100).collect::<Vec<u64>>(),
        "every increment counted once"
    );

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (jar, url) = (
            jar.clone(),
            host.url(&format!("/sessions/put?name=k{i}&value={i}")),
        );
        tasks.spawn(async move { jar.get(&url).await });
    }
    while let Some(reply) = tasks.join_next().await {
        assert_eq!(reply.unwrap().status, 200);
    }
    let names = jar.get(&host.url("/sessions/names")).await.body;
    let names: Vec<&str> = names.trim().split(',').collect();
    for i in 0..50 {
        assert!(
            names.contains(&format!("k{i}").as_str()),
            "k{i} lost: {names:?}"
        );
    }
    assert!(
        names.contains(&"count") && names.contains(&"user"),
        "{names:?}"
    );
    assert_eq!(jar.get(&host.url("/counter/")).await.body, "count 101\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_on_two_hosts_lose_nothing_with_redis() {
    let store = Store::redis();
    let hosts = [
        store.host(&[counter("1.0.0")], ""),
        store.host(&[counter("1.0.0")], ""),
    ];
    // Each host counts once first, so each starts the load with a value it expects (soon
    // stale) rather than with a load.
    let jar = Jar::new(COOKIE);
    assert_eq!(jar.get(&hosts[0].url("/counter/")).await.body, "count 1\n");
    assert_eq!(jar.get(&hosts[1].url("/counter/")).await.body, "count 2\n");

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let (jar, url) = (jar.clone(), hosts[i % 2].url("/counter/"));
        tasks.spawn(async move { jar.get(&url).await });
    }
    let mut counts = Vec::new();
    while let Some(reply) = tasks.join_next().await {
        let reply = reply.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        let n: u64 = reply
            .body
            .trim()
            .strip_prefix("count ")
            .unwrap()
            .parse()
            .unwrap();
        counts.push(n);
    }
    counts.sort_unstable();
    assert_eq!(
        counts,
        (3..=102).collect::<Vec<u64>>(),
        "every increment counted once, whichever host ran it"
    );
    // And afterwards each host builds on the other's last count.
    assert_eq!(
        jar.get(&hosts[0].url("/counter/")).await.body,
        "count 103\n"
    );
    assert_eq!(
        jar.get(&hosts[1].url("/counter/")).await.body,
        "count 104\n"
    );
    assert_eq!(
        jar.get(&hosts[0].url("/counter/")).await.body,
        "count 105\n"
    );
}

// ---------------------------------------------------------------------------------------------
// Version tolerance: an attribute that no longer decodes is an error for it alone.

/// `counter` v2 as a module that reads `count` as a string where v1 stored a number.
fn counter_v2_reading_other_types() -> PathBuf {
    module(
        "fixture-sessions",
        &[
            ("BATON_FIXTURE_APP", "counter"),
            ("BATON_APP_VERSION", "2.0.0"),
        ],
    )
}

/// Hot-swaps the running `counter` to `next` (built as `version`): drops the file into the
/// watched directory and waits until the new version is active.
fn swap_counter(host: &HostProc, next: PathBuf, version: &str) {
    host.drop_module(&next, "00-counter.so");
    host.wait_log(std::time::Duration::from_secs(60), |l| {
        l["message"] == "active" && l["app"] == "counter" && l["version"] == version
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attribute_v2_cannot_decode_fails_alone_with_redis() {
    let store = Store::redis();
    let (host, jar) = store.logged_in(&[counter("1.0.0")], "").await;
    jar.get(&host.url("/counter/")).await;
    let r = jar.get(&host.url("/counter/")).await;
    assert_eq!(
        (r.body.as_str(), r.version()),
        ("count 2\n", "counter@1.0.0")
    );

    swap_counter(&host, counter_v2_reading_other_types(), "2.0.0");
    let r = jar
        .get(&host.url("/counter/get?name=count&as=string"))
        .await;
    assert_eq!(
        (r.status, r.body.as_str(), r.version()),
        (200, "count undecodable\n", "counter@2.0.0"),
        "one attribute that does not decode is no 500"
    );
    let r = jar.get(&host.url("/counter/get?name=user&as=string")).await;
    assert_eq!(r.body, "user=ada\n", "the rest of the session is intact");
    let r = jar.get(&host.url("/counter/get?name=count&as=u64")).await;
    assert_eq!(r.body, "count=2\n", "the value itself is untouched");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attribute_another_app_cannot_decode_fails_alone_in_memory() {
    // Without hot swap, two apps of one host stand in for two versions sharing a session.
    let store = Store::Memory;
    let (host, jar) = store.logged_in(&[counter("1.0.0"), fixture()], "").await;
    jar.get(&host.url("/counter/")).await;
    let r = jar
        .get(&host.url("/sessions/get?name=count&as=string"))
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, "count undecodable\n"));
    // The app's own log line, written on its worker thread, carries the request's span.
    let skipped = host.wait_log(WAIT, |l| {
        l["target"] == "baton::app"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("attribute skipped"))
    });
    assert_eq!(
        (
            skipped["span"]["method"].as_str(),
            skipped["span"]["path"].as_str()
        ),
        (Some("GET"), Some("/get")),
        "{skipped}"
    );
    let r = jar
        .get(&host.url("/sessions/get?name=user&as=string"))
        .await;
    assert_eq!(r.body, "user=ada\n");
    assert_eq!(jar.get(&host.url("/counter/")).await.body, "count 2\n");
}

// ---------------------------------------------------------------------------------------------
// Outage: only session requests fail, with a bounded 503; recovery is automatic.

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_outage_fails_only_session_requests_and_heals_itself() {
    let mut store = Store::redis();
    // A hang would end in the request timeout's 504: a 503 shows the session timeout bounds it.
    let host = HostProc::start_with(HostOptions {
        modules: vec![counter("1.0.0"), hello("1.0.0")],
        config: "[limits]\nrequest_timeout_ms = 20000\n[sessions]\nop_timeout_ms = 500\n".into(),
        args: vec!["--sessions".into(), store.server().url()],
        ..HostOptions::default()
    });
    let (jar, anonymous) = (Jar::new(COOKIE), Jar::new(COOKIE));
    assert_eq!(jar.get(&host.url("/counter/")).await.body, "count 1\n");
    let id = jar.id().unwrap();

    store.server().kill();
    for path in [
        "/counter/",
        "/counter/whoami",
        "/counter/login?user=ada",
        "/counter/",
    ] {
        let r = jar.get(&host.url(path)).await;
        assert_eq!(r.status, 503, "{path}: {}", r.body);
        assert_eq!(r.header("retry-after"), "1", "{path}");
    }
    assert_eq!(jar.id().as_deref(), Some(id.as_str()), "the cookie is kept");
    let r = jar.get(&host.url("/hello/")).await;
    assert_eq!(r.status, 200, "other apps are unaffected");
    let r = anonymous.get(&host.url("/counter/whoami")).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "anonymous\n"),
        "a request without a session needs no store"
    );
    host.wait_log(WAIT, |l| {
        l["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("session store unavailable")
    });
    assert_eq!(
        log_count(&host, "session store unavailable"),
        1,
        "logged once"
    );
    let warnings: Vec<String> = host
        .log_lines()
        .iter()
        .filter(|l| l["level"] == "WARN" && l.to_string().contains("session store"))
        .map(|l| l.to_string())
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning for the outage, not one per failed request: {warnings:#?}"
    );

    store.server().restart();
    let r = support::eventually(WAIT, "sessions to work again", async || {
        let r = jar.get(&host.url("/counter/")).await;
        (r.status == 200).then_some(r)
    })
    .await;
    // The restarted Redis kept no data (no persistence): the client starts over, safely.
    assert_eq!(r.body, "count 1\n");
    assert_ne!(jar.id().unwrap(), id);
    assert_eq!(jar.get(&host.url("/counter/")).await.body, "count 2\n");
    host.wait_log(WAIT, |l| l["message"] == "session store available again");
    assert_eq!(log_count(&host, "session store unavailable"), 1);
    assert_eq!(log_count(&host, "session store available again"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_redis_costs_a_session_request_the_op_timeout_not_the_request_timeout() {
    let store = Store::redis();
    let Store::Redis(server) = &store else {
        unreachable!()
    };
    let host = HostProc::start_with(HostOptions {
        modules: vec![counter("1.0.0"), hello("1.0.0")],
        config: "[limits]\nrequest_timeout_ms = 20000\n[sessions]\nop_timeout_ms = 300\n".into(),
        args: vec!["--sessions".into(), server.url()],
        ..HostOptions::default()
    });
    let jar = Jar::new(COOKIE);
    assert_eq!(jar.get(&host.url("/counter/")).await.body, "count 1\n");

    server.pause();
    let r = jar.get(&host.url("/counter/")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(jar.get(&host.url("/hello/")).await.status, 200);
    server.resume();

    support::eventually(WAIT, "sessions to answer again", async || {
        let r = jar.get(&host.url("/counter/whoami")).await;
        (r.status == 200).then_some(())
    })
    .await;
    let r = jar.get(&host.url("/counter/")).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "count 2\n"),
        "the session outlived the stall and the failed increment wrote nothing"
    );
}

// ---------------------------------------------------------------------------------------------
// Sharing: two hosts, a swap, a restart.

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_share_sessions_through_redis() {
    let store = Store::redis();
    let (a, b) = (
        store.host(&[counter("1.0.0")], ""),
        store.host(&[counter("1.0.0")], ""),
    );
    let jar = Jar::new(COOKIE);
    assert_eq!(jar.get(&a.url("/counter/")).await.body, "count 1\n");
    assert_eq!(jar.get(&a.url("/counter/")).await.body, "count 2\n");
    assert_eq!(jar.get(&b.url("/counter/")).await.body, "count 3\n");
    jar.get(&b.url("/counter/login?user=ada")).await;
    assert_eq!(jar.get(&a.url("/counter/whoami")).await.body, "ada\n");
    assert_eq!(jar.get(&a.url("/counter/")).await.body, "count 4\n");
    jar.get(&a.url("/counter/logout")).await;
    assert_eq!(jar.get(&b.url("/counter/whoami")).await.body, "anonymous\n");
}

async fn a_session_survives_a_swap_from_v1_to_v2(store: Store) {
    let host = store.host(&[counter("1.0.0")], "");
    let jar = Jar::new(COOKIE);
    for n in 1..=2 {
        let r = jar.get(&host.url("/counter/")).await;
        assert_eq!(
            (r.body.clone(), r.version()),
            (format!("count {n}\n"), "counter@1.0.0")
        );
    }
    swap_counter(&host, counter("2.0.0"), "2.0.0");
    for n in 3..=4 {
        let r = jar.get(&host.url("/counter/")).await;
        assert_eq!(
            (r.body.clone(), r.version()),
            (format!("count {n}\n"), "counter@2.0.0")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_survives_a_host_restart_with_redis() {
    let store = Store::redis();
    let (host, jar) = store.logged_in(&[counter("1.0.0")], "").await;
    assert_eq!(jar.get(&host.url("/counter/")).await.body, "count 1\n");
    drop(host);
    let host = store.host(&[counter("1.0.0")], "");
    assert_eq!(jar.get(&host.url("/counter/")).await.body, "count 2\n");
    assert_eq!(jar.get(&host.url("/counter/whoami")).await.body, "ada\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_session_ends_with_its_host_and_its_id_is_not_adopted() {
    let store = Store::Memory;
    let host = store.host(&[counter("1.0.0")], "");
    let jar = Jar::new(COOKIE);
    jar.get(&host.url("/counter/")).await;
    let id = jar.id().unwrap();
    drop(host);
    let host = store.host(&[counter("1.0.0")], "");
    assert_eq!(jar.get(&host.url("/counter/")).await.body, "count 1\n");
    assert_ne!(jar.id().unwrap(), id);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cookie_name_and_secure_flag_are_configurable() {
    let store = Store::Memory;
    let host = store.host(
        &[counter("1.0.0")],
        "cookie_name = \"SID\"\ncookie_secure = true",
    );
    let jar = Jar::new("SID");
    let r = jar.get(&host.url("/counter/")).await;
    let cookie = r.header("set-cookie");
    assert!(
        cookie.starts_with("SID=") && cookie.contains("; Secure"),
        "{cookie}"
    );
    assert_eq!(jar.get(&host.url("/counter/")).await.body, "count 2\n");
}

// ---------------------------------------------------------------------------------------------
// What a counter request costs Redis: one command.

/// The commands the host's Lua scripts run. Redis counts those too, but the host never sends
/// them itself (its direct commands are `DEL`, `SCAN`, `HMGET`, `HKEYS` and `PTTL`).
const RUN_BY_SCRIPTS: [&str; 7] = [
    "hget", "hset", "hdel", "hgetall", "exists", "pexpire", "rename",
];

/// The commands clients sent `server` since its statistics were last reset, by name: the
/// statistics' own (`INFO`, `CONFIG`) and those the scripts run left out.
fn redis_commands(server: &RedisServer) -> Vec<(String, u64)> {
    let stats: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut server.conn())
        .unwrap();
    stats
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            let own = name == "info" || name.starts_with("config");
            (!own && !RUN_BY_SCRIPTS.contains(&name)).then(|| (name.to_owned(), calls))
        })
        .collect()
}

fn reset_redis_stats(server: &RedisServer) {
    let _: () = ::redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut server.conn())
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_counter_request_costs_one_redis_command() {
    let store = Store::redis();
    let server = match &store {
        Store::Redis(server) => server,
        Store::Memory => unreachable!(),
    };
    let (a, b) = (
        store.host(&[counter("1.0.0")], ""),
        store.host(&[counter("1.0.0")], ""),
    );
    // Scripts loaded, connections open.
    let warm = Jar::new(COOKIE);
    for host in [&a, &b] {
        assert!(
            warm.get(&host.url("/counter/"))
                .await
                .body
                .starts_with("count ")
        );
    }

    // A new session: created with its first count.
    let jar = Jar::new(COOKIE);
    reset_redis_stats(server);
    assert_eq!(jar.get(&a.url("/counter/")).await.body, "count 1\n");
    assert_eq!(redis_commands(server), [("evalsha".to_owned(), 1)]);

    // Its next requests on the same host: one compare-and-set each, which loads the session.
    reset_redis_stats(server);
    for n in 2..=21 {
        assert_eq!(
            jar.get(&a.url("/counter/")).await.body,
            format!("count {n}\n")
        );
    }
    assert_eq!(redis_commands(server), [("evalsha".to_owned(), 20)]);

    // Alternating hosts: each finds the count changed by the other since its last request, so
    // each request costs two commands, and no count is lost or read stale.
    reset_redis_stats(server);
    for n in 22..=31 {
        let host = if n % 2 == 0 { &b } else { &a };
        assert_eq!(
            jar.get(&host.url("/counter/")).await.body,
            format!("count {n}\n")
        );
    }
    assert_eq!(redis_commands(server), [("evalsha".to_owned(), 20)]);
}

// ---------------------------------------------------------------------------------------------
// A request whose app never uses its session costs no store call, cookie or not.

/// Every session store operation and its count at `/metrics`, failures included.
async fn store_calls(host: &HostProc) -> Vec<(String, f64)> {
    let text = support::http::Http::new()
        .get(&host.admin_url("/metrics"))
        .await
        .body;
    let calls: Vec<(String, f64)> = text
        .lines()
        .filter(|l| {
            l.starts_with("baton_session_store_operations_total{")
                || l.starts_with("baton_session_store_errors_total{")
        })
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect();
    assert_eq!(
        calls.len(),
        18,
        "nine operations, each with its errors: {text}"
    );
    calls
}

async fn untouched_sessions_cost_no_store_call(store: Store) {
    let host = store.host(&[hello("1.0.0"), counter("1.0.0")], "");
    let (known, forged) = (Jar::new(COOKIE), Jar::new(COOKIE));
    assert_eq!(known.get(&host.url("/counter/")).await.body, "count 1\n");
    forged.set_id(&random_id());
    let before = store_calls(&host).await;
    assert!(
        before.iter().any(|(_, n)| *n > 0.0),
        "the counter's calls are counted: {before:?}"
    );
    for jar in [&known, &forged] {
        for _ in 0..5 {
            let r = jar.get(&host.url("/hello/")).await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.header("set-cookie"), "", "no session, no cookie");
        }
    }
    assert_eq!(
        store_calls(&host).await,
        before,
        "requests that never use their session cost no store call"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untouched_session_costs_no_store_call_with_redis() {
    untouched_sessions_cost_no_store_call(Store::redis()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untouched_session_costs_no_store_call_in_memory() {
    untouched_sessions_cost_no_store_call(Store::Memory).await;
}
