//! Middleware: code that runs around handlers, for what many routes share (authentication,
//! headers, logging).
//!
//! A *layer* is a function of the app, the request and [`Next`], the rest of the chain. It may
//! answer by itself without calling [`Next::run`] (a rejected login), change what the inner
//! handler returned (an added header), or both. [`Router::layer`](crate::Router::layer) wraps
//! every route added before it, the fallback and the router's own 404 and 405 answers;
//! [`Router::route_layer`](crate::Router::route_layer) wraps only the routes. A layer passes data
//! on to the handler through the request's extensions
//! ([`Request::insert_extension`](crate::Request::insert_extension)).
//!
//! Layers nest like axum's: the last one added runs first, outermost.

use std::fmt;
use std::sync::Arc;

use http::StatusCode;

use crate::request::Request;
use crate::response::Response;

/// A handler as the router stores it: shared, so a route may sit under several patterns.
pub(crate) type Handler<A> = Arc<dyn Fn(&A, &Request<'_>) -> Response + Send + Sync>;

/// A layer as the router stores it: shared by every handler it wraps.
pub(crate) type Layer<A> = Arc<dyn Fn(&A, &Request<'_>, Next<'_, A>) -> Response + Send + Sync>;

/// The rest of the chain under a layer: the next layer inward, or the handler itself.
///
/// ```
/// use baton_sdk::{Next, Request, Response, Router};
///
/// struct App;
/// let router = Router::<App>::new()
///     .get("/", |_, _| "home")
///     .layer(|_: &App, req: &Request, next: Next<App>| {
///         next.run(req).with_header("x-frame-options", "DENY")
///     });
///
/// let r = router.dispatch(&App, Request::builder("GET", "/").build());
/// assert_eq!(r.header("x-frame-options"), Some("DENY"));
/// ```
pub struct Next<'n, A> {
    app: &'n A,
    inner: &'n (dyn Fn(&A, &Request<'_>) -> Response + Send + Sync),
}

impl<A> fmt::Debug for Next<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next").finish_non_exhaustive()
    }
}

impl<A> Next<'_, A> {
    /// Runs the rest of the chain on `req` and returns its response.
    ///
    /// A layer that does not call it answers alone: the handler never runs.
    ///
    /// ```
    /// use baton_sdk::{IntoResponse, Next, Request, Router, StatusCode};
    ///
    /// struct App;
    /// let router = Router::<App>::new()
    ///     .get("/admin", |_, _| "secrets")
    ///     .layer(|_: &App, req: &Request, next: Next<App>| {
    ///         if req.header("authorization").is_none() {
    ///             return StatusCode::UNAUTHORIZED.into_response();
    ///         }
    ///         next.run(req)
    ///     });
    ///
    /// let r = router.dispatch(&App, Request::builder("GET", "/admin").build());
    /// assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    /// ```
    pub fn run(self, req: &Request<'_>) -> Response {
        (self.inner)(self.app, req)
    }
}

/// `inner` run under `layer`.
pub(crate) fn wrap<A: 'static>(layer: &Layer<A>, inner: Handler<A>) -> Handler<A> {
    let layer = Arc::clone(layer);
    Arc::new(move |app, req| {
        layer(
            app,
            req,
            Next {
                app,
                inner: &*inner,
            },
        )
    })
}

/// Why the router found no handler, for the handler that answers instead.
#[derive(Debug, Clone)]
pub(crate) struct Unrouted {
    /// 404 or 405.
    pub(crate) status: StatusCode,
    /// For a 405, the methods the path accepts, as the `Allow` header lists them.
    pub(crate) allow: Option<String>,
}

/// The innermost handler for requests no route accepts: `fallback`, or a plain-text status.
///
/// A 405 gets its `Allow` header here, under the layers, so they see it.
pub(crate) fn unrouted_handler<A: 'static>(fallback: Option<Handler<A>>) -> Handler<A> {
    Arc::new(move |app, req| {
        let why = req.extension::<Unrouted>().unwrap_or(Unrouted {
            status: StatusCode::NOT_FOUND,
            allow: None,
        });
        let response = match &fallback {
            Some(fallback) => fallback(app, req),
            None => Response::text(format!("{}\n", why.status)).with_status(why.status),
        };
        match why.allow {
            Some(allow) => response.with_header("allow", allow),
            None => response,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Router;

    struct App;

    fn get(router: &Router<App>, path: &str) -> Response {
        router.dispatch(&App, Request::builder("GET", path).build())
    }

    #[test]
    fn next_runs_the_inner_handler_once_with_the_same_request() {
        let router = Router::<App>::new()
            .get("/users/{id}", |_, req| {
                format!("user {}", req.param("id").unwrap_or("?"))
            })
            .layer(|_: &App, req: &Request, next: Next<App>| {
                let r = next.run(req);
                let body = String::from_utf8_lossy(r.body()).into_owned();
                r.with_body(format!("[{body}]"))
            });
        assert_eq!(get(&router, "/users/7").body(), b"[user 7]");
    }

    #[test]
    fn a_layer_may_return_anything_that_converts_into_a_response() {
        let router = Router::<App>::new()
            .get("/", |_, _| "home")
            .layer(|_: &App, _: &Request, _: Next<App>| (StatusCode::IM_A_TEAPOT, "short"));
        let r = get(&router, "/");
        assert_eq!(r.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(r.body(), b"short");
    }

    #[test]
    fn the_plain_answers_carry_their_status_and_allow() {
        let router = Router::<App>::new().post("/form", |_, _| "ok");
        let r = get(&router, "/form");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.header("allow"), Some("POST"));
        assert_eq!(r.body(), b"405 Method Not Allowed\n");
        let r = get(&router, "/nothing");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.header("allow"), None);
    }
}
