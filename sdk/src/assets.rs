//! Static assets embedded in the module at build time and served by the host.
//!
//! An app lists its files with [`App::assets`](crate::App::assets); the host copies them once
//! per loaded version and answers requests for them itself (content type, `ETag` and
//! `If-None-Match`, `Last-Modified`, ranges, precompressed `.br`/`.gz` variants, compression,
//! `Cache-Control`), without calling the module. Each version serves its own files, so during a
//! swap a page rendered by the old version that links its assets with [`Request::asset_url`]
//! (`/static/app.css?v=HASH`) still gets the old version's stylesheet.
//!
//! [`Request::asset_url`]: crate::Request::asset_url

use std::time::UNIX_EPOCH;

use crate::abi::{AssetList, asset_hash};

/// Embeds a directory in the module at build time, for [`Assets::dir`]. The path is a string
/// literal in which `$CARGO_MANIFEST_DIR` (and other `$VAR`s of the build's environment) are
/// expanded: `"$CARGO_MANIFEST_DIR/static"` is the crate's `static` folder. Every file below it
/// is included with its modification time.
///
/// Cargo rebuilds the module when an embedded file changes; to notice *new* files too, add a
/// `build.rs` with `println!("cargo:rerun-if-changed=static");`.
///
/// ```
/// let dir = baton_sdk::embed_dir!("$CARGO_MANIFEST_DIR/src");
/// assert!(dir.get_file("lib.rs").is_some());
/// ```
#[macro_export]
macro_rules! embed_dir {
    ($path:tt) => {{
        use $crate::__private::include_dir;
        static DIR: include_dir::Dir<'static> = include_dir::include_dir!($path);
        &DIR
    }};
}

/// An embedded directory, as [`embed_dir!`](crate::embed_dir) makes it.
pub type EmbeddedDir = include_dir::Dir<'static>;

/// The static files an app serves, each at a path under its mount.
///
/// ```
/// use baton_sdk::Assets;
///
/// let assets = Assets::new()
///     .file("/robots.txt", b"User-agent: *\n")
///     .dir("/static", baton_sdk::embed_dir!("$CARGO_MANIFEST_DIR/src"));
/// assert!(assets.contains("/robots.txt"));
/// assert!(assets.contains("/static/lib.rs"));
/// assert_eq!(assets.url("/robots.txt").unwrap(), format!("/robots.txt?v={}", assets.hash("/robots.txt").unwrap()));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Assets {
    list: AssetList,
}

impl Assets {
    /// No files.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one file at `path` (relative to the app's mount; a leading `/` is added if missing).
    pub fn file(self, path: &str, bytes: &'static [u8]) -> Self {
        self.add(path, bytes, 0)
    }

    /// Adds every file of an embedded directory under `prefix` (e.g. `/static`): `css/app.css`
    /// in the directory is served at `/static/css/app.css`.
    pub fn dir(mut self, prefix: &str, dir: &'static EmbeddedDir) -> Self {
        let prefix = prefix.trim_end_matches('/');
        let mut stack = vec![dir];
        while let Some(dir) = stack.pop() {
            for entry in dir.entries() {
                match entry {
                    include_dir::DirEntry::Dir(sub) => stack.push(sub),
                    include_dir::DirEntry::File(file) => {
                        let modified = file
                            .metadata()
                            .and_then(|m| m.modified().duration_since(UNIX_EPOCH).ok())
                            .map_or(0, |d| d.as_secs());
                        let rel = file.path().to_string_lossy().replace('\\', "/");
                        self = self.add(&format!("{prefix}/{rel}"), file.contents(), modified);
                    }
                }
            }
        }
        self
    }

    fn add(mut self, path: &str, bytes: &'static [u8], modified_unix_secs: u64) -> Self {
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        self.list.files.retain(|f| f.path != path);
        self.list.files.push(crate::abi::assets::ListedAsset {
            path,
            bytes,
            hash: asset_hash(bytes),
            modified_unix_secs,
        });
        self
    }

    /// Whether a file is served at `path`.
    pub fn contains(&self, path: &str) -> bool {
        self.find(path).is_some()
    }

    /// The content hash of the file at `path` (its ETag).
    pub fn hash(&self, path: &str) -> Option<&str> {
        self.find(path).map(|f| f.hash.as_str())
    }

    /// The versioned URL of the file at `path`, relative to the mount: `path?v=HASH`. The host
    /// serves it from the version whose file has that hash (while that version is loaded) and
    /// lets browsers cache it for a year.
    pub fn url(&self, path: &str) -> Option<String> {
        self.find(path).map(|f| format!("{}?v={}", f.path, f.hash))
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.list.files.len()
    }

    /// Whether there are no files.
    pub fn is_empty(&self) -> bool {
        self.list.files.is_empty()
    }

    fn find(&self, path: &str) -> Option<&crate::abi::assets::ListedAsset> {
        let path = path.strip_prefix('/').unwrap_or(path);
        self.list
            .files
            .iter()
            .find(|f| f.path.strip_prefix('/') == Some(path))
    }

    pub(crate) fn list(&self) -> &AssetList {
        &self.list
    }
}
