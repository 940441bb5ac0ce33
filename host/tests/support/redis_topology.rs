//! Production-shaped Redis for one test, on free loopback ports, every process killed on drop:
//! a TLS server with certificates made by the test ([`TlsRedis`]), a Sentinel set of one
//! master, one replica and three sentinels ([`SentinelSet`]), and a six-node Cluster of three
//! masters with a replica each ([`Cluster`]). Each can lose a master on purpose and tell when
//! the failover is done. Missing `redis-server` or `redis-cli` is a failure, never a skip.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tls::TestCa;

/// How long a topology may take to come up, or to fail over.
const SETTLE: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Polls `ready` every 50 ms until it holds; panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A synchronous connection to `url`, or `None` if it does not answer.
fn connect(url: &str) -> Option<redis::Connection> {
    redis::Client::open(url)
        .ok()?
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()
}

/// `cmd` on the server at `url`, or `None` if it does not answer.
fn query<T: redis::FromRedisValue>(url: &str, cmd: &redis::Cmd) -> Option<T> {
    cmd.query(&mut connect(url)?).ok()
}

/// One `redis-server` process, its log in its directory.
pub struct RedisProc {
    child: Option<Child>,
    /// Its client port.
    pub port: u16,
}

impl RedisProc {
    /// Starts `redis-server` with the arguments `args(port, dir)` makes for a free port, in
    /// `dir`, and waits until `ready(port)`; tries other ports if another process took one.
    ///
    /// # Panics
    /// If `redis-server` is not on PATH or does not come up.
    pub fn start(
        dir: &Path,
        args: impl Fn(u16) -> Vec<String>,
        ready: impl Fn(u16) -> bool,
    ) -> RedisProc {
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let log = std::fs::File::create(dir.join(format!("redis-{port}.log"))).unwrap();
            let child = Command::new("redis-server")
                .args(args(port))
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn();
            let mut child = match child {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                    "redis-server is not on PATH; these tests need it \
                     (`apt-get install redis-server`, which .ci/run does)"
                ),
                Err(e) => panic!("cannot run redis-server: {e}"),
            };
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    last_error = format!("redis-server exited with {status} on port {port}");
                    break;
                }
                if ready(port) {
                    return RedisProc {
                        child: Some(child),
                        port,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = format!("no answer on port {port} within 15 s");
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// A plain server that wants `password`, its files in `dir`.
    pub fn with_password(dir: &Path, password: &str) -> RedisProc {
        RedisProc::start(
            dir,
            |port| node_args(port, Some(password)),
            |port| {
                let url = format!("redis://:{password}@127.0.0.1:{port}/0");
                query::<String>(&url, &redis::cmd("PING")).is_some()
            },
        )
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The arguments every data node gets: loopback only, no persistence, its files in `dir`.
fn node_args(port: u16, password: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = ["--port", &port.to_string(), "--bind", "127.0.0.1"]
        .into_iter()
        .chain(["--save", "", "--appendonly", "no"])
        .map(str::to_owned)
        .collect();
    if let Some(password) = password {
        args.extend(["--requirepass", password, "--masterauth", password].map(str::to_owned));
    }
    args
}

// ---------------------------------------------------------------------------------------------

/// A `redis-server` that speaks only TLS, with a certificate from a CA made by the test, and
/// that requires a client certificate from the same CA.
pub struct TlsRedis {
    server: RedisProc,
    dir: tempfile::TempDir,
}

impl TlsRedis {
    /// Starts it.
    pub fn start() -> TlsRedis {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("baton test Redis CA");
        let server = ca.issue();
        let client = ca.issue();
        let path = |name: &str| dir.path().join(name);
        for (name, text) in [
            ("ca.pem", &ca.pem),
            ("server.pem", &server.chain_pem),
            ("server-key.pem", &server.key_pem),
            ("client.pem", &client.chain_pem),
            ("client-key.pem", &client.key_pem),
        ] {
            std::fs::write(path(name), text).unwrap();
        }
        // Another CA, to be refused by.
        std::fs::write(path("other-ca.pem"), TestCa::new("another CA").pem).unwrap();
        let file = |name: &str| path(name).display().to_string();
        let server = RedisProc::start(
            dir.path(),
            |port| {
                let mut args = node_args(0, None);
                args.extend(
                    [
                        "--tls-port",
                        &port.to_string(),
                        "--tls-cert-file",
                        &file("server.pem"),
                        "--tls-key-file",
                        &file("server-key.pem"),
                        "--tls-ca-cert-file",
                        &file("ca.pem"),
                        "--tls-auth-clients",
                        "yes",
                    ]
                    .map(str::to_owned),
                );
                args
            },
            |port| TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        TlsRedis { server, dir }
    }

    /// `rediss://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.server.port)
    }

    /// A file of its directory: `ca.pem`, `other-ca.pem`, `client.pem`, `client-key.pem`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The `[sessions]` lines that trust its CA and present the client certificate.
    pub fn sessions_config(&self, ca: &str) -> String {
        format!(
            "tls_ca_file = {:?}\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
            self.file(ca),
            self.file("client.pem"),
            self.file("client-key.pem")
        )
    }

    /// A direct TLS connection, to look at what the hosts stored.
    pub fn conn(&self) -> redis::Connection {
        let read = |name: &str| std::fs::read(self.file(name)).unwrap();
        let certificates = redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: read("client.pem"),
                client_key: read("client-key.pem"),
            }),
            root_cert: Some(read("ca.pem")),
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        redis::Client::build_with_tls(self.url(), certificates)
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap()
    }
}

// ---------------------------------------------------------------------------------------------

/// The master set's name in [`SentinelSet`].
pub const MASTER_NAME: &str = "sessions";

/// One master and one replica, both with a password, watched by three sentinels (quorum 2)
/// that call a master down after one second without an answer.
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
    pub fn start(password: &str) -> SentinelSet {
        let dir = tempfile::tempdir().unwrap();
        let auth = |port: u16| format!("redis://:{password}@127.0.0.1:{port}/0");
        let ping = |port: u16| query::<String>(&auth(port), &redis::cmd("PING")).is_some();
        let master = RedisProc::start(dir.path(), |port| node_args(port, Some(password)), ping);
        let master_port = master.port.to_string();
        let replica = RedisProc::start(
            dir.path(),
            |port| {
                let mut args = node_args(port, Some(password));
                args.extend(["--replicaof", "127.0.0.1", &master_port].map(str::to_owned));
                args
            },
            ping,
        );
        wait_until(SETTLE, "the replica to sync", || {
            query::<String>(&auth(replica.port), redis::cmd("INFO").arg("replication"))
                .is_some_and(|info| info.contains("master_link_status:up"))
        });
        let sentinels: Vec<RedisProc> = (0..3)
            .map(|i| {
                RedisProc::start(
                    dir.path(),
                    |port| {
                        let config = dir.path().join(format!("sentinel-{i}-{port}.conf"));
                        std::fs::write(
                            &config,
                            format!(
                                "port {port}\nbind 127.0.0.1\ndir {dir:?}\n\
                                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                                 sentinel auth-pass {MASTER_NAME} {password}\n\
                                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                                 sentinel failover-timeout {MASTER_NAME} 10000\n",
                                dir = dir.path()
                            ),
                        )
                        .unwrap();
                        vec![config.display().to_string(), "--sentinel".to_owned()]
                    },
                    |port| {
                        query::<String>(&Self::sentinel_url(port), &redis::cmd("PING")).is_some()
                    },
                )
            })
            .collect();
        let set = SentinelSet {
            servers: vec![master, replica],
            sentinels,
            password: password.to_owned(),
            _dir: dir,
        };
        for sentinel in &set.sentinels {
            let url = Self::sentinel_url(sentinel.port);
            wait_until(SETTLE, "the sentinels to know each other", || {
                let known = |what: &str| {
                    query::<Vec<redis::Value>>(
                        &url,
                        redis::cmd("SENTINEL").arg(what).arg(MASTER_NAME),
                    )
                    .map_or(0, |v| v.len())
                };
                known("REPLICAS") >= 1 && known("SENTINELS") >= 2
            });
        }
        set
    }

    fn sentinel_url(port: u16) -> String {
        format!("redis://127.0.0.1:{port}/0")
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
                &Self::sentinel_url(s.port),
                redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(MASTER_NAME),
            )?;
            Some(port)
        })
    }

    /// A direct connection to the current master.
    pub fn master_conn(&self) -> redis::Connection {
        let port = self.master_port().expect("the sentinels name a master");
        connect(&format!("redis://:{}@127.0.0.1:{port}/0", self.password))
            .expect("the master answers")
    }

    /// Kills the current master (SIGKILL); returns its port.
    pub fn kill_master(&mut self) -> u16 {
        let port = self.master_port().expect("the sentinels name a master");
        let master = self
            .servers
            .iter_mut()
            .find(|s| s.port == port)
            .expect("the master is one of the set's servers");
        master.kill();
        port
    }

    /// Waits until the sentinels name a master other than `old` and it answers as master.
    pub fn wait_failover(&self, old: u16) {
        wait_until(SETTLE, "the sentinels to promote the replica", || {
            self.master_port().is_some_and(|port| {
                port != old
                    && query::<String>(
                        &format!("redis://:{}@127.0.0.1:{port}/0", self.password),
                        redis::cmd("INFO").arg("replication"),
                    )
                    .is_some_and(|info| info.contains("role:master"))
            })
        });
    }
}

// ---------------------------------------------------------------------------------------------

/// Six cluster nodes made into three masters with a replica each by `redis-cli --cluster
/// create`; a node is called failed after one second without an answer.
pub struct Cluster {
    nodes: Vec<RedisProc>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts the nodes, creates the cluster and waits until every node says it is `ok` and
    /// every master has a replica.
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<RedisProc> = (0..6)
            .map(|_| {
                RedisProc::start(
                    dir.path(),
                    |port| {
                        let mut args = node_args(port, None);
                        args.extend(
                            [
                                "--cluster-enabled",
                                "yes",
                                "--cluster-port",
                                &free_port().to_string(),
                                "--cluster-config-file",
                                &format!("nodes-{port}.conf"),
                                "--cluster-node-timeout",
                                "1000",
                            ]
                            .map(str::to_owned),
                        );
                        args
                    },
                    |port| query::<String>(&Self::node_url(port), &redis::cmd("PING")).is_some(),
                )
            })
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("redis-cli is not runnable (apt-get install redis-tools): {e}")
            });
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = Cluster { nodes, _dir: dir };
        wait_until(
            SETTLE,
            "the cluster to be ok with a replica per master",
            || {
                cluster.nodes.iter().all(|n| {
                    query::<String>(&Self::node_url(n.port), redis::cmd("CLUSTER").arg("INFO"))
                        .is_some_and(|info| info.contains("cluster_state:ok"))
                }) && cluster.synced_replicas() == 3
            },
        );
        cluster
    }

    fn node_url(port: u16) -> String {
        format!("redis://127.0.0.1:{port}/0")
    }

    /// Replicas whose link to their master is up.
    fn synced_replicas(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .filter(|n| {
                query::<String>(
                    &Self::node_url(n.port),
                    redis::cmd("INFO").arg("replication"),
                )
                .is_some_and(|info| {
                    info.contains("role:slave") && info.contains("master_link_status:up")
                })
            })
            .count()
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.nodes[..3]
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// A cluster connection, to look at what the hosts stored.
    pub fn conn(&self) -> redis::cluster::ClusterConnection {
        let live: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| Self::node_url(n.port))
            .collect();
        redis::cluster::ClusterClient::new(live)
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// The port of the master serving `key`'s slot, as a live node sees it.
    pub fn master_of(&self, key: &str) -> u16 {
        let live = self.nodes.iter().find(|n| n.child.is_some()).unwrap();
        let url = Self::node_url(live.port);
        let slot: i64 = query(&url, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)).unwrap();
        let ranges: Vec<(i64, i64, (String, u16))> =
            query::<Vec<redis::Value>>(&url, redis::cmd("CLUSTER").arg("SLOTS"))
                .unwrap()
                .into_iter()
                .map(|range| {
                    let redis::Value::Array(parts) = range else {
                        panic!("CLUSTER SLOTS: {range:?}")
                    };
                    let int = |v: &redis::Value| -> i64 { redis::from_redis_value_ref(v).unwrap() };
                    let redis::Value::Array(master) = &parts[2] else {
                        panic!("CLUSTER SLOTS: {parts:?}")
                    };
                    let host: String = redis::from_redis_value_ref(&master[0]).unwrap();
                    (
                        int(&parts[0]),
                        int(&parts[1]),
                        (host, int(&master[1]) as u16),
                    )
                })
                .collect();
        ranges
            .into_iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, (_, port))| port)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// Kills the master serving `key` (SIGKILL); returns its port.
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
    pub fn wait_takeover(&self, key: &str, old: u16) {
        wait_until(SETTLE, "a replica to take over", || {
            self.master_of(key) != old
                && self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                    query::<String>(&Self::node_url(n.port), redis::cmd("CLUSTER").arg("INFO"))
                        .is_some_and(|info| info.contains("cluster_state:ok"))
                })
        });
    }
}
