//! Private Redis for one test or run, from PATH, on free loopback ports, nothing written to
//! disk (`--save "" --appendonly no`), every process killed on drop:
//!
//! - [`RedisServer`]: one plain server, killed on purpose with [`RedisServer::kill`], frozen
//!   with [`RedisServer::pause`], started again on the same port with [`RedisServer::restart`].
//! - [`TlsRedis`]: a server that speaks only TLS, its certificate from a CA made for the run.
//! - [`SentinelSet`]: one master, one replica and three sentinels.
//! - [`Cluster`]: three masters made into a cluster by `redis-cli --cluster create`, with or
//!   without a replica each.
//!
//! The set and the cluster can lose a master on purpose and tell when the failover is done;
//! [`RedisProc`] is one of their processes. A missing `redis-server` or `redis-cli` is a clear
//! failure, never a silent skip: the tests that need them run in the default test command.

mod cluster;
mod node;
mod sentinel;
mod tls;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Child;
use std::time::Duration;

pub use cluster::Cluster;
pub use node::RedisProc;
pub(crate) use node::free_port;
pub use sentinel::{MASTER_NAME, SentinelSet};
pub use tls::{ClientCerts, TlsRedis};

use crate::process::{Signal, signal};
use node::node_args;

/// A running (or killed) `redis-server` child process.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// # Panics
    /// If it does not start (see [`RedisServer::try_start`]).
    pub fn start() -> RedisServer {
        Self::try_start().unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// # Errors
    /// If `redis-server` is not on PATH, or does not answer within 15 s (after a few ports).
    pub fn try_start() -> anyhow::Result<RedisServer> {
        node::on_a_free_port(|port| {
            let mut server = RedisServer {
                child: None,
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                dir: tempfile::tempdir()?,
            };
            server.spawn()?;
            Ok(server)
        })
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let port = self.addr.port();
        let child = node::spawn(self.dir.path(), port, &node_args(port, None), || {
            node::pings(port, None)
        })?;
        self.child = Some(child);
        Ok(())
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// A direct connection, to look at what a host stored.
    ///
    /// # Panics
    /// If the server does not accept one within 5 s.
    pub fn conn(&self) -> ::redis::Connection {
        ::redis::Client::open(self.url())
            .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url()))
    }

    /// The process id.
    ///
    /// # Panics
    /// If the server was killed.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server is running").id()
    }

    /// Kills the server (SIGKILL) and waits for it to exit; its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing answers.
    ///
    /// # Panics
    /// If the server was killed.
    pub fn pause(&self) {
        signal(self.pid(), Signal::STOP).unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Lets a paused server run again (SIGCONT).
    ///
    /// # Panics
    /// If the server was killed.
    pub fn resume(&self) {
        signal(self.pid(), Signal::CONT).unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Starts the server again on the same port, empty.
    ///
    /// # Panics
    /// If it does not come up.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn()
            .unwrap_or_else(|e| panic!("redis-server did not restart: {e:#}"));
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
