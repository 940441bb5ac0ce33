//! Private Redis servers for the store's tests, from PATH, on free loopback ports, killed on
//! drop: the test kit's plain one, one that speaks only TLS with a certificate from the kit's
//! test CA (which the store is told to trust), and a cluster of three masters.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::super::{RedisStore, RedisTls};
use crate::config::StoreUrl;

/// Redis server processes and the store URL that reaches them.
pub(super) struct TestRedis {
    plain: Option<baton_testkit::RedisServer>,
    children: Vec<Child>,
    pub(super) url: String,
    tls: RedisTls,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `redis-server` on `port` with `args`, no persistence; returns once `ready` holds.
fn spawn(dir: &tempfile::TempDir, port: u16, args: &[String], ready: impl Fn() -> bool) -> Child {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(args)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("the Redis store's tests need redis-server on PATH: {e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(child.try_wait().unwrap().is_none(), "redis-server exited");
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// `cmd` on the plain server at `port`.
fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0"))?;
    cmd.query(&mut client.get_connection_with_timeout(Duration::from_millis(500))?)
}

fn answers(port: u16) -> bool {
    query::<String>(port, &redis::cmd("PING")).is_ok()
}

impl TestRedis {
    fn new(children: Vec<Child>, url: String, tls: RedisTls, dir: tempfile::TempDir) -> Self {
        TestRedis {
            plain: None,
            children,
            url,
            tls,
            _dir: dir,
        }
    }

    /// One plain server.
    pub(super) fn start() -> TestRedis {
        let server = baton_testkit::RedisServer::start();
        let mut redis = TestRedis::new(
            Vec::new(),
            server.url(),
            RedisTls::default(),
            tempfile::tempdir().unwrap(),
        );
        redis.plain = Some(server);
        redis
    }

    /// One server that speaks only TLS, its certificate from the kit's test CA.
    pub(super) fn start_tls() -> TestRedis {
        let dir = tempfile::tempdir().unwrap();
        let ca = baton_testkit::tls::TestCa::new("Redis test CA");
        let issued = ca.issue();
        let path = |name: &str| dir.path().join(name);
        let (ca_file, cert, key) = (path("ca.pem"), path("cert.pem"), path("key.pem"));
        std::fs::write(&ca_file, &ca.pem).unwrap();
        std::fs::write(&cert, &issued.chain_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        let port = free_port();
        let file = |path: &std::path::Path| path.display().to_string();
        let args = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &file(&cert),
            "--tls-key-file",
            &file(&key),
            "--tls-ca-cert-file",
            &file(&ca_file),
            "--tls-auth-clients",
            "no",
        ]
        .map(str::to_owned);
        // The last `--port` wins: no plain port.
        let child = spawn(&dir, free_port(), &args, || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let tls = RedisTls {
            ca_file: Some(ca_file),
            ..RedisTls::default()
        };
        TestRedis::new(
            vec![child],
            format!("rediss://127.0.0.1:{port}/0"),
            tls,
            dir,
        )
    }

    /// Three masters, the slots split between them, no replicas.
    pub(super) fn start_cluster() -> TestRedis {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let (port, bus) = (free_port(), free_port());
            let args = [
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus.to_string(),
                "--cluster-config-file",
                &format!("nodes-{port}.conf"),
            ]
            .map(str::to_owned);
            nodes.push((port, bus, spawn(&dir, port, &args, || answers(port))));
        }
        let first = nodes[0].0;
        for (i, (port, bus, _)) in nodes.iter().enumerate() {
            let (start, end) = (i * 5462, ((i + 1) * 5462 - 1).min(16383));
            let add = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(start)
                .arg(end)
                .clone();
            query::<()>(*port, &add).unwrap();
            let meet = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(*port)
                .arg(*bus)
                .clone();
            query::<()>(first, &meet).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let ok = |port: u16| {
            query::<String>(port, redis::cmd("CLUSTER").arg("INFO"))
                .is_ok_and(|info| info.contains("cluster_state:ok"))
        };
        while !nodes.iter().all(|(port, _, _)| ok(*port)) {
            assert!(Instant::now() < deadline, "the cluster did not form");
            std::thread::sleep(Duration::from_millis(50));
        }
        let ports: Vec<String> = nodes
            .iter()
            .map(|(port, _, _)| format!("127.0.0.1:{port}"))
            .collect();
        let url = format!("redis+cluster://{}", ports.join(","));
        let children = nodes.into_iter().map(|(_, _, child)| child).collect();
        TestRedis::new(children, url, RedisTls::default(), dir)
    }

    /// A direct connection to the plain server.
    pub(super) fn conn(&self) -> redis::Connection {
        self.plain.as_ref().expect("a plain server").conn()
    }

    /// A store on these servers, keys under `prefix`.
    pub(super) fn store_in(&self, prefix: &str, timeout: Duration) -> RedisStore {
        let url = StoreUrl::parse(&self.url).unwrap();
        RedisStore::open(&url, &self.tls, prefix, timeout, Duration::from_secs(2)).unwrap()
    }

    /// A store on these servers, keys under `t:`.
    pub(super) fn store(&self, timeout: Duration) -> RedisStore {
        self.store_in("t:", timeout)
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
