//! Deployments: the registry of apps and their versions, the deploy pipeline and the drain and
//! retirement of old versions.
//!
//! - [`Registry`] (`registry/`): apps by name and by mount. A deploy is one request run through
//!   named stages — copy, validate, open, start, warm, switch — whatever asked for it (the
//!   watcher, the scan at start, an upload, the restore of the host state, a rollback or a
//!   canary). Each app has a slot whose versions change only through its one `switch`; what a
//!   switch takes out of service drains and unloads through one drain-then-unload. Operator
//!   actions, canary splits, the guard window, `state.json` and the crash quarantine each have
//!   a file of their own.
//! - [`Version`] (`version.rs`, `version/requests.rs`): one loaded version — its state, worker
//!   pool and instance from load to unload, and the requests running on it.
//! - `pool.rs`: a version's own worker threads; `store.rs`: the private copies of module files;
//!   `outcomes.rs`: the per-version traffic figures the guard compares.
//!
//! A request takes the version it finds in its app's slot (`arc-swap`), claims it (the
//! in-flight count), and runs on that version's own worker pool. A version that stopped taking
//! requests retires once its in-flight count is zero: shutdown hook, pool joined, library
//! closed, mappings checked. With a guard window the version switched away from waits in
//! standby first, and a clear regression of the new version's outcomes switches back to it.

mod collect;
mod outcomes;
mod pool;
mod registry;
mod store;
mod version;

pub(crate) use collect::register_collector;
pub(crate) use registry::is_module_file;
pub(crate) use registry::{
    AppSlot, CanaryStatus, DeployMode, Deployed, GuardState, Registry, Rejection, SwapTimings,
};
pub(crate) use version::{
    BodyRest, InFlight, Origin, OwnedRequest, Reply, RequestSpan, StreamAbort, StreamBody,
};
pub(crate) use version::{Running, State, Version};
