//! The admin API's session endpoints: list, count, describe and invalidate the host's sessions.
//!
//! Sessions belong to the host, not to one app (one cookie, `Path=/`), so `/apps/{app}/sessions`
//! answers for the same sessions as `/sessions`. Listings show only the first
//! [`SHOWN_ID_CHARS`] characters of each id: enough to name a session, not enough to use it as a
//! cookie, so admin output can be pasted into a ticket. A session is named by its full id or by
//! a prefix of at least [`MIN_PREFIX_CHARS`] characters that matches exactly one session.

use http::{Response, StatusCode, header};
use serde::Serialize;

use super::api::{error, json, query_param};
use crate::server::Body;
use crate::session::{SessionInfo, Sessions, StoreError};

/// Characters of an id a listing shows.
const SHOWN_ID_CHARS: usize = 12;
/// Shortest id prefix that names a session.
const MIN_PREFIX_CHARS: usize = 8;
/// Sessions listed when no `limit` is given.
const DEFAULT_LIMIT: usize = 100;
/// Most sessions one listing returns.
const MAX_LIMIT: usize = 1000;

/// One session in the admin API's answers.
#[derive(Debug, Serialize)]
struct Shown {
    /// The first characters of its id.
    id_prefix: String,
    created_unix_ms: u64,
    accessed_unix_ms: u64,
    timeout_ms: u64,
    expires_in_ms: u64,
    attributes: Vec<String>,
}

fn shown_id(id: &str) -> String {
    id.chars().take(SHOWN_ID_CHARS).collect()
}

impl From<SessionInfo> for Shown {
    fn from(info: SessionInfo) -> Shown {
        Shown {
            id_prefix: shown_id(&info.id),
            created_unix_ms: info.created_ms,
            accessed_unix_ms: info.accessed_ms,
            timeout_ms: info.timeout_ms,
            expires_in_ms: info.expires_in_ms,
            attributes: info.attributes,
        }
    }
}

fn store_error(e: &StoreError) -> Response<Body> {
    match e {
        StoreError::Unsupported(_) => error(StatusCode::NOT_IMPLEMENTED, e),
        _ if e.is_outage() => {
            let mut response = error(StatusCode::SERVICE_UNAVAILABLE, e);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            response
        }
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn is_hex(text: &str) -> bool {
    text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn parse_limit(query: &str) -> Result<usize, String> {
    match query_param(query, "limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| format!("limit must be between 1 and {MAX_LIMIT}, not {text:?}")),
    }
}

/// `GET /sessions?limit=N&prefix=HEX`.
pub(super) async fn list(sessions: &Sessions, query: &str) -> Response<Body> {
    let limit = match parse_limit(query) {
        Ok(limit) => limit,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let prefix = query_param(query, "prefix").unwrap_or("");
    if prefix.len() > 48 || !is_hex(prefix) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("prefix must be lower-case hex digits of a session id, not {prefix:?}"),
        );
    }
    match sessions.list(prefix, limit).await {
        Ok(page) => json(
            StatusCode::OK,
            &serde_json::json!({
                "store": sessions.store().kind(),
                "scope": "host",
                "limit": limit,
                "more": page.more,
                "sessions": page.sessions.into_iter().map(Shown::from).collect::<Vec<_>>(),
            }),
        ),
        Err(e) => store_error(&e),
    }
}

/// `GET /sessions/count`.
pub(super) async fn count(sessions: &Sessions) -> Response<Body> {
    match sessions.count().await {
        Ok(count) => json(
            StatusCode::OK,
            &serde_json::json!({
                "store": sessions.store().kind(),
                "scope": "host",
                "count": count,
            }),
        ),
        Err(e) => store_error(&e),
    }
}

/// The full id `given` names: itself, or the one session its prefix matches.
async fn resolve(sessions: &Sessions, given: &str) -> Result<String, Response<Body>> {
    if Sessions::is_session_id(given) {
        return Ok(given.to_owned());
    }
    if given.len() < MIN_PREFIX_CHARS || given.len() > 48 || !is_hex(given) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "expected a session id or at least {MIN_PREFIX_CHARS} of its first \
                 lower-case hex digits, not {given:?}"
            ),
        ));
    }
    let page = sessions.list(given, 2).await.map_err(|e| store_error(&e))?;
    match page.sessions.as_slice() {
        [one] if !page.more => Ok(one.id.clone()),
        [] => Err(unknown(given)),
        _ => Err(error(
            StatusCode::CONFLICT,
            format!("{given} matches more than one session: give more of the id"),
        )),
    }
}

fn unknown(given: &str) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        format!("no session {given} (unknown, expired or invalidated)"),
    )
}

/// `GET /sessions/{id}`.
pub(super) async fn show(sessions: &Sessions, given: &str) -> Response<Body> {
    let id = match resolve(sessions, given).await {
        Ok(id) => id,
        Err(response) => return response,
    };
    match sessions.info(&id).await {
        Ok(Some(info)) => json(StatusCode::OK, &Shown::from(info)),
        Ok(None) => unknown(given),
        Err(e) => store_error(&e),
    }
}

/// `DELETE /sessions/{id}`.
pub(super) async fn invalidate(sessions: &Sessions, given: &str) -> Response<Body> {
    let id = match resolve(sessions, given).await {
        Ok(id) => id,
        Err(response) => return response,
    };
    match sessions.invalidate(&id).await {
        Ok(true) => {
            tracing::info!(session = %shown_id(&id), "session invalidated through the admin API");
            json(
                StatusCode::OK,
                &serde_json::json!({ "invalidated": shown_id(&id) }),
            )
        }
        Ok(false) => unknown(given),
        Err(e) => store_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_bounded() {
        assert_eq!(parse_limit(""), Ok(DEFAULT_LIMIT));
        assert_eq!(parse_limit("limit=5"), Ok(5));
        assert!(parse_limit("limit=0").is_err());
        assert!(parse_limit("limit=1001").is_err());
        assert!(parse_limit("limit=many").is_err());
    }

    #[test]
    fn listings_show_a_prefix_of_the_id() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(shown_id(id), "0123456789ab");
    }
}
