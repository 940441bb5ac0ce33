//! The one error type of the request path: every reason the host answers a request itself
//! instead of with the app's response. Each reason knows its status, headers and body text
//! (axum's rejections), so the stages of a request only say what went wrong.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::loader::CallError;
use crate::session::StoreError;

use super::BodyError;
use super::body::Body;

/// Any error a request body read can end with (`http_body_util::Limited`'s error type).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the host answered a request itself.
///
/// [`into_response`](Rejection::into_response) logs the rejection (at the level its cause
/// deserves, inside the request's span) and builds the response, so each is logged once, where
/// it becomes the answer.
#[derive(Debug)]
pub(crate) enum Rejection {
    /// No app is mounted at the path, or none of its versions takes requests.
    NoApp,
    /// The body, declared or received, is larger than the app's `max_body_bytes`.
    BodyTooLarge,
    /// The client stopped sending the body for the body read timeout.
    BodyStalled(BodyError),
    /// The body could not be read (the connection failed, or the body was malformed).
    BodyUnreadable(BoxError),
    /// The app is at its concurrency limit and no place freed within the queue timeout.
    AtCapacity {
        /// The app's queue timeout.
        queue_timeout_ms: u64,
    },
    /// The handler began a streamed response while its version ran `max_streams` already.
    TooManyStreams {
        /// The limit.
        max: usize,
    },
    /// Too many of the version's handlers are stuck past the request timeout.
    Stuck {
        /// How many are.
        stuck: usize,
    },
    /// The call into the module failed: the handler panicked, or the call itself failed.
    Handler(CallError),
    /// The version's worker pool stopped before the request ran.
    WorkersStopped,
    /// The handler overran the request timeout; it goes on running.
    Timeout {
        /// The app's request timeout.
        timeout_ms: u64,
    },
    /// The handler's session changes could not be stored; none were.
    SessionStore(StoreError),
    /// An HTTP/1.1 request without `Host` (RFC 9112, section 3.2).
    MissingHost,
    /// A plain-HTTP request to a host that serves HTTPS only, naming no host to redirect to.
    NoRedirectHost,
    /// A plain-HTTP request whose HTTPS location is not a valid header value.
    BadRedirect,
}

/// A `text/plain` response.
pub(crate) fn plain(status: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Body::full(text.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A `503` the client may retry in a second.
fn unavailable(text: &'static str) -> Response<Body> {
    let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, text);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

impl Rejection {
    /// Logs the rejection and answers it.
    pub(crate) fn into_response(self) -> Response<Body> {
        match self {
            Rejection::NoApp => plain(
                StatusCode::NOT_FOUND,
                "404 Not Found: no app is mounted here\n",
            ),
            Rejection::BodyTooLarge => {
                plain(StatusCode::PAYLOAD_TOO_LARGE, "413 Payload Too Large\n")
            }
            Rejection::BodyStalled(error) => {
                tracing::debug!(%error, "request body stalled");
                let mut response = plain(
                    StatusCode::REQUEST_TIMEOUT,
                    "408 Request Timeout: the request body stopped arriving\n",
                );
                // The rest of the body never came: the connection cannot carry another request.
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
                response
            }
            Rejection::BodyUnreadable(error) => {
                tracing::debug!(%error, "request body read failed");
                plain(
                    StatusCode::BAD_REQUEST,
                    "400 Bad Request: body read failed\n",
                )
            }
            Rejection::AtCapacity { queue_timeout_ms } => {
                tracing::warn!(
                    queue_timeout_ms,
                    "request refused: app at its concurrency limit"
                );
                unavailable("503 Service Unavailable: the app is at capacity\n")
            }
            Rejection::TooManyStreams { max } => {
                tracing::warn!(
                    max,
                    "streamed response refused: the version's streams are all taken"
                );
                unavailable("503 Service Unavailable: too many streamed responses\n")
            }
            Rejection::Stuck { stuck } => {
                tracing::warn!(stuck, "request refused: too many handlers stuck");
                unavailable("503 Service Unavailable: the app's handlers are stuck\n")
            }
            Rejection::Handler(error) => {
                match error {
                    CallError::Panicked(message) => {
                        tracing::error!(panic = %message, "handler panicked");
                    }
                    error => tracing::error!(%error, "handler call failed"),
                }
                plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "500 Internal Server Error\n",
                )
            }
            Rejection::WorkersStopped => {
                tracing::error!("worker pool stopped before the request ran");
                unavailable("503 Service Unavailable\n")
            }
            Rejection::Timeout { timeout_ms } => {
                tracing::warn!(
                    timeout_ms,
                    "handler overran the request timeout; the client got a 504"
                );
                plain(StatusCode::GATEWAY_TIMEOUT, "504 Gateway Timeout\n")
            }
            Rejection::SessionStore(error) => {
                // The outage itself is logged once by `Sessions`, not per request.
                tracing::debug!(%error, "session changes not stored");
                unavailable("503 Service Unavailable: the session store is unavailable\n")
            }
            Rejection::MissingHost => {
                // Plain text without a content type, like hyper's own answers to bad requests.
                let mut response = Response::new(Body::full(
                    "400 Bad Request: an HTTP/1.1 request needs a Host header\n",
                ));
                *response.status_mut() = StatusCode::BAD_REQUEST;
                response
            }
            Rejection::NoRedirectHost => plain(
                StatusCode::BAD_REQUEST,
                "400 Bad Request: this host serves HTTPS only, and the request names no host to \
                 redirect to\n",
            ),
            Rejection::BadRedirect => plain(StatusCode::BAD_REQUEST, "400 Bad Request\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    /// Status, `Retry-After`, `Connection`, whether there is a content type, and body text.
    async fn answer(rejection: Rejection) -> (u16, Option<String>, Option<String>, bool, String) {
        let response = rejection.into_response();
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|v: &HeaderValue| v.to_str().unwrap().to_owned())
        };
        let (retry, connection) = (header(RETRY_AFTER), header(CONNECTION));
        let typed = response.headers().contains_key(CONTENT_TYPE);
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        (status, retry, connection, typed, text)
    }

    #[tokio::test]
    async fn each_rejection_knows_its_status_headers_and_text() {
        let retry = Some("1".to_owned());
        let cases = [
            (
                Rejection::NoApp,
                404,
                None,
                None,
                "404 Not Found: no app is mounted here\n",
            ),
            (
                Rejection::BodyTooLarge,
                413,
                None,
                None,
                "413 Payload Too Large\n",
            ),
            (
                Rejection::BodyStalled(BodyError::Stalled(std::time::Duration::from_secs(1))),
                408,
                None,
                Some("close".to_owned()),
                "408 Request Timeout: the request body stopped arriving\n",
            ),
            (
                Rejection::BodyUnreadable("reset".into()),
                400,
                None,
                None,
                "400 Bad Request: body read failed\n",
            ),
            (
                Rejection::AtCapacity {
                    queue_timeout_ms: 1,
                },
                503,
                retry.clone(),
                None,
                "503 Service Unavailable: the app is at capacity\n",
            ),
            (
                Rejection::TooManyStreams { max: 8 },
                503,
                retry.clone(),
                None,
                "503 Service Unavailable: too many streamed responses\n",
            ),
            (
                Rejection::Stuck { stuck: 3 },
                503,
                retry.clone(),
                None,
                "503 Service Unavailable: the app's handlers are stuck\n",
            ),
            (
                Rejection::Handler(CallError::Panicked("boom".into())),
                500,
                None,
                None,
                "500 Internal Server Error\n",
            ),
            (
                Rejection::Handler(CallError::Failed("no instance".into())),
                500,
                None,
                None,
                "500 Internal Server Error\n",
            ),
            (
                Rejection::WorkersStopped,
                503,
                retry.clone(),
                None,
                "503 Service Unavailable\n",
            ),
            (
                Rejection::Timeout { timeout_ms: 1 },
                504,
                None,
                None,
                "504 Gateway Timeout\n",
            ),
            (
                Rejection::SessionStore(StoreError::Unavailable("down".into())),
                503,
                retry.clone(),
                None,
                "503 Service Unavailable: the session store is unavailable\n",
            ),
            (
                Rejection::NoRedirectHost,
                400,
                None,
                None,
                "400 Bad Request: this host serves HTTPS only, and the request names no host to \
                 redirect to\n",
            ),
            (Rejection::BadRedirect, 400, None, None, "400 Bad Request\n"),
        ];
        for (rejection, status, retry, connection, text) in cases {
            let what = format!("{rejection:?}");
            assert_eq!(
                answer(rejection).await,
                (status, retry, connection, true, text.to_owned()),
                "{what}"
            );
        }
        assert_eq!(
            answer(Rejection::MissingHost).await,
            (
                400,
                None,
                None,
                false,
                "400 Bad Request: an HTTP/1.1 request needs a Host header\n".to_owned()
            )
        );
    }
}
