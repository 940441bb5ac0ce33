//! Cookies: reading the request's `Cookie` headers and setting cookies on the response, with the
//! [`cookie`] crate's [`Cookie`] type.
//!
//! Names and values are percent-encoded on the way out and percent-decoded on the way in, as
//! axum-extra's cookie jar does: any string survives the round trip (`;`, `,`, spaces, quotes,
//! non-ASCII), and a cookie the app did not encode reads back as sent unless it holds a valid
//! `%XX` escape. A value in double quotes keeps its quotes in [`Cookie::value`];
//! [`Cookie::value_trimmed`] drops them. Malformed pairs in a `Cookie` header are skipped.

use cookie::Cookie;

use crate::request::Request;
use crate::response::Response;

impl<'a> Request<'a> {
    /// The first cookie named `name`, percent-decoded; `Cookie` headers are read in arrival
    /// order (HTTP/2 clients may send several).
    ///
    /// ```
    /// use baton_sdk::Request;
    ///
    /// let headers = [("cookie".to_owned(), "theme=dark; lang=en%2DGB".to_owned())];
    /// let req = Request::builder("GET", "/").headers(&headers).build();
    /// assert_eq!(req.cookie("lang").unwrap().value(), "en-GB");
    /// assert!(req.cookie("missing").is_none());
    /// ```
    pub fn cookie(&self, name: &str) -> Option<Cookie<'a>> {
        self.cookies().find(|cookie| cookie.name() == name)
    }

    /// Every cookie the client sent, percent-decoded, in order; malformed pairs (no `=`, an
    /// empty name, a value that does not decode to UTF-8) are skipped.
    ///
    /// ```
    /// use baton_sdk::Request;
    ///
    /// let headers = [
    ///     ("cookie".to_owned(), "a=1; broken; b=2".to_owned()),
    ///     ("cookie".to_owned(), "c=3".to_owned()),
    /// ];
    /// let req = Request::builder("GET", "/").headers(&headers).build();
    /// let names: Vec<String> = req.cookies().map(|c| c.name().to_owned()).collect();
    /// assert_eq!(names, ["a", "b", "c"]);
    /// ```
    pub fn cookies(&self) -> impl Iterator<Item = Cookie<'a>> + 'a {
        self.headers()
            .filter(|(name, _)| name.eq_ignore_ascii_case("cookie"))
            .flat_map(|(_, value)| Cookie::split_parse_encoded(value).filter_map(Result::ok))
    }
}

impl Response {
    /// Adds a `set-cookie` header: the cookie with all its attributes, name and value
    /// percent-encoded.
    ///
    /// Takes a [`Cookie`], a [`CookieBuilder`](cookie::CookieBuilder) or a `(name, value)` pair.
    ///
    /// ```
    /// use baton_sdk::Response;
    /// use baton_sdk::cookie::{Cookie, SameSite};
    ///
    /// let cookie = Cookie::build(("theme", "dark mode"))
    ///     .path("/")
    ///     .secure(true)
    ///     .http_only(true)
    ///     .same_site(SameSite::Lax);
    /// let r = Response::text("ok").with_cookie(cookie);
    /// assert_eq!(
    ///     r.header("set-cookie"),
    ///     Some("theme=dark%20mode; HttpOnly; SameSite=Lax; Secure; Path=/")
    /// );
    /// ```
    pub fn with_cookie<'c>(self, cookie: impl Into<Cookie<'c>>) -> Self {
        let cookie = cookie.into();
        self.with_header("set-cookie", cookie.encoded().to_string())
    }

    /// Adds a `set-cookie` header that deletes a cookie on the client: empty value,
    /// `Max-Age=0`, `Expires` a year in the past.
    ///
    /// Takes a name, or a [`Cookie`] or [`CookieBuilder`](cookie::CookieBuilder) whose path and
    /// domain match those the cookie was set with (a browser only deletes a cookie whose name,
    /// path and domain all match). The path is `/` unless one is given.
    ///
    /// ```
    /// use baton_sdk::Response;
    /// use baton_sdk::cookie::Cookie;
    ///
    /// let r = Response::text("bye").with_removal_cookie("theme");
    /// let header = r.header("set-cookie").unwrap();
    /// assert!(header.starts_with("theme=; Path=/; Max-Age=0; Expires="));
    ///
    /// let r = Response::text("bye").with_removal_cookie(Cookie::build("id").path("/shop"));
    /// assert!(r.header("set-cookie").unwrap().contains("Path=/shop;"));
    /// ```
    pub fn with_removal_cookie<'c>(self, cookie: impl Into<Cookie<'c>>) -> Self {
        let mut cookie = cookie.into();
        if cookie.path().is_none() {
            cookie.set_path("/");
        }
        cookie.make_removal();
        self.with_cookie(cookie)
    }
}

#[cfg(test)]
mod tests {
    use cookie::time::{Duration, OffsetDateTime};
    use cookie::{Cookie, SameSite};

    use crate::{Request, Response};

    fn cookie_headers(values: &[&str]) -> Vec<(String, String)> {
        values
            .iter()
            .map(|v| ("cookie".to_owned(), (*v).to_owned()))
            .collect()
    }

    fn pairs(headers: &[(String, String)]) -> Vec<(String, String)> {
        let req = Request::builder("GET", "/").headers(headers).build();
        req.cookies()
            .map(|c| (c.name().to_owned(), c.value().to_owned()))
            .collect()
    }

    fn pair(name: &str, value: &str) -> (String, String) {
        (name.to_owned(), value.to_owned())
    }

    #[test]
    fn malformed_pairs_are_skipped_and_the_rest_kept() {
        let headers = cookie_headers(&["a=1;; novalue; =nameless; b = 2 ;c=;d=%FF%FE; e=x=y"]);
        assert_eq!(
            pairs(&headers),
            [
                pair("a", "1"),
                pair("b", "2"),
                pair("c", ""),
                pair("e", "x=y")
            ]
        );
    }

    #[test]
    fn duplicates_are_all_listed_and_the_first_wins() {
        let headers = cookie_headers(&["id=first; id=second", "id=third"]);
        let ids: Vec<_> = pairs(&headers).into_iter().map(|(_, v)| v).collect();
        assert_eq!(ids, ["first", "second", "third"]);
        let req = Request::builder("GET", "/").headers(&headers).build();
        assert_eq!(req.cookie("id").unwrap().value(), "first");
    }

    #[test]
    fn other_headers_are_not_read_as_cookies() {
        let headers = vec![
            pair("set-cookie", "a=1"),
            pair("x-cookie", "b=2"),
            pair("Cookie", "c=3"),
        ];
        assert_eq!(pairs(&headers), [pair("c", "3")]);
    }

    #[test]
    fn quoted_values_keep_their_quotes_until_trimmed() {
        let headers = cookie_headers(&[r#"q="hello world"; half="open"#]);
        let req = Request::builder("GET", "/").headers(&headers).build();
        let q = req.cookie("q").unwrap();
        assert_eq!(q.value(), r#""hello world""#);
        assert_eq!(q.value_trimmed(), "hello world");
        assert_eq!(req.cookie("half").unwrap().value_trimmed(), r#""open"#);
    }

    #[test]
    fn values_round_trip_through_percent_encoding() {
        let value = "a; b, \"c\" = d % é";
        let r = Response::new(http::StatusCode::OK).with_cookie(("k e", value));
        let sent = r.header("set-cookie").unwrap().to_owned();
        assert!(!sent.contains(' '), "{sent}");
        let headers = cookie_headers(&[&sent]);
        let req = Request::builder("GET", "/").headers(&headers).build();
        assert_eq!(req.cookie("k e").unwrap().value(), value);
    }

    #[test]
    fn set_cookie_carries_every_attribute() {
        let expires = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let cookie = Cookie::build(("sid", "abc"))
            .domain("example.com")
            .path("/app")
            .secure(true)
            .http_only(true)
            .same_site(SameSite::Strict)
            .max_age(Duration::hours(1))
            .expires(expires);
        let r = Response::text("ok").with_cookie(cookie);
        let header = r.header("set-cookie").unwrap();
        let mut attributes: Vec<&str> = header.split("; ").collect();
        assert_eq!(attributes.remove(0), "sid=abc");
        attributes.sort_unstable();
        assert_eq!(
            attributes,
            [
                "Domain=example.com",
                "Expires=Fri, 15 Jan 2027 08:00:00 GMT",
                "HttpOnly",
                "Max-Age=3600",
                "Path=/app",
                "SameSite=Strict",
                "Secure",
            ]
        );
    }

    #[test]
    fn several_cookies_make_several_headers() {
        let r = Response::text("ok")
            .with_cookie(("a", "1"))
            .with_cookie(Cookie::new("b", "2"));
        let set: Vec<&str> = r
            .headers()
            .iter()
            .filter(|(n, _)| n == "set-cookie")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(set, ["a=1", "b=2"]);
    }

    #[test]
    fn removal_expires_the_cookie_at_its_path_and_domain() {
        let r = Response::text("bye")
            .with_removal_cookie(Cookie::build("sid").domain("example.com").path("/app"));
        let header = r.header("set-cookie").unwrap();
        let removal = Cookie::parse(header.to_owned()).unwrap();
        assert_eq!(removal.value(), "");
        assert_eq!(removal.max_age(), Some(Duration::ZERO));
        assert!(removal.expires_datetime().unwrap() < OffsetDateTime::now_utc());
        assert_eq!(removal.path(), Some("/app"));
        assert_eq!(removal.domain(), Some("example.com"));

        let r = Response::text("bye").with_removal_cookie("sid");
        let removal = Cookie::parse(r.header("set-cookie").unwrap().to_owned()).unwrap();
        assert_eq!(removal.path(), Some("/"));
    }

    /// Random bytes, biased towards the characters cookie parsing cares about, never make it
    /// panic, and every cookie it yields has a name.
    #[test]
    fn parsing_random_headers_never_panics() {
        const SPECIAL: &[u8] = b";=%\" ,\t\\";
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 48) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    match r % 4 {
                        0 => SPECIAL[(r >> 8) as usize % SPECIAL.len()],
                        1 => b"0123456789ABCDEFabcdef"[(r >> 8) as usize % 22],
                        _ => (r >> 8) as u8,
                    }
                })
                .collect();
            let value = String::from_utf8_lossy(&bytes).into_owned();
            let headers = vec![pair("cookie", &value), pair("cookie", &value)];
            let req = Request::builder("GET", "/").headers(&headers).build();
            for cookie in req.cookies() {
                assert!(!cookie.name().is_empty(), "{value:?}");
            }
            let _ = req.cookie("a");
        }
    }
}
