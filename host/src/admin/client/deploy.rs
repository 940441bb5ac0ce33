//! `baton deploy`: upload a module, then follow the new version through its steps from the
//! host's status, and the old version to its retirement.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;

use super::{Client, admin_error, app_path, out_error, wire_name};
use crate::admin::wire::{AppStatus, DeployOutcome, DeployQuery, Outcome, Status};
use crate::deploy::{GuardState, State};
use crate::error::{Error, Result};

/// The deploy steps `baton deploy` reports, in order.
const STEPS: [&str; 5] = ["loading", "warming", "active", "drained", "retired"];

struct Progress<'o> {
    out: &'o mut dyn Write,
    printed: usize,
}

impl Progress<'_> {
    /// Prints every step up to and including `step` not printed yet.
    fn reach(&mut self, step: usize, what: &str, detail: impl Fn(usize) -> String) -> Result<()> {
        while self.printed <= step {
            let name = STEPS[self.printed];
            writeln!(self.out, "{name:<8} {what}{}", detail(self.printed)).map_err(out_error)?;
            self.out.flush().map_err(out_error)?;
            self.printed += 1;
        }
        Ok(())
    }

    fn say(&mut self, line: std::fmt::Arguments<'_>) -> Result<()> {
        writeln!(self.out, "{line}").map_err(out_error)
    }
}

fn max_id(status: &Status) -> u64 {
    status
        .apps
        .iter()
        .flat_map(|a| &a.versions)
        .map(|v| v.id)
        .max()
        .unwrap_or(0)
}

/// The newest version deployed after `after`: (app, version, state).
fn newest_after(status: &Status, after: u64) -> Option<(&str, &str, State)> {
    status
        .apps
        .iter()
        .flat_map(|a| a.versions.iter().map(move |v| (a, v)))
        .filter(|(_, v)| v.id > after)
        .max_by_key(|(_, v)| v.id)
        .map(|(a, v)| (a.name.as_str(), v.version.as_str(), v.state))
}

fn ms(v: Option<u64>) -> String {
    v.map_or_else(String::new, |ms| format!(" ({ms} ms)"))
}

/// The name a file is uploaded under: the host takes letters, digits and `. _ - +` (and no
/// leading dot); anything else becomes `_`. It only names the host's copy: the app and the
/// version come from the module itself.
fn upload_name(file: &Path) -> String {
    const MAX_UPLOAD_NAME: usize = 128;
    let name = file.file_name().map_or_else(
        || "module.so".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    let name: String = name
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let allowed = c.is_ascii_alphanumeric() || "._-+".contains(c);
            if allowed && !(i == 0 && c == '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // All ASCII now; the end keeps the extension.
    name[name.len().saturating_sub(MAX_UPLOAD_NAME)..].to_owned()
}

/// A module file read for upload: what it is called, the name it is uploaded under and its
/// bytes (read once, however many hosts it goes to).
#[derive(Debug, Clone)]
pub(super) struct Module {
    shown: String,
    name: String,
    bytes: Bytes,
}

impl Module {
    /// Reads `file`.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be read.
    pub(super) fn read(file: &Path) -> Result<Module> {
        let bytes = std::fs::read(file)
            .map_err(|e| Error::io(format!("cannot read {}", file.display()), e))?;
        Ok(Module {
            shown: file.display().to_string(),
            name: upload_name(file),
            bytes: Bytes::from(bytes),
        })
    }

    /// The file as the operator named it.
    pub(super) fn shown(&self) -> &str {
        &self.shown
    }
}

/// How far `baton deploy` follows a deploy on a host.
#[derive(Debug, Clone, Copy)]
pub(super) struct Follow {
    /// Deploy as a canary taking this share of new requests.
    pub(super) canary: Option<u8>,
    /// Follow the old version through its drain, the guard window and its retirement.
    pub(super) wait: bool,
    /// How long to wait for the old version to retire.
    pub(super) timeout: Duration,
}

/// What one host made of an upload.
#[derive(Debug)]
pub(super) struct Attempt {
    /// The host's answer to the upload, when it gave one.
    pub(super) outcome: Option<DeployOutcome>,
    /// Whether the deploy went through, as far as it was followed.
    pub(super) result: Result<()>,
}

/// `baton deploy FILE`: uploads a module and follows it through loading, warming, active, the
/// old version drained, its guard window (if the app has one) and the old version retired.
/// With a canary, the new version takes that share of new requests beside the active one
/// instead of replacing it. Without `wait`, it returns once the new version is active.
///
/// # Errors
/// The deploy's failure reason (a refused module, a failed warm-up, a rollback during the guard
/// window), or the old version not retiring within the timeout.
pub(super) async fn deploy(
    client: &Client,
    file: &Path,
    follow: Follow,
    out: &mut dyn Write,
) -> Result<()> {
    let module = Module::read(file)?;
    upload(client, &module, follow, out).await.result
}

/// Uploads `module` to the host of `client` and follows its deploy as [`deploy`] does.
pub(super) async fn upload(
    client: &Client,
    module: &Module,
    follow: Follow,
    out: &mut dyn Write,
) -> Attempt {
    let mut outcome = None;
    let result = upload_and_follow(client, module, follow, out, &mut outcome).await;
    Attempt { outcome, result }
}

/// [`upload`], keeping the host's answer in `answer` as soon as it comes.
async fn upload_and_follow(
    client: &Client,
    module: &Module,
    follow: Follow,
    out: &mut dyn Write,
    answer: &mut Option<DeployOutcome>,
) -> Result<()> {
    let Follow {
        canary,
        wait,
        timeout,
    } = follow;
    writeln!(
        out,
        "uploading {} ({} bytes)",
        module.shown,
        module.bytes.len()
    )
    .map_err(out_error)?;
    let before = max_id(&client.get("/status").await?);
    let query = DeployQuery {
        name: Some(module.name.clone()),
        canary,
    };
    let path = format!("/apps?{}", query.encode());
    let upload = client.call::<DeployOutcome>(Method::POST, &path, module.bytes.clone());
    tokio::pin!(upload);
    let mut progress = Progress { out, printed: 0 };
    // Follow the new version while the upload's deploy runs.
    let outcome = loop {
        tokio::select! {
            outcome = &mut upload => break outcome,
            followed = follow_new(client, before, canary.is_some(), &mut progress) => followed?,
        }
    };
    let outcome = match outcome {
        Ok(outcome) => answer.insert(outcome),
        Err(e) => {
            progress.say(format_args!("failed   {e}"))?;
            return Err(admin_error(format!("deploy failed: {e}")));
        }
    };
    let (app, version) = (outcome.app.as_str(), outcome.version.as_str());
    let what = format!("{app} {version}");
    match outcome.outcome {
        Outcome::Unchanged => {
            return progress.say(format_args!(
                "{what} is already live with the same bytes: nothing to do"
            ));
        }
        Outcome::Canary => {
            progress.reach(1, &what, |_| String::new())?;
            return progress.say(format_args!(
                "canary   {what} takes {}% of new requests (promote with `baton promote {app}`, \
                 abort with `baton abort {app}`)",
                outcome.percent.unwrap_or(0)
            ));
        }
        Outcome::Deployed => {}
    }
    let swap = outcome.last_swap.as_ref();
    let replaced = outcome.replaced.as_deref();
    progress.reach(2, &what, |step| match step {
        0 => ms(swap.map(|s| s.loaded_ms)),
        1 => ms(swap.map(|s| s.warmed_ms)),
        _ => match replaced {
            Some(old) => format!(" (replaced {old}){}", ms(swap.map(|s| s.switched_ms))),
            None => ms(swap.map(|s| s.switched_ms)),
        },
    })?;
    let Some(old) = replaced else { return Ok(()) };
    if !wait {
        return progress.say(format_args!(
            "not waiting for {app} {old} to drain and retire (or for the guard window); follow \
             with `baton status`"
        ));
    }
    follow_old(client, outcome, old, timeout, &mut progress).await
}

/// One look at the status while the upload's deploy runs: prints the steps the new version has
/// reached, then waits a moment.
async fn follow_new(
    client: &Client,
    before: u64,
    canary: bool,
    progress: &mut Progress<'_>,
) -> Result<()> {
    if let Ok(status) = client.get::<Status>("/status").await
        && let Some((app, version, state)) = newest_after(&status, before)
    {
        // The `active` line waits for the upload's answer, which says what it replaced.
        let step = match state {
            State::Warming => Some(1),
            State::Active if !canary => Some(1),
            State::Loading | State::Active => Some(0),
            _ => None,
        };
        if let Some(step) = step {
            progress.reach(step, &format!("{app} {version}"), |_| String::new())?;
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}

/// Follows the replaced version `old` through its drain, the guard window and its retirement.
async fn follow_old(
    client: &Client,
    outcome: &DeployOutcome,
    old: &str,
    timeout: Duration,
    progress: &mut Progress<'_>,
) -> Result<()> {
    let app = outcome.app.as_str();
    let what = format!("{app} {}", outcome.version);
    let old_what = format!("{app} {old}");
    let new_id = outcome.id;
    let deadline = Instant::now() + timeout;
    let mut told_draining = false;
    let mut told_guard = false;
    loop {
        let app_status: AppStatus = client.get(&app_path(app, "")).await?;
        let Some(old_version) = app_status
            .versions
            .iter()
            .filter(|v| v.version == old && v.id < new_id)
            .max_by_key(|v| v.id)
        else {
            return Err(admin_error(format!("{app} {old} vanished from the status")));
        };
        let swap = app_status.last_swap.as_ref().filter(|s| s.to_id == new_id);
        if let Some(back) = swap.and_then(|s| s.rolled_back.as_ref()) {
            progress.say(format_args!(
                "rolled back {what} -> {old} after {} ms ({}): {}",
                back.after_switch_ms,
                wire_name(&back.cause),
                back.reason,
            ))?;
            return Err(admin_error(format!(
                "{what} was rolled back to {old}: {}",
                back.reason
            )));
        }
        if let Some(drained) = swap.and_then(|s| s.drained_ms) {
            progress.reach(3, &old_what, |_| ms(Some(drained)))?;
        }
        let guard = swap.and_then(|s| s.guard.as_ref());
        if let Some(guard) = guard
            && !told_guard
            && guard.state == GuardState::Watching
        {
            progress.say(format_args!(
                "guarding {what}: {old} stays loaded as the fallback for {} s; a clear rise in \
                 5xx or latency switches back (`--no-wait` returns at once)",
                guard.window_ms / 1000
            ))?;
            told_guard = true;
        }
        match old_version.state {
            State::Retired => {
                let swap = app_status.last_swap.as_ref();
                progress.reach(4, &old_what, |step| {
                    ms(swap.and_then(|s| {
                        if step == 3 {
                            s.drained_ms
                        } else {
                            s.retired_ms
                        }
                    }))
                })?;
                if let Some(e) = &old_version.error {
                    progress.say(format_args!("warning  {e}"))?;
                }
                if let Some(guard) = guard
                    && guard.state == GuardState::Passed
                {
                    progress.say(format_args!(
                        "passed   {what}: guard window over, {} requests, {:.1}% 5xx",
                        guard.new.requests,
                        guard.new.error_ratio * 100.0
                    ))?;
                }
                return Ok(());
            }
            State::Draining if !told_draining && old_version.in_flight > 0 => {
                progress.say(format_args!(
                    "draining {app} {old}: {} request(s) still running",
                    old_version.in_flight
                ))?;
                told_draining = true;
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(admin_error(format!(
                "{app} {old} did not retire within {} s (see `baton status`)",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_names_keep_what_the_host_takes() {
        let name = |file: &str| upload_name(Path::new(file));
        assert_eq!(name("/tmp/libhello.so"), "libhello.so");
        assert_eq!(name("dir/hello+1.so"), "hello+1.so");
        assert_eq!(name("hello 1.so"), "hello_1.so");
        assert_eq!(name(".hidden.so"), "_hidden.so");
        assert_eq!(name("ünï.so"), "_n_.so");
        assert_eq!(name(&format!("{}.so", "a".repeat(200))).len(), 128);
    }
}
