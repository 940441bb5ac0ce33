//! The guard phase: a host with its guard window on serves `hello` 1.0.0 under load, and a bad
//! version (the `errors-half` fixture posing as `hello`, see
//! [`artifacts::bad_hello_module`]) is uploaded `--guard-rollbacks` times. Each must be rolled
//! back automatically; every request not answered by the bad version itself must succeed.
//!
//! The bad bytes are uploaded through the admin API each time: the watcher would not deploy
//! bytes the guard already rolled back.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baton_benches::artifacts::{self, Artifacts};
use baton_benches::load::{self, Load, TOLERATED_5XX, Target};
use baton_benches::servers::status;
use baton_benches::stats::Spread;
use baton_testkit::HostProc;
use serde::Serialize;
use serde_json::Value;

use crate::Settings;
use crate::swaps::{hello, poll, wait_serving};

/// How long v1 takes load before each bad deploy: its baseline.
const BASELINE: Duration = Duration::from_secs(2);

/// One bad deploy.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Rollback {
    pub(crate) index: usize,
    pub(crate) ok: bool,
    pub(crate) error: Option<String>,
    /// The host's record: switch to the bad version -> switch back.
    pub(crate) switch_to_rollback_ms: Option<u64>,
    /// From outside: upload sent -> `/status` shows the rollback.
    pub(crate) upload_to_rollback_seen_ms: Option<f64>,
    /// The host's reason.
    pub(crate) reason: Option<String>,
}

/// What the guard phase measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GuardPhase {
    pub(crate) window_secs: u64,
    pub(crate) requested: usize,
    pub(crate) rolled_back: usize,
    pub(crate) requests: usize,
    /// Requests that failed, other than the 5xx the bad version answered itself.
    pub(crate) failed_requests: usize,
    pub(crate) bad_version_5xx: usize,
    pub(crate) request_errors: Vec<String>,
    pub(crate) switch_to_rollback: Spread,
    pub(crate) upload_to_rollback_seen: Spread,
    pub(crate) per_rollback: Vec<Rollback>,
}

/// Polls `/status` until `done` returns a value for `hello`, or fails after `deadline`.
async fn until<T>(
    baton: &HostProc,
    deadline: Instant,
    what: &str,
    mut done: impl FnMut(&Value) -> Option<T>,
) -> anyhow::Result<T> {
    poll(baton, deadline, None, what, |app| Ok(done(app))).await
}

/// The highest deployment id of hello's versions.
fn newest_id(app: &Value) -> u64 {
    app["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["id"].as_u64())
        .max()
        .unwrap_or(0)
}

async fn one(baton: &HostProc, bad: &[u8], window: Duration) -> anyhow::Result<Rollback> {
    let before = status(baton).await?;
    let before = hello(&before).map_or(0, newest_id);
    let sent = Instant::now();
    let deadline = sent + window + Duration::from_secs(60);
    let (admin, body) = (baton.admin, bad.to_vec());
    let upload =
        tokio::spawn(async move { load::post(admin, "/apps?name=hello-bad.so", &body).await });
    let (switch_ms, reason, bad_id) = until(baton, deadline, "the rollback", |app| {
        let swap = &app["last_swap"];
        let back = swap["rolled_back"].as_object()?;
        (swap["to"] == artifacts::BAD_VERSION && swap["to_id"].as_u64() > Some(before)).then(|| {
            (
                back["after_switch_ms"].as_u64(),
                back["reason"].as_str().map(str::to_owned),
                swap["to_id"].as_u64(),
            )
        })
    })
    .await?;
    let seen_ms = sent.elapsed().as_secs_f64() * 1000.0;
    let (code, answer) = upload.await.context("upload task")??;
    if code != 200 {
        bail!(
            "upload answered {code}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    until(baton, deadline, "the bad version retired", |app| {
        let retired = app["versions"]
            .as_array()?
            .iter()
            .find(|v| v["id"].as_u64() == bad_id)
            .is_none_or(|v| v["state"] == "retired");
        retired.then_some(())
    })
    .await?;
    Ok(Rollback {
        index: 0,
        ok: true,
        error: None,
        switch_to_rollback_ms: switch_ms,
        upload_to_rollback_seen_ms: Some(seen_ms),
        reason,
    })
}

pub(crate) async fn run(
    settings: &Settings,
    artifacts: &Artifacts,
    bad: &Path,
) -> anyhow::Result<GuardPhase> {
    let window = Duration::from_secs(settings.guard_window_secs);
    let config = format!(
        "{}\n[guard]\nwindow_secs = {}\n",
        settings.host_config, settings.guard_window_secs
    );
    let baton = artifacts.start_baton(&config)?;
    let good = format!("hello@{}", artifacts::VERSIONS[0]);
    let bad_tag = format!("hello@{}", artifacts::BAD_VERSION);
    let target = Target {
        versions: vec![good.clone(), bad_tag.clone()],
        tolerate_5xx_from: Some(bad_tag),
        ..Target::new(
            baton.addr,
            "/hello/",
            Duration::from_millis(settings.common.timeout_ms),
        )
    };
    wait_serving(&baton, &good).await?;
    let bad_bytes = std::fs::read(bad).with_context(|| format!("cannot read {}", bad.display()))?;
    let load = Load::start(&target, settings.connections);
    let mut rollbacks = Vec::new();
    for index in 1..=settings.guard_rollbacks {
        tokio::time::sleep(BASELINE).await;
        let mut record = match one(&baton, &bad_bytes, window).await {
            Ok(record) => record,
            Err(e) => Rollback {
                index,
                ok: false,
                error: Some(format!("{e:#}")),
                switch_to_rollback_ms: None,
                upload_to_rollback_seen_ms: None,
                reason: None,
            },
        };
        record.index = index;
        eprintln!(
            "bad deploy {index}: rolled back {} ms after the switch",
            record
                .switch_to_rollback_ms
                .map_or_else(|| "-".to_owned(), |ms| ms.to_string())
        );
        rollbacks.push(record);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let recorded = load.stop().await;
    let switch: Vec<f64> = rollbacks
        .iter()
        .filter_map(|r| r.switch_to_rollback_ms.map(|ms| ms as f64))
        .collect();
    let seen: Vec<f64> = rollbacks
        .iter()
        .filter_map(|r| r.upload_to_rollback_seen_ms)
        .collect();
    Ok(GuardPhase {
        window_secs: settings.guard_window_secs,
        requested: settings.guard_rollbacks,
        rolled_back: rollbacks.iter().filter(|r| r.ok).count(),
        requests: recorded.samples.len(),
        failed_requests: recorded.failed(),
        bad_version_5xx: recorded.with_outcome(TOLERATED_5XX),
        request_errors: recorded.errors.clone(),
        switch_to_rollback: Spread::from_ms(&switch),
        upload_to_rollback_seen: Spread::from_ms(&seen),
        per_rollback: rollbacks,
    })
}
