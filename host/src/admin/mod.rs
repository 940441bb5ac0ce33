//! The admin listener: operational endpoints on a separate, loopback-by-default address.
//!
//! - `api`: the JSON API (status, deploy by upload, rollback, undeploy, canary split, metrics,
//!   health), behind a bearer token when one is configured.
//!   Without a token it answers only the local operator: a request from another site's page
//!   (`Origin`) or for a name that is not loopback (`Host`) is refused.
//! - `upload`: module uploads stream into `state_dir/uploads/`, bounded in size and number.
//! - `sessions`: the API's session endpoints (list, count, describe, invalidate).
//! - [`quarantine`]: the versions that crashed the serving process, and clearing them (API and
//!   command line).
//! - the dashboard (`GET /`): one page that polls `/status` and shows apps, versions, states,
//!   the traffic split and request rates.
//! - `client`: the other side, used by the `baton` command line (`baton status`, `baton deploy`…).
//!
//! `GET /status` reports every app, its versions and their states, counters, the timeline of
//! the last swap and the last error, plus module files that were refused.

mod api;
pub mod client;
pub mod quarantine;
mod sessions;
pub(crate) mod upload;

use serde::Serialize;

use crate::deploy::{CanaryStatus, Registry, Rejection, Running, State, SwapTimings};
use crate::loader;

pub(crate) use api::handle;

/// The dashboard page: plain HTML and JavaScript polling `/status`.
const DASHBOARD: &str = include_str!("dashboard.html");
pub use api::{Admin, CanaryRequest, DeployOutcome};

/// The status document.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Every app.
    pub apps: Vec<AppStatus>,
    /// Refused module files whose app could not be identified.
    pub rejected: Vec<Rejection>,
    /// Process-wide resources that bound how many versions can still be deployed.
    pub host: HostStatus,
    /// Versions that crashed the serving process too often: not loaded until cleared.
    pub quarantine: Vec<crate::crash::Quarantined>,
}

/// Process-wide resources in the status document.
#[derive(Debug, Serialize)]
pub struct HostStatus {
    /// The serving process's pid (it changes with a restart or an upgrade).
    pub pid: u32,
    /// The version of the `baton` binary serving (see `baton --version`).
    pub version: &'static str,
    /// Whether a supervisor restarts this process and can upgrade it.
    pub supervised: bool,
    /// pthread keys in use (modules' copies of std take them); `None` if they cannot be counted.
    pub pthread_keys_in_use: Option<usize>,
    /// The C library's limit on pthread keys.
    pub pthread_keys_max: usize,
    /// Keys deleted after the modules that created them were unloaded.
    pub pthread_keys_reclaimed: u64,
    /// New modules are refused until the host is restarted (too few pthread keys left).
    pub restart_required: bool,
}

/// One app in the status document.
#[derive(Debug, Serialize)]
pub struct AppStatus {
    /// App name.
    pub name: String,
    /// Mount path.
    pub mount: String,
    /// The active version, if any.
    pub active: Option<String>,
    /// The canary split, if one is set.
    pub canary: Option<CanaryStatus>,
    /// Versions, oldest first.
    pub versions: Vec<VersionStatus>,
    /// Timeline of the last swap.
    pub last_swap: Option<SwapTimings>,
    /// Last deploy error.
    pub last_error: Option<String>,
}

/// One version in the status document.
#[derive(Debug, Serialize)]
pub struct VersionStatus {
    /// Deployment id.
    pub id: u64,
    /// Version.
    pub version: String,
    /// State.
    pub state: State,
    /// Share of the app's new requests it takes, in percent.
    pub weight: u8,
    /// Requests running now.
    pub in_flight: usize,
    /// Requests finished.
    pub served: u64,
    /// Module file deployed.
    pub source: String,
    /// The private copy the library is mapped from.
    pub copy: String,
    /// When it was loaded (Unix milliseconds).
    pub loaded_unix_ms: u64,
    /// Version of `baton-sdk` it was built with.
    pub sdk_version: String,
    /// Compiler that built it.
    pub rustc_version: String,
    /// Its private copy is kept for rollback.
    pub stored: bool,
    /// Requests running on it now, longest first.
    pub running: Vec<Running>,
    /// Handlers running past the request timeout now.
    pub stuck: usize,
    /// More handlers are stuck than `max_stuck_threads`: it answers 503 until some return.
    pub unhealthy: bool,
    /// Worker threads alive (replacements for stuck handlers included).
    pub worker_threads: usize,
    /// Its last error.
    pub error: Option<String>,
}

/// The status of every app.
pub fn status(registry: &Registry) -> Status {
    let apps = registry
        .apps()
        .iter()
        .map(|slot| app_status(slot))
        .collect();
    Status {
        apps,
        rejected: registry.rejected(),
        host: HostStatus {
            pid: std::process::id(),
            version: crate::VERSION,
            supervised: std::env::var_os(crate::supervisor::SUPERVISOR_PID_ENV).is_some(),
            pthread_keys_in_use: loader::pthread_keys_in_use(),
            pthread_keys_max: loader::PTHREAD_KEYS_MAX,
            pthread_keys_reclaimed: loader::pthread_keys_reclaimed(),
            restart_required: loader::loads_refused(),
        },
        quarantine: registry.quarantine(),
    }
}

/// The status of one app.
pub fn app_status(slot: &crate::deploy::AppSlot) -> AppStatus {
    AppStatus {
        name: slot.name().to_owned(),
        mount: slot.mount().to_owned(),
        active: slot.active().map(|v| v.info().version.clone()),
        canary: slot.canary().as_ref().map(CanaryStatus::from),
        versions: slot
            .versions()
            .iter()
            .map(|v| VersionStatus {
                id: v.id(),
                version: v.info().version.clone(),
                state: v.state(),
                weight: slot.weight(v),
                in_flight: v.in_flight(),
                served: v.served(),
                source: v.source().display().to_string(),
                copy: v.copy_path().display().to_string(),
                loaded_unix_ms: crate::clock::unix_ms(v.loaded_at()),
                sdk_version: v.info().sdk_version.clone(),
                rustc_version: v.info().rustc_version.clone(),
                stored: v.stored(),
                running: v.running(),
                stuck: v.stuck(),
                unhealthy: v.unhealthy(),
                worker_threads: v.worker_threads(),
                error: v.error(),
            })
            .collect(),
        last_swap: slot.last_swap(),
        last_error: slot.last_error(),
    }
}
