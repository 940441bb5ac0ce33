//! The host's session callbacks in the module's [`HostApi`](baton_sdk::abi::HostApi), and the
//! [`SessionAccess`] trait they call through.
//!
//! The loader does not know how sessions are kept: it defines what its callbacks need of one
//! request's session ([`SessionAccess`], failing with an [`AccessError`]) and the session module
//! implements it. Each callback takes the request context the host put in `RawRequest::ctx`
//! (the call's `RequestContext`, holding the request's `&dyn SessionAccess`), alive for the
//! whole `handle` call. Every
//! callback catches panics (one must never unwind into module frames) and reports failures as a
//! status plus a message written into the module's error sink.

use std::error::Error as StdError;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::callbacks::RequestContext;
use baton_sdk::abi::{
    ByteSink, RawStr, STATUS_ERROR, STATUS_NOT_FOUND, STATUS_OK, STATUS_PANIC, STATUS_UNAVAILABLE,
    SessionUpdateFn, Status,
};

/// Why a session call failed; the variant decides the status the module gets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// The session store cannot answer now (down, too slow, or full): `STATUS_UNAVAILABLE`, and
    /// the app sees `SessionError::Unavailable`.
    #[error(transparent)]
    Unavailable(Box<dyn StdError + Send + Sync>),
    /// The module passed an attribute name or value the session refuses: `STATUS_ERROR`.
    #[error(transparent)]
    Invalid(Box<dyn StdError + Send + Sync>),
    /// The module's update function aborted the update, with the module's reason.
    #[error("{0}")]
    Aborted(String),
}

impl AccessError {
    /// Whether the store could not answer (as opposed to a refused or aborted call).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, AccessError::Unavailable(_))
    }
}

/// An atomic update's step: the current JSON value (if any) to the new one, or why not.
pub type UpdateFn<'f> = dyn FnMut(Option<&[u8]>) -> Result<Vec<u8>, AccessError> + 'f;

/// One request's session, as the module's session callbacks use it. Attribute values are JSON
/// texts; see [`HostApi`](baton_sdk::abi::HostApi) for what each call promises the module.
pub trait SessionAccess: std::fmt::Debug {
    /// An attribute's JSON text, if the session and the attribute exist.
    ///
    /// # Errors
    /// An invalid name, or a session that cannot be loaded.
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, AccessError>;

    /// Sets an attribute when the request ends; creates the session if there is none.
    ///
    /// # Errors
    /// An invalid name or value, or a session that cannot be loaded.
    fn set(&self, name: &str, value: Vec<u8>) -> Result<(), AccessError>;

    /// Removes an attribute when the request ends.
    ///
    /// # Errors
    /// An invalid name, or a session that cannot be loaded.
    fn remove(&self, name: &str) -> Result<(), AccessError>;

    /// Atomically replaces an attribute with `f(current)`, in the store, now. `f` runs on the
    /// calling thread without any lock held, possibly several times.
    ///
    /// # Errors
    /// An invalid name or new value, `f`'s abort, or the store's error (nothing is changed).
    fn update(&self, name: &str, f: &mut UpdateFn<'_>) -> Result<(), AccessError>;

    /// The attribute names, sorted.
    ///
    /// # Errors
    /// A session that cannot be loaded.
    fn names(&self) -> Result<Vec<String>, AccessError>;

    /// The session id, if there is a session.
    ///
    /// # Errors
    /// A session that cannot be loaded.
    fn id(&self) -> Result<Option<String>, AccessError>;

    /// Deletes the session now; the response expires the cookie.
    ///
    /// # Errors
    /// The store's error; the session is then unchanged.
    fn invalidate(&self) -> Result<(), AccessError>;

    /// Moves the session to a new id now; the response sends the new cookie.
    ///
    /// # Errors
    /// The store's error; the session then keeps its id.
    fn rotate(&self) -> Result<(), AccessError>;
}

/// A module-provided attribute name that is not UTF-8.
#[derive(Debug, thiserror::Error)]
#[error("attribute name is not UTF-8")]
struct NameNotUtf8(#[source] std::str::Utf8Error);

/// What a callback answers: found, not found, or an error.
enum Answer {
    Found,
    NotFound,
}

/// Runs one callback body against the request's session and maps its outcome to a status.
///
/// # Safety
/// `req` must be null or point to the `RequestContext` the host passed as this request's
/// context, and `err` must be the module's live error sink.
unsafe fn serve(
    req: *mut c_void,
    err: *const ByteSink,
    body: impl FnOnce(&dyn SessionAccess) -> Result<Answer, AccessError>,
) -> Status {
    let (status, message) = if req.is_null() {
        (
            STATUS_ERROR,
            "this request has no session context".to_owned(),
        )
    } else {
        // SAFETY: the caller guarantees `req` points to this request's live context.
        let ctx = unsafe { &*req.cast_const().cast::<RequestContext<'_>>() };
        match ctx
            .session
            .map(|session| catch_unwind(AssertUnwindSafe(|| body(session))))
        {
            None => (
                STATUS_ERROR,
                "this request has no session context".to_owned(),
            ),
            Some(outcome) => match outcome {
                Ok(Ok(Answer::Found)) => return STATUS_OK,
                Ok(Ok(Answer::NotFound)) => return STATUS_NOT_FOUND,
                Ok(Err(e)) if e.is_unavailable() => (STATUS_UNAVAILABLE, e.to_string()),
                Ok(Err(e)) => (STATUS_ERROR, e.to_string()),
                Err(_) => (STATUS_PANIC, "the host's session code panicked".to_owned()),
            },
        }
    };
    if !err.is_null() {
        // SAFETY: the module's sink, live for this call.
        unsafe { (*err).put(message.as_bytes()) };
    }
    status
}

/// Reads a module-provided string.
///
/// # Safety
/// `s` must be valid for the current call.
unsafe fn name<'a>(s: RawStr) -> Result<&'a str, AccessError> {
    // SAFETY: the caller guarantees the bytes are valid now.
    std::str::from_utf8(unsafe { s.as_bytes() })
        .map_err(|e| AccessError::Invalid(Box::new(NameNotUtf8(e))))
}

pub(super) unsafe extern "C" fn session_get(
    req: *mut c_void,
    attribute: RawStr,
    out: *const ByteSink,
    err: *const ByteSink,
) -> Status {
    // SAFETY: the module passes this request's context, a name valid for the call and live
    // sinks.
    unsafe {
        serve(req, err, |session| match session.get(name(attribute)?)? {
            Some(value) => {
                (*out).put(&value);
                Ok(Answer::Found)
            }
            None => Ok(Answer::NotFound),
        })
    }
}

pub(super) unsafe extern "C" fn session_set(
    req: *mut c_void,
    attribute: RawStr,
    value: RawStr,
    err: *const ByteSink,
) -> Status {
    // SAFETY: as in `session_get`; `value` is valid for the call.
    unsafe {
        serve(req, err, |session| {
            session.set(name(attribute)?, value.as_bytes().to_vec())?;
            Ok(Answer::Found)
        })
    }
}

pub(super) unsafe extern "C" fn session_remove(
    req: *mut c_void,
    attribute: RawStr,
    err: *const ByteSink,
) -> Status {
    // SAFETY: as in `session_get`.
    unsafe {
        serve(req, err, |session| {
            session.remove(name(attribute)?)?;
            Ok(Answer::Found)
        })
    }
}

pub(super) unsafe extern "C" fn session_update(
    req: *mut c_void,
    attribute: RawStr,
    update: SessionUpdateFn,
    update_ctx: *mut c_void,
    err: *const ByteSink,
) -> Status {
    let mut call_module = |old: Option<&[u8]>| -> Result<Vec<u8>, AccessError> {
        let (mut new, mut why) = (Vec::new(), Vec::new());
        let old_raw = old.map_or(RawStr::EMPTY, RawStr::new);
        // SAFETY: the module's update function with its own context, both valid during the
        // module's `session_update` call that we are in; the slice and sinks outlive the call.
        let status = unsafe {
            update(
                update_ctx,
                old_raw,
                old.is_some(),
                &ByteSink::for_vec(&mut new),
                &ByteSink::for_vec(&mut why),
            )
        };
        match status {
            STATUS_OK => Ok(new),
            _ => Err(AccessError::Aborted(
                String::from_utf8_lossy(&why).into_owned(),
            )),
        }
    };
    // SAFETY: as in `session_get`.
    unsafe {
        serve(req, err, |session| {
            session.update(name(attribute)?, &mut call_module)?;
            Ok(Answer::Found)
        })
    }
}

pub(super) unsafe extern "C" fn session_names(
    req: *mut c_void,
    out: *const ByteSink,
    err: *const ByteSink,
) -> Status {
    // SAFETY: as in `session_get`.
    unsafe {
        serve(req, err, |session| {
            let names = serde_json::to_vec(&session.names()?)
                .map_err(|e| AccessError::Invalid(Box::new(e)))?;
            (*out).put(&names);
            Ok(Answer::Found)
        })
    }
}

pub(super) unsafe extern "C" fn session_id(
    req: *mut c_void,
    out: *const ByteSink,
    err: *const ByteSink,
) -> Status {
    // SAFETY: as in `session_get`.
    unsafe {
        serve(req, err, |session| match session.id()? {
            Some(id) => {
                (*out).put(id.as_bytes());
                Ok(Answer::Found)
            }
            None => Ok(Answer::NotFound),
        })
    }
}

pub(super) unsafe extern "C" fn session_invalidate(
    req: *mut c_void,
    err: *const ByteSink,
) -> Status {
    // SAFETY: as in `session_get`.
    unsafe {
        serve(req, err, |session| {
            session.invalidate()?;
            Ok(Answer::Found)
        })
    }
}

pub(super) unsafe extern "C" fn session_rotate(req: *mut c_void, err: *const ByteSink) -> Status {
    // SAFETY: as in `session_get`.
    unsafe {
        serve(req, err, |session| {
            session.rotate()?;
            Ok(Answer::Found)
        })
    }
}
