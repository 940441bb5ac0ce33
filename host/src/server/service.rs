//! One app request, in stages: route it to its app, read its body within the app's limit, admit
//! it (a place among the app's concurrent requests, a version that takes requests), dispatch it
//! to the version's workers and wait for the handler within the request timeout.
//!
//! Each stage ends with the next stage's input or a [`Rejection`], which [`handle`] turns into
//! the response. Once the request is admitted (its app, version, method and path known) it is
//! the current request of the threads that work on it, and the events logged for it are in its
//! span, made only if one is (see [`crate::logging::request`]); a rejection before that is
//! logged in a span made for it.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HeaderValue, SET_COOKIE};
use http::request::Parts;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Body as _;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::config::Limits;
use crate::deploy::{
    AppSlot, BodyRest, InFlight, Origin, OwnedRequest, Registry, Reply, RequestSpan, State, Version,
};
use crate::loader::BodyReadError;
use crate::logging::request::{LazySpan, in_request, working_on, working_on_future};
use crate::session::{Ending, RequestSession, Sessions};

use super::compress::{self, Accepts, ResponseBody};
use super::rejection::Rejection;
use super::{Body, BodyError, ClientInfo, RequestBody};

/// A body up to this size is read whole before the handler runs; of a larger one the handler
/// gets this much with the request and reads the rest as it arrives (a module of ABI 1.0, which
/// cannot, gets it whole).
const FIRST_PART_BYTES: usize = 64 * 1024;

/// Body chunks read ahead of a handler that reads the rest of a body.
const READ_AHEAD_CHUNKS: usize = 4;

/// The header that names the version that answered (`[http] version_header`).
const X_BATON_VERSION: http::HeaderName = http::HeaderName::from_static("x-baton-version");

/// Where a request went: for its metrics, its access log line and its version header.
#[derive(Default)]
struct Served {
    app: Option<Arc<AppSlot>>,
    /// The path relative to the app's mount, once routed, until the request's span takes it.
    path: Option<String>,
    version: Option<Arc<Version>>,
    /// The request's span, once admitted.
    request: Option<Arc<RequestSpan>>,
    /// `x-baton-version`, once the request was dispatched to a version that has one.
    version_header: Option<HeaderValue>,
}

/// Serves one request: counts it on its version's metrics, writes its access log line and
/// compresses the response as `[compression]` and the request allow.
pub(crate) async fn handle(
    registry: &Registry,
    sessions: &Arc<Sessions>,
    req: Request<RequestBody>,
    client: ClientInfo,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let accepts = Accepts::of(&req);
    let method = req.method().clone();
    let access = registry.config().access_log.then(|| req.uri().clone());
    let mut served = Served::default();
    // Boxed: the stages' future is over a KB, and hyper moves the request's future whole
    // into its connection; a box moves as one pointer.
    let mut response = match Box::pin(serve(registry, sessions, req, client, &mut served)).await {
        Ok(response) => response,
        Err(rejection) => served.span(&method).in_scope(|| rejection.into_response()),
    };
    if let Some(value) = served.version_header {
        response.headers_mut().insert(X_BATON_VERSION, value);
    }
    let took = started.elapsed();
    if let Some(version) = &served.version {
        version.observe(response.status(), took);
    }
    if let Some(uri) = access {
        // The peer is logged when it is a proxy that forwarded for the client.
        let proxy = Some(client.peer.ip().to_canonical()).filter(|peer| *peer != client.addr);
        super::access::log(&super::access::AccessLine {
            by: match &served.version {
                Some(version) => super::access::ServedBy::Version(version.access_fields()),
                None => super::access::ServedBy::App(served.app.as_ref().map(|a| a.name())),
            },
            method: method.as_str(),
            path: uri.path(),
            status: response.status().as_u16(),
            duration_ms: super::access::duration_ms(took),
            client: client.addr,
            scheme: client.scheme,
            proxy,
        });
    }
    compress::compress(&registry.config().compression, accepts, response)
}

impl Served {
    /// The request's span, or one with what is known of it for a rejection before it was
    /// admitted.
    fn span(&self, method: &http::Method) -> tracing::Span {
        if let Some(request) = &self.request {
            return request.span().clone();
        }
        let version = self.version.as_ref().map(|v| v.info().version.as_str());
        tracing::info_span!("request", app = self.app.as_ref().map(|a| a.name()), version,
            method = %method, path = self.path.as_deref())
    }
}

/// The stages of a request; from its admission on, inside its span.
async fn serve(
    registry: &Registry,
    sessions: &Arc<Sessions>,
    req: Request<RequestBody>,
    client: ClientInfo,
    served: &mut Served,
) -> Result<Response<Body>, Rejection> {
    let full_path = req.uri().path();
    let (slot, path) = registry.route(full_path).ok_or(Rejection::NoApp)?;
    let mount = full_path[..full_path.len() - path.len()]
        .trim_end_matches('/')
        .to_owned();
    let path = path.to_owned();
    served.app = Some(Arc::clone(&slot));
    if let Some(response) = serve_asset(&slot, &path, &req, served) {
        return Ok(response);
    }
    served.path = Some(path);
    let limits = *slot.limits();
    let (parts, body) = req.into_parts();
    let mut body = read_first(&parts.headers, body, &limits).await?;
    let admitted = admit(&slot, &parts.headers, &limits, served).await?;
    // From here on the request's span names the path for rejections: it takes it over.
    let path = served.path.take().unwrap_or_default();
    let request = RequestSpan::new(Arc::clone(&admitted.version), parts.method.clone(), path);
    served.request = Some(Arc::clone(&request));
    if registry.config().version_header {
        served.version_header = admitted.version.header().cloned();
    }
    if body.rest.is_some() && !admitted.version.streams() {
        working_on_future(request.current(), body.read_rest(&limits)).await?;
    }
    let current = request.current();
    let origin = origin(client, mount);
    let reply = working_on(&current, || {
        dispatch(sessions, admitted, parts, request, body, origin, &limits)
    });
    working_on_future(current, reply).await
}

/// Answers a request for one of the app's static files from the version that has it (the
/// active version's, or an older loaded version's for a versioned URL of its file), without
/// calling the module.
fn serve_asset(
    slot: &AppSlot,
    path: &str,
    req: &Request<RequestBody>,
    served: &mut Served,
) -> Option<Response<Body>> {
    let active = slot.active()?;
    let own = active.assets()?;
    let query = req.uri().query();
    // Older versions' files answer only versioned URLs (`?v=HASH`).
    let others = if query.is_some() {
        slot.versions()
    } else {
        Vec::new()
    };
    let others = others
        .iter()
        .filter(|v| v.id() != active.id() && matches!(v.state(), State::Standby | State::Draining))
        .filter_map(|v| v.assets());
    let table = crate::assets::find_version(std::iter::once(own).chain(others), path, query)?;
    let response = table.serve(req.method(), path, query, req.headers())?;
    if std::ptr::eq(table, own) {
        served.version_header = active.header().cloned();
        served.version = Some(active);
    }
    Some(response.map(Body::full))
}

/// Where a request came from, for the handler: the peer, and the client's address and scheme
/// as the trusted proxies in front of the host forwarded them.
fn origin(client: ClientInfo, mount: String) -> Origin {
    Origin {
        mount,
        peer: Some(client.peer),
        client: Some(client.addr),
        https: client.over_tls || client.scheme == super::client::Scheme::Https,
    }
}

/// A request body as the handler gets it: its first part (all of it when `rest` is `None`) and
/// the client's body still to be read.
struct FirstPart {
    first: Bytes,
    rest: Option<(RequestBody, u64)>,
}

/// Reads a body up to [`FIRST_PART_BYTES`], refusing one larger than the app's `max_body_bytes`
/// as soon as it is declared or received.
async fn read_first(
    headers: &HeaderMap,
    mut body: RequestBody,
    limits: &Limits,
) -> Result<FirstPart, Rejection> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body_bytes) {
        return Err(Rejection::BodyTooLarge);
    }
    let mut first = BytesMut::new();
    while first.len() < FIRST_PART_BYTES {
        if body.is_end_stream() {
            return Ok(FirstPart {
                first: first.freeze(),
                rest: None,
            });
        }
        match body.frame().await {
            None => {
                return Ok(FirstPart {
                    first: first.freeze(),
                    rest: None,
                });
            }
            Some(Err(e)) => return Err(body_rejection(e)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    first.extend_from_slice(&data);
                    if first.len() as u64 > limits.max_body_bytes {
                        return Err(Rejection::BodyTooLarge);
                    }
                }
            }
        }
    }
    let taken = first.len() as u64;
    Ok(FirstPart {
        first: first.freeze(),
        rest: (!body.is_end_stream()).then_some((body, taken)),
    })
}

impl FirstPart {
    /// Reads the rest of the body into memory, within the app's limit: for a module that
    /// cannot read a body as it arrives.
    async fn read_rest(&mut self, limits: &Limits) -> Result<(), Rejection> {
        let Some((rest, taken)) = self.rest.take() else {
            return Ok(());
        };
        let allowed =
            usize::try_from(limits.max_body_bytes.saturating_sub(taken)).unwrap_or(usize::MAX);
        let rest = match Limited::new(rest, allowed).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => return Err(Rejection::BodyTooLarge),
            Err(e) => {
                return Err(match e.downcast::<BodyError>() {
                    Ok(e) => body_rejection(*e),
                    Err(e) => Rejection::BodyUnreadable(e),
                });
            }
        };
        let mut whole = BytesMut::from(std::mem::take(&mut self.first));
        whole.extend_from_slice(&rest);
        self.first = whole.freeze();
        Ok(())
    }
}

/// The rest of a body of which `taken` bytes were read, read ahead by a task as the handler
/// takes it. Once `give_up` is cancelled (the request timed out) the handler's next read fails
/// instead of waiting for a client that sends slowly, so its thread is not held past the
/// request's time.
fn pump(
    mut body: RequestBody,
    taken: u64,
    limits: &Limits,
    give_up: CancellationToken,
) -> BodyRest {
    let allowed = limits.max_body_bytes.saturating_sub(taken);
    let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD_CHUNKS);
    tokio::spawn(async move {
        let mut read = 0u64;
        loop {
            let frame = tokio::select! {
                frame = body.frame() => frame,
                () = give_up.cancelled() => {
                    let _ = tx.send(Err(BodyReadError::TimedOut)).await;
                    return;
                }
            };
            let item = match frame {
                None => return,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        read += data.len() as u64;
                        if read > allowed {
                            Err(BodyReadError::TooLarge)
                        } else {
                            Ok(data)
                        }
                    }
                    Err(_) => continue,
                },
                Some(Err(e)) if e.is_timeout() => Err(BodyReadError::TimedOut),
                Some(Err(e)) => Err(BodyReadError::Failed(e.to_string())),
            };
            let last = item.is_err();
            // The handler stopped reading (it answered already): stop too.
            if tx.send(item).await.is_err() || last {
                return;
            }
        }
    });
    rx
}

/// The rejection for a body that failed while being read.
fn body_rejection(e: BodyError) -> Rejection {
    if e.is_timeout() {
        Rejection::BodyStalled(e)
    } else {
        Rejection::BodyUnreadable(Box::new(e))
    }
}

/// A request let in: its place among the app's concurrent requests and its claim on the version
/// that serves it.
struct Admitted {
    permit: OwnedSemaphorePermit,
    version: Arc<Version>,
    guard: InFlight,
}

/// Takes a place among the app's concurrent requests (waiting at most the queue timeout) and
/// picks the version that serves the request, which must not be stuck.
async fn admit(
    slot: &AppSlot,
    headers: &HeaderMap,
    limits: &Limits,
    served: &mut Served,
) -> Result<Admitted, Rejection> {
    // A free place is taken without arming a timer; only a full app waits, bounded.
    let permit = match Arc::clone(slot.permits()).try_acquire_owned() {
        Ok(permit) => Some(permit),
        Err(_) => tokio::time::timeout(
            limits.queue_timeout(),
            Arc::clone(slot.permits()).acquire_owned(),
        )
        .await
        .ok()
        .and_then(Result::ok),
    };
    let permit = permit.ok_or(Rejection::AtCapacity {
        queue_timeout_ms: limits.queue_timeout_ms,
    })?;
    let (version, guard) = slot.enter(headers).ok_or(Rejection::NoApp)?;
    served.version = Some(Arc::clone(&version));
    if version.unhealthy() {
        return Err(Rejection::Stuck {
            stuck: version.stuck(),
        });
    }
    Ok(Admitted {
        permit,
        version,
        guard,
    })
}

/// Runs the handler on one of the version's worker threads and waits for it within the
/// request timeout (for a streamed response: for its head); then stores the session changes it
/// made.
///
/// The handler is submitted before this returns; the future it returns holds only what the wait
/// needs, not the request it was made of (hyper moves a request's future whole, and a service
/// future's size is the sum of what its awaits keep alive).
fn dispatch(
    sessions: &Arc<Sessions>,
    admitted: Admitted,
    parts: Parts,
    request: Arc<RequestSpan>,
    body: FirstPart,
    origin: Origin,
    limits: &Limits,
) -> impl Future<Output = Result<Response<Body>, Rejection>> + use<> {
    let Admitted {
        permit,
        version,
        guard,
    } = admitted;
    // A client that reached a trusted proxy over HTTPS gets a `Secure` cookie too.
    let session = sessions.begin(&parts.headers, origin.https);
    let FirstPart { first, rest } = body;
    // Only a body still arriving needs telling when the request times out.
    let give_up = rest.is_some().then(CancellationToken::new);
    let rest = rest
        .zip(give_up.clone())
        .map(|((body, taken), give_up)| pump(body, taken, limits, give_up));
    let Parts { uri, headers, .. } = parts;
    let mut call = version.dispatch(
        guard,
        Some(permit),
        OwnedRequest {
            query: uri.query().unwrap_or("").to_owned(),
            headers,
            body: first,
            rest,
            session: Some(Arc::clone(&session)),
            span: request,
            origin,
        },
    );
    let (timeout, timeout_ms) = (limits.request_timeout(), limits.request_timeout_ms);
    async move {
        let Ok(outcome) = tokio::time::timeout(timeout, &mut call.reply).await else {
            // A handler waiting for a slow client's body fails its read now instead of holding
            // its thread for as long as the client keeps trickling.
            if let Some(give_up) = &give_up {
                give_up.cancel();
            }
            version.overran(&call);
            return Err(Rejection::Timeout { timeout_ms });
        };
        let reply = outcome
            .map_err(|_| Rejection::WorkersStopped)?
            .map_err(Rejection::Handler)?;
        let (response, streamed) = respond(&session, reply)?;
        if streamed {
            // The worker stored the session before the head went out.
            return Ok(response);
        }
        match session.end() {
            // Boxed: only a request whose session has something to store awaits the store.
            Some(ending) => Box::pin(finish_session(&session, ending, response)).await,
            None => Ok(response),
        }
    }
}

/// The response to a handler's reply, and whether its body is streamed.
fn respond(session: &RequestSession, reply: Reply) -> Result<(Response<Body>, bool), Rejection> {
    let (out, body, cookie, streamed) = match reply {
        Reply::Full(mut out) => {
            let body = Body::full(std::mem::take(&mut out.body));
            (out, body, None, false)
        }
        Reply::Stream { head, cookie, body } => (head, Body::stream(body), cookie, true),
        Reply::SessionFailed(e) => return Err(Rejection::SessionStore(e)),
        Reply::TooManyStreams { max } => return Err(Rejection::TooManyStreams { max }),
    };
    if let Some(error) = &out.error {
        in_request(|| {
            if out.status == http::StatusCode::SERVICE_UNAVAILABLE && session.store_is_down() {
                // The app passed on the store's outage, which `Sessions` logs once.
                tracing::debug!(%error, "handler error during a session store outage");
            } else if out.status.is_client_error() {
                // The client's mistake (a body too large, a bad form): not the app's failure.
                tracing::debug!(status = out.status.as_u16(), %error, "handler refused the request");
            } else {
                tracing::warn!(status = out.status.as_u16(), %error, "handler error");
            }
        });
    }
    let mut response = Response::new(body);
    *response.status_mut() = out.status;
    *response.headers_mut() = out.headers;
    if let Some(cookie) = cookie {
        set_cookie(&mut response, &cookie);
    }
    Ok((response, streamed))
}

fn set_cookie(response: &mut Response<Body>, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(SET_COOKIE, value);
    }
}

/// Stores what the handler changed in its session and adds the session cookie. If the store
/// fails, nothing was written and the client gets a 503 instead of the handler's response.
async fn finish_session(
    session: &RequestSession,
    ending: Ending,
    mut response: Response<Body>,
) -> Result<Response<Body>, Rejection> {
    if let Some(cookie) = session
        .store(ending)
        .await
        .map_err(Rejection::SessionStore)?
    {
        set_cookie(&mut response, &cookie);
    }
    Ok(response)
}
