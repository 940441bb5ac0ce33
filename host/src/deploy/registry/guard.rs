//! The guard window: after a switch the previous version stays loaded and warm as the fallback
//! (state `standby`: no new requests, its worker threads up) while the new version's traffic is
//! compared with the previous version's baseline, its own traffic in the `baseline_secs` before
//! the switch. A clear regression switches back: one pointer swap under the slot's guard lock,
//! like any switch, then the bad version drains and retires and its private copy is dropped, so
//! neither `baton rollback` nor a restart brings it back. A window that ends without one retires
//! the fallback as a switch without a guard would have at once.
//!
//! At most one fallback is kept: a newer switch during a window retires the current fallback at
//! once; undeploy, a canary and shutdown end the window the same way. An operator's rollback
//! during a window switches back to the fallback.
//!
//! Bytes the guard rolled back are not deployed again by the watcher (a repeated file event or
//! the file left in place would otherwise bring them straight back); an upload tries them again.
//!
//! A sampler notes every active version's counters once a second, so a baseline is at hand at
//! any switch.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::pipeline::Origin;
use super::{AppSlot, Registry, Switch};
use crate::clock::{ms_since, unix_ms};
use crate::config::GuardConfig;
use crate::deploy::outcomes::{Cause, Figures, Regression, Traffic, judge};
use crate::deploy::version::{State, Version};
use crate::sync::lock;

/// How often an open window compares the figures.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// How often the sampler notes active versions' counters.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// An open guard window.
#[derive(Debug)]
pub(crate) struct Watch {
    /// The version switched to, active.
    pub(crate) new: Arc<Version>,
    /// The version switched away from, in standby.
    pub(crate) fallback: Arc<Version>,
    baseline: Figures,
    config: GuardConfig,
    detected: Instant,
    switched: Instant,
    ends_unix_ms: u64,
}

/// Where a swap's guard window is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardState {
    /// The window is open: the previous version waits in standby.
    Watching,
    /// The window ended without a regression; the previous version retired.
    Passed,
    /// A regression (or the operator) switched back to the previous version.
    RolledBack,
    /// Ended early by a newer deploy, an undeploy, a canary or shutdown.
    Ended,
}

/// A swap's guard window, as shown in status.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct GuardStatus {
    /// Where the window is.
    pub state: GuardState,
    /// Its length.
    pub window_ms: u64,
    /// When it ends (Unix milliseconds).
    pub ends_unix_ms: u64,
    /// The previous version's traffic in the `baseline_secs` before the switch.
    pub baseline: Traffic,
    /// The new version's traffic since the switch, as of the last check.
    pub new: Traffic,
    /// Why the window ended early, for `ended`.
    pub ended: Option<String>,
}

/// A switch back to the previous version, as shown in status.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RolledBack {
    /// `errors`, `latency` or `operator`.
    pub cause: Cause,
    /// What was compared, in a sentence.
    pub reason: String,
    /// When (Unix milliseconds).
    pub at_unix_ms: u64,
    /// How long after the switch.
    pub after_switch_ms: u64,
    /// The new version's traffic since the switch.
    pub new: Traffic,
    /// The previous version's baseline.
    pub baseline: Traffic,
}

impl Watch {
    /// Opens a window over `new`, with `fallback`'s recent traffic as the baseline.
    pub(crate) fn open(
        config: &GuardConfig,
        new: Arc<Version>,
        fallback: Arc<Version>,
        detected: Instant,
    ) -> Watch {
        let now = Instant::now();
        let baseline = fallback.outcomes().last(now, config.baseline());
        let ends = SystemTime::now() + config.window();
        Watch {
            new,
            fallback,
            baseline,
            config: *config,
            detected,
            switched: now,
            ends_unix_ms: unix_ms(ends),
        }
    }

    /// The window as shown in status now.
    pub(crate) fn status(&self) -> GuardStatus {
        GuardStatus {
            state: GuardState::Watching,
            window_ms: crate::clock::millis(self.config.window()),
            ends_unix_ms: self.ends_unix_ms,
            baseline: self.baseline.summary(),
            new: self.new.outcomes().now().summary(),
            ended: None,
        }
    }
}

impl Registry {
    /// Starts the guard of a switch from `fallback` to `new`: checks every `CHECK_EVERY`, and
    /// notes when the fallback's last request finished.
    pub(super) fn watch(
        self: &Arc<Self>,
        slot: &Arc<AppSlot>,
        new: &Arc<Version>,
        fallback: &Arc<Version>,
        detected: Instant,
    ) {
        let info = new.info();
        tracing::info!(app = %info.app, version = %info.version,
            fallback = %fallback.info().version,
            window_secs = slot.guard_config.window_secs, "guarding; the previous version stays in standby");
        {
            let (registry, slot, fallback) =
                (Arc::clone(self), Arc::clone(slot), Arc::clone(fallback));
            let timeout = self.config.drain_timeout();
            tokio::spawn(async move {
                if fallback.wait_idle(timeout).await {
                    registry.note_drained(&slot, &fallback, detected);
                }
            });
        }
        let (registry, slot, id) = (Arc::clone(self), Arc::clone(slot), new.id());
        tokio::spawn(async move { registry.guard_loop(slot, id).await });
    }

    /// Records the fallback's drain in the swap's timeline, while it is still the fallback.
    fn note_drained(&self, slot: &AppSlot, fallback: &Version, detected: Instant) {
        if fallback.state() != State::Standby && fallback.state() != State::Draining {
            return;
        }
        let mut last = lock(&slot.last_swap);
        if let Some(timings) = last
            .as_mut()
            .filter(|t| t.from_id == Some(fallback.id()) && t.drained_ms.is_none())
        {
            timings.drained_ms = Some(ms_since(detected));
            self.metrics.drained(&slot.name, detected.elapsed());
        }
    }

    /// Whether the drain of `version` was already recorded for the app's last swap.
    pub(super) fn drain_recorded(&self, slot: &AppSlot, version: &Version) -> bool {
        lock(&slot.last_swap)
            .as_ref()
            .is_some_and(|t| t.from_id == Some(version.id()) && t.drained_ms.is_some())
    }

    async fn guard_loop(self: Arc<Self>, slot: Arc<AppSlot>, id: u64) {
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            let mut guard = lock(&slot.guard);
            let Some(watch) = guard.as_ref().filter(|w| w.new.id() == id) else {
                // Ended by another switch, an operator or shutdown.
                return;
            };
            let figures = watch.new.outcomes().now();
            let regression = judge(&figures, &watch.baseline, &watch.config);
            let over = watch.switched.elapsed() >= watch.config.window();
            self.update_guard(&slot, id, |g| g.new = figures.summary());
            if let Some(regression) = regression
                && let Some(watch) = guard.take()
            {
                self.switch_back(&slot, &mut guard, watch, &regression, &figures);
                return;
            }
            if over && let Some(watch) = guard.take() {
                drop(guard);
                self.update_guard(&slot, id, |g| g.state = GuardState::Passed);
                let info = watch.new.info();
                tracing::info!(app = %info.app, version = %info.version,
                    fallback = %watch.fallback.info().version, requests = figures.requests(),
                    "guard window passed; the previous version retires");
                self.retire_later(&slot, watch.fallback, Some(watch.detected));
                // The window is closed: the new version is no longer under trial.
                self.save_state();
                return;
            }
        }
    }

    /// Changes the guard status of the last swap, if it is the swap to version `id`.
    fn update_guard(&self, slot: &AppSlot, id: u64, change: impl FnOnce(&mut GuardStatus)) {
        if let Some(guard) = lock(&slot.last_swap)
            .as_mut()
            .filter(|t| t.to_id == id)
            .and_then(|t| t.guard.as_mut())
        {
            change(guard);
        }
    }

    /// Switches `watch`'s app back to its fallback: the fallback takes new requests again, the
    /// guarded version drains and retires, and its private copy is dropped. `window` is the
    /// slot's guard window, locked, that `watch` was taken from. Returns the fallback.
    pub(super) fn switch_back(
        self: &Arc<Self>,
        slot: &Arc<AppSlot>,
        window: &mut Option<Watch>,
        watch: Watch,
        regression: &Regression,
        figures: &Figures,
    ) -> Arc<Version> {
        let Watch {
            new,
            fallback,
            baseline,
            switched,
            ..
        } = watch;
        let back = slot.switch(window, Switch::To(Some(Arc::clone(&fallback))));
        if let Some(canary) = back.canary {
            self.retire_later(slot, canary, None);
        }
        let after_switch_ms = ms_since(switched);
        self.retire_discarding(slot, Arc::clone(&new));
        self.forget_previous(&slot.name);
        self.save_state();
        if regression.cause != Cause::Operator {
            self.metrics
                .rolled_back(&slot.name, regression.cause.name());
        }
        self.remember_rolled_back(&new);
        let record = RolledBack {
            cause: regression.cause,
            reason: regression.reason.clone(),
            at_unix_ms: unix_ms(SystemTime::now()),
            after_switch_ms,
            new: figures.summary(),
            baseline: baseline.summary(),
        };
        if let Some(timings) = lock(&slot.last_swap)
            .as_mut()
            .filter(|t| t.to_id == new.id())
        {
            if let Some(guard) = timings.guard.as_mut() {
                guard.state = GuardState::RolledBack;
                guard.new = record.new.clone();
            }
            timings.rolled_back = Some(record);
        }
        tracing::warn!(app = %slot.name, version = %new.info().version,
            active = %fallback.info().version, cause = regression.cause.name(),
            reason = %regression.reason, after_switch_ms, "rolled back");
        fallback
    }

    /// Remembers bytes that were rolled back, so the watcher does not deploy them again.
    fn remember_rolled_back(&self, version: &Version) {
        let mut hashes = lock(&self.rolled_back);
        hashes.retain(|(hash, _)| *hash != version.hash());
        hashes.push((version.hash(), version.info().app.clone()));
        if hashes.len() > 64 {
            hashes.remove(0);
        }
    }

    /// For a deploy of bytes that were rolled back: the app's active version when the watcher
    /// must leave them alone. An operator's deploy of them forgets the rollback and goes ahead.
    pub(super) fn refuse_rolled_back(&self, hash: u64, origin: Origin) -> Option<Arc<Version>> {
        let mut hashes = lock(&self.rolled_back);
        let at = hashes.iter().position(|(h, _)| *h == hash)?;
        if origin != Origin::Watch {
            hashes.remove(at);
            return None;
        }
        let app = hashes[at].1.clone();
        drop(hashes);
        self.app(&app)?.active()
    }

    /// Ends an open window early: the fallback retires at once.
    pub(super) fn end_guard(self: &Arc<Self>, slot: &Arc<AppSlot>, watch: Watch, why: &str) {
        self.update_guard(slot, watch.new.id(), |g| {
            g.state = GuardState::Ended;
            g.ended = Some(why.to_owned());
        });
        tracing::info!(app = %slot.name, version = %watch.new.info().version,
            fallback = %watch.fallback.info().version, why, "guard window ended; the fallback retires");
        self.retire_later(slot, watch.fallback, None);
        self.save_state();
    }

    /// Notes the counters of every active version (and canary) once a second, for baselines.
    pub(super) fn start_sampler(self: &Arc<Self>) {
        let registry: Weak<Registry> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(registry) = registry.upgrade() else {
                    return;
                };
                let now = Instant::now();
                for slot in registry.apps() {
                    if !slot.guard_config.enabled() {
                        continue;
                    }
                    let span = slot.guard_config.baseline();
                    for version in slot
                        .active()
                        .into_iter()
                        .chain(slot.canary().map(|c| c.version))
                    {
                        version.outcomes().snapshot(now, span);
                    }
                }
            }
        });
    }
}
