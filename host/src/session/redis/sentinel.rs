//! The master of a Redis Sentinel set, followed through failovers.
//!
//! The sentinels are asked for the master only when there is no connection: at the first
//! operation, and after an operation failed in a way that says the master may have changed
//! (the connection broke or timed out, or the server answers that it is a read-only replica
//! now, or is loading). The failed operation reports its error and is not retried, since
//! whether a write that lost its connection was applied is unknown; the next operation asks
//! the sentinels again and connects to whichever master they name (the `redis` crate checks
//! that it calls itself master). One task asks at a time; the others wait for its answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, IntoConnectionInfo, RedisError, RedisResult, ServerErrorKind};

use crate::sync::lock;

/// A connection to the current master of one Sentinel set; clones share it.
#[derive(Clone)]
pub(super) struct SentinelConn {
    shared: Arc<Shared>,
    /// The database the master's connections use.
    pub(super) db: i64,
}

struct Shared {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    current: Mutex<Option<Current>>,
    /// Discoveries so far: a failure forgets only the connection it happened on.
    discoveries: AtomicU64,
    config: AsyncConnectionConfig,
}

/// The connection to the master last found, and which discovery found it.
struct Current {
    conn: MultiplexedConnection,
    generation: u64,
    address: String,
}

impl std::fmt::Debug for SentinelConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let master = lock(&self.shared.current)
            .as_ref()
            .map(|c| c.address.clone());
        f.debug_struct("SentinelConn")
            .field("master", &master)
            .finish_non_exhaustive()
    }
}

impl SentinelConn {
    /// A connection to master set `master`, as the sentinels at `nodes` name it; each node URL
    /// carries the Redis servers' credentials and database, which the sentinels themselves are
    /// not asked with. Connects lazily.
    pub(super) fn new(
        nodes: &[String],
        master: &str,
        config: AsyncConnectionConfig,
    ) -> RedisResult<SentinelConn> {
        let mut sentinels = Vec::with_capacity(nodes.len());
        let mut servers = None;
        for node in nodes {
            let info = node.as_str().into_connection_info()?;
            servers.get_or_insert_with(|| info.redis_settings().clone());
            sentinels.push(info.set_redis_settings(redis::RedisConnectionInfo::default()));
        }
        let servers = servers.unwrap_or_default();
        let db = servers.db();
        let node_info = SentinelNodeConnectionInfo::default().set_redis_connection_info(servers);
        let client = SentinelClient::build(
            sentinels,
            master,
            Some(node_info),
            SentinelServerType::Master,
        )?;
        Ok(SentinelConn {
            shared: Arc::new(Shared {
                sentinels: tokio::sync::Mutex::new(client),
                current: Mutex::new(None),
                discoveries: AtomicU64::new(0),
                config,
            }),
            db,
        })
    }

    /// The connection to the master, asking the sentinels for it when there is none.
    pub(super) async fn master(&self) -> RedisResult<(MultiplexedConnection, u64)> {
        if let Some(current) = &*lock(&self.shared.current) {
            return Ok((current.conn.clone(), current.generation));
        }
        let mut sentinels = self.shared.sentinels.lock().await;
        // Another task may have found the master while this one waited.
        if let Some(current) = &*lock(&self.shared.current) {
            return Ok((current.conn.clone(), current.generation));
        }
        let client = sentinels.async_get_client().await?;
        let conn = client
            .get_multiplexed_async_connection_with_config(&self.shared.config)
            .await?;
        let address = client.get_connection_info().addr().to_string();
        let generation = self.shared.discoveries.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(master = %address, "session store: connected to the Sentinel master");
        *lock(&self.shared.current) = Some(Current {
            conn: conn.clone(),
            generation,
            address,
        });
        Ok((conn, generation))
    }

    /// Forgets the connection `generation` after `error`, if the error says the master may
    /// have changed.
    pub(super) fn failed(&self, generation: u64, error: &RedisError) {
        let master_changed = error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.is_timeout()
            || error.is_unrecoverable_error()
            || matches!(
                error.kind(),
                redis::ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::BusyLoading)
            )
            || matches!(error.code(), Some("MASTERDOWN"));
        if !master_changed {
            return;
        }
        let mut current = lock(&self.shared.current);
        if current.as_ref().is_some_and(|c| c.generation == generation) {
            tracing::debug!(%error, "session store: the Sentinel master is asked for again");
            *current = None;
        }
    }
}
