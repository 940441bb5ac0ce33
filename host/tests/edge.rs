//! The HTTP edge, end to end: a real `baton` host behind Debian's nginx running
//! `docs/nginx.conf` logs the client nginx forwards for, not nginx, and not an address the
//! client forged; a client that is not a trusted proxy cannot forge its address or scheme;
//! responses are compressed with brotli or gzip as the client accepts, and not at all when
//! `[compression]` is off.

mod support;

use std::io::Read;
use std::net::IpAddr;
use std::time::Duration;

use baton_testkit::balancer::{Backend, Balancer, Kind};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use support::{HostProc, eventually, hello};

const WAIT: Duration = Duration::from_secs(60);

/// A response, its body as raw bytes (compressed bodies are not text).
struct Raw {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Raw {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// `GET url` with `headers`, from the local address `from` (any loopback address works on
/// Linux), over a fresh connection.
async fn get_from(from: Option<IpAddr>, url: &str, headers: &[(&str, &str)]) -> Raw {
    let mut connector = HttpConnector::new();
    connector.set_local_address(from);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let mut request = http::Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Empty::new()).unwrap())
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Raw {
        status,
        headers,
        body,
    }
}

/// The access log line of the request for `path`.
fn access_line(host: &HostProc, path: &str) -> Value {
    host.wait_log(WAIT, |l| {
        l["target"] == "baton::access" && l["path"] == path
    })
}

/// `(client, scheme, proxy)` of an access log line ("" for a field it does not have).
fn who(line: &Value) -> (&str, &str, &str) {
    let field = |name: &str| line[name].as_str().unwrap_or("");
    (field("client"), field("scheme"), field("proxy"))
}

const CLIENT: &str = "127.0.0.2";

#[tokio::test(flavor = "multi_thread")]
async fn behind_nginx_the_access_log_names_the_client_not_the_proxy_nor_a_forged_address() {
    let host = HostProc::start_with_config(
        &[hello("1.0.0")],
        "[http]\ntrusted_proxies = [\"127.0.0.1\"]\n",
    );
    let nginx = Balancer::start(
        Kind::Nginx,
        &[Backend {
            addr: host.addr,
            admin: host.admin,
        }],
    );
    let client: IpAddr = CLIENT.parse().unwrap();
    eventually(WAIT, "nginx serving", async || {
        let r = get_from(Some(client), &nginx.url("/hello/"), &[]).await;
        (r.status == 200).then_some(())
    })
    .await;

    // The client (127.0.0.2, not trusted) forges an X-Forwarded-For; nginx appends the
    // address it sees ("203.0.113.7, 127.0.0.2"), and the host, trusting only nginx
    // (127.0.0.1), stops at the first address it does not trust: the real client.
    let r = get_from(
        Some(client),
        &nginx.url("/hello/thread"),
        &[("x-forwarded-for", "203.0.113.7")],
    )
    .await;
    assert_eq!(r.status, 200);
    let line = access_line(&host, "/hello/thread");
    assert_eq!(who(&line), (CLIENT, "http", "127.0.0.1"), "{line}");

    // Without a forged header: the client, as nginx saw it.
    let r = get_from(Some(client), &nginx.url("/hello/slow?ms=0"), &[]).await;
    assert_eq!(r.status, 200);
    let line = access_line(&host, "/hello/slow");
    assert_eq!(who(&line), (CLIENT, "http", "127.0.0.1"), "{line}");

    // A trusted peer (127.0.0.1, as nginx is) is believed about the client and its scheme.
    let r = get_from(
        None,
        &host.url("/hello/no-such-page"),
        &[
            ("x-forwarded-for", "198.51.100.9"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(r.status, 404, "the app's own 404");
    let line = access_line(&host, "/hello/no-such-page");
    assert_eq!(who(&line), ("198.51.100.9", "https", "127.0.0.1"), "{line}");

    // The app's handlers see the same client and scheme (`req.client_addr()`, `req.scheme()`).
    let r = get_from(
        Some(client),
        &nginx.url("/hello/whoami"),
        &[("x-forwarded-for", "203.0.113.7")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, format!("{CLIENT} http\n").as_bytes());
    let r = get_from(
        None,
        &host.url("/hello/whoami"),
        &[
            ("x-forwarded-for", "198.51.100.9"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(r.body, &b"198.51.100.9 https\n"[..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_peer_cannot_forge_its_address_or_scheme() {
    let host = HostProc::start_with_config(
        &[hello("1.0.0")],
        "[http]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n",
    );
    let r = get_from(
        None,
        &host.url("/hello/thread"),
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=203.0.113.8;proto=https"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let line = access_line(&host, "/hello/thread");
    assert_eq!(who(&line), ("127.0.0.1", "http", ""), "{line}");
    let r = get_from(
        None,
        &host.url("/hello/whoami"),
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(
        r.body,
        &b"127.0.0.1 http\n"[..],
        "the app sees the real peer"
    );
}

/// gzip or brotli decoded.
fn decode(coding: &str, body: &[u8]) -> String {
    let mut out = String::new();
    match coding {
        "gzip" => flate2::read::GzDecoder::new(body)
            .read_to_string(&mut out)
            .unwrap(),
        "br" => brotli::Decompressor::new(body, 4096)
            .read_to_string(&mut out)
            .unwrap(),
        other => panic!("unexpected coding {other:?}"),
    };
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_are_compressed_as_the_client_accepts() {
    // No hello route answers 1 KiB, so every size is compressed here.
    let host = HostProc::start_with_config(&[hello("1.0.0")], "[compression]\nmin_bytes = 1\n");
    let expected = "hello from hello@1.0.0\n";
    for (accept, coding) in [
        ("br", "br"),
        ("gzip", "gzip"),
        ("gzip, deflate, br", "br"),
        ("br;q=0.5, gzip", "gzip"),
    ] {
        let r = get_from(None, &host.url("/hello/"), &[("accept-encoding", accept)]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), coding, "{accept}");
        assert_eq!(r.header("vary"), "Accept-Encoding");
        assert_eq!(r.header("x-baton-version"), "hello@1.0.0");
        assert_eq!(decode(coding, &r.body), expected, "{accept}");
    }
    for headers in [&[][..], &[("accept-encoding", "identity")][..]] {
        let r = get_from(None, &host.url("/hello/"), headers).await;
        assert_eq!(r.header("content-encoding"), "", "{headers:?}");
        assert_eq!(
            r.header("vary"),
            "Accept-Encoding",
            "the answer varies by it"
        );
        assert_eq!(r.body, expected);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn small_bodies_are_sent_as_they_are() {
    let host = HostProc::start(&[hello("1.0.0")]);
    let r = get_from(
        None,
        &host.url("/hello/"),
        &[("accept-encoding", "br, gzip")],
    )
    .await;
    assert_eq!(
        r.header("content-encoding"),
        "",
        "below the default min_bytes"
    );
    assert_eq!(r.header("vary"), "Accept-Encoding");
    assert_eq!(r.body, "hello from hello@1.0.0\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_compressed_when_compression_is_off() {
    let host = HostProc::start_with_config(
        &[hello("1.0.0")],
        "[compression]\nenabled = false\nmin_bytes = 1\n",
    );
    for accept in ["br", "gzip"] {
        let r = get_from(None, &host.url("/hello/"), &[("accept-encoding", accept)]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), "", "{accept}");
        assert_eq!(r.header("vary"), "", "{accept}");
        assert_eq!(r.body, "hello from hello@1.0.0\n");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_reached_a_trusted_proxy_over_https_gets_a_secure_session_cookie() {
    let host = HostProc::start_with_config(
        &[support::counter("1.0.0")],
        "[http]\ntrusted_proxies = [\"127.0.0.1\"]\n",
    );
    let over_https = get_from(
        None,
        &host.url("/counter/"),
        &[("x-forwarded-proto", "https")],
    )
    .await;
    assert_eq!(over_https.status, 200);
    let cookie = over_https.header("set-cookie");
    assert!(cookie.contains("Secure"), "{cookie}");
    let plain = get_from(None, &host.url("/counter/"), &[]).await;
    let cookie = plain.header("set-cookie");
    assert!(!cookie.is_empty() && !cookie.contains("Secure"), "{cookie}");
}
