//! Unit tests of the router: layers, nesting, merging and the answers for unrouted requests.

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
