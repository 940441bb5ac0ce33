//! The module's side of embedded assets: the list the host copies once per loaded version, and
//! the content hash both sides use in ETags and versioned URLs.

use super::{AssetVisitor, RawAsset, RawStr};

/// One embedded file as the module lists it.
#[derive(Debug, Clone)]
pub(crate) struct ListedAsset {
    /// Path relative to the app's mount, starting with `/`.
    pub(crate) path: String,
    pub(crate) bytes: &'static [u8],
    pub(crate) hash: String,
    pub(crate) modified_unix_secs: u64,
}

/// The files an app embeds, in the form the boundary lists them.
#[derive(Debug, Clone, Default)]
pub(crate) struct AssetList {
    pub(crate) files: Vec<ListedAsset>,
}

impl AssetList {
    /// Hands every file to the host's visitor.
    ///
    /// # Safety
    /// `visitor` must be the host's live visitor for the current call.
    pub(crate) unsafe fn visit(&self, visitor: &AssetVisitor) {
        for file in &self.files {
            let raw = RawAsset {
                path: RawStr::from_str(&file.path),
                bytes: RawStr::new(file.bytes),
                hash: RawStr::from_str(&file.hash),
                modified_unix_secs: file.modified_unix_secs,
            };
            // SAFETY: the caller guarantees the visitor is live; `raw` borrows data that
            // outlives the call.
            unsafe { (visitor.visit)(visitor.ctx, &raw) };
        }
    }
}

/// The content hash of an asset: 64-bit FNV-1a of its bytes as 16 hex digits. The host uses the
/// module's hash as the asset's ETag and to match versioned URLs (`?v=HASH`).
///
/// ```
/// assert_eq!(baton_sdk::abi::asset_hash(b""), "cbf29ce484222325");
/// assert_ne!(baton_sdk::abi::asset_hash(b"a"), baton_sdk::abi::asset_hash(b"b"));
/// ```
pub fn asset_hash(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}
