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
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// An app that records the order in which layers and handlers run.
    #[derive(Default)]
    struct App {
        trace: Mutex<Vec<String>>,
    }

    impl App {
        fn log(&self, what: impl Into<String>) {
            self.trace.lock().unwrap().push(what.into());
        }

        fn take(&self) -> Vec<String> {
            std::mem::take(&mut self.trace.lock().unwrap())
        }
    }

    /// A layer that logs `name` before and after the rest of the chain.
    fn tracing_layer(
        name: &'static str,
    ) -> impl Fn(&App, &Request<'_>, Next<'_, App>) -> Response + Send + Sync + 'static {
        move |app, req, next| {
            app.log(format!("{name} in"));
            let response = next.run(req);
            app.log(format!("{name} out"));
            response
        }
    }

    /// A layer that answers 401 unless the request has an `authorization` header, and passes
    /// the user on to the handler.
    fn auth(app: &App, req: &Request<'_>, next: Next<'_, App>) -> Response {
        app.log("auth");
        match req.header("authorization") {
            Some(user) => {
                req.insert_extension(User(user.to_owned()));
                next.run(req)
            }
            None => StatusCode::UNAUTHORIZED.into_response(),
        }
    }

    #[derive(Clone, Debug, PartialEq)]
    struct User(String);

    fn send(router: &Router<App>, app: &App, method: &str, path: &str) -> Response {
        router.dispatch(app, Request::builder(method, path).build())
    }

    fn send_as(router: &Router<App>, app: &App, path: &str, user: &str) -> Response {
        let headers = [("authorization".to_owned(), user.to_owned())];
        let req = Request::builder("GET", path).headers(&headers).build();
        router.dispatch(app, req)
    }

    fn body(response: &Response) -> &str {
        std::str::from_utf8(response.body()).unwrap()
    }

    fn handler(app: &App, _: &Request<'_>) -> &'static str {
        app.log("handler");
        "ok"
    }

    #[test]
    fn the_last_layer_added_runs_outermost() {
        let router = Router::new()
            .get("/", handler)
            .layer(tracing_layer("inner"))
            .layer(tracing_layer("outer"));
        let app = App::default();
        assert_eq!(body(&send(&router, &app, "GET", "/")), "ok");
        assert_eq!(
            app.take(),
            ["outer in", "inner in", "handler", "inner out", "outer out"]
        );
    }

    #[test]
    fn a_layer_that_does_not_call_next_short_circuits() {
        let router = Router::new().get("/", handler).layer(auth);
        let app = App::default();
        let r = send(&router, &app, "GET", "/");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(app.take(), ["auth"]);
        let r = send_as(&router, &app, "/", "ada");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(app.take(), ["auth", "handler"]);
    }

    #[test]
    fn a_layer_may_change_the_response_after_the_handler() {
        let router = Router::new()
            .get("/", |_: &App, _: &Request<'_>| {
                Response::text("made").with_status(StatusCode::CREATED)
            })
            .layer(|_: &App, req: &Request<'_>, next: Next<'_, App>| {
                let r = next.run(req);
                let status = r.status().as_u16().to_string();
                r.with_header("x-status-seen", status)
                    .with_status(StatusCode::ACCEPTED)
            });
        let r = send(&router, &App::default(), "GET", "/");
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert_eq!(r.header("x-status-seen"), Some("201"));
        assert_eq!(body(&r), "made");
    }

    #[test]
    fn a_layer_wraps_every_method_of_earlier_routes_but_no_later_route() {
        let router = Router::new()
            .get("/a", handler)
            .post("/a", handler)
            .layer(tracing_layer("l"))
            .put("/a", handler)
            .get("/b", handler);
        let app = App::default();
        for method in ["GET", "POST", "HEAD"] {
            send(&router, &app, method, "/a");
            assert_eq!(app.take(), ["l in", "handler", "l out"], "{method}");
        }
        send(&router, &app, "PUT", "/a");
        assert_eq!(app.take(), ["handler"]);
        send(&router, &app, "GET", "/b");
        assert_eq!(app.take(), ["handler"]);
    }

    #[test]
    fn a_layer_passes_data_to_the_handler_through_extensions() {
        let router = Router::new()
            .get("/me", |_: &App, req: &Request<'_>| {
                let user = req.extension::<User>().expect("the auth layer ran");
                format!("hello {}", user.0)
            })
            .layer(auth);
        let r = send_as(&router, &App::default(), "/me", "ada");
        assert_eq!(body(&r), "hello ada");
    }

    #[test]
    fn layer_wraps_404_405_and_the_fallback_but_route_layer_does_not() {
        let routes = || Router::new().post("/form", handler);
        let app = App::default();

        let layered = routes().layer(tracing_layer("l"));
        let r = send(&layered, &app, "GET", "/form");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.header("allow"), Some("POST"));
        assert_eq!(app.take(), ["l in", "l out"]);
        let r = send(&layered, &app, "GET", "/nothing");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(app.take(), ["l in", "l out"]);

        let with_fallback = routes()
            .fallback(|_: &App, _: &Request<'_>| (StatusCode::NOT_FOUND, "custom"))
            .layer(tracing_layer("l"));
        let r = send(&with_fallback, &app, "GET", "/nothing");
        assert_eq!(body(&r), "custom");
        assert_eq!(app.take(), ["l in", "l out"]);
        let r = send(&with_fallback, &app, "GET", "/form");
        assert_eq!(r.header("allow"), Some("POST"), "a 405 keeps its Allow");
        assert_eq!(app.take(), ["l in", "l out"]);

        let route_layered = routes().route_layer(tracing_layer("l"));
        let r = send(&route_layered, &app, "GET", "/form");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.header("allow"), Some("POST"));
        send(&route_layered, &app, "GET", "/nothing");
        assert_eq!(app.take(), Vec::<String>::new());
        send(&route_layered, &app, "POST", "/form");
        assert_eq!(app.take(), ["l in", "handler", "l out"]);
    }

    #[test]
    fn a_layer_sees_the_allow_header_of_a_405() {
        let router = Router::new().put("/doc", handler).layer(
            |_: &App, req: &Request<'_>, next: Next<'_, App>| {
                let r = next.run(req);
                let allow = r.header("allow").unwrap_or("none").to_owned();
                r.with_header("x-allow-seen", allow)
            },
        );
        let r = send(&router, &App::default(), "GET", "/doc");
        assert_eq!(r.header("x-allow-seen"), Some("PUT"));
    }

    #[test]
    fn nest_mounts_routes_under_a_prefix() {
        let api = Router::new()
            .get("/", |_: &App, _: &Request<'_>| "api root")
            .get("/notes/{id}", |_: &App, req: &Request<'_>| {
                format!("note {} at {}", req.param("id").unwrap(), req.path())
            })
            .get("/files/{*rest}", |_: &App, req: &Request<'_>| {
                format!("file {}", req.param("rest").unwrap())
            });
        let router = Router::new()
            .get("/", |_: &App, _: &Request<'_>| "home")
            .nest("/api/", api);
        let app = App::default();
        assert_eq!(body(&send(&router, &app, "GET", "/")), "home");
        assert_eq!(body(&send(&router, &app, "GET", "/api")), "api root");
        assert_eq!(body(&send(&router, &app, "GET", "/api/")), "api root");
        assert_eq!(
            body(&send(&router, &app, "GET", "/api/notes/7")),
            "note 7 at /api/notes/7",
            "handlers see the whole path"
        );
        assert_eq!(
            body(&send(&router, &app, "GET", "/api/files/a/b.txt")),
            "file a/b.txt"
        );
        assert_eq!(
            send(&router, &app, "GET", "/notes/7").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            send(&router, &app, "GET", "/api/nothing").status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn a_nested_routers_layers_stay_on_its_routes() {
        let api = Router::new().get("/notes", handler).layer(auth);
        let router = Router::new()
            .get("/", handler)
            .nest("/api", api)
            .fallback(|_: &App, _: &Request<'_>| (StatusCode::NOT_FOUND, "outer fallback"));
        let app = App::default();

        assert_eq!(send(&router, &app, "GET", "/").status(), StatusCode::OK);
        assert_eq!(app.take(), ["handler"]);
        let r = send(&router, &app, "GET", "/api/notes");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(app.take(), ["auth"]);
        assert_eq!(
            send_as(&router, &app, "/api/notes", "ada").status(),
            StatusCode::OK
        );
        assert_eq!(app.take(), ["auth", "handler"]);

        // A 405 on a nested route is the nested router's answer, under its layers.
        let r = send(&router, &app, "POST", "/api/notes");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        // Without a fallback of its own, the nested router leaves unknown paths to the outer one.
        let r = send(&router, &app, "GET", "/api/nothing");
        assert_eq!(body(&r), "outer fallback");
        assert_eq!(app.take(), ["auth"]);
    }

    #[test]
    fn a_nested_fallback_answers_under_its_prefix_only() {
        let api = Router::new()
            .get("/notes/{id}", handler)
            .fallback(|_: &App, _: &Request<'_>| (StatusCode::NOT_FOUND, "api fallback"))
            .layer(auth);
        let router = Router::new()
            .nest("/api", api)
            .layer(tracing_layer("outer"));
        let app = App::default();
        for path in ["/api", "/api/", "/api/nothing", "/api/notes/1/extra"] {
            let r = send_as(&router, &app, path, "ada");
            assert_eq!(body(&r), "api fallback", "{path}");
            assert_eq!(app.take(), ["outer in", "auth", "outer out"], "{path}");
        }
        let r = send(&router, &app, "GET", "/apix");
        assert_eq!(body(&r), "404 Not Found\n");
        assert_eq!(app.take(), ["outer in", "outer out"]);
    }

    #[test]
    fn nests_nest_each_with_its_own_fallback() {
        let fallback =
            |name: &'static str| move |_: &App, _: &Request<'_>| (StatusCode::NOT_FOUND, name);
        let v1 = Router::new()
            .get("/ping", |_: &App, _: &Request<'_>| "pong")
            .fallback(fallback("v1"));
        let api = Router::new()
            .get("/{id}", |_: &App, req: &Request<'_>| {
                format!("item {}", req.param("id").unwrap())
            })
            .nest("/v1", v1)
            .fallback(fallback("api"));
        let router = Router::new().nest("/api", api).fallback(fallback("root"));
        let app = App::default();
        for (path, answer) in [
            ("/api/v1/ping", "pong"),
            ("/api/7", "item 7"),
            ("/api/v1/nothing", "v1"),
            ("/api/v1", "item v1"),
            ("/api/v1/", "v1"),
            ("/api/7/nothing", "api"),
            ("/api", "api"),
            ("/nothing", "root"),
        ] {
            assert_eq!(body(&send(&router, &app, "GET", path)), answer, "{path}");
        }
    }

    #[test]
    fn merge_adds_routes_at_the_same_level_with_their_layers() {
        let users = Router::new()
            .get("/users", handler)
            .layer(tracing_layer("users"));
        let router = Router::new()
            .get("/", handler)
            .post("/users", handler)
            .merge(users);
        let app = App::default();
        send(&router, &app, "GET", "/users");
        assert_eq!(app.take(), ["users in", "handler", "users out"]);
        send(&router, &app, "POST", "/users");
        assert_eq!(app.take(), ["handler"]);
        send(&router, &app, "GET", "/");
        assert_eq!(app.take(), ["handler"]);
    }

    #[test]
    fn a_merged_fallback_becomes_the_routers() {
        let other = Router::new()
            .fallback(|_: &App, _: &Request<'_>| (StatusCode::NOT_FOUND, "other fallback"));
        let router = Router::new().get("/", handler).merge(other);
        let r = send(&router, &App::default(), "GET", "/nothing");
        assert_eq!(body(&r), "other fallback");
    }

    #[test]
    #[should_panic(expected = "two handlers for GET")]
    fn merging_the_same_method_and_pattern_panics() {
        let _ = Router::<App>::new()
            .get("/a", handler)
            .merge(Router::new().get("/a", handler));
    }

    #[test]
    #[should_panic(expected = "invalid route pattern")]
    fn a_nested_pattern_that_conflicts_panics() {
        let _ = Router::<App>::new()
            .get("/api/{id}", handler)
            .nest("/api", Router::new().get("/{name}", handler));
    }

    #[test]
    #[should_panic(expected = "both have a fallback")]
    fn merging_two_fallbacks_panics() {
        let fallback = |_: &App, _: &Request<'_>| "f";
        let _ = Router::new()
            .fallback(fallback)
            .merge(Router::new().fallback(fallback));
    }

    #[test]
    #[should_panic(expected = "must start with '/'")]
    fn a_prefix_without_a_slash_panics() {
        let _ = Router::<App>::new().nest("api", Router::new());
    }

    #[test]
    fn nesting_at_the_root_merges() {
        let router = Router::new().nest("/", Router::new().get("/a", handler));
        assert_eq!(
            send(&router, &App::default(), "GET", "/a").status(),
            StatusCode::OK
        );
    }
}
