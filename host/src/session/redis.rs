//! The Redis session store: sessions shared by every host process and every app version.
//!
//! Layout: one hash per session (at `PREFIX + id`, or `PREFIX{id}` in a cluster: `keys`). Each
//! attribute is one field holding its JSON text; the metadata fields `#created_ms`,
//! `#accessed_ms` (milliseconds since the epoch) and `#timeout_ms` start with `#`, which
//! attribute names may not. The key's TTL is the session timeout.
//!
//! Every operation is one round trip, and every write is a Lua script (`scripts`), so it is atomic and
//! checks that the session still exists before writing: a write never recreates a session that
//! expired or was invalidated meanwhile. Loading refreshes the TTL (and `#accessed_ms`) only once
//! a tenth of the timeout has passed since the last refresh, so a busy session costs no write on
//! most requests; every write refreshes it anyway. Atomic updates store the new value with a
//! compare-and-set script, which answers the attribute's current value on a conflict (for the
//! caller's next attempt) and, when asked, the whole session too, so that an update that is a
//! request's first use of its session is also its load: one round trip when the expected value
//! was right.
//!
//! Operators' listing and counting use `SCAN` with `MATCH PREFIX*` (never `KEYS`), on every
//! master of a cluster, so Redis stays responsive; a listing stops once it has its page, but a
//! count walks every key of the database, in time proportional to its size, bounded like every
//! call by the op timeout.
//!
//! The connection (`conn`) is opened from the store URL: one server, plain or TLS; the master
//! of a Sentinel set, found again after a failover (`sentinel`); or a Cluster (`cluster`),
//! whose rotation moves a session across slots in steps instead of a `RENAME`. Every kind
//! connects lazily, so the host starts even while Redis is down.

mod cluster;
mod conn;
mod keys;
mod scripts;
mod sentinel;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use redis::RedisError;

use super::store::{
    Attributes, Cas, CasRequest, SessionInfo, SessionPage, SessionStore, StoreError, StoreFuture,
    now_ms,
};
use crate::config::{StoreKind, StoreUrl};
use conn::Conn;
pub(crate) use conn::RedisTls;
use keys::Keys;
use scripts::Scripts;

/// Keys asked for per `SCAN` round trip.
const SCAN_COUNT: usize = 1000;

/// Sessions in Redis. Its `Debug` shows the store URL with the password hidden.
#[derive(Debug)]
pub struct RedisStore {
    url: StoreUrl,
    conn: Conn,
    keys: Keys,
    timeout_ms: u64,
    scripts: Scripts,
}

fn unavailable(e: RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    /// A store at `url` (`redis://HOST:PORT/DB`, or any other Redis form `sessions.store`
    /// takes, without TLS files), keys under `prefix`, sessions expiring after `timeout`
    /// without use. Connects lazily: the first operation opens the connection, and a lost
    /// connection is reopened by the next operation. `op_timeout` bounds each connection
    /// attempt and each response.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] if `url` is not a Redis URL (the error shows it without its
    /// password).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(
        url: &str,
        prefix: &str,
        timeout: Duration,
        op_timeout: Duration,
    ) -> Result<RedisStore, StoreError> {
        let url = StoreUrl::parse(url).map_err(|e| StoreError::Invalid(e.to_string()))?;
        Self::open(&url, &RedisTls::default(), prefix, timeout, op_timeout)
    }

    /// A store at `url`, any of the Redis forms, with `tls`'s files for `rediss://`; otherwise
    /// as [`RedisStore::new`].
    ///
    /// # Errors
    /// [`StoreError::Invalid`] if `url` is not a Redis store, a TLS file cannot be read or
    /// parsed, or a cluster's `prefix` has a brace (which would make it the hash tag).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub(crate) fn open(
        url: &StoreUrl,
        tls: &RedisTls,
        prefix: &str,
        timeout: Duration,
        op_timeout: Duration,
    ) -> Result<RedisStore, StoreError> {
        let cluster = url.kind() == StoreKind::Cluster;
        if cluster && prefix.contains(['{', '}']) {
            return Err(StoreError::Invalid(format!(
                "a cluster's key prefix may not contain braces: {prefix:?}"
            )));
        }
        let conn = Conn::open(url, tls, op_timeout)?;
        tracing::info!(store = %url, "session store");
        Ok(RedisStore {
            url: url.clone(),
            conn,
            keys: Keys::new(prefix, cluster),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            scripts: Scripts::new(),
        })
    }

    fn key(&self, id: &str) -> String {
        self.keys.session(id)
    }

    /// The ids of the sessions whose id starts with `id_prefix`, found with `SCAN` on every
    /// master, until the walk ends or `enough` are found. `SCAN` may return a key twice; the
    /// set removes those.
    async fn scan(&self, id_prefix: &str, enough: usize) -> Result<HashSet<String>, StoreError> {
        let mut conn = self.conn.clone();
        let pattern = self.keys.pattern(id_prefix);
        let mut ids = HashSet::new();
        for node in conn.scan_nodes().await.map_err(unavailable)? {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT);
                let (next, batch): (u64, Vec<Vec<u8>>) =
                    conn.on_node(&node, scan).await.map_err(unavailable)?;
                ids.extend(batch.into_iter().filter_map(|key| self.keys.id_of(key)));
                if ids.len() >= enough {
                    return Ok(ids);
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(ids)
    }

    /// The metadata of sessions `ids`, in one round trip (one per session, at once, in a
    /// cluster, where a pipeline stays in one slot); those gone meanwhile are left out.
    async fn describe(&self, ids: Vec<String>) -> Result<Vec<SessionInfo>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        type Reply = (Vec<Option<u64>>, Vec<String>, i64);
        let per_pipeline = if matches!(self.conn, Conn::Cluster(_)) {
            1
        } else {
            ids.len()
        };
        let mut calls = tokio::task::JoinSet::new();
        for (index, chunk) in ids.chunks(per_pipeline).enumerate() {
            let mut pipe = redis::pipe();
            for id in chunk {
                let key = self.key(id);
                pipe.cmd("HMGET")
                    .arg(&key)
                    .arg("#created_ms")
                    .arg("#accessed_ms")
                    .arg("#timeout_ms")
                    .cmd("HKEYS")
                    .arg(&key)
                    .cmd("PTTL")
                    .arg(&key);
            }
            let mut conn = self.conn.clone();
            calls.spawn(async move { (index, pipe.query_async::<Vec<Reply>>(&mut conn).await) });
        }
        let mut replies = vec![Vec::new(); calls.len()];
        while let Some(joined) = calls.join_next().await {
            let (index, reply) = joined
                .map_err(|e| StoreError::Unavailable(format!("a listing call failed: {e}")))?;
            replies[index] = reply.map_err(unavailable)?;
        }
        Ok(ids
            .into_iter()
            .zip(replies.into_iter().flatten())
            .filter_map(|(id, (meta, fields, ttl))| {
                // PTTL is -2 for a key that no longer exists.
                let ttl = u64::try_from(ttl).ok()?;
                let field = |i: usize| meta.get(i).copied().flatten().unwrap_or(0);
                Some(SessionInfo {
                    id,
                    created_ms: field(0),
                    accessed_ms: field(1),
                    timeout_ms: field(2),
                    expires_in_ms: ttl,
                    attributes: fields.into_iter().filter(|f| !f.starts_with('#')).collect(),
                })
            })
            .collect())
    }
}

/// The outcome in the compare-and-set script's reply; the session's attributes in it if they
/// were asked for.
fn cas_outcome(reply: Vec<redis::Value>, load: bool) -> Result<Cas, StoreError> {
    use redis::Value;
    let malformed = |e: redis::ParsingError| {
        StoreError::Unavailable(format!("unexpected reply to a compare-and-set: {e}"))
    };
    let session = |hash: Value| -> Result<Option<Attributes>, StoreError> {
        if !load {
            return Ok(None);
        }
        let flat: Vec<Vec<u8>> = redis::from_redis_value(hash).map_err(malformed)?;
        Ok(Some(attributes(flat)))
    };
    let mut parts = reply.into_iter();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Value::Int(-1)), None, None) => Ok(Cas::Gone),
        (Some(Value::Int(1)), Some(hash), None) => Ok(Cas::Done {
            session: session(hash)?,
        }),
        (Some(Value::Int(0)), Some(current), Some(hash)) => Ok(Cas::Conflict {
            current: redis::from_redis_value(current).map_err(malformed)?,
            session: session(hash)?,
        }),
        other => Err(StoreError::Unavailable(format!(
            "unexpected reply to a compare-and-set: {other:?}"
        ))),
    }
}

/// The attributes of a flat `HGETALL` reply, metadata left out.
fn attributes(flat: Vec<Vec<u8>>) -> Attributes {
    let mut attributes = Attributes::new();
    let mut fields = flat.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        if name.starts_with(b"#") {
            continue;
        }
        if let Ok(name) = String::from_utf8(name) {
            attributes.insert(name, value);
        }
    }
    attributes
}

impl SessionStore for RedisStore {
    fn kind(&self) -> &'static str {
        match self.url.kind() {
            StoreKind::Sentinel => "redis+sentinel",
            StoreKind::Cluster => "redis+cluster",
            _ => "redis",
        }
    }

    fn load<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Attributes>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let flat: Option<Vec<Vec<u8>>> = self
                .scripts
                .load
                .key(self.key(id))
                .arg(now_ms())
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            Ok(flat.map(attributes))
        })
    }

    fn create<'a>(&'a self, id: &'a str, attributes: &'a Attributes) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut call = self.scripts.create.key(self.key(id));
            call.arg(now_ms()).arg(self.timeout_ms);
            for (name, value) in attributes {
                call.arg(name).arg(value.as_slice());
            }
            let created: i64 = call.invoke_async(&mut conn).await.map_err(unavailable)?;
            Ok(created == 1)
        })
    }

    fn save<'a>(
        &'a self,
        id: &'a str,
        changes: &'a BTreeMap<String, Option<Vec<u8>>>,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut call = self.scripts.save.key(self.key(id));
            let sets: Vec<(&String, &Vec<u8>)> = changes
                .iter()
                .filter_map(|(name, value)| value.as_ref().map(|v| (name, v)))
                .collect();
            call.arg(now_ms()).arg(sets.len());
            for (name, value) in sets {
                call.arg(name).arg(value.as_slice());
            }
            for (name, _) in changes.iter().filter(|(_, value)| value.is_none()) {
                call.arg(name);
            }
            let saved: i64 = call.invoke_async(&mut conn).await.map_err(unavailable)?;
            Ok(saved == 1)
        })
    }

    fn compare_and_set<'a>(&'a self, request: CasRequest<'a>) -> StoreFuture<'a, Cas> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let reply: Vec<redis::Value> = self
                .scripts
                .cas
                .key(self.key(request.id))
                .arg(now_ms())
                .arg(request.name)
                .arg(if request.expected.is_some() { "1" } else { "0" })
                .arg(request.expected.unwrap_or_default())
                .arg(request.new)
                .arg(if request.load { "1" } else { "0" })
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            cas_outcome(reply, request.load)
        })
    }

    fn rename<'a>(&'a self, from: &'a str, to: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            if let Conn::Cluster(cluster) = &self.conn {
                return cluster
                    .rotate(&self.scripts, &self.keys, from, to)
                    .await
                    .map_err(unavailable);
            }
            let mut conn = self.conn.clone();
            let renamed: i64 = self
                .scripts
                .rename
                .key(self.key(from))
                .key(self.key(to))
                .arg(now_ms())
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            Ok(renamed == 1)
        })
    }

    fn remove<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let removed: i64 = redis::cmd("DEL")
                .arg(self.key(id))
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            Ok(removed == 1)
        })
    }

    fn list<'a>(&'a self, id_prefix: &'a str, limit: usize) -> StoreFuture<'a, SessionPage> {
        Box::pin(async move {
            let ids = self.scan(id_prefix, limit.saturating_add(1)).await?;
            let more = ids.len() > limit;
            let mut ids: Vec<String> = ids.into_iter().collect();
            ids.sort_unstable();
            ids.truncate(limit);
            let mut sessions = self.describe(ids).await?;
            sessions.sort_by_key(|s| std::cmp::Reverse(s.accessed_ms));
            Ok(SessionPage { sessions, more })
        })
    }

    fn count(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move { Ok(self.scan("", usize::MAX).await?.len() as u64) })
    }

    fn info<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<SessionInfo>> {
        Box::pin(async move { Ok(self.describe(vec![id.to_owned()]).await?.pop()) })
    }
}

#[cfg(test)]
mod tests;
