//! The session of the client making a request: typed attributes stored by the host.
//!
//! Values are stored as JSON, one attribute at a time, so an attribute written by one version of
//! an app and read by another only has to decode on its own: if it no longer fits the type asked
//! for, that read fails with [`SessionError::Decode`] and every other attribute stays readable.

#[cfg(feature = "test-util")]
mod test_session;

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::abi::{HostSession, SessionFailure, UpdateStep};
#[cfg(feature = "test-util")]
pub use test_session::TestSession;

/// A session operation that failed.
///
/// Converted into a handler [`Error`](crate::Error) with `?`, [`Unavailable`] becomes a
/// `503 Service Unavailable` with `Retry-After` (the store is down; the client may retry), every
/// other variant a `500`. A handler that can do without the failed attribute handles the error
/// instead, e.g. treats a [`Decode`] error as an absent value.
///
/// ```
/// use baton_sdk::{Error, SessionError, StatusCode};
///
/// let e: Error = SessionError::Unavailable("store timed out".into()).into();
/// assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
/// ```
///
/// [`Unavailable`]: SessionError::Unavailable
/// [`Decode`]: SessionError::Decode
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionError {
    /// The session store cannot be reached right now; nothing was changed.
    Unavailable(String),
    /// The stored value of one attribute does not decode as the type asked for (for example, an
    /// older version of the app stored another type under that name).
    Decode {
        /// The attribute.
        name: String,
        /// What serde reported.
        source: serde_json::Error,
    },
    /// The value to store does not serialize to JSON.
    Encode {
        /// The attribute.
        name: String,
        /// What serde reported.
        source: serde_json::Error,
    },
    /// The host refused the operation, e.g. an attribute name that is empty, longer than 256
    /// bytes or starts with `#`.
    Rejected(String),
    /// This request has no session support: a request built with [`Request::builder`] without
    /// a `TestSession`, or a host that offers no sessions.
    ///
    /// [`Request::builder`]: crate::Request::builder
    Unsupported,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Unavailable(why) => write!(f, "session store unavailable: {why}"),
            SessionError::Decode { name, .. } => {
                write!(f, "session attribute {name:?} does not decode")
            }
            SessionError::Encode { name, .. } => {
                write!(f, "session attribute {name:?} does not encode")
            }
            SessionError::Rejected(why) => write!(f, "session operation refused: {why}"),
            SessionError::Unsupported => f.write_str("this request has no session support"),
        }
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SessionError::Decode { source, .. } | SessionError::Encode { source, .. } => {
                Some(source)
            }
            _ => None,
        }
    }
}

impl SessionError {
    /// Whether this is a [`Decode`](SessionError::Decode) error: the stored value exists but has
    /// another shape than the type asked for.
    pub fn is_decode(&self) -> bool {
        matches!(self, SessionError::Decode { .. })
    }

    /// Whether the store is unavailable (a `503` when propagated).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, SessionError::Unavailable(_))
    }
}

impl From<SessionFailure> for SessionError {
    fn from(failure: SessionFailure) -> Self {
        match failure {
            SessionFailure::Unavailable(why) => SessionError::Unavailable(why),
            SessionFailure::Failed(why) => SessionError::Rejected(why),
        }
    }
}

/// Where a request's session lives.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend<'a> {
    None,
    Host(HostSession<'a>),
    #[cfg(feature = "test-util")]
    Test(&'a TestSession),
}

/// Runs `$host` on the host's session or `$test` on a test session; without a session the
/// operation is [`SessionError::Unsupported`].
macro_rules! on_backend {
    ($backend:expr, |$h:ident| $host:expr, |$t:ident| $test:expr) => {
        match $backend {
            Backend::None => Err(SessionError::Unsupported),
            Backend::Host($h) => Ok($host?),
            #[cfg(feature = "test-util")]
            Backend::Test($t) => $test,
        }
    };
}

impl Backend<'_> {
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, SessionError> {
        on_backend!(self, |host| host.get(name), |test| test.get(name))
    }

    fn set(&self, name: &str, value: &[u8]) -> Result<(), SessionError> {
        on_backend!(self, |host| host.set(name, value), |test| test
            .set(name, Some(value)))
    }

    fn remove(&self, name: &str) -> Result<(), SessionError> {
        on_backend!(self, |host| host.remove(name), |test| test.set(name, None))
    }

    fn update(&self, name: &str, f: &mut UpdateStep<'_>) -> Result<(), SessionError> {
        on_backend!(self, |host| host.update(name, f), |test| {
            let old = test.get(name)?;
            match f(old.as_deref()) {
                Some(new) => test.set(name, Some(&new)),
                None => Err(SessionError::Rejected("update aborted by the app".into())),
            }
        })
    }

    fn names(&self) -> Result<Vec<String>, SessionError> {
        let json = match self {
            Backend::None => return Err(SessionError::Unsupported),
            Backend::Host(host) => host.names()?,
            #[cfg(feature = "test-util")]
            Backend::Test(test) => return test.names(),
        };
        serde_json::from_slice(&json)
            .map_err(|e| SessionError::Rejected(format!("host sent malformed names: {e}")))
    }

    fn id(&self) -> Result<Option<String>, SessionError> {
        on_backend!(self, |host| host.id(), |test| test
            .check()
            .map(|()| test.id()))
    }

    fn invalidate(&self) -> Result<(), SessionError> {
        on_backend!(self, |host| host.invalidate(), |test| test.invalidate())
    }

    fn rotate(&self) -> Result<(), SessionError> {
        on_backend!(self, |host| host.rotate(), |test| test.rotate())
    }
}

/// The session of the client making the request, from [`Request::session`].
///
/// Nothing is read from the store until the handler first uses the session, and a session (with
/// its cookie) is only created when the handler first writes to it. Reads see the session as it
/// was when first read plus this request's own writes. [`insert`](Session::insert) and
/// [`remove`](Session::remove) are stored when the request ends, together, and only the
/// attributes the request changed: two requests of one session that change different attributes
/// never undo each other. [`update`](Session::update) is atomic and immediate: use it for a
/// value that concurrent requests modify, like a counter or a cart.
///
/// ```
/// use baton_sdk::{Request, Result, TestSession};
///
/// fn visit(req: &Request) -> Result<String> {
///     let session = req.session();
///     let visits = session.update("visits", |n: Option<u64>| n.unwrap_or(0) + 1)?;
///     let name: Option<String> = session.get("name")?;
///     Ok(format!("{} has visited {visits} times", name.as_deref().unwrap_or("someone")))
/// }
///
/// let session = TestSession::new();
/// let req = Request::builder("GET", "/").session(&session).build();
/// req.session().insert("name", "ada").unwrap();
/// assert_eq!(visit(&req).unwrap(), "ada has visited 1 times");
/// assert_eq!(visit(&req).unwrap(), "ada has visited 2 times");
/// ```
///
/// [`Request::session`]: crate::Request::session
#[derive(Debug, Clone, Copy)]
pub struct Session<'r> {
    backend: Backend<'r>,
}

impl<'r> Session<'r> {
    pub(crate) fn new(backend: Backend<'r>) -> Self {
        Session { backend }
    }

    /// One attribute decoded from JSON into `T`, or `None` if the session or the attribute does
    /// not exist.
    ///
    /// ```
    /// # use baton_sdk::{Request, TestSession};
    /// # let test = TestSession::new();
    /// # let req = Request::builder("GET", "/").session(&test).build();
    /// let session = req.session();
    /// session.insert("cart", &vec![3, 4])?;
    /// assert_eq!(session.get::<Vec<u32>>("cart")?, Some(vec![3, 4]));
    /// assert_eq!(session.get::<String>("nothing")?, None);
    /// assert!(session.get::<String>("cart").unwrap_err().is_decode());
    /// # Ok::<(), baton_sdk::SessionError>(())
    /// ```
    ///
    /// # Errors
    /// [`SessionError::Decode`] if the stored value does not fit `T` (the other attributes are
    /// unaffected), [`SessionError::Unavailable`] if the store cannot be reached.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, SessionError> {
        let Some(json) = self.backend.get(name)? else {
            return Ok(None);
        };
        serde_json::from_slice(&json)
            .map(Some)
            .map_err(|source| SessionError::Decode {
                name: name.to_owned(),
                source,
            })
    }

    /// Sets an attribute to `value`, stored as JSON when the request ends. Creates the session
    /// (and sends its cookie) if the client has none.
    ///
    /// ```
    /// # use baton_sdk::{Request, TestSession};
    /// # let test = TestSession::new();
    /// # let req = Request::builder("GET", "/").session(&test).build();
    /// req.session().insert("theme", "dark")?;
    /// assert_eq!(req.session().get::<String>("theme")?.as_deref(), Some("dark"));
    /// # Ok::<(), baton_sdk::SessionError>(())
    /// ```
    ///
    /// # Errors
    /// [`SessionError::Encode`] if `value` does not serialize, [`SessionError::Rejected`] for an
    /// invalid name, [`SessionError::Unavailable`] if the store cannot be reached.
    pub fn insert<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<(), SessionError> {
        let json = serde_json::to_vec(value).map_err(|source| SessionError::Encode {
            name: name.to_owned(),
            source,
        })?;
        self.backend.set(name, &json)
    }

    /// Removes an attribute (stored when the request ends); removing an absent one is fine.
    ///
    /// ```
    /// # use baton_sdk::{Request, TestSession};
    /// # let test = TestSession::new();
    /// # let req = Request::builder("GET", "/").session(&test).build();
    /// req.session().insert("flash", "saved")?;
    /// req.session().remove("flash")?;
    /// assert_eq!(req.session().get::<String>("flash")?, None);
    /// # Ok::<(), baton_sdk::SessionError>(())
    /// ```
    ///
    /// # Errors
    /// [`SessionError::Unavailable`] if the store cannot be reached.
    pub fn remove(&self, name: &str) -> Result<(), SessionError> {
        self.backend.remove(name)
    }

    /// Atomically replaces an attribute with `f(current value)` in the store, now, and returns
    /// the value stored. No update is lost when requests of one session run concurrently: if
    /// another request changed the attribute meanwhile, `f` runs again on the newer value, so
    /// `f` must be a pure function of its argument. Creates the session if needed.
    ///
    /// ```
    /// # use baton_sdk::{Request, TestSession};
    /// # let test = TestSession::new();
    /// # let req = Request::builder("GET", "/").session(&test).build();
    /// let count = req.session().update("count", |n: Option<u64>| n.unwrap_or(0) + 1)?;
    /// assert_eq!(count, 1);
    /// # Ok::<(), baton_sdk::SessionError>(())
    /// ```
    ///
    /// # Errors
    /// [`SessionError::Decode`] if the current value does not fit `T` (nothing is changed),
    /// [`SessionError::Encode`] if the new one does not serialize, [`SessionError::Unavailable`]
    /// if the store cannot be reached.
    pub fn update<T, F>(&self, name: &str, mut f: F) -> Result<T, SessionError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        let mut error = None;
        let mut stored = None;
        let mut step = |old: Option<&[u8]>| -> Option<Vec<u8>> {
            error = None;
            let old = match old.map(serde_json::from_slice::<T>).transpose() {
                Ok(old) => old,
                Err(source) => {
                    error = Some(SessionError::Decode {
                        name: name.to_owned(),
                        source,
                    });
                    return None;
                }
            };
            let new = f(old);
            match serde_json::to_vec(&new) {
                Ok(json) => {
                    stored = Some(new);
                    Some(json)
                }
                Err(source) => {
                    error = Some(SessionError::Encode {
                        name: name.to_owned(),
                        source,
                    });
                    None
                }
            }
        };
        let result = self.backend.update(name, &mut step);
        if let Some(error) = error {
            return Err(error);
        }
        result?;
        stored.ok_or_else(|| SessionError::Rejected("the update function never ran".into()))
    }

    /// The names of the session's attributes, sorted; empty without a session.
    ///
    /// ```
    /// # use baton_sdk::{Request, TestSession};
    /// # let test = TestSession::new();
    /// # let req = Request::builder("GET", "/").session(&test).build();
    /// req.session().insert("b", &1)?;
    /// req.session().insert("a", &2)?;
    /// assert_eq!(req.session().names()?, ["a", "b"]);
    /// # Ok::<(), baton_sdk::SessionError>(())
    /// ```
    ///
    /// # Errors
    /// [`SessionError::Unavailable`] if the store cannot be reached.
    pub fn names(&self) -> Result<Vec<String>, SessionError> {
        self.backend.names()
    }

    /// The session id, or `None` if the client has no session (yet). A session created by this
    /// request has its id at once, though it is stored only when the request ends.
    ///
    /// ```
    /// # use baton_sdk::{Request, TestSession};
    /// # let test = TestSession::new();
    /// # let req = Request::builder("GET", "/").session(&test).build();
    /// assert_eq!(req.session().id()?, None);
    /// req.session().insert("seen", &true)?;
    /// assert!(req.session().id()?.is_some());
    /// # Ok::<(), baton_sdk::SessionError>(())
    /// ```
    ///
    /// # Errors
    /// [`SessionError::Unavailable`] if the store cannot be reached.
    pub fn id(&self) -> Result<Option<String>, SessionError> {
        self.backend.id()
    }

    /// Deletes the session now and expires the client's cookie (log out). A later write in the
    /// same request starts a new session with a new id.
    ///
    /// ```
    /// # use baton_sdk::{Request, TestSession};
    /// # let test = TestSession::new();
    /// # let req = Request::builder("GET", "/").session(&test).build();
    /// req.session().insert("user", "ada")?;
    /// req.session().invalidate()?;
    /// assert_eq!(req.session().get::<String>("user")?, None);
    /// # Ok::<(), baton_sdk::SessionError>(())
    /// ```
    ///
    /// # Errors
    /// [`SessionError::Unavailable`] if the store cannot be reached.
    pub fn invalidate(&self) -> Result<(), SessionError> {
        self.backend.invalidate()
    }

    /// Gives the session a new id now, keeping its attributes; the old id stops working. Call it
    /// when the user's privileges change (log in) so that an id known before cannot be used
    /// after (session fixation). Does nothing if the client has no session.
    ///
    /// ```
    /// # use baton_sdk::{Request, TestSession};
    /// # let test = TestSession::new();
    /// # let req = Request::builder("GET", "/").session(&test).build();
    /// req.session().insert("cart", &[1])?;
    /// let before = req.session().id()?;
    /// req.session().rotate_id()?;
    /// req.session().insert("user", "ada")?;
    /// assert_ne!(req.session().id()?, before);
    /// assert_eq!(req.session().get::<Vec<u8>>("cart")?, Some(vec![1]));
    /// # Ok::<(), baton_sdk::SessionError>(())
    /// ```
    ///
    /// # Errors
    /// [`SessionError::Unavailable`] if the store cannot be reached.
    pub fn rotate_id(&self) -> Result<(), SessionError> {
        self.backend.rotate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, Request, StatusCode};

    #[test]
    fn one_bad_attribute_leaves_the_others_readable() {
        let test = TestSession::new();
        test.insert_json("count", "\"seven\"");
        test.insert_json("user", "\"ada\"");
        let req = Request::builder("GET", "/").session(&test).build();
        let session = req.session();
        let err = session.get::<u64>("count").unwrap_err();
        assert!(err.is_decode());
        assert!(err.to_string().contains("count"));
        assert_eq!(
            session.get::<String>("user").unwrap().as_deref(),
            Some("ada")
        );
        let err = session.update("count", |n: Option<u64>| n.unwrap_or(0) + 1);
        assert!(err.unwrap_err().is_decode());
        assert_eq!(test.json("count").as_deref(), Some("\"seven\""));
    }

    #[test]
    fn an_outage_is_a_503_with_retry_after_and_a_decode_error_a_500() {
        let unavailable: Error = SessionError::Unavailable("down".into()).into();
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        let response = crate::IntoResponse::into_response(unavailable);
        assert_eq!(response.header("retry-after"), Some("1"));

        let source = serde_json::from_str::<u8>("x").unwrap_err();
        let decode: Error = SessionError::Decode {
            name: "a".into(),
            source,
        }
        .into();
        assert_eq!(decode.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn requests_without_a_session_say_so() {
        let req = Request::builder("GET", "/").build();
        assert!(matches!(
            req.session().get::<u8>("a"),
            Err(SessionError::Unsupported)
        ));
    }

    #[test]
    fn names_are_checked() {
        let test = TestSession::new();
        let req = Request::builder("GET", "/").session(&test).build();
        for bad in ["", "#created_ms", &"x".repeat(257)] {
            assert!(matches!(
                req.session().insert(bad, &1),
                Err(SessionError::Rejected(_))
            ));
        }
    }
}
