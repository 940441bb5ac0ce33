//! One request's session against an in-memory store, on worker-like threads.

use super::*;
use crate::session::MemoryStore;
use std::time::Duration;

fn sessions() -> Arc<Sessions> {
    let store = Arc::new(MemoryStore::new(Duration::from_secs(60), 100));
    Sessions::with_store(store, "S", false, Duration::from_secs(1))
}

/// The id of a new, empty session in the store.
async fn stored_session(sessions: &Sessions) -> String {
    let id = id::new_id().unwrap();
    assert!(
        sessions
            .store
            .create(&id, &Attributes::new())
            .await
            .unwrap()
    );
    id
}

fn headers(cookie: Option<&str>) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    if let Some(cookie) = cookie {
        headers.insert(http::header::COOKIE, cookie.parse().unwrap());
    }
    headers
}

/// Runs `work` as a request without a session cookie, on a worker; the `Set-Cookie` value of
/// the session it created.
async fn new_session(
    sessions: &Arc<Sessions>,
    work: impl FnOnce(&RequestSession) + Send + 'static,
) -> String {
    let scope = sessions.begin(&headers(None), false);
    let worker = Arc::clone(&scope);
    on_worker(move || work(&worker)).await;
    scope.finish().await.unwrap().unwrap()
}

fn id_of(set_cookie: &str) -> String {
    set_cookie
        .strip_prefix("S=")
        .and_then(|rest| rest.split(';').next())
        .unwrap()
        .to_owned()
}

/// Runs a handler-like closure on a plain thread outside the runtime, as the worker pool
/// would.
async fn on_worker<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.await.unwrap() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untouched_session_costs_nothing_and_sets_no_cookie() {
    let sessions = sessions();
    let known = stored_session(&sessions).await;
    for cookie in ["S=forged".to_owned(), format!("S={known}")] {
        let scope = sessions.begin(&headers(Some(&cookie)), false);
        assert_eq!(scope.finish().await.unwrap(), None, "{cookie}");
    }
    for op in StoreOp::ALL {
        assert_eq!(
            sessions.metrics.count(op.index()),
            (0, 0),
            "no {} call (nor failure) for a session nobody used",
            op.name()
        );
    }
    assert!(sessions.store.load("forged").await.unwrap().is_none());
}

/// What a request did with its session, and whether its end has a store call or a cookie to
/// send, for a known session and for an id the store does not know.
type Scenario = (&'static str, fn(&RequestSession), [bool; 2]);

#[tokio::test(flavor = "multi_thread")]
async fn a_request_ends_without_awaiting_the_store_only_when_there_is_nothing_to_send() {
    let sessions = sessions();
    // An unknown id's cookie is cleared once the request looked at its session.
    let scenarios: [Scenario; 7] = [
        ("untouched", |_| {}, [false, false]),
        ("read", |s| drop(s.get("n").unwrap()), [false, true]),
        // An atomic update of a known session is stored when made; of an unknown id, it starts
        // a new session, created at the end.
        ("updated", |s| _ = increment(s, "n"), [false, true]),
        (
            "written",
            |s| s.set("n", b"1".to_vec()).unwrap(),
            [true, true],
        ),
        ("invalidated", |s| s.invalidate().unwrap(), [true, true]),
        ("rotated", |s| s.rotate().unwrap(), [true, true]),
        ("removed", |s| s.remove("n").unwrap(), [true, true]),
    ];
    for (what, work, has_work) in scenarios {
        for (known, has_work) in [true, false].into_iter().zip(has_work) {
            let id = if known {
                stored_session(&sessions).await
            } else {
                id::new_id().unwrap()
            };
            let scope = sessions.begin(&headers(Some(&format!("S={id}"))), false);
            let worker = Arc::clone(&scope);
            on_worker(move || work(&worker)).await;
            let ending = scope.end();
            assert_eq!(ending.is_some(), has_work, "{what}, known {known}");
            if let Some(ending) = ending {
                let cookie = scope.store(ending).await.unwrap();
                // A known session keeps its id unless the request rotated or ended it.
                let cookie_expected = !known || matches!(what, "invalidated" | "rotated");
                assert_eq!(cookie.is_some(), cookie_expected, "{what}, known {known}");
            }
            assert!(scope.end().is_none(), "{what}, known {known}: ended once");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_write_creates_the_session_and_its_cookie() {
    let sessions = sessions();
    let cookie = new_session(&sessions, |worker| {
        assert_eq!(worker.get("n").unwrap(), None);
        assert_eq!(worker.id().unwrap(), None);
        worker.set("n", b"1".to_vec()).unwrap();
        assert_eq!(worker.get("n").unwrap(), Some(b"1".to_vec()));
    })
    .await;
    let id = id_of(&cookie);
    let stored = sessions.store.load(&id).await.unwrap().unwrap();
    assert_eq!(stored.get("n").map(Vec::as_slice), Some(&b"1"[..]));

    let scope = sessions.begin(&headers(Some(&format!("S={id}"))), false);
    let worker = Arc::clone(&scope);
    on_worker(move || {
        assert_eq!(worker.get("n").unwrap(), Some(b"1".to_vec()));
        worker.remove("n").unwrap();
        assert_eq!(worker.names().unwrap(), Vec::<String>::new());
    })
    .await;
    assert_eq!(
        scope.finish().await.unwrap(),
        None,
        "same id, no new cookie"
    );
    assert!(sessions.store.load(&id).await.unwrap().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_id_is_not_adopted() {
    let sessions = sessions();
    let forged = id::new_id().unwrap();
    let scope = sessions.begin(&headers(Some(&format!("S={forged}"))), false);
    let worker = Arc::clone(&scope);
    on_worker(move || worker.set("user", b"\"mallory\"".to_vec()).unwrap()).await;
    let id = id_of(&scope.finish().await.unwrap().unwrap());
    assert_ne!(id, forged);
    assert!(sessions.store.load(&forged).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_keeps_attributes_and_retires_the_old_id() {
    let sessions = sessions();
    let old = id::new_id().unwrap();
    let attributes = Attributes::from([("cart".to_owned(), b"[1]".to_vec())]);
    sessions.store.create(&old, &attributes).await.unwrap();
    let scope = sessions.begin(&headers(Some(&format!("S={old}"))), false);
    let worker = Arc::clone(&scope);
    on_worker(move || {
        worker.rotate().unwrap();
        worker.set("user", b"\"ada\"".to_vec()).unwrap();
    })
    .await;
    let new = id_of(&scope.finish().await.unwrap().unwrap());
    assert_ne!(new, old);
    assert!(sessions.store.load(&old).await.unwrap().is_none());
    let stored = sessions.store.load(&new).await.unwrap().unwrap();
    assert_eq!(stored.keys().collect::<Vec<_>>(), ["cart", "user"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalidation_deletes_and_expires_the_cookie() {
    let sessions = sessions();
    let id = stored_session(&sessions).await;
    let scope = sessions.begin(&headers(Some(&format!("S={id}"))), false);
    let worker = Arc::clone(&scope);
    on_worker(move || worker.invalidate().unwrap()).await;
    let cookie = scope.finish().await.unwrap().unwrap();
    assert!(cookie.contains("Max-Age=0"), "{cookie}");
    assert!(sessions.store.load(&id).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_updates_lose_nothing() {
    let sessions = sessions();
    let id = stored_session(&sessions).await;
    let mut workers = Vec::new();
    for _ in 0..8 {
        let scope = sessions.begin(&headers(Some(&format!("S={id}"))), false);
        workers.push(std::thread::spawn(move || {
            for _ in 0..25 {
                scope
                    .update("n", &mut |old| {
                        let n: u64 = old.map_or(0, |v| serde_json::from_slice(v).unwrap());
                        Ok((n + 1).to_string().into_bytes())
                    })
                    .unwrap();
            }
        }));
    }
    on_worker(move || workers.into_iter().for_each(|w| w.join().unwrap())).await;
    let stored = sessions.store.load(&id).await.unwrap().unwrap();
    assert_eq!(stored.get("n").map(Vec::as_slice), Some(&b"200"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_builds_on_this_requests_own_write() {
    let sessions = sessions();
    let cookie = new_session(&sessions, |worker| {
        worker.set("n", b"5".to_vec()).unwrap();
        worker.set("other", b"true".to_vec()).unwrap();
        worker
            .update("n", &mut |old| {
                assert_eq!(old, Some(&b"5"[..]));
                Ok(b"6".to_vec())
            })
            .unwrap();
        assert_eq!(worker.get("n").unwrap(), Some(b"6".to_vec()));
    })
    .await;
    let id = id_of(&cookie);
    let stored = sessions.store.load(&id).await.unwrap().unwrap();
    assert_eq!(stored.get("n").map(Vec::as_slice), Some(&b"6"[..]));
    assert_eq!(stored.get("other").map(Vec::as_slice), Some(&b"true"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_names_and_values_are_refused() {
    let sessions = sessions();
    let scope = sessions.begin(&headers(None), false);
    on_worker(move || {
        assert!(matches!(
            scope.set("#timeout_ms", b"1".to_vec()),
            Err(AccessError::Invalid(_))
        ));
        assert!(matches!(
            scope.set("a", b"{not json".to_vec()),
            Err(AccessError::Invalid(_))
        ));
        assert!(matches!(scope.get(""), Err(AccessError::Invalid(_))));
    })
    .await;
}

/// Store calls so far, by operation name.
fn calls(sessions: &Sessions) -> BTreeMap<&'static str, u64> {
    StoreOp::ALL
        .into_iter()
        .map(|op| (op.name(), sessions.metrics.count(op.index()).0))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Runs `work` as a request with session `id`'s cookie, on a worker; its `Set-Cookie` value.
async fn in_session<T: Send + 'static>(
    sessions: &Arc<Sessions>,
    id: &str,
    work: impl FnOnce(&RequestSession) -> T + Send + 'static,
) -> (T, Option<String>) {
    let scope = sessions.begin(&headers(Some(&format!("S={id}"))), false);
    let worker = Arc::clone(&scope);
    let value = on_worker(move || work(&worker)).await;
    (value, scope.finish().await.unwrap())
}

fn increment(scope: &RequestSession, name: &str) -> u64 {
    let mut seen = 0;
    scope
        .update(name, &mut |old| {
            seen = old.map_or(0, |v| serde_json::from_slice::<u64>(v).unwrap()) + 1;
            Ok(seen.to_string().into_bytes())
        })
        .unwrap();
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_that_starts_a_request_costs_one_store_call_when_the_guess_is_right() {
    let store = Arc::new(MemoryStore::new(Duration::from_secs(60), 100));
    let host = |store: &Arc<MemoryStore>| {
        Sessions::with_store(Arc::clone(store) as _, "S", false, Duration::from_secs(1))
    };
    let (a, b) = (host(&store), host(&store));

    // A new session: created with the value, in one call.
    let id = id_of(&new_session(&a, |s| assert_eq!(increment(s, "n"), 1)).await);
    assert_eq!(calls(&a), BTreeMap::from([("create", 1)]));

    // Its next requests on the same host: one compare-and-set each, which loads the session.
    for n in 2..=4 {
        let (seen, cookie) = in_session(&a, &id, move |s| {
            let seen = increment(s, "n");
            assert_eq!(s.get("n").unwrap(), Some(n.to_string().into_bytes()));
            assert_eq!(s.names().unwrap(), ["n"], "loaded with the update");
            seen
        })
        .await;
        assert_eq!((seen, cookie), (n, None));
    }
    assert_eq!(
        calls(&a),
        BTreeMap::from([("create", 1), ("compare_and_set", 3)])
    );

    // Another host changes it: this host's guess is stale; the store says so and the update
    // builds on the real value, one call later. The other host had no guess: a load first.
    let (seen, _) = in_session(&b, &id, |s| increment(s, "n")).await;
    assert_eq!(seen, 5);
    assert_eq!(
        calls(&b),
        BTreeMap::from([("load", 1), ("compare_and_set", 1)])
    );
    let (seen, _) = in_session(&a, &id, |s| {
        let seen = increment(s, "n");
        assert_eq!(s.get("n").unwrap(), Some(b"6".to_vec()));
        seen
    })
    .await;
    assert_eq!(
        seen, 6,
        "no update lost, none computed from the stale guess"
    );
    assert_eq!(
        calls(&a),
        BTreeMap::from([("create", 1), ("compare_and_set", 5)])
    );
    assert_eq!(
        a.store.load(&id).await.unwrap().unwrap().get("n").unwrap(),
        b"6"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guess_that_no_longer_decodes_is_not_an_error() {
    let sessions = sessions();
    let id = id_of(&new_session(&sessions, |s| assert_eq!(increment(s, "n"), 1)).await);
    // Another version (or host) stores another shape.
    let one = BTreeMap::from([("n".to_owned(), Some(b"\"one\"".to_vec()))]);
    assert!(sessions.store.save(&id, &one).await.unwrap());
    let (outcome, _) = in_session(&sessions, &id, |s| {
        let mut seen = Vec::new();
        let outcome = s.update("n", &mut |old| {
            seen.push(old.map(<[u8]>::to_vec));
            match old {
                Some(b"1") => Err(AccessError::Aborted("guessed wrong".into())),
                _ => Ok(b"2".to_vec()),
            }
        });
        (outcome.is_ok(), seen)
    })
    .await;
    assert_eq!(
        outcome,
        (true, vec![Some(b"1".to_vec()), Some(b"\"one\"".to_vec())]),
        "the closure's refusal of a guess is not the update's"
    );
    let stored = sessions.store.load(&id).await.unwrap().unwrap();
    assert_eq!(stored.get("n").unwrap(), b"2");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guessed_update_of_an_ended_session_starts_a_new_one() {
    let sessions = sessions();
    let id = id_of(&new_session(&sessions, |s| assert_eq!(increment(s, "n"), 1)).await);
    assert!(sessions.store.remove(&id).await.unwrap(), "ended elsewhere");
    let (seen, cookie) = in_session(&sessions, &id, |s| increment(s, "n")).await;
    assert_eq!(seen, 1, "a new session starts from nothing");
    let fresh = id_of(&cookie.expect("a new session's cookie"));
    assert_ne!(fresh, id, "the ended id is not adopted");
    assert!(sessions.store.load(&id).await.unwrap().is_none());
    let stored = sessions.store.load(&fresh).await.unwrap().unwrap();
    assert_eq!(stored.get("n").unwrap(), b"1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_update_of_a_new_session_creates_nothing() {
    let sessions = sessions();
    let scope = sessions.begin(&headers(None), false);
    let worker = Arc::clone(&scope);
    on_worker(move || {
        let refused = worker.update("n", &mut |_| Err(AccessError::Aborted("no".into())));
        assert!(
            matches!(refused, Err(AccessError::Aborted(_))),
            "{refused:?}"
        );
    })
    .await;
    assert_eq!(scope.finish().await.unwrap(), None, "no session, no cookie");
    assert_eq!(calls(&sessions), BTreeMap::new());
}
