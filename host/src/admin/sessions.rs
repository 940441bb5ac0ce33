//! The admin API's session endpoints: list, count, describe and invalidate the host's sessions.
//!
//! Sessions belong to the host, not to one app (one cookie, `Path=/`), so `/apps/{app}/sessions`
//! answers for the same sessions as `/sessions`. Listings show only the first
//! [`SHOWN_ID_CHARS`] characters of each id: enough to name a session, not enough to use it as a
//! cookie, so admin output can be pasted into a ticket. A session is named by its full id or by
//! a prefix of at least [`MIN_PREFIX_CHARS`] characters that matches exactly one session.

use http::Response;

use super::reply::{ApiError, ok};
use super::wire::{Invalidated, Scope, SessionCount, SessionList, SessionShown, SessionsQuery};
use crate::server::Body;
use crate::session::{SessionInfo, Sessions};

/// Characters of an id a listing shows.
const SHOWN_ID_CHARS: usize = 12;
/// Shortest id prefix that names a session.
const MIN_PREFIX_CHARS: usize = 8;
/// Longest id prefix (a whole id's length).
const MAX_PREFIX_CHARS: usize = 48;

fn shown_id(id: &str) -> String {
    id.chars().take(SHOWN_ID_CHARS).collect()
}

fn shown(info: SessionInfo) -> SessionShown {
    SessionShown {
        id_prefix: shown_id(&info.id),
        created_unix_ms: info.created_ms,
        accessed_unix_ms: info.accessed_ms,
        timeout_ms: info.timeout_ms,
        expires_in_ms: info.expires_in_ms,
        attributes: info.attributes,
    }
}

fn is_hex(text: &str) -> bool {
    text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `GET /sessions?limit=N&prefix=HEX`.
pub(super) async fn list(sessions: &Sessions, query: &str) -> Result<Response<Body>, ApiError> {
    let query = SessionsQuery::decode(query)?;
    let prefix = query.prefix.as_deref().unwrap_or("");
    if prefix.len() > MAX_PREFIX_CHARS || !is_hex(prefix) {
        return Err(ApiError::BadPrefix(prefix.to_owned()));
    }
    let limit = query.limit();
    let page = sessions.list(prefix, limit).await?;
    Ok(ok(&SessionList {
        store: sessions.store().kind().to_owned(),
        scope: Scope::Host,
        limit,
        more: page.more,
        sessions: page.sessions.into_iter().map(shown).collect(),
    }))
}

/// `GET /sessions/count`.
pub(super) async fn count(sessions: &Sessions) -> Result<Response<Body>, ApiError> {
    let count = sessions.count().await?;
    Ok(ok(&SessionCount {
        store: sessions.store().kind().to_owned(),
        scope: Scope::Host,
        count,
    }))
}

/// The full id `given` names: itself, or the one session its prefix matches.
async fn resolve(sessions: &Sessions, given: &str) -> Result<String, ApiError> {
    if Sessions::is_session_id(given) {
        return Ok(given.to_owned());
    }
    if given.len() < MIN_PREFIX_CHARS || given.len() > MAX_PREFIX_CHARS || !is_hex(given) {
        return Err(ApiError::BadSessionId {
            given: given.to_owned(),
            min: MIN_PREFIX_CHARS,
        });
    }
    let page = sessions.list(given, 2).await?;
    match page.sessions.as_slice() {
        [one] if !page.more => Ok(one.id.clone()),
        [] => Err(ApiError::UnknownSession(given.to_owned())),
        _ => Err(ApiError::AmbiguousSession(given.to_owned())),
    }
}

/// `GET /sessions/{id}`.
pub(super) async fn show(sessions: &Sessions, given: &str) -> Result<Response<Body>, ApiError> {
    let id = resolve(sessions, given).await?;
    match sessions.info(&id).await? {
        Some(info) => Ok(ok(&shown(info))),
        None => Err(ApiError::UnknownSession(given.to_owned())),
    }
}

/// `DELETE /sessions/{id}`.
pub(super) async fn invalidate(
    sessions: &Sessions,
    given: &str,
) -> Result<Response<Body>, ApiError> {
    let id = resolve(sessions, given).await?;
    if !sessions.invalidate(&id).await? {
        return Err(ApiError::UnknownSession(given.to_owned()));
    }
    tracing::info!(session = %shown_id(&id), "session invalidated through the admin API");
    Ok(ok(&Invalidated {
        invalidated: shown_id(&id),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_show_a_prefix_of_the_id() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(shown_id(id), "0123456789ab");
    }
}
