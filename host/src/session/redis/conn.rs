//! The connection of a Redis store, whichever way Redis is deployed, opened from the store URL.
//!
//! - One server (`redis://`, `rediss://`): the `redis` crate's `ConnectionManager`, created
//!   lazily and reconnecting by itself. TLS uses rustls with the ring provider; the CA file
//!   replaces the system's roots, the client certificate is sent to servers that ask.
//! - A Sentinel master (`sentinel`), or a Cluster (`cluster`).
//!
//! [`Conn`] is a `redis` connection like any other for the store's commands and scripts.

use std::path::PathBuf;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, Cmd, FromRedisValue, Pipeline, RedisFuture,
    RedisResult, TlsCertificates, Value,
};

use super::cluster::ClusterConn;
use super::sentinel::SentinelConn;
use crate::config::{StoreKind, StoreUrl};
use crate::session::StoreError;

/// The PEM files of a `rediss://` store's TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RedisTls {
    /// Certificate authorities trusted instead of the system's roots.
    pub(crate) ca_file: Option<PathBuf>,
    /// The client certificate (chain), with `key_file`.
    pub(crate) cert_file: Option<PathBuf>,
    /// The client certificate's private key.
    pub(crate) key_file: Option<PathBuf>,
}

/// A connection to the store's Redis; clones share it.
#[derive(Clone)]
pub(super) enum Conn {
    /// One server.
    Single(ConnectionManager),
    /// The master of a Sentinel set.
    Sentinel(SentinelConn),
    /// A cluster.
    Cluster(ClusterConn),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conn::Single(_) => f.write_str("Single"),
            Conn::Sentinel(conn) => conn.fmt(f),
            Conn::Cluster(conn) => conn.fmt(f),
        }
    }
}

fn invalid(what: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(what.to_string())
}

impl Conn {
    /// The connection `url` names, with `tls` for `rediss://`, each connection attempt and
    /// response bounded by `op_timeout`. Connects lazily.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a URL, a TLS file or a setting the client refuses.
    pub(super) fn open(
        url: &StoreUrl,
        tls: &RedisTls,
        op_timeout: Duration,
    ) -> Result<Conn, StoreError> {
        match url.kind() {
            StoreKind::Redis => {
                let node = url.nodes().first().map(String::as_str).unwrap_or_default();
                let client = if url.is_tls() {
                    // The host's own TLS uses ring; so does the client, whatever else is linked.
                    let _ = rustls::crypto::ring::default_provider().install_default();
                    if url.is_insecure() {
                        tracing::warn!(store = %url,
                            "session store: the Redis server's TLS certificate is not checked (#insecure); for tests only");
                    }
                    Client::build_with_tls(node, certificates(tls)?)
                } else {
                    Client::open(node)
                }
                .map_err(invalid)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(op_timeout))
                    .set_response_timeout(Some(op_timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(op_timeout);
                let conn =
                    ConnectionManager::new_lazy_with_config(client, config).map_err(invalid)?;
                Ok(Conn::Single(conn))
            }
            StoreKind::Sentinel => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(op_timeout))
                    .set_response_timeout(Some(op_timeout));
                let master = url.master().unwrap_or_default();
                let conn = SentinelConn::new(url.nodes(), master, config).map_err(invalid)?;
                Ok(Conn::Sentinel(conn))
            }
            StoreKind::Cluster => {
                let conn = ClusterConn::new(url.nodes(), op_timeout).map_err(invalid)?;
                Ok(Conn::Cluster(conn))
            }
            _ => Err(invalid(format!("{url} is not a Redis store"))),
        }
    }

    /// Sends `call` on the connection to use now: the one server's, the Sentinel master's
    /// (found again after a failure that says it may have changed), or the cluster's.
    async fn call(&mut self, call: Call<'_>) -> RedisResult<Reply> {
        match self {
            Conn::Single(conn) => call.on(conn).await,
            Conn::Sentinel(sentinel) => {
                let (mut conn, generation) = sentinel.master().await?;
                let reply = call.on(&mut conn).await;
                if let Err(error) = &reply {
                    sentinel.failed(generation, error);
                }
                reply
            }
            Conn::Cluster(cluster) => call.on(&mut cluster.conn().await?).await,
        }
    }

    /// The nodes a scan walks: the one server (`None`), or every cluster master.
    pub(super) async fn scan_nodes(&self) -> RedisResult<Vec<Option<(String, u16)>>> {
        match self {
            Conn::Cluster(cluster) => Ok(cluster.masters().await?.into_iter().map(Some).collect()),
            _ => Ok(vec![None]),
        }
    }

    /// Runs `cmd` on `node`, one of [`Conn::scan_nodes`].
    pub(super) async fn on_node<T: FromRedisValue>(
        &mut self,
        node: &Option<(String, u16)>,
        cmd: Cmd,
    ) -> RedisResult<T> {
        match (self, node) {
            (Conn::Cluster(cluster), Some(node)) => cluster.on_node(node, cmd).await,
            (conn, _) => cmd.query_async(conn).await,
        }
    }
}

/// The certificates of `tls`, read from their files.
fn certificates(tls: &RedisTls) -> Result<TlsCertificates, StoreError> {
    let read = |name: &str, path: &PathBuf| {
        std::fs::read(path).map_err(|e| invalid(format!("sessions.{name} {}: {e}", path.display())))
    };
    let root_cert = tls
        .ca_file
        .as_ref()
        .map(|path| read("tls_ca_file", path))
        .transpose()?;
    let client_tls = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read("tls_cert_file", cert)?,
            client_key: read("tls_key_file", key)?,
        }),
        (None, None) => None,
        _ => {
            return Err(invalid(
                "sessions.tls_cert_file and tls_key_file go together",
            ));
        }
    };
    Ok(TlsCertificates {
        client_tls,
        root_cert,
    })
}

/// What the store sends: one command, or a pipeline (with the part of its replies wanted).
enum Call<'a> {
    Command(&'a Cmd),
    Pipeline(&'a Pipeline, usize, usize),
}

/// What came back.
enum Reply {
    One(Value),
    Many(Vec<Value>),
}

impl Call<'_> {
    async fn on(self, conn: &mut impl ConnectionLike) -> RedisResult<Reply> {
        match self {
            Call::Command(cmd) => conn.req_packed_command(cmd).await.map(Reply::One),
            Call::Pipeline(pipeline, offset, count) => conn
                .req_packed_commands(pipeline, offset, count)
                .await
                .map(Reply::Many),
        }
    }
}

impl Reply {
    fn one(self) -> Value {
        match self {
            Reply::One(value) => value,
            Reply::Many(values) => Value::Array(values),
        }
    }

    fn many(self) -> Vec<Value> {
        match self {
            Reply::Many(values) => values,
            Reply::One(value) => vec![value],
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move { self.call(Call::Command(cmd)).await.map(Reply::one) })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let call = Call::Pipeline(pipeline, offset, count);
        Box::pin(async move { self.call(call).await.map(Reply::many) })
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Sentinel(sentinel) => sentinel.db,
            Conn::Cluster(_) => 0,
        }
    }
}
