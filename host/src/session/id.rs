//! Session ids and the cookie that carries them.
//!
//! An id is 192 bits from the operating system's CSPRNG, written as 48 lower-case hex digits. A
//! cookie value of any other shape is ignored without asking the store.

use http::HeaderMap;
use http::header::COOKIE;

use super::store::StoreError;

const ID_BYTES: usize = 24;

/// A fresh random session id.
///
/// # Errors
/// [`StoreError::Unavailable`] if the OS has no randomness to give.
pub(crate) fn new_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; ID_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| StoreError::Unavailable(format!("no randomness for a session id: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `id` has the shape of a session id.
pub(crate) fn is_valid(id: &str) -> bool {
    id.len() == ID_BYTES * 2 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The values of cookie `name` in the request's `cookie` headers, in order.
fn cookie_values<'h>(headers: &'h HeaderMap, name: &str) -> impl Iterator<Item = &'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(key, _)| *key == name)
        .map(|(_, value)| value.trim().trim_matches('"'))
}

/// The first well-formed session id in the request's `cookie` headers: the one the session
/// layer loads.
pub(crate) fn from_cookies<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    cookie_values(headers, name).find(|value| is_valid(value))
}

/// What sticky canary routing keys on: the session id the session layer loads when there is
/// one, so both agree when a request carries several cookies of that name; otherwise the first
/// value of the cookie, so a client whose cookie is not a session id of this host (another
/// host's, or a test's) still stays on one version.
pub(crate) fn sticky_key<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    from_cookies(headers, name).or_else(|| cookie_values(headers, name).next())
}

/// How the response changes the client's session cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CookieChange {
    /// Send this id.
    Set(String),
    /// Expire the cookie.
    Clear,
}

/// The cookie's attributes, from the config.
#[derive(Debug, Clone)]
pub(crate) struct CookieSpec {
    pub(crate) name: String,
    pub(crate) secure: bool,
}

impl CookieSpec {
    /// The `Set-Cookie` value for `change`; `Secure` when configured or when the request
    /// arrived `over_tls`.
    pub(crate) fn header(&self, change: &CookieChange, over_tls: bool) -> String {
        let secure = if self.secure || over_tls {
            "; Secure"
        } else {
            ""
        };
        match change {
            CookieChange::Set(id) => {
                format!("{}={id}; Path=/; HttpOnly; SameSite=Lax{secure}", self.name)
            }
            CookieChange::Clear => format!(
                "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{secure}",
                self.name
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_long_random_and_well_formed() {
        let (a, b) = (new_id().unwrap(), new_id().unwrap());
        assert!(is_valid(&a) && is_valid(&b));
        assert_ne!(a, b);
        assert!(!is_valid(&a.to_uppercase()));
        assert!(!is_valid(&a[1..]));
        assert!(!is_valid("../../etc/passwd"));
    }

    /// Request headers with one `Cookie` header per line.
    fn cookies(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(COOKIE, line.parse().unwrap());
        }
        headers
    }

    /// A fresh id, and headers where a `Cookie` header with a forged one (`forged`) comes
    /// before the one carrying that id.
    fn forged_then_good(forged: &str) -> (String, HeaderMap) {
        let good = new_id().unwrap();
        let headers = cookies(&[forged, &format!("BATON_SESSION={good}")]);
        (good, headers)
    }

    #[test]
    fn the_first_well_formed_cookie_wins() {
        let (good, headers) = forged_then_good("other=1; BATON_SESSION=forged");
        assert_eq!(from_cookies(&headers, "BATON_SESSION"), Some(good.as_str()));
        assert_eq!(from_cookies(&headers, "OTHER"), None);
    }

    #[test]
    fn sticky_routing_keys_on_the_session_the_request_loads() {
        let (good, headers) = forged_then_good("BATON_SESSION=forged; theme=dark");
        assert_eq!(sticky_key(&headers, "BATON_SESSION"), Some(good.as_str()));
        assert_eq!(
            sticky_key(&headers, "BATON_SESSION"),
            from_cookies(&headers, "BATON_SESSION")
        );

        let headers = cookies(&[
            "theme=dark; BATON_SESSION=session-0001",
            "BATON_SESSION=session-0002",
        ]);
        assert_eq!(from_cookies(&headers, "BATON_SESSION"), None);
        assert_eq!(sticky_key(&headers, "BATON_SESSION"), Some("session-0001"));
        assert_eq!(sticky_key(&headers, "theme"), Some("dark"));
        assert_eq!(sticky_key(&headers, "OTHER"), None);
    }

    #[test]
    fn cookies_carry_the_configured_attributes() {
        let spec = CookieSpec {
            name: "S".into(),
            secure: true,
        };
        assert_eq!(
            spec.header(&CookieChange::Set("abc".into()), false),
            "S=abc; Path=/; HttpOnly; SameSite=Lax; Secure"
        );
        let spec = CookieSpec {
            secure: false,
            ..spec
        };
        assert_eq!(
            spec.header(&CookieChange::Clear, false),
            "S=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            spec.header(&CookieChange::Set("abc".into()), true),
            "S=abc; Path=/; HttpOnly; SameSite=Lax; Secure",
            "a request over TLS gets a Secure cookie whatever the setting"
        );
    }
}
