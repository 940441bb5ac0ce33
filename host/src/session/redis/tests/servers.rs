//! The Redis servers of the store's tests, from the test kit (killed on drop): a plain one,
//! one that speaks only TLS with a certificate from the kit's test CA (which the store is told
//! to trust), and a cluster of three masters.

use std::time::Duration;

use baton_testkit::redis::{ClientCerts, Cluster, RedisServer, TlsRedis};

use super::super::{RedisStore, RedisTls};
use crate::config::StoreUrl;

/// Redis server processes (killed with it) and the store URL that reaches them.
pub(super) struct TestRedis {
    plain: Option<RedisServer>,
    /// A TLS server or a cluster, kept running while the test holds this.
    _other: Option<Box<dyn std::any::Any>>,
    pub(super) url: String,
    tls: RedisTls,
}

impl TestRedis {
    /// One plain server.
    pub(super) fn start() -> TestRedis {
        let server = RedisServer::start();
        TestRedis {
            url: server.url(),
            plain: Some(server),
            _other: None,
            tls: RedisTls::default(),
        }
    }

    /// One server that speaks only TLS, its certificate from the kit's test CA.
    pub(super) fn start_tls() -> TestRedis {
        let server = TlsRedis::start(ClientCerts::NotAsked);
        TestRedis {
            url: server.url(),
            tls: RedisTls {
                ca_file: Some(server.file("ca.pem")),
                ..RedisTls::default()
            },
            plain: None,
            _other: Some(Box::new(server)),
        }
    }

    /// Three masters, the slots split between them, no replicas.
    pub(super) fn start_cluster() -> TestRedis {
        let cluster = Cluster::start(0);
        TestRedis {
            url: cluster.url(),
            plain: None,
            _other: Some(Box::new(cluster)),
            tls: RedisTls::default(),
        }
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
