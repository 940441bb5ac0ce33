//! What every benchmark's report has: the machine it ran on, latency and spread rows of the
//! table, the figures checked against their targets, the JSON file.

use std::fmt::Write;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::stats::{Latency, Spread};

/// The machine a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Cores available to the process.
    pub cores: usize,
    /// The CPU's model name.
    pub cpu: String,
}

impl Machine {
    /// This machine, from the OS and `/proc/cpuinfo`.
    pub fn current() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_default();
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
        }
    }
}

/// One table row: a name, the request count and the latency percentiles.
pub fn latency_row(out: &mut String, name: &str, l: &Latency) {
    let _ = writeln!(
        out,
        "  {name:<28} {:>9}  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  max {:>8.2} ms",
        l.count, l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
    );
}

/// One table row of a few durations: a name, p50, p99, max and how many.
pub fn spread_row(out: &mut String, name: &str, s: &Spread) {
    let _ = writeln!(
        out,
        "  {name:<38} p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  (n={})",
        s.p50_ms, s.p99_ms, s.max_ms, s.count
    );
}

/// A figure checked against its target.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is measured.
    pub name: &'static str,
    /// The target, as people read it (`0`, `<= 50 ms`).
    pub target: String,
    /// The measured figure, with context.
    pub measured: String,
    /// Whether the target is met.
    pub met: bool,
}

/// The `targets` section of a table: one `[met]` or `[MISSED]` line per check.
pub fn checks_table(out: &mut String, checks: &[Check]) {
    let _ = writeln!(out, "\ntargets");
    for c in checks {
        let _ = writeln!(
            out,
            "  [{}] {:<40} target {:<9} measured {}",
            if c.met { "met" } else { "MISSED" },
            c.name,
            c.target,
            c.measured
        );
    }
}

/// Writes `value` as pretty JSON to `path`.
///
/// # Errors
/// If it cannot be written.
pub fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))
}
