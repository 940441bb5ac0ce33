//! Bodies on the way in and out: a request body whose reader gives up when the client stops
//! sending, the body of every response (bytes in one piece, or a handler's stream), and a
//! response body that marks the end of its request on its connection.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

use super::conn::RequestGuard;
use crate::deploy::{StreamAbort, StreamBody};

/// The body of every response the host sends: bytes in one piece, or what a handler streams.
#[derive(Debug)]
pub(crate) struct Body(Inner);

#[derive(Debug)]
enum Inner {
    Full(Option<Bytes>),
    Stream(StreamBody),
}

impl Body {
    /// A body of these bytes.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        Body(Inner::Full((!bytes.is_empty()).then_some(bytes)))
    }

    /// A handler's streamed body.
    pub(crate) fn stream(stream: StreamBody) -> Body {
        Body(Inner::Stream(stream))
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = StreamAbort;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamAbort>>> {
        match &mut self.get_mut().0 {
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Stream(stream) => stream
                .poll_chunk(cx)
                .map(|chunk| chunk.map(|c| c.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.0, Inner::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Inner::Stream(_) => SizeHint::default(),
        }
    }
}

/// Why reading a request body failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum BodyError {
    /// The connection failed or the client sent a malformed body.
    #[error("reading the request body failed: {0}")]
    Read(#[source] hyper::Error),
    /// The client sent nothing more for the body read timeout.
    #[error("the client sent no body data for {} ms", .0.as_millis())]
    Stalled(Duration),
}

impl BodyError {
    /// Whether the client stopped sending (a 408 is the answer).
    pub(crate) fn is_timeout(&self) -> bool {
        matches!(self, BodyError::Stalled(_))
    }
}

/// The body of a request as handlers see it: hyper's body, failing with
/// [`BodyError::Stalled`] when no data arrives for the body read timeout while it is read.
#[derive(Debug)]
pub(crate) struct RequestBody {
    inner: Incoming,
    timeout: Duration,
    stall: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl RequestBody {
    pub(super) fn new(inner: Incoming, timeout: Duration) -> RequestBody {
        RequestBody {
            inner,
            timeout,
            stall: None,
            armed: false,
        }
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                Poll::Ready(frame.map(|f| f.map_err(BodyError::Read)))
            }
            Poll::Pending => {
                // The clock runs only while the reader waits for the client.
                if !this.armed {
                    let deadline = tokio::time::Instant::now() + this.timeout;
                    match &mut this.stall {
                        Some(stall) => stall.as_mut().reset(deadline),
                        None => this.stall = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                    this.armed = true;
                }
                match this.stall.as_mut().map(|stall| stall.as_mut().poll(cx)) {
                    Some(Poll::Ready(())) => {
                        Poll::Ready(Some(Err(BodyError::Stalled(this.timeout))))
                    }
                    _ => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that ends its request on the connection when dropped (sent or abandoned).
#[derive(Debug)]
pub(super) struct TrackedBody<B> {
    inner: B,
    _request: RequestGuard,
}

impl<B> TrackedBody<B> {
    pub(super) fn new(inner: B, request: RequestGuard) -> TrackedBody<B> {
        TrackedBody {
            inner,
            _request: request,
        }
    }
}

impl<B: HttpBody + Unpin> HttpBody for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
