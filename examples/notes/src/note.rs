//! A note as the app shows it, what a client may post, and the checks on it.

use std::time::{SystemTime, UNIX_EPOCH};

use baton_sdk::Error;
use serde::{Deserialize, Serialize};

/// Longest note text, in characters.
pub(crate) const MAX_TEXT_CHARS: usize = 2000;
/// Most tags on one note.
pub(crate) const MAX_TAGS: usize = 8;
/// Longest tag, in characters.
pub(crate) const MAX_TAG_CHARS: usize = 32;

/// One stored note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Note {
    pub(crate) id: i64,
    pub(crate) author: String,
    pub(crate) text: String,
    /// When it was posted, RFC 3339 in UTC.
    pub(crate) created: String,
    /// Its tags: only from schema version 2 on (absent from what version 1 answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tags: Option<Vec<String>>,
}

/// The body of `POST /api/notes`. Unknown fields are ignored, so a version that does not know
/// tags yet still accepts a note from a page of a version that does.
#[derive(Debug, Deserialize)]
pub(crate) struct NewNote {
    pub(crate) text: String,
    #[serde(default)]
    pub(crate) tags: Option<Tags>,
}

/// Tags as a client may send them: a list, or one string separated by commas or spaces.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Tags {
    List(Vec<String>),
    Text(String),
}

impl Tags {
    fn into_list(self) -> Vec<String> {
        match self {
            Tags::List(list) => list,
            Tags::Text(text) => text
                .split(|c: char| c == ',' || c.is_whitespace())
                .map(str::to_owned)
                .collect(),
        }
    }
}

/// The text of a note, trimmed, if it has 1 to [`MAX_TEXT_CHARS`] characters.
///
/// # Errors
/// A 400 naming the rule.
pub(crate) fn valid_text(text: &str) -> Result<&str, Error> {
    let text = text.trim();
    let chars = text.chars().count();
    if chars == 0 || chars > MAX_TEXT_CHARS {
        return Err(Error::bad_request(format!(
            "a note has 1 to {MAX_TEXT_CHARS} characters (this one has {chars})"
        )));
    }
    Ok(text)
}

/// Tags, lower-cased and without duplicates, each of letters, digits, `-` and `_`.
///
/// # Errors
/// A 400 naming the rule.
pub(crate) fn valid_tags(tags: Option<Tags>) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::new();
    for tag in tags.map(Tags::into_list).unwrap_or_default() {
        let tag = tag.trim().trim_start_matches('#').to_lowercase();
        if tag.is_empty() {
            continue;
        }
        let ok = tag.chars().count() <= MAX_TAG_CHARS
            && tag
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(Error::bad_request(format!(
                "a tag has 1 to {MAX_TAG_CHARS} letters, digits, '-' or '_': {tag:?}"
            )));
        }
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    if out.len() > MAX_TAGS {
        return Err(Error::bad_request(format!(
            "at most {MAX_TAGS} tags per note"
        )));
    }
    Ok(out)
}

/// Tags as one column value: `a,b`.
pub(crate) fn join_tags(tags: &[String]) -> String {
    tags.join(",")
}

/// Tags from their column value.
pub(crate) fn split_tags(column: &str) -> Vec<String> {
    column
        .split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Now, in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Milliseconds since the Unix epoch as RFC 3339 in UTC: `2026-12-07T03:24:05Z`.
pub(crate) fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_613_845_123), "2026-12-07T03:24:05Z");
    }

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(valid_text("  hi \n").unwrap(), "hi");
        assert!(valid_text("   ").is_err());
        assert!(valid_text(&"é".repeat(MAX_TEXT_CHARS)).is_ok());
        let long = valid_text(&"a".repeat(MAX_TEXT_CHARS + 1)).unwrap_err();
        assert_eq!(long.status(), baton_sdk::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn tags_come_as_a_list_or_text() {
        let list = valid_tags(Some(Tags::List(vec!["Rust".into(), "#web".into()])));
        assert_eq!(list.unwrap(), ["rust", "web"]);
        let text = valid_tags(Some(Tags::Text("a, b a".into()))).unwrap();
        assert_eq!(text, ["a", "b"]);
        assert!(valid_tags(Some(Tags::Text("no<script>".into()))).is_err());
        assert!(valid_tags(None).unwrap().is_empty());
        assert_eq!(split_tags(&join_tags(&text)), text);
        assert!(split_tags("").is_empty());
    }
}
