//! A Sentinel set: one master and one replica, both with a password, watched by three
//! sentinels (quorum 2) that call a master down after one second without an answer.

use super::node::{RedisProc, SETTLE, connect, local_url, node_args, pings, query, try_wait_until};

/// The master set's name in [`SentinelSet`].
pub const MASTER_NAME: &str = "sessions";

/// The servers and sentinels of a set, and their directory.
#[derive(Debug)]
pub struct SentinelSet {
    /// The first master, then the replica.
    servers: Vec<RedisProc>,
    sentinels: Vec<RedisProc>,
    password: String,
    _dir: tempfile::TempDir,
}

impl SentinelSet {
    /// Starts the servers and the sentinels, and waits until every sentinel knows the replica
    /// and the other sentinels (so that a failover can be voted).
    ///
    /// # Panics
    /// If it does not come up (see [`SentinelSet::try_start`]).
    pub fn start(password: &str) -> SentinelSet {
        Self::try_start(password).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// [`SentinelSet::start`], returning what went wrong.
    ///
    /// # Errors
    /// If `redis-server` is not on PATH, or the set does not settle within a minute.
    pub fn try_start(password: &str) -> anyhow::Result<SentinelSet> {
        let dir = tempfile::tempdir()?;
        let ping = |port: u16| pings(port, Some(password));
        let master =
            RedisProc::try_start(dir.path(), |port| node_args(port, Some(password)), ping)?;
        let master_port = master.port.to_string();
        let replica = RedisProc::try_start(
            dir.path(),
            |port| {
                let mut args = node_args(port, Some(password));
                args.extend(["--replicaof", "127.0.0.1", &master_port].map(str::to_owned));
                args
            },
            ping,
        )?;
        try_wait_until(SETTLE, "the replica to sync", || {
            query::<String>(
                &local_url(replica.port, Some(password)),
                ::redis::cmd("INFO").arg("replication"),
            )
            .is_some_and(|info| info.contains("master_link_status:up"))
        })?;
        let sentinels = (0..3)
            .map(|i| {
                RedisProc::try_start(
                    dir.path(),
                    |port| {
                        let config = dir.path().join(format!("sentinel-{i}-{port}.conf"));
                        let text = format!(
                            "port {port}\nbind 127.0.0.1\ndir {dir:?}\n\
                             sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                             sentinel auth-pass {MASTER_NAME} {password}\n\
                             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                             sentinel failover-timeout {MASTER_NAME} 10000\n",
                            dir = dir.path()
                        );
                        // An unwritable file makes the sentinel exit, which `try_start` reports.
                        let _ = std::fs::write(&config, text);
                        vec![config.display().to_string(), "--sentinel".to_owned()]
                    },
                    |port| pings(port, None),
                )
            })
            .collect::<anyhow::Result<Vec<RedisProc>>>()?;
        let set = SentinelSet {
            servers: vec![master, replica],
            sentinels,
            password: password.to_owned(),
            _dir: dir,
        };
        for sentinel in &set.sentinels {
            let url = local_url(sentinel.port, None);
            try_wait_until(SETTLE, "the sentinels to know each other", || {
                let known = |what: &str| {
                    query::<Vec<::redis::Value>>(
                        &url,
                        ::redis::cmd("SENTINEL").arg(what).arg(MASTER_NAME),
                    )
                    .map_or(0, |v| v.len())
                };
                known("REPLICAS") >= 1 && known("SENTINELS") >= 2
            })?;
        }
        Ok(set)
    }

    /// `redis+sentinel://:PASSWORD@127.0.0.1:S1,…/sessions/0`.
    pub fn url(&self) -> String {
        let sentinels: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!(
            "redis+sentinel://:{}@{}/{MASTER_NAME}/0",
            self.password,
            sentinels.join(",")
        )
    }

    /// The port of the master the sentinels name.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let (_, port): (String, u16) = query(
                &local_url(s.port, None),
                ::redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(MASTER_NAME),
            )?;
            Some(port)
        })
    }

    /// A direct connection to the current master.
    ///
    /// # Panics
    /// If no sentinel names a master, or it does not answer.
    pub fn master_conn(&self) -> ::redis::Connection {
        let port = self.master_port().expect("the sentinels name a master");
        connect(&local_url(port, Some(&self.password))).expect("the master answers")
    }

    /// Kills the current master (SIGKILL); returns its port.
    ///
    /// # Panics
    /// If no sentinel names a master of the set.
    pub fn kill_master(&mut self) -> u16 {
        let port = self.master_port().expect("the sentinels name a master");
        self.servers
            .iter_mut()
            .find(|s| s.port == port)
            .expect("the master is one of the set's servers")
            .kill();
        port
    }

    /// Waits until the sentinels name a master other than `old` and it answers as master.
    ///
    /// # Panics
    /// If that takes more than a minute.
    pub fn wait_failover(&self, old: u16) {
        try_wait_until(SETTLE, "the sentinels to promote the replica", || {
            self.master_port().is_some_and(|port| {
                port != old
                    && query::<String>(
                        &local_url(port, Some(&self.password)),
                        ::redis::cmd("INFO").arg("replication"),
                    )
                    .is_some_and(|info| info.contains("role:master"))
            })
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
}
