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
    ByteSink, HostApi, HostSession, RawHeaders, RawRequest, RawStr, ResponseSink, STATUS_ERROR,
    STATUS_OK, STATUS_PANIC, Status,
};
use crate::app::{App, InitContext};
use crate::error::Error;
use crate::request::Request;
use crate::router::Router;

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
    /// The host's services, alive until `destroy` returns.
    host: *const HostApi,
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
        let instance = Box::new(Instance {
            app,
            router: M::App::router(),
            host,
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
        // outlives `request`; the host table lives until `destroy`.
        let request = unsafe {
            let headers = if raw.headers_len == 0 {
                &[][..]
            } else {
                std::slice::from_raw_parts(raw.headers, raw.headers_len)
            };
            Request::from_host(
                raw.method.as_bytes(),
                raw.path.as_bytes(),
                raw.query.as_bytes(),
                RawHeaders { raw: headers },
                raw.body.as_bytes(),
                HostSession::new(instance.host, raw.ctx),
            )
        };
        let response = instance.router.dispatch(&instance.app, request);

        // SAFETY: the sink is live for this call; every slice outlives its call.
        unsafe {
            (resp.status)(resp.ctx, response.status().as_u16());
            for (name, value) in response.headers() {
                (resp.header)(
                    resp.ctx,
                    RawStr::from_str(name),
                    RawStr::new(value.as_bytes()),
                );
            }
            (resp.body)(resp.ctx, RawStr::new(response.body()));
        }
        response.error().map_or(Ok(()), |e| Err(Error::internal(e)))
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
