//! The binaries a benchmark runs: the `baton` host, the `hyper-hello` baseline and two versions
//! of the `hello` module. Each is taken from a path given on the command line or built with
//! cargo from this workspace.
//!
//! The two module versions come from one source: `cargo build --lib -p hello` with
//! `BATON_APP_VERSION=1.0.0`, then `2.0.0`, built by the test kit as the host's tests build
//! their variants (in `target/test-modules`, so the workspace build is not disturbed).
//!
//! Apps that need one version only (`sessionbench`'s `hello` and `counter`) are built as usual,
//! `cargo build --lib -p APP`, into the workspace's target directory.

use std::path::PathBuf;

use anyhow::bail;
use baton_testkit::HostProc;
use baton_testkit::build::{cargo, module, profile, run, workspace};

use crate::servers::start_baton;

/// Versions the benchmark alternates between.
pub const VERSIONS: [&str; 2] = ["1.0.0", "2.0.0"];

/// Paths to everything a swap benchmark runs.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// The `baton` host binary.
    pub baton: PathBuf,
    /// The bare hyper baseline binary.
    pub hyper_hello: PathBuf,
    /// `hello` built as [`VERSIONS`]`[0]` and `[1]`.
    pub hello: [PathBuf; 2],
}

impl Artifacts {
    /// `baton` serving `hello` [`VERSIONS`]`[0]`, with `config` as its config file.
    ///
    /// # Errors
    /// If it does not start listening within a minute.
    pub fn start_baton(&self, config: &str) -> anyhow::Result<HostProc> {
        start_baton(&self.baton, &[&self.hello[0]], config, &[], false)
    }
}

fn must_exist<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> anyhow::Result<()> {
    for path in paths {
        if !path.is_file() {
            bail!("{} does not exist", path.display());
        }
    }
    Ok(())
}

/// The `baton` host and one module per app, each built (with cargo, `release` or `debug`
/// profile) unless given; returns the host and the modules in the order of `apps`.
///
/// # Errors
/// A failed build or a missing file.
pub fn host_and_apps(
    release: bool,
    baton: Option<PathBuf>,
    apps: &[(&str, Option<PathBuf>)],
) -> anyhow::Result<(PathBuf, Vec<PathBuf>)> {
    let out = workspace().join("target").join(profile(release));
    let mut cmd = cargo();
    cmd.args(["build", "--quiet"]);
    let mut build = false;
    if baton.is_none() {
        cmd.args(["-p", "baton-host", "--bin", "baton"]);
        build = true;
    }
    for (app, given) in apps {
        if given.is_none() {
            cmd.args(["-p", app]);
            build = true;
        }
    }
    if apps.iter().any(|(_, given)| given.is_none()) {
        cmd.arg("--lib");
    }
    if release {
        cmd.arg("--release");
    }
    if build {
        run(cmd)?;
    }
    let baton = baton.unwrap_or_else(|| out.join("baton"));
    let modules: Vec<PathBuf> = apps
        .iter()
        .map(|(app, given)| {
            given
                .clone()
                .unwrap_or_else(|| out.join(format!("lib{app}.so")))
        })
        .collect();
    must_exist(std::iter::once(&baton).chain(&modules))?;
    Ok((baton, modules))
}

/// Builds (with cargo, `release` or `debug` profile) whatever is not given.
///
/// # Errors
/// A failed build or a missing file.
pub fn prepare(
    release: bool,
    baton: Option<PathBuf>,
    hyper_hello: Option<PathBuf>,
    hello: [Option<PathBuf>; 2],
) -> anyhow::Result<Artifacts> {
    let bin_dir = workspace().join("target").join(profile(release));
    if baton.is_none() || hyper_hello.is_none() {
        let mut cmd = cargo();
        cmd.args(["build", "--quiet", "-p", "baton-host", "--bin", "baton"]);
        cmd.args(["-p", "baton-benches", "--bin", "hyper-hello"]);
        if release {
            cmd.arg("--release");
        }
        run(cmd)?;
    }
    let mut built = [PathBuf::new(), PathBuf::new()];
    for (i, given) in hello.into_iter().enumerate() {
        built[i] = match given {
            Some(path) => path,
            None => hello_module(release, VERSIONS[i])?,
        };
    }
    let artifacts = Artifacts {
        baton: baton.unwrap_or_else(|| bin_dir.join("baton")),
        hyper_hello: hyper_hello.unwrap_or_else(|| bin_dir.join("hyper-hello")),
        hello: built,
    };
    must_exist(
        [&artifacts.baton, &artifacts.hyper_hello]
            .into_iter()
            .chain(&artifacts.hello),
    )?;
    Ok(artifacts)
}

/// The `hyper-hello` baseline: `given`, or built with cargo (`release` or `debug` profile).
///
/// # Errors
/// A failed build or a missing file.
pub fn hyper_hello(release: bool, given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        must_exist([&path])?;
        return Ok(path);
    }
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "baton-benches",
        "--bin",
        "hyper-hello",
    ]);
    if release {
        cmd.arg("--release");
    }
    run(cmd)?;
    let path = workspace()
        .join("target")
        .join(profile(release))
        .join("hyper-hello");
    must_exist([&path])?;
    Ok(path)
}

/// Builds `hello` with `BATON_APP_VERSION=version` (see the module docs); returns its path.
///
/// # Errors
/// A failed build.
pub fn hello_module(release: bool, version: &str) -> anyhow::Result<PathBuf> {
    module("hello", &[("BATON_APP_VERSION", version)], release)
}

/// The `x-baton-version` of [`bad_hello_module`].
pub const BAD_VERSION: &str = "6.6.6";

/// Builds the host tests' `fixture-faulty` module posing as `hello` [`BAD_VERSION`] with the
/// `errors-half` fault: it passes its warm-up, then answers 500 to every second request. The
/// guard phase of `swapbench` deploys it under load. Returns its path.
///
/// # Errors
/// A failed build.
pub fn bad_hello_module(release: bool) -> anyhow::Result<PathBuf> {
    module(
        "fixture-faulty",
        &[
            ("BATON_FIXTURE_APP", "hello"),
            ("BATON_APP_VERSION", BAD_VERSION),
            ("BATON_FAULT", "errors-half"),
        ],
        release,
    )
}
