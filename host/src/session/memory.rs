//! The in-memory session store: the default, for a single host process.
//!
//! Sessions live in one map behind a mutex that is never held across an `.await` or a call into
//! module code. Each use refreshes a session's expiry; a background task sweeps expired sessions
//! so memory does not grow with abandoned ones, and a maximum bounds the map: when it is full,
//! creating a session fails (a 503 for the app that tried) rather than evicting someone else's.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::store::{
    Attributes, Cas, CasRequest, SessionInfo, SessionPage, SessionStore, StoreError, StoreFuture,
    now_ms,
};

#[derive(Debug)]
struct Entry {
    attributes: Attributes,
    last_access: Instant,
    created_ms: u64,
}

/// One session as handed from a serving process to the next one during an upgrade.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HandedSession {
    /// Session id.
    pub id: String,
    /// Creation time (Unix milliseconds).
    pub created_ms: u64,
    /// Time since its last use, when it was handed over.
    pub idle_ms: u64,
    /// Attributes: name to JSON text.
    pub attributes: BTreeMap<String, String>,
}

/// Sessions in this process's memory.
#[derive(Debug)]
pub struct MemoryStore {
    sessions: Mutex<HashMap<String, Entry>>,
    timeout: Duration,
    max_sessions: usize,
    full: AtomicBool,
}

use crate::clock::millis;

fn ready<'a, T: Send + 'a>(value: Result<T, StoreError>) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl MemoryStore {
    /// A store whose sessions expire after `timeout` without use, holding at most
    /// `max_sessions`. Call [`spawn_sweeper`](Self::spawn_sweeper) to reclaim expired ones.
    pub fn new(timeout: Duration, max_sessions: usize) -> MemoryStore {
        MemoryStore {
            sessions: Mutex::new(HashMap::new()),
            timeout,
            max_sessions,
            full: AtomicBool::new(false),
        }
    }

    /// Sweeps expired sessions every `interval` on the current tokio runtime, until the store
    /// is dropped.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn_sweeper(self: &Arc<Self>, interval: Duration) {
        let store: Weak<MemoryStore> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(store) = store.upgrade() else { return };
                let swept = store.sweep();
                if swept > 0 {
                    tracing::debug!(swept, "expired sessions removed");
                }
            }
        });
    }

    /// Removes every expired session; returns how many.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut sessions = self.lock();
        let before = sessions.len();
        sessions.retain(|_, entry| !self.expired(entry, now));
        let swept = before - sessions.len();
        self.note_fill(sessions.len());
        swept
    }

    /// Every live session, for the next serving process of an upgrade.
    pub fn export(&self) -> Vec<HandedSession> {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter(|(_, entry)| !self.expired(entry, now))
            .map(|(id, entry)| HandedSession {
                id: id.clone(),
                created_ms: entry.created_ms,
                idle_ms: millis(now.saturating_duration_since(entry.last_access)),
                attributes: entry
                    .attributes
                    .iter()
                    // Values are JSON text, so UTF-8.
                    .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                    .collect(),
            })
            .collect()
    }

    /// Takes over sessions exported by the previous serving process, each with the idle time it
    /// had; ids this store already holds are left alone. Returns how many were taken.
    pub fn import(&self, handed: Vec<HandedSession>) -> usize {
        let now = Instant::now();
        let mut sessions = self.lock();
        let mut taken = 0;
        for session in handed {
            let idle = Duration::from_millis(session.idle_ms);
            if idle >= self.timeout
                || sessions.len() >= self.max_sessions
                || sessions.contains_key(&session.id)
            {
                continue;
            }
            let last_access = now.checked_sub(idle).unwrap_or(now);
            sessions.insert(
                session.id,
                Entry {
                    attributes: session
                        .attributes
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect(),
                    last_access,
                    created_ms: session.created_ms,
                },
            );
            taken += 1;
        }
        self.note_fill(sessions.len());
        taken
    }

    /// Sessions held now, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        crate::sync::lock(&self.sessions)
    }

    fn expired(&self, entry: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(entry.last_access) >= self.timeout
    }

    /// What an operator sees of `entry`; the wall-clock access time is derived, so using a
    /// session costs no clock read beyond the `Instant` it already takes.
    fn describe(&self, id: &str, entry: &Entry, now: Instant, now_ms: u64) -> SessionInfo {
        let idle = now.saturating_duration_since(entry.last_access);
        SessionInfo {
            id: id.to_owned(),
            created_ms: entry.created_ms,
            accessed_ms: now_ms.saturating_sub(millis(idle)),
            timeout_ms: millis(self.timeout),
            expires_in_ms: millis(self.timeout.saturating_sub(idle)),
            attributes: entry.attributes.keys().cloned().collect(),
        }
    }

    /// Logs once when the store fills up and once when it has room again.
    fn note_fill(&self, len: usize) {
        let full = len >= self.max_sessions;
        if self.full.swap(full, Ordering::Relaxed) != full {
            // In the span of the request that filled or emptied it.
            crate::logging::request::in_request(|| {
                if full {
                    tracing::warn!(
                        max_sessions = self.max_sessions,
                        "in-memory session store is full; new sessions are refused until some expire"
                    );
                } else {
                    tracing::info!(
                        max_sessions = self.max_sessions,
                        "in-memory session store has room again"
                    );
                }
            });
        }
    }

    /// The live session `id`, marked as used now; an expired one is removed.
    fn live<'m>(
        &self,
        sessions: &'m mut HashMap<String, Entry>,
        id: &str,
    ) -> Option<&'m mut Entry> {
        let now = Instant::now();
        if sessions
            .get(id)
            .is_some_and(|entry| self.expired(entry, now))
        {
            sessions.remove(id);
            return None;
        }
        let entry = sessions.get_mut(id)?;
        entry.last_access = now;
        Some(entry)
    }

    fn create_now(&self, id: &str, attributes: &Attributes) -> Result<bool, StoreError> {
        let mut sessions = self.lock();
        if self.live(&mut sessions, id).is_some() {
            return Ok(false);
        }
        if sessions.len() >= self.max_sessions {
            let now = Instant::now();
            sessions.retain(|_, entry| !self.expired(entry, now));
            if sessions.len() >= self.max_sessions {
                self.note_fill(sessions.len());
                return Err(StoreError::Full(self.max_sessions));
            }
        }
        sessions.insert(
            id.to_owned(),
            Entry {
                attributes: attributes.clone(),
                last_access: Instant::now(),
                created_ms: now_ms(),
            },
        );
        self.note_fill(sessions.len());
        Ok(true)
    }
}

impl SessionStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn answers_at_once(&self) -> bool {
        true
    }

    fn load<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Attributes>> {
        let mut sessions = self.lock();
        let found = self
            .live(&mut sessions, id)
            .map(|entry| entry.attributes.clone());
        ready(Ok(found))
    }

    fn create<'a>(&'a self, id: &'a str, attributes: &'a Attributes) -> StoreFuture<'a, bool> {
        ready(self.create_now(id, attributes))
    }

    fn save<'a>(
        &'a self,
        id: &'a str,
        changes: &'a BTreeMap<String, Option<Vec<u8>>>,
    ) -> StoreFuture<'a, bool> {
        let mut sessions = self.lock();
        let Some(entry) = self.live(&mut sessions, id) else {
            return ready(Ok(false));
        };
        for (name, value) in changes {
            match value {
                Some(value) => entry.attributes.insert(name.clone(), value.clone()),
                None => entry.attributes.remove(name),
            };
        }
        ready(Ok(true))
    }

    fn compare_and_set<'a>(&'a self, request: CasRequest<'a>) -> StoreFuture<'a, Cas> {
        let mut sessions = self.lock();
        let Some(entry) = self.live(&mut sessions, request.id) else {
            return ready(Ok(Cas::Gone));
        };
        let session = request.load.then(|| entry.attributes.clone());
        let current = entry.attributes.get(request.name);
        if current.map(Vec::as_slice) != request.expected {
            let current = current.cloned();
            return ready(Ok(Cas::Conflict { current, session }));
        }
        entry
            .attributes
            .insert(request.name.to_owned(), request.new.to_vec());
        ready(Ok(Cas::Done { session }))
    }

    fn rename<'a>(&'a self, from: &'a str, to: &'a str) -> StoreFuture<'a, bool> {
        let mut sessions = self.lock();
        if self.live(&mut sessions, from).is_none() || self.live(&mut sessions, to).is_some() {
            return ready(Ok(false));
        }
        let entry = sessions.remove(from).expect("checked live above");
        sessions.insert(to.to_owned(), entry);
        ready(Ok(true))
    }

    fn remove<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        let mut sessions = self.lock();
        let live = sessions
            .remove(id)
            .is_some_and(|entry| !self.expired(&entry, Instant::now()));
        self.note_fill(sessions.len());
        ready(Ok(live))
    }

    fn list<'a>(&'a self, id_prefix: &'a str, limit: usize) -> StoreFuture<'a, SessionPage> {
        let (now, wall) = (Instant::now(), now_ms());
        let sessions = self.lock();
        let mut matching: Vec<(&String, &Entry)> = sessions
            .iter()
            .filter(|(id, entry)| id.starts_with(id_prefix) && !self.expired(entry, now))
            .collect();
        let more = matching.len() > limit;
        if more {
            matching.select_nth_unstable_by_key(limit, |(_, e)| std::cmp::Reverse(e.last_access));
            matching.truncate(limit);
        }
        matching.sort_unstable_by_key(|(_, e)| std::cmp::Reverse(e.last_access));
        let sessions = matching
            .into_iter()
            .map(|(id, entry)| self.describe(id, entry, now, wall))
            .collect();
        ready(Ok(SessionPage { sessions, more }))
    }

    fn count(&self) -> StoreFuture<'_, u64> {
        let now = Instant::now();
        let live = self
            .lock()
            .values()
            .filter(|entry| !self.expired(entry, now))
            .count();
        ready(Ok(live as u64))
    }

    fn info<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<SessionInfo>> {
        let (now, wall) = (Instant::now(), now_ms());
        let sessions = self.lock();
        let info = sessions
            .get(id)
            .filter(|entry| !self.expired(entry, now))
            .map(|entry| self.describe(id, entry, now, wall));
        ready(Ok(info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::store::contract::{self, attrs};

    #[tokio::test]
    async fn every_store_operation_keeps_the_contract() {
        contract::every_operation(|timeout| MemoryStore::new(timeout, 1000)).await;
    }

    #[tokio::test]
    async fn sessions_expire_without_use_and_are_swept() {
        let store = MemoryStore::new(Duration::from_millis(50), 10);
        store.create("a", &attrs(&[("x", "1")])).await.unwrap();
        store.create("b", &Attributes::new()).await.unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(store.load("a").await.unwrap(), None);
        assert!(!store.save("a", &BTreeMap::new()).await.unwrap());
        assert_eq!(store.len(), 1, "b is expired but not yet swept");
        assert_eq!(store.sweep(), 1);
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn a_full_store_refuses_new_sessions_until_one_goes() {
        let store = MemoryStore::new(Duration::from_secs(60), 2);
        store.create("a", &Attributes::new()).await.unwrap();
        store.create("b", &Attributes::new()).await.unwrap();
        assert_eq!(
            store.create("c", &Attributes::new()).await,
            Err(StoreError::Full(2))
        );
        assert!(store.remove("a").await.unwrap());
        assert!(!store.remove("a").await.unwrap());
        assert!(store.create("c", &Attributes::new()).await.unwrap());
    }

    #[tokio::test]
    async fn a_page_holds_the_most_recently_used_sessions() {
        let store = MemoryStore::new(Duration::from_secs(60), 10);
        for id in ["aa1", "aa2", "aa3"] {
            store.create(id, &Attributes::new()).await.unwrap();
        }
        store.load("aa1").await.unwrap();
        let page = store.list("aa", 1).await.unwrap();
        assert!(page.more);
        assert_eq!(page.sessions.len(), 1);
        assert_eq!(page.sessions[0].id, "aa1");
    }
}
