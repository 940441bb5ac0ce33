//! The module boundary: the `#[repr(C)]` types and `extern "C"` signatures shared by the host
//! and every module.
//!
//! Host and module are compiled separately, possibly by different compilers, so nothing with an
//! unstable layout crosses: only these structs, plain integers and borrowed `(ptr, len)` byte
//! slices. Whoever allocates frees: a module writes its response and its error messages through
//! sinks the host provides, so the host owns those bytes; the host answers session calls through
//! sinks the module provides, so the module owns those.
//!
//! A module exports one symbol, [`ENTRY_SYMBOL`], of type [`EntryFn`]. It returns a
//! [`ModuleDescriptor`] whose first four fields ([`DescriptorHeader`]) never change: the host reads
//! them first and refuses a module whose magic or ABI major differs, or whose descriptor is
//! shorter than the host needs. Later minor versions only append fields at the end of the
//! descriptor and of [`HostApi`], whose `size` says how much of it the other side can read.
//!
//! App authors never touch this module: [`export!`](crate::export) generates all of it.
#![allow(unsafe_code)]

use std::ffi::c_void;

pub(crate) mod assets;
mod glue;
mod io;
mod log;
mod session;

#[doc(hidden)]
pub(crate) use assets::AssetList;
pub use assets::asset_hash;
#[doc(hidden)]
pub use glue::{ModuleDef, assets, create, destroy, handle, shutdown, warmup};
pub(crate) use io::HostIo;
pub(crate) use session::{HostSession, SessionFailure, UpdateStep};
pub use session::{InvalidAttributeName, MAX_ATTRIBUTE_NAME_LEN, check_attribute_name};

/// First eight bytes of every descriptor: `BATONMOD` in ASCII.
pub const MAGIC: u64 = u64::from_be_bytes(*b"BATONMOD");
/// ABI major version: a module with another major is refused.
pub const ABI_MAJOR: u32 = 1;
/// ABI minor version: fields appended in a newer minor are ignored by an older peer.
///
/// - 1.0: the first boundary.
/// - 1.1: streaming (request body reads and response writes through [`HostApi`], whether the
///   version is draining), the request's mount, addresses and scheme appended to [`RawRequest`],
///   and embedded static assets listed through [`ModuleDescriptor::assets`].
pub const ABI_MINOR: u32 = 1;
/// Name of the symbol every module exports.
pub const ENTRY_SYMBOL: &str = "baton_module";
/// Version of this sdk crate, recorded in every module built with it.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Version of the compiler that built this sdk (and so the module), for diagnostics.
pub const RUSTC_VERSION: &str = env!("BATON_SDK_RUSTC_VERSION");

/// Result code of every boundary call.
pub type Status = i32;
/// The call succeeded.
pub const STATUS_OK: Status = 0;
/// The call failed; a message was written to the error sink.
pub const STATUS_ERROR: Status = 1;
/// The call panicked; the panic was caught and its message written to the error sink.
pub const STATUS_PANIC: Status = 2;
/// A looked-up item does not exist.
pub const STATUS_NOT_FOUND: Status = 3;
/// A host service (such as the session store) is unavailable right now.
pub const STATUS_UNAVAILABLE: Status = 4;
/// The request body is larger than the app's limit (since 1.1).
pub const STATUS_TOO_LARGE: Status = 5;
/// The client is gone, or the response may no longer be written (since 1.1).
pub const STATUS_CLOSED: Status = 6;
/// The client sent no body data for the host's body read timeout (since 1.1).
pub const STATUS_TIMED_OUT: Status = 7;

/// Log levels as numbers, most severe first.
pub const LEVEL_ERROR: u32 = 1;
/// Warning level.
pub const LEVEL_WARN: u32 = 2;
/// Info level.
pub const LEVEL_INFO: u32 = 3;
/// Debug level.
pub const LEVEL_DEBUG: u32 = 4;
/// Trace level.
pub const LEVEL_TRACE: u32 = 5;

/// A borrowed byte slice; valid only for the duration of the call that passes it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawStr {
    /// First byte; may dangle when `len` is 0.
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl RawStr {
    /// An empty slice.
    pub const EMPTY: RawStr = RawStr {
        ptr: std::ptr::NonNull::<u8>::dangling().as_ptr(),
        len: 0,
    };

    /// Borrows a byte slice.
    pub const fn new(bytes: &[u8]) -> Self {
        RawStr {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// Borrows a string.
    pub const fn from_str(s: &str) -> Self {
        Self::new(s.as_bytes())
    }

    /// Views the bytes.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes that stay valid and unchanged for `'a`.
    pub unsafe fn as_bytes<'a>(self) -> &'a [u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the caller guarantees `ptr..ptr+len` is readable for 'a.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// A destination for bytes owned by the side that provides it.
#[repr(C)]
#[derive(Debug)]
pub struct ByteSink {
    /// Opaque context of the owner.
    pub ctx: *mut c_void,
    /// Appends bytes; may be called several times.
    pub write: unsafe extern "C" fn(ctx: *mut c_void, bytes: RawStr),
}

/// Appends to the `Vec<u8>` a sink made by [`ByteSink::for_vec`] points at.
unsafe extern "C" fn append_to_vec(ctx: *mut c_void, bytes: RawStr) {
    // SAFETY: `ctx` is the `Vec<u8>` of a sink made by `ByteSink::for_vec`, which its maker
    // keeps alive and otherwise untouched while the sink is in use; `bytes` is valid for this
    // call.
    unsafe { (*ctx.cast::<Vec<u8>>()).extend_from_slice(bytes.as_bytes()) }
}

impl ByteSink {
    /// A sink that appends to `buf`: how either side hands the other a place for bytes it will
    /// own.
    ///
    /// The sink holds a raw pointer to `buf`, not a borrow: it must not be written once `buf`
    /// is moved or dropped, nor while `buf` is used otherwise. Writing is `unsafe` (through
    /// [`ByteSink::put`] or `write`), and that is where the caller answers for it.
    ///
    /// ```
    /// use baton_sdk::abi::ByteSink;
    ///
    /// let mut buf = Vec::new();
    /// let sink = ByteSink::for_vec(&mut buf);
    /// // SAFETY: `buf` outlives the sink and is not touched while it is written.
    /// unsafe { sink.put(b"hello") };
    /// assert_eq!(buf, b"hello");
    /// ```
    pub fn for_vec(buf: &mut Vec<u8>) -> ByteSink {
        ByteSink {
            ctx: std::ptr::from_mut(buf).cast(),
            write: append_to_vec,
        }
    }

    /// Writes `bytes` into the sink.
    ///
    /// # Safety
    /// `self` must be a live sink provided by the other side for the current call.
    pub unsafe fn put(&self, bytes: &[u8]) {
        // SAFETY: the caller guarantees the sink is live; the slice outlives the call.
        unsafe { (self.write)(self.ctx, RawStr::new(bytes)) }
    }
}

/// Where a module writes its response; the host owns every byte written.
#[repr(C)]
#[derive(Debug)]
pub struct ResponseSink {
    /// Opaque host context.
    pub ctx: *mut c_void,
    /// Sets the status code.
    pub status: unsafe extern "C" fn(ctx: *mut c_void, status: u16),
    /// Appends a header.
    pub header: unsafe extern "C" fn(ctx: *mut c_void, name: RawStr, value: RawStr),
    /// Appends body bytes.
    pub body: unsafe extern "C" fn(ctx: *mut c_void, bytes: RawStr),
}

/// One request header; names are lower case.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawHeader {
    /// Header name, lower case.
    pub name: RawStr,
    /// Header value, raw bytes.
    pub value: RawStr,
}

/// One request, borrowed from the host for the duration of a `handle` call.
#[repr(C)]
#[derive(Debug)]
pub struct RawRequest {
    /// Method, e.g. `GET`.
    pub method: RawStr,
    /// Path relative to the app's mount, always starting with `/`, still percent-encoded.
    pub path: RawStr,
    /// Query string without the `?`; empty when absent.
    pub query: RawStr,
    /// Headers in arrival order.
    pub headers: *const RawHeader,
    /// Number of headers.
    pub headers_len: usize,
    /// The request body: all of it, or (since 1.1, when `body_complete` is false) its first
    /// part, the rest to be read with [`HostApi::body_read`].
    pub body: RawStr,
    /// Host context for request-scoped services in [`HostApi`].
    pub ctx: *mut c_void,
    // Since 1.1: read only when the host's `HostApi::abi_minor` is at least 1.
    /// Where the app is mounted, e.g. `/notes` (`/` for an app mounted at the root).
    pub mount: RawStr,
    /// The TCP peer, as `ip:port` text (IPv6 in brackets); empty if unknown.
    pub peer_addr: RawStr,
    /// The client's IP address as text: the peer, or the address a trusted proxy forwarded.
    pub client_addr: RawStr,
    /// `http` or `https`, as the client used it (a trusted proxy's forwarded scheme included).
    pub scheme: RawStr,
    /// Whether `body` holds the whole body.
    pub body_complete: bool,
}

/// Services the host offers a module, passed to `create` and valid until `destroy` returns.
#[repr(C)]
#[derive(Debug)]
pub struct HostApi {
    /// Size of this struct as the host compiled it; fields past it do not exist.
    pub size: usize,
    /// The host's ABI minor version.
    pub abi_minor: u32,
    /// Opaque host context for the module-wide services below.
    pub ctx: *const c_void,
    /// Whether an event at this level would be recorded.
    pub log_enabled: unsafe extern "C" fn(ctx: *const c_void, level: u32) -> bool,
    /// Records a log event under the app's name and version.
    pub log: unsafe extern "C" fn(ctx: *const c_void, level: u32, target: RawStr, message: RawStr),

    // Session access. Every call takes the request context `RawRequest::ctx` of the request being
    // handled, is valid only during that request's `handle` call, and reports failures as
    // `STATUS_UNAVAILABLE` (the store is unreachable) or `STATUS_ERROR`, with a message in `err`.
    // Attribute values are JSON texts.
    /// Reads an attribute into `out`; `STATUS_NOT_FOUND` if the session or attribute is absent.
    pub session_get: unsafe extern "C" fn(
        req: *mut c_void,
        name: RawStr,
        out: *const ByteSink,
        err: *const ByteSink,
    ) -> Status,
    /// Sets an attribute; written to the store when the request ends. Creates the session (and
    /// its cookie) if the request has none.
    pub session_set: unsafe extern "C" fn(
        req: *mut c_void,
        name: RawStr,
        value: RawStr,
        err: *const ByteSink,
    ) -> Status,
    /// Removes an attribute; written to the store when the request ends.
    pub session_remove:
        unsafe extern "C" fn(req: *mut c_void, name: RawStr, err: *const ByteSink) -> Status,
    /// Atomically replaces an attribute with what `update` computes from its current value, in
    /// the store, now. The host may call `update` several times (when another request changed
    /// the attribute meanwhile); only the last result is stored. Creates the session if needed.
    pub session_update: unsafe extern "C" fn(
        req: *mut c_void,
        name: RawStr,
        update: SessionUpdateFn,
        update_ctx: *mut c_void,
        err: *const ByteSink,
    ) -> Status,
    /// Writes the attribute names as a JSON array of strings into `out`.
    pub session_names: unsafe extern "C" fn(
        req: *mut c_void,
        out: *const ByteSink,
        err: *const ByteSink,
    ) -> Status,
    /// Writes the session id into `out`; `STATUS_NOT_FOUND` if the request has no session.
    pub session_id: unsafe extern "C" fn(
        req: *mut c_void,
        out: *const ByteSink,
        err: *const ByteSink,
    ) -> Status,
    /// Deletes the session from the store now and expires its cookie.
    pub session_invalidate: unsafe extern "C" fn(req: *mut c_void, err: *const ByteSink) -> Status,
    /// Moves the session to a new id now (attributes kept, old id gone) and sends the new cookie.
    /// Does nothing when the request has no session.
    pub session_rotate: unsafe extern "C" fn(req: *mut c_void, err: *const ByteSink) -> Status,

    // Since 1.1: present only when `size` covers them. Each takes the request context and is
    // valid only during that request's `handle` call, on the thread that runs it.
    /// Reads the next part of the request body (after the part in `RawRequest::body`) into
    /// `buf` (`cap` bytes, module-owned), blocking until some arrives; the count goes to `read`,
    /// 0 at the end of the body. Fails with [`STATUS_TOO_LARGE`] past the app's body limit,
    /// [`STATUS_TIMED_OUT`] when the client stalls, [`STATUS_CLOSED`] or [`STATUS_ERROR`] when
    /// the body cannot be read; a message goes to `err`.
    pub body_read: unsafe extern "C" fn(
        req: *mut c_void,
        buf: *mut u8,
        cap: usize,
        read: *mut usize,
        err: *const ByteSink,
    ) -> Status,
    /// Sends the status and headers set so far on the response sink and turns the response into
    /// a stream: its body is what `response_write` sends from now on; the sink's `body` must not
    /// be used afterwards. Session changes are stored first (the session cookie goes with the
    /// headers).
    pub response_stream: unsafe extern "C" fn(req: *mut c_void, err: *const ByteSink) -> Status,
    /// Sends a part of a streamed response, blocking while the client is slow to take it.
    /// [`STATUS_CLOSED`] when the client is gone, the client took nothing for the host's send
    /// timeout, or the version's drain deadline passed: the handler should return.
    pub response_write:
        unsafe extern "C" fn(req: *mut c_void, bytes: RawStr, err: *const ByteSink) -> Status,
    /// Whether the version handling the request stopped taking new requests (a newer version
    /// took over, or the host is stopping): a long response should end soon, and a client that
    /// reconnects reaches the new version.
    pub draining: unsafe extern "C" fn(req: *mut c_void) -> bool,
}

/// A module's pure function from an attribute's current JSON value to its new one, for
/// [`HostApi::session_update`].
///
/// `old` is the current value, valid for the call; `has_old` is false when the attribute is
/// absent. The function writes the new JSON value into `new` and returns [`STATUS_OK`], or
/// returns another status to abort the update (with a message in `err`).
pub type SessionUpdateFn = unsafe extern "C" fn(
    ctx: *mut c_void,
    old: RawStr,
    has_old: bool,
    new: *const ByteSink,
    err: *const ByteSink,
) -> Status;

/// Entry point signature.
pub type EntryFn = unsafe extern "C" fn() -> *const ModuleDescriptor;
/// Builds an app instance from its JSON config; writes the instance pointer to `out`.
pub type CreateFn = unsafe extern "C" fn(
    host: *const HostApi,
    config: RawStr,
    out: *mut *mut c_void,
    err: *const ByteSink,
) -> Status;
/// Runs an instance hook (`warmup`, `shutdown`).
pub type HookFn = unsafe extern "C" fn(instance: *mut c_void, err: *const ByteSink) -> Status;
/// Handles one request; the response goes to `resp`, any error text to `err`.
pub type HandleFn = unsafe extern "C" fn(
    instance: *mut c_void,
    req: *const RawRequest,
    resp: *const ResponseSink,
    err: *const ByteSink,
) -> Status;
/// Frees an instance made by `create`.
pub type DestroyFn = unsafe extern "C" fn(instance: *mut c_void);
/// Lists the instance's embedded static assets to `visitor`, one call per file (since 1.1).
pub type AssetsFn = unsafe extern "C" fn(
    instance: *mut c_void,
    visitor: *const AssetVisitor,
    err: *const ByteSink,
) -> Status;

/// One embedded file, borrowed for the duration of an [`AssetVisitor`] call; its bytes live in
/// the module's static data.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawAsset {
    /// Path relative to the app's mount, e.g. `/static/app.css`.
    pub path: RawStr,
    /// The file's contents.
    pub bytes: RawStr,
    /// The module's content hash of `bytes` as hex text ([`asset_hash`]).
    pub hash: RawStr,
    /// Modification time as embedded, in seconds since the Unix epoch; 0 when unknown.
    pub modified_unix_secs: u64,
}

/// Where a module lists its assets; the host copies what it needs during the call.
#[repr(C)]
#[derive(Debug)]
pub struct AssetVisitor {
    /// Opaque host context.
    pub ctx: *mut c_void,
    /// Receives one file.
    pub visit: unsafe extern "C" fn(ctx: *mut c_void, asset: *const RawAsset),
}

/// The fields every ABI version starts with, in every major version; the host reads only these
/// until they check out.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DescriptorHeader {
    /// Must equal [`MAGIC`].
    pub magic: u64,
    /// ABI major version of the module.
    pub abi_major: u32,
    /// ABI minor version of the module.
    pub abi_minor: u32,
    /// `size_of::<ModuleDescriptor>()` as the module compiled it.
    pub size: usize,
    /// Version of `baton-sdk` the module was built with, so that even a module of another ABI
    /// major can be named precisely.
    pub sdk_version: RawStr,
}

/// What a module's entry symbol returns: identity and function table.
#[repr(C)]
#[derive(Debug)]
pub struct ModuleDescriptor {
    /// Magic, ABI version and size.
    pub header: DescriptorHeader,
    /// App name, e.g. `hello`.
    pub app_name: RawStr,
    /// App version, e.g. `1.2.0`.
    pub app_version: RawStr,
    /// Version of the compiler that built the module.
    pub rustc_version: RawStr,
    /// Builds an instance.
    pub create: CreateFn,
    /// Runs the app's warm-up hook.
    pub warmup: HookFn,
    /// Handles one request.
    pub handle: HandleFn,
    /// Runs the app's shutdown hook.
    pub shutdown: HookFn,
    /// Frees an instance.
    pub destroy: DestroyFn,
    /// Lists the embedded static assets (since 1.1).
    pub assets: AssetsFn,
}

// SAFETY: a descriptor only holds pointers to immutable 'static data and functions.
unsafe impl Sync for ModuleDescriptor {}

impl ModuleDescriptor {
    /// The descriptor for the module defined by `M`; used by [`export!`](crate::export).
    #[doc(hidden)]
    pub const fn new<M: ModuleDef>() -> Self {
        ModuleDescriptor {
            header: DescriptorHeader {
                magic: MAGIC,
                abi_major: ABI_MAJOR,
                abi_minor: ABI_MINOR,
                size: std::mem::size_of::<ModuleDescriptor>(),
                sdk_version: RawStr::from_str(SDK_VERSION),
            },
            app_name: RawStr::from_str(M::NAME),
            app_version: RawStr::from_str(M::VERSION),
            rustc_version: RawStr::from_str(RUSTC_VERSION),
            create: create::<M>,
            warmup: warmup::<M>,
            handle: handle::<M>,
            shutdown: shutdown::<M>,
            destroy: destroy::<M>,
            assets: assets::<M>,
        }
    }
}

/// Request headers borrowed from the host, safe to read for `'a`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawHeaders<'a> {
    raw: &'a [RawHeader],
}

impl<'a> RawHeaders<'a> {
    /// (name, value) pairs as bytes.
    pub(crate) fn iter(self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        // SAFETY: `RawHeaders` is only built by `glue::handle` from a request whose slices the
        // host keeps valid for the whole call, which outlives 'a.
        self.raw
            .iter()
            .map(|h| unsafe { (h.name.as_bytes(), h.value.as_bytes()) })
    }
}
