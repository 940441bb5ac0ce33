//! Response compression, under `[compression]`: whether apps' responses are compressed (gzip or
//! brotli, as the client accepts), from what size, at what level, and for which media types.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Response compression, under `[compression]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct CompressionConfig {
    /// Compress apps' responses for clients that accept gzip or brotli.
    pub enabled: bool,
    /// Bodies of a known size smaller than this are sent as they are (a stream, whose size is
    /// unknown, is compressed whatever its size).
    pub min_bytes: u64,
    /// gzip's level, 1 (fastest) to 9 (smallest).
    pub gzip_level: u32,
    /// brotli's quality, 0 (fastest) to 11 (smallest).
    pub brotli_quality: u32,
    /// Media types that are compressed: `type/subtype`, or `type/*` for a whole type. Anything
    /// else (images, video, archives, fonts: mostly compressed already) never is.
    pub types: Vec<String>,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            enabled: true,
            min_bytes: 1024,
            gzip_level: 5,
            brotli_quality: 4,
            types: [
                "text/*",
                "application/json",
                "application/*+json",
                "application/javascript",
                "application/xml",
                "application/*+xml",
                "application/xhtml+xml",
                "application/wasm",
                "application/x-ndjson",
                "image/svg+xml",
                "image/x-icon",
                "image/bmp",
                "font/ttf",
                "font/otf",
            ]
            .map(str::to_owned)
            .to_vec(),
        }
    }
}

impl CompressionConfig {
    /// Checks the levels and the type patterns.
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting or the pattern that is wrong.
    pub(super) fn validate(&self) -> Result<()> {
        if !(1..=9).contains(&self.gzip_level) {
            return Err(Error::Config(format!(
                "compression.gzip_level {} must be from 1 to 9",
                self.gzip_level
            )));
        }
        if self.brotli_quality > 11 {
            return Err(Error::Config(format!(
                "compression.brotli_quality {} must be from 0 to 11",
                self.brotli_quality
            )));
        }
        if let Some(bad) = self.types.iter().find(|t| !valid_pattern(t)) {
            return Err(Error::Config(format!(
                "compression.types: {bad:?} is not a media type like \"text/html\", \
                 \"text/*\" or \"application/*+json\""
            )));
        }
        Ok(())
    }

    /// Whether `media_type` (a `Content-Type` value, parameters allowed) is one to compress.
    ///
    /// Asked for every response of an app, so it works on bytes: no splitting iterators, and a
    /// pattern's kind is compared before its subtype is looked at.
    pub(crate) fn compresses(&self, media_type: &str) -> bool {
        let bytes = media_type.as_bytes();
        let essence = bytes
            .iter()
            .position(|&b| b == b';')
            .map_or(bytes, |end| &bytes[..end])
            .trim_ascii();
        let Some(slash) = essence.iter().position(|&b| b == b'/') else {
            return false;
        };
        let (kind, subtype) = (&essence[..slash], &essence[slash + 1..]);
        if kind.is_empty() || subtype.is_empty() {
            return false;
        }
        self.types.iter().any(|pattern| {
            let pattern = pattern.as_bytes();
            let Some(slash) = pattern.iter().position(|&b| b == b'/') else {
                return false;
            };
            let p_kind = &pattern[..slash];
            (p_kind == b"*" || p_kind.eq_ignore_ascii_case(kind))
                && subtype_matches(&pattern[slash + 1..], subtype)
        })
    }
}

/// `*` matches any subtype, `*+json` any subtype with that suffix; anything else matches itself.
fn subtype_matches(pattern: &[u8], subtype: &[u8]) -> bool {
    if pattern == b"*" {
        return true;
    }
    if let Some(suffix) = pattern.strip_prefix(b"*") {
        return subtype.len() > suffix.len()
            && subtype[subtype.len() - suffix.len()..].eq_ignore_ascii_case(suffix);
    }
    pattern.eq_ignore_ascii_case(subtype)
}

/// `type/subtype`, `type/*` or `type/*+suffix`, of token characters.
fn valid_pattern(pattern: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let Some((kind, subtype)) = pattern.split_once('/') else {
        return false;
    };
    let subtype_ok = match subtype.strip_prefix('*') {
        Some("") => true,
        Some(suffix) => suffix.starts_with('+') && token(suffix),
        None => token(subtype),
    };
    (kind == "*" || token(kind)) && subtype_ok
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn defaults_compress_text_and_leave_compressed_formats_alone() {
        let config = Config::default().compression;
        config.validate().unwrap();
        assert!(config.enabled);
        assert_eq!(
            (config.min_bytes, config.gzip_level, config.brotli_quality),
            (1024, 5, 4)
        );
        for yes in [
            "text/plain; charset=utf-8",
            "TEXT/HTML",
            "text/event-stream",
            "application/json",
            "application/problem+json",
            "application/javascript",
            "application/xhtml+xml",
            "image/svg+xml",
            "application/wasm",
        ] {
            assert!(config.compresses(yes), "{yes}");
        }
        for no in [
            "image/png",
            "image/jpeg",
            "video/mp4",
            "application/zip",
            "application/gzip",
            "font/woff2",
            "application/octet-stream",
            "",
            "text",
            "/plain",
            "text/",
            "application/+json",
        ] {
            assert!(!config.compresses(no), "{no}");
        }
    }

    #[test]
    fn levels_and_patterns_are_checked() {
        let ok: Config = toml::from_str(
            "[compression]\nenabled = false\nmin_bytes = 0\ngzip_level = 9\nbrotli_quality = 0\n\
             types = [\"text/*\", \"*/*\", \"application/*+json\"]\n",
        )
        .unwrap();
        ok.validate().unwrap();
        assert!(
            ok.compression.compresses("image/png"),
            "*/* matches anything"
        );
        for (bad, named) in [
            ("gzip_level = 0", "gzip_level"),
            ("gzip_level = 10", "gzip_level"),
            ("brotli_quality = 12", "brotli_quality"),
            ("types = [\"text\"]", "\"text\""),
            ("types = [\"text/html; charset=utf-8\"]", "charset"),
            ("types = [\"text/*html\"]", "*html"),
            ("types = [\"/json\"]", "/json"),
        ] {
            let config: Config = toml::from_str(&format!("[compression]\n{bad}\n")).unwrap();
            let error = config.validate().unwrap_err().to_string();
            assert!(
                error.contains("compression") && error.contains(named),
                "{bad}: {error}"
            );
        }
        assert!(toml::from_str::<Config>("[compression]\nlevel = 5\n").is_err());
    }
}
