//! A short `swapbench` run (debug builds, a few swaps, a few seconds) so the benchmark keeps
//! working: it must complete every swap without failing a request.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `baton` binary of this build: `cargo test --workspace` builds it next to this package's
/// binaries; otherwise it is built into a target directory of its own.
fn baton() -> PathBuf {
    let sibling = Path::new(env!("CARGO_BIN_EXE_swapbench")).with_file_name("baton");
    if sibling.is_file() {
        return sibling;
    }
    let target = baton_benches::artifacts::workspace()
        .join("target")
        .join("swapbench-host");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "baton-host", "--bin", "baton"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(baton_benches::artifacts::workspace())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building baton failed");
    target.join("debug").join("baton")
}

#[test]
fn a_short_swapbench_run_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("swapbench.json");
    let output = Command::new(env!("CARGO_BIN_EXE_swapbench"))
        .args([
            "--debug",
            "--swaps",
            "4",
            "--connections",
            "8",
            "--rounds",
            "1",
        ])
        .args(["--round-secs", "0.5", "--gap-ms", "100"])
        .arg("--baton")
        .arg(baton())
        .arg("--hyper")
        .arg(env!("CARGO_BIN_EXE_hyper-hello"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("swapbench runs");
    let table = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "swapbench failed:\n{table}\n{stderr}"
    );
    let result: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let swaps = &result["swaps"];
    assert_eq!(swaps["completed"], 4, "{table}");
    assert_eq!(swaps["failed_requests"], 0, "{table}");
    assert!(swaps["requests"].as_u64().unwrap() > 100, "{table}");
    assert!(
        result["throughput"]["ratio_median"].as_f64().unwrap() > 0.0,
        "{table}"
    );
    assert_eq!(swaps["landed_to_new_version"]["count"], 4, "{table}");
    assert_eq!(
        result["host"]["copies_mapped_at_end"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{table}"
    );
    assert!(table.contains("targets"), "{table}");
}
