//! Asset paths: which embedded paths a table keeps and how a request path is spelled as a key.
//!
//! A table is an exact-match map of clean paths. A request path is percent-decoded once
//! before the lookup (`/static/my%20file.css` finds `/static/my file.css`); an encoded `/`,
//! `\` or NUL (`%2F`, `%5C`, `%00`) and any decoded path that is not clean never match, so no
//! second spelling of a path reaches a file and no spelling escapes the asset set.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// Whether `path` is a path the table can hold: it starts with `/`, names a file (no trailing
/// `/`), and has no empty, `.` or `..` segment, no `\` and no control character.
pub(super) fn is_clean(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    !path.contains(|c: char| c == '\\' || c.is_control())
        && rest
            .split('/')
            .all(|segment| !matches!(segment, "" | "." | ".."))
}

/// The table key a request path (relative to the mount, as received) names, or `None` when
/// it cannot name an asset.
pub(super) fn key(path: &str) -> Option<Cow<'_, str>> {
    // Encoded separators would give a file a second spelling; an encoded NUL none at all.
    let bytes = path.as_bytes();
    let encoded_separator = bytes.windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                (w[1], w[2].to_ascii_lowercase()),
                (b'2', b'f') | (b'5', b'c') | (b'0', b'0')
            )
    });
    if encoded_separator {
        return None;
    }
    let decoded = percent_decode_str(path).decode_utf8().ok()?;
    is_clean(&decoded).then_some(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths_name_files() {
        for good in [
            "/a",
            "/static/app.css",
            "/static/my file.css",
            "/a/.well-known",
            "/x..y",
        ] {
            assert!(is_clean(good), "{good}");
        }
        for bad in [
            "", "a", "/", "/static/", "//a", "/a//b", "/a/./b", "/a/../b", "/..", "/a\\b", "/a\0b",
            "/a\nb", "/a\u{7f}",
        ] {
            assert!(!is_clean(bad), "{bad:?}");
        }
    }

    #[test]
    fn request_paths_are_decoded_once() {
        assert_eq!(
            key("/static/my%20file.css").as_deref(),
            Some("/static/my file.css")
        );
        assert_eq!(
            key("/static/caf%C3%A9.css").as_deref(),
            Some("/static/café.css")
        );
        assert_eq!(key("/a%2520b").as_deref(), Some("/a%20b"), "not twice");
        assert_eq!(key("/static/app.css").as_deref(), Some("/static/app.css"));
    }

    #[test]
    fn no_spelling_aliases_or_escapes() {
        for bad in [
            "/static/%2e%2e/secret",
            "/static/%2E%2E/secret",
            "/static/..%2fsecret",
            "/static%2Fapp.css",
            "/static%2fapp.css",
            "/static/%5c..%5capp.css",
            "/static/app.css%00.png",
            "/static//app.css",
            "/static/%2F/app.css",
            "/static/./app.css",
            "/static/%2e/app.css",
            "/static/%ff.css",
            "/static/",
            "static/app.css",
            "%2Fstatic/app.css",
            "/static/a%0Ab",
        ] {
            assert_eq!(key(bad), None, "{bad}");
        }
    }
}
