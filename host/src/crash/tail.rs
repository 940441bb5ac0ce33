//! The supervisor's relay of the serving process's stderr: every byte goes on to the
//! supervisor's own stderr, and the last lines stay in memory for the crash record (a stack
//! overflow or an abort leaves its reason there, not in the log).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Lines kept.
const KEEP: usize = 20;
/// A longer line is cut to this many bytes in memory (never in the relay).
const LINE_MAX: usize = 2048;

/// A running relay and the last lines it passed on.
#[derive(Debug)]
pub(crate) struct Tail {
    lines: Arc<Mutex<VecDeque<String>>>,
    task: tokio::task::JoinHandle<()>,
}

fn push(lines: &Mutex<VecDeque<String>>, line: &[u8]) {
    let line = &line[..line.len().min(LINE_MAX)];
    let mut lines = crate::sync::lock(lines);
    if lines.len() == KEEP {
        lines.pop_front();
    }
    lines.push_back(String::from_utf8_lossy(line).trim_end().to_owned());
}

impl Tail {
    /// Relays `from` to this process's stderr until it ends (the process died and its pipe
    /// closed).
    pub(crate) fn relay(mut from: impl AsyncRead + Unpin + Send + 'static) -> Tail {
        let lines = Arc::new(Mutex::new(VecDeque::with_capacity(KEEP)));
        let kept = Arc::clone(&lines);
        let task = tokio::spawn(async move {
            let mut out = tokio::io::stderr();
            let mut buffer = vec![0u8; 64 * 1024];
            let mut partial: Vec<u8> = Vec::new();
            loop {
                let n = match from.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let chunk = &buffer[..n];
                // Relay first: a stalled reader of ours must not cost the child its lines.
                let _ = out.write_all(chunk).await;
                let mut rest = chunk;
                while let Some(end) = rest.iter().position(|&b| b == b'\n') {
                    partial.extend_from_slice(&rest[..end]);
                    push(&kept, &partial);
                    partial.clear();
                    rest = &rest[end + 1..];
                }
                if partial.len() < LINE_MAX {
                    partial.extend_from_slice(&rest[..rest.len().min(LINE_MAX - partial.len())]);
                }
            }
            if !partial.is_empty() {
                push(&kept, &partial);
            }
            let _ = out.flush().await;
        });
        Tail { lines, task }
    }

    /// Waits (at most `within`) for the relay to reach the end of the stream, then returns the
    /// last lines, oldest first.
    pub(crate) async fn finish(self, within: Duration) -> Vec<String> {
        let Tail { lines, task } = self;
        if tokio::time::timeout(within, task).await.is_err() {
            tracing::warn!(
                waited_ms = crate::clock::millis(within),
                "the serving process's stderr is still open; its last lines may be missing"
            );
        }
        let lines = crate::sync::lock(&lines);
        lines.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_last_lines_across_chunks() {
        let (mut writer, reader) = tokio::io::duplex(64);
        let tail = Tail::relay(reader);
        for i in 0..30 {
            writer
                .write_all(format!("line {i}\n").as_bytes())
                .await
                .unwrap();
        }
        writer
            .write_all(b"thread 'baton-x' has over")
            .await
            .unwrap();
        writer.write_all(b"flowed its stack").await.unwrap();
        drop(writer);
        let lines = tail.finish(Duration::from_secs(5)).await;
        assert_eq!(lines.len(), KEEP);
        assert_eq!(lines[0], "line 11");
        assert_eq!(lines[KEEP - 1], "thread 'baton-x' has overflowed its stack");
    }
}
