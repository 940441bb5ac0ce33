//! The admin listener: operational endpoints on a separate, loopback-by-default address.
//!
//! `GET /status` reports every app, its versions and their states, counters, the timeline of
//! the last swap and the last error, plus module files that were refused.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

use crate::deploy::{Registry, Rejection, Running, State, SwapTimings};
use crate::loader;
use crate::server::Body;

/// The status document.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Every app.
    pub apps: Vec<AppStatus>,
    /// Refused module files whose app could not be identified.
    pub rejected: Vec<Rejection>,
    /// Process-wide resources that bound how many versions can still be deployed.
    pub host: HostStatus,
}

/// Process-wide resources in the status document.
#[derive(Debug, Serialize)]
pub struct HostStatus {
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
    /// Its last error.
    pub error: Option<String>,
}

/// The status of every app.
pub fn status(registry: &Registry) -> Status {
    let apps = registry
        .apps()
        .into_iter()
        .map(|slot| AppStatus {
            name: slot.name().to_owned(),
            mount: slot.mount().to_owned(),
            active: slot.active().map(|v| v.info().version.clone()),
            versions: slot
                .versions()
                .iter()
                .map(|v| VersionStatus {
                    id: v.id(),
                    version: v.info().version.clone(),
                    state: v.state(),
                    in_flight: v.in_flight(),
                    served: v.served(),
                    source: v.source().display().to_string(),
                    copy: v.copy_path().display().to_string(),
                    loaded_unix_ms: v
                        .loaded_at()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                    sdk_version: v.info().sdk_version.clone(),
                    rustc_version: v.info().rustc_version.clone(),
                    stored: v.stored(),
                    running: v.running(),
                    error: v.error(),
                })
                .collect(),
            last_swap: slot.last_swap(),
            last_error: slot.last_error(),
        })
        .collect();
    Status {
        apps,
        rejected: registry.rejected(),
        host: HostStatus {
            pthread_keys_in_use: loader::pthread_keys_in_use(),
            pthread_keys_max: loader::PTHREAD_KEYS_MAX,
            pthread_keys_reclaimed: loader::pthread_keys_reclaimed(),
            restart_required: loader::loads_refused(),
        },
    }
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_else(|e| {
        format!("{{\"error\":\"status does not serialize: {e}\"}}").into_bytes()
    });
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Serves one admin request.
pub(crate) async fn handle<B>(registry: Arc<Registry>, req: Request<B>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/status") => json(StatusCode::OK, &status(&registry)),
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({ "error": "no such admin endpoint" }),
        ),
    }
}
