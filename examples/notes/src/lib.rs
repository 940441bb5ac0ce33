//! `notes`: a small real web app, the kind a servlet developer ports. A public board of notes
//! with form login (`auth`: session id rotated at login, CSRF tokens on every form and API
//! post), an HTML page with embedded CSS and JS (`pages`), a JSON API whose write routes sit
//! behind a login layer (`api`), live updates as server-sent events and a streamed CSV export
//! (`live`), streamed uploads to disk, and storage in SQLite or PostgreSQL (`db`).
//!
//! The version number decides the schema: a `1.x` build uses `notes(id, author, text,
//! created)`; a `2.x` build (`BATON_APP_VERSION=2.0.0`) adds a `tags` column while it warms up,
//! and both work on the same database at once while one replaces the other.
//!
//! Config (`[apps.notes.config]`), all optional:
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `data_dir` | `"./data/notes"` | SQLite file (`notes.db`) and `uploads/`, relative to the host's working directory |
//! | `database` | none (SQLite) | `postgres://user:password@host:port/db` to keep notes in PostgreSQL |
//! | `users` | `{ demo = "demo" }` | who may log in, name to password |
//! | `pool_size` | `4` | idle database connections kept per version |
//! | `poll_ms` | `300` | how often an event stream looks for notes posted elsewhere |
//! | `keepalive_secs` | `15` | idle time after which an event stream sends a comment |
//! | `max_streams` | `8` | event streams open at once per version (each holds a worker thread); past it a 503 |

mod api;
mod auth;
mod db;
mod live;
mod note;
mod pages;
mod pool;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use baton_sdk::{App, Assets, Error, InitContext, Request, Result, Router};
use serde::Deserialize;

use crate::auth::Users;
use crate::db::{Db, LATEST_SCHEMA, Location};
use crate::live::{Streams, Wake};
use crate::note::{Note, Tags};

/// The app's config table.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    data_dir: Option<PathBuf>,
    database: Option<String>,
    users: BTreeMap<String, String>,
    pool_size: Option<usize>,
    poll_ms: Option<u64>,
    keepalive_secs: Option<u64>,
    max_streams: Option<usize>,
}

/// One loaded version of the app.
#[derive(Debug)]
pub(crate) struct Notes {
    pub(crate) db: Arc<Db>,
    pub(crate) users: Users,
    pub(crate) data_dir: PathBuf,
    /// `notes@1.0.0`: what the page and the event streams say is serving.
    pub(crate) version: String,
    pub(crate) wake: Arc<Wake>,
    pub(crate) poll: Duration,
    pub(crate) keepalive: Duration,
    pub(crate) streams: Arc<Streams>,
}

/// The schema a version uses: its major version, up to the newest known.
fn schema_of(version: &str) -> u32 {
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(1);
    major.clamp(1, LATEST_SCHEMA)
}

impl App for Notes {
    fn init(ctx: &InitContext) -> Result<Self> {
        let config: Config = ctx.config()?;
        let data_dir = config
            .data_dir
            .unwrap_or_else(|| PathBuf::from("./data/notes"));
        let location = match config.database.as_deref() {
            None | Some("") => Location::Sqlite(data_dir.join("notes.db")),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Location::Postgres(url.to_owned())
            }
            Some(_) => {
                return Err(Error::internal(
                    "config key `database` must be a postgres:// URL (leave it out for SQLite)",
                ));
            }
        };
        let schema = schema_of(ctx.app_version());
        let db = Db::open(&location, schema, config.pool_size.unwrap_or(4))?;
        Ok(Notes {
            db: Arc::new(db),
            users: Users::new(config.users),
            data_dir,
            version: format!("{}@{}", ctx.app_name(), ctx.app_version()),
            wake: Arc::default(),
            poll: Duration::from_millis(config.poll_ms.unwrap_or(300).clamp(20, 10_000)),
            keepalive: Duration::from_secs(config.keepalive_secs.unwrap_or(15).clamp(1, 3600)),
            streams: Arc::new(Streams::new(config.max_streams.unwrap_or(8))),
        })
    }

    /// Brings the schema up to this version's (expand only: older versions keep working).
    fn warmup(&self) -> Result<()> {
        self.db.migrate()?;
        Ok(())
    }

    fn router() -> Router<Self> {
        Router::new()
            .get("/", pages::page)
            .post("/", pages::post_note)
            .post("/login", pages::login)
            .post("/logout", pages::logout)
            .get("/events", live::events)
            .get("/export", live::export)
            .get("/whoami", api::whoami)
            .get("/healthz", Self::healthz)
            .nest("/api", api::router())
            .merge(api::uploads())
    }

    fn assets() -> Assets {
        Assets::new().dir(
            "/static",
            baton_sdk::embed_dir!("$CARGO_MANIFEST_DIR/static"),
        )
    }

    fn shutdown(&self) {
        self.db.close();
    }
}

impl Notes {
    /// `GET /healthz`: `ok` when the database answers.
    fn healthz(&self, _: &Request) -> Result<&'static str> {
        self.db
            .latest_id()
            .map_err(|e| Error::unavailable(e.to_string(), 1))?;
        Ok("ok")
    }

    /// Checks and stores a note by `author`, and wakes this version's event streams. Tags are
    /// kept from schema 2 on, and ignored before.
    pub(crate) fn post(&self, author: &str, text: &str, tags: Option<Tags>) -> Result<Note> {
        let text = note::valid_text(text)?;
        let tags = if self.db.schema() >= 2 {
            note::valid_tags(tags)?
        } else {
            Vec::new()
        };
        let note = self.db.insert(author, text, &tags)?;
        self.wake.notify();
        Ok(note)
    }
}

baton_sdk::export!(Notes);

#[cfg(test)]
mod tests {
    use baton_sdk::{Request, StatusCode, TestSession};
    use serde_json::json;

    use super::*;

    fn app(dir: &std::path::Path, version: &'static str) -> (Notes, Router<Notes>) {
        let ctx = InitContext::for_test(
            "notes",
            version,
            json!({ "data_dir": dir, "users": { "ada": "pw" } }),
        );
        let app = Notes::init(&ctx).unwrap();
        app.warmup().unwrap();
        (app, Notes::router())
    }

    #[test]
    fn the_version_picks_the_schema() {
        assert_eq!(schema_of("1.0.0"), 1);
        assert_eq!(schema_of("1.9.3-rc1"), 1);
        assert_eq!(schema_of("2.0.0"), 2);
        assert_eq!(schema_of("7.0.0"), LATEST_SCHEMA);
        assert_eq!(schema_of("x"), 1);
    }

    #[test]
    fn a_bad_database_setting_fails_init() {
        let ctx = InitContext::for_test("notes", "1.0.0", json!({ "database": "mysql://x" }));
        assert!(Notes::init(&ctx).is_err());
        let ctx = InitContext::for_test("notes", "1.0.0", json!({ "colour": "red" }));
        assert!(Notes::init(&ctx).is_err(), "unknown keys are refused");
    }

    #[test]
    fn posting_through_the_api_needs_a_login_and_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let (app, router) = app(dir.path(), "2.0.0");
        let session = TestSession::new();
        let post = |headers: &[(String, String)]| {
            let req = Request::builder("POST", "/api/notes")
                .headers(headers)
                .body(br#"{"text": " hi ", "tags": ["a"]}"#)
                .session(&session)
                .build();
            router.dispatch(&app, req)
        };
        assert_eq!(post(&[]).status(), StatusCode::UNAUTHORIZED);

        let req = Request::builder("GET", "/").session(&session).build();
        let token = auth::csrf_token(&req).unwrap();
        auth::log_in(&req, "ada").unwrap();
        assert_eq!(post(&[]).status(), StatusCode::FORBIDDEN);
        let token_after = auth::csrf_token(&req).unwrap();
        assert_ne!(token, token_after);
        let r = post(&[("x-csrf-token".into(), token_after)]);
        assert_eq!(r.status(), StatusCode::CREATED);
        let note: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(note["text"], "hi");
        assert_eq!(note["author"], "ada");
        assert_eq!(note["tags"], json!(["a"]));

        let r = router.dispatch(&app, Request::builder("GET", "/api/notes").build());
        assert_eq!(r.status(), StatusCode::OK);
        let list: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(list[0]["id"], note["id"]);
        let r = router.dispatch(
            &app,
            Request::builder("GET", "/api/notes")
                .query("limit=0")
                .build(),
        );
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn the_export_quotes_fields() {
        let dir = tempfile::tempdir().unwrap();
        let (app, router) = app(dir.path(), "1.0.0");
        app.post("ada", "a \"quoted\", text", None).unwrap();
        let r = router.dispatch(&app, Request::builder("GET", "/export").build());
        assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
        let body = String::from_utf8(r.into_bytes().unwrap()).unwrap();
        assert!(body.starts_with("id,author,created,text\n"), "{body}");
        assert!(body.contains(r#","a ""quoted"", text""#), "{body}");
    }
}
