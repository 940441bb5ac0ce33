//! What every benchmark program's command line has, and how each run ends: on a runtime of the
//! load's own size, a table on stdout and, when asked, every figure as JSON.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// Options every benchmark program takes (flattened into each one's own), and reported with
/// its settings: the load's threads and timeout, and the profile.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Common {
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,
    /// A request without a complete response after this long counts as failed.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Build (or look for) debug binaries instead of release ones.
    #[arg(long)]
    #[serde(rename = "profile", serialize_with = "profile")]
    pub debug: bool,
    /// The `baton` binary [default: built with cargo].
    #[arg(long)]
    #[serde(skip)]
    pub baton: Option<PathBuf>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    #[serde(skip)]
    pub json: Option<PathBuf>,
}

/// `--debug` as reported: the profile's name.
fn profile<S: serde::Serializer>(debug: &bool, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(baton_testkit::build::profile(!debug))
}

/// The `hello` and `counter` modules of a host that serves both.
#[derive(Debug, Clone, clap::Args)]
pub struct HelloCounter {
    /// The `hello` module [default: built with cargo].
    #[arg(long)]
    pub hello: Option<PathBuf>,
    /// The `counter` module [default: built with cargo].
    #[arg(long)]
    pub counter: Option<PathBuf>,
}

impl HelloCounter {
    /// The `baton` binary and the `hello` and `counter` modules, each built unless given.
    ///
    /// # Errors
    /// A failed build or a missing file.
    pub fn build(&self, common: &Common) -> anyhow::Result<(PathBuf, [PathBuf; 2])> {
        let (baton, modules) = crate::artifacts::host_and_apps(
            common.release(),
            common.baton.clone(),
            &[
                ("hello", self.hello.clone()),
                ("counter", self.counter.clone()),
            ],
        )?;
        let [hello, counter] = <[PathBuf; 2]>::try_from(modules)
            .map_err(|_| anyhow::anyhow!("two modules were asked for"))?;
        Ok((baton, [hello, counter]))
    }
}

/// Rounds of the same load on each target in turn, after a warm-up.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Rounds {
    /// Seconds each target gets in each round.
    #[arg(long, default_value_t = 5.0)]
    pub round_secs: f64,
    /// Rounds (every target once each round).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Seconds of unrecorded load on each target before the rounds.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,
}

impl Common {
    /// Whether to build (or look for) release binaries.
    pub fn release(&self) -> bool {
        !self.debug
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// `release` or `debug`.
    pub fn profile(&self) -> &'static str {
        baton_testkit::build::profile(self.release())
    }

    /// Runs `bench` on a multi-thread runtime with [`Common::client_threads`] workers, prints
    /// its `table`, and writes the result as JSON when `--json` names a file; returns the
    /// result, for the caller to decide the exit code.
    ///
    /// # Errors
    /// If the runtime cannot be built, the benchmark fails, or the JSON cannot be written.
    pub fn run<R: Serialize>(
        &self,
        bench: impl Future<Output = anyhow::Result<R>>,
        table: impl FnOnce(&R) -> String,
    ) -> anyhow::Result<R> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.client_threads.max(1))
            .enable_all()
            .build()?;
        let result = runtime.block_on(bench)?;
        print!("{}", table(&result));
        if let Some(path) = &self.json {
            crate::report::write_json(path, &result)?;
        }
        Ok(result)
    }
}
