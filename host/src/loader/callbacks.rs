//! The host's side of the boundary: the services table handed to modules and the sinks a
//! module writes its response and error messages into. Every byte lands in host-owned memory.

use std::ffi::c_void;

use std::panic::{AssertUnwindSafe, catch_unwind};

use baton_sdk::abi::{
    self, ByteSink, HostApi, RawHeader, RawRequest, RawStr, ResponseSink, STATUS_CLOSED,
    STATUS_ERROR, STATUS_OK, STATUS_PANIC, STATUS_TIMED_OUT, STATUS_TOO_LARGE, Status,
};

use super::session::SessionAccess;
use super::{CallError, ModuleInfo};
use crate::text::{ADDRESS_TEXT_BYTES, StackText};

/// The peer's and the client's address texts of a request, on the stack.
pub(super) type AddressTexts = (StackText<ADDRESS_TEXT_BYTES>, StackText<ADDRESS_TEXT_BYTES>);

/// Module-wide services for one instance: logging under the app's name and version, and the
/// request-scoped session callbacks.
pub(super) struct HostServices {
    api: HostApi,
    log: LogContext,
}

struct LogContext {
    app: String,
    version: String,
}

impl HostServices {
    pub(super) fn new(info: &ModuleInfo) -> Box<Self> {
        let mut services = Box::new(HostServices {
            api: HostApi {
                size: std::mem::size_of::<HostApi>(),
                abi_minor: abi::ABI_MINOR,
                ctx: std::ptr::null(),
                log_enabled,
                log,
                session_get: super::session::session_get,
                session_set: super::session::session_set,
                session_remove: super::session::session_remove,
                session_update: super::session::session_update,
                session_names: super::session::session_names,
                session_id: super::session::session_id,
                session_invalidate: super::session::session_invalidate,
                session_rotate: super::session::session_rotate,
                body_read,
                response_stream,
                response_write,
                draining,
            },
            log: LogContext {
                app: info.app.clone(),
                version: info.version.clone(),
            },
        });
        services.api.ctx = (&raw const services.log).cast();
        services
    }

    pub(super) fn api(&self) -> *const HostApi {
        &self.api
    }
}

unsafe extern "C" fn log_enabled(_ctx: *const c_void, level: u32) -> bool {
    match level {
        abi::LEVEL_ERROR => tracing::enabled!(target: "baton::app", tracing::Level::ERROR),
        abi::LEVEL_WARN => tracing::enabled!(target: "baton::app", tracing::Level::WARN),
        abi::LEVEL_INFO => tracing::enabled!(target: "baton::app", tracing::Level::INFO),
        abi::LEVEL_DEBUG => tracing::enabled!(target: "baton::app", tracing::Level::DEBUG),
        _ => tracing::enabled!(target: "baton::app", tracing::Level::TRACE),
    }
}

unsafe extern "C" fn log(ctx: *const c_void, level: u32, target: RawStr, message: RawStr) {
    // SAFETY: `ctx` is the `LogContext` boxed in `HostServices`, alive until the module is
    // destroyed; the strings are valid for this call.
    let (ctx, target, message) = unsafe {
        (
            &*ctx.cast::<LogContext>(),
            String::from_utf8_lossy(target.as_bytes()),
            String::from_utf8_lossy(message.as_bytes()),
        )
    };
    let (app, version) = (&ctx.app, &ctx.version);
    // In the span of the request whose handler logs, if it runs in one.
    crate::logging::request::in_request(|| match level {
        abi::LEVEL_ERROR => {
            tracing::error!(target: "baton::app", %app, %version, module = %target, "{message}")
        }
        abi::LEVEL_WARN => {
            tracing::warn!(target: "baton::app", %app, %version, module = %target, "{message}")
        }
        abi::LEVEL_INFO => {
            tracing::info!(target: "baton::app", %app, %version, module = %target, "{message}")
        }
        abi::LEVEL_DEBUG => {
            tracing::debug!(target: "baton::app", %app, %version, module = %target, "{message}")
        }
        _ => tracing::trace!(target: "baton::app", %app, %version, module = %target, "{message}"),
    });
}

/// Collects the message a module writes when a call fails.
#[derive(Default)]
pub(super) struct ErrorText {
    bytes: Vec<u8>,
}

impl ErrorText {
    pub(super) fn sink(&mut self) -> ByteSink {
        ByteSink::for_vec(&mut self.bytes)
    }

    pub(super) fn into_result(self, status: Status) -> Result<(), CallError> {
        let text = || String::from_utf8_lossy(&self.bytes).into_owned();
        match status {
            STATUS_OK => Ok(()),
            STATUS_PANIC => Err(CallError::Panicked(text())),
            STATUS_ERROR => Err(CallError::Failed(text())),
            other => Err(CallError::Failed(format!(
                "unexpected status {other}: {}",
                text()
            ))),
        }
    }
}

/// A request as the host hands it to a module.
#[derive(Debug)]
pub struct ModuleRequest<'a> {
    /// Method.
    pub method: &'a str,
    /// Path relative to the mount, starting with `/`.
    pub path: &'a str,
    /// Query without `?`.
    pub query: &'a str,
    /// Headers.
    pub headers: &'a http::HeaderMap,
    /// Body.
    pub body: &'a [u8],
    /// The request's session, offered to the module through the request context.
    pub session: Option<&'a dyn SessionAccess>,
    /// Where the app is mounted (`/notes`).
    pub mount: &'a str,
    /// The TCP peer, if known.
    pub peer: Option<std::net::SocketAddr>,
    /// The client's address (the peer's, or what a trusted proxy forwarded).
    pub client: Option<std::net::IpAddr>,
    /// Whether the client used HTTPS.
    pub https: bool,
    /// Whether `body` is the whole body; if not, the rest comes from [`RequestIo::read_body`].
    pub body_complete: bool,
}

/// Why reading the rest of a request body failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BodyReadError {
    /// Past the app's `max_body_bytes`.
    #[error("request body larger than the app's limit")]
    TooLarge,
    /// The client sent nothing for the body read timeout.
    #[error("the client stopped sending the body")]
    TimedOut,
    /// The client went away or sent a malformed body.
    #[error("{0}")]
    Failed(String),
}

/// Why a streamed response cannot go on.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StreamClosed(pub String);

/// What a request's handler uses of the host while it runs, beyond its session: the rest of a
/// body that did not come whole, a response sent as a stream, and whether the version drains.
/// The request path implements it; the loader's callbacks call it on the handler's thread.
pub trait RequestIo {
    /// Reads the next bytes of the body after [`ModuleRequest::body`]; 0 at its end.
    ///
    /// # Errors
    /// Why the body cannot be read.
    fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, BodyReadError>;

    /// Sends `head` (status and headers; its body is empty) and turns the response into a
    /// stream.
    ///
    /// # Errors
    /// The response cannot be sent (the client is gone, the session could not be stored).
    fn start_stream(&mut self, head: ModuleResponse) -> Result<(), StreamClosed>;

    /// Sends one part of a streamed response, blocking while the client is slow.
    ///
    /// # Errors
    /// The client is gone, took nothing for the send timeout, or the stream was cut.
    fn write(&mut self, bytes: &[u8]) -> Result<(), StreamClosed>;

    /// Whether the version stopped taking new requests.
    fn draining(&self) -> bool;
}

/// The I/O of a request handled in memory, outside the request path (benchmarks, tools): the
/// body is whole in [`ModuleRequest::body`], and a streamed response is gathered into `streamed`.
#[derive(Debug, Default)]
pub struct MemoryIo {
    /// The head of a streamed response, once the handler started one.
    pub head: Option<ModuleResponse>,
    /// The bytes a handler streamed.
    pub streamed: Vec<u8>,
}

impl RequestIo for MemoryIo {
    fn read_body(&mut self, _: &mut [u8]) -> Result<usize, BodyReadError> {
        Ok(0)
    }

    fn start_stream(&mut self, head: ModuleResponse) -> Result<(), StreamClosed> {
        self.head = Some(head);
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), StreamClosed> {
        self.streamed.extend_from_slice(bytes);
        Ok(())
    }

    fn draining(&self) -> bool {
        false
    }
}

impl Default for ModuleRequest<'_> {
    fn default() -> Self {
        static EMPTY: std::sync::OnceLock<http::HeaderMap> = std::sync::OnceLock::new();
        ModuleRequest {
            method: "GET",
            path: "/",
            query: "",
            headers: EMPTY.get_or_init(http::HeaderMap::new),
            body: b"",
            session: None,
            mount: "",
            peer: None,
            client: None,
            https: false,
            body_complete: true,
        }
    }
}

/// The context of one `handle` call, behind `RawRequest::ctx`: the session, the request's I/O
/// and the response being built. Alive for the whole call.
pub(super) struct RequestContext<'a> {
    pub(super) session: Option<&'a dyn SessionAccess>,
    io: *mut (dyn RequestIo + 'a),
    response: *mut ResponseBuilder,
}

impl<'a> RequestContext<'a> {
    pub(super) fn new(
        session: Option<&'a dyn SessionAccess>,
        io: &'a mut (dyn RequestIo + 'a),
        response: *mut ResponseBuilder,
    ) -> Self {
        RequestContext {
            session,
            io,
            response,
        }
    }
}

/// Runs a streaming callback against the request context, catching panics, and reports a
/// failure's message into the module's sink.
///
/// # Safety
/// `req` must be null or this call's `RequestContext`, `err` null or the module's live sink.
unsafe fn with_io(
    req: *mut c_void,
    err: *const ByteSink,
    body: impl FnOnce(&mut RequestContext<'_>) -> Result<(), (Status, String)>,
) -> Status {
    let outcome = if req.is_null() {
        Err((STATUS_ERROR, "this request has no context".to_owned()))
    } else {
        // SAFETY: the caller guarantees `req` is this call's live context, used by nothing else
        // while the callback runs (the module is blocked in it).
        let ctx = unsafe { &mut *req.cast::<RequestContext<'_>>() };
        catch_unwind(AssertUnwindSafe(|| body(ctx)))
            .unwrap_or_else(|_| Err((STATUS_PANIC, "the host's request code panicked".into())))
    };
    match outcome {
        Ok(()) => STATUS_OK,
        Err((status, message)) => {
            if !err.is_null() {
                // SAFETY: the module's sink, live for this call.
                unsafe { (*err).put(message.as_bytes()) };
            }
            status
        }
    }
}

unsafe extern "C" fn body_read(
    req: *mut c_void,
    buf: *mut u8,
    cap: usize,
    read: *mut usize,
    err: *const ByteSink,
) -> Status {
    if buf.is_null() || read.is_null() {
        return STATUS_ERROR;
    }
    // SAFETY: `req` and `err` come from the module for this request's call.
    unsafe {
        with_io(req, err, |ctx| {
            // SAFETY: the module passes `cap` writable bytes at `buf` and a writable `read`.
            let (buf, read) = (std::slice::from_raw_parts_mut(buf, cap), &mut *read);
            // SAFETY: `io` points to the request's I/O, alive for the call.
            let io = &mut *ctx.io;
            match io.read_body(buf) {
                Ok(n) => {
                    *read = n.min(cap);
                    Ok(())
                }
                Err(e) => {
                    let status = match e {
                        BodyReadError::TooLarge => STATUS_TOO_LARGE,
                        BodyReadError::TimedOut => STATUS_TIMED_OUT,
                        BodyReadError::Failed(_) => STATUS_CLOSED,
                    };
                    Err((status, e.to_string()))
                }
            }
        })
    }
}

unsafe extern "C" fn response_stream(req: *mut c_void, err: *const ByteSink) -> Status {
    // SAFETY: `req` and `err` come from the module for this request's call.
    unsafe {
        with_io(req, err, |ctx| {
            // SAFETY: the builder and the I/O are alive for the call; the module is not using
            // its response sink while it is in this callback.
            let (builder, io) = (&mut *ctx.response, &mut *ctx.io);
            if builder.streamed {
                return Err((STATUS_ERROR, "the response is already a stream".into()));
            }
            let head = std::mem::take(builder).finish(None);
            builder.streamed = true;
            io.start_stream(head)
                .map_err(|e| (STATUS_CLOSED, e.to_string()))
        })
    }
}

unsafe extern "C" fn response_write(
    req: *mut c_void,
    bytes: RawStr,
    err: *const ByteSink,
) -> Status {
    // SAFETY: `req` and `err` come from the module for this request's call.
    unsafe {
        with_io(req, err, |ctx| {
            // SAFETY: as in `response_stream`; `bytes` is valid for this call.
            let (builder, io, bytes) = (&*ctx.response, &mut *ctx.io, bytes.as_bytes());
            if !builder.streamed {
                return Err((STATUS_ERROR, "the response is not a stream".into()));
            }
            io.write(bytes).map_err(|e| (STATUS_CLOSED, e.to_string()))
        })
    }
}

unsafe extern "C" fn draining(req: *mut c_void) -> bool {
    if req.is_null() {
        return false;
    }
    // SAFETY: `req` is this call's context.
    let ctx = unsafe { &*req.cast::<RequestContext<'_>>() };
    // SAFETY: the I/O is alive for the call.
    catch_unwind(AssertUnwindSafe(|| unsafe { (*ctx.io).draining() })).unwrap_or(false)
}

impl ModuleRequest<'_> {
    pub(super) fn raw_headers(&self) -> Vec<RawHeader> {
        self.headers
            .iter()
            .map(|(name, value)| RawHeader {
                name: RawStr::from_str(name.as_str()),
                value: RawStr::new(value.as_bytes()),
            })
            .collect()
    }

    /// The request as the module reads it; `texts` holds the peer and client addresses as text
    /// and `ctx` the call's context, both alive for the whole call.
    pub(super) fn raw(
        &self,
        headers: &[RawHeader],
        texts: &AddressTexts,
        ctx: *mut RequestContext<'_>,
    ) -> RawRequest {
        RawRequest {
            method: RawStr::from_str(self.method),
            path: RawStr::from_str(self.path),
            query: RawStr::from_str(self.query),
            headers: headers.as_ptr(),
            headers_len: headers.len(),
            body: RawStr::new(self.body),
            ctx: ctx.cast(),
            mount: RawStr::from_str(self.mount),
            peer_addr: RawStr::new(texts.0.as_bytes()),
            client_addr: RawStr::new(texts.1.as_bytes()),
            scheme: RawStr::from_str(if self.https { "https" } else { "http" }),
            body_complete: self.body_complete,
        }
    }

    /// The peer and client addresses as the module reads them.
    pub(super) fn address_texts(&self) -> AddressTexts {
        let mut texts = (StackText::new(), StackText::new());
        if let Some(addr) = self.peer {
            crate::text::push_socket_addr(&mut texts.0, addr);
        }
        match (self.peer, self.client) {
            // The client is the peer (no proxy in front): its text is the peer's without the
            // port.
            (Some(std::net::SocketAddr::V4(peer)), client)
                if client.is_none_or(|ip| ip == std::net::IpAddr::V4(*peer.ip())) =>
            {
                let peer = texts.0.as_str();
                let ip = peer.rsplit_once(':').map_or(peer, |(ip, _)| ip);
                let _ = std::fmt::Write::write_str(&mut texts.1, ip);
            }
            (peer, client) => {
                if let Some(ip) = client.or(peer.map(|p| p.ip())) {
                    crate::text::push_ip(&mut texts.1, ip);
                }
            }
        }
        texts
    }
}

/// A module's response, in host memory.
#[derive(Debug, Clone)]
pub struct ModuleResponse {
    /// Status code (500 if the module set an invalid one).
    pub status: http::StatusCode,
    /// Headers the module set (invalid ones are dropped and reported in `error`).
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Vec<u8>,
    /// The handler's error message for the log, if it failed.
    pub error: Option<String>,
    /// The response went out as a stream through [`RequestIo`]; status, headers and body here
    /// are empty.
    pub streamed: bool,
}

#[derive(Default)]
pub(super) struct ResponseBuilder {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
    invalid: Vec<String>,
    /// The head went out through `response_stream`; the sink's body calls are ignored.
    streamed: bool,
}

unsafe extern "C" fn set_status(ctx: *mut c_void, status: u16) {
    // SAFETY: `ctx` is a live `ResponseBuilder` for this call.
    unsafe { (*ctx.cast::<ResponseBuilder>()).status = status }
}

unsafe extern "C" fn add_header(ctx: *mut c_void, name: RawStr, value: RawStr) {
    // SAFETY: `ctx` is a live `ResponseBuilder`; the slices are valid for this call.
    let (builder, name, value) = unsafe {
        (
            &mut *ctx.cast::<ResponseBuilder>(),
            name.as_bytes(),
            value.as_bytes(),
        )
    };
    match (
        http::HeaderName::from_bytes(name),
        http::HeaderValue::from_bytes(value),
    ) {
        (Ok(name), Ok(value)) => {
            builder.headers.append(name, value);
        }
        _ => builder
            .invalid
            .push(String::from_utf8_lossy(name).into_owned()),
    }
}

unsafe extern "C" fn write_body(ctx: *mut c_void, bytes: RawStr) {
    // SAFETY: `ctx` is a live `ResponseBuilder`; `bytes` valid for this call.
    let (builder, bytes) = unsafe { (&mut *ctx.cast::<ResponseBuilder>(), bytes.as_bytes()) };
    if !builder.streamed {
        builder.body.extend_from_slice(bytes);
    }
}

impl ResponseBuilder {
    /// The sink the module writes through; `this` must stay valid while the sink is used.
    pub(super) fn sink(this: *mut Self) -> ResponseSink {
        ResponseSink {
            ctx: this.cast(),
            status: set_status,
            header: add_header,
            body: write_body,
        }
    }

    pub(super) fn finish(self, mut error: Option<String>) -> ModuleResponse {
        if self.streamed {
            // Status and headers went out with the stream's head.
            return ModuleResponse {
                status: http::StatusCode::OK,
                headers: http::HeaderMap::new(),
                body: Vec::new(),
                error,
                streamed: true,
            };
        }
        let status = http::StatusCode::from_u16(self.status).unwrap_or_else(|_| {
            error.get_or_insert_with(|| format!("invalid status code {}", self.status));
            http::StatusCode::INTERNAL_SERVER_ERROR
        });
        if !self.invalid.is_empty() {
            let note = format!(
                "invalid response headers dropped: {}",
                self.invalid.join(", ")
            );
            error = Some(match error {
                Some(e) => format!("{e}; {note}"),
                None => note,
            });
        }
        ModuleResponse {
            status,
            headers: self.headers,
            body: self.body,
            error,
            streamed: self.streamed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, SocketAddr};

    fn texts(peer: Option<&str>, client: Option<&str>) -> (String, String) {
        let headers = http::HeaderMap::new();
        let request = ModuleRequest {
            method: "GET",
            path: "/",
            query: "",
            headers: &headers,
            body: b"",
            session: None,
            mount: "",
            peer: peer.map(|p| p.parse::<SocketAddr>().unwrap()),
            client: client.map(|c| c.parse::<IpAddr>().unwrap()),
            https: false,
            body_complete: true,
        };
        let texts = request.address_texts();
        (texts.0.as_str().to_owned(), texts.1.as_str().to_owned())
    }

    #[test]
    fn the_module_reads_the_peer_and_the_client_as_display_writes_them() {
        // (peer, client the host found, the texts the module reads)
        let cases = [
            // No proxy: the client is the peer, without its port.
            (Some("10.1.2.3:4567"), None, ("10.1.2.3:4567", "10.1.2.3")),
            (
                Some("10.1.2.3:4567"),
                Some("10.1.2.3"),
                ("10.1.2.3:4567", "10.1.2.3"),
            ),
            (Some("[::1]:80"), None, ("[::1]:80", "::1")),
            (Some("[fe80::1%7]:80"), None, ("[fe80::1%7]:80", "fe80::1")),
            // Behind a trusted proxy: the client it forwarded for.
            (
                Some("127.0.0.1:9000"),
                Some("203.0.113.9"),
                ("127.0.0.1:9000", "203.0.113.9"),
            ),
            (
                Some("127.0.0.1:9000"),
                Some("2001:db8::9"),
                ("127.0.0.1:9000", "2001:db8::9"),
            ),
            (
                Some("[::ffff:127.0.0.1]:9000"),
                Some("127.0.0.1"),
                ("[::ffff:127.0.0.1]:9000", "127.0.0.1"),
            ),
            // A request the host made itself (a warm-up) has neither.
            (None, None, ("", "")),
        ];
        for (peer, client, (peer_text, client_text)) in cases {
            assert_eq!(
                texts(peer, client),
                (peer_text.to_owned(), client_text.to_owned()),
                "{peer:?} {client:?}"
            );
        }
    }
}
