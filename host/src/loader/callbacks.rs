//! The host's side of the boundary: the services table handed to modules and the sinks a
//! module writes its response and error messages into. Every byte lands in host-owned memory.

use std::ffi::c_void;

use baton_sdk::abi::{
    self, ByteSink, HostApi, RawHeader, RawRequest, RawStr, ResponseSink, STATUS_ERROR, STATUS_OK,
    STATUS_PANIC, Status,
};

use super::session::SessionAccess;
use super::{CallError, ModuleInfo};

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
    match level {
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
    }
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

    pub(super) fn raw(&self, headers: &[RawHeader]) -> RawRequest {
        RawRequest {
            method: RawStr::from_str(self.method),
            path: RawStr::from_str(self.path),
            query: RawStr::from_str(self.query),
            headers: headers.as_ptr(),
            headers_len: headers.len(),
            body: RawStr::new(self.body),
            // A pointer to the (wide) reference, which lives in `self` for the whole call.
            ctx: self
                .session
                .as_ref()
                .map_or(std::ptr::null_mut(), |session| {
                    std::ptr::from_ref(session).cast_mut().cast()
                }),
        }
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
}

#[derive(Default)]
pub(super) struct ResponseBuilder {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
    invalid: Vec<String>,
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
    unsafe {
        (*ctx.cast::<ResponseBuilder>())
            .body
            .extend_from_slice(bytes.as_bytes())
    }
}

impl ResponseBuilder {
    pub(super) fn sink(&mut self) -> ResponseSink {
        ResponseSink {
            ctx: (self as *mut Self).cast(),
            status: set_status,
            header: add_header,
            body: write_body,
        }
    }

    pub(super) fn finish(self, mut error: Option<String>) -> ModuleResponse {
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
        }
    }
}
