//! Who may post: form login against the configured users, the logged-in user in the session,
//! and a per-session CSRF token that every state-changing request must carry (a hidden form
//! field, or the `X-CSRF-Token` header for the JSON API), so another site cannot post in the
//! user's name with the user's cookie.

use std::collections::BTreeMap;

use baton_sdk::{Error, IntoResponse, Next, Request, Response, StatusCode};

use crate::Notes;
use crate::api::ApiError;

/// Session attribute holding the logged-in user's name.
pub(crate) const USER: &str = "user";
/// Session attribute holding the CSRF token.
pub(crate) const CSRF: &str = "csrf";
/// Header carrying the CSRF token on API calls.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// The logged-in user, as the auth layer hands it to API handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User(pub(crate) String);

/// The users who may log in, name to password.
#[derive(Debug, Clone)]
pub(crate) struct Users(BTreeMap<String, String>);

impl Users {
    /// `configured`, or the demo user `demo` / `demo` when there are none.
    pub(crate) fn new(configured: BTreeMap<String, String>) -> Users {
        if configured.is_empty() {
            Users(BTreeMap::from([("demo".to_owned(), "demo".to_owned())]))
        } else {
            Users(configured)
        }
    }

    /// Whether `user` exists and `password` is theirs. Takes as long for an unknown user as
    /// for a wrong password.
    pub(crate) fn check(&self, user: &str, password: &str) -> bool {
        match self.0.get(user) {
            Some(expected) => same(expected.as_bytes(), password.as_bytes()),
            None => {
                same(b"not a user's password", password.as_bytes());
                false
            }
        }
    }
}

/// Compares two secrets in time that depends on their lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

/// 32 random bytes as hex: CSRF tokens and upload names.
pub(crate) fn random_hex(bytes: usize) -> Result<String, Error> {
    let mut raw = vec![0u8; bytes];
    getrandom::fill(&mut raw)
        .map_err(|e| Error::internal(format!("no randomness from the system: {e}")))?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// The logged-in user, if any.
///
/// # Errors
/// The session store failed.
pub(crate) fn user(req: &Request) -> Result<Option<String>, Error> {
    Ok(req.session().get(USER)?)
}

/// This session's CSRF token, created (and with it the session) on first use.
///
/// # Errors
/// The session store failed.
pub(crate) fn csrf_token(req: &Request) -> Result<String, Error> {
    let session = req.session();
    if let Some(token) = session.get::<String>(CSRF)? {
        return Ok(token);
    }
    let fresh = random_hex(32)?;
    // Atomic: two first requests of one session agree on one token.
    Ok(session.update(CSRF, |old: Option<String>| old.unwrap_or(fresh.clone()))?)
}

/// Checks `sent` against the session's token.
///
/// # Errors
/// A 403 when the session has no token or another one; the session store failing.
pub(crate) fn check_csrf(req: &Request, sent: Option<&str>) -> Result<(), Error> {
    let expected: Option<String> = req.session().get(CSRF)?;
    match (expected, sent) {
        (Some(expected), Some(sent)) if same(expected.as_bytes(), sent.as_bytes()) => Ok(()),
        _ => Err(Error::new(
            StatusCode::FORBIDDEN,
            "missing or wrong CSRF token: reload the page and try again",
        )),
    }
}

/// Logs `user` in: a new session id first (an id known before the login is worthless after
/// it), then the user and a new CSRF token.
///
/// # Errors
/// The session store failed.
pub(crate) fn log_in(req: &Request, user: &str) -> Result<(), Error> {
    let session = req.session();
    session.rotate_id()?;
    session.insert(USER, user)?;
    session.insert(CSRF, &random_hex(32)?)?;
    Ok(())
}

/// The layer of the routes that change something through the API: a logged-in user (else
/// 401) who sent the session's CSRF token in `X-CSRF-Token` (else 403). The user goes to the
/// handler as a [`User`] extension.
pub(crate) fn require_login(app: &Notes, req: &Request, next: Next<Notes>) -> Response {
    let _ = app;
    let user = match user(req) {
        Ok(Some(user)) => user,
        Ok(None) => {
            let e = Error::new(StatusCode::UNAUTHORIZED, "log in first");
            return ApiError(e).into_response();
        }
        Err(e) => return ApiError(e).into_response(),
    };
    if let Err(e) = check_csrf(req, req.header(CSRF_HEADER)) {
        return ApiError(e).into_response();
    }
    req.insert_extension(User(user));
    next.run(req)
}

#[cfg(test)]
mod tests {
    use baton_sdk::TestSession;

    use super::*;

    #[test]
    fn the_demo_user_exists_only_without_configured_users() {
        let demo = Users::new(BTreeMap::new());
        assert!(demo.check("demo", "demo"));
        assert!(!demo.check("demo", "dem"));
        assert!(!demo.check("nobody", "demo"));
        let configured = Users::new(BTreeMap::from([("alice".into(), "secret".into())]));
        assert!(configured.check("alice", "secret"));
        assert!(!configured.check("demo", "demo"));
        assert!(!configured.check("alice", "secret2"));
    }

    #[test]
    fn csrf_tokens_are_per_session_and_checked() {
        let test = TestSession::new();
        let req = Request::builder("GET", "/").session(&test).build();
        let token = csrf_token(&req).unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(csrf_token(&req).unwrap(), token, "stable within a session");
        assert!(check_csrf(&req, Some(&token)).is_ok());
        let wrong = check_csrf(&req, Some("0")).unwrap_err();
        assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
        assert!(check_csrf(&req, None).is_err());

        let other = TestSession::new();
        let req = Request::builder("GET", "/").session(&other).build();
        assert!(check_csrf(&req, Some(&token)).is_err(), "no token yet");
        assert_ne!(csrf_token(&req).unwrap(), token);
    }

    #[test]
    fn login_rotates_the_token() {
        let test = TestSession::new();
        let req = Request::builder("POST", "/login").session(&test).build();
        let before = csrf_token(&req).unwrap();
        log_in(&req, "ada").unwrap();
        assert_eq!(user(&req).unwrap().as_deref(), Some("ada"));
        assert_ne!(csrf_token(&req).unwrap(), before);
    }
}
