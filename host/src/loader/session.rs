//! The host's session callbacks in the module's [`HostApi`](baton_sdk::abi::HostApi).
//!
//! Each takes the request context the host put in `RawRequest::ctx`: a pointer to the
//! request's [`RequestSession`], alive for the whole `handle` call. Every callback catches
//! panics (one must never unwind into module frames) and reports failures as a status plus a
//! message written into the module's error sink.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use baton_sdk::abi::{
    ByteSink, RawStr, STATUS_ERROR, STATUS_NOT_FOUND, STATUS_OK, STATUS_PANIC, STATUS_UNAVAILABLE,
    SessionUpdateFn, Status,
};

use crate::session::{AccessError, RequestSession};

/// What a callback answers: found, not found, or an error.
enum Answer {
    Found,
    NotFound,
}

/// Runs one callback body against the request's session and maps its outcome to a status.
///
/// # Safety
/// `req` must be null or the `RequestSession` the host passed as this request's context, and
/// `err` the module's live error sink.
unsafe fn serve(
    req: *mut c_void,
    err: *const ByteSink,
    body: impl FnOnce(&RequestSession) -> Result<Answer, AccessError>,
) -> Status {
    let (status, message) = if req.is_null() {
        (
            STATUS_ERROR,
            "this request has no session context".to_owned(),
        )
    } else {
        // SAFETY: the caller guarantees `req` is this request's live session.
        let session = unsafe { &*req.cast_const().cast::<RequestSession>() };
        match catch_unwind(AssertUnwindSafe(|| body(session))) {
            Ok(Ok(Answer::Found)) => return STATUS_OK,
            Ok(Ok(Answer::NotFound)) => return STATUS_NOT_FOUND,
            Ok(Err(e @ AccessError::Store(_))) => (STATUS_UNAVAILABLE, e.to_string()),
            Ok(Err(e)) => (STATUS_ERROR, e.to_string()),
            Err(_) => (STATUS_PANIC, "the host's session code panicked".to_owned()),
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
        .map_err(|_| AccessError::Invalid("attribute name is not UTF-8".into()))
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
    let mut call_module = |old: Option<&[u8]>| -> Result<Vec<u8>, String> {
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
            _ => Err(String::from_utf8_lossy(&why).into_owned()),
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
                .map_err(|e| AccessError::Invalid(e.to_string()))?;
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
