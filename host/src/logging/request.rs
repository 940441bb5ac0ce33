//! The request a thread is working on, for the events logged while it runs.
//!
//! An app request's span (`request`, with `app`, `version`, `method` and `path`) is made the
//! first time an event inside the request needs it, not for every request: most requests log
//! nothing but their access line, which is written without a span, and a span costs more than
//! a whole `hello` handler (its fields formatted into the subscriber's registry when it is
//! made, and an enter and an exit on every poll of the request). Instead, the thread that works
//! on a request — the I/O thread while it polls the request, the worker while the handler runs
//! — names it as its current request ([`working_on`], [`WorkingOn`]), which is cheap, and the
//! host's events in the request path are logged through [`in_request`], which makes the span if
//! need be and logs inside it.

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A request whose span is made when first asked for.
pub(crate) trait LazySpan: Send + Sync {
    /// The request's span, made by the first call.
    fn span(&self) -> &tracing::Span;
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<dyn LazySpan>>> = const { RefCell::new(None) };
}

/// Runs `f` with `request` as this thread's current request, then restores the one before.
pub(crate) fn working_on<R>(request: &Arc<dyn LazySpan>, f: impl FnOnce() -> R) -> R {
    /// Restores the previous request also when `f` unwinds.
    struct Restore(Option<Arc<dyn LazySpan>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT.with_borrow_mut(|current| *current = previous);
        }
    }
    let previous = CURRENT.with_borrow_mut(|current| current.replace(Arc::clone(request)));
    let _restore = Restore(previous);
    f()
}

/// Runs `f` inside the span of this thread's current request, if it has one (making the span
/// if it was not made yet); otherwise just runs `f`.
pub(crate) fn in_request<R>(f: impl FnOnce() -> R) -> R {
    match CURRENT.with_borrow(Clone::clone) {
        Some(request) => request.span().in_scope(f),
        None => f(),
    }
}

pin_project_lite::pin_project! {
    /// A future that makes its request the current request of whichever thread polls it, for
    /// each poll: what `tracing`'s `instrument` does for a span, without making one.
    ///
    /// A named future rather than an `async fn`: an `async fn` keeps its argument and the
    /// future pinned from it side by side, which would double the size of a request's whole
    /// future (moved on every hand-over between hyper's stages).
    #[must_use = "futures do nothing unless polled"]
    pub(crate) struct WorkingOn<F> {
        request: Arc<dyn LazySpan>,
        #[pin]
        future: F,
    }
}

/// `future`, with `request` the current request of the thread that polls it.
pub(crate) fn working_on_future<F: Future>(request: Arc<dyn LazySpan>, future: F) -> WorkingOn<F> {
    WorkingOn { request, future }
}

impl<F: Future> Future for WorkingOn<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let future = this.future;
        working_on(this.request, || future.poll(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::logging::tests::Captured;

    struct Counted {
        span: OnceLock<tracing::Span>,
        made: AtomicUsize,
    }

    impl LazySpan for Counted {
        fn span(&self) -> &tracing::Span {
            self.span.get_or_init(|| {
                self.made.fetch_add(1, Ordering::SeqCst);
                tracing::info_span!(parent: None, "request", app = "hello", path = "/x")
            })
        }
    }

    fn counted() -> Arc<Counted> {
        Arc::new(Counted {
            span: OnceLock::new(),
            made: AtomicUsize::new(0),
        })
    }

    #[test]
    fn a_request_that_logs_nothing_makes_no_span_and_one_that_logs_makes_one() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(captured.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let quiet = counted();
            let as_dyn: Arc<dyn LazySpan> = quiet.clone();
            working_on(&as_dyn, || ());
            assert_eq!(quiet.made.load(Ordering::SeqCst), 0);

            let talkative = counted();
            let as_dyn: Arc<dyn LazySpan> = talkative.clone();
            working_on(&as_dyn, || {
                in_request(|| tracing::info!("first"));
                in_request(|| tracing::warn!("second"));
            });
            assert_eq!(talkative.made.load(Ordering::SeqCst), 1);
            // Outside the request, an event has no span.
            in_request(|| tracing::info!("outside"));
        });
        let text = captured.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].contains(r#"request{app="hello" path="/x"}: "#),
            "{text}"
        );
        assert!(lines[0].ends_with("first"), "{text}");
        assert!(
            lines[1].contains(r#"request{app="hello" path="/x"}: "#),
            "{text}"
        );
        assert!(!lines[2].contains("request{"), "{text}");
    }

    #[test]
    fn the_current_request_is_restored_after_a_nested_one_and_after_a_panic() {
        let outer: Arc<dyn LazySpan> = counted();
        let inner: Arc<dyn LazySpan> = counted();
        let current = || CURRENT.with_borrow(|c| c.as_ref().map(|c| Arc::as_ptr(c).cast::<()>()));
        working_on(&outer, || {
            working_on(&inner, || {
                assert_eq!(current(), Some(Arc::as_ptr(&inner).cast()))
            });
            assert_eq!(current(), Some(Arc::as_ptr(&outer).cast()));
            let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                working_on(&inner, || panic!("handler"));
            }));
            assert!(unwound.is_err());
            assert_eq!(current(), Some(Arc::as_ptr(&outer).cast()));
        });
        assert_eq!(current(), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_future_is_in_its_request_on_every_poll_and_not_between() {
        let request = counted();
        let as_dyn: Arc<dyn LazySpan> = request.clone();
        let in_it = || CURRENT.with_borrow(Option::is_some);
        let polled = working_on_future(as_dyn, async {
            assert!(in_it());
            tokio::task::yield_now().await;
            assert!(in_it());
            7
        });
        let other = async {
            tokio::task::yield_now().await;
            // Another task polled between the request's polls is not in the request.
            assert!(!in_it());
        };
        let (seven, ()) = tokio::join!(polled, other);
        assert_eq!(seven, 7);
        assert!(!in_it());
    }
}
