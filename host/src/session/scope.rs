//! One request's session: lazy load, buffered writes, immediate atomic operations, and the
//! flush and cookie at the end of the request.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::id::{self, CookieChange};
use super::store::{Attributes, Cas, Lookup, StoreError};
use super::{Sessions, StoreOp};

/// An atomic update's step: the current JSON value (if any) to the new one, or why not.
pub type UpdateFn<'f> = dyn FnMut(Option<&[u8]>) -> Result<Vec<u8>, String> + 'f;

/// How many times an atomic update retries after losing a race before giving up.
const MAX_UPDATE_ATTEMPTS: usize = 100;

/// A session operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// The store is unavailable (or full); the app gets `SessionError::Unavailable`.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The app passed an invalid attribute name or value.
    #[error("{0}")]
    Invalid(String),
    /// The app's update function aborted the update.
    #[error("{0}")]
    Aborted(String),
}

#[derive(Debug)]
enum Current {
    /// Not looked at yet; the well-formed id from the cookie, if any.
    Unloaded(Option<String>),
    /// No session (none asked for, unknown id, or invalidated).
    Absent,
    /// A session in the store, as loaded (plus this request's atomic updates).
    Stored { id: String, attributes: Attributes },
    /// A session this request creates when it ends.
    New { id: String },
}

#[derive(Debug)]
struct State {
    current: Current,
    /// Buffered writes: `Some` sets, `None` removes.
    changes: BTreeMap<String, Option<Vec<u8>>>,
    had_cookie: bool,
    cookie: Option<CookieChange>,
}

/// One request's session, shared by the request's service task and the worker thread running
/// its handler.
#[derive(Debug)]
pub struct RequestSession {
    sessions: Arc<Sessions>,
    state: Mutex<State>,
    /// The request arrived over TLS: its cookie is `Secure`.
    over_tls: bool,
}

fn check_name(name: &str) -> Result<(), AccessError> {
    baton_sdk::abi::check_attribute_name(name).map_err(|e| AccessError::Invalid(e.to_string()))
}

fn check_json(name: &str, value: &[u8]) -> Result<(), AccessError> {
    serde_json::from_slice::<serde::de::IgnoredAny>(value)
        .map(drop)
        .map_err(|e| AccessError::Invalid(format!("value of {name:?} is not JSON: {e}")))
}

fn initial_attributes(changes: &BTreeMap<String, Option<Vec<u8>>>) -> Attributes {
    changes
        .iter()
        .filter_map(|(name, value)| Some((name.clone(), value.clone()?)))
        .collect()
}

impl RequestSession {
    pub(super) fn new(
        sessions: Arc<Sessions>,
        cookie: Option<String>,
        over_tls: bool,
    ) -> RequestSession {
        RequestSession {
            sessions,
            over_tls,
            state: Mutex::new(State {
                had_cookie: cookie.is_some(),
                current: Current::Unloaded(cookie),
                changes: BTreeMap::new(),
                cookie: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// Loads the session on first use. An id the store does not know is never adopted.
    fn load(&self, state: &mut State) -> Result<(), AccessError> {
        let Current::Unloaded(cookie) = &state.current else {
            return Ok(());
        };
        state.current = match cookie.clone() {
            None => Current::Absent,
            Some(id) => match self
                .sessions
                .run(StoreOp::Load, self.sessions.store.load(&id))?
            {
                Some(attributes) => Current::Stored { id, attributes },
                None => {
                    state.cookie = Some(CookieChange::Clear);
                    Current::Absent
                }
            },
        };
        Ok(())
    }

    /// Forgets the session (it ended meanwhile, or was invalidated).
    fn forget(state: &mut State) {
        state.current = Current::Absent;
        state.changes.clear();
        state.cookie = state.had_cookie.then_some(CookieChange::Clear);
    }

    /// Makes sure the session exists in the store with `name`'s buffered change applied, for
    /// an atomic update; returns its id.
    fn persist(&self, state: &mut State, name: &str) -> Result<String, AccessError> {
        let store = &self.sessions.store;
        for _ in 0..3 {
            if matches!(state.current, Current::Absent) {
                let id = id::new_id()?;
                state.cookie = Some(CookieChange::Set(id.clone()));
                state.current = Current::New { id };
            }
            let State {
                current, changes, ..
            } = &mut *state;
            match current {
                Current::New { id } => {
                    let attributes = initial_attributes(changes);
                    if self
                        .sessions
                        .run(StoreOp::Create, store.create(id, &attributes))?
                    {
                        changes.clear();
                        *current = Current::Stored {
                            id: id.clone(),
                            attributes,
                        };
                    } else {
                        // Another session has this id: pick another.
                        state.current = Current::Absent;
                    }
                }
                Current::Stored { id, attributes } => {
                    let Some(change) = changes.get(name).cloned() else {
                        return Ok(id.clone());
                    };
                    let one = BTreeMap::from([(name.to_owned(), change.clone())]);
                    if self.sessions.run(StoreOp::Save, store.save(id, &one))? {
                        changes.remove(name);
                        match change {
                            Some(value) => attributes.insert(name.to_owned(), value),
                            None => attributes.remove(name),
                        };
                        return Ok(id.clone());
                    }
                    Self::forget(state);
                }
                Current::Unloaded(_) | Current::Absent => {
                    unreachable!("loaded and created above")
                }
            }
        }
        Err(AccessError::Store(StoreError::Unavailable(
            "could not create a session".into(),
        )))
    }

    /// An attribute's JSON text, if the session and the attribute exist.
    ///
    /// # Errors
    /// [`AccessError::Store`] if the session cannot be loaded.
    pub fn get(&self, name: &str) -> Result<Option<Vec<u8>>, AccessError> {
        check_name(name)?;
        let mut state = self.lock();
        self.load(&mut state)?;
        if let Some(change) = state.changes.get(name) {
            return Ok(change.clone());
        }
        Ok(match &state.current {
            Current::Stored { attributes, .. } => attributes.get(name).cloned(),
            _ => None,
        })
    }

    /// Sets an attribute when the request ends; creates the session if there is none.
    ///
    /// # Errors
    /// An invalid name or value, or a session that cannot be loaded.
    pub fn set(&self, name: &str, value: Vec<u8>) -> Result<(), AccessError> {
        check_name(name)?;
        check_json(name, &value)?;
        let mut state = self.lock();
        self.load(&mut state)?;
        if matches!(state.current, Current::Absent) {
            let id = id::new_id()?;
            state.cookie = Some(CookieChange::Set(id.clone()));
            state.current = Current::New { id };
        }
        state.changes.insert(name.to_owned(), Some(value));
        Ok(())
    }

    /// Removes an attribute when the request ends.
    ///
    /// # Errors
    /// An invalid name, or a session that cannot be loaded.
    pub fn remove(&self, name: &str) -> Result<(), AccessError> {
        check_name(name)?;
        let mut state = self.lock();
        self.load(&mut state)?;
        if !matches!(state.current, Current::Absent) {
            state.changes.insert(name.to_owned(), None);
        }
        Ok(())
    }

    /// The attribute names, sorted.
    ///
    /// # Errors
    /// A session that cannot be loaded.
    pub fn names(&self) -> Result<Vec<String>, AccessError> {
        let mut state = self.lock();
        self.load(&mut state)?;
        let mut names = match &state.current {
            Current::Stored { attributes, .. } => attributes.keys().cloned().collect(),
            _ => std::collections::BTreeSet::new(),
        };
        for (name, change) in &state.changes {
            if change.is_some() {
                names.insert(name.clone());
            } else {
                names.remove(name);
            }
        }
        Ok(names.into_iter().collect())
    }

    /// The session id, if there is a session.
    ///
    /// # Errors
    /// A session that cannot be loaded.
    pub fn id(&self) -> Result<Option<String>, AccessError> {
        let mut state = self.lock();
        self.load(&mut state)?;
        Ok(match &state.current {
            Current::Stored { id, .. } | Current::New { id } => Some(id.clone()),
            _ => None,
        })
    }

    /// Deletes the session now; the response expires the cookie.
    ///
    /// # Errors
    /// The store's error; the session is then unchanged.
    pub fn invalidate(&self) -> Result<(), AccessError> {
        let mut state = self.lock();
        self.load(&mut state)?;
        if let Current::Stored { id, .. } = &state.current {
            self.sessions
                .run(StoreOp::Remove, self.sessions.store.remove(id))?;
        }
        Self::forget(&mut state);
        Ok(())
    }

    /// Moves the session to a new id now; the response sends the new cookie.
    ///
    /// # Errors
    /// The store's error; the session then keeps its id.
    pub fn rotate(&self) -> Result<(), AccessError> {
        let mut state = self.lock();
        self.load(&mut state)?;
        let fresh = match &state.current {
            Current::Absent | Current::Unloaded(_) => return Ok(()),
            Current::New { .. } => id::new_id()?,
            Current::Stored { id, .. } => {
                let fresh = id::new_id()?;
                if !self
                    .sessions
                    .run(StoreOp::Rename, self.sessions.store.rename(id, &fresh))?
                {
                    Self::forget(&mut state);
                    return Ok(());
                }
                fresh
            }
        };
        match &mut state.current {
            Current::Stored { id, .. } | Current::New { id } => id.clone_from(&fresh),
            Current::Absent | Current::Unloaded(_) => {}
        }
        state.cookie = Some(CookieChange::Set(fresh));
        Ok(())
    }

    /// Atomically replaces an attribute with `f(current)`, in the store, now. `f` runs on the
    /// calling thread without any lock held, possibly several times; it returns the new JSON
    /// text or a reason to abort.
    ///
    /// # Errors
    /// An invalid name or new value, `f`'s abort, or the store's error (nothing is changed).
    pub fn update(&self, name: &str, f: &mut UpdateFn<'_>) -> Result<(), AccessError> {
        check_name(name)?;
        let store = &self.sessions.store;
        let mut id = {
            let mut state = self.lock();
            self.load(&mut state)?;
            self.persist(&mut state, name)?
        };
        let mut restarted = false;
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let old = match self.sessions.run(StoreOp::Read, store.read(&id, name))? {
                Lookup::Present(value) => Some(value),
                Lookup::Absent => None,
                Lookup::Gone => {
                    id = self.restart(&mut restarted, name)?;
                    continue;
                }
            };
            let new = f(old.as_deref()).map_err(AccessError::Aborted)?;
            check_json(name, &new)?;
            match self.sessions.run(
                StoreOp::CompareAndSet,
                store.compare_and_set(&id, name, old.as_deref(), &new),
            )? {
                Cas::Done => {
                    let mut state = self.lock();
                    if let Current::Stored {
                        id: current,
                        attributes,
                    } = &mut state.current
                        && *current == id
                    {
                        attributes.insert(name.to_owned(), new);
                    }
                    return Ok(());
                }
                Cas::Conflict => std::thread::yield_now(),
                Cas::Gone => id = self.restart(&mut restarted, name)?,
            }
        }
        Err(AccessError::Store(StoreError::Unavailable(format!(
            "attribute {name:?} changed concurrently {MAX_UPDATE_ATTEMPTS} times in a row"
        ))))
    }

    /// The session ended during an update: continue in a new one, once.
    fn restart(&self, restarted: &mut bool, name: &str) -> Result<String, AccessError> {
        if std::mem::replace(restarted, true) {
            return Err(AccessError::Store(StoreError::Unavailable(
                "the session keeps ending during the update".into(),
            )));
        }
        let mut state = self.lock();
        Self::forget(&mut state);
        self.persist(&mut state, name)
    }

    /// Ends the request: stores the buffered changes (only those, in one round trip) or creates
    /// the new session, and returns the `Set-Cookie` value to send, if any. A session that
    /// ended meanwhile is not recreated; its changes are dropped and the cookie expired.
    ///
    /// # Errors
    /// The store's error: nothing was written, and the client should get a 503.
    pub async fn finish(&self) -> Result<Option<String>, StoreError> {
        let (current, changes, had_cookie, mut cookie) = {
            let mut state = self.lock();
            (
                std::mem::replace(&mut state.current, Current::Absent),
                std::mem::take(&mut state.changes),
                state.had_cookie,
                state.cookie.take(),
            )
        };
        let store = &self.sessions.store;
        match current {
            Current::Stored { id, .. } if !changes.is_empty() => {
                let saved = self
                    .sessions
                    .call(StoreOp::Save, store.save(&id, &changes))
                    .await?;
                if !saved {
                    cookie = had_cookie.then_some(CookieChange::Clear);
                }
            }
            Current::New { mut id } => {
                let attributes = initial_attributes(&changes);
                let mut created = false;
                for _ in 0..3 {
                    if self
                        .sessions
                        .call(StoreOp::Create, store.create(&id, &attributes))
                        .await?
                    {
                        created = true;
                        break;
                    }
                    id = id::new_id()?;
                }
                if !created {
                    return Err(StoreError::Unavailable("could not create a session".into()));
                }
                cookie = Some(CookieChange::Set(id));
            }
            _ => {}
        }
        Ok(cookie.map(|change| self.sessions.cookie.header(&change, self.over_tls)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::MemoryStore;
    use std::time::Duration;

    fn sessions() -> Arc<Sessions> {
        let store = Arc::new(MemoryStore::new(Duration::from_secs(60), 100));
        Sessions::with_store(store, "S", false, Duration::from_secs(1))
    }

    fn headers(cookie: Option<&str>) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        if let Some(cookie) = cookie {
            headers.insert(http::header::COOKIE, cookie.parse().unwrap());
        }
        headers
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
        let scope = sessions.begin(&headers(Some("S=forged")), false);
        assert_eq!(scope.finish().await.unwrap(), None);
        assert!(sessions.store.load("forged").await.unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_first_write_creates_the_session_and_its_cookie() {
        let sessions = sessions();
        let scope = sessions.begin(&headers(None), false);
        let worker = Arc::clone(&scope);
        on_worker(move || {
            assert_eq!(worker.get("n").unwrap(), None);
            assert_eq!(worker.id().unwrap(), None);
            worker.set("n", b"1".to_vec()).unwrap();
            assert_eq!(worker.get("n").unwrap(), Some(b"1".to_vec()));
        })
        .await;
        let cookie = scope.finish().await.unwrap().unwrap();
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
        let id = id::new_id().unwrap();
        sessions
            .store
            .create(&id, &Attributes::new())
            .await
            .unwrap();
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
        let id = id::new_id().unwrap();
        sessions
            .store
            .create(&id, &Attributes::new())
            .await
            .unwrap();
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
        let scope = sessions.begin(&headers(None), false);
        let worker = Arc::clone(&scope);
        on_worker(move || {
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
        let id = id_of(&scope.finish().await.unwrap().unwrap());
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
}
