//! The interface every session store implements, and the errors stores report.
//!
//! A store keeps sessions by id, each a set of attributes (JSON texts by name) with a sliding
//! expiry: a session not used for its timeout is gone, and nothing brings it back. The methods
//! are the round trips a request needs: load (which also refreshes the expiry when due), create,
//! save the attributes a request changed, compare-and-set one attribute for atomic updates
//! (which answers the attribute's current value on a conflict, and can load the whole session
//! in the same step), rename for id rotation, and remove.
//!
//! For operators, a store may also list, count and describe its sessions without using them
//! (no expiry refresh). These have default implementations answering
//! [`StoreError::Unsupported`], so a store that cannot enumerate its sessions still works for
//! requests.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot be reached or failed the operation.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// The operation did not finish within the configured timeout.
    #[error("session store did not answer within {0} ms")]
    Timeout(u64),
    /// The store holds its maximum number of sessions and cannot create another.
    #[error("session store is full ({0} sessions)")]
    Full(usize),
    /// The store cannot do this (e.g. enumerate its sessions).
    #[error("this session store cannot {0}")]
    Unsupported(&'static str),
    /// The store's settings are wrong (a URL, a file, a prefix); found when it is opened.
    #[error("invalid session store settings: {0}")]
    Invalid(String),
}

impl StoreError {
    /// Whether the error means the store is down (as opposed to full).
    pub fn is_outage(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Timeout(_))
    }
}

/// One kind of store call, as counted in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreOp {
    /// [`SessionStore::load`].
    Load,
    /// [`SessionStore::create`].
    Create,
    /// [`SessionStore::save`].
    Save,
    /// [`SessionStore::compare_and_set`].
    CompareAndSet,
    /// [`SessionStore::rename`].
    Rename,
    /// [`SessionStore::remove`].
    Remove,
    /// [`SessionStore::list`].
    List,
    /// [`SessionStore::count`].
    Count,
    /// [`SessionStore::info`].
    Info,
}

impl StoreOp {
    /// Every operation, in the order of their index.
    pub const ALL: [StoreOp; 9] = [
        StoreOp::Load,
        StoreOp::Create,
        StoreOp::Save,
        StoreOp::CompareAndSet,
        StoreOp::Rename,
        StoreOp::Remove,
        StoreOp::List,
        StoreOp::Count,
        StoreOp::Info,
    ];

    /// The metric label: `load`, `compare_and_set`, …
    pub fn name(self) -> &'static str {
        match self {
            StoreOp::Load => "load",
            StoreOp::Create => "create",
            StoreOp::Save => "save",
            StoreOp::CompareAndSet => "compare_and_set",
            StoreOp::Rename => "rename",
            StoreOp::Remove => "remove",
            StoreOp::List => "list",
            StoreOp::Count => "count",
            StoreOp::Info => "info",
        }
    }

    /// Its position in [`StoreOp::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The future every store method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A session's attributes: JSON texts by name.
pub type Attributes = BTreeMap<String, Vec<u8>>;

/// A compare-and-set: store `new` under attribute `name` of session `id` if the attribute
/// still holds `expected` (`None`: absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CasRequest<'a> {
    /// The session id.
    pub id: &'a str,
    /// The attribute's name.
    pub name: &'a str,
    /// The value the attribute must still hold; `None`: it must be absent.
    pub expected: Option<&'a [u8]>,
    /// The value to store.
    pub new: &'a [u8],
    /// Also answer the session's attributes, as they were before the write: the call is then
    /// the request's load as well (and, on a conflict, counts as a use as a load does).
    pub load: bool,
}

impl<'a> CasRequest<'a> {
    /// A request to store `new` under `name` of session `id` if it still holds `expected`.
    pub fn new(id: &'a str, name: &'a str, expected: Option<&'a [u8]>, new: &'a [u8]) -> Self {
        CasRequest {
            id,
            name,
            expected,
            new,
            load: false,
        }
    }

    /// The same request, answering the session's attributes too.
    #[must_use]
    pub fn loading(self) -> Self {
        CasRequest { load: true, ..self }
    }
}

/// The outcome of a compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cas {
    /// The session does not exist (any more); nothing was written.
    Gone,
    /// The attribute no longer holds the expected value; nothing was written.
    Conflict {
        /// What it holds instead (`None`: it is absent), for the next attempt.
        current: Option<Vec<u8>>,
        /// The session's attributes, if the request asked for them.
        session: Option<Attributes>,
    },
    /// The new value is stored.
    Done {
        /// The session's attributes before the write, if the request asked for them.
        session: Option<Attributes>,
    },
}

/// What an operator sees of one session: its metadata and attribute names, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session id.
    pub id: String,
    /// When it was created (Unix milliseconds; 0 if unknown).
    pub created_ms: u64,
    /// When it was last used (Unix milliseconds), as far as the store tracks it.
    pub accessed_ms: u64,
    /// Its timeout: it expires after this long without use.
    pub timeout_ms: u64,
    /// Milliseconds until it expires unless used before.
    pub expires_in_ms: u64,
    /// Its attribute names, sorted.
    pub attributes: Vec<String>,
}

/// Part of a store's sessions, as listed for an operator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionPage {
    /// The sessions, most recently used first.
    pub sessions: Vec<SessionInfo>,
    /// Whether more sessions matched than were listed.
    pub more: bool,
}

fn unsupported<'a, T: Send + 'a>(what: &'static str) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(Err(StoreError::Unsupported(what))))
}

/// A place to keep sessions. Implementations must be safe to share between requests and host
/// processes; every write is all-or-nothing and never recreates an expired session.
pub trait SessionStore: Send + Sync + fmt::Debug {
    /// A short name for logs: `memory`, `redis`.
    fn kind(&self) -> &'static str;

    /// Whether every call's future is ready when it is made (the store does no I/O), so that a
    /// worker thread can take the answer without waiting on the runtime.
    fn answers_at_once(&self) -> bool {
        false
    }

    /// The session's attributes, or `None` if `id` is unknown or expired. Counts as a use: the
    /// expiry is refreshed when a meaningful part of the timeout has passed since the last
    /// refresh.
    fn load<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Attributes>>;

    /// Creates session `id` with `attributes`; `false` (and nothing written) if `id` exists.
    fn create<'a>(&'a self, id: &'a str, attributes: &'a Attributes) -> StoreFuture<'a, bool>;

    /// Sets (`Some`) and removes (`None`) attributes in one step; `false` (and nothing written)
    /// if the session no longer exists.
    fn save<'a>(
        &'a self,
        id: &'a str,
        changes: &'a BTreeMap<String, Option<Vec<u8>>>,
    ) -> StoreFuture<'a, bool>;

    /// Stores the request's new value if the attribute still holds the expected one; on a
    /// conflict, answers what it holds instead. Refreshes the expiry when it writes.
    fn compare_and_set<'a>(&'a self, request: CasRequest<'a>) -> StoreFuture<'a, Cas>;

    /// Moves session `from` to id `to`, attributes and expiry kept; `false` if `from` does not
    /// exist or `to` does.
    fn rename<'a>(&'a self, from: &'a str, to: &'a str) -> StoreFuture<'a, bool>;

    /// Deletes a session; `false` if it did not exist.
    fn remove<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool>;

    /// Up to `limit` live sessions whose id starts with `id_prefix` (every one for `""`),
    /// without using them. Which ones, when more match, is up to the store.
    fn list<'a>(&'a self, id_prefix: &'a str, limit: usize) -> StoreFuture<'a, SessionPage> {
        let _ = (id_prefix, limit);
        unsupported("list sessions")
    }

    /// How many live sessions the store holds (may take time proportional to that number).
    fn count(&self) -> StoreFuture<'_, u64> {
        unsupported("count sessions")
    }

    /// Session `id`'s metadata, without using it; `None` if unknown or expired.
    fn info<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<SessionInfo>> {
        let _ = id;
        unsupported("describe sessions")
    }
}

pub(crate) use crate::clock::now_unix_ms as now_ms;

/// Behaviour every store must show, run by each store's own tests against a real instance.
#[cfg(test)]
pub(crate) mod contract;
