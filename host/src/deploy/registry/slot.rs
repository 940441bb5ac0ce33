//! An app's slot: its mount, limits, the versions it has had, and the one switch that changes
//! which of them take its new requests.
//!
//! Every deploy, canary change, promote, undeploy, rollback and shutdown goes through
//! [`AppSlot::switch`], under the slot's guard-window lock: the version switched to is marked
//! active before it is published, and whatever stops taking requests (the replaced version, the
//! ended canary, an open guard window) is handed back for the caller to retire or keep.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::canary::Split;
use super::guard::{GuardStatus, RolledBack, Watch};
use crate::config::{Config, GuardConfig, Limits};
use crate::deploy::version::{InFlight, State, Version};
use crate::sync::lock;

/// The timeline of an app's last swap, in milliseconds after the file was detected, and what
/// its guard window found.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct SwapTimings {
    /// Version switched away from, if any.
    pub from: Option<String>,
    /// Its deployment id.
    pub from_id: Option<u64>,
    /// Version switched to.
    pub to: String,
    /// Its deployment id.
    pub to_id: u64,
    /// When the file was detected (Unix milliseconds).
    pub detected_unix_ms: u64,
    /// Module copied, mapped and validated.
    pub loaded_ms: u64,
    /// `init`, warm-up hook and warm-up requests done.
    pub warmed_ms: u64,
    /// New requests go to the new version.
    pub switched_ms: u64,
    /// The old version's last request finished.
    pub drained_ms: Option<u64>,
    /// The old version is shut down and unmapped.
    pub retired_ms: Option<u64>,
    /// The guard window of this swap, if the app has one.
    pub guard: Option<GuardStatus>,
    /// Set when the new version was switched back to the old one, with why.
    pub rolled_back: Option<RolledBack>,
}

/// One app: its mount, limits and the version that takes new requests.
#[derive(Debug)]
pub struct AppSlot {
    pub(super) name: String,
    pub(super) mount: String,
    pub(super) limits: Limits,
    pub(super) guard_config: GuardConfig,
    /// The open guard window, if any. Every switch happens under this lock, so the guard's own
    /// switch back never races an operator's action.
    pub(super) guard: Mutex<Option<Watch>>,
    permits: Arc<Semaphore>,
    pub(super) active: ArcSwapOption<Version>,
    versions: Mutex<Vec<Arc<Version>>>,
    pub(super) last_swap: Mutex<Option<SwapTimings>>,
    last_error: Mutex<Option<String>>,
    /// One deploy or operator action on the app at a time.
    pub(super) deploying: tokio::sync::Mutex<()>,
    /// Whether `split` may hold a canary: the one check the single-version path pays.
    pub(super) split_on: AtomicBool,
    pub(super) split: ArcSwapOption<Split>,
    pub(super) split_counter: AtomicU64,
    pub(super) sticky: bool,
    pub(super) cookie_name: String,
}

/// A change of the versions that take an app's new requests.
#[derive(Debug)]
pub(super) enum Switch {
    /// This version takes every new request (`None`: none does, the mount answers 404); a
    /// canary split ends.
    To(Option<Arc<Version>>),
    /// This version is the canary, taking this percentage of new requests; the active version
    /// takes the rest.
    Split(Arc<Version>, u8),
    /// The canary split ends: the active version takes every new request.
    Unsplit,
}

/// What a switch took out of service, for the caller to retire (or keep in standby).
#[derive(Debug, Default)]
#[must_use]
pub(super) struct Switched {
    /// The version that was active, when [`Switch::To`] replaced it.
    pub(super) previous: Option<Arc<Version>>,
    /// The canary that takes no more requests: its split ended, or another version replaced it.
    pub(super) canary: Option<Arc<Version>>,
    /// The guard window that was open: every switch ends it.
    pub(super) window: Option<Watch>,
}

impl AppSlot {
    /// An empty slot for `app`, with its settings from `config`.
    pub(super) fn new(app: &str, config: &Config) -> AppSlot {
        let limits = config.limits_for(app);
        AppSlot {
            name: app.to_owned(),
            mount: config.mount_for(app),
            limits,
            guard_config: config.guard_for(app),
            guard: Mutex::new(None),
            permits: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            active: ArcSwapOption::empty(),
            versions: Mutex::new(Vec::new()),
            last_swap: Mutex::new(None),
            last_error: Mutex::new(None),
            deploying: tokio::sync::Mutex::new(()),
            split_on: AtomicBool::new(false),
            split: ArcSwapOption::empty(),
            split_counter: AtomicU64::new(0),
            sticky: config.canary_sticky,
            cookie_name: config.session_cookie_name().to_owned(),
        }
    }

    /// App name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Mount path.
    pub fn mount(&self) -> &str {
        &self.mount
    }

    /// Effective limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The version taking new requests, if any.
    pub fn active(&self) -> Option<Arc<Version>> {
        self.active.load_full()
    }

    /// The versions this app has had in this process that are still worth showing: the live
    /// ones, the failed and retired ones of recent deploys. Oldest first.
    pub fn versions(&self) -> Vec<Arc<Version>> {
        lock(&self.versions).clone()
    }

    /// The timeline of the last swap.
    pub fn last_swap(&self) -> Option<SwapTimings> {
        lock(&self.last_swap).clone()
    }

    /// The last deploy error of this app.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    /// The admission semaphore shared by all versions of the app.
    pub(crate) fn permits(&self) -> &Arc<Semaphore> {
        &self.permits
    }

    /// Claims the version a new request goes to (the active one, or during a canary split the
    /// one the split picks), retrying if a swap retires it meanwhile.
    pub(crate) fn enter(&self, headers: &http::HeaderMap) -> Option<(Arc<Version>, InFlight)> {
        loop {
            let version = if self.split_on.load(Relaxed) {
                self.pick(headers)?
            } else {
                self.active.load_full()?
            };
            if let Some(guard) = version.try_enter() {
                return Some((version, guard));
            }
            // Switched away between the load and the claim: the new version is already active.
            std::hint::spin_loop();
        }
    }

    /// The one change of which versions take the app's new requests. `window` is the slot's
    /// guard window, locked by the caller for the whole change (and for opening a new window
    /// right after); an open window ends here and is handed back.
    ///
    /// The version switched to is marked active before it is published, so a request that
    /// finds it can claim it; it is published before a split ends, so no request in between
    /// finds no version.
    pub(super) fn switch(&self, window: &mut Option<Watch>, to: Switch) -> Switched {
        let window = window.take();
        match to {
            Switch::To(version) => {
                if let Some(version) = &version {
                    version.set_state(State::Active);
                }
                let id = version.as_ref().map(|v| v.id());
                let previous = self.active.swap(version);
                // A promoted canary is the new active version, not one to retire.
                let canary = self.set_split(None, 0).filter(|c| Some(c.id()) != id);
                Switched {
                    previous,
                    canary,
                    window,
                }
            }
            Switch::Split(canary, percent) => {
                canary.set_state(State::Active);
                Switched {
                    canary: self.set_split(Some(canary), percent),
                    window,
                    ..Switched::default()
                }
            }
            Switch::Unsplit => Switched {
                canary: self.set_split(None, 0),
                window,
                ..Switched::default()
            },
        }
    }

    /// Lists a new version among the app's versions.
    pub(super) fn record(&self, version: &Arc<Version>) {
        let mut versions = lock(&self.versions);
        versions.push(Arc::clone(version));
        // Keep status readable: forget the oldest finished versions beyond a few.
        while versions.len() > 8 {
            match versions
                .iter()
                .position(|v| matches!(v.state(), State::Retired | State::Failed) && !v.stored())
            {
                Some(i) => {
                    versions.remove(i);
                }
                None => break,
            }
        }
    }

    /// Sets (or with `None` clears) the app's last deploy error.
    pub(super) fn set_error(&self, error: Option<String>) {
        *lock(&self.last_error) = error;
    }
}
