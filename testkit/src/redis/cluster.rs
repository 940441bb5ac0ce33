//! A Redis Cluster of three masters, made by `redis-cli --cluster create`, with or without a
//! replica per master.

use std::process::{Command, Stdio};

use anyhow::{Context, bail, ensure};

use super::node::{
    RedisProc, SETTLE, free_port, local_url, node_args, pings, query, try_wait_until,
};

/// The nodes of a cluster (the masters first) and their directory.
#[derive(Debug)]
pub struct Cluster {
    nodes: Vec<RedisProc>,
    replicas: usize,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts three masters and `replicas` replicas of each, creates the cluster and waits
    /// until every node says it is `ok` and every replica is in sync.
    ///
    /// # Panics
    /// If it does not come up (see [`Cluster::try_start`]).
    pub fn start(replicas: usize) -> Cluster {
        Self::try_start(replicas).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// [`Cluster::start`], returning what went wrong.
    ///
    /// With replicas, a node is called failed after one second without an answer, so that a
    /// replica takes over quickly; without, Redis's default 15 s, as nothing could take over
    /// and a busy machine should not break the cluster.
    ///
    /// # Errors
    /// If `redis-server` or `redis-cli` is not on PATH, or the cluster does not settle within
    /// a minute.
    pub fn try_start(replicas: usize) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let node_timeout = if replicas > 0 { "1000" } else { "15000" };
        let nodes = (0..3 * (1 + replicas))
            .map(|_| {
                RedisProc::try_start(
                    dir.path(),
                    |port| {
                        let mut args = node_args(port, None);
                        // A port that is not free makes the node exit, which `try_start` retries.
                        let bus = free_port().unwrap_or(0).to_string();
                        args.extend(
                            [
                                "--cluster-enabled",
                                "yes",
                                "--cluster-port",
                                &bus,
                                "--cluster-config-file",
                                &format!("nodes-{port}.conf"),
                                "--cluster-node-timeout",
                                node_timeout,
                            ]
                            .map(str::to_owned),
                        );
                        args
                    },
                    |port| pings(port, None),
                )
            })
            .collect::<anyhow::Result<Vec<RedisProc>>>()?;
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .context("redis-cli is not runnable (install Redis's tools, e.g. redis-tools)")?;
        if !output.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let cluster = Cluster {
            nodes,
            replicas,
            _dir: dir,
        };
        try_wait_until(SETTLE, "the cluster to be ok with its replicas", || {
            cluster.all_ok() && cluster.synced_replicas() == 3 * replicas
        })?;
        Ok(cluster)
    }

    fn live(&self) -> impl Iterator<Item = &RedisProc> {
        self.nodes.iter().filter(|n| n.is_running())
    }

    /// Every live node says `cluster_state:ok`.
    fn all_ok(&self) -> bool {
        self.live().all(|n| {
            query::<String>(
                &local_url(n.port, None),
                ::redis::cmd("CLUSTER").arg("INFO"),
            )
            .is_some_and(|info| info.contains("cluster_state:ok"))
        })
    }

    /// Replicas whose link to their master is up.
    fn synced_replicas(&self) -> usize {
        self.live()
            .filter(|n| {
                query::<String>(
                    &local_url(n.port, None),
                    ::redis::cmd("INFO").arg("replication"),
                )
                .is_some_and(|info| {
                    info.contains("role:slave") && info.contains("master_link_status:up")
                })
            })
            .count()
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`, the three first masters.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.nodes[..3]
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The process ids of the live nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.live().filter_map(RedisProc::pid).collect()
    }

    /// How many replicas each master was given.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// A cluster connection, to look at what the hosts stored.
    ///
    /// # Panics
    /// If no live node accepts one.
    pub fn conn(&self) -> ::redis::cluster::ClusterConnection {
        let live: Vec<String> = self.live().map(|n| local_url(n.port, None)).collect();
        ::redis::cluster::ClusterClient::new(live)
            .and_then(|client| client.get_connection())
            .unwrap_or_else(|e| panic!("cannot connect to the cluster: {e}"))
    }

    /// The port of the master serving `key`'s slot, as a live node sees it.
    ///
    /// # Panics
    /// If no live node answers, or none serves the slot.
    pub fn master_of(&self, key: &str) -> u16 {
        self.try_master_of(key)
            .unwrap_or_else(|e| panic!("the master of {key}: {e:#}"))
    }

    fn try_master_of(&self, key: &str) -> anyhow::Result<u16> {
        let live = self.live().next().context("no live node")?;
        let url = local_url(live.port, None);
        let slot: i64 = query(&url, ::redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
            .context("CLUSTER KEYSLOT")?;
        let ranges: Vec<::redis::Value> =
            query(&url, ::redis::cmd("CLUSTER").arg("SLOTS")).context("CLUSTER SLOTS")?;
        for range in ranges {
            let ::redis::Value::Array(parts) = &range else {
                bail!("CLUSTER SLOTS: {range:?}")
            };
            ensure!(parts.len() >= 3, "CLUSTER SLOTS: {parts:?}");
            let (start, end): (i64, i64) = (
                ::redis::from_redis_value_ref(&parts[0])?,
                ::redis::from_redis_value_ref(&parts[1])?,
            );
            let ::redis::Value::Array(master) = &parts[2] else {
                bail!("CLUSTER SLOTS: {parts:?}")
            };
            if (start..=end).contains(&slot) {
                let port: u16 = ::redis::from_redis_value_ref(
                    master.get(1).context("CLUSTER SLOTS: no master port")?,
                )?;
                return Ok(port);
            }
        }
        bail!("no master serves slot {slot}")
    }

    /// Kills the master serving `key` (SIGKILL); returns its port.
    ///
    /// # Panics
    /// If it cannot be found among the nodes.
    pub fn kill_master_of(&mut self, key: &str) -> u16 {
        let port = self.master_of(key);
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("the master is a node of the cluster")
            .kill();
        port
    }

    /// Waits until `key`'s slot has a master other than `old` and the cluster is `ok` again.
    ///
    /// # Panics
    /// If that takes more than a minute.
    pub fn wait_takeover(&self, key: &str, old: u16) {
        try_wait_until(SETTLE, "a replica to take over", || {
            self.try_master_of(key).is_ok_and(|port| port != old) && self.all_ok()
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
}
