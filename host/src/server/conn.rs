//! Open connections: what each one is doing (a request in progress or not, since when), the
//! timeouts that close a connection nobody is using, and the set of a listener's connections
//! that enforces its cap and closes them at shutdown.
//!
//! A connection with no request in progress is either waiting for a request's headers (from
//! its first byte, or from the accept for a new connection: `header_read_timeout`) or idle
//! between keep-alive requests (`idle_timeout`). Such a connection holds nothing worth waiting
//! for, so it is also the one closed to make room at the cap, longest idle first, and the one
//! closed at once by a shutdown. While a request is in progress only the request's own bounds
//! apply (body progress, handler time). On the HTTPS listener the TLS handshake comes first,
//! bounded by its own timeout and by the header timeout, which starts at the accept.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::clock::{instant_at, mono_ms as now_ms};

/// The timeouts of a connection with no request in progress.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdleTimeouts {
    /// From the first byte of a request (or the accept) to its complete headers.
    pub(crate) header: Duration,
    /// Between the end of one response and the first byte of the next request.
    pub(crate) idle: Duration,
}

/// One open connection's activity.
#[derive(Debug)]
pub(super) struct ConnState {
    /// Requests in progress: from the call of the service until its response body is dropped.
    busy: AtomicUsize,
    /// When the connection last had no request in progress (accepted, or a response ended).
    idle_since: AtomicU64,
    /// When the first byte after `idle_since` arrived; 0 if none did.
    first_byte: AtomicU64,
    /// Set when this connection was picked to make room at the cap.
    evicted: AtomicBool,
    /// Asks the connection's task to close it (eviction, shutdown).
    close: Notify,
    /// It carried an HTTP/2 request: closing it tells the client so (GOAWAY).
    h2: AtomicBool,
}

impl ConnState {
    fn new() -> ConnState {
        let now = now_ms();
        // A new connection is waiting for its first request's headers from the start.
        ConnState {
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now),
            first_byte: AtomicU64::new(now),
            evicted: AtomicBool::new(false),
            close: Notify::new(),
            h2: AtomicBool::new(false),
        }
    }

    /// Marks a request in progress until the guard is dropped.
    pub(super) fn start_request(self: &Arc<Self>) -> RequestGuard {
        self.busy.fetch_add(1, Ordering::SeqCst);
        RequestGuard(Arc::clone(self))
    }

    /// Notes that the connection speaks HTTP/2.
    pub(super) fn saw_h2(&self) {
        self.h2.store(true, Ordering::Relaxed);
    }

    /// Whether the connection speaks HTTP/2.
    pub(super) fn is_h2(&self) -> bool {
        self.h2.load(Ordering::Relaxed)
    }

    /// Whether no request is in progress.
    pub(super) fn is_idle(&self) -> bool {
        self.busy.load(Ordering::SeqCst) == 0
    }

    fn saw_bytes(&self) {
        if self.busy.load(Ordering::Relaxed) == 0 && self.first_byte.load(Ordering::Relaxed) == 0 {
            self.first_byte.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// When the connection is to be closed if nothing changes; `None` while a request is in
    /// progress.
    fn deadline(&self, timeouts: &IdleTimeouts) -> Option<u64> {
        if !self.is_idle() {
            return None;
        }
        let first_byte = self.first_byte.load(Ordering::SeqCst);
        Some(if first_byte != 0 {
            first_byte + crate::clock::millis(timeouts.header)
        } else {
            self.idle_since.load(Ordering::SeqCst) + crate::clock::millis(timeouts.idle)
        })
    }

    /// When the connection's task should look at it again: its deadline, or, while a request
    /// is in progress, a second from now (or sooner with short timeouts). While it is idle,
    /// at least once per header timeout, so a request that starts arriving is held to that
    /// timeout from its first byte.
    pub(super) fn next_check(&self, timeouts: &IdleTimeouts) -> tokio::time::Instant {
        match self.deadline(timeouts) {
            Some(ms) if self.first_byte.load(Ordering::SeqCst) == 0 => {
                instant_at(ms).min(tokio::time::Instant::now() + timeouts.header)
            }
            Some(ms) => instant_at(ms),
            None => {
                let tick = timeouts
                    .header
                    .min(timeouts.idle)
                    .min(Duration::from_secs(1));
                tokio::time::Instant::now() + tick
            }
        }
    }

    /// Whether the connection has been without a request for longer than its timeouts allow.
    pub(super) fn expired(&self, timeouts: &IdleTimeouts) -> bool {
        self.deadline(timeouts).is_some_and(|ms| ms <= now_ms())
    }

    /// Waits until the connection is asked to close.
    pub(super) async fn close_requested(&self) {
        self.close.notified().await;
    }
}

/// A request in progress on a connection; dropping it ends the request.
#[derive(Debug)]
pub(super) struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let state = &self.0;
        // Stamp first, so the connection never looks idle since an earlier time.
        state.idle_since.store(now_ms(), Ordering::SeqCst);
        state.first_byte.store(0, Ordering::SeqCst);
        state.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection's byte stream: plain TCP, or TLS over TCP once the handshake is done.
#[derive(Debug)]
pub(super) enum ConnIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// What a connection's byte stream is, whichever it is underneath.
trait Stream: AsyncRead + AsyncWrite + Unpin {}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for S {}

impl ConnIo {
    /// The stream underneath, for the I/O calls.
    fn stream(&mut self) -> Pin<&mut dyn Stream> {
        match self {
            ConnIo::Plain(s) => Pin::new(s),
            ConnIo::Tls(s) => Pin::new(s.as_mut()),
        }
    }
}

/// A connection's stream that notes when a request's first byte arrives (above TLS, so only
/// request bytes count).
#[derive(Debug)]
pub(super) struct TrackedIo {
    inner: ConnIo,
    state: Arc<ConnState>,
}

impl TrackedIo {
    pub(super) fn new(inner: ConnIo, state: Arc<ConnState>) -> TrackedIo {
        TrackedIo { inner, state }
    }
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = this.inner.stream().poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.state.saw_bytes();
        }
        polled
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().inner.stream().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().inner.stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            ConnIo::Plain(s) => s.is_write_vectored(),
            ConnIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().inner.stream().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().inner.stream().poll_shutdown(cx)
    }
}

/// The open connections of one listener.
#[derive(Debug)]
pub(super) struct Connections {
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
    /// A connection closed.
    closed: Notify,
    /// Connections asked to close to make room that have not closed yet.
    evicting: AtomicUsize,
    shutting_down: AtomicBool,
    /// How long an idle HTTP/1 connection may stay open after the shutdown started, in ms.
    linger_ms: AtomicU64,
}

use crate::sync::lock;

impl Connections {
    pub(super) fn new() -> Connections {
        Connections {
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            closed: Notify::new(),
            evicting: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            linger_ms: AtomicU64::new(0),
        }
    }

    /// Registers a new connection.
    pub(super) fn open(&self) -> (u64, Arc<ConnState>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new());
        lock(&self.open).insert(id, Arc::clone(&state));
        (id, state)
    }

    /// Forgets a closed connection.
    pub(super) fn closed(&self, id: u64) {
        let state = lock(&self.open).remove(&id);
        if let Some(state) = state {
            self.spared(&state);
        }
        self.closed.notify_one();
    }

    /// `state`'s connection is no longer asked to close to make room: it closed, or a request
    /// started on it meanwhile (it may be picked again later).
    pub(super) fn spared(&self, state: &ConnState) {
        if state.evicted.swap(false, Ordering::SeqCst) {
            self.evicting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// How many connections are open.
    pub(super) fn len(&self) -> usize {
        lock(&self.open).len()
    }

    /// Asks the connection idle for longest (no request in progress) to close, unless one
    /// asked earlier is still closing. `false` if every connection has a request in progress.
    pub(super) fn evict_idlest(&self) -> bool {
        let open = lock(&self.open);
        if self.evicting.load(Ordering::SeqCst) > 0 {
            return true;
        }
        let idlest = open
            .iter()
            .filter(|(_, c)| c.is_idle() && !c.evicted.load(Ordering::SeqCst))
            .min_by_key(|(id, c)| (c.idle_since.load(Ordering::SeqCst), **id));
        match idlest {
            Some((_, conn)) => {
                conn.evicted.store(true, Ordering::SeqCst);
                self.evicting.fetch_add(1, Ordering::SeqCst);
                conn.close.notify_one();
                true
            }
            None => false,
        }
    }

    /// Waits until a connection closes, at most `timeout`.
    pub(super) async fn wait_closed(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.closed.notified()).await;
    }

    /// Closes every connection with no request in progress now (HTTP/1 ones after `linger`,
    /// unless a request arrives first), and the others once their requests are done.
    pub(super) fn shut_down(&self, linger: Duration) {
        self.linger_ms
            .store(crate::clock::millis(linger), Ordering::SeqCst);
        self.shutting_down.store(true, Ordering::SeqCst);
        for conn in lock(&self.open).values() {
            conn.close.notify_one();
        }
    }

    /// Whether a shutdown started.
    pub(super) fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// How long an idle HTTP/1 connection stays open once the shutdown started.
    pub(super) fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms.load(Ordering::SeqCst))
    }

    /// Waits until every connection is closed.
    pub(super) async fn all_closed(&self) {
        loop {
            // Registered before the check, so a close in between is not missed.
            let closed = self.closed.notified();
            if self.len() == 0 {
                return;
            }
            closed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: IdleTimeouts = IdleTimeouts {
        header: Duration::from_millis(100),
        idle: Duration::from_millis(300),
    };

    #[test]
    fn a_new_connection_has_the_header_timeout_and_a_finished_one_the_idle_timeout() {
        let conn = Arc::new(ConnState::new());
        let opened = now_ms();
        let deadline = conn.deadline(&TIMEOUTS).unwrap();
        assert!(
            deadline >= opened + 99 && deadline <= opened + 101,
            "{deadline} {opened}"
        );
        let guard = conn.start_request();
        assert_eq!(
            conn.deadline(&TIMEOUTS),
            None,
            "no deadline while a request runs"
        );
        assert!(!conn.expired(&TIMEOUTS));
        drop(guard);
        let ended = now_ms();
        let deadline = conn.deadline(&TIMEOUTS).unwrap();
        assert!(deadline >= ended + 299 && deadline <= ended + 301);
        // The next request's first byte starts its header timeout.
        conn.saw_bytes();
        let deadline = conn.deadline(&TIMEOUTS).unwrap();
        assert!(deadline <= now_ms() + 100);
    }

    #[test]
    fn eviction_picks_the_longest_idle_connection_with_no_request() {
        let conns = Connections::new();
        let (oldest_id, oldest) = conns.open();
        let (_, busy) = conns.open();
        let (newest_id, newest) = conns.open();
        oldest.idle_since.store(5, Ordering::SeqCst);
        busy.idle_since.store(0, Ordering::SeqCst);
        let _running = busy.start_request();
        // Accepted in the same millisecond: the one accepted first goes first.
        newest.idle_since.store(5, Ordering::SeqCst);
        assert!(conns.evict_idlest());
        assert!(oldest.evicted.load(Ordering::SeqCst));
        assert!(conns.evict_idlest(), "one eviction at a time");
        assert!(!newest.evicted.load(Ordering::SeqCst));
        conns.closed(oldest_id);
        assert!(!oldest.evicted.load(Ordering::SeqCst));
        assert!(conns.evict_idlest());
        assert!(newest.evicted.load(Ordering::SeqCst));
        conns.closed(newest_id);
        assert!(!busy.evicted.load(Ordering::SeqCst));
        assert!(!conns.evict_idlest(), "only a busy connection is left");
    }
}
