//! The host's error type.

use std::path::PathBuf;

use crate::loader::LoadError;

/// `Result` with the host's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the host, with the context an operator needs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A module file could not be copied or loaded, or was refused.
    #[error("module {}: {source}", path.display())]
    Load {
        /// The module file as the operator named it.
        path: PathBuf,
        /// Why it was refused.
        source: LoadError,
    },
    /// A module file changed while it was copied into the store: its writer is not done. The
    /// copy was discarded; the file is deployed once it settles.
    #[error("module {}: changed while it was copied ({change}); waiting for it to settle", path.display())]
    Unsettled {
        /// The module file.
        path: PathBuf,
        /// What changed, e.g. "size 1,024 → 30,681".
        change: String,
    },
    /// An app's `init` or `warmup` failed or panicked.
    #[error("{app}@{version}: {stage} failed: {reason}")]
    Start {
        /// App name.
        app: String,
        /// Version.
        version: String,
        /// The step that failed.
        stage: StartStage,
        /// The app's message.
        reason: String,
    },
    /// The module's bytes are quarantined: a version with them crashed the serving process
    /// too often. An operator clears it with `baton quarantine clear APP VERSION`.
    #[error("module {}: {app}@{version} is quarantined (it crashed the serving process {crashes} times); clear it with `baton quarantine clear {app} {version}` to deploy it again", path.display())]
    Quarantined {
        /// The module file.
        path: PathBuf,
        /// App name.
        app: String,
        /// Version.
        version: String,
        /// The crashes it was blamed for.
        crashes: u32,
    },
    /// An operator cleared a quarantine that is not there.
    #[error("{app}@{version} is not quarantined")]
    NotQuarantined {
        /// App name.
        app: String,
        /// Version.
        version: String,
    },
    /// A state file of the host (`state_dir/*.json`) cannot be read or written as JSON.
    #[error("state file {}: {source}", path.display())]
    StateFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// No app of that name is deployed.
    #[error("no app named {0}")]
    UnknownApp(String),
    /// The app has no such version loaded or kept.
    #[error("{app} has no version {version} loaded or kept in the store")]
    UnknownVersion {
        /// App name.
        app: String,
        /// The version asked for.
        version: String,
    },
    /// A file of an app undeployed through the admin API, found at start: left alone.
    #[error(
        "{app} was undeployed through the admin API; {} is ignored at start (touch it or \
         deploy it to bring {app} back)",
        file.display()
    )]
    Undeployed {
        /// App name.
        app: String,
        /// The module file.
        file: PathBuf,
    },
    /// An operator's request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// An operator's request does not fit the app's current state.
    #[error("{0}")]
    Conflict(String),
    /// A call to the admin API failed (the command-line client's errors).
    #[error("{0}")]
    Admin(String),
    /// The HTTPS listener's certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The modules directory cannot be watched for changes.
    #[error("cannot watch {}: {source}", dir.display())]
    Watch {
        /// The directory.
        dir: PathBuf,
        /// The watcher's error.
        source: notify_debouncer_full::notify::Error,
    },
    /// A blocking task the host waited for panicked or was cancelled.
    #[error("{what}: {source}")]
    Join {
        /// What the task was doing.
        what: &'static str,
        /// The cause.
        source: tokio::task::JoinError,
    },
    /// An I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// The step of an app's start-up that failed, shown as `load`, `init` or `warmup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartStage {
    /// Starting the version's worker threads.
    Load,
    /// The app's `init`: building its instance.
    Init,
    /// The app's warm-up hook or one of the configured warm-up requests.
    Warmup,
}

impl std::fmt::Display for StartStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StartStage::Load => "load",
            StartStage::Init => "init",
            StartStage::Warmup => "warmup",
        })
    }
}

/// OS errors that go away by themselves: out of file descriptors (per process, system-wide)
/// or of disk space.
const TRANSIENT: [i32; 3] = [libc::EMFILE, libc::ENFILE, libc::ENOSPC];

/// Whether `e` is an OS error that goes away by itself.
pub(crate) fn is_transient_io(e: &std::io::Error) -> bool {
    e.raw_os_error()
        .is_some_and(|code| TRANSIENT.contains(&code))
}

/// Whether `text` (a report that only exists as text, like `dlerror`'s) names an OS error that
/// goes away by itself.
pub(crate) fn mentions_transient(text: &str) -> bool {
    TRANSIENT
        .iter()
        .any(|&code| text.contains(&os_message(code)))
}

/// The OS's text for `code`, without Rust's " (os error N)".
fn os_message(code: i32) -> String {
    let text = std::io::Error::from_raw_os_error(code).to_string();
    match text.find(" (os error") {
        Some(end) => text[..end].to_owned(),
        None => text,
    }
}

impl Error {
    /// Whether this error refuses a module file (shown under `rejected`, counted in
    /// `module_rejections_total`, retried when the file changes).
    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::Load { .. })
    }

    /// Whether the failure may go away by itself (file descriptors or disk space ran out), so
    /// the same deploy is worth trying again.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Io { source, .. } => is_transient_io(source),
            Error::Load { source, .. } => source.is_transient(),
            _ => false,
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_files_or_disk_space_is_transient() {
        let load = |source| Error::Load {
            path: PathBuf::from("m/libhello.so"),
            source,
        };
        let os = std::io::Error::from_raw_os_error;
        assert!(
            load(LoadError::Source {
                source: os(libc::EMFILE)
            })
            .is_transient()
        );
        assert!(
            load(LoadError::Store {
                source: os(libc::ENOSPC)
            })
            .is_transient()
        );
        assert!(
            !load(LoadError::Source {
                source: os(libc::ENOENT)
            })
            .is_transient()
        );
        let dlopen = |text: &'static std::ffi::CStr| {
            load(LoadError::Dlopen {
                source: libloading::Error::DlOpen { desc: text.into() },
            })
        };
        assert!(
            dlopen(c"libhello.so: cannot open shared object file: Too many open files")
                .is_transient()
        );
        assert!(!dlopen(c"libhello.so: invalid ELF header").is_transient());
        assert!(!load(LoadError::NoEntry).is_transient());
        assert!(Error::io("cannot copy", os(libc::ENOSPC)).is_transient());
        assert!(Error::io("cannot copy", os(libc::ENFILE)).is_transient());
        assert!(!Error::io("cannot read", os(libc::ENOENT)).is_transient());
    }

    #[test]
    fn a_refusal_keeps_its_cause_down_the_source_chain() {
        use std::error::Error as _;
        let e = Error::Load {
            path: PathBuf::from("m/libhello.so"),
            source: LoadError::Store {
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            },
        };
        assert!(e.is_refusal() && e.is_transient());
        let load = e.source().and_then(|s| s.downcast_ref::<LoadError>());
        assert!(matches!(load, Some(LoadError::Store { .. })), "{load:?}");
        let io = load
            .and_then(|l| l.source())
            .and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            io.and_then(std::io::Error::raw_os_error),
            Some(libc::ENOSPC)
        );
    }
}
