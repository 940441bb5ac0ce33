//! The quarantine in the admin API and on the command line: list the versions that crashed the
//! serving process, and clear one so its module can be deployed again.

use std::io::Write;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::api::{error, from_error, json};
use super::client::{Client, out_error, text};
use crate::deploy::Registry;
use crate::error::Result;
use crate::server::Body;

/// The body of `POST /quarantine/clear`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearRequest {
    /// App name.
    pub app: String,
    /// The quarantined version.
    pub version: String,
}

/// `GET /quarantine`.
pub(super) fn list(registry: &Registry) -> Response<Body> {
    json(
        StatusCode::OK,
        &serde_json::json!({ "quarantine": registry.quarantine() }),
    )
}

/// `POST /quarantine/clear` with a [`ClearRequest`].
pub(super) fn clear(registry: &Registry, body: &[u8]) -> Response<Body> {
    let request: ClearRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected JSON {{\"app\": \"hello\", \"version\": \"2.0.0\"}}: {e}"),
            );
        }
    };
    match registry.clear_quarantine(&request.app, &request.version) {
        Ok(cleared) => json(StatusCode::OK, &serde_json::json!({ "cleared": cleared })),
        Err(e) => from_error(&e),
    }
}

/// `baton quarantine list`: the quarantined versions, when and how they crashed the host (or
/// the raw JSON).
///
/// # Errors
/// As [`Client::call`].
pub async fn list_command(client: &Client, json: bool, out: &mut dyn Write) -> Result<()> {
    let answer = client
        .call(Method::GET, "/quarantine", Bytes::new())
        .await?;
    if json {
        return writeln!(out, "{answer:#}").map_err(out_error);
    }
    let entries = answer["quarantine"].as_array().cloned().unwrap_or_default();
    if entries.is_empty() {
        return writeln!(out, "no version is quarantined").map_err(out_error);
    }
    for q in &entries {
        let how = &q["how"];
        writeln!(
            out,
            "{}@{} (hash {}): crashed the serving process {} times, last by {} (blamed by {})",
            text(&q["app"]),
            text(&q["version"]),
            text(&q["hash"]),
            q["crashes"].as_u64().unwrap_or(0),
            text(&how["status"]),
            text(&how["rule"]),
        )
        .map_err(out_error)?;
        if let Some(clue) = how["clue"].as_str() {
            writeln!(out, "  {clue}").map_err(out_error)?;
        }
        writeln!(out, "  file {}", text(&q["source"])).map_err(out_error)?;
    }
    Ok(())
}

/// `baton quarantine clear APP VERSION`.
///
/// # Errors
/// As [`Client::call`]: 404 if the version is not quarantined.
pub async fn clear_command(
    client: &Client,
    app: &str,
    version: &str,
    out: &mut dyn Write,
) -> Result<()> {
    let body = serde_json::to_vec(&ClearRequest {
        app: app.to_owned(),
        version: version.to_owned(),
    })
    .unwrap_or_default();
    client
        .call(Method::POST, "/quarantine/clear", Bytes::from(body))
        .await?;
    writeln!(
        out,
        "{app}@{version}: quarantine cleared; deploy its file again (touch it, drop it, or `baton deploy`)"
    )
    .map_err(out_error)
}
