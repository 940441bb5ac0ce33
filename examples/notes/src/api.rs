//! The JSON side: the notes API under `/api`, uploads, `whoami`. Errors answer as JSON
//! (`{"error": "..."}`) with their status, which is what a script or the page's JS expects.

use std::fs::File;
use std::io::Write;

use baton_sdk::{Error, IntoResponse, Json, Request, Response, Router, StatusCode};
use serde_json::json;

use crate::Notes;
use crate::auth::{self, User};
use crate::note::{NewNote, Note};

/// Notes listed when `?limit` is not given.
const DEFAULT_LIMIT: u32 = 100;
/// Most notes one listing returns.
const MAX_LIMIT: u32 = 1000;

/// An error that answers as JSON: `{"error": "..."}` with its status. A server error shows
/// only its status to the client; its message goes to the host's log.
#[derive(Debug)]
pub(crate) struct ApiError(pub(crate) Error);

impl<E: Into<Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        if status.is_server_error() {
            let reason = status.canonical_reason().unwrap_or("server error");
            let response = Response::json(&json!({ "error": reason.to_lowercase() }))
                .with_status(status)
                .with_error(self.0.message());
            if status == StatusCode::SERVICE_UNAVAILABLE {
                return response.with_header("retry-after", "1");
            }
            return response;
        }
        Response::json(&json!({ "error": self.0.message() })).with_status(status)
    }
}

/// The routes under `/api`: listing is public, posting needs a login and the CSRF header
/// (the [`auth::require_login`] layer, on the POST route only).
pub(crate) fn router() -> Router<Notes> {
    Router::new()
        .post("/notes", create)
        .route_layer(auth::require_login)
        .get("/notes", list)
}

/// `GET /api/notes?limit=N`: the newest notes first.
fn list(app: &Notes, req: &Request) -> Result<Json<Vec<Note>>, ApiError> {
    let limit = match req.query_param("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                Error::bad_request(format!("?limit=N expects a number from 1 to {MAX_LIMIT}"))
            })?,
    };
    Ok(Json(app.db.list(limit)?))
}

/// `POST /api/notes` with `{"text": "...", "tags": [...]}`: 201 and the note.
fn create(app: &Notes, req: &Request) -> Result<Response, ApiError> {
    let User(author) = req
        .extension::<User>()
        .ok_or_else(|| Error::internal("the login layer did not run"))?;
    let new: NewNote = req.json()?;
    let note = app.post(&author, &new.text, new.tags)?;
    let location = format!("{}/api/notes/{}", req.mount(), note.id);
    Ok(Response::json(&note)
        .with_status(StatusCode::CREATED)
        .with_header("location", location))
}

/// The routes that need a login and the CSRF header outside `/api`: uploads.
pub(crate) fn uploads() -> Router<Notes> {
    Router::new()
        .post("/upload", upload)
        .route_layer(auth::require_login)
}

/// `POST /upload`: the body goes to `uploads/<random>.bin` under the data directory as it
/// arrives, never whole in memory; answers `{"bytes": N, "file": "<name>"}`. A body over the
/// app's `max_body_bytes` is a 413 and leaves no file.
fn upload(app: &Notes, req: &Request) -> Result<Response, ApiError> {
    let dir = app.data_dir.join("uploads");
    std::fs::create_dir_all(&dir)?;
    let name = format!("{}.bin", auth::random_hex(16)?);
    let partial = dir.join(format!(".{name}.part"));
    let copied = File::create(&partial).and_then(|mut file| {
        let n = std::io::copy(&mut req.body_reader(), &mut file)?;
        file.flush()?;
        std::fs::rename(&partial, dir.join(&name))?;
        Ok(n)
    });
    let bytes = match copied {
        Ok(n) => n,
        Err(e) => {
            // Best effort: the error that stopped the upload is what the client must see.
            let _ = std::fs::remove_file(&partial);
            return Err(e.into());
        }
    };
    Ok(Response::json(&json!({ "bytes": bytes, "file": name })).with_status(StatusCode::CREATED))
}

/// `GET /whoami`: the client's address, the TCP peer, the scheme and the logged-in user.
pub(crate) fn whoami(_: &Notes, req: &Request) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(json!({
        "client": req.client_addr().map(|a| a.to_string()),
        "peer": req.peer_addr().map(|a| a.to_string()),
        "scheme": req.scheme(),
        "user": auth::user(req)?,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_answer_as_json_and_hide_server_details() {
        let r = ApiError(Error::bad_request("no text")).into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.body(), br#"{"error":"no text"}"#);
        let r = ApiError(Error::internal("password=hunter2")).into_response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!String::from_utf8_lossy(r.body()).contains("hunter2"));
    }
}
