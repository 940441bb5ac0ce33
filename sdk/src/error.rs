//! The error type handlers return; it knows which HTTP status it becomes.

use std::fmt;

use http::StatusCode;

use crate::response::{IntoResponse, Response};

/// `Result` with the sdk's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error a handler (or `init`, `warmup`) returns, carrying the HTTP status it maps to.
///
/// Client errors (4xx) show their message in the response body; server errors (5xx) show only
/// the status text, and their message goes to the host's log under the app's name and version.
/// Any `std::error::Error` converts into a 500 with `?`, except the sdk's own: a
/// [`RequestError`](crate::RequestError) becomes a 400, and a
/// [`SessionError::Unavailable`](crate::SessionError::Unavailable) a 503 with `Retry-After: 1`.
///
/// ```
/// use baton_sdk::{Error, StatusCode};
///
/// let e = Error::bad_request("missing ?name");
/// assert_eq!(e.status(), StatusCode::BAD_REQUEST);
/// assert_eq!(e.message(), "missing ?name");
/// ```
pub struct Error {
    status: StatusCode,
    message: String,
    retry_after_secs: Option<u32>,
}

impl Error {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Error {
            status,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404 Not Found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 500 Internal Server Error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// 503 Service Unavailable, telling the client to retry after `secs` seconds.
    pub fn unavailable(message: impl Into<String>, retry_after_secs: u32) -> Self {
        Error {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }

    /// The HTTP status this error becomes.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Error {
    fn from(e: E) -> Self {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        let status = crate::error::status_of(&e);
        Error {
            status,
            message,
            retry_after_secs: (status == StatusCode::SERVICE_UNAVAILABLE).then_some(1),
        }
    }
}

/// The status an sdk error type maps to when it is converted with `?`.
fn status_of(e: &(dyn std::error::Error + 'static)) -> StatusCode {
    if let Some(e) = e.downcast_ref::<crate::request::RequestError>() {
        return e.status();
    }
    if let Some(e) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| inner.downcast_ref::<crate::request::RequestError>())
    {
        return e.status();
    }
    match e.downcast_ref::<crate::session::SessionError>() {
        Some(crate::session::SessionError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = if self.status.is_server_error() {
            format!("{}\n", self.status)
        } else {
            format!("{}\n", self.message)
        };
        let mut response = Response::text(body).with_status(self.status);
        if let Some(secs) = self.retry_after_secs {
            response = response.with_header("retry-after", secs.to_string());
        }
        response.with_error(self.message)
    }
}
