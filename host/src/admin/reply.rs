//! The admin API's answers: JSON and plain responses, and [`ApiError`], every way a request can
//! fail, each knowing its own status, so errors become responses in one place.

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use serde::Serialize;

use super::upload::UploadError;
use super::wire::{ErrorReply, QueryError};
use crate::error::Error;
use crate::server::Body;
use crate::session::StoreError;

/// A `status` answer with `value` as its JSON body.
pub(super) fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_else(|e| {
        format!("{{\"error\":\"response does not serialize: {e}\"}}").into_bytes()
    });
    respond(status, "application/json", body)
}

/// A `200 OK` with `value` as its JSON body.
pub(super) fn ok(value: &impl Serialize) -> Response<Body> {
    json(StatusCode::OK, value)
}

/// A `status` answer with `body` of `content_type`.
pub(super) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// An admin request that cannot be served. The message is the `error` of the JSON answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ApiError {
    /// The registry (or the supervisor) refused the operation.
    #[error(transparent)]
    Host(#[from] Error),
    /// A module upload could not be received.
    #[error(transparent)]
    Upload(#[from] UploadError),
    /// A request body could not be read.
    #[error("cannot read the body: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A request body is not the JSON the endpoint takes.
    #[error("expected JSON {expected}: {source}")]
    Json {
        /// An example of what it takes.
        expected: &'static str,
        /// What the parser found.
        source: serde_json::Error,
    },
    /// A query string parameter is out of range.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// An upload without a body.
    #[error("empty upload: send the module file as the request body")]
    EmptyUpload,
    /// `uploads.max_concurrent` uploads are already in progress.
    #[error(
        "{max} uploads are already in progress (uploads.max_concurrent); try again when one is \
         done"
    )]
    Busy {
        /// `uploads.max_concurrent`.
        max: usize,
    },
    /// No token, or the wrong one.
    #[error("missing or wrong admin token: send `Authorization: Bearer <token>`")]
    Unauthorized,
    /// Without a token, a request that does not come from the local operator.
    #[error(
        "refused: {0}. Without an admin token the admin API answers only requests from this \
         machine's own tools and dashboard. To call it from elsewhere, set a token (admin_token \
         in the config file, BATON_ADMIN_TOKEN or --admin-token) and send \
         `Authorization: Bearer <token>`"
    )]
    Forbidden(String),
    /// No route has this path.
    #[error("no such admin endpoint: {0}")]
    NoSuchEndpoint(String),
    /// The route exists, not with this method.
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The method asked for.
        method: Method,
        /// The path.
        path: String,
        /// The route's methods, for the `Allow` header.
        allow: String,
    },
    /// An undeploy of an app that serves nothing.
    #[error("{0} has no active version to undeploy")]
    NothingToUndeploy(String),
    /// The session store failed or cannot do this.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `prefix` is not the start of a session id.
    #[error("prefix must be lower-case hex digits of a session id, not {0:?}")]
    BadPrefix(String),
    /// Neither a session id nor a long enough prefix of one.
    #[error(
        "expected a session id or at least {min} of its first lower-case hex digits, not {given:?}"
    )]
    BadSessionId {
        /// What was given.
        given: String,
        /// The shortest prefix that names a session.
        min: usize,
    },
    /// No session has this id (or prefix).
    #[error("no session {0} (unknown, expired or invalidated)")]
    UnknownSession(String),
    /// The prefix matches several sessions.
    #[error("{0} matches more than one session: give more of the id")]
    AmbiguousSession(String),
}

impl ApiError {
    /// The answer's status.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::Host(e) => host_status(e),
            ApiError::Upload(UploadError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Upload(UploadError::Body(body)) if body.is_timeout() => {
                StatusCode::REQUEST_TIMEOUT
            }
            ApiError::Upload(UploadError::Body(_))
            | ApiError::Body(_)
            | ApiError::Json { .. }
            | ApiError::Query(_)
            | ApiError::EmptyUpload
            | ApiError::BadPrefix(_)
            | ApiError::BadSessionId { .. } => StatusCode::BAD_REQUEST,
            ApiError::Upload(UploadError::Write { .. }) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NoSuchEndpoint(_) | ApiError::UnknownSession(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NothingToUndeploy(_) | ApiError::AmbiguousSession(_) => StatusCode::CONFLICT,
            ApiError::Store(StoreError::Unsupported(_)) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Store(e) if e.is_outage() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON answer `{"error": ...}`, with the headers its status calls for.
    pub(crate) fn into_response(self) -> Response<Body> {
        let status = self.status();
        if status == StatusCode::INTERNAL_SERVER_ERROR && matches!(self, ApiError::Upload(_)) {
            tracing::error!(error = %self, "upload failed");
        }
        let mut response = json(
            status,
            &ErrorReply {
                error: self.to_string(),
            },
        );
        let headers = response.headers_mut();
        match &self {
            ApiError::Busy { .. } | ApiError::Store(_) if status.as_u16() == 503 => {
                headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            }
            ApiError::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                if let Ok(allow) = header::HeaderValue::from_str(allow) {
                    headers.insert(header::ALLOW, allow);
                }
            }
            // The rest of the body is not read: the connection cannot carry another request.
            ApiError::Upload(_) => {
                headers.insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
            }
            _ => {}
        }
        response
    }
}

/// The status of a registry error: the operator's mistake, an unknown name, or a state that
/// does not allow it now.
fn host_status(e: &Error) -> StatusCode {
    match e {
        Error::Load { .. } | Error::Start { .. } | Error::Invalid(_) => StatusCode::BAD_REQUEST,
        Error::UnknownApp(_) | Error::UnknownVersion { .. } | Error::NotQuarantined { .. } => {
            StatusCode::NOT_FOUND
        }
        Error::Conflict(_) | Error::Unsettled { .. } | Error::Quarantined { .. } => {
            StatusCode::CONFLICT
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An endpoint's result as a response.
pub(super) fn reply(result: Result<Response<Body>, ApiError>) -> Response<Body> {
    result.unwrap_or_else(ApiError::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_know_their_status_and_headers() {
        let busy = ApiError::Busy { max: 2 }.into_response();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
        let denied = ApiError::Unauthorized.into_response();
        assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(denied.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let not_allowed = ApiError::MethodNotAllowed {
            method: Method::PATCH,
            path: "/status".to_owned(),
            allow: "GET".to_owned(),
        }
        .into_response();
        assert_eq!(not_allowed.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(not_allowed.headers()[header::ALLOW], "GET");
        let unknown = ApiError::from(Error::UnknownApp("nope".to_owned()));
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
        let query = ApiError::from(QueryError::Percent("150".to_owned()));
        assert_eq!(query.status(), StatusCode::BAD_REQUEST);
        assert!(query.to_string().contains("between 0 and 100"));
    }
}
