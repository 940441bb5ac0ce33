//! Reading a host's log file as it grows: whole lines only, from where the last read stopped.
//!
//! The host writes its log to a file, as it would in production, rather than into a pipe the
//! harness must keep draining: a benchmark reads it only when it needs to, so its own work on
//! the log never competes with the host it measures.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde_json::Value;

/// New lines of a log file, read from where the last look stopped.
#[derive(Debug)]
pub struct LogTail {
    file: File,
    /// The start of a line not yet ended by a newline.
    partial: Vec<u8>,
}

impl LogTail {
    /// Reads `path` from its start.
    ///
    /// # Errors
    /// If it cannot be opened.
    pub fn from_start(path: &Path) -> std::io::Result<LogTail> {
        Ok(LogTail {
            file: File::open(path)?,
            partial: Vec::new(),
        })
    }

    /// Reads only what is written to `path` from now on.
    ///
    /// # Errors
    /// If it cannot be opened.
    pub fn from_end(path: &Path) -> std::io::Result<LogTail> {
        let mut tail = LogTail::from_start(path)?;
        tail.file.seek(SeekFrom::End(0))?;
        Ok(tail)
    }

    /// The whole lines written since the last call; a line still being written waits for the
    /// next.
    ///
    /// # Errors
    /// If the file cannot be read.
    pub fn lines(&mut self) -> std::io::Result<Vec<String>> {
        let mut new = std::mem::take(&mut self.partial);
        self.file.read_to_end(&mut new)?;
        let whole = new.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        self.partial = new.split_off(whole);
        Ok(String::from_utf8_lossy(&new)
            .lines()
            .map(str::to_owned)
            .collect())
    }
}

/// A log line as JSON; a line that is not JSON (a panic message, say) becomes
/// `{"message": LINE, "raw": true}`.
pub fn parse(line: &str) -> Value {
    serde_json::from_str(line)
        .unwrap_or_else(|_| serde_json::json!({ "message": line, "raw": true }))
}

/// Whether a log line is worth a reader's attention: a warning or an error, or anything the
/// host printed that is not JSON. Access log lines never are.
pub fn is_warning(line: &str) -> bool {
    !line.contains(r#""target":"baton::access""#)
        && serde_json::from_str::<Value>(line).map_or(true, |v| {
            matches!(v["level"].as_str(), Some("WARN" | "ERROR"))
        })
}
