//! `baton deploy FILE --admin A --admin B …`: a rolling deploy, one host at a time.
//!
//! Every host must answer before any of them changes. Then, host after host, the module is
//! uploaded and followed as the single-host `baton deploy` follows it (its lines prefixed with
//! the host), until the new version is active there, its guard window has passed and the old
//! version has retired; only then does the next host get it. A host that refuses the module,
//! fails its warm-up, rolls the version back in its guard window or cannot be reached stops the
//! deploy: the hosts already done are rolled back, newest first (and the failing host too, when
//! the new version is active there), the hosts not reached keep the old version untouched, and
//! the command fails with the reason. `--json` prints the outcome per host instead.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::deploy::{Follow, Module, upload};
use super::{Client, admin_error, app_path, out_error, wire_name};
use crate::admin::wire::{AppStatus, DeployOutcome, Outcome, Status};
use crate::deploy::State;
use crate::error::{Error, Result};

/// One host of a rolling deploy: the admin address as given, and its client.
#[derive(Debug)]
pub(super) struct Target {
    /// The admin address as the operator wrote it.
    pub(super) admin: String,
    /// Its admin API.
    pub(super) client: Client,
}

/// Where a host stands after a rolling deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum HostOutcome {
    /// Not reached: it keeps the version it had.
    NotDeployed,
    /// The new version is active and its guard window passed.
    Deployed,
    /// It already ran the same bytes: nothing changed.
    Unchanged,
    /// Its deploy failed there (refused, warm-up, guard rollback, unreachable); it keeps or is
    /// back on the version it had.
    Failed,
    /// It had the new version; it was rolled back to the one before.
    RolledBack,
    /// It had the new version and could not be rolled back.
    RollbackFailed,
}

/// One host's line of the `--json` report.
#[derive(Debug, Serialize)]
struct HostReport {
    admin: String,
    outcome: HostOutcome,
    /// The version the new one replaced there, if it got that far.
    replaced: Option<String>,
    /// Why its deploy or its rollback failed.
    error: Option<String>,
}

/// The `--json` report of a rolling deploy.
#[derive(Debug, Serialize)]
struct Report {
    /// `deployed` (every host) or `failed`.
    outcome: &'static str,
    app: Option<String>,
    version: Option<String>,
    /// Why it stopped.
    error: Option<String>,
    hosts: Vec<HostReport>,
}

/// Prefixes every line written through it with the host it is about.
struct Prefixed<'o> {
    out: &'o mut dyn Write,
    prefix: String,
    at_line_start: bool,
}

impl<'o> Prefixed<'o> {
    fn new(out: &'o mut dyn Write, admin: &str) -> Prefixed<'o> {
        Prefixed {
            out,
            prefix: format!("[{admin}] "),
            at_line_start: true,
        }
    }
}

impl Write for Prefixed<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for line in buf.split_inclusive(|&b| b == b'\n') {
            if self.at_line_start {
                self.out.write_all(self.prefix.as_bytes())?;
            }
            self.out.write_all(line)?;
            self.at_line_start = line.ends_with(b"\n");
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// A rolling deploy in progress: the report so far, and where the progress lines go.
struct Rollout<'t, 'o> {
    targets: &'t [Target],
    report: Report,
    progress: &'o mut dyn Write,
}

impl Rollout<'_, '_> {
    fn say(&mut self, line: std::fmt::Arguments<'_>) -> Result<()> {
        writeln!(self.progress, "{line}").map_err(out_error)?;
        self.progress.flush().map_err(out_error)
    }

    /// Ends the deploy at host `at` with `error`, after rolling back the hosts that have the
    /// new version; returns the error the command fails with.
    async fn stop(&mut self, at: usize, error: &Error, new_active_at: bool) -> Result<Error> {
        let admin = &self.targets[at].admin;
        let (n, total) = (at + 1, self.targets.len());
        self.report.hosts[at].error = Some(error.to_string());
        self.say(format_args!(
            "stopped  at {admin} ({n} of {total}): {error}"
        ))?;
        let mut undo: Vec<usize> = (0..at)
            .filter(|&i| self.report.hosts[i].outcome == HostOutcome::Deployed)
            .collect();
        if new_active_at {
            undo.push(at);
        }
        let mut rolled_back = Vec::new();
        let mut failed = Vec::new();
        for i in undo.into_iter().rev() {
            match self.roll_back(i).await? {
                Ok(()) => rolled_back.push(self.targets[i].admin.as_str()),
                Err(e) => failed.push(format!("{}: {e}", self.targets[i].admin)),
            }
        }
        let mut message = format!("rolling deploy stopped at {admin} ({n} of {total}): {error}");
        if !rolled_back.is_empty() {
            message.push_str(&format!("; rolled back {}", rolled_back.join(", ")));
        }
        if !failed.is_empty() {
            message.push_str(&format!("; could not roll back {}", failed.join("; ")));
        }
        self.report.error = Some(message.clone());
        Ok(admin_error(message))
    }

    /// Puts host `i` back on the version it had: a rollback, or an undeploy when the app is new
    /// there. The outer error is the output's; the inner one says why the host was not rolled
    /// back.
    async fn roll_back(&mut self, i: usize) -> Result<Result<()>> {
        let Target { admin, client } = &self.targets[i];
        let app = self.report.app.clone().unwrap_or_default();
        let host = &mut self.report.hosts[i];
        let mut out = Prefixed::new(&mut *self.progress, admin);
        let undone = match host.replaced {
            Some(_) => super::rollback(client, &app, &mut out).await,
            None => super::undeploy(client, &app, &mut out).await,
        };
        match undone {
            Ok(()) => host.outcome = HostOutcome::RolledBack,
            Err(e) => {
                writeln!(out, "failed   rolling back: {e}").map_err(out_error)?;
                host.outcome = HostOutcome::RollbackFailed;
                host.error = Some(e.to_string());
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }
}

/// Whether the version `outcome` deployed is the active one on `client`'s host now (a deploy
/// that failed after the switch, waiting for the old version to retire, leaves it so).
async fn still_active(client: &Client, outcome: &DeployOutcome) -> bool {
    client
        .get::<AppStatus>(&app_path(&outcome.app, ""))
        .await
        .is_ok_and(|app| {
            app.versions
                .iter()
                .any(|v| v.id == outcome.id && v.state == State::Active)
        })
}

/// `baton deploy FILE --admin A --admin B …`: deploys to one host at a time (see the module
/// docs); with `json`, prints the per-host report instead of the progress.
///
/// # Errors
/// Why the deploy stopped, and which hosts were rolled back; or the file cannot be read.
pub(super) async fn rolling(
    targets: &[Target],
    file: &Path,
    follow: Follow,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let module = Module::read(file)?;
    let mut quiet = std::io::sink();
    let progress: &mut dyn Write = if json { &mut quiet } else { &mut *out };
    let mut rollout = Rollout {
        targets,
        report: Report {
            outcome: "deployed",
            app: None,
            version: None,
            error: None,
            hosts: targets
                .iter()
                .map(|t| HostReport {
                    admin: t.admin.clone(),
                    outcome: HostOutcome::NotDeployed,
                    replaced: None,
                    error: None,
                })
                .collect(),
        },
        progress,
    };
    let result = roll_out(&mut rollout, &module, follow).await;
    if json {
        if result.is_err() {
            rollout.report.outcome = "failed";
        }
        let text = serde_json::to_string_pretty(&rollout.report).unwrap_or_default();
        writeln!(out, "{text}").map_err(out_error)?;
    }
    result
}

async fn roll_out(rollout: &mut Rollout<'_, '_>, module: &Module, follow: Follow) -> Result<()> {
    let targets = rollout.targets;
    let total = targets.len();
    for (i, target) in targets.iter().enumerate() {
        if let Err(e) = target.client.get::<Status>("/status").await {
            rollout.report.hosts[i].outcome = HostOutcome::Failed;
            return Err(rollout.stop(i, &e, false).await?);
        }
    }
    rollout.say(format_args!(
        "rolling  {} to {total} hosts, one at a time",
        module.shown()
    ))?;
    for (i, target) in targets.iter().enumerate() {
        rollout.say(format_args!(
            "host     {} ({} of {total})",
            target.admin,
            i + 1
        ))?;
        let mut out = Prefixed::new(&mut *rollout.progress, &target.admin);
        let attempt = upload(&target.client, module, follow, &mut out).await;
        if let Some(outcome) = &attempt.outcome {
            let report = &mut rollout.report;
            report.app.get_or_insert_with(|| outcome.app.clone());
            report
                .version
                .get_or_insert_with(|| outcome.version.clone());
            report.hosts[i].replaced.clone_from(&outcome.replaced);
        }
        let host = &mut rollout.report.hosts[i];
        match attempt.result {
            Ok(()) => {
                let unchanged = attempt
                    .outcome
                    .is_some_and(|o| o.outcome == Outcome::Unchanged);
                host.outcome = if unchanged {
                    HostOutcome::Unchanged
                } else {
                    HostOutcome::Deployed
                };
            }
            Err(e) => {
                host.outcome = HostOutcome::Failed;
                let active = match &attempt.outcome {
                    Some(o) if o.outcome == Outcome::Deployed => {
                        still_active(&target.client, o).await
                    }
                    _ => false,
                };
                if active {
                    host.outcome = HostOutcome::Deployed;
                }
                return Err(rollout.stop(i, &e, active).await?);
            }
        }
    }
    let what = match (&rollout.report.app, &rollout.report.version) {
        (Some(app), Some(version)) => format!("{app} {version}"),
        _ => module.shown().to_owned(),
    };
    rollout.say(format_args!(
        "done     {what} on all {total} hosts ({})",
        rollout
            .report
            .hosts
            .iter()
            .map(|h| wire_name(&h.outcome))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_carries_its_host_however_it_is_written() {
        let mut out = Vec::new();
        {
            let mut prefixed = Prefixed::new(&mut out, "10.0.0.1:9090");
            write!(prefixed, "loading  hello").unwrap();
            writeln!(prefixed, " 2.0.0").unwrap();
            prefixed.write_all(b"active\nretired\n").unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[10.0.0.1:9090] loading  hello 2.0.0\n[10.0.0.1:9090] active\n\
             [10.0.0.1:9090] retired\n"
        );
    }
}
