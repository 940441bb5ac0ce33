//! Request bodies for tests that stream: made as they are sent, never held whole.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// A body of `len` bytes made as it is sent, in 64 KiB frames; `declared` says whether its
/// length is announced (`Content-Length`) or not (chunked).
pub struct Generated {
    left: u64,
    declared: bool,
    chunk: Bytes,
}

impl Generated {
    pub fn new(len: u64, declared: bool) -> Generated {
        Generated {
            left: len,
            declared,
            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
        }
    }
}

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let take = this.left.min(this.chunk.len() as u64);
        this.left -= take;
        Poll::Ready(Some(Ok(Frame::data(this.chunk.slice(..take as usize)))))
    }

    fn size_hint(&self) -> SizeHint {
        if self.declared {
            SizeHint::with_exact(self.left)
        } else {
            SizeHint::default()
        }
    }
}
