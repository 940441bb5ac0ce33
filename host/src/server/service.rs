//! One request: route to an app, admission, body limit, dispatch to the version's workers,
//! timeout, response; or, on a plain listener of a host that redirects to HTTPS, the redirect.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{
    CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderValue, LOCATION, RETRY_AFTER, SET_COOKIE,
};
use http::uri::Authority;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

use crate::deploy::{AppSlot, OwnedRequest, Registry, Version};
use crate::loader::CallError;
use crate::session::{RequestSession, Sessions};

use super::{OverTls, RequestBody};

/// The response body type of every response the host sends.
pub type Body = Full<Bytes>;

fn plain(status: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(text.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn unavailable(text: &'static str) -> Response<Body> {
    let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, text);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The `308 Permanent Redirect` of a plain-HTTP request to the same host and path on the
/// HTTPS listener's `port` (the method and body are kept by a 308). A request without a usable
/// host (`Host`, or the HTTP/2 authority) is a 400.
pub(crate) fn redirect_to_https<B>(req: &Request<B>, port: u16) -> Response<Body> {
    let authority = req.uri().authority().cloned().or_else(|| {
        req.headers()
            .get(HOST)
            .and_then(|host| host.to_str().ok())
            .and_then(|host| host.parse::<Authority>().ok())
    });
    let Some(authority) = authority else {
        return plain(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: this host serves HTTPS only, and the request names no host to \
             redirect to\n",
        );
    };
    let port = if port == 443 {
        String::new()
    } else {
        format!(":{port}")
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{}{port}{path}", authority.host());
    let Ok(value) = HeaderValue::from_str(&location) else {
        return plain(StatusCode::BAD_REQUEST, "400 Bad Request\n");
    };
    let mut response = plain(
        StatusCode::PERMANENT_REDIRECT,
        format!("308 Permanent Redirect: this host serves HTTPS only: {location}\n"),
    );
    response.headers_mut().insert(LOCATION, value);
    response
}

/// Stores what the handler changed in its session and adds the session cookie. If the store
/// fails, nothing was written and the client gets a 503 instead of the handler's response.
async fn finish_session(session: &RequestSession, mut response: Response<Body>) -> Response<Body> {
    match session.finish().await {
        Ok(None) => response,
        Ok(Some(cookie)) => {
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(SET_COOKIE, value);
            }
            response
        }
        Err(e) => {
            // The outage itself is logged once by `Sessions`, not per request.
            tracing::debug!(error = %e, "session changes not stored");
            unavailable("503 Service Unavailable: the session store is unavailable\n")
        }
    }
}

/// Where a request went, for its metrics and access log line.
#[derive(Default)]
struct Served {
    app: Option<Arc<AppSlot>>,
    version: Option<Arc<Version>>,
}

/// Serves one request: counts it on its version's metrics and writes its access log line.
pub(crate) async fn handle(
    registry: &Registry,
    sessions: &Arc<Sessions>,
    req: Request<RequestBody>,
) -> Response<Body> {
    let started = Instant::now();
    let access = registry
        .config()
        .access_log
        .then(|| (req.method().clone(), req.uri().clone()));
    let mut served = Served::default();
    let response = serve(registry, sessions, req, &mut served).await;
    let took = started.elapsed();
    if let Some(version) = &served.version {
        version.observe(response.status(), took);
    }
    if let Some((method, uri)) = access {
        let version = served.version.as_ref().map(|v| v.info().version.as_str());
        tracing::info!(target: "baton::access", app = served.app.as_ref().map(|a| a.name()),
            version, %method, path = uri.path(), status = response.status().as_u16(),
            duration_ms = took.as_secs_f64() * 1000.0, "request");
    }
    response
}

async fn serve(
    registry: &Registry,
    sessions: &Arc<Sessions>,
    req: Request<RequestBody>,
    served: &mut Served,
) -> Response<Body> {
    let Some((slot, rest)) = registry.route(req.uri().path()) else {
        return plain(
            StatusCode::NOT_FOUND,
            "404 Not Found: no app is mounted here\n",
        );
    };
    served.app = Some(Arc::clone(&slot));
    let limits = *slot.limits();
    let path = rest.to_owned();
    let rest = path.as_str();
    let query = req.uri().query().unwrap_or("").to_owned();
    let (parts, body) = req.into_parts();

    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body_bytes) {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "413 Payload Too Large\n");
    }
    let max_body = usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX);
    let body = match Limited::new(body, max_body).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return plain(StatusCode::PAYLOAD_TOO_LARGE, "413 Payload Too Large\n");
        }
        Err(e)
            if e.downcast_ref::<super::BodyError>()
                .is_some_and(|e| e.is_timeout()) =>
        {
            tracing::debug!(error = %e, "request body stalled");
            let mut response = plain(
                StatusCode::REQUEST_TIMEOUT,
                "408 Request Timeout: the request body stopped arriving\n",
            );
            // The rest of the body never came: the connection cannot carry another request.
            response
                .headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
        Err(e) => {
            tracing::debug!(error = %e, "request body read failed");
            return plain(
                StatusCode::BAD_REQUEST,
                "400 Bad Request: body read failed\n",
            );
        }
    };

    // A free slot is taken without arming a timer; only a full app waits, bounded.
    let permit = match Arc::clone(slot.permits()).try_acquire_owned() {
        Ok(permit) => Ok(permit),
        Err(_) => tokio::time::timeout(
            limits.queue_timeout(),
            Arc::clone(slot.permits()).acquire_owned(),
        )
        .await
        .map_err(|_| ())
        .and_then(|acquired| acquired.map_err(|_| ())),
    };
    let permit = match permit {
        Ok(permit) => permit,
        Err(()) => {
            tracing::warn!(app = %slot.name(), queue_timeout_ms = limits.queue_timeout_ms,
                "request refused: app at its concurrency limit");
            return unavailable("503 Service Unavailable: the app is at capacity\n");
        }
    };
    let Some((version, guard)) = slot.enter(&parts.headers) else {
        return plain(
            StatusCode::NOT_FOUND,
            "404 Not Found: no app is mounted here\n",
        );
    };
    served.version = Some(Arc::clone(&version));
    if version.unhealthy() {
        tracing::warn!(app = %slot.name(), version = %version.info().version,
            stuck = version.stuck(), "request refused: too many handlers stuck");
        return unavailable("503 Service Unavailable: the app's handlers are stuck\n");
    }
    let method = parts.method.clone();
    let session = sessions.begin(&parts.headers, parts.extensions.get::<OverTls>().is_some());
    let mut call = version.dispatch(
        guard,
        Some(permit),
        OwnedRequest {
            method: parts.method,
            path: path.clone(),
            query,
            headers: parts.headers,
            body,
            session: Some(Arc::clone(&session)),
        },
    );
    let info = version.info();
    let outcome = tokio::time::timeout(limits.request_timeout(), &mut call.reply).await;
    if outcome.is_err() {
        version.overran(&call);
    }
    let mut response = match outcome {
        Ok(Ok(Ok(out))) => {
            if let Some(error) = &out.error {
                if out.status == StatusCode::SERVICE_UNAVAILABLE && sessions.is_down() {
                    // The app passed on the store's outage, which `Sessions` logs once.
                    tracing::debug!(app = %info.app, version = %info.version, %method,
                        path = %rest, %error, "handler error during a session store outage");
                } else {
                    tracing::warn!(app = %info.app, version = %info.version, %method,
                        path = %rest, status = out.status.as_u16(), %error, "handler error");
                }
            }
            let mut response = Response::new(Full::new(Bytes::from(out.body)));
            *response.status_mut() = out.status;
            *response.headers_mut() = out.headers;
            finish_session(&session, response).await
        }
        Ok(Ok(Err(CallError::Panicked(message)))) => {
            tracing::error!(app = %info.app, version = %info.version, %method, path = %rest,
                panic = %message, "handler panicked");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "500 Internal Server Error\n",
            )
        }
        Ok(Ok(Err(error))) => {
            tracing::error!(app = %info.app, version = %info.version, %method, path = %rest,
                %error, "handler call failed");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "500 Internal Server Error\n",
            )
        }
        Ok(Err(_)) => {
            tracing::error!(app = %info.app, version = %info.version, %method, path = %rest,
                "worker pool stopped before the request ran");
            unavailable("503 Service Unavailable\n")
        }
        Err(_) => {
            tracing::warn!(app = %info.app, version = %info.version, %method, path = %rest,
                timeout_ms = limits.request_timeout_ms,
                "handler overran the request timeout; the client got a 504");
            plain(StatusCode::GATEWAY_TIMEOUT, "504 Gateway Timeout\n")
        }
    };
    if registry.config().version_header
        && let Some(value) = version.header()
    {
        response
            .headers_mut()
            .insert("x-baton-version", value.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(req: Request<()>, port: u16) -> (StatusCode, String) {
        let response = redirect_to_https(&req, port);
        let location = response
            .headers()
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (response.status(), location)
    }

    #[test]
    fn a_plain_request_is_sent_to_the_same_host_and_path_on_the_tls_port() {
        let req = |host: &str, uri: &str| {
            Request::builder()
                .uri(uri)
                .header(HOST, host)
                .body(())
                .unwrap()
        };
        assert_eq!(
            location(req("example.com:8080", "/hello/x?a=1&b=2"), 8443),
            (
                StatusCode::PERMANENT_REDIRECT,
                "https://example.com:8443/hello/x?a=1&b=2".to_owned()
            )
        );
        assert_eq!(
            location(req("example.com", "/"), 443).1,
            "https://example.com/"
        );
        assert_eq!(
            location(req("[::1]:80", "/a"), 8443).1,
            "https://[::1]:8443/a"
        );
        // An HTTP/2 request names its host in the URI.
        let h2 = Request::builder()
            .uri("http://h2.example:8080/p")
            .body(())
            .unwrap();
        assert_eq!(location(h2, 8443).1, "https://h2.example:8443/p");
        // No host, or one that could smuggle a path: no redirect.
        let none = Request::builder().uri("/x").body(()).unwrap();
        assert_eq!(location(none, 8443).0, StatusCode::BAD_REQUEST);
        assert_eq!(
            location(req("evil.com/x@good", "/"), 8443).0,
            StatusCode::BAD_REQUEST
        );
    }
}
