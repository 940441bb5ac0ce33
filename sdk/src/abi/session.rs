//! The module's side of session access: safe wrappers around the host's session callbacks.
//!
//! Every byte the host returns is written into a sink the module owns (a `Vec<u8>` here), so
//! the module frees what it receives. An atomic update hands the host a trampoline that runs the
//! app's closure inside `catch_unwind`; a panic is carried back across the host call as a value
//! and resumed on this side, never unwound through host frames.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use super::{
    ByteSink, HostApi, RawStr, STATUS_ERROR, STATUS_NOT_FOUND, STATUS_OK, STATUS_PANIC,
    STATUS_UNAVAILABLE, Status,
};

/// An app's step of an atomic update: the current JSON value (if any) to the new one, or
/// `None` to abort.
pub(crate) type UpdateStep<'f> = dyn FnMut(Option<&[u8]>) -> Option<Vec<u8>> + 'f;

/// The longest attribute name a session accepts, in bytes.
pub const MAX_ATTRIBUTE_NAME_LEN: usize = 256;

/// An attribute name a session refuses: empty, longer than [`MAX_ATTRIBUTE_NAME_LEN`] bytes, or
/// starting with `#`, which the stores keep for their own fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidAttributeName {
    name: String,
}

impl InvalidAttributeName {
    /// The refused name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for InvalidAttributeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid attribute name {:?}: 1-{MAX_ATTRIBUTE_NAME_LEN} bytes, not starting with '#'",
            self.name
        )
    }
}

impl std::error::Error for InvalidAttributeName {}

/// Checks an attribute name against the rule both sides of the boundary apply: 1 to
/// [`MAX_ATTRIBUTE_NAME_LEN`] bytes, not starting with `#`.
///
/// ```
/// use baton_sdk::abi::check_attribute_name;
///
/// assert!(check_attribute_name("cart").is_ok());
/// assert!(check_attribute_name("").is_err());
/// assert!(check_attribute_name("#timeout_ms").is_err());
/// assert!(check_attribute_name(&"x".repeat(257)).is_err());
/// ```
///
/// # Errors
/// [`InvalidAttributeName`] for a name outside the rule.
pub fn check_attribute_name(name: &str) -> Result<(), InvalidAttributeName> {
    if name.is_empty() || name.len() > MAX_ATTRIBUTE_NAME_LEN || name.starts_with('#') {
        return Err(InvalidAttributeName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Why a session call failed, as the host reported it.
#[derive(Debug)]
pub(crate) enum SessionFailure {
    /// The store is unreachable right now.
    Unavailable(String),
    /// The host refused or failed the call.
    Failed(String),
}

/// Session access for the request being handled: the host's table and the request context.
#[derive(Clone, Copy)]
pub(crate) struct HostSession<'a> {
    api: &'a HostApi,
    ctx: *mut c_void,
}

impl std::fmt::Debug for HostSession<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostSession")
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The end of the last session field in [`HostApi`]: a host whose table is shorter has none.
const SESSION_FIELDS_END: usize = std::mem::offset_of!(HostApi, session_rotate)
    + std::mem::size_of::<unsafe extern "C" fn(*mut c_void, *const ByteSink) -> Status>();

impl<'a> HostSession<'a> {
    /// Session access for one request, if the host offers it.
    ///
    /// # Safety
    /// `api` must be null or the host's table, alive for `'a`; `ctx` must be null or the context
    /// of the request whose `handle` call lasts for `'a`.
    pub(crate) unsafe fn new(api: *const HostApi, ctx: *mut c_void) -> Option<Self> {
        if api.is_null() || ctx.is_null() {
            return None;
        }
        // SAFETY: the caller guarantees a non-null `api` is live for 'a.
        let api = unsafe { &*api };
        (api.size >= SESSION_FIELDS_END).then_some(HostSession { api, ctx })
    }

    /// Runs one host call with an error sink, mapping its status.
    fn call(
        &self,
        f: impl FnOnce(&HostApi, *mut c_void, &ByteSink) -> Status,
    ) -> Result<bool, SessionFailure> {
        let mut err = Vec::new();
        let status = f(self.api, self.ctx, &ByteSink::for_vec(&mut err));
        match status {
            STATUS_OK => Ok(true),
            STATUS_NOT_FOUND => Ok(false),
            STATUS_UNAVAILABLE => Err(SessionFailure::Unavailable(text(&err))),
            _ => Err(SessionFailure::Failed(text(&err))),
        }
    }

    /// An attribute's JSON value, if present.
    pub(crate) fn get(&self, name: &str) -> Result<Option<Vec<u8>>, SessionFailure> {
        let mut out = Vec::new();
        let found = self.call(|api, ctx, err| {
            // SAFETY: a live host callback with this request's context; the name and both sinks
            // outlive the call.
            unsafe {
                (api.session_get)(
                    ctx,
                    RawStr::from_str(name),
                    &ByteSink::for_vec(&mut out),
                    err,
                )
            }
        })?;
        Ok(found.then_some(out))
    }

    /// Sets an attribute to a JSON value.
    pub(crate) fn set(&self, name: &str, value: &[u8]) -> Result<(), SessionFailure> {
        self.call(|api, ctx, err| {
            // SAFETY: as in `get`.
            unsafe { (api.session_set)(ctx, RawStr::from_str(name), RawStr::new(value), err) }
        })
        .map(drop)
    }

    /// Removes an attribute.
    pub(crate) fn remove(&self, name: &str) -> Result<(), SessionFailure> {
        self.call(|api, ctx, err| {
            // SAFETY: as in `get`.
            unsafe { (api.session_remove)(ctx, RawStr::from_str(name), err) }
        })
        .map(drop)
    }

    /// The attribute names, as a JSON array.
    pub(crate) fn names(&self) -> Result<Vec<u8>, SessionFailure> {
        let mut out = Vec::new();
        self.call(|api, ctx, err| {
            // SAFETY: as in `get`.
            unsafe { (api.session_names)(ctx, &ByteSink::for_vec(&mut out), err) }
        })?;
        Ok(out)
    }

    /// The session id, if the request has a session.
    pub(crate) fn id(&self) -> Result<Option<String>, SessionFailure> {
        let mut out = Vec::new();
        let found = self.call(|api, ctx, err| {
            // SAFETY: as in `get`.
            unsafe { (api.session_id)(ctx, &ByteSink::for_vec(&mut out), err) }
        })?;
        Ok(found.then(|| text(&out)))
    }

    /// Deletes the session.
    pub(crate) fn invalidate(&self) -> Result<(), SessionFailure> {
        self.call(|api, ctx, err| {
            // SAFETY: as in `get`.
            unsafe { (api.session_invalidate)(ctx, err) }
        })
        .map(drop)
    }

    /// Moves the session to a new id.
    pub(crate) fn rotate(&self) -> Result<(), SessionFailure> {
        self.call(|api, ctx, err| {
            // SAFETY: as in `get`.
            unsafe { (api.session_rotate)(ctx, err) }
        })
        .map(drop)
    }

    /// Atomically replaces an attribute with `f(current)`. `f` may run several times; returning
    /// `None` aborts the update. A panic in `f` resumes here, after the host call returned.
    pub(crate) fn update(&self, name: &str, f: &mut UpdateStep<'_>) -> Result<(), SessionFailure> {
        let mut updater = Updater { f, panic: None };
        let result = self.call(|api, ctx, err| {
            // SAFETY: as in `get`; `updater` outlives the call and is only used through
            // `run_updater` during it.
            unsafe {
                (api.session_update)(
                    ctx,
                    RawStr::from_str(name),
                    run_updater,
                    (&raw mut updater).cast(),
                    err,
                )
            }
        });
        if let Some(payload) = updater.panic.take() {
            resume_unwind(payload);
        }
        result.map(drop)
    }
}

struct Updater<'f> {
    f: &'f mut UpdateStep<'f>,
    panic: Option<Box<dyn Any + Send>>,
}

unsafe extern "C" fn run_updater(
    ctx: *mut c_void,
    old: RawStr,
    has_old: bool,
    new: *const ByteSink,
    err: *const ByteSink,
) -> Status {
    // SAFETY: `ctx` is the `Updater` passed to `session_update` by `HostSession::update`, which is
    // still waiting for the host; `old` and both sinks are valid for this call.
    let (updater, old, new, err) = unsafe {
        (
            &mut *ctx.cast::<Updater<'_>>(),
            old.as_bytes(),
            &*new,
            &*err,
        )
    };
    let old = has_old.then_some(old);
    match catch_unwind(AssertUnwindSafe(|| (updater.f)(old))) {
        Ok(Some(value)) => {
            // SAFETY: the host's sink, live for this call.
            unsafe { new.put(&value) };
            STATUS_OK
        }
        Ok(None) => {
            // SAFETY: as above.
            unsafe { err.put(b"update aborted by the app") };
            STATUS_ERROR
        }
        Err(payload) => {
            updater.panic = Some(payload);
            // SAFETY: as above.
            unsafe { err.put(b"update function panicked") };
            STATUS_PANIC
        }
    }
}
