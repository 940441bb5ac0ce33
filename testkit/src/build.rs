//! Building what the tests and benchmarks run: `cargo` in this workspace, and app modules built
//! with compile-time settings.
//!
//! A module variant (a package built with some variables set, e.g. `BATON_APP_VERSION=2.0.0`)
//! is built once per distinct settings, profile and sources, in a target directory of its own
//! (`target/test-modules/build`, so the workspace build is not disturbed), and copied to
//! `target/test-modules/out/<package>-<settings>-<profile>-<sources hash>.so`. A file lock keeps
//! parallel test processes from overwriting each other's output.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Variables that change what a build of this workspace makes or where it goes; [`cargo`]
/// removes them so that only what the caller sets counts.
const BUILD_VARIABLES: [&str; 5] = [
    "BATON_APP_VERSION",
    "BATON_BUILD_VERSION",
    "BATON_FAULT",
    "BATON_FIXTURE_APP",
    "CARGO_TARGET_DIR",
];

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}

/// `cargo` (the one running this test or build, if any) in the workspace, without the
/// variables that would change what it builds or where.
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(workspace());
    for var in BUILD_VARIABLES {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs `cmd` and fails unless it exits 0.
///
/// # Errors
/// If it cannot be run or does not succeed.
pub fn run(mut cmd: Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// The cargo profile's name, as it names its output directory.
pub fn profile(release: bool) -> &'static str {
    if release { "release" } else { "debug" }
}

/// The cdylib crate `package` built with `env` set at compile time, in the `release` or debug
/// profile (see the module docs); returns a private copy of the built module.
///
/// # Errors
/// If the build fails or its output cannot be copied.
pub fn module(package: &str, env: &[(&str, &str)], release: bool) -> anyhow::Result<PathBuf> {
    let root = workspace().join("target").join("test-modules");
    let out_dir = root.join("out");
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let mut tag = package.to_owned();
    for (k, v) in env {
        tag.push_str(&format!("-{k}={v}"));
    }
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let fingerprint = format!("{:016x}.so", sources_fingerprint());
    let out = out_dir.join(format!("{tag}-{}-{fingerprint}", profile(release)));
    let lock = std::fs::File::create(root.join(".lock"))?;
    lock.lock()?;
    if !out.exists() {
        // Builds of older sources are never used again.
        for stale in std::fs::read_dir(&out_dir)?.flatten() {
            if !stale.file_name().to_string_lossy().ends_with(&fingerprint) {
                let _ = std::fs::remove_file(stale.path());
            }
        }
        let mut cmd = cargo();
        cmd.args(["build", "--quiet", "--lib", "-p", package])
            .env("CARGO_TARGET_DIR", root.join("build"));
        if release {
            cmd.arg("--release");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(cmd).with_context(|| format!("building {package} with {env:?}"))?;
        let built = root
            .join("build")
            .join(profile(release))
            .join(format!("lib{}.so", package.replace('-', "_")));
        let tmp = out.with_extension("tmp");
        std::fs::copy(&built, &tmp).with_context(|| format!("cannot copy {}", built.display()))?;
        std::fs::rename(&tmp, &out)?;
    }
    Ok(out)
}

/// A hash of every source a module build depends on (the sdk, the example and fixture crates,
/// the lock file), so a cached build is never used after the code changed.
fn sources_fingerprint() -> u64 {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|e| e == "rs" || e == "toml") {
                files.push(path);
            }
        }
    }
    let root = workspace();
    let mut files = vec![root.join("Cargo.lock"), root.join("Cargo.toml")];
    for dir in ["sdk", "examples", "host/tests/fixtures"] {
        walk(&root.join(dir), &mut files);
    }
    files.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in files {
        file.hash(&mut hasher);
        std::fs::read(&file).unwrap_or_default().hash(&mut hasher);
    }
    hasher.finish()
}
