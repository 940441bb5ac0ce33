//! Retirement: a version that takes no new requests drains (its running requests finish), then
//! is shut down and unloaded — its shutdown hook, its worker threads joined, its library closed
//! and its mappings checked. [`drain_then_unload`] is that sequence, for a version retired after
//! a switch as for every version at shutdown; they differ only in what a drain that overruns
//! its timeout does.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use super::{AppSlot, Registry, Switch};
use crate::clock::{millis, ms_since};
use crate::deploy::version::{State, Version};
use crate::sync::lock;

/// What a drain does once its timeout passed with requests still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overdue {
    /// Waits on: the library stays mapped until the last request finishes (a retirement).
    WaitOn,
    /// Gives up and leaves the version loaded (a shutdown: the process is about to exit).
    GiveUp,
}

/// A version drained and unloaded.
#[derive(Debug)]
struct Unloaded {
    /// When its last request finished.
    drained: Instant,
    /// How long the shutdown hook and the unload took.
    took: Duration,
    /// Mappings of the module that remain (none when the unload worked).
    leftovers: Vec<String>,
}

/// Waits until no request runs on `version` (which takes no new ones), then shuts it down and
/// unloads it. `None` if the drain gave up (see [`Overdue`]).
async fn drain_then_unload(
    version: &Arc<Version>,
    timeout: Duration,
    overdue: Overdue,
) -> Option<Unloaded> {
    let info = version.info();
    if !version.wait_idle(timeout).await {
        // Streams still running end now; their handlers return at their next write.
        version.cut_streams();
        let running = version.running();
        if overdue == Overdue::GiveUp {
            tracing::warn!(app = %info.app, version = %info.version, ?running,
                "shutdown: requests still running after the drain timeout; not unloading");
            return None;
        }
        let stuck = running.iter().filter(|r| r.stuck).count();
        let message = format!(
            "drain timeout ({} s) passed with {} request(s) still running ({stuck} stuck \
             past the request timeout); library stays mapped until they finish",
            timeout.as_secs(),
            running.len()
        );
        tracing::warn!(app = %info.app, version = %info.version, ?running, "{message}");
        version.set_error(&message);
        version.wait_idle(Duration::MAX).await;
    }
    let drained = Instant::now();
    let (took, leftovers) = version.unload(State::Retired).await;
    Some(Unloaded {
        drained,
        took,
        leftovers,
    })
}

impl Registry {
    /// Marks a version that takes no new requests as draining and retires it in the background.
    /// `swap` is when the switch away from it was detected, for the swap's timeline.
    pub(super) fn retire_later(
        self: &Arc<Self>,
        slot: &Arc<AppSlot>,
        version: Arc<Version>,
        swap: Option<Instant>,
    ) {
        version.set_state(State::Draining);
        let registry = Arc::clone(self);
        let slot = Arc::clone(slot);
        tokio::spawn(async move { registry.retire(&slot, &version, swap).await });
    }

    /// Retires a version that was rolled back; its private copy is not kept for rollback.
    pub(super) fn retire_discarding(self: &Arc<Self>, slot: &Arc<AppSlot>, version: Arc<Version>) {
        version.set_stored(false);
        version.set_state(State::Draining);
        let (registry, slot) = (Arc::clone(self), Arc::clone(slot));
        tokio::spawn(async move {
            registry.retire(&slot, &version, None).await;
            registry.store.remove(version.copy_path());
        });
    }

    /// Drains and unloads a version switched away from, recording it in the swap's timeline.
    async fn retire(&self, slot: &AppSlot, version: &Arc<Version>, swap: Option<Instant>) {
        let info = version.info();
        let timeout = self.config.drain_timeout();
        let Some(unloaded) = drain_then_unload(version, timeout, Overdue::WaitOn).await else {
            return;
        };
        if let Some(swap) = swap
            && !self.drain_recorded(slot, version)
        {
            self.metrics
                .drained(&info.app, unloaded.drained.duration_since(swap));
        }
        if let Some(timings) = lock(&slot.last_swap)
            .as_mut()
            .filter(|t| swap.is_some() && t.from_id == Some(version.id()))
        {
            // After a guard window the drain was recorded when it happened.
            let drained_ms = swap.map(|swap| millis(unloaded.drained.duration_since(swap)));
            timings.drained_ms = timings.drained_ms.or(drained_ms);
            timings.retired_ms = swap.map(ms_since);
        }
        if unloaded.leftovers.is_empty() {
            tracing::info!(app = %info.app, version = %info.version,
                unload_ms = millis(unloaded.took), "retired and unmapped");
            self.prune_store(slot);
        } else {
            let message = format!(
                "retired, but the library is still mapped: {:?}",
                unloaded.leftovers
            );
            tracing::warn!(app = %info.app, version = %info.version, "{message}");
            version.set_error(&message);
        }
    }

    /// Keeps the private copies of the newest `keep_versions` retired versions; removes older.
    fn prune_store(&self, slot: &AppSlot) {
        let mut retired: Vec<Arc<Version>> = slot
            .versions()
            .into_iter()
            .filter(|v| v.state() == State::Retired && v.stored())
            .collect();
        retired.sort_by_key(|v| std::cmp::Reverse(v.id()));
        for version in retired.into_iter().skip(self.config.keep_versions) {
            self.store.remove(version.copy_path());
            version.set_stored(false);
        }
    }

    /// The host stops taking connections: every loaded version tells its long responses it
    /// drains (server-sent events end with their retry hint and their clients reconnect to
    /// whoever serves next), so they do not hold the connections' drain until its timeout.
    pub fn begin_stop(&self) {
        for slot in self.apps() {
            for version in slot.versions() {
                version.begin_stop();
            }
        }
    }

    /// Stops every app: no new requests, drain (bounded by `timeout`), shutdown hooks, unload.
    ///
    /// The private copies of the versions that were active (and canaries) stay in the store,
    /// for the next start to restore.
    pub async fn shutdown(self: &Arc<Self>, timeout: Duration) {
        let slots = self.apps();
        for slot in &slots {
            // A fallback is not restored after a restart: it drains and unloads with the rest
            // (and `state.json` no longer names an open window).
            if let Some(watch) = lock(&slot.guard).take() {
                watch.fallback.set_state(State::Draining);
            }
        }
        self.save_state();
        self.persist.store(false, SeqCst);
        let mut kept = HashSet::new();
        for slot in &slots {
            kept.extend(slot.active().map(|v| v.id()));
            kept.extend(slot.canary().map(|c| c.version.id()));
        }
        let kept = Arc::new(kept);
        for slot in &slots {
            let switched = slot.switch(&mut lock(&slot.guard), Switch::To(None));
            for version in switched.previous.iter().chain(&switched.canary) {
                version.set_state(State::Draining);
            }
        }
        self.publish_routes();
        let mut tasks = tokio::task::JoinSet::new();
        for slot in slots {
            for version in slot.versions() {
                if version.state() != State::Draining {
                    continue;
                }
                let registry = Arc::clone(self);
                let kept = Arc::clone(&kept);
                tasks.spawn(async move {
                    let Some(unloaded) =
                        drain_then_unload(&version, timeout, Overdue::GiveUp).await
                    else {
                        return;
                    };
                    let unmapped = unloaded.leftovers.is_empty();
                    if unmapped
                        && !kept.contains(&version.id())
                        && !registry.is_previous(version.copy_path())
                    {
                        registry.store.remove(version.copy_path());
                    }
                    let info = version.info();
                    tracing::info!(app = %info.app, version = %info.version, unmapped, "stopped");
                });
            }
        }
        while tasks.join_next().await.is_some() {}
    }
}
