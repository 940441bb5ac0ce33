//! The swap phase: load on the host while versions are dropped into its watched directory.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baton_benches::artifacts::{Artifacts, VERSIONS};
use baton_benches::load::{Load, Recorded, Target};
use baton_benches::procfs;
use baton_benches::servers::{first_module_name, status};
use baton_testkit::HostProc;
use serde_json::Value;

use crate::{Options, Settings};

const POLL: Duration = Duration::from_millis(5);

/// One swap as observed from outside.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct SwapRecord {
    /// 1-based.
    pub(crate) index: usize,
    /// Outcome tag of the version switched to (see [`load::Sample::outcome`]).
    pub(crate) new_tag: u8,
    /// The rename returned, in µs after the load started.
    pub(crate) landed_us: u64,
    /// `/status` first showed the old version retired (or the swap gave up), µs after start.
    pub(crate) window_end_us: u64,
    /// The swap completed: new version active, old one retired.
    pub(crate) ok: bool,
    /// Why not.
    pub(crate) error: Option<String>,
    /// The host's own timeline (`last_swap`), ms after it detected the file.
    pub(crate) host_switched_ms: Option<u64>,
    pub(crate) host_retired_ms: Option<u64>,
    /// Executable or writable mappings of the old copy left after it was retired.
    pub(crate) old_copy_mapped: bool,
}

/// Everything the swap phase recorded.
#[derive(Debug)]
pub(crate) struct SwapPhase {
    pub(crate) recorded: Recorded,
    pub(crate) swaps: Vec<SwapRecord>,
    /// (swaps done, RSS KiB, pthread keys in use) every 100 swaps.
    pub(crate) progress: Vec<(usize, u64, Option<u64>)>,
    /// Host RSS under load, just before the first swap.
    pub(crate) rss_before_kib: u64,
}

/// The `host` section of `/status`.
pub(crate) async fn host_status(baton: &HostProc) -> anyhow::Result<Value> {
    Ok(status(baton).await?["host"].clone())
}

/// The `hello` app in a status document.
pub(crate) fn hello(status: &Value) -> Option<&Value> {
    status["apps"]
        .as_array()?
        .iter()
        .find(|a| a["name"] == "hello")
}

fn entry(app: &Value, id: u64) -> Option<&Value> {
    app["versions"].as_array()?.iter().find(|v| v["id"] == id)
}

/// Waits until hello answers with `version` (the header value).
pub(crate) async fn wait_serving(baton: &HostProc, version: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let target = Target {
        versions: vec![version.to_owned()],
        ..Target::new(baton.addr, "/hello/", Duration::from_secs(5))
    };
    loop {
        let load = Load::start(&target, 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let recorded = load.stop().await;
        if recorded.samples.iter().any(|s| s.outcome == 1) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("hello does not answer as {version}: {:?}", recorded.errors);
        }
    }
}

/// A refusal the host lists for the module file `name`: when, in ms since the Unix epoch.
fn refused_at<'s>(status: &'s Value, name: &str) -> impl Iterator<Item = (u64, &'s Value)> {
    let suffix = format!("/{name}");
    status["rejected"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(move |r| {
            let at = r["at_unix_ms"].as_u64()?;
            r["file"].as_str()?.ends_with(&suffix).then_some((at, r))
        })
}

/// Polls `/status` until `done` says `hello` reached the awaited stage (`Ok(Some)`), failed
/// (`Err`), or the deadline passed. With `refused` (a module file's name and the time of its
/// newest refusal so far), a newer refusal of that file fails it too.
pub(crate) async fn poll<T>(
    baton: &HostProc,
    deadline: Instant,
    refused: Option<(&str, u64)>,
    what: &str,
    mut done: impl FnMut(&Value) -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    loop {
        if let Ok(status) = status(baton).await {
            if let Some((name, before)) = refused
                && let Some((_, rejected)) = refused_at(&status, name).find(|(at, _)| *at > before)
            {
                bail!("the host refused the module: {}", rejected["error"]);
            }
            if let Some(app) = hello(&status)
                && let Some(value) = done(app)?
            {
                return Ok(value);
            }
        }
        if Instant::now() > deadline {
            bail!("{what} not seen in time");
        }
        tokio::time::sleep(POLL).await;
    }
}

pub(crate) async fn run(
    baton: &mut HostProc,
    target: &Target,
    settings: &Settings,
    artifacts: &Artifacts,
    options: &Options,
) -> anyhow::Result<SwapPhase> {
    let pid = baton.pid();
    let gap = Duration::from_millis(settings.gap_ms);
    let load = Load::start(target, settings.connections);
    let origin = load.started();
    let micros = |t: Instant| t.duration_since(origin).as_micros() as u64;
    // Let the connections ramp up before the first swap.
    tokio::time::sleep(gap.max(Duration::from_millis(500))).await;
    let rss_before_kib = procfs::rss_kib(pid).unwrap_or(0);
    // Each version is dropped over the file the first was installed as.
    let file = first_module_name(baton);
    let mut swaps = Vec::with_capacity(settings.swaps);
    let mut progress = Vec::new();
    for index in 1..=settings.swaps {
        let next = index % 2;
        let version = VERSIONS[next];
        let before = status(baton).await.context("/status before a swap")?;
        let app = hello(&before).context("hello is not deployed")?;
        let old = app["versions"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["state"] == "active"))
            .context("hello has no active version")?;
        let old_id = old["id"].as_u64().context("version id")?;
        let old_copy = old["copy"].as_str().unwrap_or("").to_owned();

        let refused_before = refused_at(&before, &file).map(|(at, _)| at).max();
        baton.drop_module(&artifacts.hello[next], &file);
        let landed = Instant::now();
        let deadline = landed + Duration::from_secs(options.swap_timeout_secs);
        let mut record = SwapRecord {
            index,
            new_tag: u8::try_from(next + 1).unwrap_or(0),
            landed_us: micros(landed),
            window_end_us: 0,
            ok: false,
            error: None,
            host_switched_ms: None,
            host_retired_ms: None,
            old_copy_mapped: false,
        };
        let outcome = async {
            poll(
                baton,
                deadline,
                Some((file.as_str(), refused_before.unwrap_or(0))),
                "new version active",
                |app| {
                    let active = app["versions"]
                        .as_array()
                        .and_then(|v| v.iter().find(|v| v["state"] == "active"));
                    if let Some(failed) = app["versions"].as_array().and_then(|v| {
                        v.iter()
                            .find(|v| v["id"].as_u64() > Some(old_id) && v["state"] == "failed")
                    }) {
                        bail!("new version failed: {}", failed["error"]);
                    }
                    Ok(active
                        .filter(|a| a["version"] == version && a["id"] != old_id)
                        .map(|_| ()))
                },
            )
            .await?;
            poll(
                baton,
                deadline,
                Some((file.as_str(), refused_before.unwrap_or(0))),
                "old version retired",
                |app| {
                    // The host sets the state just before it records the retirement time.
                    let retired = entry(app, old_id).is_none_or(|v| v["state"] == "retired")
                        && app["last_swap"]["retired_ms"].is_u64();
                    Ok(retired.then(|| app["last_swap"].clone()))
                },
            )
            .await
        }
        .await;
        record.window_end_us = micros(Instant::now());
        match outcome {
            Ok(last_swap) => {
                record.ok = true;
                record.host_switched_ms = last_swap["switched_ms"].as_u64();
                record.host_retired_ms = last_swap["retired_ms"].as_u64();
                record.old_copy_mapped = !old_copy.is_empty()
                    && procfs::mapped_copies(pid, &baton.store_dir()).contains(&old_copy);
            }
            Err(e) => record.error = Some(format!("{e:#}")),
        }
        let failed = !record.ok;
        swaps.push(record);
        if index % 100 == 0 || index == settings.swaps || failed {
            let keys = status(baton)
                .await
                .ok()
                .and_then(|s| s["host"]["pthread_keys_in_use"].as_u64());
            let rss = procfs::rss_kib(pid).unwrap_or(0);
            eprintln!("swap {index}: rss {rss} KiB, pthread keys in use {keys:?}");
            progress.push((index, rss, keys));
        }
        if failed && !baton.alive() {
            eprintln!("the host exited during swap {index}");
            break;
        }
        tokio::time::sleep(gap).await;
    }
    let recorded = load.stop().await;
    Ok(SwapPhase {
        recorded,
        swaps,
        progress,
        rss_before_kib,
    })
}
