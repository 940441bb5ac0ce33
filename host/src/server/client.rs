//! Who a request comes from: the TCP peer, or, when the peer is a trusted proxy, the client it
//! forwards for, and the scheme that client used.
//!
//! A trusted peer's `Forwarded` header (RFC 7239) is read if present, else its
//! `X-Forwarded-For`; either is walked from the right, past the trusted proxies, to the first
//! address that is not one: the client (nginx's `realip` with `real_ip_recursive on`). When
//! every hop is trusted the leftmost is the client. The scheme is that hop's `proto=`, or
//! `X-Forwarded-Proto`. An untrusted peer's headers are ignored, and headers that cannot be
//! read (garbage, an `unknown` or obfuscated node where the client should be) leave the peer
//! as the client.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::header::{FORWARDED, HeaderMap, HeaderName};
use ipnet::IpNet;

/// The scheme a client used to reach the host (or its first trusted proxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// A `proto=` or `X-Forwarded-Proto` value, in any case; `None` for anything else.
    fn parse(value: &str) -> Option<Scheme> {
        let value = value.trim();
        if value.eq_ignore_ascii_case("http") {
            Some(Scheme::Http)
        } else if value.eq_ignore_ascii_case("https") {
            Some(Scheme::Https)
        } else {
            None
        }
    }
}

/// Who sent a request, as the accept loop found it; handed to the handler with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientInfo {
    /// The TCP peer: the client itself, or the proxy nearest the host.
    pub(crate) peer: SocketAddr,
    /// The connection to the host is TLS.
    pub(crate) over_tls: bool,
    /// The client's address: the peer's, or the one a trusted proxy forwarded for.
    pub(crate) addr: IpAddr,
    /// The scheme the client used.
    pub(crate) scheme: Scheme,
}

/// The peers whose forwarding headers are believed (`[http] trusted_proxies`).
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Trusts the peers in `nets`.
    pub(crate) fn new(nets: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies { nets }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }
}

impl ClientInfo {
    /// The client of a request from `peer` (over TLS or not) with `headers`.
    pub(crate) fn new(
        peer: SocketAddr,
        over_tls: bool,
        headers: &HeaderMap,
        trusted: &TrustedProxies,
    ) -> ClientInfo {
        let scheme = if over_tls {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let addr = peer.ip().to_canonical();
        let direct = ClientInfo {
            peer,
            over_tls,
            addr,
            scheme,
        };
        if trusted.nets.is_empty() || !trusted.trusts(addr) {
            return direct;
        }
        match forwarded_client(addr, headers, trusted) {
            Some((addr, proto)) => ClientInfo {
                peer,
                over_tls,
                addr,
                scheme: proto.unwrap_or(scheme),
            },
            None => direct,
        }
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The client address and scheme a trusted peer at `peer` forwards; `None` when its headers
/// cannot be read.
fn forwarded_client(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> Option<(IpAddr, Option<Scheme>)> {
    if headers.contains_key(FORWARDED) {
        let mut elements = Vec::new();
        for value in headers.get_all(FORWARDED) {
            parse_forwarded(value.to_str().ok()?, &mut elements)?;
        }
        let (i, addr) = walk(
            &elements,
            |e| e.node.as_deref().and_then(parse_node),
            trusted,
        )?;
        return Some((addr, elements[i].proto.as_deref().and_then(Scheme::parse)));
    }
    let protos = list(headers, &X_FORWARDED_PROTO).unwrap_or_default();
    if !headers.contains_key(X_FORWARDED_FOR) {
        let proto = protos.last().and_then(|p| Scheme::parse(p));
        return Some((peer, proto));
    }
    let hops = list(headers, &X_FORWARDED_FOR)?;
    let (i, addr) = walk(&hops, |hop| parse_node(hop), trusted)?;
    // One value per hop: the client's hop's. Otherwise one value, set by the nearest proxy.
    let proto = if protos.len() == hops.len() {
        protos.get(i)
    } else {
        protos.last()
    };
    Some((addr, proto.and_then(|p| Scheme::parse(p))))
}

/// Walks `hops` from the right past trusted addresses; the first untrusted one, or the
/// leftmost, is the client. `None` if there is no hop, or a hop reached has no address.
fn walk<T>(
    hops: &[T],
    addr: impl Fn(&T) -> Option<IpAddr>,
    trusted: &TrustedProxies,
) -> Option<(usize, IpAddr)> {
    for (i, hop) in hops.iter().enumerate().rev() {
        let ip = addr(hop)?;
        if i == 0 || !trusted.trusts(ip) {
            return Some((i, ip));
        }
    }
    None
}

/// The non-empty items of every `name` header's comma-separated list, in order; `None` if one
/// is not text.
fn list<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<Vec<&'h str>> {
    let mut items = Vec::new();
    for value in headers.get_all(name) {
        items.extend(
            value
                .to_str()
                .ok()?
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty()),
        );
    }
    Some(items)
}

/// One element of a `Forwarded` header: what it says about one hop.
#[derive(Debug, Default, PartialEq)]
struct Element<'a> {
    node: Option<Cow<'a, str>>,
    proto: Option<Cow<'a, str>>,
}

/// Appends the elements of one `Forwarded` value to `elements`; `None` if it is malformed.
fn parse_forwarded<'a>(value: &'a str, elements: &mut Vec<Element<'a>>) -> Option<()> {
    let bytes = value.as_bytes();
    let mut i = 0;
    let mut element = Element::default();
    let mut pairs = 0;
    loop {
        while bytes.get(i).is_some_and(|b| *b == b' ' || *b == b'\t') {
            i += 1;
        }
        match bytes.get(i) {
            None | Some(b',') => {
                if pairs > 0 {
                    elements.push(std::mem::take(&mut element));
                    pairs = 0;
                }
                if i >= bytes.len() {
                    return Some(());
                }
                i += 1;
                continue;
            }
            Some(b';') => {
                i += 1;
                continue;
            }
            Some(_) => {}
        }
        let key_start = i;
        while bytes.get(i).is_some_and(|b| is_tchar(*b)) {
            i += 1;
        }
        if i == key_start || bytes.get(i) != Some(&b'=') {
            return None;
        }
        let key = &value[key_start..i];
        i += 1;
        let parsed = if bytes.get(i) == Some(&b'"') {
            let (text, end) = quoted(value, i)?;
            i = end;
            text
        } else {
            let start = i;
            while bytes.get(i).is_some_and(|b| is_tchar(*b)) {
                i += 1;
            }
            if i == start {
                return None;
            }
            Cow::Borrowed(&value[start..i])
        };
        let slot = if key.eq_ignore_ascii_case("for") {
            Some(&mut element.node)
        } else if key.eq_ignore_ascii_case("proto") {
            Some(&mut element.proto)
        } else {
            None
        };
        if let Some(slot) = slot {
            // A parameter given twice in one element (RFC 7239, section 4).
            if slot.replace(parsed).is_some() {
                return None;
            }
        }
        pairs += 1;
        while bytes.get(i).is_some_and(|b| *b == b' ' || *b == b'\t') {
            i += 1;
        }
        if !matches!(bytes.get(i), None | Some(b',' | b';')) {
            return None;
        }
    }
}

/// The quoted string opening at `start` (a `"`), unescaped, and the index after it.
fn quoted(value: &str, start: usize) -> Option<(Cow<'_, str>, usize)> {
    let bytes = value.as_bytes();
    let mut i = start + 1;
    let mut unescaped: Option<String> = None;
    loop {
        match *bytes.get(i)? {
            b'"' => {
                let text = match unescaped {
                    Some(s) => Cow::Owned(s),
                    None => Cow::Borrowed(&value[start + 1..i]),
                };
                return Some((text, i + 1));
            }
            b'\\' => {
                let escaped = *bytes.get(i + 1)?;
                unescaped
                    .get_or_insert_with(|| value[start + 1..i].to_owned())
                    .push(char::from(escaped));
                i += 2;
            }
            b => {
                if let Some(s) = &mut unescaped {
                    s.push(char::from(b));
                }
                i += 1;
            }
        }
    }
}

/// RFC 9110's token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The address of a node: `192.0.2.7`, `192.0.2.7:4711`, `[2001:db8::1]`, `[2001:db8::1]:4711`
/// (a port may be obfuscated, `_abc`), or a bare IPv6 address. `None` for `unknown`, an
/// obfuscated identifier or anything else.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim();
    let ip = if let Some(rest) = node.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(valid_port)) {
            return None;
        }
        IpAddr::V6(inside.parse::<Ipv6Addr>().ok()?)
    } else if let Ok(ip) = node.parse::<IpAddr>() {
        ip
    } else {
        let (host, port) = node.split_once(':')?;
        if !valid_port(port) {
            return None;
        }
        IpAddr::V4(host.parse().ok()?)
    };
    Some(ip.to_canonical())
}

/// A port number, or an obfuscated port (`_` and token characters).
fn valid_port(port: &str) -> bool {
    match port.strip_prefix('_') {
        Some(obfuscated) => {
            !obfuscated.is_empty()
                && obfuscated
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        }
        None => port.parse::<u16>().is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn trusted(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            entries
                .iter()
                .map(|e| {
                    e.parse::<IpNet>()
                        .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                        .unwrap()
                })
                .collect(),
        )
    }

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    fn client(
        peer: &str,
        tls: bool,
        pairs: &[(&str, &[u8])],
        trust: &[&str],
    ) -> (String, &'static str) {
        let peer: SocketAddr = peer.parse().unwrap();
        let info = ClientInfo::new(peer, tls, &headers(pairs), &trusted(trust));
        assert_eq!(info.peer, peer);
        (info.addr.to_string(), info.scheme.as_str())
    }

    const PROXIES: &[&str] = &["127.0.0.1", "10.0.0.0/8", "::1"];

    #[test]
    fn x_forwarded_for_is_walked_from_the_right_past_trusted_proxies() {
        let p = "10.0.0.2:5000";
        for (xff, expected) in [
            (&b"203.0.113.7"[..], "203.0.113.7"),
            (b"203.0.113.7, 10.0.0.9", "203.0.113.7"),
            // A client's forged entry is left of the first untrusted address: ignored.
            (b"6.6.6.6, 203.0.113.7, 10.0.0.9", "203.0.113.7"),
            (b"6.6.6.6,203.0.113.7 ,  127.0.0.1", "203.0.113.7"),
            // Every hop trusted: the leftmost.
            (b"10.0.0.5, 10.0.0.9", "10.0.0.5"),
            (b"203.0.113.7:4711", "203.0.113.7"),
            (b"[2001:db8::7]:4711, 10.0.0.9", "2001:db8::7"),
            (b"2001:db8::7", "2001:db8::7"),
            (b"::ffff:203.0.113.7", "203.0.113.7"),
            (b"203.0.113.7,, ,10.0.0.9", "203.0.113.7"),
            // Garbage where the walk reaches it: the peer.
            (b"203.0.113.7, garbage", "10.0.0.2"),
            (b"unknown", "10.0.0.2"),
            (b"", "10.0.0.2"),
            (b" , ", "10.0.0.2"),
            (b"203.0.113.7\xff", "10.0.0.2"),
            (b"999.1.1.1", "10.0.0.2"),
            (b"[2001:db8::7", "10.0.0.2"),
            (b"1.2.3.4:99999", "10.0.0.2"),
            // Garbage beyond the client is never looked at.
            (b"garbage, 203.0.113.7", "203.0.113.7"),
        ] {
            let got = client(p, false, &[("x-forwarded-for", xff)], PROXIES);
            assert_eq!(got.0, expected, "{}", String::from_utf8_lossy(xff));
        }
        // Several headers are one list.
        let got = client(
            p,
            false,
            &[
                ("x-forwarded-for", b"203.0.113.7"),
                ("x-forwarded-for", b"10.0.0.3"),
            ],
            PROXIES,
        );
        assert_eq!(got.0, "203.0.113.7");
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        for trust in [&[][..], &["10.0.0.0/8"][..], &["::2"][..]] {
            let got = client(
                "127.0.0.1:40000",
                false,
                &[
                    ("x-forwarded-for", b"203.0.113.7"),
                    ("x-forwarded-proto", b"https"),
                    ("forwarded", b"for=203.0.113.8;proto=https"),
                ],
                trust,
            );
            assert_eq!(got, ("127.0.0.1".to_owned(), "http"), "{trust:?}");
        }
        let got = client("127.0.0.1:1", true, &[("x-forwarded-proto", b"http")], &[]);
        assert_eq!(got.1, "https", "TLS to the host itself");
        // An IPv4-mapped peer is its IPv4 address, trusted as such.
        let got = client(
            "[::ffff:127.0.0.1]:1",
            false,
            &[("x-forwarded-for", b"203.0.113.7")],
            PROXIES,
        );
        assert_eq!(got.0, "203.0.113.7");
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for_and_parses_rfc_7239() {
        let p = "127.0.0.1:5000";
        for (fwd, expected) in [
            (&b"for=203.0.113.7"[..], ("203.0.113.7", "http")),
            (b"for=203.0.113.7;proto=https", ("203.0.113.7", "https")),
            (
                b"For=\"203.0.113.7\";Proto=HTTPS;by=10.0.0.1",
                ("203.0.113.7", "https"),
            ),
            (
                b"for=\"[2001:db8:cafe::17]:4711\"",
                ("2001:db8:cafe::17", "http"),
            ),
            (
                b"for=\"[2001:db8:cafe::17]\";proto=https",
                ("2001:db8:cafe::17", "https"),
            ),
            (b"for=\"203.0.113.7:_hidden\"", ("203.0.113.7", "http")),
            (b"for=\"\\203.0.113.7\"", ("203.0.113.7", "http")),
            (
                b"for=6.6.6.6;proto=http, for=203.0.113.7;proto=https, for=10.0.0.1;proto=http",
                ("203.0.113.7", "https"),
            ),
            (b"for=203.0.113.7 , for=10.0.0.1", ("203.0.113.7", "http")),
            (b"for=203.0.113.7,,for=10.0.0.1", ("203.0.113.7", "http")),
            (b"for=\"a,b;c\", for=203.0.113.7", ("203.0.113.7", "http")),
            // Every hop trusted: the leftmost.
            (
                b"for=10.0.0.3;proto=https, for=10.0.0.1",
                ("10.0.0.3", "https"),
            ),
            // Unreadable: the peer.
            (b"for=unknown", ("127.0.0.1", "http")),
            (b"for=_hidden, for=10.0.0.1", ("127.0.0.1", "http")),
            (b"proto=https", ("127.0.0.1", "http")),
            (b"for=203.0.113.7;proto=gopher", ("203.0.113.7", "http")),
            (b"for=203.0.113.7;for=203.0.113.8", ("127.0.0.1", "http")),
            (b"for=\"203.0.113.7", ("127.0.0.1", "http")),
            (b"for=\"203.0.113.7\\", ("127.0.0.1", "http")),
            (b"for=", ("127.0.0.1", "http")),
            (b"=203.0.113.7", ("127.0.0.1", "http")),
            (b"for 203.0.113.7", ("127.0.0.1", "http")),
            (b"for=203.0.113.7 junk", ("127.0.0.1", "http")),
            (b"for=[2001:db8::1]", ("127.0.0.1", "http")),
            (b"", ("127.0.0.1", "http")),
            (b"for=\"\xfe\"", ("127.0.0.1", "http")),
        ] {
            let got = client(
                p,
                false,
                &[("forwarded", fwd), ("x-forwarded-for", b"198.51.100.1")],
                PROXIES,
            );
            assert_eq!(
                (got.0.as_str(), got.1),
                expected,
                "{}",
                String::from_utf8_lossy(fwd)
            );
        }
        let got = client(
            p,
            false,
            &[
                ("forwarded", b"for=203.0.113.7;proto=https"),
                ("forwarded", b"for=10.0.0.1"),
            ],
            PROXIES,
        );
        assert_eq!(got, ("203.0.113.7".to_owned(), "https"), "several headers");
    }

    #[test]
    fn the_scheme_comes_from_the_clients_hop_when_the_peer_is_trusted() {
        let p = "10.0.0.2:5000";
        for (pairs, expected) in [
            (
                &[("x-forwarded-proto", &b"https"[..])][..],
                ("10.0.0.2", "https"),
            ),
            (
                &[
                    ("x-forwarded-proto", b"HTTPS"),
                    ("x-forwarded-for", b"203.0.113.7"),
                ],
                ("203.0.113.7", "https"),
            ),
            // One value per hop: the client's hop's.
            (
                &[
                    ("x-forwarded-proto", b"https, http"),
                    ("x-forwarded-for", b"203.0.113.7, 10.0.0.9"),
                ],
                ("203.0.113.7", "https"),
            ),
            // Otherwise the nearest proxy's.
            (
                &[
                    ("x-forwarded-proto", b"http, https"),
                    ("x-forwarded-for", b"203.0.113.7"),
                ],
                ("203.0.113.7", "https"),
            ),
            (
                &[
                    ("x-forwarded-proto", b"gopher"),
                    ("x-forwarded-for", b"203.0.113.7"),
                ],
                ("203.0.113.7", "http"),
            ),
            (&[("x-forwarded-proto", b"\xffhttps")], ("10.0.0.2", "http")),
            (
                &[
                    ("x-forwarded-proto", b"\xffhttps"),
                    ("x-forwarded-for", b"203.0.113.7"),
                ],
                ("203.0.113.7", "http"),
            ),
        ] {
            let got = client(p, false, pairs, PROXIES);
            assert_eq!((got.0.as_str(), got.1), expected, "{pairs:?}");
        }
    }

    #[test]
    fn random_headers_never_panic_and_an_untrusted_peer_is_never_overridden() {
        // A fixed-seed xorshift: the same inputs on every run.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        const ALPHABET: &[u8] =
            b"[]:;,=_\"\\ \t.0123456789abcdefABCDEF:forFORprotoProtounknownhttps/";
        let names = ["forwarded", "x-forwarded-for", "x-forwarded-proto"];
        let trust = trusted(&["0.0.0.0/0", "::/0"]);
        let none = trusted(&["192.0.2.1"]);
        for _ in 0..20_000 {
            let mut map = HeaderMap::new();
            for _ in 0..(next() % 4) {
                let len = (next() % 48) as usize;
                let value: Vec<u8> = (0..len)
                    .map(|_| {
                        let r = next();
                        if r % 16 == 0 {
                            0x80 | (r >> 8) as u8
                        } else {
                            ALPHABET[(r >> 8) as usize % ALPHABET.len()]
                        }
                    })
                    .collect();
                if let Ok(value) = HeaderValue::from_bytes(&value) {
                    map.append(names[next() as usize % names.len()], value);
                }
            }
            let peer = SocketAddr::from(([10, 0, 0, 1], 1));
            let _ = ClientInfo::new(peer, next() % 2 == 0, &map, &trust);
            let untrusted = ClientInfo::new(peer, false, &map, &none);
            assert_eq!(
                (untrusted.addr, untrusted.scheme),
                (peer.ip(), Scheme::Http)
            );
        }
    }

    #[test]
    fn nodes_parse_with_ports_and_brackets() {
        for (node, expected) in [
            ("192.0.2.43", Some("192.0.2.43")),
            ("192.0.2.43:80", Some("192.0.2.43")),
            ("192.0.2.43:_p", Some("192.0.2.43")),
            ("[2001:db8::1]:_p", Some("2001:db8::1")),
            ("[::ffff:192.0.2.43]", Some("192.0.2.43")),
            ("192.0.2.43:", None),
            ("192.0.2.43:_", None),
            ("[192.0.2.43]", None),
            ("[2001:db8::1]x", None),
            ("_hidden", None),
            ("unknown", None),
            ("example.com", None),
        ] {
            assert_eq!(
                parse_node(node).map(|ip| ip.to_string()).as_deref(),
                expected,
                "{node}"
            );
        }
    }
}
