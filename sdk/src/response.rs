//! Responses and the conversions handlers use to produce them.

use http::StatusCode;
use serde::Serialize;

/// An HTTP response built by a handler.
///
/// ```
/// use baton_sdk::{Response, StatusCode};
///
/// let r = Response::text("created\n")
///     .with_status(StatusCode::CREATED)
///     .with_header("x-request-kind", "demo");
/// assert_eq!(r.status(), StatusCode::CREATED);
/// assert_eq!(r.body(), b"created\n");
/// assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
/// ```
#[derive(Debug, Clone)]
pub struct Response {
    status: StatusCode,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// A failure to report in the host's log; not sent to the client.
    error: Option<String>,
}

impl Default for Response {
    fn default() -> Self {
        Self::new(StatusCode::OK)
    }
}

impl Response {
    /// An empty response with this status.
    pub fn new(status: StatusCode) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            error: None,
        }
    }

    /// 200 with a UTF-8 plain-text body.
    pub fn text(body: impl Into<String>) -> Self {
        Self::new(StatusCode::OK)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(body.into())
    }

    /// 200 with an HTML body.
    pub fn html(body: impl Into<String>) -> Self {
        Self::new(StatusCode::OK)
            .with_header("content-type", "text/html; charset=utf-8")
            .with_body(body.into())
    }

    /// 200 with `value` as a JSON body; a value that fails to serialize gives a 500.
    ///
    /// ```
    /// let r = baton_sdk::Response::json(&serde_json::json!({"ok": true}));
    /// assert_eq!(r.body(), br#"{"ok":true}"#);
    /// ```
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self::new(StatusCode::OK)
                .with_header("content-type", "application/json")
                .with_body(body),
            Err(e) => Self::new(StatusCode::INTERNAL_SERVER_ERROR)
                .with_error(format!("response does not serialize to JSON: {e}")),
        }
    }

    /// Replaces the status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Adds a header (several with one name are allowed); a `content-type` replaces the earlier.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into().to_ascii_lowercase();
        if name == "content-type" {
            self.headers.retain(|(n, _)| n != "content-type");
        }
        self.headers.push((name, value.into()));
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Attaches a message for the host's log (the client does not see it).
    pub fn with_error(mut self, message: impl Into<String>) -> Self {
        self.error = Some(message.into());
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All headers, names in lower case.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The message for the host's log, if the response reports a failure.
    pub(crate) fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

/// Anything a handler may return.
///
/// ```
/// use baton_sdk::{IntoResponse, Json, StatusCode};
///
/// assert_eq!("hi".into_response().body(), b"hi");
/// assert_eq!(StatusCode::NO_CONTENT.into_response().status(), StatusCode::NO_CONTENT);
/// assert_eq!((StatusCode::CREATED, "made").into_response().status(), StatusCode::CREATED);
/// assert_eq!(Json(vec![1, 2]).into_response().body(), b"[1,2]");
/// ```
pub trait IntoResponse {
    /// Converts into a response.
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

impl IntoResponse for String {
    fn into_response(self) -> Response {
        Response::text(self)
    }
}

impl IntoResponse for &'static str {
    fn into_response(self) -> Response {
        Response::text(self)
    }
}

impl IntoResponse for StatusCode {
    fn into_response(self) -> Response {
        Response::new(self)
    }
}

impl<T: IntoResponse> IntoResponse for (StatusCode, T) {
    fn into_response(self) -> Response {
        self.1.into_response().with_status(self.0)
    }
}

impl<T: IntoResponse, E: IntoResponse> IntoResponse for Result<T, E> {
    fn into_response(self) -> Response {
        match self {
            Ok(value) => value.into_response(),
            Err(e) => e.into_response(),
        }
    }
}

/// A JSON response body: `Json(value)` serializes `value` with serde.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        Response::json(&self.0)
    }
}
