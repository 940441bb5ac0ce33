//! A small router: method plus path pattern, with `{name}` parameters and `{*rest}` tails,
//! middleware layers (see [`crate::Next`]) and route groups (nest, merge).

use std::fmt;
use std::sync::Arc;

use http::{Method, StatusCode};

use crate::middleware::{self, Handler, Layer, Next, Unrouted};
use crate::request::Request;
use crate::response::{IntoResponse, Response};

struct Route<A> {
    methods: Vec<(Method, Handler<A>)>,
    /// The entry of `Router::unrouted` that answers a 405 here: the router that added the route.
    unrouted: usize,
}

/// The name of the tail parameter of a nested router's catch-all: no app route can clash with it.
const NEST_TAIL: &str = "__baton_nest_tail";

/// Routes requests to an app's handlers by method and path.
///
/// Patterns are matched against the path relative to the app's mount: `/` is the mount itself,
/// `/users/{id}` captures one segment, `/files/{*rest}` captures the rest. A path that matches
/// no pattern is a 404; a path that matches with another method is a 405 with `Allow`.
///
/// [`layer`](Router::layer) and [`route_layer`](Router::route_layer) wrap the routes added so
/// far in middleware; [`nest`](Router::nest) and [`merge`](Router::merge) combine routers, each
/// route keeping its own router's layers.
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
    /// What answers requests no route accepts (404 and 405). Entry 0 is this router's own: its
    /// fallback or the plain answer, under the layers added since. Nested and merged routers
    /// add theirs, which answer the 405s of their routes and, for a nested router with a
    /// fallback, the 404s under its prefix.
    unrouted: Vec<Handler<A>>,
    /// Prefixes of nested routers with a fallback, to the entry of `unrouted` answering there.
    nests: matchit::Router<usize>,
    nest_patterns: Vec<(String, usize)>,
    has_fallback: bool,
}

impl<A> fmt::Debug for Router<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("patterns", &self.patterns)
            .field("fallback", &self.has_fallback)
            .finish_non_exhaustive()
    }
}

impl<A: 'static> Default for Router<A> {
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

impl<A: 'static> Router<A> {
    /// An empty router: every request is a 404.
    pub fn new() -> Self {
        Router {
            paths: matchit::Router::new(),
            routes: Vec::new(),
            patterns: Vec::new(),
            unrouted: vec![middleware::unrouted_handler(None)],
            nests: matchit::Router::new(),
            nest_patterns: Vec::new(),
            has_fallback: false,
        }
    }

    /// Adds a handler for `method` on `pattern`, replacing one the pattern had for `method`.
    ///
    /// # Panics
    /// If `pattern` is malformed or conflicts with another pattern (a programming error, caught
    /// when the module is initialised, which then fails to load).
    pub fn route<F, R>(mut self, method: Method, pattern: &str, handler: F) -> Self
    where
        F: Fn(&A, &Request<'_>) -> R + Send + Sync + 'static,
        R: IntoResponse,
    {
        let handler: Handler<A> = Arc::new(move |app, req| handler(app, req).into_response());
        let index = self.pattern_index(pattern, 0);
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

    /// Handles every request no route accepts (servlet style), instead of the plain 404 and
    /// 405; a 405 keeps its `Allow` header.
    ///
    /// Layers added before this call do not wrap the fallback; add them after it.
    ///
    /// ```
    /// use baton_sdk::{Request, Router, StatusCode};
    ///
    /// struct App;
    /// let router = Router::<App>::new()
    ///     .post("/form", |_, _| "sent")
    ///     .fallback(|_, req| (StatusCode::NOT_FOUND, format!("no page at {}", req.path())));
    ///
    /// let r = router.dispatch(&App, Request::builder("GET", "/old").build());
    /// assert_eq!(r.body(), b"no page at /old");
    /// ```
    pub fn fallback<F, R>(mut self, handler: F) -> Self
    where
        F: Fn(&A, &Request<'_>) -> R + Send + Sync + 'static,
        R: IntoResponse,
    {
        let handler: Handler<A> = Arc::new(move |app, req| handler(app, req).into_response());
        self.unrouted[0] = middleware::unrouted_handler(Some(handler));
        self.has_fallback = true;
        self
    }

    /// Wraps every route added so far, the fallback and the router's own 404 and 405 answers in
    /// `layer`, as axum's `Router::layer` does.
    ///
    /// The layer gets the app, the request and [`Next`], the rest of the chain: it may answer
    /// alone without calling [`Next::run`] (the handler then never runs), change the response
    /// `next.run` returns, or both. Routes added after this call are not wrapped. The last layer
    /// added runs first, outermost. To wrap only some routes, put them in a router of their own
    /// and [`nest`](Router::nest) or [`merge`](Router::merge) it.
    ///
    /// ```
    /// use baton_sdk::{Next, Request, Router};
    ///
    /// struct App;
    /// let router = Router::<App>::new()
    ///     .get("/", |_, _| "home")
    ///     .layer(|_: &App, req: &Request, next: Next<App>| {
    ///         next.run(req).with_header("cache-control", "no-store")
    ///     })
    ///     .get("/late", |_, _| "not wrapped");
    ///
    /// let home = router.dispatch(&App, Request::builder("GET", "/").build());
    /// assert_eq!(home.header("cache-control"), Some("no-store"));
    /// let missing = router.dispatch(&App, Request::builder("GET", "/nothing").build());
    /// assert_eq!(missing.header("cache-control"), Some("no-store"));
    /// let late = router.dispatch(&App, Request::builder("GET", "/late").build());
    /// assert_eq!(late.header("cache-control"), None);
    /// ```
    pub fn layer<F, R>(mut self, layer: F) -> Self
    where
        F: Fn(&A, &Request<'_>, Next<'_, A>) -> R + Send + Sync + 'static,
        R: IntoResponse,
    {
        let layer = into_layer(layer);
        self.wrap_routes(&layer);
        for handler in &mut self.unrouted {
            *handler = middleware::wrap(&layer, Arc::clone(handler));
        }
        self
    }

    /// Wraps every route added so far in `layer`, like [`layer`](Router::layer), but not the
    /// fallback nor the 404 and 405 answers: the layer runs only for requests a route accepts.
    ///
    /// ```
    /// use baton_sdk::{IntoResponse, Next, Request, Router, StatusCode};
    ///
    /// struct App;
    /// let router = Router::<App>::new()
    ///     .get("/private", |_, _| "secret")
    ///     .route_layer(|_: &App, req: &Request, next: Next<App>| {
    ///         match req.header("authorization") {
    ///             Some(_) => next.run(req),
    ///             None => StatusCode::UNAUTHORIZED.into_response(),
    ///         }
    ///     });
    ///
    /// let r = router.dispatch(&App, Request::builder("GET", "/private").build());
    /// assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    /// let r = router.dispatch(&App, Request::builder("GET", "/public").build());
    /// assert_eq!(r.status(), StatusCode::NOT_FOUND);
    /// ```
    pub fn route_layer<F, R>(mut self, layer: F) -> Self
    where
        F: Fn(&A, &Request<'_>, Next<'_, A>) -> R + Send + Sync + 'static,
        R: IntoResponse,
    {
        self.wrap_routes(&into_layer(layer));
        self
    }

    /// Mounts `router`'s routes under `prefix`: `/api` and `/notes/{id}` make
    /// `/api/notes/{id}`; the nested `/` answers both `/api` and `/api/`.
    ///
    /// The layers added to `router` stay on its routes only, which is how a group of routes gets
    /// its own middleware (an auth check on `/api` alone). If `router` has a
    /// [`fallback`](Router::fallback), it answers the requests under the prefix that none of its
    /// routes accepts; otherwise this router's fallback or 404 does. [`Request::path`] stays
    /// the whole path, prefix included. A `prefix` of `/` (or empty) is [`merge`](Router::merge).
    ///
    /// # Panics
    /// If `prefix` does not start with `/`, or a nested pattern conflicts with one of this
    /// router's, or both routers have a handler for the same method on the same pattern.
    ///
    /// ```
    /// use baton_sdk::{IntoResponse, Next, Request, Router, StatusCode};
    ///
    /// struct App;
    /// let api = Router::<App>::new()
    ///     .get("/notes/{id}", |_, req| format!("note {}", req.param("id").unwrap()))
    ///     .layer(|_: &App, req: &Request, next: Next<App>| {
    ///         match req.header("authorization") {
    ///             Some(_) => next.run(req),
    ///             None => StatusCode::UNAUTHORIZED.into_response(),
    ///         }
    ///     });
    /// let router = Router::new().get("/", |_, _| "home").nest("/api", api);
    ///
    /// let r = router.dispatch(&App, Request::builder("GET", "/").build());
    /// assert_eq!(r.body(), b"home");
    /// let r = router.dispatch(&App, Request::builder("GET", "/api/notes/7").build());
    /// assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    /// let headers = [("authorization".to_owned(), "Bearer t".to_owned())];
    /// let req = Request::builder("GET", "/api/notes/7").headers(&headers).build();
    /// assert_eq!(router.dispatch(&App, req).body(), b"note 7");
    /// ```
    pub fn nest(self, prefix: &str, router: Router<A>) -> Self {
        assert!(
            prefix.is_empty() || prefix.starts_with('/'),
            "nest prefix {prefix:?} must start with '/'"
        );
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return self.merge(router);
        }
        let has_fallback = router.has_fallback;
        self.absorb(prefix, router, has_fallback)
    }

    /// Adds `router`'s routes to this one at the same level, each keeping the layers that were
    /// added to `router`. A fallback of `router` becomes this router's.
    ///
    /// # Panics
    /// If both routers have a fallback, a pattern of one conflicts with one of the other, or
    /// both have a handler for the same method on the same pattern.
    ///
    /// ```
    /// use baton_sdk::{Request, Router};
    ///
    /// struct App;
    /// let users = Router::<App>::new().get("/users", |_, _| "users");
    /// let router = Router::new().get("/", |_, _| "home").merge(users);
    ///
    /// let r = router.dispatch(&App, Request::builder("GET", "/users").build());
    /// assert_eq!(r.body(), b"users");
    /// ```
    pub fn merge(mut self, mut router: Router<A>) -> Self {
        if router.has_fallback {
            assert!(
                !self.has_fallback,
                "cannot merge two routers that both have a fallback"
            );
            self.unrouted[0] = Arc::clone(&router.unrouted[0]);
            self.has_fallback = true;
            // The merged router's own entry stays for the 405s of its routes.
            router.has_fallback = false;
        }
        self.absorb("", router, false)
    }

    /// Runs the handler that matches `req` and returns its response.
    pub fn dispatch<'r>(&'r self, app: &A, mut req: Request<'r>) -> Response {
        let Ok(found) = self.paths.at(req.path()) else {
            let entry = self.nests.at(req.path()).map_or(0, |found| *found.value);
            return self.unrouted(app, &req, entry, StatusCode::NOT_FOUND, None);
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
            let allow = Some(allow.join(", "));
            let status = StatusCode::METHOD_NOT_ALLOWED;
            return self.unrouted(app, &req, route.unrouted, status, allow);
        };
        let params = found.params.iter().collect();
        req.set_params(params);
        handler(app, &req)
    }

    fn unrouted(
        &self,
        app: &A,
        req: &Request<'_>,
        entry: usize,
        status: StatusCode,
        allow: Option<String>,
    ) -> Response {
        req.insert_extension(Unrouted { status, allow });
        (self.unrouted[entry])(app, req)
    }

    /// The index of `pattern`'s route, added (answering 405s with `unrouted`) if it is new.
    fn pattern_index(&mut self, pattern: &str, unrouted: usize) -> usize {
        if let Some(index) = self.patterns.iter().position(|p| p == pattern) {
            return index;
        }
        let index = self.routes.len();
        if let Err(e) = self.paths.insert(pattern, index) {
            panic!("invalid route pattern {pattern:?}: {e}");
        }
        self.routes.push(Route {
            methods: Vec::new(),
            unrouted,
        });
        self.patterns.push(pattern.to_owned());
        index
    }

    fn wrap_routes(&mut self, layer: &Layer<A>) {
        for route in &mut self.routes {
            for (_, handler) in &mut route.methods {
                *handler = middleware::wrap(layer, Arc::clone(handler));
            }
        }
    }

    /// Takes `router`'s routes under `prefix` (empty: at this level). With `catch_all`, its own
    /// unrouted entry answers every path under the prefix that no route matches.
    fn absorb(mut self, prefix: &str, router: Router<A>, catch_all: bool) -> Self {
        let offset = self.unrouted.len();
        self.unrouted.extend(router.unrouted);
        let routes = router.patterns.into_iter().zip(router.routes);
        for (pattern, route) in routes {
            let joined = if pattern == "/" && !prefix.is_empty() {
                vec![prefix.to_owned(), format!("{prefix}/")]
            } else {
                vec![format!("{prefix}{pattern}")]
            };
            for pattern in joined {
                let index = self.pattern_index(&pattern, route.unrouted + offset);
                let methods = &mut self.routes[index].methods;
                for (method, handler) in &route.methods {
                    assert!(
                        methods.iter().all(|(m, _)| m != method),
                        "two handlers for {method} {pattern:?}"
                    );
                    methods.push((method.clone(), Arc::clone(handler)));
                }
            }
        }
        for (pattern, entry) in router.nest_patterns {
            self.add_nest_pattern(format!("{prefix}{pattern}"), entry + offset);
        }
        if catch_all {
            for pattern in [
                prefix.to_owned(),
                format!("{prefix}/"),
                format!("{prefix}/{{*{NEST_TAIL}}}"),
            ] {
                self.add_nest_pattern(pattern, offset);
            }
        }
        self
    }

    fn add_nest_pattern(&mut self, pattern: String, entry: usize) {
        if let Err(e) = self.nests.insert(pattern.as_str(), entry) {
            panic!("nested router at {pattern:?} conflicts with another: {e}");
        }
        self.nest_patterns.push((pattern, entry));
    }
}

fn into_layer<A, F, R>(layer: F) -> Layer<A>
where
    F: Fn(&A, &Request<'_>, Next<'_, A>) -> R + Send + Sync + 'static,
    R: IntoResponse,
{
    Arc::new(move |app, req, next| layer(app, req, next).into_response())
}

#[cfg(test)]
mod tests;
