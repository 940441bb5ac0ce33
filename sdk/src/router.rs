//! A small router: method plus path pattern, with `{name}` parameters and `{*rest}` tails.

use std::fmt;

use http::{Method, StatusCode};

use crate::request::Request;
use crate::response::{IntoResponse, Response};

type Handler<A> = Box<dyn Fn(&A, &Request<'_>) -> Response + Send + Sync>;

struct Route<A> {
    methods: Vec<(Method, Handler<A>)>,
}

/// Routes requests to an app's handlers by method and path.
///
/// Patterns are matched against the path relative to the app's mount: `/` is the mount itself,
/// `/users/{id}` captures one segment, `/files/{*rest}` captures the rest. A path that matches
/// no pattern is a 404; a path that matches with another method is a 405 with `Allow`.
///
/// ```
/// use baton_sdk::{Request, Response, Router, StatusCode};
///
/// struct App;
/// let router = Router::<App>::new()
///     .get("/", |_, _| "home")
///     .get("/users/{id}", |_, req| format!("user {}", req.param("id").unwrap()));
///
/// let r = router.dispatch(&App, Request::builder("GET", "/users/7").build());
/// assert_eq!(r.body(), b"user 7");
/// let r = router.dispatch(&App, Request::builder("POST", "/").build());
/// assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
/// ```
pub struct Router<A> {
    paths: matchit::Router<usize>,
    routes: Vec<Route<A>>,
    patterns: Vec<String>,
    fallback: Option<Handler<A>>,
}

impl<A> fmt::Debug for Router<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("patterns", &self.patterns)
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

impl<A> Default for Router<A> {
    fn default() -> Self {
        Self::new()
    }
}

/// Shorthands for [`Router::route`] with one method each.
macro_rules! method_routes {
    ($($(#[$doc:meta])* $name:ident => $method:ident;)*) => {$(
        $(#[$doc])*
        pub fn $name<F, R>(self, pattern: &str, handler: F) -> Self
        where
            F: Fn(&A, &Request<'_>) -> R + Send + Sync + 'static,
            R: IntoResponse,
        {
            self.route(Method::$method, pattern, handler)
        }
    )*};
}

impl<A> Router<A> {
    /// An empty router: every request is a 404.
    pub fn new() -> Self {
        Router {
            paths: matchit::Router::new(),
            routes: Vec::new(),
            patterns: Vec::new(),
            fallback: None,
        }
    }

    /// Adds a handler for `method` on `pattern`.
    ///
    /// # Panics
    /// If `pattern` is malformed or conflicts with another pattern (a programming error, caught
    /// when the module is initialised, which then fails to load).
    pub fn route<F, R>(mut self, method: Method, pattern: &str, handler: F) -> Self
    where
        F: Fn(&A, &Request<'_>) -> R + Send + Sync + 'static,
        R: IntoResponse,
    {
        let handler: Handler<A> = Box::new(move |app, req| handler(app, req).into_response());
        let index = match self.patterns.iter().position(|p| p == pattern) {
            Some(index) => index,
            None => {
                let index = self.routes.len();
                if let Err(e) = self.paths.insert(pattern, index) {
                    panic!("invalid route pattern {pattern:?}: {e}");
                }
                self.routes.push(Route {
                    methods: Vec::new(),
                });
                self.patterns.push(pattern.to_owned());
                index
            }
        };
        let methods = &mut self.routes[index].methods;
        methods.retain(|(m, _)| *m != method);
        methods.push((method, handler));
        self
    }

    method_routes! {
        /// Adds a `GET` handler (which also answers `HEAD`).
        get => GET;
        /// Adds a `POST` handler.
        post => POST;
        /// Adds a `PUT` handler.
        put => PUT;
        /// Adds a `DELETE` handler.
        delete => DELETE;
    }

    /// Handles every request no route matches (servlet style), instead of a 404.
    pub fn fallback<F, R>(mut self, handler: F) -> Self
    where
        F: Fn(&A, &Request<'_>) -> R + Send + Sync + 'static,
        R: IntoResponse,
    {
        self.fallback = Some(Box::new(move |app, req| handler(app, req).into_response()));
        self
    }

    /// Runs the handler that matches `req` and returns its response.
    pub fn dispatch<'r>(&'r self, app: &A, mut req: Request<'r>) -> Response {
        let Ok(found) = self.paths.at(req.path()) else {
            return self.unrouted(app, &req, StatusCode::NOT_FOUND);
        };
        let route = &self.routes[*found.value];
        let method = req.method();
        let handler = route
            .methods
            .iter()
            .find(|(m, _)| m == method)
            .or_else(|| {
                (*method == Method::HEAD)
                    .then(|| route.methods.iter().find(|(m, _)| *m == Method::GET))
                    .flatten()
            })
            .map(|(_, h)| h);
        let Some(handler) = handler else {
            let allow: Vec<&str> = route.methods.iter().map(|(m, _)| m.as_str()).collect();
            return self
                .unrouted(app, &req, StatusCode::METHOD_NOT_ALLOWED)
                .with_header("allow", allow.join(", "));
        };
        let params = found.params.iter().collect();
        req.set_params(params);
        handler(app, &req)
    }

    fn unrouted(&self, app: &A, req: &Request<'_>, status: StatusCode) -> Response {
        match &self.fallback {
            Some(fallback) => fallback(app, req),
            None => Response::text(format!("{status}\n")).with_status(status),
        }
    }
}
