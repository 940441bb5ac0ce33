//! The module's side of a request's streams: reading the request body and writing a streamed
//! response through the host's 1.1 callbacks, and asking whether the version is draining.
//!
//! Bytes read land in module-owned buffers; bytes written are copied by the host during the
//! call. Failures come back as [`io::Error`]s whose inner error is the sdk's
//! [`RequestError`](crate::RequestError) for body failures, so `?` maps them to their status.

use std::ffi::c_void;
use std::io;

use super::{
    ByteSink, HostApi, RawStr, STATUS_CLOSED, STATUS_OK, STATUS_TIMED_OUT, STATUS_TOO_LARGE, Status,
};
use crate::request::RequestError;

/// A request's host callbacks for streaming, valid during one `handle` call.
#[derive(Clone, Copy)]
pub(crate) struct HostIo<'a> {
    api: &'a HostApi,
    ctx: *mut c_void,
}

impl std::fmt::Debug for HostIo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostIo").finish_non_exhaustive()
    }
}

/// Whether the host's table includes the 1.1 streaming callbacks.
pub(crate) fn host_streams(api: &HostApi) -> bool {
    let end = std::mem::offset_of!(HostApi, draining) + std::mem::size_of::<usize>();
    api.abi_minor >= 1 && api.size >= end
}

impl<'a> HostIo<'a> {
    /// The streaming callbacks of `api` for the request `ctx`, if the host offers them.
    ///
    /// # Safety
    /// `api` must be the host's table (alive for `'a`) and `ctx` the context of the request
    /// being handled, which must outlive every use of the result.
    pub(crate) unsafe fn new(api: *const HostApi, ctx: *mut c_void) -> Option<HostIo<'a>> {
        // SAFETY: the caller guarantees the table is alive for 'a.
        let api = unsafe { api.as_ref()? };
        (host_streams(api) && !ctx.is_null()).then_some(HostIo { api, ctx })
    }

    /// Reads the next part of the body after the part the host passed with the request.
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut read = 0usize;
        let mut message = Vec::new();
        let sink = ByteSink::for_vec(&mut message);
        // SAFETY: `ctx` is this request's context during its `handle` call; `buf` is writable
        // for `buf.len()` bytes; `read` and the sink outlive the call.
        let status = unsafe {
            (self.api.body_read)(self.ctx, buf.as_mut_ptr(), buf.len(), &mut read, &sink)
        };
        match status {
            STATUS_OK => Ok(read.min(buf.len())),
            other => Err(body_error(other, message)),
        }
    }

    /// Sends the response head; the body follows through [`HostIo::write`].
    pub(crate) fn start_stream(&self) -> io::Result<()> {
        let mut message = Vec::new();
        let sink = ByteSink::for_vec(&mut message);
        // SAFETY: as in `read`.
        let status = unsafe { (self.api.response_stream)(self.ctx, &sink) };
        check(status, message)
    }

    /// Sends one part of a streamed response.
    pub(crate) fn write(&self, bytes: &[u8]) -> io::Result<()> {
        let mut message = Vec::new();
        let sink = ByteSink::for_vec(&mut message);
        // SAFETY: as in `read`; `bytes` outlives the call, during which the host copies it.
        let status = unsafe { (self.api.response_write)(self.ctx, RawStr::new(bytes), &sink) };
        check(status, message)
    }

    /// Whether the version stopped taking new requests.
    pub(crate) fn draining(&self) -> bool {
        // SAFETY: as in `read`.
        unsafe { (self.api.draining)(self.ctx) }
    }
}

fn text(message: Vec<u8>) -> String {
    String::from_utf8_lossy(&message).into_owned()
}

fn body_error(status: Status, message: Vec<u8>) -> io::Error {
    match status {
        STATUS_TOO_LARGE => io::Error::new(io::ErrorKind::FileTooLarge, RequestError::BodyTooLarge),
        STATUS_TIMED_OUT => io::Error::new(io::ErrorKind::TimedOut, RequestError::BodyTimedOut),
        STATUS_CLOSED => io::Error::new(
            io::ErrorKind::ConnectionAborted,
            RequestError::BodyUnreadable(text(message)),
        ),
        _ => io::Error::other(RequestError::BodyUnreadable(text(message))),
    }
}

fn check(status: Status, message: Vec<u8>) -> io::Result<()> {
    match status {
        STATUS_OK => Ok(()),
        STATUS_CLOSED => Err(io::Error::new(io::ErrorKind::BrokenPipe, text(message))),
        _ => Err(io::Error::other(text(message))),
    }
}
