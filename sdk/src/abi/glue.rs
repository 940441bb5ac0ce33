//! The generic `extern "C"` functions behind every module's descriptor.
//!
//! Each one turns raw boundary arguments into safe sdk types, runs the app inside
//! `catch_unwind` (a panic must never unwind into the host) and reports the outcome as a
//! [`Status`] plus a message written to the host's error sink.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use super::{
    AssetVisitor, ByteSink, HostApi, HostIo, HostSession, RawHeaders, RawRequest, RawStr,
    ResponseSink, STATUS_ERROR, STATUS_OK, STATUS_PANIC, Status,
};
use crate::app::{App, InitContext};
use crate::assets::Assets;
use crate::error::Error;
use crate::request::{Address, Origin, Request};
use crate::response::{Body, IntoResponse};
use crate::router::Router;
use crate::stream::BodyWriter;

/// What [`export!`](crate::export) knows about a module: its app type, name and version.
#[doc(hidden)]
pub trait ModuleDef: 'static {
    /// The app type.
    type App: App;
    /// App name.
    const NAME: &'static str;
    /// App version.
    const VERSION: &'static str;
}

/// A live app instance, owned by the module and known to the host only as a pointer.
struct Instance<A: App> {
    app: A,
    router: Router<A>,
    assets: Assets,
    /// The host's services, alive until `destroy` returns.
    host: *const HostApi,
    /// The host's ABI minor: fields and callbacks of later minors are used only when it has them.
    host_minor: u32,
}

thread_local! {
    /// Where the panic hook leaves the message of a panic for the glue that catches it.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = info
                .payload_as_str()
                .unwrap_or("(non-string panic payload)");
            let text = match info.location() {
                Some(at) => format!("panicked at {}:{}: {message}", at.file(), at.line()),
                None => format!("panicked: {message}"),
            };
            LAST_PANIC.with(|last| *last.borrow_mut() = Some(text));
        }));
    });
}

fn panic_text(payload: &(dyn Any + Send)) -> String {
    LAST_PANIC
        .with(|last| last.borrow_mut().take())
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked".to_owned())
}

/// Runs `f`, turning an error or a panic into a status and a message in `err`.
fn guarded(err: &ByteSink, f: impl FnOnce() -> Result<(), Error>) -> Status {
    let (status, message) = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return STATUS_OK,
        Ok(Err(e)) => (STATUS_ERROR, e.message().to_owned()),
        Err(payload) => (STATUS_PANIC, panic_text(payload.as_ref())),
    };
    // SAFETY: `err` was handed to us by the host for the current call.
    unsafe { err.put(message.as_bytes()) };
    status
}

/// # Safety
/// Called by the host only: `host` lives until `destroy`, `config` and `err` for this call,
/// `out` is writable.
#[doc(hidden)]
pub unsafe extern "C" fn create<M: ModuleDef>(
    host: *const HostApi,
    config: RawStr,
    out: *mut *mut c_void,
    err: *const ByteSink,
) -> Status {
    install_panic_hook();
    super::log::install(host);
    // SAFETY: the config bytes and the sink are valid for this call.
    let (config, err) = unsafe { (config.as_bytes(), &*err) };
    guarded(err, || {
        let ctx = InitContext::new(M::NAME, M::VERSION, config)?;
        let app = M::App::init(&ctx)?;
        // SAFETY: the host's table lives until `destroy`.
        let host_minor = unsafe { host.as_ref() }.map_or(0, |api| api.abi_minor);
        let instance = Box::new(Instance {
            app,
            router: M::App::router(),
            assets: M::App::assets(),
            host,
            host_minor,
        });
        // SAFETY: the host passes a writable slot for the instance pointer.
        unsafe { *out = Box::into_raw(instance).cast() };
        Ok(())
    })
}

/// # Safety
/// `instance` comes from `create` and is not destroyed; `err` is live.
#[doc(hidden)]
pub unsafe extern "C" fn warmup<M: ModuleDef>(
    instance: *mut c_void,
    err: *const ByteSink,
) -> Status {
    // SAFETY: the host passes back the pointer `create` made, still alive, and a live sink.
    let (instance, err) = unsafe { (&*instance.cast::<Instance<M::App>>(), &*err) };
    guarded(err, || instance.app.warmup())
}

/// # Safety
/// `instance` comes from `create` and is not destroyed; `err` is live.
#[doc(hidden)]
pub unsafe extern "C" fn shutdown<M: ModuleDef>(
    instance: *mut c_void,
    err: *const ByteSink,
) -> Status {
    // SAFETY: the host passes back the pointer `create` made, still alive, and a live sink.
    let (instance, err) = unsafe { (&*instance.cast::<Instance<M::App>>(), &*err) };
    guarded(err, || {
        instance.app.shutdown();
        Ok(())
    })
}

/// # Safety
/// `instance` comes from `create` and is not destroyed; `req`, `resp` and `err` are live for
/// this call.
#[doc(hidden)]
pub unsafe extern "C" fn handle<M: ModuleDef>(
    instance: *mut c_void,
    req: *const RawRequest,
    resp: *const ResponseSink,
    err: *const ByteSink,
) -> Status {
    // SAFETY: the host passes back the pointer `create` made, still alive; the request and the
    // sinks are valid for the duration of this call.
    let (instance, raw, resp, err) =
        unsafe { (&*instance.cast::<Instance<M::App>>(), &*req, &*resp, &*err) };
    guarded(err, || {
        // SAFETY: every slice in `raw` and its session context are valid for this call, which
        // outlives `request`; the host table lives until `destroy`; the fields of minor 1 are
        // read only from a host of that minor or later.
        let request = unsafe {
            let headers = if raw.headers_len == 0 {
                &[][..]
            } else {
                std::slice::from_raw_parts(raw.headers, raw.headers_len)
            };
            let (origin, complete, io) = if instance.host_minor >= 1 {
                let text = |s: RawStr| std::str::from_utf8(s.as_bytes()).unwrap_or("");
                let origin = Origin {
                    mount: text(raw.mount).trim_end_matches('/'),
                    peer: Address::Text(text(raw.peer_addr)),
                    client: Address::Text(text(raw.client_addr)),
                    https: raw.scheme.as_bytes() == b"https",
                };
                (
                    origin,
                    raw.body_complete,
                    HostIo::new(instance.host, raw.ctx),
                )
            } else {
                (Origin::default(), true, None)
            };
            Request::from_host(
                raw.method.as_bytes(),
                raw.path.as_bytes(),
                raw.query.as_bytes(),
                RawHeaders { raw: headers },
                (raw.body.as_bytes(), complete),
                HostSession::new(instance.host, raw.ctx),
                io,
                origin,
                &instance.assets,
            )
        };
        let (body, io) = (request.body_state(), request.host_io());
        let mut response = instance.router.dispatch(&instance.app, request);
        if let Some(failure) = body.failure() {
            // The handler asked for a body it could not have: answer why, not what it made of it.
            response = Error::from(failure.clone()).into_response();
        }
        let (status, headers, body, error) = response.into_parts();
        // SAFETY: the sink is live for this call; every slice outlives its call.
        unsafe {
            (resp.status)(resp.ctx, status.as_u16());
            for (name, value) in &headers {
                (resp.header)(
                    resp.ctx,
                    RawStr::from_str(name),
                    RawStr::new(value.as_bytes()),
                );
            }
        }
        let streamed = match body {
            // SAFETY: as above.
            Body::Bytes(bytes) => unsafe {
                (resp.body)(resp.ctx, RawStr::new(&bytes));
                Ok(())
            },
            Body::Stream(write) => stream(io, resp, write),
        };
        match (error, streamed) {
            (Some(e), _) => Err(Error::internal(e)),
            (None, Err(e)) => Err(Error::internal(format!("streamed response failed: {e}"))),
            (None, Ok(())) => Ok(()),
        }
    })
}

/// Runs a stream function: through the host's streaming callbacks when it has them, else into
/// memory and then the sink's body (a host older than streaming).
fn stream(
    io: Option<HostIo<'_>>,
    resp: &ResponseSink,
    write: crate::response::StreamFn,
) -> std::io::Result<()> {
    match io {
        Some(io) => {
            io.start_stream()?;
            let mut out = BodyWriter::to_host(io);
            write(&mut out)?;
            std::io::Write::flush(&mut out)
        }
        None => {
            let mut buf = Vec::new();
            let outcome = {
                let mut out = BodyWriter::to_memory(&mut buf);
                write(&mut out).and_then(|()| std::io::Write::flush(&mut out))
            };
            // SAFETY: the sink is live for this call; `buf` outlives the call.
            unsafe { (resp.body)(resp.ctx, RawStr::new(&buf)) };
            outcome
        }
    }
}

/// # Safety
/// `instance` comes from `create` and is not destroyed; `visitor` and `err` are live.
#[doc(hidden)]
pub unsafe extern "C" fn assets<M: ModuleDef>(
    instance: *mut c_void,
    visitor: *const AssetVisitor,
    err: *const ByteSink,
) -> Status {
    // SAFETY: the host passes back the pointer `create` made, still alive, and live sinks.
    let (instance, visitor, err) =
        unsafe { (&*instance.cast::<Instance<M::App>>(), &*visitor, &*err) };
    guarded(err, || {
        // SAFETY: the visitor is live for this call.
        unsafe { instance.assets.list().visit(visitor) };
        Ok(())
    })
}

/// # Safety
/// `instance` comes from `create` and is used by no other call now or later.
#[doc(hidden)]
pub unsafe extern "C" fn destroy<M: ModuleDef>(instance: *mut c_void) {
    // SAFETY: the pointer was made by `Box::into_raw` in `create` and is dropped once.
    let instance = unsafe { Box::from_raw(instance.cast::<Instance<M::App>>()) };
    // A panicking destructor must not unwind into the host.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(instance)));
}
