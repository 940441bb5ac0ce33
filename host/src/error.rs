//! The host's error type.

use std::path::PathBuf;

/// `Result` with the host's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the host, with the context an operator needs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A module file could not be loaded or was refused.
    #[error("module {}: {reason}", path.display())]
    Load {
        /// The module file as the operator named it.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// A module file failed the intake checks, before anything of it was mapped.
    #[error("module {}: {source}", path.display())]
    Intake {
        /// The module file as the operator named it.
        path: PathBuf,
        /// What is wrong with it.
        source: crate::loader::ElfError,
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
        matches!(self, Error::Load { .. } | Error::Intake { .. })
    }

    /// Whether the failure may go away by itself (file descriptors or disk space ran out), so
    /// the same deploy is worth trying again.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Io { source, .. } => source
                .raw_os_error()
                .is_some_and(|code| TRANSIENT.contains(&code)),
            // The loader reports the OS error as text (dlopen's own message, or the store's).
            Error::Load { reason, .. } => TRANSIENT
                .iter()
                .any(|&code| reason.contains(&os_message(code))),
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
        let load = |reason: &str| Error::Load {
            path: PathBuf::from("m/libhello.so"),
            reason: reason.to_owned(),
        };
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        assert!(load(&format!("cannot read: {emfile}")).is_transient());
        assert!(
            load("libhello.so: cannot open shared object file: Too many open files").is_transient()
        );
        let enospc = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(Error::io("cannot copy", enospc).is_transient());
        let enfile = std::io::Error::from_raw_os_error(libc::ENFILE);
        assert!(Error::io("cannot copy", enfile).is_transient());
        assert!(!load("not a loadable shared library: invalid ELF header").is_transient());
        let enoent = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert!(!Error::io("cannot read", enoent).is_transient());
    }
}
