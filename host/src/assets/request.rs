//! What a request's headers ask of an asset: the content coding it accepts
//! (`Accept-Encoding`), its validators (`If-None-Match`, `If-Match`, `If-Modified-Since`,
//! `If-Unmodified-Since`, `If-Range`) and its `Range`. Every parser is total: a value it cannot
//! read counts as absent or as not matching, never as an error.

use std::time::SystemTime;

use http::HeaderMap;
use http::header::{self, HeaderName};

use super::range::{self, RangeRequest};

/// A precompressed variant's content coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Coding {
    /// Brotli, `.br`.
    Br,
    /// Gzip, `.gz`.
    Gzip,
}

impl Coding {
    /// Both codings, the preferred one first.
    pub(super) const ALL: [Coding; 2] = [Coding::Br, Coding::Gzip];

    /// The `Content-Encoding` token.
    pub(super) fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }

    /// The file name suffix of the variant.
    pub(super) fn suffix(self) -> &'static str {
        match self {
            Coding::Br => ".br",
            Coding::Gzip => ".gz",
        }
    }

    /// Whether an `Accept-Encoding` token names this coding.
    fn named_by(self, token: &str) -> bool {
        match self {
            Coding::Br => token.eq_ignore_ascii_case("br"),
            Coding::Gzip => {
                token.eq_ignore_ascii_case("gzip") || token.eq_ignore_ascii_case("x-gzip")
            }
        }
    }
}

/// The text of a header that occurs exactly once and is visible ASCII.
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()
}

/// The text of every line of a list header, lines that are not visible ASCII left out.
fn list<'h>(headers: &'h HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'h str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|element| !element.is_empty())
}

/// A `qvalue` in thousandths; `None` when it is not one (RFC 9110 §12.4.2).
fn qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |n, digit| n * 10 + u16::from(digit - b'0'));
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The best precompressed coding among `available` that `Accept-Encoding` accepts: the
/// highest q-value above zero, brotli on a tie. An explicit entry for a coding overrides `*`;
/// an entry with a malformed q-value is left out. No `Accept-Encoding` means identity.
pub(super) fn preferred_coding(
    headers: &HeaderMap,
    available: impl Fn(Coding) -> bool,
) -> Option<Coding> {
    let mut explicit = [None::<u16>; 2];
    let mut any = None::<u16>;
    for element in list(headers, &header::ACCEPT_ENCODING) {
        let mut parts = element.split(';').map(str::trim);
        let token = parts.next().unwrap_or_default();
        let mut q = Some(1000);
        for param in parts {
            match param.split_once('=') {
                Some((name, value)) if name.trim().eq_ignore_ascii_case("q") => {
                    q = qvalue(value.trim());
                }
                _ => {}
            }
        }
        let Some(q) = q else { continue };
        if token == "*" {
            any = Some(q);
        }
        for (slot, coding) in explicit.iter_mut().zip(Coding::ALL) {
            if coding.named_by(token) {
                *slot = Some(q);
            }
        }
    }
    let mut best: Option<(Coding, u16)> = None;
    for (coding, q) in Coding::ALL.into_iter().zip(explicit) {
        let q = q.or(any).unwrap_or(0);
        if q > 0 && available(coding) && best.is_none_or(|(_, b)| q > b) {
            best = Some((coding, q));
        }
    }
    best.map(|(coding, _)| coding)
}

/// One entity-tag of a list: its opaque text without quotes and whether it is weak.
fn entity_tags(list: &str) -> impl Iterator<Item = Option<(&str, bool)>> {
    list.split(',')
        .map(str::trim)
        .filter(|tag| !tag.is_empty())
        .map(|tag| {
            let (weak, quoted) = match tag.strip_prefix("W/") {
                Some(rest) => (true, rest),
                None => (false, tag),
            };
            let opaque = quoted.strip_prefix('"')?.strip_suffix('"')?;
            (!opaque.contains('"')).then_some((opaque, weak))
        })
}

/// How an `If-*` entity-tag list is compared (RFC 9110 §8.8.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    /// Both strong and equal (`If-Match`, `If-Range`).
    Strong,
    /// Equal opaque tags, weak or not (`If-None-Match`).
    Weak,
}

/// Whether the lines of `name` hold `*` or a tag equal to `opaque` (a strong tag); `None`
/// when the header is absent. A malformed list matches nothing.
fn tag_list_matches(
    headers: &HeaderMap,
    name: &HeaderName,
    opaque: &str,
    comparison: Comparison,
) -> Option<bool> {
    let mut lines = headers.get_all(name).iter().peekable();
    lines.peek()?;
    let mut matched = false;
    for line in lines {
        let Ok(line) = line.to_str() else {
            return Some(false);
        };
        if line.trim() == "*" {
            matched = true;
            continue;
        }
        for tag in entity_tags(line) {
            let Some((tag, weak)) = tag else {
                return Some(false);
            };
            matched |= tag == opaque && (comparison == Comparison::Weak || !weak);
        }
    }
    Some(matched)
}

/// A date header that occurs once and parses as an HTTP date.
fn date(headers: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    httpdate::parse_http_date(single(headers, name)?.trim()).ok()
}

/// The validators of the representation about to be sent.
#[derive(Debug, Clone, Copy)]
pub(super) struct Validators<'a> {
    /// The ETag's opaque text, without quotes.
    pub(super) etag: &'a str,
    /// The modification time, whole seconds.
    pub(super) modified: Option<SystemTime>,
}

/// What the preconditions of a request decide (RFC 9110 §13.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Precondition {
    /// Go on and answer.
    Proceed,
    /// `412 Precondition Failed` (`If-Match` or `If-Unmodified-Since`).
    Failed,
    /// `304 Not Modified` (`If-None-Match` or `If-Modified-Since`).
    NotModified,
}

/// Evaluates the preconditions in the RFC's order; `If-Unmodified-Since` counts only without
/// `If-Match` and `If-Modified-Since` only without `If-None-Match`.
pub(super) fn precondition(headers: &HeaderMap, current: Validators<'_>) -> Precondition {
    match tag_list_matches(headers, &header::IF_MATCH, current.etag, Comparison::Strong) {
        Some(false) => return Precondition::Failed,
        Some(true) => {}
        None => {
            let since = date(headers, &header::IF_UNMODIFIED_SINCE);
            if let (Some(since), Some(modified)) = (since, current.modified)
                && modified > since
            {
                return Precondition::Failed;
            }
        }
    }
    match tag_list_matches(
        headers,
        &header::IF_NONE_MATCH,
        current.etag,
        Comparison::Weak,
    ) {
        Some(true) => Precondition::NotModified,
        Some(false) => Precondition::Proceed,
        None => {
            let since = date(headers, &header::IF_MODIFIED_SINCE);
            match (since, current.modified) {
                (Some(since), Some(modified)) if modified <= since => Precondition::NotModified,
                _ => Precondition::Proceed,
            }
        }
    }
}

/// The `Range` of a request, when it has exactly one valid one.
pub(super) fn range(headers: &HeaderMap) -> Option<RangeRequest> {
    range::parse(single(headers, &header::RANGE)?)
}

/// Whether `If-Range` lets the range through: absent, or naming the current representation
/// (its strong ETag, or exactly its `Last-Modified` date).
pub(super) fn if_range_holds(headers: &HeaderMap, current: Validators<'_>) -> bool {
    if !headers.contains_key(header::IF_RANGE) {
        return true;
    }
    let Some(value) = single(headers, &header::IF_RANGE).map(str::trim) else {
        return false;
    };
    if value.starts_with('"') || value.starts_with("W/") {
        return matches!(entity_tags(value).collect::<Vec<_>>()[..],
            [Some((tag, false))] if tag == current.etag);
    }
    match (httpdate::parse_http_date(value), current.modified) {
        (Ok(date), Some(modified)) => date == modified,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn accept(value: &str) -> Option<Coding> {
        preferred_coding(&headers(&[(header::ACCEPT_ENCODING, value)]), |_| true)
    }

    #[test]
    fn qvalues_parse_as_the_rfc_writes_them() {
        for (text, q) in [
            ("1", 1000),
            ("1.000", 1000),
            ("0", 0),
            ("0.5", 500),
            ("0.05", 50),
        ] {
            assert_eq!(qvalue(text), Some(q), "{text}");
        }
        for bad in ["", "2", "1.5", "0.1234", "-1", "0.x", ".5", "0.-1", "1.001"] {
            assert_eq!(qvalue(bad), None, "{bad}");
        }
    }

    #[test]
    fn brotli_is_preferred_and_q_zero_refuses() {
        assert_eq!(accept("gzip, deflate, br, zstd"), Some(Coding::Br));
        assert_eq!(accept("gzip"), Some(Coding::Gzip));
        assert_eq!(accept("x-gzip"), Some(Coding::Gzip));
        assert_eq!(accept("br;q=0, gzip"), Some(Coding::Gzip));
        assert_eq!(accept("br;q=0.5, gzip;q=0.8"), Some(Coding::Gzip));
        assert_eq!(accept("BR ; Q=0.9, gzip;q=0.9"), Some(Coding::Br));
        assert_eq!(accept("*"), Some(Coding::Br));
        assert_eq!(accept("*;q=0, gzip"), Some(Coding::Gzip));
        assert_eq!(accept("br;q=0, gzip;q=0"), None);
        assert_eq!(accept("identity"), None);
        assert_eq!(accept(""), None);
        assert_eq!(
            accept("br;q=2, gzip;q=x"),
            None,
            "malformed entries are left out"
        );
        assert_eq!(preferred_coding(&HeaderMap::new(), |_| true), None);
        let only_gzip = preferred_coding(
            &headers(&[(header::ACCEPT_ENCODING, "br, gzip;q=0.1")]),
            |c| c == Coding::Gzip,
        );
        assert_eq!(only_gzip, Some(Coding::Gzip));
    }

    #[test]
    fn accept_encoding_lines_combine() {
        let map = headers(&[
            (header::ACCEPT_ENCODING, "gzip"),
            (header::ACCEPT_ENCODING, "br"),
        ]);
        assert_eq!(preferred_coding(&map, |_| true), Some(Coding::Br));
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    const CURRENT: Validators<'static> = Validators {
        etag: "abc",
        modified: None,
    };

    #[test]
    fn if_none_match_compares_weakly_and_wins_over_the_date() {
        let current = Validators {
            modified: Some(at(1_000_000)),
            ..CURRENT
        };
        let check = |pairs: &[(HeaderName, &str)]| precondition(&headers(pairs), current);
        for hit in [
            "\"abc\"",
            "W/\"abc\"",
            "\"x\", \"abc\"",
            "*",
            " \"x\" ,W/\"abc\" ",
        ] {
            assert_eq!(
                check(&[(header::IF_NONE_MATCH, hit)]),
                Precondition::NotModified,
                "{hit}"
            );
        }
        for miss in [
            "\"abcd\"",
            "abc",
            "\"ab\"c\"",
            "\"x\", abc",
            "W/abc",
            "\"ABC\"",
        ] {
            assert_eq!(
                check(&[(header::IF_NONE_MATCH, miss)]),
                Precondition::Proceed,
                "{miss}"
            );
        }
        let later = httpdate::fmt_http_date(at(2_000_000));
        assert_eq!(
            check(&[(header::IF_MODIFIED_SINCE, &later)]),
            Precondition::NotModified
        );
        assert_eq!(
            check(&[
                (header::IF_NONE_MATCH, "\"other\""),
                (header::IF_MODIFIED_SINCE, &later)
            ]),
            Precondition::Proceed,
            "If-Modified-Since is ignored beside If-None-Match"
        );
        let earlier = httpdate::fmt_http_date(at(999_999));
        assert_eq!(
            check(&[(header::IF_MODIFIED_SINCE, &earlier)]),
            Precondition::Proceed
        );
        assert_eq!(
            check(&[(header::IF_MODIFIED_SINCE, "yesterday")]),
            Precondition::Proceed
        );
        assert_eq!(
            precondition(&headers(&[(header::IF_MODIFIED_SINCE, &later)]), CURRENT),
            Precondition::Proceed,
            "no modification time, no date comparison"
        );
    }

    #[test]
    fn if_match_compares_strongly() {
        let check = |value| precondition(&headers(&[(header::IF_MATCH, value)]), CURRENT);
        assert_eq!(check("\"abc\""), Precondition::Proceed);
        assert_eq!(check("*"), Precondition::Proceed);
        assert_eq!(check("W/\"abc\""), Precondition::Failed);
        assert_eq!(check("\"other\""), Precondition::Failed);
        let current = Validators {
            modified: Some(at(1_000_000)),
            ..CURRENT
        };
        let before = httpdate::fmt_http_date(at(5));
        let unmodified = headers(&[(header::IF_UNMODIFIED_SINCE, &before)]);
        assert_eq!(precondition(&unmodified, current), Precondition::Failed);
    }

    #[test]
    fn if_range_needs_the_strong_etag_or_the_exact_date() {
        let current = Validators {
            modified: Some(at(1_000_000)),
            ..CURRENT
        };
        let holds = |value: &str| if_range_holds(&headers(&[(header::IF_RANGE, value)]), current);
        assert!(if_range_holds(&HeaderMap::new(), current));
        assert!(holds("\"abc\""));
        assert!(!holds("W/\"abc\""));
        assert!(!holds("\"abc\", \"abc\""));
        assert!(!holds("\"old\""));
        assert!(holds(&httpdate::fmt_http_date(at(1_000_000))));
        assert!(!holds(&httpdate::fmt_http_date(at(1_000_001))));
        assert!(!holds("garbage"));
        assert!(!if_range_holds(
            &headers(&[(header::IF_RANGE, "\"abc\""), (header::IF_RANGE, "\"abc\"")]),
            current
        ));
    }
}
