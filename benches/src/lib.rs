//! # baton-benches
//!
//! Baton's benchmarks, each against a baseline measured in the same run:
//!
//! - `benches/`: criterion micro benchmarks — one request across the module boundary, session
//!   attribute JSON encoding, route lookup (`cargo bench -p baton-benches`).
//! - `swapbench`: the `baton` host as a child process under keep-alive load while versions of
//!   `hello` are dropped into its watched directory, against the bare `hyper-hello` server.
//! - `tlskeys`: loads and unloads a module many times in one process and counts pthread keys.
//!
//! The library holds what they share: [`artifacts`] (building or finding the binaries and the
//! two module versions), [`servers`] (the servers as child processes), [`load`] (the load
//! generator), [`procfs`] (memory and mappings of a child) and [`stats`].

pub mod artifacts;
pub mod load;
pub mod procfs;
pub mod servers;
pub mod stats;
