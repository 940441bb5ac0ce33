//! Responses and the conversions handlers use to produce them.

use http::StatusCode;
use serde::Serialize;

use crate::stream::BodyWriter;

/// What writes a streamed body: runs after the status and headers went out.
pub(crate) type StreamFn = Box<dyn FnOnce(&mut BodyWriter<'_>) -> std::io::Result<()> + Send>;

/// A response body: bytes, or a function that streams it.
pub(crate) enum Body {
    Bytes(Vec<u8>),
    Stream(StreamFn),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Bytes(b) => write!(f, "{} bytes", b.len()),
            Body::Stream(_) => f.write_str("stream"),
        }
    }
}

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
#[derive(Debug)]
pub struct Response {
    status: StatusCode,
    headers: Vec<(String, String)>,
    body: Body,
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
            body: Body::Bytes(Vec::new()),
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
        self.body = Body::Bytes(body.into());
        self
    }

    /// 200 with a body that `write` streams: the status and headers go out first, then each
    /// piece as `write` produces it, with backpressure (see [`BodyWriter`]). For downloads and
    /// exports larger than memory, and live streams. `write` runs on the handler's thread after
    /// the handler returned; an error it returns after the first bytes went out aborts the
    /// response (the client sees it cut), before that it becomes a 500.
    ///
    /// The session must be changed before the stream starts: changes are stored, and the
    /// session cookie sent, with the headers.
    ///
    /// ```
    /// use std::io::Write;
    /// use baton_sdk::Response;
    ///
    /// let r = Response::stream(|out| out.write_all(b"id,text\n1,hello\n"))
    ///     .with_header("content-type", "text/csv");
    /// assert!(r.is_stream());
    /// assert_eq!(r.into_bytes().unwrap(), b"id,text\n1,hello\n");
    /// ```
    pub fn stream<F>(write: F) -> Self
    where
        F: FnOnce(&mut BodyWriter<'_>) -> std::io::Result<()> + Send + 'static,
    {
        Response {
            body: Body::Stream(Box::new(write)),
            ..Self::new(StatusCode::OK)
        }
    }

    /// A stream of server-sent events: [`Response::stream`] with `content-type:
    /// text/event-stream`, `cache-control: no-cache` and `x-accel-buffering: no` (so a proxy such
    /// as nginx passes each event on at once).
    ///
    /// ```
    /// use baton_sdk::{Event, Response};
    ///
    /// let r = Response::event_stream(|out| out.send_event(&Event::new("hi")));
    /// assert_eq!(r.header("content-type"), Some("text/event-stream"));
    /// assert_eq!(r.header("cache-control"), Some("no-cache"));
    /// assert_eq!(r.header("x-accel-buffering"), Some("no"));
    /// assert_eq!(r.into_bytes().unwrap(), b"data: hi\n\n");
    /// ```
    pub fn event_stream<F>(write: F) -> Self
    where
        F: FnOnce(&mut BodyWriter<'_>) -> std::io::Result<()> + Send + 'static,
    {
        Self::stream(write)
            .with_header("content-type", "text/event-stream")
            .with_header("cache-control", "no-cache")
            .with_header("x-accel-buffering", "no")
    }

    /// Whether the body is streamed.
    pub fn is_stream(&self) -> bool {
        matches!(self.body, Body::Stream(_))
    }

    /// The whole body in memory, running a stream to its end: for tests.
    ///
    /// # Errors
    /// The stream function's error.
    pub fn into_bytes(self) -> std::io::Result<Vec<u8>> {
        match self.body {
            Body::Bytes(bytes) => Ok(bytes),
            Body::Stream(write) => {
                let mut buf = Vec::new();
                {
                    let mut out = BodyWriter::to_memory(&mut buf);
                    write(&mut out)?;
                    std::io::Write::flush(&mut out)?;
                }
                Ok(buf)
            }
        }
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

    /// The body; empty for a streamed body (see [`Response::into_bytes`]).
    pub fn body(&self) -> &[u8] {
        match &self.body {
            Body::Bytes(bytes) => bytes,
            Body::Stream(_) => &[],
        }
    }

    pub(crate) fn into_parts(self) -> (StatusCode, Vec<(String, String)>, Body, Option<String>) {
        (self.status, self.headers, self.body, self.error)
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
