//! Static assets an app embeds in its module (CSS, JS, images, fonts), served by the host from
//! memory without calling the module, with what browsers and CDNs expect.
//!
//! At load time the host copies each embedded file out of the module into an [`AssetTable`],
//! one per loaded version, built with the app's effective config (`Config::assets_for`). For a
//! request, [`find_version`] picks the table among the app's loaded versions (the active one,
//! or an older one that a `?v=<hash>` URL names) and [`AssetTable::serve`] answers it; when
//! either says `None` the request goes to the app as usual.
//!
//! - `path`: which paths a table holds and how a request path becomes a key (decoded once;
//!   encoded separators and unclean paths never match).
//! - `request`: `Accept-Encoding`, the validators (`If-None-Match` and friends) and `If-Range`.
//! - `range`: `Range: bytes=...`.
//!
//! An answer carries a `Content-Type` guessed from the extension, a strong `ETag` from the
//! module's content hash, `Last-Modified` when the module knows it, `Cache-Control` from the
//! config (`immutable` for a URL whose `v` query parameter is the file's hash),
//! `Accept-Ranges`, `Content-Length` and `X-Content-Type-Options: nosniff`. A file with
//! precompressed siblings (`app.css.br`, `app.css.gz`) is sent compressed to clients that
//! accept it, with `Vary: Accept-Encoding`.

mod path;
mod range;
mod request;

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};

use crate::config::{AssetsConfig, CompressionConfig};

use range::{ByteRange, RangeRequest};
use request::{Coding, Precondition, Validators};

/// `Cache-Control` of a content-addressed URL (`?v=<hash>`): its bytes never change.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// One embedded file as the module lists it.
#[derive(Clone)]
pub(crate) struct AssetEntry {
    /// Path relative to the app's mount, e.g. "/static/app.css" (always starts with '/').
    pub(crate) path: String,
    /// The file's bytes.
    pub(crate) bytes: Bytes,
    /// The module's content hash of the bytes (hex text, e.g. 16 hex digits); used in the
    /// ETag and in versioned URLs.
    pub(crate) hash: String,
    /// The file's modification time as embedded, if known.
    pub(crate) modified: Option<SystemTime>,
}

impl fmt::Debug for AssetEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssetEntry")
            .field("path", &self.path)
            .field("len", &self.bytes.len())
            .field("hash", &self.hash)
            .field("modified", &self.modified)
            .finish()
    }
}

/// One representation of a file: its identity bytes or a precompressed variant's.
#[derive(Clone)]
struct Representation {
    bytes: Bytes,
    /// The ETag's opaque text, without quotes.
    tag: String,
    /// The `ETag` header: the tag in quotes.
    etag: HeaderValue,
}

impl Representation {
    fn new(bytes: Bytes, tag: String) -> Representation {
        let etag = HeaderValue::from_str(&format!("\"{tag}\""))
            .expect("a tag of ETag characters is a header value");
        Representation { bytes, tag, etag }
    }
}

/// One file of a table, with the headers every answer for it carries.
struct Asset {
    identity: Representation,
    /// The module's hash, which a `v` query parameter must equal for an immutable answer.
    hash: String,
    /// Whole seconds, as `Last-Modified` says it.
    modified: Option<SystemTime>,
    last_modified: Option<HeaderValue>,
    content_type: HeaderValue,
    /// The `.br` and `.gz` siblings, in [`Coding::ALL`]'s order.
    variants: [Option<Representation>; 2],
}

impl Asset {
    fn variant(&self, coding: Coding) -> Option<&Representation> {
        let index = Coding::ALL.iter().position(|c| *c == coding)?;
        self.variants[index].as_ref()
    }

    fn has_variants(&self) -> bool {
        self.variants.iter().any(Option::is_some)
    }
}

/// The static assets of one loaded version: an exact-match map from clean paths (relative to
/// the mount) to files in memory, with their headers computed once.
pub(crate) struct AssetTable {
    files: HashMap<String, Asset>,
    total_bytes: u64,
    cache_control: HeaderValue,
}

impl fmt::Debug for AssetTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssetTable")
            .field("files", &self.files.len())
            .field("bytes", &self.total_bytes)
            .field("cache_control", &self.cache_control)
            .finish()
    }
}

/// Whether `hash` can stand inside a quoted ETag and a URL query unchanged.
fn usable_hash(hash: &str) -> bool {
    !hash.is_empty()
        && hash.len() <= 128
        && hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A time cut to whole seconds, as HTTP dates carry it; `None` before 1970.
fn whole_seconds(time: SystemTime) -> Option<SystemTime> {
    let since = time.duration_since(UNIX_EPOCH).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(since.as_secs()))
}

/// The `Content-Type` of a path: guessed from its extension, UTF-8 for text.
fn content_type(path: &str) -> HeaderValue {
    let Some(mime) = mime_guess::from_path(path).first() else {
        return HeaderValue::from_static("application/octet-stream");
    };
    let text = mime.type_() == mime_guess::mime::TEXT
        || matches!(mime.subtype().as_str(), "javascript" | "json")
        || mime.suffix() == Some(mime_guess::mime::JSON);
    let value = if text && mime.get_param(mime_guess::mime::CHARSET).is_none() {
        format!("{}; charset=utf-8", mime.essence_str())
    } else {
        mime.to_string()
    };
    HeaderValue::from_str(&value)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

/// The value of the first `v` parameter of a query.
fn version_param(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(name, _)| name == "v")
        .map(|(_, value)| value.into_owned())
}

/// A response with `status`, `headers` and `body`.
fn response(status: StatusCode, headers: HeaderMap, body: Bytes) -> Response<Bytes> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The `206` (or `416`) answer to one byte range of `bytes`, with the representation's
/// headers `out`.
fn partial(mut out: HeaderMap, bytes: &Bytes, range: ByteRange) -> Response<Bytes> {
    let len = bytes.len() as u64;
    let Some((first, last)) = range.resolve(len) else {
        out.remove(header::CONTENT_TYPE);
        out.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
        out.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes */{len}")).expect("a number is a header value"),
        );
        return response(StatusCode::RANGE_NOT_SATISFIABLE, out, Bytes::new());
    };
    // resolve keeps first <= last < len, which is a usize.
    let body = bytes.slice(first as usize..=last as usize);
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    out.insert(
        header::CONTENT_RANGE,
        HeaderValue::from_str(&format!("bytes {first}-{last}/{len}"))
            .expect("numbers are a header value"),
    );
    response(StatusCode::PARTIAL_CONTENT, out, body)
}

impl AssetTable {
    /// A table of `entries`, answered with `config`'s `Cache-Control` (the app's effective
    /// [`AssetsConfig`]).
    ///
    /// Entries whose path is not clean (see `path`) are left out, and so is the second of two
    /// entries with one path; a hash that cannot stand in an ETag is replaced by the xxh3 hash
    /// of the bytes. Each is logged as a warning.
    pub(crate) fn new(entries: Vec<AssetEntry>, config: &AssetsConfig) -> AssetTable {
        let mut plain: HashMap<String, AssetEntry> = HashMap::with_capacity(entries.len());
        for mut entry in entries {
            if !path::is_clean(&entry.path) {
                tracing::warn!(path = ?entry.path, "asset left out: not a clean path");
                continue;
            }
            if !usable_hash(&entry.hash) {
                let computed = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&entry.bytes));
                tracing::warn!(path = %entry.path, hash = ?entry.hash, computed = %computed,
                    "asset hash unusable in an ETag; computed from its bytes");
                entry.hash = computed;
            }
            if plain.contains_key(&entry.path) {
                tracing::warn!(path = %entry.path, "asset left out: its path is listed twice");
                continue;
            }
            plain.insert(entry.path.clone(), entry);
        }
        let total_bytes = plain.values().map(|e| e.bytes.len() as u64).sum();
        let files = plain
            .values()
            .map(|entry| {
                let variants = Coding::ALL.map(|coding| {
                    let sibling = plain.get(&format!("{}{}", entry.path, coding.suffix()))?;
                    Some(Representation::new(
                        sibling.bytes.clone(),
                        format!("{}-{}", sibling.hash, coding.token()),
                    ))
                });
                let modified = entry.modified.and_then(whole_seconds);
                let asset = Asset {
                    identity: Representation::new(entry.bytes.clone(), entry.hash.clone()),
                    hash: entry.hash.clone(),
                    modified,
                    last_modified: modified.map(|m| {
                        HeaderValue::from_str(&httpdate::fmt_http_date(m))
                            .expect("an HTTP date is a header value")
                    }),
                    content_type: content_type(&entry.path),
                    variants,
                };
                (entry.path.clone(), asset)
            })
            .collect();
        AssetTable {
            files,
            total_bytes,
            cache_control: config.cache_control_header(),
        }
    }

    /// Gives every file of a compressible type (at least `min_bytes`) the `.br` and `.gz`
    /// variants the app did not ship, compressed once now, as `[compression]` says: answers
    /// then never compress a file again per request, keep their strong ETags, and a `HEAD`
    /// says what a `GET` sends. Nothing when compression is off.
    pub(crate) fn precompressed(mut self, compression: &CompressionConfig) -> AssetTable {
        if !compression.enabled {
            return self;
        }
        for asset in self.files.values_mut() {
            let identity = &asset.identity;
            let content_type = asset.content_type.to_str().unwrap_or("");
            if (identity.bytes.len() as u64) < compression.min_bytes
                || !compression.compresses(content_type)
            {
                continue;
            }
            for (slot, coding) in asset.variants.iter_mut().zip(Coding::ALL) {
                if slot.is_some() {
                    continue;
                }
                let encoded =
                    crate::server::encode_whole(coding.token(), compression, &identity.bytes);
                *slot = encoded
                    .filter(|e| e.len() < identity.bytes.len())
                    .map(|e| Representation::new(e, format!("{}-{}", asset.hash, coding.token())));
            }
        }
        self
    }

    /// Whether `path` (relative to the mount, as received: it is percent-decoded once before
    /// the lookup) names an asset of this table.
    #[cfg(test)]
    pub(crate) fn contains(&self, path: &str) -> bool {
        self.get(path).is_some()
    }

    fn get(&self, path: &str) -> Option<&Asset> {
        self.files.get(path::key(path)?.as_ref())
    }

    /// The response for a request of `path` (relative to the mount, as received), or `None`
    /// when the path is not an asset (the request then goes to the app).
    ///
    /// GET and HEAD are answered (`200`, `206`, `304`, `412` or `416`); any other method on an
    /// asset gets `405` with `Allow: GET, HEAD`.
    pub(crate) fn serve(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<Response<Bytes>> {
        let asset = self.get(path)?;
        Some(self.answer(asset, method, query, headers))
    }

    fn answer(
        &self,
        asset: &Asset,
        method: &Method,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Response<Bytes> {
        let mut out = HeaderMap::new();
        if asset.has_variants() {
            out.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        }
        if method != Method::GET && method != Method::HEAD {
            out.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            out.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
            return response(StatusCode::METHOD_NOT_ALLOWED, out, Bytes::new());
        }
        // Range is defined for GET only; a ranged request is served from the identity file.
        let range = (method == Method::GET)
            .then(|| request::range(headers))
            .flatten();
        let coding = match range {
            Some(_) => None,
            None => request::preferred_coding(headers, |c| asset.variant(c).is_some()),
        };
        let chosen = coding
            .and_then(|c| asset.variant(c))
            .unwrap_or(&asset.identity);
        let immutable = version_param(query).is_some_and(|v| v.eq_ignore_ascii_case(&asset.hash));
        out.insert(header::ETAG, chosen.etag.clone());
        out.insert(
            header::CACHE_CONTROL,
            if immutable {
                HeaderValue::from_static(IMMUTABLE)
            } else {
                self.cache_control.clone()
            },
        );
        if let Some(last_modified) = &asset.last_modified {
            out.insert(header::LAST_MODIFIED, last_modified.clone());
        }
        let validators = Validators {
            etag: &chosen.tag,
            modified: asset.modified,
        };
        match request::precondition(headers, validators) {
            Precondition::Proceed => {}
            Precondition::NotModified => {
                return response(StatusCode::NOT_MODIFIED, out, Bytes::new());
            }
            Precondition::Failed => {
                out.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
                return response(StatusCode::PRECONDITION_FAILED, out, Bytes::new());
            }
        }
        out.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        out.insert(header::CONTENT_TYPE, asset.content_type.clone());
        out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Some(coding) = coding {
            out.insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_static(coding.token()),
            );
        }
        let single = match range {
            Some(RangeRequest::Single(range)) if request::if_range_holds(headers, validators) => {
                Some(range)
            }
            _ => None,
        };
        let Some(range) = single else {
            out.insert(
                header::CONTENT_LENGTH,
                HeaderValue::from(chosen.bytes.len()),
            );
            let body = if method == Method::HEAD {
                Bytes::new()
            } else {
                chosen.bytes.clone()
            };
            return response(StatusCode::OK, out, body);
        };
        partial(out, &chosen.bytes, range)
    }

    /// Number of files, precompressed variants included.
    pub(crate) fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether the table has no file.
    pub(crate) fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Total bytes of the files, precompressed variants included.
    pub(crate) fn bytes(&self) -> u64 {
        self.total_bytes
    }
}

/// The table that answers a request of `path` with `query`, among the still-loaded versions'
/// `tables`, **the active version's first** (then the others, in any order): the active table
/// when it has the path, unless the query's `v=<hash>` names a hash the active file does not
/// have and another table's file at that path does — then that table, so that a page rendered
/// by an older version during a swap gets its own files. `None` when no table should answer
/// (the request goes to the app).
pub(crate) fn find_version<'a>(
    mut tables: impl Iterator<Item = &'a AssetTable>,
    path: &str,
    query: Option<&str>,
) -> Option<&'a AssetTable> {
    let key = path::key(path)?;
    let active = tables.next()?;
    let in_active = active.files.get(key.as_ref());
    if let Some(wanted) = version_param(query) {
        let has = |asset: &Asset| asset.hash.eq_ignore_ascii_case(&wanted);
        if !in_active.is_some_and(has)
            && let Some(older) = tables.find(|t| t.files.get(key.as_ref()).is_some_and(has))
        {
            return Some(older);
        }
    }
    in_active.map(|_| active)
}

#[cfg(test)]
mod tests;
