//! Why a module file was not loaded (or not unloaded): one error family for every step, from
//! the copy into the private store through the ELF intake checks and `dlopen` to the descriptor.
//!
//! Each variant keeps its cause as [`source`](std::error::Error::source) where there is one, and
//! the `is_*` queries group the variants callers act on, so nobody has to read the message. The
//! messages are what operators see under `rejected` and in the log.

use std::io;

use baton_sdk::abi::{self, ENTRY_SYMBOL};

/// Why a module file was refused, or could not be unloaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The operator's file could not be read while it was copied into the private store.
    #[error("cannot read: {source}")]
    Source {
        /// The cause.
        source: io::Error,
    },
    /// The private copy could not be written.
    #[error("cannot copy into the private store: {source}")]
    Store {
        /// The cause.
        source: io::Error,
    },
    /// The private copy could not be read for the intake checks.
    #[error("cannot read it: {source}")]
    Read {
        /// The cause.
        source: io::Error,
    },
    /// No ELF header: not a shared library at all (or a prefix too short to hold one).
    #[error("not a loadable shared library: not an ELF file ({len} bytes, no complete ELF header)")]
    NotElf {
        /// The file's length.
        len: u64,
    },
    /// Built for another word size.
    #[error(
        "not a loadable shared library: ELF class {found} (1 = 32-bit, 2 = 64-bit), but this host is {expected}"
    )]
    Class {
        /// `EI_CLASS` of the file.
        found: u8,
        /// The host's `EI_CLASS`.
        expected: u8,
    },
    /// Built for another byte order.
    #[error(
        "not a loadable shared library: ELF data encoding {found} (1 = little-endian, 2 = big-endian), but this host is {expected}"
    )]
    Encoding {
        /// `EI_DATA` of the file.
        found: u8,
        /// The host's `EI_DATA`.
        expected: u8,
    },
    /// Built for another processor.
    #[error(
        "not a loadable shared library: built for ELF machine {found}, but this host is {arch} (machine {expected})"
    )]
    Machine {
        /// `e_machine` of the file.
        found: u16,
        /// The host's `e_machine`.
        expected: u16,
        /// The host's architecture name.
        arch: &'static str,
    },
    /// An executable, object file or core dump rather than a shared library.
    #[error(
        "not a loadable shared library: ELF type {found} is not a shared object (ET_DYN = 3); build the app with crate-type = [\"cdylib\"]"
    )]
    NotShared {
        /// `e_type` of the file.
        found: u16,
    },
    /// A part the loader would read or map lies past the end of the file.
    #[error("truncated: {part} ends at {} but the file has {} bytes", grouped(*end), grouped(*len))]
    Truncated {
        /// What ends past the file, e.g. "segment 2" or "the section header table".
        part: String,
        /// Where it ends.
        end: u64,
        /// The file's length.
        len: u64,
    },
    /// A header field makes no sense (a table of the wrong entry size, an index out of range).
    #[error("malformed ELF file: {what}: {source}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// The parser's complaint.
        source: object::read::Error,
    },
    /// An offset plus a size overflows.
    #[error("malformed ELF file: {part} has offset {offset:#x} and size {size:#x}, which overflow")]
    Overflow {
        /// Which part.
        part: String,
        /// Its offset.
        offset: u64,
        /// Its size.
        size: u64,
    },
    /// Nothing to map.
    #[error("not a loadable shared library: no loadable segment")]
    NoLoadSegment,
    /// No dynamic symbol table, so no entry symbol.
    #[error(
        "no dynamic symbol table, so no `{ENTRY_SYMBOL}` symbol: not a Baton module (build it with baton_sdk::export!)"
    )]
    NoDynamicSymbols,
    /// The entry symbol is not defined.
    #[error("no `{ENTRY_SYMBOL}` symbol: not a Baton module (build it with baton_sdk::export!)")]
    NoEntry,
    /// Too few pthread keys are left for another module: std would abort the whole process
    /// when none is left (see `tlskeys`).
    #[error(
        "not loaded: {in_use} of {max} pthread keys are in use, mostly by modules loaded earlier \
         that could not give theirs back; restart the host to deploy more versions"
    )]
    KeysExhausted {
        /// Keys in use in the process.
        in_use: usize,
        /// glibc's limit.
        max: usize,
    },
    /// The library is linked with `DF_1_NODELETE` and the flag could not be cleared.
    #[error(
        "linked with DF_1_NODELETE (it could never be unloaded), and the flag could not be \
         cleared in the private copy: {source}"
    )]
    NoDelete {
        /// The cause.
        source: io::Error,
    },
    /// `dlopen` refused the file.
    #[error("not a loadable shared library: {source}")]
    Dlopen {
        /// `dlopen`'s report.
        source: libloading::Error,
    },
    /// The entry symbol returned a null pointer.
    #[error("entry symbol returned no descriptor")]
    NoDescriptor,
    /// The descriptor does not start with Baton's magic number.
    #[error("bad descriptor magic {magic:#018x}: not a Baton module")]
    BadMagic {
        /// The number found.
        magic: u64,
    },
    /// The module speaks another ABI major than the host.
    #[error(
        "module built with baton-sdk {module_sdk} for ABI {}.{}, but {}; rebuild it against \
         baton-sdk {}.x",
        module.0, module.1, HostAbi(*host), host_sdk_major()
    )]
    AbiMajor {
        /// The sdk version the module was built with (`unknown` if unreadable).
        module_sdk: String,
        /// The module's ABI (major, minor).
        module: (u32, u32),
        /// The host's ABI (major, minor).
        host: (u32, u32),
    },
    /// The descriptor is shorter than this ABI's.
    #[error(
        "descriptor of ABI {}.{} is {size} bytes, shorter than the {expected} bytes of ABI {}.{}; {}",
        module.0, module.1, host.0, host.1, HostAbi(*host)
    )]
    ShortDescriptor {
        /// The module's ABI (major, minor).
        module: (u32, u32),
        /// The host's ABI (major, minor).
        host: (u32, u32),
        /// The descriptor's size as the module compiled it.
        size: usize,
        /// The size this host's ABI needs.
        expected: usize,
    },
    /// A descriptor string is too long or a null pointer.
    #[error("descriptor field {field} is malformed")]
    MalformedField {
        /// The field.
        field: &'static str,
    },
    /// A descriptor string is not UTF-8.
    #[error("descriptor field {field} is not UTF-8")]
    NotUtf8 {
        /// The field.
        field: &'static str,
        /// The cause.
        source: std::string::FromUtf8Error,
    },
    /// The app name is empty, too long or has characters outside `[A-Za-z0-9._-]`.
    #[error("app name {name:?} is not 1-64 characters of [A-Za-z0-9._-]")]
    AppName {
        /// The name.
        name: String,
    },
    /// The app version is empty or too long.
    #[error("app version {version:?} is empty or too long")]
    AppVersion {
        /// The version.
        version: String,
    },
    /// The blocking task that opened the module panicked or was cancelled.
    #[error("loader task failed: {source}")]
    Task {
        /// The cause.
        source: tokio::task::JoinError,
    },
    /// `dlclose` failed.
    #[error("{source}")]
    Close {
        /// `dlclose`'s report.
        source: libloading::Error,
    },
}

/// "this host speaks ABI 1.0 (baton-sdk 0.5.0)".
struct HostAbi((u32, u32));

impl std::fmt::Display for HostAbi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (major, minor) = self.0;
        write!(
            f,
            "this host speaks ABI {major}.{minor} (baton-sdk {})",
            abi::SDK_VERSION
        )
    }
}

fn host_sdk_major() -> &'static str {
    abi::SDK_VERSION.split('.').next().unwrap_or("0")
}

/// `n` with thousands separators: `6,118,400`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl LoadError {
    /// Whether the file ends before a part it describes: an interrupted copy, a full disk, a
    /// file rewritten in place.
    pub fn is_truncated(&self) -> bool {
        matches!(self, LoadError::Truncated { .. })
    }

    /// Whether the module was built against another ABI than the host's.
    pub fn is_abi_mismatch(&self) -> bool {
        matches!(
            self,
            LoadError::AbiMajor { .. } | LoadError::ShortDescriptor { .. }
        )
    }

    /// Whether the file is a shared library for this host but not a Baton module (no entry
    /// symbol, or no Baton descriptor behind it).
    pub fn is_not_a_module(&self) -> bool {
        matches!(
            self,
            LoadError::NoDynamicSymbols
                | LoadError::NoEntry
                | LoadError::NoDescriptor
                | LoadError::BadMagic { .. }
        )
    }

    /// Whether the host ran out of pthread keys for new modules (only a restart helps).
    pub fn is_keys_exhausted(&self) -> bool {
        matches!(self, LoadError::KeysExhausted { .. })
    }

    /// Whether the failure may go away by itself: file descriptors or disk space ran out.
    pub fn is_transient(&self) -> bool {
        match self {
            LoadError::Source { source }
            | LoadError::Store { source }
            | LoadError::Read { source }
            | LoadError::NoDelete { source } => crate::error::is_transient_io(source),
            // dlopen reports its failure as text only (`dlerror`), so its message is all there is
            // to look at.
            LoadError::Dlopen { source } => crate::error::mentions_transient(&source.to_string()),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(30_681), "30,681");
        assert_eq!(grouped(6_118_400), "6,118,400");
    }

    #[test]
    fn a_truncated_file_says_where_it_ends() {
        let e = LoadError::Truncated {
            part: "segment 1".into(),
            end: 293_564,
            len: 30_681,
        };
        assert!(e.is_truncated() && !e.is_transient());
        assert_eq!(
            e.to_string(),
            "truncated: segment 1 ends at 293,564 but the file has 30,681 bytes"
        );
    }

    #[test]
    fn an_abi_mismatch_names_both_sides() {
        let e = LoadError::AbiMajor {
            module_sdk: "2.0.1".into(),
            module: (2, 0),
            host: (abi::ABI_MAJOR, abi::ABI_MINOR),
        };
        assert!(e.is_abi_mismatch() && !e.is_truncated());
        let text = e.to_string();
        assert!(
            text.starts_with(
                "module built with baton-sdk 2.0.1 for ABI 2.0, but this host speaks ABI "
            ),
            "{text}"
        );
        assert!(
            text.ends_with(&format!(
                "; rebuild it against baton-sdk {}.x",
                host_sdk_major()
            )),
            "{text}"
        );
    }

    #[test]
    fn io_causes_are_kept_and_decide_transience() {
        use std::error::Error as _;
        let store = |code| LoadError::Store {
            source: io::Error::from_raw_os_error(code),
        };
        assert!(store(libc::ENOSPC).is_transient());
        assert!(!store(libc::EACCES).is_transient());
        let e = store(libc::EMFILE);
        let cause = e.source().and_then(|s| s.downcast_ref::<io::Error>());
        assert_eq!(cause.and_then(io::Error::raw_os_error), Some(libc::EMFILE));
        assert!(!LoadError::NoEntry.is_transient());
    }
}
