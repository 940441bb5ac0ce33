//! The Redis session store: sessions shared by every host process and every app version.
//!
//! Layout: one hash per session at `PREFIX + id`. Each attribute is one field holding its JSON
//! text; the metadata fields `#created_ms`, `#accessed_ms` (milliseconds since the epoch) and
//! `#timeout_ms` start with `#`, which attribute names may not. The key's TTL is the session
//! timeout.
//!
//! Every operation is one round trip, and every write is a Lua script, so it is atomic and
//! checks that the session still exists before writing: a write never recreates a session that
//! expired or was invalidated meanwhile. Loading refreshes the TTL (and `#accessed_ms`) only once
//! a tenth of the timeout has passed since the last refresh, so a busy session costs no write on
//! most requests; every write refreshes it anyway. Atomic updates read the attribute and store
//! the new value with a compare-and-set script, retried by the caller on conflict.
//!
//! Operators' listing and counting use `SCAN` with `MATCH PREFIX*` (never `KEYS`), so Redis
//! stays responsive; a listing stops once it has its page, but a count walks every key of the
//! database, in time proportional to its size, bounded like every call by the op timeout.
//!
//! The connection is the `redis` crate's `ConnectionManager`, created lazily and reconnecting by
//! itself; the host starts even while Redis is down. Rotation renames the key, so the two keys
//! must live on one server (Redis Cluster is not supported).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};

use super::store::{
    Attributes, Cas, Lookup, SessionInfo, SessionPage, SessionStore, StoreError, StoreFuture,
    now_ms,
};

/// Keys asked for per `SCAN` round trip.
const SCAN_COUNT: usize = 1000;

/// Refreshes the expiry of a session that exists; shared by the scripts.
macro_rules! lua {
    ($body:literal) => {
        concat!(
            "local function touch(key, now)\n",
            "  local timeout = redis.call('HGET', key, '#timeout_ms')\n",
            "  redis.call('HSET', key, '#accessed_ms', now)\n",
            "  if timeout then redis.call('PEXPIRE', key, timeout) end\n",
            "end\n",
            $body
        )
    };
}

/// KEYS[1] session; ARGV[1] now. The flat hash, or nil.
const LOAD: &str = lua!(
    r"
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return false end
local accessed, timeout
for i = 1, #h, 2 do
  if h[i] == '#accessed_ms' then accessed = tonumber(h[i + 1])
  elseif h[i] == '#timeout_ms' then timeout = tonumber(h[i + 1]) end
end
if timeout and (accessed == nil or tonumber(ARGV[1]) - accessed >= timeout / 10) then
  touch(KEYS[1], ARGV[1])
end
return h
"
);

/// KEYS[1] session; ARGV[1] now, ARGV[2] timeout ms, then name/value pairs. 1 if created.
const CREATE: &str = lua!(
    r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], '#created_ms', ARGV[1], '#accessed_ms', ARGV[1],
  '#timeout_ms', ARGV[2], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"
);

/// KEYS[1] session; ARGV[1] now, ARGV[2] number of pairs to set, the pairs, then names to
/// delete. 1 if saved, 0 if the session is gone.
const SAVE: &str = lua!(
    r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local first_del = 3 + 2 * tonumber(ARGV[2])
if first_del > 3 then redis.call('HSET', KEYS[1], unpack(ARGV, 3, first_del - 1)) end
if #ARGV >= first_del then redis.call('HDEL', KEYS[1], unpack(ARGV, first_del)) end
touch(KEYS[1], ARGV[1])
return 1
"
);

/// KEYS[1] session; ARGV[1] name. {-1} gone, {0} absent, {1, value} present.
const READ: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then return {1, v} end
return {0}
";

/// KEYS[1] session; ARGV[1] now, ARGV[2] name, ARGV[3] '1' if a value is expected, ARGV[4] the
/// expected value, ARGV[5] the new one. -1 gone, 0 conflict, 1 done.
const CAS: &str = lua!(
    r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local cur = redis.call('HGET', KEYS[1], ARGV[2])
if ARGV[3] == '1' then
  if cur ~= ARGV[4] then return 0 end
elseif cur then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[5])
touch(KEYS[1], ARGV[1])
return 1
"
);

/// KEYS[1] from, KEYS[2] to; ARGV[1] now. 1 if renamed.
const RENAME: &str = lua!(
    r"
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
touch(KEYS[2], ARGV[1])
return 1
"
);

#[derive(Debug)]
struct Scripts {
    load: Script,
    create: Script,
    save: Script,
    read: Script,
    cas: Script,
    rename: Script,
}

/// Sessions in Redis.
#[derive(Debug)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    timeout_ms: u64,
    scripts: Scripts,
}

fn unavailable(e: RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    /// A store at `url` (`redis://HOST:PORT/DB`), keys under `prefix`, sessions expiring after
    /// `timeout` without use. Connects lazily: the first operation opens the connection, and a
    /// lost connection is reopened by the next operation. `op_timeout` bounds each connection
    /// attempt and each response.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if `url` is not a Redis URL.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(
        url: &str,
        prefix: &str,
        timeout: Duration,
        op_timeout: Duration,
    ) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(op_timeout))
            .set_response_timeout(Some(op_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(op_timeout);
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        Ok(RedisStore {
            conn,
            prefix: prefix.to_owned(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            scripts: Scripts {
                load: Script::new(LOAD),
                create: Script::new(CREATE),
                save: Script::new(SAVE),
                read: Script::new(READ),
                cas: Script::new(CAS),
                rename: Script::new(RENAME),
            },
        })
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    /// Walks the keys starting with `PREFIX + id_prefix` with `SCAN`, until the walk ends or
    /// `enough` distinct keys are found. `SCAN` may return a key twice; the set removes those.
    async fn scan(&self, id_prefix: &str, enough: usize) -> Result<HashSet<Vec<u8>>, StoreError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}*", glob_escape(&format!("{}{id_prefix}", self.prefix)));
        let mut keys = HashSet::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            keys.extend(batch);
            if next == 0 || keys.len() >= enough {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    /// The metadata of sessions `ids`, in one round trip; those gone meanwhile are left out.
    async fn describe(&self, ids: Vec<String>) -> Result<Vec<SessionInfo>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for id in &ids {
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
        type Reply = (Vec<Option<u64>>, Vec<String>, i64);
        let replies: Vec<Reply> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        Ok(ids
            .into_iter()
            .zip(replies)
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

    /// The session id of a key found by a scan.
    fn id_of(&self, key: Vec<u8>) -> Option<String> {
        String::from_utf8(key)
            .ok()?
            .strip_prefix(&self.prefix)
            .map(str::to_owned)
    }
}

/// `text` with Redis glob patterns' special characters escaped.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
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
        "redis"
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

    fn read<'a>(&'a self, id: &'a str, name: &'a str) -> StoreFuture<'a, Lookup> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let reply: Vec<redis::Value> = self
                .scripts
                .read
                .key(self.key(id))
                .arg(name)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            match reply.as_slice() {
                [redis::Value::Int(1), redis::Value::BulkString(value)] => {
                    Ok(Lookup::Present(value.clone()))
                }
                [redis::Value::Int(0)] => Ok(Lookup::Absent),
                [redis::Value::Int(-1)] => Ok(Lookup::Gone),
                other => Err(StoreError::Unavailable(format!(
                    "unexpected reply to an attribute read: {other:?}"
                ))),
            }
        })
    }

    fn compare_and_set<'a>(
        &'a self,
        id: &'a str,
        name: &'a str,
        expected: Option<&'a [u8]>,
        new: &'a [u8],
    ) -> StoreFuture<'a, Cas> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let outcome: i64 = self
                .scripts
                .cas
                .key(self.key(id))
                .arg(now_ms())
                .arg(name)
                .arg(if expected.is_some() { "1" } else { "0" })
                .arg(expected.unwrap_or_default())
                .arg(new)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            Ok(match outcome {
                1 => Cas::Done,
                0 => Cas::Conflict,
                _ => Cas::Gone,
            })
        })
    }

    fn rename<'a>(&'a self, from: &'a str, to: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
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
            let keys = self.scan(id_prefix, limit.saturating_add(1)).await?;
            let more = keys.len() > limit;
            let mut ids: Vec<String> = keys.into_iter().filter_map(|k| self.id_of(k)).collect();
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
mod tests {
    use super::*;

    /// A private `redis-server` from the test kit, killed on drop.
    struct TestRedis(baton_testkit::RedisServer);

    impl TestRedis {
        fn start() -> TestRedis {
            TestRedis(baton_testkit::RedisServer::start())
        }

        fn conn(&self) -> redis::Connection {
            self.0.conn()
        }

        fn store(&self, timeout: Duration) -> RedisStore {
            RedisStore::new(&self.0.url(), "t:", timeout, Duration::from_secs(2)).unwrap()
        }
    }

    fn attrs(pairs: &[(&str, &str)]) -> Attributes {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

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
        assert_eq!(store.read("s", "a").await.unwrap(), Lookup::Gone);
        assert_eq!(
            store.compare_and_set("s", "a", None, b"1").await.unwrap(),
            Cas::Gone
        );
        assert!(!store.rename("s", "t").await.unwrap());
        let exists: i64 = redis::cmd("EXISTS")
            .arg("t:s")
            .query(&mut redis.conn())
            .unwrap();
        assert_eq!(exists, 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn compare_and_set_and_rename() {
        let redis = TestRedis::start();
        let store = redis.store(Duration::from_secs(100));
        crate::session::store::contract::compare_and_set(&store).await;

        store.create("taken", &Attributes::new()).await.unwrap();
        assert!(!store.rename("s", "taken").await.unwrap());
        assert!(store.rename("s", "moved").await.unwrap());
        assert_eq!(store.load("s").await.unwrap(), None);
        assert_eq!(
            store.load("moved").await.unwrap(),
            Some(attrs(&[("n", "2")]))
        );
        let ttl: i64 = redis::cmd("PTTL")
            .arg("t:moved")
            .query(&mut redis.conn())
            .unwrap();
        assert!(ttl > 0, "the TTL moves with the session: {ttl}");
        assert!(store.remove("moved").await.unwrap());
        assert!(!store.remove("moved").await.unwrap());
        assert_eq!(store.load("moved").await.unwrap(), None);
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

    #[test]
    fn glob_characters_in_the_prefix_are_escaped() {
        assert_eq!(glob_escape("baton:session:"), "baton:session:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
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
        assert!(RedisStore::new("redis://127.0.0.1:1/0", "p:", timeout, timeout).is_ok());
    }
}
