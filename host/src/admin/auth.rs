//! Who may call the admin API: the bearer token when one is set; without one, only the local
//! operator (a loopback `Host`, no foreign `Origin`). Refused requests have their body read and
//! dropped first, so the client sees the answer rather than a reset.

use http::{Request, Response, header};
use http_body_util::BodyExt;

use crate::server::{Body, RequestBody};

/// Compares in time independent of where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `headers` carry the bearer `token` (anything passes when there is none).
pub(super) fn authorized(token: Option<&str>, headers: &http::HeaderMap) -> bool {
    let Some(token) = token else { return true };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start().split_once(' '))
        // The scheme is case-insensitive (RFC 9110, section 11.1).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .is_some_and(|(_, given)| same_secret(given.trim().as_bytes(), token.as_bytes()))
}

/// Whether `host` (a `Host` header or an authority) names this machine's loopback interface.
fn is_loopback_host(host: &str) -> bool {
    let Ok(authority) = host.parse::<http::uri::Authority>() else {
        return false;
    };
    let name = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Without a token the admin API answers only the local operator: why `req` is not from them,
/// if it is not. A browser on the machine sends any site's requests to it with that site's
/// `Origin`, and a DNS-rebound name arrives with that name as `Host`.
pub(super) fn not_local<B>(req: &Request<B>) -> Option<String> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(http::uri::Authority::as_str));
    if let Some(host) = host
        && !is_loopback_host(host)
    {
        return Some(format!(
            "it was sent to {host:?}, which is not a loopback name or address"
        ));
    }
    let origin = req.headers().get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("(not text)");
    let own = host.map(|host| format!("http://{host}"));
    if own.is_some_and(|own| own.eq_ignore_ascii_case(origin)) {
        return None;
    }
    Some(format!(
        "it comes from a web page of another origin ({origin})"
    ))
}

/// Most of a refused request's body read (and dropped) before the answer, so the client sees
/// the answer rather than a reset; past it the connection is closed.
const MAX_DISCARD_BYTES: u64 = 64 * 1024 * 1024;

/// Answers a request refused before its body was read: reads and drops the body first (at most
/// [`MAX_DISCARD_BYTES`], and only while it keeps arriving), so a client still sending it gets
/// `response` instead of a broken pipe.
pub(super) async fn refuse(
    req: Request<RequestBody>,
    mut response: Response<Body>,
) -> Response<Body> {
    let mut body = req.into_body();
    let mut discarded = 0u64;
    while discarded <= MAX_DISCARD_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                discarded += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            Some(Err(_)) | None => return response,
        }
    }
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_checked_exactly() {
        let mut headers = http::HeaderMap::new();
        assert!(authorized(None, &headers));
        assert!(!authorized(Some("s3cret"), &headers));
        headers.insert(header::AUTHORIZATION, "Bearer s3cre".parse().unwrap());
        assert!(!authorized(Some("s3cret"), &headers));
        headers.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorized(Some("s3cret"), &headers));
        headers.insert(header::AUTHORIZATION, "Basic s3cret".parse().unwrap());
        assert!(!authorized(Some("s3cret"), &headers));
        for scheme in ["bearer", "BEARER", "bEaReR"] {
            let value = format!("{scheme} s3cret");
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            assert!(authorized(Some("s3cret"), &headers), "{value}");
        }
        headers.insert(header::AUTHORIZATION, "Bearers3cret".parse().unwrap());
        assert!(!authorized(Some("s3cret"), &headers));
    }

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri("/status");
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn without_a_token_only_loopback_hosts_and_the_own_origin_pass() {
        for host in [
            "127.0.0.1:9090",
            "localhost:9090",
            "LOCALHOST",
            "[::1]:9090",
            "127.1.2.3",
        ] {
            assert_eq!(not_local(&request(&[("host", host)])), None, "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9090",
            "10.0.0.1:9090",
            "localhost.evil.example",
        ] {
            let why = not_local(&request(&[("host", host)])).unwrap();
            assert!(why.contains("not a loopback"), "{host}: {why}");
        }
        let own = [
            ("host", "127.0.0.1:9090"),
            ("origin", "http://127.0.0.1:9090"),
        ];
        assert_eq!(not_local(&request(&own)), None);
        for origin in [
            "http://evil.example",
            "null",
            "http://localhost:3000",
            "https://127.0.0.1:9090",
        ] {
            let why = not_local(&request(&[("host", "127.0.0.1:9090"), ("origin", origin)]));
            assert!(why.unwrap().contains("another origin"), "{origin}");
        }
    }
}
