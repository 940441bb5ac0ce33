//! The supervisor's relay of the serving process's stderr: every byte goes on to the
//! supervisor's own stderr, whole lines at a time (the supervisor's own log lines are written
//! to the same stderr, and never land inside one of the serving process's), and the last lines
//! stay in memory for the crash record (a stack overflow or an abort leaves its reason there,
//! not in the log).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
    pub(crate) fn relay(from: impl AsyncRead + Unpin + Send + 'static) -> Tail {
        Self::relay_to(from, tokio::io::stderr())
    }

    fn relay_to(
        mut from: impl AsyncRead + Unpin + Send + 'static,
        mut out: impl AsyncWrite + Unpin + Send + 'static,
    ) -> Tail {
        let lines = Arc::new(Mutex::new(VecDeque::with_capacity(KEEP)));
        let kept = Arc::clone(&lines);
        let task = tokio::spawn(async move {
            let mut buffer = vec![0u8; 64 * 1024];
            let mut partial: Vec<u8> = Vec::new();
            // Read and not relayed yet: the start of a line.
            let mut unsent: Vec<u8> = Vec::new();
            loop {
                let n = match from.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let chunk = &buffer[..n];
                // Relay first: a stalled reader of ours must not cost the child its lines.
                // Whole lines, each write one `write_all` to stderr (which holds stderr's
                // lock for it); a line longer than the buffer goes in pieces.
                unsent.extend_from_slice(chunk);
                let whole = match unsent.iter().rposition(|&b| b == b'\n') {
                    Some(end) => end + 1,
                    None if unsent.len() >= buffer.len() => unsent.len(),
                    None => 0,
                };
                if whole > 0 {
                    let _ = out.write_all(&unsent[..whole]).await;
                    unsent.drain(..whole);
                }
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
            let _ = out.write_all(&unsent).await;
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

    /// Records each write it is given.
    #[derive(Clone, Default)]
    struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);

    impl AsyncWrite for Writes {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            crate::sync::lock(&self.0).push(buf.to_vec());
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// Lines cut anywhere by the pipe reach stderr whole, one write for whole lines only,
    /// every byte in order; a line longer than the buffer goes in pieces, and an unfinished
    /// last line at the end.
    #[tokio::test]
    async fn relays_whole_lines_only_and_every_byte() {
        let (mut writer, reader) = tokio::io::duplex(1000);
        let out = Writes::default();
        let tail = Tail::relay_to(reader, out.clone());
        let mut sent = Vec::new();
        for i in 0..2000 {
            let line = format!("{{\"line\":{i},\"pad\":\"{}\"}}\n", "p".repeat(i % 97));
            sent.extend_from_slice(line.as_bytes());
        }
        sent.extend_from_slice(format!("{}\n", "L".repeat(200_000)).as_bytes());
        sent.extend_from_slice(b"fatal runtime error: stack overflow");
        // Pieces of odd sizes, cutting lines anywhere.
        for piece in sent.chunks(333) {
            writer.write_all(piece).await.unwrap();
        }
        drop(writer);
        tail.finish(Duration::from_secs(5)).await;
        let writes = crate::sync::lock(&out.0).clone();
        assert_eq!(writes.concat(), sent);
        let (last, rest) = writes.split_last().unwrap();
        assert_eq!(last, b"fatal runtime error: stack overflow");
        for write in rest {
            assert!(
                write.ends_with(b"\n") || write.len() >= 64 * 1024,
                "a write ends inside a line: {:?}",
                String::from_utf8_lossy(&write[write.len().saturating_sub(40)..])
            );
        }
    }
}
