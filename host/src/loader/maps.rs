//! Reads `/proc/self/maps` to verify that an unloaded module is really gone.

use std::path::Path;

/// The address ranges of every mapping of `path` in this process.
///
/// # Errors
/// If `/proc/self/maps` cannot be read.
pub(super) fn address_ranges(path: &Path) -> std::io::Result<Vec<(usize, usize)>> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let target = path.to_string_lossy();
    Ok(maps
        .lines()
        .filter(|line| file_of(line) == target)
        .filter_map(|line| {
            let (lo, hi) = line.split_whitespace().next()?.split_once('-')?;
            Some((
                usize::from_str_radix(lo, 16).ok()?,
                usize::from_str_radix(hi, 16).ok()?,
            ))
        })
        .collect())
}

fn file_of(line: &str) -> &str {
    line.splitn(6, char::is_whitespace)
        .last()
        .unwrap_or("")
        .trim()
}

/// The mappings of `path` in this process that are executable or writable, as `maps` lines.
///
/// A read-only mapping can legitimately remain after `dlclose` (the backtrace symbolizer maps
/// the file after a caught panic with `RUST_BACKTRACE` set), so only code and data count.
///
/// # Errors
/// If `/proc/self/maps` cannot be read.
pub fn mapped_regions(path: &Path) -> std::io::Result<Vec<String>> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let target = path.to_string_lossy();
    let deleted = format!("{target} (deleted)");
    Ok(maps
        .lines()
        .filter(|line| {
            let mut fields = line.split_whitespace();
            let perms = fields.nth(1).unwrap_or("");
            let file = file_of(line);
            (file == target || file == deleted) && (perms.contains('x') || perms.contains('w'))
        })
        .map(str::to_owned)
        .collect())
}
