//! The binaries a benchmark runs: the `baton` host, the `hyper-hello` baseline and two versions
//! of the `hello` module. Each is taken from a path given on the command line or built with
//! cargo from this workspace.
//!
//! The two module versions come from one source: `cargo build --lib -p hello` with
//! `BATON_APP_VERSION=1.0.0`, then `2.0.0`, in their own target directory
//! (`target/swapbench-modules`, so the workspace build is not disturbed), each output copied to
//! `target/swapbench-modules/hello-<version>-<profile>.so`.
//!
//! Apps that need one version only (`sessionbench`'s `hello` and `counter`) are built as usual,
//! `cargo build --lib -p APP`, into the workspace's target directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

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

/// The workspace this crate belongs to.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}

/// `cargo` (the one running this build, if any) in the workspace, without the variables that
/// would change what it builds or where.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace());
    for var in ["BATON_APP_VERSION", "CARGO_TARGET_DIR"] {
        cmd.env_remove(var);
    }
    cmd
}

fn run(mut cmd: Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn profile(release: bool) -> &'static str {
    if release { "release" } else { "debug" }
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

/// Builds `hello` with `BATON_APP_VERSION=version` (see the module docs); returns its path.
///
/// # Errors
/// A failed build.
pub fn hello_module(release: bool, version: &str) -> anyhow::Result<PathBuf> {
    let profile = profile(release);
    let modules = workspace().join("target").join("swapbench-modules");
    let mut cmd = cargo();
    cmd.args(["build", "--quiet", "--lib", "-p", "hello"])
        .env("CARGO_TARGET_DIR", &modules)
        .env("BATON_APP_VERSION", version);
    if release {
        cmd.arg("--release");
    }
    run(cmd)?;
    let out = modules.join(format!("hello-{version}-{profile}.so"));
    std::fs::copy(modules.join(profile).join("libhello.so"), &out)
        .with_context(|| format!("cannot copy the built module to {}", out.display()))?;
    Ok(out)
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
    let profile = profile(release);
    let modules = workspace().join("target").join("swapbench-modules");
    let mut cmd = cargo();
    cmd.args(["build", "--quiet", "--lib", "-p", "fixture-faulty"])
        .env("CARGO_TARGET_DIR", &modules)
        .env("BATON_FIXTURE_APP", "hello")
        .env("BATON_APP_VERSION", BAD_VERSION)
        .env("BATON_FAULT", "errors-half");
    if release {
        cmd.arg("--release");
    }
    run(cmd)?;
    let out = modules.join(format!("hello-bad-{profile}.so"));
    std::fs::copy(modules.join(profile).join("libfixture_faulty.so"), &out)
        .with_context(|| format!("cannot copy the built module to {}", out.display()))?;
    Ok(out)
}
