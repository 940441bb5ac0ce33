//! `baton quarantine …`: list the versions that crashed the serving process, and clear one so
//! its module can be deployed again.

use std::io::Write;

use http::Method;

use super::{Client, body, out_error};
use crate::admin::wire::{ClearRequest, Cleared, QuarantineList};
use crate::error::Result;

/// `baton quarantine list`: the quarantined versions, when and how they crashed the host (or
/// the raw JSON).
///
/// # Errors
/// As [`Client::call`].
pub(super) async fn list(client: &Client, json: bool, out: &mut dyn Write) -> Result<()> {
    if json {
        return client.print("/quarantine", false, out).await;
    }
    let answer: QuarantineList = client.get("/quarantine").await?;
    if answer.quarantine.is_empty() {
        return writeln!(out, "no version is quarantined").map_err(out_error);
    }
    for q in &answer.quarantine {
        writeln!(
            out,
            "{}@{} (hash {}): crashed the serving process {} times, last by {} (blamed by {})",
            q.app, q.version, q.hash, q.crashes, q.how.status, q.how.rule,
        )
        .map_err(out_error)?;
        if let Some(clue) = &q.how.clue {
            writeln!(out, "  {clue}").map_err(out_error)?;
        }
        writeln!(out, "  file {}", q.source.display()).map_err(out_error)?;
    }
    Ok(())
}

/// `baton quarantine clear APP VERSION`.
///
/// # Errors
/// As [`Client::call`]: 404 if the version is not quarantined.
pub(super) async fn clear(
    client: &Client,
    app: &str,
    version: &str,
    out: &mut dyn Write,
) -> Result<()> {
    let request = ClearRequest {
        app: app.to_owned(),
        version: version.to_owned(),
    };
    let _: Cleared = client
        .call(Method::POST, "/quarantine/clear", body(&request))
        .await?;
    writeln!(
        out,
        "{app}@{version}: quarantine cleared; deploy its file again (touch it, drop it, or `baton deploy`)"
    )
    .map_err(out_error)
}
