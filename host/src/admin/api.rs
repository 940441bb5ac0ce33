//! The admin API: routing, the bearer token, and one handler per endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use serde::{Deserialize, Serialize};

use crate::deploy::{DeployMode, Deployed, Registry, SwapTimings};
use crate::error::Error;
use crate::server::{Body, RequestBody};
use crate::session::Sessions;

/// Largest JSON body the admin API accepts.
const MAX_JSON_BYTES: usize = 64 * 1024;

/// The admin listener's shared state: the registry, the sessions and whether the host takes
/// traffic.
#[derive(Debug)]
pub struct Admin {
    registry: Arc<Registry>,
    sessions: Arc<Sessions>,
    ready: AtomicBool,
    /// One permit per upload being received or deployed (`uploads.max_concurrent`).
    uploads: Arc<tokio::sync::Semaphore>,
}

impl Admin {
    /// The admin surface of `registry` and `sessions`; ready until [`Admin::set_not_ready`].
    pub fn new(registry: Arc<Registry>, sessions: Arc<Sessions>) -> Admin {
        let uploads = registry.config().uploads.max_concurrent;
        Admin {
            registry,
            sessions,
            ready: AtomicBool::new(true),
            uploads: Arc::new(tokio::sync::Semaphore::new(uploads)),
        }
    }

    /// From now on `/readyz` answers 503: a graceful shutdown has started.
    pub fn set_not_ready(&self) {
        self.ready.store(false, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

pub(super) fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_else(|e| {
        format!("{{\"error\":\"response does not serialize: {e}\"}}").into_bytes()
    });
    respond(status, "application/json", body)
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

pub(super) fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message.to_string() }))
}

pub(super) fn from_error(e: &Error) -> Response<Body> {
    let status = match e {
        Error::Load { .. } | Error::Start { .. } | Error::Invalid(_) => StatusCode::BAD_REQUEST,
        Error::UnknownApp(_) | Error::UnknownVersion { .. } | Error::NotQuarantined { .. } => {
            StatusCode::NOT_FOUND
        }
        Error::Conflict(_) | Error::Unsettled { .. } | Error::Quarantined { .. } => {
            StatusCode::CONFLICT
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e)
}

/// Compares in time independent of where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(token: Option<&str>, headers: &http::HeaderMap) -> bool {
    let Some(token) = token else { return true };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start().split_once(' '))
        // The scheme is case-insensitive (RFC 9110, section 11.1).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .is_some_and(|(_, given)| same_secret(given.trim().as_bytes(), token.as_bytes()))
}

/// Whether `host` (a `Host` header or an authority) names this machine's loopback interface.
fn is_loopback_host(host: &str) -> bool {
    let Ok(authority) = host.parse::<http::uri::Authority>() else {
        return false;
    };
    let name = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Without a token the admin API answers only the local operator: why `req` is not from them,
/// if it is not. A browser on the machine sends any site's requests to it with that site's
/// `Origin`, and a DNS-rebound name arrives with that name as `Host`.
fn not_local<B>(req: &Request<B>) -> Option<String> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(http::uri::Authority::as_str));
    if let Some(host) = host
        && !is_loopback_host(host)
    {
        return Some(format!(
            "it was sent to {host:?}, which is not a loopback name or address"
        ));
    }
    let origin = req.headers().get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("(not text)");
    let own = host.map(|host| format!("http://{host}"));
    if own.is_some_and(|own| own.eq_ignore_ascii_case(origin)) {
        return None;
    }
    Some(format!(
        "it comes from a web page of another origin ({origin})"
    ))
}

/// Most of a refused request's body read (and dropped) before the answer, so the client sees
/// the answer rather than a reset; past it the connection is closed.
const MAX_DISCARD_BYTES: u64 = 64 * 1024 * 1024;

/// Answers a request refused before its body was read: reads and drops the body first (at most
/// [`MAX_DISCARD_BYTES`], and only while it keeps arriving), so a client still sending it gets
/// `response` instead of a broken pipe.
async fn refuse(req: Request<RequestBody>, mut response: Response<Body>) -> Response<Body> {
    let mut body = req.into_body();
    let mut discarded = 0u64;
    while discarded <= MAX_DISCARD_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                discarded += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            Some(Err(_)) | None => return response,
        }
    }
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

fn forbidden(why: &str) -> Response<Body> {
    error(
        StatusCode::FORBIDDEN,
        format!(
            "refused: {why}. Without an admin token the admin API answers only requests from \
             this machine's own tools and dashboard. To call it from elsewhere, set a token \
             (admin_token in the config file, BATON_ADMIN_TOKEN or --admin-token) and send \
             `Authorization: Bearer <token>`"
        ),
    )
}

/// Serves one admin request.
pub(crate) async fn handle(admin: Arc<Admin>, req: Request<RequestBody>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method().clone();
    let token = admin.registry.config().admin_token.as_deref();
    if token.is_none()
        && let Some(why) = not_local(&req)
    {
        return refuse(req, forbidden(&why)).await;
    }
    // The page and the probes reveal nothing and must work for load balancers and browsers
    // without credentials; everything else needs the token when one is set.
    match (&method, segments.as_slice()) {
        (&Method::GET, []) => {
            return respond(StatusCode::OK, "text/html; charset=utf-8", super::DASHBOARD);
        }
        (&Method::GET, ["healthz"]) => return respond(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, ["readyz"]) => {
            return if admin.is_ready() {
                respond(StatusCode::OK, "text/plain", "ready\n")
            } else {
                respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "shutting down\n",
                )
            };
        }
        _ => {}
    }
    let registry = &admin.registry;
    if !authorized(token, req.headers()) {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token: send `Authorization: Bearer <token>`",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return refuse(req, response).await;
    }
    match (&method, segments.as_slice()) {
        (&Method::GET, ["status"] | ["apps"]) => json(StatusCode::OK, &super::status(registry)),
        (&Method::GET, ["metrics"]) => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            registry.metrics().encode(),
        ),
        (&Method::POST, ["apps"]) => deploy(&admin, req).await,
        (&Method::POST, ["upgrade"]) => match crate::supervisor::request_upgrade() {
            Ok(supervisor) => json(
                StatusCode::ACCEPTED,
                &serde_json::json!({
                    "outcome": "upgrading",
                    "pid": std::process::id(),
                    "version": crate::VERSION,
                    "supervisor": supervisor.as_raw_pid(),
                }),
            ),
            Err(e) => from_error(&e),
        },
        (&Method::GET, ["quarantine"]) => super::quarantine::list(registry),
        (&Method::POST, ["quarantine", "clear"]) => match read_body(req, MAX_JSON_BYTES).await {
            Ok(body) => super::quarantine::clear(registry, &body),
            Err(e) => error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            ),
        },
        (&Method::GET, ["apps", app]) => match registry.app(app) {
            Some(slot) => json(StatusCode::OK, &super::app_status(&slot)),
            None => from_error(&Error::UnknownApp((*app).to_owned())),
        },
        (&Method::DELETE, ["apps", app]) => undeploy(registry, app).await,
        (&Method::POST, ["apps", app, "rollback"]) => match registry.rollback(app).await {
            Ok(deployed) => json(StatusCode::OK, &DeployOutcome::new(registry, &deployed)),
            Err(e) => from_error(&e),
        },
        (&Method::PUT, ["apps", app, "canary"]) => set_canary(registry, app, req).await,
        (&Method::POST, ["apps", app, "canary", "promote"]) => match registry.promote(app).await {
            Ok(version) => json(
                StatusCode::OK,
                &serde_json::json!({ "app": app, "active": version.info().version }),
            ),
            Err(e) => from_error(&e),
        },
        // Sessions are the host's: an app's path answers for the same sessions, once the app
        // is known.
        (_, ["apps", app, "sessions", ..]) if registry.app(app).is_none() => {
            from_error(&Error::UnknownApp((*app).to_owned()))
        }
        (&Method::GET, ["sessions"] | ["apps", _, "sessions"]) => {
            super::sessions::list(&admin.sessions, &query).await
        }
        (&Method::GET, ["sessions", "count"] | ["apps", _, "sessions", "count"]) => {
            super::sessions::count(&admin.sessions).await
        }
        (&Method::GET, ["sessions", id] | ["apps", _, "sessions", id]) => {
            super::sessions::show(&admin.sessions, id).await
        }
        (&Method::DELETE, ["sessions", id] | ["apps", _, "sessions", id]) => {
            super::sessions::invalidate(&admin.sessions, id).await
        }
        (&Method::DELETE, ["apps", app, "canary"]) => match registry.abort_canary(app).await {
            Ok(version) => json(
                StatusCode::OK,
                &serde_json::json!({ "app": app, "aborted": version.info().version }),
            ),
            Err(e) => from_error(&e),
        },
        (_, ["status" | "apps" | "metrics" | "sessions" | "quarantine"])
        | (_, ["apps", _] | ["sessions", _] | ["quarantine", "clear"])
        | (_, ["apps", _, "rollback" | "canary" | "sessions"])
        | (_, ["apps", _, "canary", "promote"] | ["apps", _, "sessions", _]) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such admin endpoint: {path}"),
        ),
    }
}

/// What `POST /apps` and `POST /apps/{app}/rollback` answer.
#[derive(Debug, Serialize)]
pub struct DeployOutcome {
    /// `deployed`, `canary` or `unchanged`.
    pub outcome: String,
    /// App name.
    pub app: String,
    /// The version deployed (or found already live).
    pub version: String,
    /// Deployment id of that version.
    pub id: u64,
    /// The version it replaced, if any.
    pub replaced: Option<String>,
    /// The canary's share of new requests, for a canary deploy.
    pub percent: Option<u8>,
    /// The timeline of the app's last swap.
    pub last_swap: Option<SwapTimings>,
}

impl DeployOutcome {
    fn new(registry: &Registry, deployed: &Deployed) -> DeployOutcome {
        let (version, unchanged) = match deployed {
            Deployed::New(v) => (v, false),
            Deployed::Unchanged(v) => (v, true),
        };
        let info = version.info();
        let slot = registry.app(&info.app);
        let canary = slot
            .as_ref()
            .and_then(|s| s.canary())
            .filter(|c| c.version.id() == version.id());
        let last_swap = slot.as_ref().and_then(|s| s.last_swap());
        let outcome = match (unchanged, &canary) {
            (true, _) => "unchanged",
            (false, Some(_)) => "canary",
            (false, None) => "deployed",
        };
        DeployOutcome {
            outcome: outcome.to_owned(),
            app: info.app.clone(),
            version: info.version.clone(),
            id: version.id(),
            replaced: last_swap
                .as_ref()
                .filter(|_| canary.is_none() && !unchanged)
                .and_then(|t| {
                    if t.rolled_back.is_some() && t.from_id == Some(version.id()) {
                        // Switched back to the fallback: it replaced the guarded version.
                        Some(t.to.clone())
                    } else {
                        (t.to_id == version.id()).then(|| t.from.clone()).flatten()
                    }
                }),
            percent: canary.map(|c| c.percent),
            last_swap,
        }
    }
}

pub(super) fn query_param<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find_map(|(k, v)| (k == key).then_some(v))
}

fn parse_percent(text: &str) -> Result<u8, Error> {
    text.parse::<u8>()
        .ok()
        .filter(|p| *p <= 100)
        .ok_or_else(|| Error::Invalid(format!("percent must be between 0 and 100, not {text:?}")))
}

/// The whole request body, at most `limit` bytes.
async fn read_body(req: Request<RequestBody>, limit: usize) -> Result<Bytes, String> {
    Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map(|body| body.to_bytes())
        .map_err(|e| e.to_string())
}

/// `POST /apps?name=FILE[&canary=PERCENT]` with the module file as the body.
async fn deploy(admin: &Admin, req: Request<RequestBody>) -> Response<Body> {
    let registry = &admin.registry;
    let config = registry.config();
    let limit = config.uploads.max_bytes;
    let Ok(_uploading) = Arc::clone(&admin.uploads).try_acquire_owned() else {
        let mut response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} uploads are already in progress (uploads.max_concurrent); try again when one \
                 is done",
                config.uploads.max_concurrent
            ),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return response;
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return from_upload_error(&super::upload::UploadError::TooLarge { limit });
    }
    let query = req.uri().query().unwrap_or("").to_owned();
    let name = query_param(&query, "name").unwrap_or("upload.so");
    // Receive the body before refusing anything else, so the client sees the answer, not a
    // reset.
    let file = match super::upload::receive(req.into_body(), &config.state_dir, limit).await {
        Ok(file) => file,
        Err(e) => return from_upload_error(&e),
    };
    let discard = |response| {
        let _ = std::fs::remove_file(&file);
        response
    };
    let mode = match query_param(&query, "canary").map(parse_percent) {
        None => DeployMode::Switch,
        Some(Ok(percent)) => DeployMode::Canary(percent),
        Some(Err(e)) => return discard(from_error(&e)),
    };
    if std::fs::metadata(&file).is_ok_and(|m| m.len() == 0) {
        return discard(error(
            StatusCode::BAD_REQUEST,
            "empty upload: send the module file as the request body",
        ));
    }
    match registry.deploy_upload(name, &file, mode).await {
        Ok(deployed) => json(StatusCode::OK, &DeployOutcome::new(registry, &deployed)),
        Err(e) => from_error(&e),
    }
}

fn from_upload_error(e: &super::upload::UploadError) -> Response<Body> {
    use super::upload::UploadError;
    let status = match e {
        UploadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        UploadError::Body(body) if body.is_timeout() => StatusCode::REQUEST_TIMEOUT,
        UploadError::Body(_) => StatusCode::BAD_REQUEST,
        UploadError::Write { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %e, "upload failed");
    }
    let mut response = error(status, e);
    // The rest of the body is not read: the connection cannot carry another request.
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

async fn undeploy(registry: &Arc<Registry>, app: &str) -> Response<Body> {
    if registry.app(app).is_none() {
        return from_error(&Error::UnknownApp(app.to_owned()));
    }
    match registry.undeploy(app).await {
        Some(version) => json(
            StatusCode::OK,
            &serde_json::json!({ "app": app, "undeployed": version.info().version }),
        ),
        None => error(
            StatusCode::CONFLICT,
            format!("{app} has no active version to undeploy"),
        ),
    }
}

/// The body of `PUT /apps/{app}/canary`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryRequest {
    /// The canary version.
    pub version: String,
    /// Its share of new requests, 0 to 100.
    pub percent: u8,
}

async fn set_canary(
    registry: &Arc<Registry>,
    app: &str,
    req: Request<RequestBody>,
) -> Response<Body> {
    let body = match read_body(req, MAX_JSON_BYTES).await {
        Ok(body) => body,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            );
        }
    };
    let request: CanaryRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "expected JSON {{\"version\": \"1.2.3\", \"percent\": 10}} (percent 0 to 100): {e}"
                ),
            );
        }
    };
    match registry
        .set_canary(app, &request.version, request.percent)
        .await
    {
        Ok(canary) => json(
            StatusCode::OK,
            &serde_json::json!({
                "app": app,
                "canary": canary.version.info().version,
                "percent": canary.percent,
            }),
        ),
        Err(e) => from_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_checked_exactly() {
        let mut headers = http::HeaderMap::new();
        assert!(authorized(None, &headers));
        assert!(!authorized(Some("s3cret"), &headers));
        headers.insert(header::AUTHORIZATION, "Bearer s3cre".parse().unwrap());
        assert!(!authorized(Some("s3cret"), &headers));
        headers.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorized(Some("s3cret"), &headers));
        headers.insert(header::AUTHORIZATION, "Basic s3cret".parse().unwrap());
        assert!(!authorized(Some("s3cret"), &headers));
        for scheme in ["bearer", "BEARER", "bEaReR"] {
            let value = format!("{scheme} s3cret");
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            assert!(authorized(Some("s3cret"), &headers), "{value}");
        }
        headers.insert(header::AUTHORIZATION, "Bearers3cret".parse().unwrap());
        assert!(!authorized(Some("s3cret"), &headers));
    }

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri("/status");
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn without_a_token_only_loopback_hosts_and_the_own_origin_pass() {
        for host in [
            "127.0.0.1:9090",
            "localhost:9090",
            "LOCALHOST",
            "[::1]:9090",
            "127.1.2.3",
        ] {
            assert_eq!(not_local(&request(&[("host", host)])), None, "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9090",
            "10.0.0.1:9090",
            "localhost.evil.example",
        ] {
            let why = not_local(&request(&[("host", host)])).unwrap();
            assert!(why.contains("not a loopback"), "{host}: {why}");
        }
        let own = [
            ("host", "127.0.0.1:9090"),
            ("origin", "http://127.0.0.1:9090"),
        ];
        assert_eq!(not_local(&request(&own)), None);
        for origin in [
            "http://evil.example",
            "null",
            "http://localhost:3000",
            "https://127.0.0.1:9090",
        ] {
            let why = not_local(&request(&[("host", "127.0.0.1:9090"), ("origin", origin)]));
            assert!(why.unwrap().contains("another origin"), "{origin}");
        }
    }

    #[test]
    fn percentages_and_query_parameters() {
        assert_eq!(query_param("name=a.so&canary=10", "canary"), Some("10"));
        assert_eq!(query_param("name=a.so", "canary"), None);
        assert_eq!(parse_percent("100").unwrap(), 100);
        assert!(parse_percent("101").is_err());
        assert!(parse_percent("-1").is_err());
    }
}
