//! Behaviour every store must show, run by each store's own tests against a real instance
//! (the memory store in-process, the Redis store against a private `redis-server`).
//!
//! [`every_operation`] covers each method of [`SessionStore`]: create and load, save (one step,
//! never recreating a session), compare-and-set (with the current value on a conflict, and the
//! session when asked), rename (id rotation), remove, list, count and describe, and the sliding
//! expiry that a use (a load, a write, a loading compare-and-set) pushes back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{Attributes, Cas, CasRequest, SessionPage, SessionStore};

/// A timeout that no part but the expiry one comes near.
const LONG: Duration = Duration::from_secs(600);

/// The timeout of the expiry part: long enough that a loaded machine still uses the session in
/// time, short enough for a test.
const SHORT: Duration = Duration::from_millis(1500);

/// Attributes from `(name, JSON text)` pairs.
pub(crate) fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
        .collect()
}

/// Runs every part of the contract, each against a fresh, empty store that `store(timeout)`
/// makes, whose sessions expire after `timeout` without use.
pub(crate) async fn every_operation<S: SessionStore>(store: impl Fn(Duration) -> S) {
    create_load_and_save(&store(LONG)).await;
    compare_and_set(&store(LONG)).await;
    rename(&store(LONG)).await;
    remove(&store(LONG)).await;
    list_count_and_describe(&store(LONG)).await;
    sliding_expiry(&store(SHORT), SHORT).await;
}

/// Create refuses an existing id; save sets and removes attributes in one step and never
/// recreates a session.
async fn create_load_and_save(store: &dyn SessionStore) {
    assert!(store.create("a", &attrs(&[("x", "1")])).await.unwrap());
    assert!(
        !store.create("a", &Attributes::new()).await.unwrap(),
        "the id exists"
    );
    assert_eq!(
        store.load("a").await.unwrap(),
        Some(attrs(&[("x", "1")])),
        "a refused create changes nothing"
    );
    let changes = BTreeMap::from([
        ("y".to_owned(), Some(b"2".to_vec())),
        ("x".to_owned(), None),
    ]);
    assert!(store.save("a", &changes).await.unwrap());
    assert_eq!(store.load("a").await.unwrap(), Some(attrs(&[("y", "2")])));
    assert!(store.save("a", &BTreeMap::new()).await.unwrap());
    assert!(
        !store.save("nope", &changes).await.unwrap(),
        "no resurrection"
    );
    assert_eq!(store.load("nope").await.unwrap(), None);
    assert_eq!(store.info("nope").await.unwrap(), None);
}

/// Attribute `name` of session `id` can be neither set nor loaded: the session does not exist.
async fn assert_gone(store: &dyn SessionStore, id: &str, name: &str) {
    for cas in [
        CasRequest::new(id, name, None, b"1"),
        CasRequest::new(id, name, Some(b"1"), b"2").loading(),
    ] {
        assert_eq!(
            store.compare_and_set(cas).await.unwrap(),
            Cas::Gone,
            "{cas:?}"
        );
    }
}

/// Compare-and-set on session `s` (created here): it succeeds only on the expected value and
/// answers the current one otherwise, with the session (as it was before a write) when asked;
/// it never touches a session that does not exist.
async fn compare_and_set(store: &dyn SessionStore) {
    store.create("s", &attrs(&[("x", "0")])).await.unwrap();
    let cas = |expected: Option<&'static [u8]>, new: &'static [u8]| {
        store.compare_and_set(CasRequest::new("s", "n", expected, new))
    };
    let conflict = |current: Option<&[u8]>| Cas::Conflict {
        current: current.map(<[u8]>::to_vec),
        session: None,
    };
    let done = Cas::Done { session: None };
    assert_eq!(cas(None, b"1").await.unwrap(), done);
    assert_eq!(cas(None, b"2").await.unwrap(), conflict(Some(b"1")));
    assert_eq!(cas(Some(b"2"), b"3").await.unwrap(), conflict(Some(b"1")));
    assert_eq!(cas(Some(b"1"), b"2").await.unwrap(), done);
    assert_eq!(
        store.load("s").await.unwrap(),
        Some(attrs(&[("n", "2"), ("x", "0")]))
    );

    let loading = |expected: Option<&'static [u8]>, new: &'static [u8]| {
        store.compare_and_set(CasRequest::new("s", "n", expected, new).loading())
    };
    assert_eq!(
        loading(Some(b"2"), b"3").await.unwrap(),
        Cas::Done {
            session: Some(attrs(&[("n", "2"), ("x", "0")]))
        },
        "the session before the write"
    );
    assert_eq!(
        loading(Some(b"2"), b"4").await.unwrap(),
        Cas::Conflict {
            current: Some(b"3".to_vec()),
            session: Some(attrs(&[("n", "3"), ("x", "0")]))
        }
    );
    assert_eq!(
        store
            .compare_and_set(CasRequest::new("s", "absent", Some(b"1"), b"2").loading())
            .await
            .unwrap(),
        Cas::Conflict {
            current: None,
            session: Some(attrs(&[("n", "3"), ("x", "0")]))
        },
        "an absent attribute is no value"
    );
    assert_eq!(
        store.load("s").await.unwrap(),
        Some(attrs(&[("n", "3"), ("x", "0")]))
    );
    assert_gone(store, "gone", "n").await;
    assert_eq!(store.load("gone").await.unwrap(), None, "no resurrection");
}

/// Rename moves the attributes and the expiry to a free id and frees the old one; it refuses a
/// taken target and a missing source, changing nothing.
async fn rename(store: &dyn SessionStore) {
    store.create("old", &attrs(&[("x", "1")])).await.unwrap();
    store.create("taken", &attrs(&[("y", "2")])).await.unwrap();
    assert!(!store.rename("old", "taken").await.unwrap());
    assert_eq!(store.load("old").await.unwrap(), Some(attrs(&[("x", "1")])));
    assert_eq!(
        store.load("taken").await.unwrap(),
        Some(attrs(&[("y", "2")]))
    );
    assert!(store.rename("old", "new").await.unwrap());
    assert_eq!(store.load("old").await.unwrap(), None);
    assert_eq!(store.load("new").await.unwrap(), Some(attrs(&[("x", "1")])));
    let moved = store.info("new").await.unwrap().unwrap();
    assert_eq!(moved.timeout_ms, 600_000, "the timeout moves along");
    assert!(moved.expires_in_ms > 0, "the expiry moves along");
    assert!(!store.rename("old", "other").await.unwrap());
    assert_eq!(store.load("other").await.unwrap(), None);
}

/// Remove deletes a live session once; nothing writes to it afterwards.
async fn remove(store: &dyn SessionStore) {
    store.create("r", &attrs(&[("x", "1")])).await.unwrap();
    assert!(store.remove("r").await.unwrap());
    assert!(!store.remove("r").await.unwrap());
    assert_eq!(store.load("r").await.unwrap(), None);
    let change = BTreeMap::from([("x".to_owned(), Some(b"2".to_vec()))]);
    assert!(!store.save("r", &change).await.unwrap());
    assert_eq!(
        store
            .compare_and_set(CasRequest::new("r", "x", None, b"1"))
            .await
            .unwrap(),
        Cas::Gone
    );
    assert!(!store.rename("r", "r2").await.unwrap());
    assert_eq!(store.count().await.unwrap(), 0);
}

/// Listing filters by id prefix, pages with `more`, puts the most recently used first; count and
/// describe see every live session; attribute names come sorted, never values.
async fn list_count_and_describe(store: &dyn SessionStore) {
    store
        .create("aa1", &attrs(&[("x", "1"), ("cart", "[]")]))
        .await
        .unwrap();
    store.create("aa2", &Attributes::new()).await.unwrap();
    store.create("bb1", &Attributes::new()).await.unwrap();
    // Access times have millisecond resolution: let the clock move before the use that makes
    // `aa1` the most recent.
    let created = super::now_ms();
    while super::now_ms() <= created + 2 {
        tokio::task::yield_now().await;
    }
    let touch = BTreeMap::from([("x".to_owned(), Some(b"2".to_vec()))]);
    assert!(store.save("aa1", &touch).await.unwrap());
    assert_eq!(store.count().await.unwrap(), 3);

    let page = store.list("", 10).await.unwrap();
    assert!(!page.more);
    assert_eq!(page.sessions.len(), 3);
    assert_eq!(page.sessions[0].id, "aa1", "most recently used first");
    assert_eq!(page.sessions[0].attributes, ["cart", "x"]);
    assert_eq!(page.sessions[0].timeout_ms, 600_000);
    assert!(page.sessions[0].created_ms > 0);
    assert!(page.sessions[0].accessed_ms >= page.sessions[0].created_ms);

    let page = store.list("aa", 1).await.unwrap();
    assert!(page.more);
    assert_eq!(page.sessions.len(), 1);
    assert!(page.sessions[0].id.starts_with("aa"), "{page:?}");
    let page = store.list("aa", 2).await.unwrap();
    assert!(!page.more);
    let mut ids: Vec<&str> = page.sessions.iter().map(|s| s.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["aa1", "aa2"]);
    assert_eq!(store.list("cc", 10).await.unwrap(), SessionPage::default());

    let info = store.info("bb1").await.unwrap().unwrap();
    assert_eq!(info.id, "bb1");
    assert!(info.attributes.is_empty());
    assert!(info.expires_in_ms > 0 && info.expires_in_ms <= 600_000);
    assert_eq!(store.info("zz").await.unwrap(), None);
}

/// A session lives on while used (a load counts) and ends `timeout` after its last use; once
/// ended, no operation sees or revives it.
async fn sliding_expiry(store: &dyn SessionStore, timeout: Duration) {
    store.create("used", &attrs(&[("x", "1")])).await.unwrap();
    store.create("idle", &Attributes::new()).await.unwrap();
    let start = Instant::now();
    // Used every fifth of the timeout for longer than the timeout, by loads and by
    // compare-and-sets that load and conflict: it stays.
    let mut load = true;
    while start.elapsed() < timeout + timeout / 2 {
        tokio::time::sleep(timeout / 5).await;
        let session = if load {
            store.load("used").await.unwrap()
        } else {
            let cas = CasRequest::new("used", "x", Some(b"2"), b"3").loading();
            match store.compare_and_set(cas).await.unwrap() {
                Cas::Conflict { session, .. } => session,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            session,
            Some(attrs(&[("x", "1")])),
            "used {:?} after its creation",
            start.elapsed()
        );
        load = !load;
    }
    assert_eq!(
        store.load("idle").await.unwrap(),
        None,
        "idle past its timeout"
    );
    assert_eq!(store.info("idle").await.unwrap(), None);

    let last_use = Instant::now();
    let deadline = last_use + timeout * 10;
    while store.info("used").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the session never expired");
        tokio::time::sleep(timeout / 10).await;
    }
    // 100 ms of slack for the clocks of the store and this test.
    assert!(
        last_use.elapsed() + Duration::from_millis(100) >= timeout,
        "expired {:?} after its last use",
        last_use.elapsed()
    );
    assert_eq!(store.load("used").await.unwrap(), None);
    let change = BTreeMap::from([("x".to_owned(), Some(b"2".to_vec()))]);
    assert!(!store.save("used", &change).await.unwrap());
    assert_gone(store, "used", "x").await;
    assert!(!store.rename("used", "again").await.unwrap());
    assert_eq!(store.count().await.unwrap(), 0);
    assert_eq!(store.list("", 10).await.unwrap(), SessionPage::default());
    assert!(store.create("used", &Attributes::new()).await.unwrap());
    assert_eq!(store.load("used").await.unwrap(), Some(Attributes::new()));
}
