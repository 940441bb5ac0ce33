//! A request's I/O on its worker thread: the rest of a body that did not come whole, and a
//! response the handler streams.
//!
//! The handler runs on a version's worker thread, the connection on the runtime. Between them
//! are two bounded channels: body chunks in (read ahead by a pump task, at most a few chunks),
//! response chunks out (at most a few, so a client that reads slowly blocks the handler's
//! writes instead of growing the host's memory). A write that finds room queues its chunk
//! without entering the runtime; on a full stream the worker sleeps until the client took a few
//! chunks, at most the send timeout, and a write fails at once when the client is gone or the
//! version's drain deadline passed ([`Version::cut_streams`]).
//!
//! A module's bytes are valid only during its `response_write` call, so each write is copied
//! once, into a buffer that comes back to a host-wide pool when the connection has sent it:
//! a stream then moves its bytes through a few warm buffers instead of fresh memory per piece.

use std::sync::atomic::{AtomicU8, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Version;
use crate::loader::{BodyReadError, CallError, ModuleResponse, RequestIo, StreamClosed};
use crate::logging::request::in_request;
use crate::session::{RequestSession, StoreError};
use crate::sync::lock;

/// Response chunks in flight between a streaming handler and its connection.
const STREAM_CHUNKS: usize = 4;

/// Chunks a full stream waits for the client to take before its worker goes on writing.
const REFILL_CHUNKS: usize = STREAM_CHUNKS / 2;

/// The largest response chunk: a longer write is sent as several, so a stream holds at most
/// `STREAM_CHUNKS` of these whatever the module's writes.
const CHUNK_BYTES: usize = 64 * 1024;

/// Writes at least this long are copied into a recycled buffer; shorter ones (an event, a
/// line) into one of their own size.
const RECYCLED_MIN: usize = 16 * 1024;

/// Buffers kept for the next chunks, host-wide (at most 4 MiB).
const RECYCLED_BUFFERS: usize = 64;

/// Chunk buffers the connections have sent and given back, each of `CHUNK_BYTES` capacity.
static RECYCLED: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A chunk's bytes in a recycled buffer, which goes back to [`RECYCLED`] when the last
/// reference to the chunk is dropped.
struct Recycled(Vec<u8>);

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.0);
        buf.clear();
        let mut pool = lock(&RECYCLED);
        if pool.len() < RECYCLED_BUFFERS {
            pool.push(buf);
            return;
        }
        drop(pool);
    }
}

/// `bytes` (at most `CHUNK_BYTES`) copied into a chunk the host owns.
fn chunk(bytes: &[u8]) -> Bytes {
    debug_assert!(bytes.len() <= CHUNK_BYTES);
    if bytes.len() < RECYCLED_MIN {
        return Bytes::copy_from_slice(bytes);
    }
    let recycled = lock(&RECYCLED).pop();
    let mut buf = recycled.unwrap_or_else(|| Vec::with_capacity(CHUNK_BYTES));
    buf.extend_from_slice(bytes);
    Bytes::from_owner(Recycled(buf))
}

/// What a dispatched request came to, as its connection sees it.
#[derive(Debug)]
pub(crate) enum Reply {
    /// The whole response; its session changes are still to be stored.
    Full(ModuleResponse),
    /// A streamed response: its head (session stored, `cookie` to send) and its body.
    Stream {
        head: ModuleResponse,
        cookie: Option<String>,
        body: StreamBody,
    },
    /// The handler began a stream but its session changes could not be stored.
    SessionFailed(StoreError),
    /// The handler began a stream while the version ran `max_streams` already.
    TooManyStreams {
        /// The version's limit.
        max: usize,
    },
}

/// A streamed response's place among its version's `max_streams`, given back when dropped.
#[derive(Debug)]
pub(crate) struct StreamSlot(pub(super) Arc<Version>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, SeqCst);
    }
}

/// How a streamed body ended, as its worker reports it.
#[derive(Debug)]
struct StreamEnd(AtomicU8);

impl StreamEnd {
    const RUNNING: u8 = 0;
    const FINISHED: u8 = 1;
    const FAILED: u8 = 2;
}

impl Default for StreamEnd {
    fn default() -> Self {
        StreamEnd(AtomicU8::new(Self::RUNNING))
    }
}

/// The body of a streamed response, on the connection's side.
#[derive(Debug)]
pub(crate) struct StreamBody {
    rx: mpsc::Receiver<Bytes>,
    end: Arc<StreamEnd>,
    cut: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

/// Why a streamed body did not end cleanly; the client sees the response cut.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamAbort {
    /// The handler failed or panicked after the response had started.
    #[error("the handler failed after its response started")]
    Handler,
    /// The version's drain deadline passed while the response was still streaming.
    #[error("the version's drain deadline passed")]
    Cut,
}

impl StreamBody {
    /// The next chunk; `None` at a clean end.
    ///
    /// # Errors
    /// The stream was aborted ([`StreamAbort`]).
    pub(crate) fn poll_chunk(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Bytes, StreamAbort>>> {
        use std::future::Future;
        use std::task::Poll;
        if let Poll::Ready(chunk) = self.rx.poll_recv(cx) {
            return Poll::Ready(match chunk {
                Some(chunk) => Some(Ok(chunk)),
                None if self.end.0.load(SeqCst) == StreamEnd::FINISHED => None,
                None => Some(Err(StreamAbort::Handler)),
            });
        }
        match self.cut.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(StreamAbort::Cut))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Sends `chunk` to the connection: at once while fewer than `STREAM_CHUNKS` wait there;
/// otherwise the worker sleeps until the client took `REFILL_CHUNKS` of them (so it is woken
/// once per few chunks, not per chunk), at most `timeout`, and fails at once at the drain
/// deadline (`cut`).
///
/// A client that took something but fewer than `REFILL_CHUNKS` within `timeout` is still
/// taking data: the chunk goes into the room it made, and only a client that took nothing
/// fails the write.
fn send(
    tx: &mpsc::Sender<Bytes>,
    chunk: Bytes,
    cut: &CancellationToken,
    runtime: &tokio::runtime::Handle,
    timeout: Duration,
) -> Result<(), StreamClosed> {
    let cut_error = || StreamClosed("the version's drain deadline passed".into());
    let gone = || StreamClosed("the client is gone".into());
    if cut.is_cancelled() {
        return Err(cut_error());
    }
    let chunk = match tx.try_send(chunk) {
        Ok(()) => return Ok(()),
        Err(TrySendError::Closed(_)) => return Err(gone()),
        Err(TrySendError::Full(chunk)) => chunk,
    };
    let room = runtime.block_on(async {
        tokio::select! {
            room = tokio::time::timeout(timeout, tx.reserve_many(REFILL_CHUNKS)) => match room {
                // The permits go back at once: the chunks after this one take them.
                Ok(Ok(_permits)) => Ok(()),
                Ok(Err(_)) => Err(gone()),
                Err(_) => Ok(()),
            },
            () = cut.cancelled() => Err(cut_error()),
        }
    });
    room?;
    match tx.try_send(chunk) {
        Ok(()) => Ok(()),
        Err(TrySendError::Closed(_)) => Err(gone()),
        Err(TrySendError::Full(_)) => Err(StreamClosed(format!(
            "the client took no data for {} ms",
            timeout.as_millis()
        ))),
    }
}

/// The rest of a request body, read ahead by the connection's pump.
pub(crate) type BodyRest = mpsc::Receiver<Result<Bytes, BodyReadError>>;

/// A request's I/O as its handler uses it on the worker thread.
pub(crate) struct WorkerIo {
    rest: Option<BodyRest>,
    current: Bytes,
    reply: Option<oneshot::Sender<Result<Reply, CallError>>>,
    stream: Option<(mpsc::Sender<Bytes>, Arc<StreamEnd>, StreamSlot)>,
    session: Option<Arc<RequestSession>>,
    version: Arc<Version>,
    runtime: tokio::runtime::Handle,
    send_timeout: Duration,
}

impl WorkerIo {
    pub(crate) fn new(
        version: Arc<Version>,
        rest: Option<BodyRest>,
        session: Option<Arc<RequestSession>>,
        reply: oneshot::Sender<Result<Reply, CallError>>,
        runtime: tokio::runtime::Handle,
        send_timeout: Duration,
    ) -> WorkerIo {
        WorkerIo {
            rest,
            current: Bytes::new(),
            reply: Some(reply),
            stream: None,
            session,
            version,
            runtime,
            send_timeout,
        }
    }

    /// Reports what the handler's call came to: the whole response, or how its stream ended.
    pub(crate) fn finish(mut self, result: Result<ModuleResponse, CallError>) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(result.map(Reply::Full));
            return;
        }
        let Some((tx, end, _slot)) = self.stream.take() else {
            // The stream's head failed; its answer went out already.
            return;
        };
        let failure = match &result {
            Ok(response) => response.error.clone(),
            Err(e) => Some(e.to_string()),
        };
        match failure {
            None => end.0.store(StreamEnd::FINISHED, SeqCst),
            Some(error) => {
                end.0.store(StreamEnd::FAILED, SeqCst);
                in_request(|| {
                    tracing::warn!(%error, "streamed response failed after it started; cut");
                });
            }
        }
        drop(tx);
        // Changes made while streaming are stored too; a session created then has no cookie.
        if let Some(session) = self.session.take() {
            match self.runtime.block_on(session.finish()) {
                Ok(None) => {}
                Ok(Some(_)) => in_request(|| {
                    tracing::warn!(
                        "session created after the response started streaming: its cookie could not be sent"
                    )
                }),
                Err(e) => in_request(|| {
                    tracing::warn!(error = %e,
                    "session changes made while streaming could not be stored")
                }),
            }
        }
    }
}

impl RequestIo for WorkerIo {
    fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, BodyReadError> {
        while self.current.is_empty() {
            let Some(rest) = self.rest.as_mut() else {
                return Ok(0);
            };
            match rest.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => {
                    self.rest = None;
                    return Err(e);
                }
                None => {
                    self.rest = None;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }

    fn start_stream(&mut self, head: ModuleResponse) -> Result<(), StreamClosed> {
        let Some(reply) = self.reply.take() else {
            return Err(StreamClosed("the response has already been sent".into()));
        };
        let Some(slot) = self.version.open_stream() else {
            let max = self.version.limits.max_streams;
            let _ = reply.send(Ok(Reply::TooManyStreams { max }));
            return Err(StreamClosed(format!(
                "the version sends {max} streamed responses already (limits.max_streams)"
            )));
        };
        let cookie = match &self.session {
            Some(session) => match self.runtime.block_on(session.finish()) {
                Ok(cookie) => cookie,
                Err(e) => {
                    let message = e.to_string();
                    let _ = reply.send(Ok(Reply::SessionFailed(e)));
                    return Err(StreamClosed(message));
                }
            },
            None => None,
        };
        let (tx, rx) = mpsc::channel(STREAM_CHUNKS);
        let end = Arc::new(StreamEnd::default());
        let body = StreamBody {
            rx,
            end: Arc::clone(&end),
            cut: Box::pin(self.version.cut.clone().cancelled_owned()),
        };
        if reply
            .send(Ok(Reply::Stream { head, cookie, body }))
            .is_err()
        {
            return Err(StreamClosed("the client is gone".into()));
        }
        self.stream = Some((tx, end, slot));
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), StreamClosed> {
        let Some((tx, _, _)) = &self.stream else {
            return Err(StreamClosed("the response is not a stream".into()));
        };
        for piece in bytes.chunks(CHUNK_BYTES) {
            send(
                tx,
                chunk(piece),
                &self.version.cut,
                &self.runtime,
                self.send_timeout,
            )?;
        }
        Ok(())
    }

    fn draining(&self) -> bool {
        self.version.draining()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    /// A full stream: `STREAM_CHUNKS` chunks wait for the client.
    fn full() -> (mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(STREAM_CHUNKS);
        for _ in 0..STREAM_CHUNKS {
            tx.try_send(Bytes::from_static(b"x")).unwrap();
        }
        (tx, rx)
    }

    #[test]
    fn a_sent_chunks_buffer_carries_the_next_chunk() {
        let first = chunk(&[1; CHUNK_BYTES]);
        let at = first.as_ptr();
        drop(first);
        // Other tests recycle buffers at the same time: one of the next few gets this one.
        let next: Vec<Bytes> = (0..RECYCLED_BUFFERS)
            .map(|_| chunk(&[2; RECYCLED_MIN]))
            .collect();
        assert!(next.iter().any(|c| c.as_ptr() == at));
        assert!(next.iter().all(|c| c[..] == [2; RECYCLED_MIN]));
        assert_eq!(chunk(b"event").as_ref(), b"event");
    }

    #[test]
    fn a_stream_with_room_takes_a_chunk_without_waiting() {
        let rt = runtime();
        let (tx, mut rx) = mpsc::channel(STREAM_CHUNKS);
        let cut = CancellationToken::new();
        for i in 0..STREAM_CHUNKS {
            send(
                &tx,
                chunk(&[i as u8; 10]),
                &cut,
                rt.handle(),
                Duration::ZERO,
            )
            .unwrap();
        }
        assert_eq!(rx.try_recv().unwrap()[..], [0; 10]);
    }

    #[test]
    fn a_client_that_takes_nothing_fails_the_write_after_the_timeout() {
        let rt = runtime();
        let (tx, _rx) = full();
        let started = Instant::now();
        let timeout = Duration::from_millis(200);
        let err = send(
            &tx,
            chunk(b"late"),
            &CancellationToken::new(),
            rt.handle(),
            timeout,
        )
        .unwrap_err();
        assert!(err.0.contains("took no data for 200 ms"), "{}", err.0);
        assert!(started.elapsed() >= timeout);
    }

    #[test]
    fn a_client_that_takes_one_chunk_in_the_timeout_is_still_sent_to() {
        let rt = runtime();
        let (tx, mut rx) = full();
        let taker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            rx.blocking_recv().unwrap();
            rx
        });
        let timeout = Duration::from_millis(500);
        send(
            &tx,
            chunk(b"next"),
            &CancellationToken::new(),
            rt.handle(),
            timeout,
        )
        .unwrap();
        let mut rx = taker.join().unwrap();
        let mut last = Bytes::new();
        while let Ok(c) = rx.try_recv() {
            last = c;
        }
        assert_eq!(&last[..], b"next");
    }

    #[test]
    fn a_waiting_write_wakes_once_the_client_took_room_for_more() {
        let rt = runtime();
        let (tx, mut rx) = full();
        let taker = std::thread::spawn(move || {
            for _ in 0..REFILL_CHUNKS {
                std::thread::sleep(Duration::from_millis(20));
                rx.blocking_recv().unwrap();
            }
            rx
        });
        let cut = CancellationToken::new();
        let timeout = Duration::from_secs(30);
        // The first write waits for the client; the room it made takes the rest at once.
        for _ in 0..REFILL_CHUNKS {
            send(&tx, chunk(b"more"), &cut, rt.handle(), timeout).unwrap();
        }
        let rx = taker.join().unwrap();
        assert_eq!(rx.len(), STREAM_CHUNKS);
    }

    #[test]
    fn a_write_fails_at_once_after_the_cut_and_when_the_client_is_gone() {
        let rt = runtime();
        let cut = CancellationToken::new();
        let timeout = Duration::from_secs(30);
        // Waiting on a full stream, the cut ends the wait.
        let (tx, _rx) = full();
        let cutter = {
            let cut = cut.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                cut.cancel();
            })
        };
        let started = Instant::now();
        let err = send(&tx, chunk(b"x"), &cut, rt.handle(), timeout).unwrap_err();
        assert!(err.0.contains("drain deadline"), "{}", err.0);
        assert!(started.elapsed() < Duration::from_secs(10));
        cutter.join().unwrap();
        // With room, a cut stream takes nothing more either.
        let (tx, mut rx) = mpsc::channel(STREAM_CHUNKS);
        assert!(send(&tx, chunk(b"x"), &cut, rt.handle(), timeout).is_err());
        assert!(rx.try_recv().is_err());
        // A client gone, room or not.
        drop(rx);
        let err = send(
            &tx,
            chunk(b"x"),
            &CancellationToken::new(),
            rt.handle(),
            timeout,
        )
        .unwrap_err();
        assert!(err.0.contains("gone"), "{}", err.0);
    }
}
