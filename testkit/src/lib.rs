//! # baton-testkit
//!
//! What the host's integration tests (`host/tests`), its unit tests and the benchmarks
//! (`benches/`) start and take apart, written once:
//!
//! - [`host`]: a `baton serve` child process on port 0 with directories of its own, its JSON log
//!   in a file the harness reads ([`log`]), stopped when dropped.
//! - [`redis`]: a private `redis-server` from PATH on a free port, which a test may also kill,
//!   freeze or restart on purpose; and production-shaped ones: TLS only, a Sentinel set, a
//!   Cluster, whose masters a test may kill to watch a failover.
//! - [`balancer`]: `nginx` or `haproxy` in front of hosts, running the configurations the README
//!   documents.
//! - [`browser`]: `chromedriver` and headless Chromium sessions driven over WebDriver: open a
//!   page, fill in and submit its forms, read what it shows, run a script, take a screenshot.
//! - [`tls`]: a certificate authority made for the run and server certificates for `localhost`.
//! - [`build`]: the workspace, `cargo` without the variables that change what it builds, and app
//!   modules built with compile-time settings (`BATON_APP_VERSION`, a fixture's fault).
//! - [`process`]: signals and liveness of a child process.
//!
//! The kit runs the `baton` binary as a process and never links the host library, so the
//! host's own unit tests can use it too. Starting something that must work panics when it does
//! not (`start`), as a test wants; the benchmarks use the `try_` forms, which return the error.

pub mod balancer;
pub mod browser;
pub mod build;
pub mod host;
pub mod log;
pub mod process;
pub mod redis;
pub mod tls;

pub use host::{HostOptions, HostProc};
pub use process::{Signal, running, signal};
pub use redis::RedisServer;
