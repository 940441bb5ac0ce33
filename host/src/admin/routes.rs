//! The admin API's routing table: every path, its methods and the endpoint each serves. The
//! router is built once from [`ROUTES`]; a `405`'s `Allow` header comes from the same table.

use std::sync::LazyLock;

use http::Method;

use super::reply::ApiError;
use super::wire::decode_segment;

/// What an admin request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    /// `GET /`.
    Dashboard,
    /// `GET /healthz`.
    Health,
    /// `GET /readyz`.
    Ready,
    /// `GET /status`, `GET /apps`.
    Status,
    /// `GET /metrics`.
    Metrics,
    /// `POST /apps`.
    Deploy,
    /// `POST /upgrade`.
    Upgrade,
    /// `GET /quarantine`.
    Quarantine,
    /// `POST /quarantine/clear`.
    ClearQuarantine,
    /// `GET /apps/{app}`.
    App,
    /// `DELETE /apps/{app}`.
    Undeploy,
    /// `POST /apps/{app}/rollback`.
    Rollback,
    /// `PUT /apps/{app}/canary`.
    SetCanary,
    /// `DELETE /apps/{app}/canary`.
    AbortCanary,
    /// `POST /apps/{app}/canary/promote`.
    Promote,
    /// `GET /sessions`.
    Sessions,
    /// `GET /sessions/count`.
    SessionCount,
    /// `GET /sessions/{id}`.
    Session,
    /// `DELETE /sessions/{id}`.
    Invalidate,
}

impl Endpoint {
    /// The page and the probes reveal nothing and must work for load balancers and browsers
    /// without credentials; everything else needs the token when one is set.
    pub(super) fn is_public(self) -> bool {
        matches!(
            self,
            Endpoint::Dashboard | Endpoint::Health | Endpoint::Ready
        )
    }
}

/// One path and the endpoint behind each of its methods.
#[derive(Debug)]
struct Route {
    path: &'static str,
    methods: &'static [(Method, Endpoint)],
    /// Under `/apps/{app}/sessions`: the app must exist, whatever the method.
    app_sessions: bool,
}

/// The route table, one line per path: `path => METHOD Endpoint, …;`. A line starts with
/// `route`, or with `app_sessions` for the paths under `/apps/{app}/sessions`: sessions are the
/// host's, so an app's path answers for the same sessions, once the app is known.
macro_rules! routes {
    (@app_sessions route) => {
        false
    };
    (@app_sessions app_sessions) => {
        true
    };
    ($($kind:ident $path:literal => $($method:ident $endpoint:ident),+;)*) => {
        &[$(Route {
            path: $path,
            methods: &[$((Method::$method, Endpoint::$endpoint)),+],
            app_sessions: routes!(@app_sessions $kind),
        }),*]
    };
}

/// Every admin route.
const ROUTES: &[Route] = routes! {
    route "/" => GET Dashboard;
    route "/healthz" => GET Health;
    route "/readyz" => GET Ready;
    route "/status" => GET Status;
    route "/metrics" => GET Metrics;
    route "/upgrade" => POST Upgrade;
    route "/quarantine" => GET Quarantine;
    route "/quarantine/clear" => POST ClearQuarantine;
    route "/apps" => GET Status, POST Deploy;
    route "/apps/{app}" => GET App, DELETE Undeploy;
    route "/apps/{app}/rollback" => POST Rollback;
    route "/apps/{app}/canary" => PUT SetCanary, DELETE AbortCanary;
    route "/apps/{app}/canary/promote" => POST Promote;
    route "/sessions" => GET Sessions;
    route "/sessions/count" => GET SessionCount;
    route "/sessions/{id}" => GET Session, DELETE Invalidate;
    app_sessions "/apps/{app}/sessions" => GET Sessions;
    app_sessions "/apps/{app}/sessions/count" => GET SessionCount;
    app_sessions "/apps/{app}/sessions/{id}" => GET Session, DELETE Invalidate;
};

static ROUTER: LazyLock<matchit::Router<&'static Route>> = LazyLock::new(|| {
    let mut router = matchit::Router::new();
    for route in ROUTES {
        if let Err(e) = router.insert(route.path, route) {
            unreachable!("admin route {} conflicts: {e}", route.path);
        }
    }
    router
});

/// A request's route: its endpoint (if the method is one of the route's) and its parameters,
/// percent-decoded.
#[derive(Debug)]
pub(super) struct Routed {
    /// The endpoint, or why the method is refused.
    pub(super) endpoint: Result<Endpoint, ApiError>,
    /// `{app}`, for the routes under `/apps/{app}`.
    pub(super) app: Option<String>,
    /// `{id}`, for the routes of one session.
    pub(super) id: Option<String>,
    /// The app must exist before the method is even looked at.
    pub(super) app_sessions: bool,
}

/// Routes `method` on `path`.
///
/// # Errors
/// [`ApiError::NoSuchEndpoint`] when no route has the path.
pub(super) fn route_of(method: &Method, path: &str) -> Result<Routed, ApiError> {
    // Empty segments do not count: `/status/` and `//status` are `/status`.
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let normal = format!("/{}", segments.join("/"));
    let found = ROUTER
        .at(&normal)
        .map_err(|_| ApiError::NoSuchEndpoint(path.to_owned()))?;
    let route = *found.value;
    let param = |name| {
        found
            .params
            .get(name)
            .map(|v| decode_segment(v).into_owned())
    };
    let endpoint = route
        .methods
        .iter()
        .find_map(|(m, endpoint)| (m == method).then_some(*endpoint))
        .ok_or_else(|| ApiError::MethodNotAllowed {
            method: method.clone(),
            path: path.to_owned(),
            allow: route
                .methods
                .iter()
                .map(|(m, _)| m.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    Ok(Routed {
        endpoint,
        app: param("app"),
        id: param("id"),
        app_sessions: route.app_sessions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(method: Method, path: &str) -> Endpoint {
        route_of(&method, path).unwrap().endpoint.unwrap()
    }

    #[test]
    fn every_route_is_reachable_and_static_segments_win() {
        assert_eq!(endpoint(Method::GET, "/"), Endpoint::Dashboard);
        assert_eq!(endpoint(Method::GET, "/apps"), Endpoint::Status);
        assert_eq!(endpoint(Method::POST, "/apps/"), Endpoint::Deploy);
        assert_eq!(
            endpoint(Method::GET, "/sessions/count"),
            Endpoint::SessionCount
        );
        assert_eq!(
            endpoint(Method::GET, "/sessions/abcdef12"),
            Endpoint::Session
        );
        assert_eq!(
            endpoint(Method::POST, "//apps/hello/canary/promote"),
            Endpoint::Promote
        );
        for route in ROUTES {
            let path = route.path.replace("{app}", "hello").replace("{id}", "abc");
            for (method, want) in route.methods {
                assert_eq!(endpoint(method.clone(), &path), *want, "{method} {path}");
            }
        }
    }

    #[test]
    fn parameters_are_percent_decoded() {
        let routed = route_of(&Method::GET, "/apps/a%20b%2Bc/sessions/x%2Fy").unwrap();
        assert_eq!(routed.app.as_deref(), Some("a b+c"));
        assert_eq!(routed.id.as_deref(), Some("x/y"));
        assert!(routed.app_sessions);
        assert!(!route_of(&Method::GET, "/apps/a").unwrap().app_sessions);
    }

    #[test]
    fn wrong_methods_list_the_routes_methods_and_unknown_paths_are_not_found() {
        let Err(ApiError::MethodNotAllowed { allow, .. }) =
            route_of(&Method::PATCH, "/apps/hello/canary")
                .unwrap()
                .endpoint
        else {
            panic!("expected 405");
        };
        assert_eq!(allow, "PUT, DELETE");
        let Err(ApiError::MethodNotAllowed { allow, .. }) =
            route_of(&Method::PUT, "/apps").unwrap().endpoint
        else {
            panic!("expected 405");
        };
        assert_eq!(allow, "GET, POST");
        for path in ["/no/such/thing", "/apps/hello/nope", "/sessions/a/b"] {
            assert!(matches!(
                route_of(&Method::GET, path),
                Err(ApiError::NoSuchEndpoint(_))
            ));
        }
    }
}
