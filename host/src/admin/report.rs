//! The server's side of the wire documents: the status of the registry's apps and what a
//! deploy did, built from the registry's live state.

use super::wire::{AppStatus, DeployOutcome, HostStatus, Outcome, Status, VersionStatus};
use crate::deploy::{AppSlot, CanaryStatus, Deployed, Registry};
use crate::loader;

/// The status of every app.
pub(super) fn status(registry: &Registry) -> Status {
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
            version: crate::VERSION.to_owned(),
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
pub(super) fn app_status(slot: &AppSlot) -> AppStatus {
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

/// What a deploy (or a rollback) did, as `POST /apps` answers it.
pub(super) fn deploy_outcome(registry: &Registry, deployed: &Deployed) -> DeployOutcome {
    let (version, unchanged) = match deployed {
        Deployed::New(v) => (v, false),
        Deployed::Unchanged(v) => (v, true),
    };
    let info = version.info();
    let slot = registry.app(&info.app);
    let canary = slot
        .as_ref()
        .and_then(|s| s.canary())
        .filter(|c| c.version.id() == version.id());
    let last_swap = slot.as_ref().and_then(|s| s.last_swap());
    let outcome = match (unchanged, &canary) {
        (true, _) => Outcome::Unchanged,
        (false, Some(_)) => Outcome::Canary,
        (false, None) => Outcome::Deployed,
    };
    DeployOutcome {
        outcome,
        app: info.app.clone(),
        version: info.version.clone(),
        id: version.id(),
        replaced: last_swap
            .as_ref()
            .filter(|_| canary.is_none() && !unchanged)
            .and_then(|t| {
                if t.rolled_back.is_some() && t.from_id == Some(version.id()) {
                    // Switched back to the fallback: it replaced the guarded version.
                    Some(t.to.clone())
                } else {
                    (t.to_id == version.id()).then(|| t.from.clone()).flatten()
                }
            }),
        percent: canary.map(|c| c.percent),
        last_swap,
    }
}
