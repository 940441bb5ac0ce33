//! What every benchmark's report has: the machine it ran on, latency rows of the table, the
//! JSON file.

use std::fmt::Write;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::stats::Latency;

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

/// Writes `value` as pretty JSON to `path`.
///
/// # Errors
/// If it cannot be written.
pub fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))
}
