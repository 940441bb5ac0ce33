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

/// CPU time (user + system) the process used so far, in seconds: `/proc/<pid>/stat` counts it in
/// clock ticks, which Linux reports to user space at 100 per second on every architecture.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}
