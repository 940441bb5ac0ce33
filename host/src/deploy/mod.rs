//! Deployments: the registry of apps and their versions, the deploy pipeline (copy, load,
//! init, warm up, switch) and the drain and retirement of old versions.
//!
//! Each app has a slot whose active version is swapped atomically (`arc-swap`): a request
//! takes the version it finds, claims it (the in-flight count), and runs on that version's own
//! worker pool. A version that stopped taking requests retires once its in-flight count is zero:
//! shutdown hook, pool joined, library closed, mappings checked. With a guard window the
//! version switched away from waits in standby first, and a clear regression of the new
//! version's outcomes switches back to it.

mod collect;
mod outcomes;
mod pool;
mod registry;
mod store;
mod version;

pub(crate) use collect::register_collector;
pub use outcomes::{Cause, Traffic};
pub(crate) use registry::is_module_file;
pub use registry::{
    AppSlot, Canary, CanaryStatus, DeployMode, Deployed, GuardState, GuardStatus, Registry,
    Rejection, RolledBack, SwapTimings,
};
pub(crate) use version::OwnedRequest;
pub use version::{Running, State, Version};
