//! A Redis Cluster: the connection, its masters for scans, and id rotation across slots.
//!
//! The `redis` crate's cluster connection routes each command by its key's slot, follows
//! `MOVED` redirections and refreshes its slot map when a node fails, so a replica that takes
//! over is found by itself. It is opened at the first operation (the host starts while the
//! cluster is down) and reopened only if opening failed.
//!
//! Rotation cannot `RENAME` across slots, so it moves a session in three steps, each atomic
//! on one slot: `STASH` renames `PREFIX{old}` to `PREFIX{old}~` in the old slot and returns
//! its fields; `RESTORE` creates `PREFIX{new}` with them (and refuses a taken id); then the
//! stash is deleted. From the first step on, the old id is gone for every operation: a write
//! that reached it before is in the copy, a write that comes after finds no session and says
//! so (a save reports it, an atomic update starts a fresh session), exactly as after a
//! `RENAME`. If the new id is taken, `UNSTASH` puts the session back. A host that dies between
//! the steps leaves the stash, which expires with the session's timeout.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, FromRedisValue, RedisResult, Value};

use super::keys::Keys;
use super::scripts::Scripts;
use crate::session::store::now_ms;

/// Retries of one command the cluster client makes (on `MOVED`, or a node that failed); the
/// op timeout bounds them anyway.
const RETRIES: u32 = 3;

/// A lazily opened cluster connection; clones share it.
#[derive(Clone)]
pub(super) struct ClusterConn {
    shared: Arc<Shared>,
}

struct Shared {
    client: ClusterClient,
    conn: tokio::sync::OnceCell<ClusterConnection>,
}

impl std::fmt::Debug for ClusterConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConn")
            .field("connected", &self.shared.conn.initialized())
            .finish_non_exhaustive()
    }
}

impl ClusterConn {
    /// A cluster known by `nodes` (URLs with the credentials), each connection attempt and
    /// response bounded by `op_timeout`.
    pub(super) fn new(nodes: &[String], op_timeout: Duration) -> RedisResult<ClusterConn> {
        let wait_ms = u64::try_from(op_timeout.as_millis() / 4).unwrap_or(u64::MAX);
        let client = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
            .connection_timeout(op_timeout)
            .response_timeout(op_timeout)
            .retries(RETRIES)
            .min_retry_wait(10)
            .max_retry_wait(wait_ms.max(10))
            .build()?;
        Ok(ClusterConn {
            shared: Arc::new(Shared {
                client,
                conn: tokio::sync::OnceCell::new(),
            }),
        })
    }

    /// The connection, opened at the first call.
    pub(super) async fn conn(&self) -> RedisResult<ClusterConnection> {
        let conn = self
            .shared
            .conn
            .get_or_try_init(|| self.shared.client.get_async_connection())
            .await?;
        Ok(conn.clone())
    }

    /// The address of every master, as the cluster's slot table names them.
    pub(super) async fn masters(&self) -> RedisResult<Vec<(String, u16)>> {
        let slots: Vec<Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut self.conn().await?)
            .await?;
        let mut masters = BTreeSet::new();
        for range in slots {
            // [start, end, [host, port, id, …], replicas…]
            let Value::Array(range) = range else { continue };
            let Some(Value::Array(master)) = range.get(2) else {
                continue;
            };
            if let (Some(host), Some(port)) = (master.first(), master.get(1)) {
                let host = String::from_redis_value_ref(host)?;
                let port = u16::from_redis_value_ref(port)?;
                masters.insert((host, port));
            }
        }
        Ok(masters.into_iter().collect())
    }

    /// Runs `cmd` on the node at `host:port`.
    pub(super) async fn on_node<T: FromRedisValue>(
        &self,
        (host, port): &(String, u16),
        cmd: Cmd,
    ) -> RedisResult<T> {
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.clone(),
            port: *port,
        });
        let value = self.conn().await?.route_command(cmd, route).await?;
        Ok(T::from_redis_value(value)?)
    }

    /// Moves session `from` to id `to` (see the module documentation); `false` if `from` does
    /// not exist or `to` does.
    pub(super) async fn rotate(
        &self,
        scripts: &Scripts,
        keys: &Keys,
        from: &str,
        to: &str,
    ) -> RedisResult<bool> {
        let mut conn = self.conn().await?;
        let stashed: Option<Vec<Vec<u8>>> = scripts
            .stash
            .key(keys.session(from))
            .key(keys.stash(from))
            .invoke_async(&mut conn)
            .await?;
        let Some(fields) = stashed else {
            return Ok(false);
        };
        let mut restore = scripts.restore.key(keys.session(to));
        restore.arg(now_ms());
        for field in &fields {
            restore.arg(field.as_slice());
        }
        let restored = restore.invoke_async::<i64>(&mut conn).await;
        if !matches!(restored, Ok(1)) {
            // Taken, or unknown: the old id keeps the session.
            let _: i64 = scripts
                .unstash
                .key(keys.stash(from))
                .key(keys.session(from))
                .invoke_async(&mut conn)
                .await?;
            return restored.map(|_| false);
        }
        // The stash is found by no operation and expires by itself: a failed delete only
        // leaves it until then.
        let _: RedisResult<i64> = redis::cmd("DEL")
            .arg(keys.stash(from))
            .query_async(&mut conn)
            .await;
        Ok(true)
    }
}
