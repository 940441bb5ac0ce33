//! The Redis store against private Redis servers: one plain server, a TLS one and a cluster.

use super::*;
use crate::session::store::contract::{self, attrs};

mod servers;

use servers::TestRedis;

#[tokio::test(flavor = "multi_thread")]
async fn saves_write_only_their_fields_and_never_resurrect() {
    let redis = TestRedis::start();
    let store = redis.store(Duration::from_secs(100));
    assert!(
        store
            .create("s", &attrs(&[("a", "1"), ("b", "2")]))
            .await
            .unwrap()
    );
    assert!(!store.create("s", &Attributes::new()).await.unwrap());
    let changes = BTreeMap::from([
        ("a".to_owned(), Some(b"3".to_vec())),
        ("b".to_owned(), None),
        ("c".to_owned(), Some(b"\"x\"".to_vec())),
    ]);
    assert!(store.save("s", &changes).await.unwrap());
    let fields: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg("t:s")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(
        fields.keys().collect::<Vec<_>>(),
        ["#accessed_ms", "#created_ms", "#timeout_ms", "a", "c"]
    );
    assert_eq!(
        store.load("s").await.unwrap(),
        Some(attrs(&[("a", "3"), ("c", "\"x\"")]))
    );

    // Expired (or deleted by another host) meanwhile: no write brings it back.
    let _: i64 = redis::cmd("DEL")
        .arg("t:s")
        .query(&mut redis.conn())
        .unwrap();
    assert!(!store.save("s", &changes).await.unwrap());
    for cas in [
        CasRequest::new("s", "a", None, b"1"),
        CasRequest::new("s", "a", Some(b"3"), b"4").loading(),
    ] {
        assert_eq!(store.compare_and_set(cas).await.unwrap(), Cas::Gone);
    }
    assert!(!store.rename("s", "t").await.unwrap());
    let exists: i64 = redis::cmd("EXISTS")
        .arg("t:s")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(exists, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_store_operation_keeps_the_contract() {
    keeps_the_contract(TestRedis::start()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_store_operation_keeps_the_contract_over_tls() {
    keeps_the_contract(TestRedis::start_tls()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_store_operation_keeps_the_contract_on_a_cluster() {
    keeps_the_contract(TestRedis::start_cluster()).await;
}

async fn keeps_the_contract(redis: TestRedis) {
    let parts = std::sync::atomic::AtomicUsize::new(0);
    contract::every_operation(|timeout| {
        // Each part in a key space of its own.
        let part = parts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        redis.store_in(&format!("c{part}:"), timeout)
    })
    .await;
}

/// `script` run on `keys`.
async fn two_keys(
    script: &redis::Script,
    conn: &mut impl redis::aio::ConnectionLike,
    [first, second]: [&String; 2],
) -> redis::Value {
    script
        .key(first)
        .key(second)
        .invoke_async(conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_across_slots_refuses_writes_to_the_old_id_from_its_first_step() {
    let redis = TestRedis::start_cluster();
    let store = redis.store(Duration::from_secs(100));
    assert_eq!(store.kind(), "redis+cluster");
    let Conn::Cluster(cluster) = &store.conn else {
        panic!("not a cluster connection")
    };
    let mut conn = cluster.conn().await.unwrap();
    store.create("old", &attrs(&[("n", "1")])).await.unwrap();
    let (session, stash) = (store.keys.session("old"), store.keys.stash("old"));

    // The first step alone, as another host's rotation would be midway.
    let stashed = two_keys(&store.scripts.stash, &mut conn, [&session, &stash]).await;
    assert_ne!(stashed, redis::Value::Nil);
    let change = BTreeMap::from([("n".to_owned(), Some(b"2".to_vec()))]);
    assert!(
        !store.save("old", &change).await.unwrap(),
        "reported, not lost"
    );
    assert_eq!(
        store
            .compare_and_set(CasRequest::new("old", "n", Some(b"1"), b"2"))
            .await
            .unwrap(),
        Cas::Gone
    );
    assert_eq!(store.load("old").await.unwrap(), None);
    assert_eq!(store.count().await.unwrap(), 0, "a stash is no session");
    let unstashed = two_keys(&store.scripts.unstash, &mut conn, [&stash, &session]).await;
    assert_eq!(unstashed, redis::Value::Int(1));

    // A whole rotation leaves no stash behind.
    assert!(store.rename("old", "new").await.unwrap());
    assert_eq!(store.load("new").await.unwrap(), Some(attrs(&[("n", "1")])));
    let stash: i64 = redis::cmd("EXISTS")
        .arg(&stash)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stash, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_and_counting_scan_only_the_prefix() {
    let redis = TestRedis::start();
    let store = redis.store(Duration::from_secs(100));
    for i in 0..30 {
        let id = format!("{}{i:02}", if i < 25 { "aa" } else { "bb" });
        store
            .create(&id, &attrs(&[("n", "1"), ("user", "\"x\"")]))
            .await
            .unwrap();
    }
    // Not a session: outside the prefix.
    let _: () = redis::cmd("SET")
        .arg("other:aa99")
        .arg("1")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(store.count().await.unwrap(), 30);

    let page = store.list("", 100).await.unwrap();
    assert!(!page.more);
    assert_eq!(page.sessions.len(), 30);
    let page = store.list("aa", 10).await.unwrap();
    assert!(page.more);
    assert_eq!(page.sessions.len(), 10);
    assert!(page.sessions.iter().all(|s| s.id.starts_with("aa")));
    let page = store.list("bb", 10).await.unwrap();
    assert!(!page.more);
    assert_eq!(page.sessions.len(), 5);

    let info = store.info("bb27").await.unwrap().unwrap();
    assert_eq!(info.attributes, ["n", "user"]);
    assert_eq!(info.timeout_ms, 100_000);
    assert!(info.created_ms > 0 && info.accessed_ms >= info.created_ms);
    assert!(info.expires_in_ms > 0 && info.expires_in_ms <= 100_000);
    assert_eq!(store.info("zz").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn loading_refreshes_the_ttl_only_when_a_tenth_of_it_has_passed() {
    let redis = TestRedis::start();
    let store = redis.store(Duration::from_secs(100));
    store.create("s", &Attributes::new()).await.unwrap();
    let mut conn = redis.conn();
    let mut age = |ago_ms: u64, ttl_ms: u64| {
        let _: () = redis::cmd("HSET")
            .arg("t:s")
            .arg("#accessed_ms")
            .arg(now_ms() - ago_ms)
            .query(&mut conn)
            .unwrap();
        let _: i64 = redis::cmd("PEXPIRE")
            .arg("t:s")
            .arg(ttl_ms)
            .query(&mut conn)
            .unwrap();
    };
    let pttl = |conn: &mut redis::Connection| -> i64 {
        redis::cmd("PTTL").arg("t:s").query(conn).unwrap()
    };

    // Used 5 s ago (a twentieth of the timeout): a read writes nothing.
    age(5_000, 95_000);
    store.load("s").await.unwrap().unwrap();
    assert!(pttl(&mut redis.conn()) <= 95_000);

    // Used 20 s ago: the read slides the expiry back to the full timeout.
    age(20_000, 80_000);
    store.load("s").await.unwrap().unwrap();
    assert!(pttl(&mut redis.conn()) > 95_000);
    let accessed: u64 = redis::cmd("HGET")
        .arg("t:s")
        .arg("#accessed_ms")
        .query(&mut redis.conn())
        .unwrap();
    assert!(now_ms() - accessed < 10_000);

    // A compare-and-set that loads is a load when it conflicts, and a write when it succeeds.
    let conflict = CasRequest::new("s", "n", Some(b"1"), b"2").loading();
    age(5_000, 95_000);
    let outcome = store.compare_and_set(conflict).await.unwrap();
    assert!(matches!(outcome, Cas::Conflict { .. }), "{outcome:?}");
    assert!(pttl(&mut redis.conn()) <= 95_000);
    age(20_000, 80_000);
    store.compare_and_set(conflict).await.unwrap();
    assert!(pttl(&mut redis.conn()) > 95_000);
    age(5_000, 80_000);
    let write = CasRequest::new("s", "n", None, b"1").loading();
    let outcome = store.compare_and_set(write).await.unwrap();
    assert!(matches!(outcome, Cas::Done { .. }), "{outcome:?}");
    assert!(pttl(&mut redis.conn()) > 95_000);
}

#[test]
fn metadata_fields_are_not_attributes() {
    let flat = [
        "#created_ms",
        "1",
        "cart",
        "[1]",
        "#timeout_ms",
        "1800000",
        "user",
        "\"ada\"",
    ]
    .map(|s| s.as_bytes().to_vec())
    .to_vec();
    let attributes = attributes(flat);
    assert_eq!(
        attributes.keys().collect::<Vec<_>>(),
        ["cart", "user"],
        "{attributes:?}"
    );
}

#[test]
fn bad_urls_are_refused() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let timeout = Duration::from_secs(1);
    assert!(RedisStore::new("http://localhost", "p:", timeout, timeout).is_err());
    let cluster = StoreUrl::parse("redis+cluster://127.0.0.1:1").unwrap();
    let braces = RedisStore::open(&cluster, &RedisTls::default(), "{p}:", timeout, timeout);
    assert!(matches!(braces, Err(StoreError::Invalid(_))), "{braces:?}");
    assert!(RedisStore::new("redis://127.0.0.1:1/0", "p:", timeout, timeout).is_ok());
}
