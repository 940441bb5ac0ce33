//! `baton sessions …`: list, count and invalidate the host's sessions.

use std::io::Write;

use bytes::Bytes;
use http::Method;

use super::{Client, out_error};
use crate::admin::wire::{Invalidated, SessionCount, SessionList, SessionsQuery, encode_segment};
use crate::error::Result;

/// A duration in seconds as an operator reads it: `42s`, `7m 03s`, `2h 05m`.
fn human_ms(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
    }
}

fn list_path(query: &SessionsQuery) -> String {
    match query.encode() {
        q if q.is_empty() => "/sessions".to_owned(),
        q => format!("/sessions?{q}"),
    }
}

/// `baton sessions list --json`: the API's answer as it came.
///
/// # Errors
/// As [`Client::send`].
pub(super) async fn list_json(
    client: &Client,
    query: &SessionsQuery,
    out: &mut dyn Write,
) -> Result<()> {
    client.print(&list_path(query), true, out).await
}

/// `baton sessions list`: the host's sessions, most recently used first, up to the query's
/// `limit`, only those whose id starts with its `prefix` when given.
///
/// # Errors
/// As [`Client::call`].
pub(super) async fn list(
    client: &Client,
    query: &SessionsQuery,
    out: &mut dyn Write,
) -> Result<()> {
    let page: SessionList = client.get_unbounded(&list_path(query)).await?;
    if page.sessions.is_empty() {
        return writeln!(out, "no sessions ({} store)", page.store).map_err(out_error);
    }
    let now = crate::clock::now_unix_ms();
    writeln!(
        out,
        "{:<14} {:>9} {:>9} {:>10}  attributes",
        "id", "age", "idle", "expires in"
    )
    .map_err(out_error)?;
    for s in &page.sessions {
        writeln!(
            out,
            "{:<14} {:>9} {:>9} {:>10}  {}",
            format!("{}…", s.id_prefix),
            human_ms(now.saturating_sub(s.created_unix_ms)),
            human_ms(now.saturating_sub(s.accessed_unix_ms)),
            human_ms(s.expires_in_ms),
            s.attributes.join(", "),
        )
        .map_err(out_error)?;
    }
    if page.more {
        writeln!(
            out,
            "… more sessions than the {} listed (raise --limit or narrow with --prefix)",
            page.sessions.len()
        )
        .map_err(out_error)?;
    }
    Ok(())
}

/// `baton sessions count`: how many live sessions the host's store holds.
///
/// # Errors
/// As [`Client::call`].
pub(super) async fn count(client: &Client, out: &mut dyn Write) -> Result<()> {
    let answer: SessionCount = client.get_unbounded("/sessions/count").await?;
    writeln!(out, "{} sessions ({} store)", answer.count, answer.store).map_err(out_error)
}

/// `baton sessions invalidate ID`: deletes a session, named by its id or a unique prefix of
/// it; its client starts a fresh one.
///
/// # Errors
/// As [`Client::call`]: 404 for an unknown session, 409 for an ambiguous prefix.
pub(super) async fn invalidate(client: &Client, id: &str, out: &mut dyn Write) -> Result<()> {
    let path = format!("/sessions/{}", encode_segment(id));
    let answer: Invalidated = client.call(Method::DELETE, &path, Bytes::new()).await?;
    writeln!(out, "invalidated session {}…", answer.invalidated).map_err(out_error)
}
