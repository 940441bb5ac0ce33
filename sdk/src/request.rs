//! The request a handler sees: method, path relative to the app's mount, query, headers, body
//! and the parameters the router captured.

use std::borrow::Cow;
use std::fmt;

use http::Method;
use serde::de::DeserializeOwned;

use crate::abi::{HostSession, RawHeaders};
#[cfg(feature = "test-util")]
use crate::session::TestSession;
use crate::session::{Backend, Session};

/// A request that could not be read as the handler asked; converts into a 400 with `?`.
#[derive(Debug)]
#[non_exhaustive]
pub enum RequestError {
    /// The body is not valid JSON for the requested type.
    Json(serde_json::Error),
    /// The query string does not fit the requested type.
    Query(serde_urlencoded::de::Error),
    /// The body is not UTF-8.
    NotUtf8,
    /// The method is not a valid HTTP token.
    Method,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Json(e) => write!(f, "invalid JSON body: {e}"),
            RequestError::Query(e) => write!(f, "invalid query string: {e}"),
            RequestError::NotUtf8 => f.write_str("body is not valid UTF-8"),
            RequestError::Method => f.write_str("invalid method"),
        }
    }
}

impl std::error::Error for RequestError {}

/// One HTTP request, borrowed from the host for the duration of the handler call.
///
/// ```
/// use baton_sdk::Request;
///
/// let req = Request::builder("GET", "/users/7").query("verbose=1&name=a%20b").build();
/// assert_eq!(req.path(), "/users/7");
/// assert_eq!(req.query_param("name").as_deref(), Some("a b"));
/// ```
pub struct Request<'a> {
    method: Method,
    path: &'a str,
    query: &'a str,
    headers: Headers<'a>,
    body: &'a [u8],
    params: Vec<(&'a str, &'a str)>,
    session: Backend<'a>,
    extensions: std::cell::RefCell<http::Extensions>,
}

enum Headers<'a> {
    Raw(RawHeaders<'a>),
    Owned(&'a [(String, String)]),
}

impl fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("body_len", &self.body.len())
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

fn utf8(bytes: &[u8]) -> &str {
    // The host only passes UTF-8 paths and queries (it percent-encodes nothing else).
    std::str::from_utf8(bytes).unwrap_or("")
}

impl<'a> Request<'a> {
    /// A request from parts the boundary glue has already made safe to borrow.
    pub(crate) fn from_host(
        method: &[u8],
        path: &'a [u8],
        query: &'a [u8],
        headers: RawHeaders<'a>,
        body: &'a [u8],
        session: Option<HostSession<'a>>,
    ) -> Self {
        Request {
            method: Method::from_bytes(method).unwrap_or(Method::GET),
            path: utf8(path),
            query: utf8(query),
            headers: Headers::Raw(headers),
            body,
            params: Vec::new(),
            session: session.map_or(Backend::None, Backend::Host),
            extensions: Default::default(),
        }
    }

    /// Starts a request for unit tests of handlers and routers.
    pub fn builder(method: &str, path: &'a str) -> RequestBuilder<'a> {
        RequestBuilder {
            method: method.to_owned(),
            path,
            query: "",
            headers: &[],
            body: &[],
            #[cfg(feature = "test-util")]
            session: None,
        }
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path relative to the app's mount; always starts with `/`. Still percent-encoded.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The raw query string, without `?`; empty when there is none.
    pub fn query_str(&self) -> &'a str {
        self.query
    }

    /// One query parameter, percent-decoded; the first if it repeats.
    pub fn query_param(&self, name: &str) -> Option<Cow<'a, str>> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The whole query string deserialized into `T`.
    ///
    /// # Errors
    /// [`RequestError::Query`] (a 400 with `?`) if the query does not fit `T`.
    pub fn query<T: DeserializeOwned>(&self) -> Result<T, RequestError> {
        serde_urlencoded::from_str(self.query).map_err(RequestError::Query)
    }

    /// The first value of a header, by case-insensitive name, if it is valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// All headers with UTF-8 values, names in lower case, in arrival order.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let (raw, owned) = match &self.headers {
            Headers::Raw(raw) => (Some(*raw), &[][..]),
            Headers::Owned(owned) => (None, *owned),
        };
        let raw = raw
            .into_iter()
            .flat_map(RawHeaders::iter)
            .filter_map(|(name, value)| {
                Some((
                    std::str::from_utf8(name).ok()?,
                    std::str::from_utf8(value).ok()?,
                ))
            });
        raw.chain(owned.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    }

    /// The body bytes.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The body as UTF-8 text.
    ///
    /// # Errors
    /// [`RequestError::NotUtf8`] (a 400 with `?`).
    pub fn text(&self) -> Result<&'a str, RequestError> {
        std::str::from_utf8(self.body).map_err(|_| RequestError::NotUtf8)
    }

    /// The body deserialized from JSON.
    ///
    /// # Errors
    /// [`RequestError::Json`] (a 400 with `?`).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, RequestError> {
        serde_json::from_slice(self.body).map_err(RequestError::Json)
    }

    /// A path parameter captured by the router, e.g. `id` for `/users/{id}`.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }

    /// The client's session: typed attributes the host stores between requests.
    ///
    /// Taking the handle costs nothing; the store is first contacted when the handler reads or
    /// writes through it. See [`Session`].
    ///
    /// ```
    /// use baton_sdk::{Request, Result, TestSession};
    ///
    /// fn whoami(req: &Request) -> Result<String> {
    ///     let user: Option<String> = req.session().get("user")?;
    ///     Ok(user.unwrap_or_else(|| "anonymous".to_owned()))
    /// }
    ///
    /// let session = TestSession::new();
    /// session.insert_json("user", "\"ada\"");
    /// let req = Request::builder("GET", "/whoami").session(&session).build();
    /// assert_eq!(whoami(&req).unwrap(), "ada");
    /// ```
    pub fn session(&self) -> Session<'a> {
        Session::new(self.session)
    }

    /// Stores a value for later layers and the handler (one per type: it replaces an earlier one).
    ///
    /// ```
    /// # #[derive(Clone)] struct User(String);
    /// let req = baton_sdk::Request::builder("GET", "/").build();
    /// req.insert_extension(User("ada".to_owned()));
    /// assert_eq!(req.extension::<User>().unwrap().0, "ada");
    /// ```
    pub fn insert_extension<T: Clone + Send + Sync + 'static>(&self, value: T) {
        self.extensions.borrow_mut().insert(value);
    }

    /// A copy of the value of type `T` a layer stored with [`Request::insert_extension`].
    ///
    /// ```
    /// let req = baton_sdk::Request::builder("GET", "/").build();
    /// assert_eq!(req.extension::<u32>(), None);
    /// ```
    pub fn extension<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.extensions.borrow().get::<T>().cloned()
    }

    pub(crate) fn set_params(&mut self, params: Vec<(&'a str, &'a str)>) {
        self.params = params;
    }
}

/// Builds a [`Request`] outside the host, for tests.
#[derive(Debug)]
pub struct RequestBuilder<'a> {
    method: String,
    path: &'a str,
    query: &'a str,
    headers: &'a [(String, String)],
    body: &'a [u8],
    #[cfg(feature = "test-util")]
    session: Option<&'a TestSession>,
}

impl<'a> RequestBuilder<'a> {
    /// Sets the query string (without `?`).
    pub fn query(mut self, query: &'a str) -> Self {
        self.query = query;
        self
    }

    /// Sets the headers (names in lower case).
    pub fn headers(mut self, headers: &'a [(String, String)]) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: &'a [u8]) -> Self {
        self.body = body;
        self
    }

    /// Gives the request a session kept in `session` (without one, session calls fail with
    /// [`SessionError::Unsupported`](crate::SessionError::Unsupported)). Needs the sdk's
    /// `test-util` feature.
    #[cfg(feature = "test-util")]
    pub fn session(mut self, session: &'a TestSession) -> Self {
        self.session = Some(session);
        self
    }

    /// The request.
    pub fn build(self) -> Request<'a> {
        Request {
            method: Method::from_bytes(self.method.as_bytes()).unwrap_or(Method::GET),
            path: self.path,
            query: self.query,
            headers: Headers::Owned(self.headers),
            body: self.body,
            params: Vec::new(),
            #[cfg(feature = "test-util")]
            session: self.session.map_or(Backend::None, Backend::Test),
            #[cfg(not(feature = "test-util"))]
            session: Backend::None,
            extensions: Default::default(),
        }
    }
}
