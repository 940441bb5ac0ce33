//! # baton-benches
//!
//! Baton's benchmarks, each against a baseline measured in the same run:
//!
//! - `benches/`: criterion micro benchmarks — one request across the module boundary, session
//!   attribute JSON encoding, route lookup (`cargo bench -p baton-benches`).
//! - `swapbench`: the `baton` host as a child process under keep-alive load while versions of
//!   `hello` are dropped into its watched directory, against the bare `hyper-hello` server.
//! - `hostbench`: a supervised `baton` host upgraded (`SIGUSR2`) and crashed (`SIGKILL` to its
//!   serving process) under keep-alive load on `hello` and on `counter` with in-memory sessions.
//! - `sessionbench`: `counter` with Redis sessions against `hello` on one `baton` host, one
//!   session per keep-alive connection, every count checked; `counter` with in-memory sessions
//!   for reference.
//! - `tlsbench`: `baton` over HTTPS against `hyper-hello` with rustls: full handshakes per
//!   second and keep-alive throughput, with plain-HTTP `baton` for reference.
//! - `streambench`: 1 MiB streamed responses from `baton` (`hello`'s `/bytes`) against
//!   `hyper-hello`'s `/bytes`, and the `notes` example's JSON API (SQLite) against `/hello/` on
//!   the same host.
//! - `tlskeys`: loads and unloads a module many times in one process and counts pthread keys.
//!
//! The library holds what they share: [`cli`] (the options every program takes, and how a run
//! ends), [`artifacts`] (building or finding the binaries and the modules), [`servers`] (the servers as child processes, the host through the test kit,
//! `baton-testkit`, which also starts `redis-server` and makes certificates), [`load`] (the
//! load generator), [`tls`] (certificates and the TLS client), [`procfs`] (memory and mappings
//! of a child), [`stats`] and [`report`] (machine, table rows, JSON).

pub mod artifacts;
pub mod cli;
pub mod load;
pub mod procfs;
pub mod report;
pub mod servers;
pub mod stats;
pub mod tls;
