//! The host's sessions through the admin API and the `baton sessions` command line, against the
//! in-memory store and a private `redis-server`: listing, counting, invalidating (the client then
//! starts over), the token, unknown ids, and the session store metrics, with Redis killed too.

mod support;

use serde_json::Value;
use support::http::{Http, Reply};
use support::jar::Jar;
use support::redis::RedisServer;
use support::{HostOptions, HostProc, baton, counter};

const COOKIE: &str = "BATON_SESSION";
const TOKEN: &str = "t0ken-for-session-tests";

/// A host serving `counter` with an admin token, its sessions in memory or in `redis`.
fn host(redis: Option<&RedisServer>) -> HostProc {
    HostProc::start_with(HostOptions {
        modules: vec![counter("1.0.0")],
        config: format!("admin_token = \"{TOKEN}\"\n"),
        args: redis
            .map(|r| vec!["--sessions".to_owned(), r.url()])
            .unwrap_or_default(),
        ..HostOptions::default()
    })
}

/// An admin call with the test token.
async fn admin(host: &HostProc, method: &str, path: &str) -> Reply {
    support::admin_call(host, TOKEN, method, path, bytes::Bytes::new()).await
}

fn json(reply: &Reply) -> Value {
    reply.json()
}

async fn count_to(jar: &Jar, host: &HostProc, n: usize) -> String {
    for i in 1..=n {
        let r = jar.get(&host.url("/counter/")).await;
        assert_eq!((r.status, r.body.clone()), (200, format!("count {i}\n")));
    }
    jar.id().expect("the counter sets the session cookie")
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// The session store's `baton_session_store_{counter}_total` for operation `op`.
fn store_metric(text: &str, counter: &str, op: &str) -> f64 {
    metric(
        text,
        &format!("baton_session_store_{counter}_total{{op=\"{op}\"}}"),
    )
}

async fn list_count_and_invalidate(redis: Option<&RedisServer>) {
    let host = host(redis);
    let store = if redis.is_some() { "redis" } else { "memory" };
    let (ada, bob, cy) = (Jar::new(COOKIE), Jar::new(COOKIE), Jar::new(COOKIE));
    let ada_id = count_to(&ada, &host, 3).await;
    let bob_id = count_to(&bob, &host, 1).await;
    let cy_id = count_to(&cy, &host, 2).await;

    // The token is required, as everywhere on the admin API.
    let http = Http::new();
    for (method, path) in [
        ("GET", "/sessions".to_owned()),
        ("GET", "/sessions/count".to_owned()),
        ("DELETE", format!("/sessions/{ada_id}")),
    ] {
        let r = http
            .send(method, &host.admin_url(&path), &[], bytes::Bytes::new())
            .await
            .unwrap();
        assert_eq!(r.status, 401, "{method} {path}: {}", r.body);
    }

    // Count and list.
    let r = admin(&host, "GET", "/sessions/count").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r)["count"], 3);
    assert_eq!(json(&r)["store"], store);
    let r = admin(&host, "GET", "/sessions").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let listing = json(&r);
    assert_eq!(listing["more"], false);
    let sessions = listing["sessions"].as_array().unwrap();
    let mut prefixes: Vec<&str> = sessions
        .iter()
        .map(|s| s["id_prefix"].as_str().unwrap())
        .collect();
    prefixes.sort_unstable();
    let mut expected = vec![&ada_id[..12], &bob_id[..12], &cy_id[..12]];
    expected.sort_unstable();
    assert_eq!(prefixes, expected);
    for id in [&ada_id, &bob_id, &cy_id] {
        assert!(!r.body.contains(id.as_str()), "full ids are never listed");
    }
    for s in sessions {
        assert_eq!(s["attributes"], serde_json::json!(["count"]), "{s}");
        assert_eq!(s["timeout_ms"], 1_800_000, "{s}");
        assert!(s["expires_in_ms"].as_u64().unwrap() > 0, "{s}");
        assert!(s["created_unix_ms"].as_u64().unwrap() > 0, "{s}");
    }
    let r = admin(&host, "GET", "/sessions?limit=2").await;
    assert_eq!(json(&r)["sessions"].as_array().unwrap().len(), 2);
    assert_eq!(json(&r)["more"], true);
    let r = admin(&host, "GET", "/sessions?limit=0").await;
    r.assert_error(400, "limit");
    let r = admin(&host, "GET", &format!("/sessions/{bob_id}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r)["id_prefix"], &bob_id[..12]);

    // Sessions are the host's: an app's path answers for the same ones.
    let r = admin(&host, "GET", "/apps/counter/sessions/count").await;
    assert_eq!((r.status, json(&r)["count"].as_u64()), (200, Some(3)));
    let r = admin(&host, "GET", "/apps/nope/sessions").await;
    assert_eq!(r.status, 404, "{}", r.body);

    // Unknown and malformed ids.
    let unknown = "0".repeat(48);
    let r = admin(&host, "DELETE", &format!("/sessions/{unknown}")).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = admin(&host, "GET", &format!("/sessions/{unknown}")).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = admin(&host, "DELETE", "/sessions/abc").await;
    assert_eq!(r.status, 400, "{}", r.body);

    // The command line.
    let addr = host.admin.to_string();
    let env = [("BATON_ADMIN", addr.as_str()), ("BATON_ADMIN_TOKEN", TOKEN)];
    let run = baton(&["sessions", "count"], &[("BATON_ADMIN", &addr)]).await;
    assert!(!run.ok && run.stderr.contains("401"), "{run:?}");
    let run = baton(&["sessions", "count"], &env).await;
    assert!(run.ok, "{run:?}");
    assert_eq!(run.stdout.trim(), format!("3 sessions ({store} store)"));
    let run = baton(&["sessions", "list"], &env).await;
    assert!(run.ok, "{run:?}");
    for id in [&ada_id, &bob_id, &cy_id] {
        assert!(run.stdout.contains(&id[..12]), "{}", run.stdout);
        assert!(!run.stdout.contains(id.as_str()), "{}", run.stdout);
    }
    assert!(run.stdout.contains("count"), "{}", run.stdout);
    let run = baton(&["sessions", "list", "--json", "--limit", "1"], &env).await;
    assert!(run.ok, "{run:?}");
    let listing: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(listing["sessions"].as_array().unwrap().len(), 1);

    // Invalidate ada by the prefix a listing shows: her next request starts over.
    let run = baton(&["sessions", "invalidate", &ada_id[..12]], &env).await;
    assert!(run.ok, "{run:?}");
    assert!(
        run.stdout
            .contains(&format!("invalidated session {}", &ada_id[..12])),
        "{}",
        run.stdout
    );
    let r = ada.get(&host.url("/counter/")).await;
    assert_eq!(r.body, "count 1\n");
    assert_ne!(ada.id().as_deref(), Some(ada_id.as_str()), "a fresh id");
    let run = baton(&["sessions", "invalidate", &ada_id], &env).await;
    assert!(!run.ok && run.stderr.contains("404"), "{run:?}");

    // Invalidate bob by his full id through the API.
    let r = admin(&host, "DELETE", &format!("/sessions/{bob_id}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r)["invalidated"], &bob_id[..12]);
    assert_eq!(bob.get(&host.url("/counter/")).await.body, "count 1\n");
    assert_eq!(cy.get(&host.url("/counter/")).await.body, "count 3\n");
    let r = admin(&host, "GET", "/sessions/count").await;
    assert_eq!(json(&r)["count"], 3, "ada and bob anew, and cy");

    // Every store call is counted by operation.
    let m = admin(&host, "GET", "/metrics").await.body;
    let op = |name: &str| store_metric(&m, "operations", name);
    // In Redis a count that starts a request is one compare-and-set, which loads the session
    // too; in memory a load comes first. Either way: the ids invalidated above are looked up.
    assert!(op("load") >= 2.0, "{m}");
    assert!(op("compare_and_set") >= 4.0, "{m}");
    assert!(op("create") >= 5.0, "{m}");
    assert!(op("remove") >= 2.0, "{m}");
    assert!(op("count") >= 3.0, "{m}");
    assert!(op("list") >= 1.0, "{m}");
    assert_eq!(store_metric(&m, "errors", "load"), 0.0, "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_are_listed_counted_and_invalidated_in_memory() {
    list_count_and_invalidate(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_are_listed_counted_and_invalidated_in_redis() {
    let redis = RedisServer::start();
    list_count_and_invalidate(Some(&redis)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_down_the_admin_api_says_so_and_the_metrics_count_the_errors() {
    let mut redis = RedisServer::start();
    let host = host(Some(&redis));
    let jar = Jar::new(COOKIE);
    count_to(&jar, &host, 2).await;
    redis.kill();

    let r = jar.get(&host.url("/counter/")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    let r = admin(&host, "GET", "/sessions/count").await;
    r.assert_error(503, "session store");
    assert_eq!(r.header("retry-after"), "1");
    let r = admin(&host, "GET", "/sessions").await;
    assert_eq!(r.status, 503, "{}", r.body);

    let m = admin(&host, "GET", "/metrics").await.body;
    let errors = |name: &str| store_metric(&m, "errors", name);
    // The count's compare-and-set, which would have loaded the session too, failed.
    assert!(errors("compare_and_set") >= 1.0, "{m}");
    assert!(errors("count") >= 1.0, "{m}");
    assert!(errors("list") >= 1.0, "{m}");
    assert_eq!(errors("create"), 0.0, "{m}");
}
