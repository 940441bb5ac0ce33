//! What `/proc/<pid>` says about a child process: memory and mapped module copies.

use std::path::Path;

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Resident set size in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// Peak resident set size in KiB (the kernel's high-water mark).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// Distinct files under `dir` that have an executable or writable mapping in `pid`: module
/// copies whose code or data is still mapped. A read-only mapping alone (the backtrace
/// symbolizer's) does not count.
pub fn mapped_copies(pid: u32, dir: &Path) -> Vec<String> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    let dir = dir.to_string_lossy();
    let mut copies: Vec<String> = maps
        .lines()
        .filter(|line| {
            let perms = line.split_whitespace().nth(1).unwrap_or("");
            perms.contains('x') || perms.contains('w')
        })
        .filter_map(|line| line.splitn(6, char::is_whitespace).last())
        .map(|file| file.trim().trim_end_matches(" (deleted)"))
        .filter(|file| file.starts_with(dir.as_ref()))
        .map(str::to_owned)
        .collect();
    copies.sort();
    copies.dedup();
    copies
}
