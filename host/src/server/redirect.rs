//! The answer of a plain listener on a host that serves HTTPS only: a redirect to the same host
//! and path over HTTPS.

use http::header::{HOST, HeaderValue, LOCATION};
use http::uri::Authority;
use http::{Request, Response, StatusCode};

use super::body::Body;
use super::rejection::{Rejection, plain};

/// The `308 Permanent Redirect` of a plain-HTTP request to the same host and path on the
/// HTTPS listener's `port` (the method and body are kept by a 308).
///
/// # Errors
/// A request without a usable host (`Host`, or the HTTP/2 authority) is refused.
pub(crate) fn to_https<B>(req: &Request<B>, port: u16) -> Result<Response<Body>, Rejection> {
    let authority = req.uri().authority().cloned().or_else(|| {
        req.headers()
            .get(HOST)
            .and_then(|host| host.to_str().ok())
            .and_then(|host| host.parse::<Authority>().ok())
    });
    let authority = authority.ok_or(Rejection::NoRedirectHost)?;
    let port = if port == 443 {
        String::new()
    } else {
        format!(":{port}")
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{}{port}{path}", authority.host());
    let value = HeaderValue::from_str(&location).map_err(|_| Rejection::BadRedirect)?;
    let mut response = plain(
        StatusCode::PERMANENT_REDIRECT,
        format!("308 Permanent Redirect: this host serves HTTPS only: {location}\n"),
    );
    response.headers_mut().insert(LOCATION, value);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(req: Request<()>, port: u16) -> (StatusCode, String) {
        let response = to_https(&req, port).unwrap_or_else(Rejection::into_response);
        let location = response
            .headers()
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (response.status(), location)
    }

    #[test]
    fn a_plain_request_is_sent_to_the_same_host_and_path_on_the_tls_port() {
        let req = |host: &str, uri: &str| {
            Request::builder()
                .uri(uri)
                .header(HOST, host)
                .body(())
                .unwrap()
        };
        assert_eq!(
            location(req("example.com:8080", "/hello/x?a=1&b=2"), 8443),
            (
                StatusCode::PERMANENT_REDIRECT,
                "https://example.com:8443/hello/x?a=1&b=2".to_owned()
            )
        );
        assert_eq!(
            location(req("example.com", "/"), 443).1,
            "https://example.com/"
        );
        assert_eq!(
            location(req("[::1]:80", "/a"), 8443).1,
            "https://[::1]:8443/a"
        );
        // An HTTP/2 request names its host in the URI.
        let h2 = Request::builder()
            .uri("http://h2.example:8080/p")
            .body(())
            .unwrap();
        assert_eq!(location(h2, 8443).1, "https://h2.example:8443/p");
        // No host, or one that could smuggle a path: no redirect.
        let none = Request::builder().uri("/x").body(()).unwrap();
        assert_eq!(location(none, 8443).0, StatusCode::BAD_REQUEST);
        assert_eq!(
            location(req("evil.com/x@good", "/"), 8443).0,
            StatusCode::BAD_REQUEST
        );
    }
}
