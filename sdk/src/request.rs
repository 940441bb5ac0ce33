//! The request a handler sees: method, path relative to the app's mount, query, headers, body
//! and the parameters the router captured.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use http::Method;
use serde::de::DeserializeOwned;

use crate::abi::{HostIo, HostSession, RawHeaders};
use crate::assets::Assets;
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
    /// The body is larger than the app's limit (a 413).
    BodyTooLarge,
    /// The client stopped sending the body (a 408).
    BodyTimedOut,
    /// The body could not be read: the client went away or sent a malformed body.
    BodyUnreadable(String),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Json(e) => write!(f, "invalid JSON body: {e}"),
            RequestError::Query(e) => write!(f, "invalid query string: {e}"),
            RequestError::NotUtf8 => f.write_str("body is not valid UTF-8"),
            RequestError::Method => f.write_str("invalid method"),
            RequestError::BodyTooLarge => f.write_str("request body too large"),
            RequestError::BodyTimedOut => f.write_str("the client stopped sending the body"),
            RequestError::BodyUnreadable(why) => write!(f, "cannot read the request body: {why}"),
        }
    }
}

impl std::error::Error for RequestError {}

impl RequestError {
    /// The status this error answers with.
    pub(crate) fn status(&self) -> http::StatusCode {
        match self {
            RequestError::BodyTooLarge => http::StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::BodyTimedOut => http::StatusCode::REQUEST_TIMEOUT,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// Where the request came from and where the app is mounted.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Origin<'a> {
    pub(crate) mount: &'a str,
    pub(crate) peer: Address<'a, SocketAddr>,
    pub(crate) client: Address<'a, IpAddr>,
    pub(crate) https: bool,
}

/// An address as the host passed it: read when the handler asks for it, not for every
/// request (most never do).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Address<'a, T> {
    /// The host's text (empty when it does not know the address).
    Text(&'a str),
    /// Known already (a request made by [`RequestBuilder`]).
    Known(Option<T>),
}

impl<T> Default for Address<'_, T> {
    fn default() -> Self {
        Address::Known(None)
    }
}

impl<T: Copy + std::str::FromStr> Address<'_, T> {
    fn get(self) -> Option<T> {
        match self {
            Address::Text(text) => text.parse().ok(),
            Address::Known(known) => known,
        }
    }
}

/// The request body: what the host passed, and the rest it streams on demand.
pub(crate) struct Body<'a> {
    first: &'a [u8],
    complete: bool,
    host: Option<HostIo<'a>>,
    /// The whole body, once [`Request::body`] read it.
    whole: OnceCell<Vec<u8>>,
    /// Why the whole body could not be read.
    failure: OnceCell<RequestError>,
    /// A reader has taken the body.
    taken: std::cell::Cell<bool>,
}

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
    body: Rc<Body<'a>>,
    params: Vec<(&'a str, &'a str)>,
    session: Backend<'a>,
    origin: Origin<'a>,
    assets: Option<&'a Assets>,
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
            .field("body_complete", &self.body.complete)
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
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_host(
        method: &[u8],
        path: &'a [u8],
        query: &'a [u8],
        headers: RawHeaders<'a>,
        body: (&'a [u8], bool),
        session: Option<HostSession<'a>>,
        io: Option<HostIo<'a>>,
        origin: Origin<'a>,
        assets: &'a Assets,
    ) -> Self {
        Request {
            method: Method::from_bytes(method).unwrap_or(Method::GET),
            path: utf8(path),
            query: utf8(query),
            headers: Headers::Raw(headers),
            body: Rc::new(Body::new(body.0, body.1, io)),
            params: Vec::new(),
            session: session.map_or(Backend::None, Backend::Host),
            origin,
            assets: Some(assets),
            extensions: Default::default(),
        }
    }

    /// The body's state, which outlives the request's dispatch: the glue asks it afterwards
    /// whether the handler could have the whole body ([`Body::failure`]).
    pub(crate) fn body_state(&self) -> Rc<Body<'a>> {
        Rc::clone(&self.body)
    }

    /// The host's streaming callbacks of this request, if any.
    pub(crate) fn host_io(&self) -> Option<HostIo<'a>> {
        self.body.host
    }

    /// Starts a request for unit tests of handlers and routers.
    pub fn builder(method: &str, path: &'a str) -> RequestBuilder<'a> {
        RequestBuilder {
            method: method.to_owned(),
            path,
            query: "",
            headers: &[],
            body: &[],
            mount: "",
            peer: None,
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

    /// The whole body, read into memory (up to the app's `max_body_bytes`).
    ///
    /// A small body comes with the request; a large one is read from the client on the first
    /// call. If it cannot be read whole (larger than the limit, the client stalled or went
    /// away), this returns the part that was read and the response becomes that error's (413,
    /// 408 or 400) in place of the handler's; [`Request::try_body`] returns the error instead.
    /// For a body larger than memory use [`Request::body_reader`].
    pub fn body(&self) -> &[u8] {
        match self.try_body() {
            Ok(body) => body,
            Err(_) => self.body.whole.get().map_or(self.body.first, Vec::as_slice),
        }
    }

    /// The whole body, or why it could not be read.
    ///
    /// ```
    /// let req = baton_sdk::Request::builder("POST", "/").body(b"{}").build();
    /// assert_eq!(req.try_body().unwrap(), b"{}");
    /// ```
    ///
    /// # Errors
    /// [`RequestError::BodyTooLarge`] (413), [`RequestError::BodyTimedOut`] (408) or
    /// [`RequestError::BodyUnreadable`] (400), all of which answer themselves with `?`.
    pub fn try_body(&self) -> Result<&[u8], RequestError> {
        self.body.whole()
    }

    /// Reads the body as it arrives, without holding it in memory: for uploads of any size
    /// within the app's `max_body_bytes`.
    ///
    /// Read errors are [`std::io::Error`]s; past the limit the error's kind is `FileTooLarge`,
    /// and `?` on it in a handler answers 413 (408 for a client that stalls). A body already read
    /// with [`Request::body`] is read again from memory; a second reader gets nothing.
    ///
    /// ```
    /// use std::io::Read;
    /// use baton_sdk::Request;
    ///
    /// let req = Request::builder("POST", "/upload").body(b"0123456789").build();
    /// let mut reader = req.body_reader();
    /// let mut first = [0u8; 4];
    /// reader.read_exact(&mut first).unwrap();
    /// let mut rest = Vec::new();
    /// reader.read_to_end(&mut rest).unwrap();
    /// assert_eq!((&first[..], &rest[..]), (&b"0123"[..], &b"456789"[..]));
    /// ```
    pub fn body_reader(&self) -> BodyReader<'_> {
        let source = if let Some(whole) = self.body.whole.get() {
            Source::Memory(whole)
        } else if self.body.taken.replace(true) {
            Source::Memory(&[])
        } else if self.body.complete {
            Source::Memory(self.body.first)
        } else {
            Source::Host {
                first: self.body.first,
                io: self.body.host,
            }
        };
        BodyReader { source }
    }

    /// The body as UTF-8 text.
    ///
    /// # Errors
    /// [`RequestError::NotUtf8`] (a 400 with `?`), or why the body could not be read.
    pub fn text(&self) -> Result<&str, RequestError> {
        std::str::from_utf8(self.try_body()?).map_err(|_| RequestError::NotUtf8)
    }

    /// The body deserialized from JSON.
    ///
    /// # Errors
    /// [`RequestError::Json`] (a 400 with `?`), or why the body could not be read.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, RequestError> {
        serde_json::from_slice(self.try_body()?).map_err(RequestError::Json)
    }

    /// Where the app is mounted, e.g. `/notes` (empty for an app at the root): prefix it to
    /// build links, as a servlet's context path.
    ///
    /// ```
    /// let req = baton_sdk::Request::builder("GET", "/").mount("/notes").build();
    /// assert_eq!(format!("{}/login", req.mount()), "/notes/login");
    /// ```
    pub fn mount(&self) -> &'a str {
        self.origin.mount
    }

    /// The TCP peer: the client, or the proxy in front of the host.
    ///
    /// ```
    /// let peer = "192.0.2.7:50123".parse().unwrap();
    /// let req = baton_sdk::Request::builder("GET", "/").peer_addr(peer).build();
    /// assert_eq!(req.peer_addr(), Some(peer));
    /// ```
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.origin.peer.get()
    }

    /// The client's address: the peer's, or, when the peer is one of the host's
    /// `http.trusted_proxies`, the address it forwarded (`Forwarded` or `X-Forwarded-For`).
    ///
    /// ```
    /// let req = baton_sdk::Request::builder("GET", "/")
    ///     .peer_addr("192.0.2.7:50123".parse().unwrap())
    ///     .build();
    /// assert_eq!(req.client_addr(), Some("192.0.2.7".parse().unwrap()));
    /// ```
    pub fn client_addr(&self) -> Option<IpAddr> {
        self.origin
            .client
            .get()
            .or_else(|| self.peer_addr().map(|p| p.ip()))
    }

    /// `https` or `http`, as the client used it (a trusted proxy's `X-Forwarded-Proto` or
    /// `Forwarded: proto=` included).
    ///
    /// ```
    /// let req = baton_sdk::Request::builder("GET", "/").build();
    /// assert_eq!((req.scheme(), req.is_secure()), ("http", false));
    /// ```
    pub fn scheme(&self) -> &'static str {
        if self.origin.https { "https" } else { "http" }
    }

    /// Whether the client used HTTPS.
    pub fn is_secure(&self) -> bool {
        self.origin.https
    }

    /// Whether the version handling this request stopped taking new requests (a newer version
    /// took over, or the host is stopping). Always `false` outside a host.
    ///
    /// ```
    /// assert!(!baton_sdk::Request::builder("GET", "/").build().is_draining());
    /// ```
    pub fn is_draining(&self) -> bool {
        self.body.host.is_some_and(|io| io.draining())
    }

    /// The versioned URL of one of the app's [assets](crate::Assets), with the mount:
    /// `/notes/static/app.css?v=HASH`. The host answers it from the version whose file has that
    /// hash, so a page keeps its own version's files during a swap. `None` if there is no such
    /// file (and outside a host, which lists the app's assets).
    ///
    /// ```
    /// assert_eq!(baton_sdk::Request::builder("GET", "/").build().asset_url("/app.css"), None);
    /// ```
    pub fn asset_url(&self, path: &str) -> Option<String> {
        let url = self.assets?.url(path)?;
        Some(format!("{}{url}", self.origin.mount))
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
    mount: &'a str,
    peer: Option<SocketAddr>,
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

    /// Sets the app's mount (e.g. `/notes`).
    pub fn mount(mut self, mount: &'a str) -> Self {
        self.mount = mount;
        self
    }

    /// Sets the TCP peer's address.
    pub fn peer_addr(mut self, peer: SocketAddr) -> Self {
        self.peer = Some(peer);
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
            body: Rc::new(Body::new(self.body, true, None)),
            params: Vec::new(),
            origin: Origin {
                mount: self.mount,
                peer: Address::Known(self.peer),
                client: Address::Known(None),
                https: false,
            },
            assets: None,
            #[cfg(feature = "test-util")]
            session: self.session.map_or(Backend::None, Backend::Test),
            #[cfg(not(feature = "test-util"))]
            session: Backend::None,
            extensions: Default::default(),
        }
    }
}

impl<'a> Body<'a> {
    /// Why the handler could not have the whole body, if it asked for it with [`Request::body`].
    pub(crate) fn failure(&self) -> Option<&RequestError> {
        self.failure.get()
    }

    fn new(first: &'a [u8], complete: bool, host: Option<HostIo<'a>>) -> Self {
        Body {
            first,
            complete: complete || host.is_none(),
            host,
            whole: OnceCell::new(),
            failure: OnceCell::new(),
            taken: std::cell::Cell::new(false),
        }
    }

    fn whole(&self) -> Result<&[u8], RequestError> {
        if self.complete {
            return Ok(self.first);
        }
        if let Some(e) = self.failure.get() {
            return Err(e.clone());
        }
        if let Some(whole) = self.whole.get() {
            return Ok(whole);
        }
        if self.taken.replace(true) {
            // A reader consumed it.
            return Ok(&[]);
        }
        let mut whole = self.first.to_vec();
        let mut reader = BodyReader {
            source: Source::Host {
                first: &[],
                io: self.host,
            },
        };
        let outcome = reader.read_to_end(&mut whole);
        let whole = self.whole.get_or_init(|| whole);
        match outcome {
            Ok(_) => Ok(whole),
            Err(e) => Err(self
                .failure
                .get_or_init(|| RequestError::from_io(&e))
                .clone()),
        }
    }
}

impl RequestError {
    /// The sdk's error inside an I/O error from the body, or a generic unreadable body.
    pub(crate) fn from_io(e: &std::io::Error) -> RequestError {
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<RequestError>())
        {
            Some(inner) => inner.clone(),
            None => RequestError::BodyUnreadable(e.to_string()),
        }
    }
}

impl Clone for RequestError {
    fn clone(&self) -> Self {
        match self {
            // serde's errors are not Clone: keep their text.
            RequestError::Json(e) => {
                RequestError::BodyUnreadable(format!("invalid JSON body: {e}"))
            }
            RequestError::Query(e) => {
                RequestError::BodyUnreadable(format!("invalid query string: {e}"))
            }
            RequestError::NotUtf8 => RequestError::NotUtf8,
            RequestError::Method => RequestError::Method,
            RequestError::BodyTooLarge => RequestError::BodyTooLarge,
            RequestError::BodyTimedOut => RequestError::BodyTimedOut,
            RequestError::BodyUnreadable(why) => RequestError::BodyUnreadable(why.clone()),
        }
    }
}

enum Source<'r> {
    Memory(&'r [u8]),
    Host {
        first: &'r [u8],
        io: Option<HostIo<'r>>,
    },
}

/// The request body as it arrives, from [`Request::body_reader`].
pub struct BodyReader<'r> {
    source: Source<'r>,
}

impl fmt::Debug for BodyReader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyReader").finish_non_exhaustive()
    }
}

impl Read for BodyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match &mut self.source {
            Source::Memory(rest) => rest.read(buf),
            Source::Host { first, io } => {
                if !first.is_empty() {
                    return first.read(buf);
                }
                match io {
                    Some(io) => io.read(buf),
                    None => Ok(0),
                }
            }
        }
    }
}
