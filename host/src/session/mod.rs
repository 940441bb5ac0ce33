//! Sessions: per-client attributes that outlive requests, app versions and host processes.
//!
//! - [`SessionStore`] (`store`) is what a store does, in round trips; [`MemoryStore`]
//!   (`memory`, the default) keeps sessions in this process, [`RedisStore`] (`redis`) in Redis,
//!   shared by every host pointed at it: one server (plain or TLS), the master of a Sentinel
//!   set, or a Cluster, each behind one connection type (`redis/conn`), with the Lua scripts in
//!   `redis/scripts` and the key layout in `redis/keys`. The store URL's grammar and its
//!   password-hiding form are the configuration's ([`crate::config::StoreUrl`]). One contract
//!   test (`store/contract`) runs every operation against memory, Redis, TLS Redis and a
//!   cluster.
//! - [`Sessions`] is the host's front: it owns the store, bounds every store call with the
//!   configured timeout, counts every call by operation (and its failures) into the metrics'
//!   counters, logs an outage once when it starts and once when it ends, and starts a
//!   [`RequestSession`] for each request. It also answers the admin API's listing, counting and
//!   invalidation.
//! - A [`RequestSession`] (`scope`) is one request's view, handed to the module through the
//!   loader's session callbacks, which know it only as the loader's
//!   [`SessionAccess`](crate::loader::SessionAccess). It is lazy: it reads the store only when
//!   the app first uses the session, creates a session only when the app first writes, buffers
//!   plain writes and stores only the changed attributes when the request ends
//!   ([`RequestSession::finish`]), in one round trip. Atomic updates, rotation and invalidation
//!   go to the store at once. An atomic update that is the request's first use of its session
//!   costs one round trip when this host's guess of the attribute (`guess`: the value it last
//!   stored there) is right: the compare-and-set loads the session in the same step, and the
//!   store checks the guess atomically, so a wrong one costs a round trip, never a stale
//!   value.
//! - `id` makes session ids and reads them from cookies, for the session layer and for sticky
//!   canary routing alike.
//!
//! Sessions depend on the loader (whose trait they implement) and on the metrics (whose
//! counters they update); neither depends on them. Module code runs on a version's worker
//! threads, never on the runtime; the session callbacks it calls block that worker thread on the
//! host runtime for the store's answer.

mod guess;
mod id;
mod memory;
mod redis;
mod scope;
mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[cfg(test)]
pub(crate) use id::from_cookies as session_id;
pub(crate) use id::sticky_key;
pub use memory::{HandedSession, MemoryStore};
pub use redis::RedisStore;
pub(crate) use redis::RedisTls;
pub use scope::{Ending, RequestSession};
pub use store::{
    Attributes, Cas, CasRequest, SessionInfo, SessionPage, SessionStore, StoreError, StoreFuture,
    StoreOp,
};

use crate::config::SessionConfig;
use crate::error::{Error, Result};
use crate::logging::request::in_request;
use crate::metrics::{Metrics, OpCounters};
use id::CookieSpec;

/// Milliseconds since the Unix epoch, the clock of the sessions' metadata.
pub fn now_unix_ms() -> u64 {
    store::now_ms()
}

/// Store calls by [`StoreOp`], and their failures.
type StoreMetrics = OpCounters<{ StoreOp::ALL.len() }>;

/// The host's sessions: the store, the cookie settings and the store's health.
#[derive(Debug)]
pub struct Sessions {
    store: Arc<dyn SessionStore>,
    cookie: CookieSpec,
    op_timeout: Duration,
    runtime: tokio::runtime::Handle,
    down: AtomicBool,
    metrics: StoreMetrics,
    /// The in-memory store, when sessions live in this process (they move on an upgrade).
    memory: Option<Arc<MemoryStore>>,
    /// Guesses of attribute values for atomic updates, for a store a round trip away.
    guesses: Option<guess::Guesses>,
}

impl Sessions {
    /// The sessions `config` describes: an in-memory store with its expiry sweep, or a Redis
    /// store (connected lazily, so the host starts while Redis is down), with a `Secure`
    /// cookie if `cookie_secure` (the effective setting, [`crate::Config::cookie_secure`]).
    /// Store calls are counted into `metrics`, by operation.
    ///
    /// # Errors
    /// [`Error::Config`] for a store URL the Redis client refuses.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn from_config(
        config: &SessionConfig,
        cookie_secure: bool,
        metrics: &Metrics,
    ) -> Result<Arc<Sessions>> {
        let timeout = config.timeout();
        let mut memory = None;
        let store: Arc<dyn SessionStore> = if config.is_memory() {
            let store = Arc::new(MemoryStore::new(timeout, config.max_sessions));
            let sweep = Duration::from_secs(config.sweep_interval_secs.max(1));
            store.spawn_sweeper(sweep);
            memory = Some(Arc::clone(&store));
            store
        } else {
            let tls = RedisTls {
                ca_file: config.tls_ca_file.clone(),
                cert_file: config.tls_cert_file.clone(),
                key_file: config.tls_key_file.clone(),
            };
            let store = RedisStore::open(
                &config.store_url()?,
                &tls,
                &config.redis_prefix,
                timeout,
                config.op_timeout(),
            )
            .map_err(|e| Error::Config(format!("sessions.store: {e}")))?;
            Arc::new(store)
        };
        let mut sessions = Self::build(
            store,
            &config.cookie_name,
            cookie_secure,
            config.op_timeout(),
        );
        sessions.metrics = metrics.session_store(StoreOp::ALL.map(StoreOp::name));
        if memory.is_some() {
            // A load costs no round trip here: updates start from the session itself.
            sessions.guesses = None;
        }
        sessions.memory = memory;
        Ok(Arc::new(sessions))
    }

    /// Whether sessions live in this process's memory (and so must be handed over when a new
    /// serving process takes over).
    pub fn in_memory(&self) -> bool {
        self.memory.is_some()
    }

    /// Writes every live in-memory session to `path` (owner-only, atomically), for the next
    /// serving process of an upgrade. Returns how many; none for a shared store.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn hand_over(&self, path: &std::path::Path) -> Result<usize> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let Some(memory) = &self.memory else {
            return Ok(0);
        };
        let sessions = memory.export();
        let what = || format!("cannot hand sessions over in {}", path.display());
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(&sessions).map_err(|e| Error::io(what(), e.into()))?;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut file| file.write_all(&bytes).and_then(|()| file.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| Error::io(what(), e))?;
        Ok(sessions.len())
    }

    /// Takes over the sessions a previous serving process wrote to `path` with
    /// [`hand_over`](Self::hand_over), and removes the file. Returns how many.
    ///
    /// # Errors
    /// If the file exists but cannot be read or parsed.
    pub fn take_over(&self, path: &std::path::Path) -> Result<usize> {
        let what = || format!("cannot take sessions over from {}", path.display());
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io(what(), e)),
        };
        let _ = std::fs::remove_file(path);
        let handed: Vec<HandedSession> =
            serde_json::from_slice(&bytes).map_err(|e| Error::io(what(), e.into()))?;
        Ok(self
            .memory
            .as_ref()
            .map_or(0, |memory| memory.import(handed)))
    }

    /// Sessions kept in `store`, with cookie `cookie_name` and each store call bounded by
    /// `op_timeout`.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn with_store(
        store: Arc<dyn SessionStore>,
        cookie_name: &str,
        cookie_secure: bool,
        op_timeout: Duration,
    ) -> Arc<Sessions> {
        Arc::new(Self::build(store, cookie_name, cookie_secure, op_timeout))
    }

    fn build(
        store: Arc<dyn SessionStore>,
        cookie_name: &str,
        cookie_secure: bool,
        op_timeout: Duration,
    ) -> Sessions {
        Sessions {
            store,
            cookie: CookieSpec {
                name: cookie_name.to_owned(),
                secure: cookie_secure,
            },
            op_timeout,
            runtime: tokio::runtime::Handle::current(),
            down: AtomicBool::new(false),
            metrics: StoreMetrics::default(),
            memory: None,
            guesses: Some(guess::Guesses::default()),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// Whether the last store call failed because the store is down.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Up to `limit` live sessions whose id starts with `id_prefix`, without using them.
    ///
    /// # Errors
    /// The store's error: [`StoreError::Unsupported`] if it cannot list, an outage, or the op
    /// timeout.
    pub async fn list(&self, id_prefix: &str, limit: usize) -> Result<SessionPage, StoreError> {
        self.call(StoreOp::List, self.store.list(id_prefix, limit))
            .await
    }

    /// How many live sessions the store holds.
    ///
    /// # Errors
    /// As [`Sessions::list`].
    pub async fn count(&self) -> Result<u64, StoreError> {
        self.call(StoreOp::Count, self.store.count()).await
    }

    /// Session `id`'s metadata, without using it.
    ///
    /// # Errors
    /// As [`Sessions::list`].
    pub async fn info(&self, id: &str) -> Result<Option<SessionInfo>, StoreError> {
        self.call(StoreOp::Info, self.store.info(id)).await
    }

    /// Deletes session `id`; its client gets a fresh session on its next write. `false` if it
    /// did not exist.
    ///
    /// # Errors
    /// As [`Sessions::list`].
    pub async fn invalidate(&self, id: &str) -> Result<bool, StoreError> {
        if let Some(guesses) = &self.guesses {
            guesses.forget(id);
        }
        self.call(StoreOp::Remove, self.store.remove(id)).await
    }

    /// Whether `id` has the shape of a session id (48 lower-case hex digits).
    pub fn is_session_id(id: &str) -> bool {
        id::is_valid(id)
    }

    /// Starts one request's session from its headers; a request that arrived `over_tls` gets
    /// a `Secure` cookie. Makes no store call.
    pub fn begin(
        self: &Arc<Self>,
        headers: &http::HeaderMap,
        over_tls: bool,
    ) -> Arc<RequestSession> {
        let cookie = id::from_cookies(headers, &self.cookie.name).map(str::to_owned);
        Arc::new(RequestSession::new(Arc::clone(self), cookie, over_tls))
    }

    /// Runs one store call, bounded by the timeout, and records the store's health.
    async fn call<T>(&self, op: StoreOp, call: StoreFuture<'_, T>) -> Result<T, StoreError> {
        let result = match tokio::time::timeout(self.op_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(crate::clock::millis(self.op_timeout))),
        };
        self.record(op, &result);
        result
    }

    /// Counts a store call and notes the store's health from its result.
    fn record<T>(&self, op: StoreOp, result: &Result<T, StoreError>) {
        self.metrics.record(op.index(), result.is_err());
        // In the span of the request that made the call.
        match &result {
            Ok(_) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    in_request(|| {
                        tracing::info!(store = self.store.kind(), "session store available again");
                    });
                }
            }
            Err(e) if e.is_outage() => {
                if !self.down.swap(true, Ordering::Relaxed) {
                    in_request(|| {
                        tracing::warn!(store = self.store.kind(), error = %e,
                        "session store unavailable; requests that use the session fail until it is back")
                    });
                } else {
                    in_request(|| {
                        tracing::debug!(store = self.store.kind(), error = %e,
                        "session store call failed")
                    });
                }
            }
            Err(_) => {}
        }
    }

    /// Runs one store call from a worker thread, blocking it until the answer.
    fn run<T>(&self, op: StoreOp, call: StoreFuture<'_, T>) -> Result<T, StoreError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            // Blocking a runtime thread could stall the runtime; module code never runs there.
            return Err(StoreError::Unavailable(
                "session access from a runtime thread".into(),
            ));
        }
        let mut call = call;
        if self.store.answers_at_once() {
            // Nothing to wait for: no trip through the runtime (entering it, a timer).
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            if let std::task::Poll::Ready(result) = call.as_mut().poll(&mut cx) {
                self.record(op, &result);
                return result;
            }
        }
        self.runtime.block_on(self.call(op, call))
    }
}
