//! The requests running on a version: their claims (the in-flight count a drain waits for),
//! their hand-off to a worker thread, and handlers that overrun their time.
//!
//! A request claims its version before it runs ([`Version::try_enter`]), so a version that
//! stopped taking requests retires only once every claim is released. A handler that overruns
//! its request timeout is reported stuck and, within `max_stuck_threads`, a thread takes its
//! place in the pool; its own thread leaves once it returns.

use std::sync::atomic::{AtomicU8, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::io::{BodyRest, Reply, WorkerIo};
use super::{State, Version};
use crate::deploy::pool::Pool;
use crate::loader::{CallError, ModuleRequest};
use crate::logging::request::{LazySpan, in_request, working_on};
use crate::sync::lock;

/// A request running on a version, as shown while it drains.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Running {
    /// Method.
    pub method: String,
    /// Path relative to the mount.
    pub path: String,
    /// How long it has been running.
    pub elapsed_ms: u64,
    /// Its handler overran the request timeout (the client got a 504) and still runs.
    pub stuck: bool,
}

/// Where a dispatched request's handler is, shared by its worker and the task awaiting it.
#[derive(Debug, Default)]
pub(crate) struct Ticket(AtomicU8);

impl Ticket {
    const RUNNING: u8 = 0;
    const DONE: u8 = 1;
    /// Overran its time; a replacement thread took its place.
    const REPLACED: u8 = 2;
    /// Overran its time; no thread was started in its place.
    const STUCK: u8 = 3;

    fn stuck(&self) -> bool {
        self.0.load(SeqCst) >= Self::REPLACED
    }
}

/// A running request, as tracked for status and drains.
#[derive(Debug)]
pub(super) struct Tracked {
    /// Its method and path.
    request: Arc<RequestSpan>,
    started: Instant,
    ticket: Arc<Ticket>,
}

/// A request handed to a worker: its reply, and its ticket for [`Version::overran`].
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) reply: tokio::sync::oneshot::Receiver<Result<Reply, CallError>>,
    ticket: Arc<Ticket>,
    id: u64,
    /// The request's span, around the events about the call.
    span: Arc<RequestSpan>,
}

/// An app request as its logs and the running requests name it — its version, method and
/// path — and its span (`request`: `app`, `version`, `method`, `path`, and `warmup` for a
/// warm-up request), made the first time an event inside the request is logged (see
/// [`crate::logging::request`]).
#[derive(Debug)]
pub(crate) struct RequestSpan {
    span: OnceLock<tracing::Span>,
    version: Arc<Version>,
    method: http::Method,
    /// Relative to the app's mount.
    path: String,
    warmup: bool,
}

impl RequestSpan {
    /// The span of a request for `path` (relative to the mount) served by `version`.
    pub(crate) fn new(version: Arc<Version>, method: http::Method, path: String) -> Arc<Self> {
        Arc::new(RequestSpan {
            span: OnceLock::new(),
            version,
            method,
            path,
            warmup: false,
        })
    }

    /// The span of a warm-up request (`GET path`) to `version`.
    pub(crate) fn warmup(version: Arc<Version>, path: String) -> Arc<Self> {
        Arc::new(RequestSpan {
            span: OnceLock::new(),
            version,
            method: http::Method::GET,
            path,
            warmup: true,
        })
    }

    /// The request's method.
    pub(crate) fn method(&self) -> &http::Method {
        &self.method
    }

    /// The request's path, relative to the app's mount.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// This request as a thread's current request.
    pub(crate) fn current(self: &Arc<Self>) -> Arc<dyn LazySpan> {
        Arc::clone(self) as Arc<dyn LazySpan>
    }
}

impl LazySpan for RequestSpan {
    fn span(&self) -> &tracing::Span {
        self.span.get_or_init(|| {
            let info = self.version.info();
            let path = self.path.as_str();
            if self.warmup {
                tracing::info_span!(parent: None, "request", app = %info.app,
                    version = %info.version, method = "GET", path, warmup = true)
            } else {
                tracing::info_span!(parent: None, "request", app = info.app.as_str(),
                    version = info.version.as_str(), method = %self.method, path)
            }
        })
    }
}

/// A request's claim on a version: while it exists the version cannot retire.
#[derive(Debug)]
pub(crate) struct InFlight {
    version: Arc<Version>,
    tracked: Option<u64>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let version = &self.version;
        if let Some(id) = self.tracked {
            lock(&version.running).remove(&id);
        }
        version.served.fetch_add(1, SeqCst);
        if version.in_flight.fetch_sub(1, SeqCst) == 1 && version.state() != State::Active {
            version.idle.notify_waiters();
        }
    }
}

/// Where a request came from and where its app is mounted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origin {
    /// The app's mount, e.g. `/notes`.
    pub(crate) mount: String,
    pub(crate) peer: Option<std::net::SocketAddr>,
    /// The client's address: the peer's, or what a trusted proxy forwarded.
    pub(crate) client: Option<std::net::IpAddr>,
    pub(crate) https: bool,
}

/// An owned request, ready to cross to a worker thread.
#[derive(Debug)]
pub(crate) struct OwnedRequest {
    pub(crate) query: String,
    pub(crate) headers: http::HeaderMap,
    /// The body, or its first part when `rest` brings the remainder.
    pub(crate) body: bytes::Bytes,
    pub(crate) rest: Option<BodyRest>,
    pub(crate) session: Option<Arc<crate::session::RequestSession>>,
    pub(crate) origin: Origin,
    /// Its method and path, and its span: the worker's current request while the handler
    /// runs, so its logs and the stuck-handler events carry the fields.
    pub(crate) span: Arc<RequestSpan>,
}

impl Version {
    /// The requests running on this version now, longest-running first.
    pub fn running(&self) -> Vec<Running> {
        let mut running: Vec<Running> = lock(&self.running)
            .values()
            .map(|t| Running {
                method: t.request.method().to_string(),
                path: t.request.path().to_owned(),
                elapsed_ms: crate::clock::millis(t.started.elapsed()),
                stuck: t.ticket.stuck(),
            })
            .collect();
        running.sort_by_key(|r| std::cmp::Reverse(r.elapsed_ms));
        running
    }

    /// Claims the version for one request, unless it stopped taking new ones.
    pub(crate) fn try_enter(self: &Arc<Self>) -> Option<InFlight> {
        // Paired with `set_state` + `wait_idle`: either the request sees the new state and backs
        // off, or the drain sees the request in flight and waits for it.
        self.in_flight.fetch_add(1, SeqCst);
        match self.state() {
            State::Active | State::Warming => Some(InFlight {
                version: Arc::clone(self),
                tracked: None,
            }),
            _ => {
                if self.in_flight.fetch_sub(1, SeqCst) == 1 {
                    self.idle.notify_waiters();
                }
                None
            }
        }
    }

    /// Handles a request on a worker thread; `guard` is released there when the handler returns.
    pub(crate) fn dispatch(
        self: &Arc<Self>,
        mut guard: InFlight,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
        request: OwnedRequest,
    ) -> Call {
        let id = self.next_request.fetch_add(1, SeqCst);
        let ticket = Arc::new(Ticket::default());
        lock(&self.running).insert(
            id,
            Tracked {
                request: Arc::clone(&request.span),
                started: Instant::now(),
                ticket: Arc::clone(&ticket),
            },
        );
        guard.tracked = Some(id);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job_ticket = Arc::clone(&ticket);
        let span = Arc::clone(&request.span);
        let runtime = tokio::runtime::Handle::current();
        self.pool.submit(Box::new(move || {
            let current = request.span.current();
            working_on(&current, || {
                let version = &guard.version;
                let instance = version.instance.load();
                let body_complete = request.rest.is_none();
                let mut io = WorkerIo::new(
                    Arc::clone(version),
                    request.rest,
                    request.session.clone(),
                    tx,
                    runtime,
                    version.limits.stream_send_timeout(),
                );
                let result = match instance.as_ref() {
                    Some(instance) => instance.handle(
                        &ModuleRequest {
                            method: request.span.method().as_str(),
                            path: request.span.path(),
                            query: &request.query,
                            headers: &request.headers,
                            body: &request.body,
                            session: request.session.as_deref().map(|s| s as _),
                            mount: &request.origin.mount,
                            peer: request.origin.peer,
                            client: request.origin.client,
                            https: request.origin.https,
                            body_complete,
                        },
                        &mut io,
                    ),
                    None => Err(CallError::Failed("version already retired".into())),
                };
                drop(instance);
                io.finish(result);
                drop(permit);
                if let Err(overran) =
                    job_ticket
                        .0
                        .compare_exchange(Ticket::RUNNING, Ticket::DONE, SeqCst, SeqCst)
                {
                    guard
                        .version
                        .stuck_returned(id, overran == Ticket::REPLACED);
                }
                drop(guard);
            });
        }));
        Call {
            reply: rx,
            ticket,
            id,
            span,
        }
    }

    /// The request of `call` overran its timeout and its client was answered without it: report
    /// its handler as stuck and, within `max_stuck_threads`, start a thread in its place so the
    /// version keeps its capacity. Nothing happens if the handler already returned.
    pub(crate) fn overran(&self, call: &Call) {
        let _request = call.span.span().enter();
        let replace = self.stuck.fetch_add(1, SeqCst) < self.limits.max_stuck_threads;
        let state = if replace {
            Ticket::REPLACED
        } else {
            Ticket::STUCK
        };
        if call
            .ticket
            .0
            .compare_exchange(Ticket::RUNNING, state, SeqCst, SeqCst)
            .is_err()
        {
            // It returned meanwhile: not stuck after all.
            self.stuck.fetch_sub(1, SeqCst);
            return;
        }
        let replaced = replace
            && match self.pool.replace_stuck() {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "no thread started in place of a stuck handler");
                    // Its thread must not leave when the handler returns: none replaced it.
                    call.ticket.0.store(Ticket::STUCK, SeqCst);
                    false
                }
            };
        let elapsed_ms = self.elapsed_ms(call.id);
        tracing::warn!(
            elapsed_ms,
            stuck = self.stuck(),
            replaced,
            unhealthy = self.unhealthy(),
            "handler stuck past the request timeout; still running"
        );
    }

    /// How long request `id` has been running, for a log line.
    fn elapsed_ms(&self, id: u64) -> u64 {
        lock(&self.running)
            .get(&id)
            .map(|t| crate::clock::millis(t.started.elapsed()))
            .unwrap_or_default()
    }

    /// A stuck handler returned, on its own worker thread.
    fn stuck_returned(&self, id: u64, replaced: bool) {
        let stuck = self.stuck.fetch_sub(1, SeqCst) - 1;
        if replaced {
            // A replacement runs in this thread's place: leave, so the pool keeps its size.
            Pool::leave_after_job();
        }
        let elapsed_ms = self.elapsed_ms(id);
        in_request(|| tracing::info!(elapsed_ms, stuck, "stuck handler returned"));
    }

    /// Waits until no request runs on this version, or `timeout` passes. Call after the
    /// version stopped taking new requests.
    pub(crate) async fn wait_idle(&self, timeout: Duration) -> bool {
        // `Duration::MAX` waits for ever; an `Instant` that far out would overflow.
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return true;
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return self.in_flight() == 0;
                    }
                }
                None => notified.await,
            }
        }
    }
}
