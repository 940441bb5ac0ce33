//! `Range: bytes=...` requests (RFC 9110 §14): one range is answered with its bytes; several
//! ranges are answered with the whole file, which the RFC allows; anything malformed is ignored.

/// What a syntactically valid `Range` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RangeRequest {
    /// One byte range.
    Single(ByteRange),
    /// Several ranges: answered with the whole file.
    Several,
}

/// One `bytes=` range as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ByteRange {
    /// `a-b`, both inclusive, `a <= b`.
    FromTo(u64, u64),
    /// `a-`: from `a` to the end.
    From(u64),
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    /// The inclusive `(first, last)` byte positions in a file of `len` bytes, or `None` when
    /// the range is unsatisfiable there.
    pub(super) fn resolve(self, len: u64) -> Option<(u64, u64)> {
        match self {
            ByteRange::FromTo(first, last) if first < len => Some((first, last.min(len - 1))),
            ByteRange::From(first) if first < len => Some((first, len - 1)),
            ByteRange::Suffix(n) if n > 0 && len > 0 => Some((len - n.min(len), len - 1)),
            _ => None,
        }
    }
}

/// Parses a `Range` header value; `None` for anything that is not a valid `bytes` range set.
pub(super) fn parse(value: &str) -> Option<RangeRequest> {
    let (unit, set) = value.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut ranges = set
        .split(',')
        .map(str::trim)
        .filter(|spec| !spec.is_empty())
        .map(parse_spec);
    let first = ranges.next()??;
    let mut several = false;
    for range in ranges {
        range?;
        several = true;
    }
    Some(if several {
        RangeRequest::Several
    } else {
        RangeRequest::Single(first)
    })
}

/// One range spec: `a-b`, `a-` or `-n`.
fn parse_spec(spec: &str) -> Option<ByteRange> {
    let (first, last) = spec.split_once('-')?;
    let number = |digits: &str| {
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse::<u64>().ok())
            .flatten()
    };
    match (first.is_empty(), last.is_empty()) {
        (true, true) => None,
        (true, false) => number(last).map(ByteRange::Suffix),
        (false, true) => number(first).map(ByteRange::From),
        (false, false) => {
            let (first, last) = (number(first)?, number(last)?);
            (first <= last).then_some(ByteRange::FromTo(first, last))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges_parse_and_resolve() {
        let single = |v| match parse(v) {
            Some(RangeRequest::Single(r)) => r,
            other => panic!("{v}: {other:?}"),
        };
        assert_eq!(single("bytes=0-4").resolve(10), Some((0, 4)));
        assert_eq!(single("bytes=5-100").resolve(10), Some((5, 9)));
        assert_eq!(single("bytes=3-").resolve(10), Some((3, 9)));
        assert_eq!(single("bytes=-3").resolve(10), Some((7, 9)));
        assert_eq!(single("bytes=-30").resolve(10), Some((0, 9)));
        assert_eq!(single("Bytes = 9-9 ").resolve(10), Some((9, 9)));
        assert_eq!(single("bytes=0-0,").resolve(10), Some((0, 0)));
    }

    #[test]
    fn unsatisfiable_ranges_resolve_to_none() {
        for (value, len) in [
            ("bytes=10-20", 10),
            ("bytes=10-", 10),
            ("bytes=-0", 10),
            ("bytes=0-0", 0),
            ("bytes=-5", 0),
        ] {
            let Some(RangeRequest::Single(range)) = parse(value) else {
                panic!("{value}");
            };
            assert_eq!(range.resolve(len), None, "{value} of {len}");
        }
    }

    #[test]
    fn several_ranges_are_told_apart() {
        assert_eq!(parse("bytes=0-1,3-4"), Some(RangeRequest::Several));
        assert_eq!(parse("bytes=0-1, -2"), Some(RangeRequest::Several));
    }

    #[test]
    fn malformed_headers_are_none() {
        for bad in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=5-4",
            "bytes=1-2-3",
            "items=0-1",
            "bytes=0-1,x",
            "bytes=+1-2",
            "bytes=0x1-2",
            "bytes=1 -2",
            "bytes=99999999999999999999-",
            "bytes=-99999999999999999999",
            "bytes=,",
            "bytes=0-1;",
            "=0-1",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
