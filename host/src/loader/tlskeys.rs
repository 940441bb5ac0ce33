//! The pthread keys modules leave behind, counted and reclaimed.
//!
//! A module carries its own copy of std, and that copy creates a pthread key (its thread-exit
//! guard) the first time module code calls `std::thread::current()` — directly, or through
//! `thread::park`, channels, `thread::spawn`... It never deletes it, so without help every such
//! load takes one of glibc's 1,024 keys for good, and once they are gone std aborts the process.
//!
//! The loader reclaims them: just before a library is closed it notes the keys whose destructor
//! lies inside that library, and once the library is unmapped it deletes them. Only the closed
//! library's code could use such a key, and its destructor could never run again anyway.
//! A key a module creates without a destructor cannot be attributed and stays taken; the count
//! of keys in use lets the loader refuse new modules before the last ones are gone.
//!
//! Reading which destructor a key has needs glibc's key table (`__pthread_keys`, a
//! `GLIBC_PRIVATE` symbol whose layout — sequence number, destructor — is unchanged since NPTL).
//! It is checked once against a key created for the purpose; if the check fails, or on another
//! C library, keys are neither counted nor reclaimed.

use std::ffi::c_void;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// glibc's `PTHREAD_KEYS_MAX`.
pub const PTHREAD_KEYS_MAX: usize = 1024;

/// Keys that must stay free for a new module to be loaded: a module takes one or two, the rest
/// is headroom for the host's own libraries.
pub(super) const KEYS_RESERVE: usize = 64;

static RECLAIMED: AtomicU64 = AtomicU64::new(0);

/// One entry of glibc's `struct pthread_key_struct __pthread_keys[PTHREAD_KEYS_MAX]`: the
/// sequence number (odd while the key is in use) and the destructor. Read through atomics
/// because glibc updates the entries while we look.
#[repr(C)]
struct KeySlot {
    seq: AtomicUsize,
    destructor: AtomicUsize,
}

type Table = [KeySlot; PTHREAD_KEYS_MAX];

unsafe extern "C" fn probe_destructor(_: *mut c_void) {}

/// glibc's key table, if present and laid out as expected.
fn table() -> Option<&'static Table> {
    static TABLE: OnceLock<Option<usize>> = OnceLock::new();
    let address = (*TABLE.get_or_init(|| {
        // SAFETY: dlsym with a NUL-terminated name only looks the symbol up.
        let symbol = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__pthread_keys".as_ptr()) };
        if symbol.is_null() {
            return None;
        }
        // SAFETY: glibc's `__pthread_keys` is an array of `PTHREAD_KEYS_MAX` entries of two
        // machine words; it is static, so the reference lives as long as the process.
        let table: &Table = unsafe { &*symbol.cast::<Table>() };
        layout_checks_out(table).then_some(symbol as usize)
    }))?;
    // SAFETY: as above; the address came from the same symbol.
    Some(unsafe { &*(address as *const Table) })
}

/// Creates a key with a known destructor and looks for it in `table`, then deletes it.
fn layout_checks_out(table: &Table) -> bool {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is writable; the destructor is a valid `extern "C"` function of the host.
    if unsafe { libc::pthread_key_create(&mut key, Some(probe_destructor)) } != 0 {
        return false;
    }
    let Some(slot) = table.get(key as usize) else {
        // SAFETY: the key was created above.
        unsafe { libc::pthread_key_delete(key) };
        return false;
    };
    let created = slot.seq.load(Ordering::Acquire);
    let found = created % 2 == 1
        && slot.destructor.load(Ordering::Acquire) == probe_destructor as *const () as usize;
    // SAFETY: the key was created above and is used by nothing.
    unsafe { libc::pthread_key_delete(key) };
    found && slot.seq.load(Ordering::Acquire) != created
}

/// pthread keys in use in this process, if the key table can be read.
pub fn pthread_keys_in_use() -> Option<usize> {
    let table = table()?;
    Some(
        table
            .iter()
            .filter(|slot| slot.seq.load(Ordering::Relaxed) % 2 == 1)
            .count(),
    )
}

/// Whether new modules are refused because too few pthread keys are left (only a restart of
/// the host frees keys that could not be reclaimed).
pub fn loads_refused() -> bool {
    pthread_keys_in_use().is_some_and(|in_use| in_use + KEYS_RESERVE > PTHREAD_KEYS_MAX)
}

/// Keys the loader has deleted after the modules that created them were unloaded.
pub fn pthread_keys_reclaimed() -> u64 {
    RECLAIMED.load(Ordering::Relaxed)
}

/// A key a library owns, as found before it was closed.
#[derive(Debug, Clone, Copy)]
pub(super) struct OwnedKey {
    key: usize,
    seq: usize,
}

/// The keys whose destructor lies in one of `ranges` (the library's mappings). Call while the
/// library is still mapped, so no other library can occupy those addresses.
pub(super) fn owned_by(ranges: &[(usize, usize)]) -> Vec<OwnedKey> {
    let Some(table) = table() else {
        return Vec::new();
    };
    table
        .iter()
        .enumerate()
        .filter_map(|(key, slot)| {
            let seq = slot.seq.load(Ordering::Acquire);
            let destructor = slot.destructor.load(Ordering::Acquire);
            (seq % 2 == 1
                && ranges
                    .iter()
                    .any(|&(lo, hi)| (lo..hi).contains(&destructor)))
            .then_some(OwnedKey { key, seq })
        })
        .collect()
}

/// Deletes `keys`, found by [`owned_by`] before their library was closed. Call only once the
/// library is unmapped. Returns how many were deleted.
pub(super) fn reclaim(keys: &[OwnedKey]) -> usize {
    let Some(table) = table() else { return 0 };
    let mut deleted = 0;
    for owned in keys {
        // A changed sequence number means the key was deleted (and maybe reused) meanwhile.
        if table[owned.key].seq.load(Ordering::Acquire) != owned.seq {
            continue;
        }
        let key = owned.key as libc::pthread_key_t;
        // SAFETY: the key's destructor lay in a library that is now unmapped, and every thread
        // that ran its code has exited: nothing can use the key any more.
        if unsafe { libc::pthread_key_delete(key) } == 0 {
            deleted += 1;
        }
    }
    RECLAIMED.fetch_add(deleted as u64, Ordering::Relaxed);
    deleted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_key_table_and_reclaims_a_key_by_its_destructor() {
        assert!(pthread_keys_in_use().expect("glibc key table") > 0);
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: test key with a host destructor.
        assert_eq!(
            unsafe { libc::pthread_key_create(&mut key, Some(probe_destructor)) },
            0
        );
        let at = probe_destructor as *const () as usize;
        let owned = owned_by(&[(at, at + 1)]);
        assert!(owned.iter().any(|o| o.key == key as usize), "{owned:?}");
        assert_eq!(reclaim(&owned), owned.len());
        assert!(owned_by(&[(at, at + 1)]).is_empty());
    }
}
