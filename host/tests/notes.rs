//! The `notes` example app through a real host, as a browser and a script use it: form login
//! with a rotated session id, CSRF tokens, the JSON API behind its login layer, the CSV
//! export, a streamed upload, live notes as server-sent events; against SQLite and a private
//! PostgreSQL database; and a swap from schema 1 to schema 2 under load.

mod support;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use support::http::Reply;
use support::load::{Load, assert_served};
use support::{GUARD_OFF, HostProc, eventually, module, status};

const COOKIE: &str = "BATON_SESSION";
const WAIT: Duration = Duration::from_secs(30);
const MIB: u64 = 1024 * 1024;
/// The size of the streamed upload.
const UPLOAD: u64 = 5 * MIB;
/// The PostgreSQL server the tests create their databases on (trust auth), unless
/// `BATON_TEST_POSTGRES` names another.
const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// `notes` built as `version`.
fn notes(version: &str) -> PathBuf {
    module("notes", &[("BATON_APP_VERSION", version)])
}

/// A host serving `modules` with the guard off, uploads up to 16 MiB, and `config` as the
/// app's config table (an inline TOML table).
fn start(modules: &[PathBuf], config: &str) -> HostProc {
    HostProc::start_with_config(
        modules,
        &format!(
            "{GUARD_OFF}[apps.notes]\nlimits = {{ max_body_bytes = 16777216 }}\nconfig = {config}\n"
        ),
    )
}

/// The file name the host's first module was copied to: dropping a module under it replaces
/// that version.
fn module_name(host: &HostProc) -> String {
    let file = host.module_file(0);
    file.file_name().unwrap().to_str().unwrap().to_owned()
}

/// Waits until `version` of `notes` is active.
async fn active(host: &HostProc, version: &str) {
    eventually(WAIT, &format!("notes@{version} active"), async || {
        let s = status(host).await;
        (support::app(&s, "notes")["active"] == version).then_some(())
    })
    .await;
}

/// The app config for a SQLite store in `dir`, with live updates polled every 100 ms.
fn sqlite_config(dir: &Path) -> String {
    format!(
        "{{ data_dir = {:?}, poll_ms = 100 }}",
        dir.to_str().unwrap()
    )
}

/// A browser tab on the app: the session cookie it was last given, each request on a new
/// HTTP/1.1 connection (so streamed bodies go both ways).
struct Browser {
    addr: std::net::SocketAddr,
    cookie: Mutex<Option<String>>,
}

impl Browser {
    fn new(host: &HostProc) -> Browser {
        Browser {
            addr: host.addr,
            cookie: Mutex::new(None),
        }
    }

    /// The session id in the jar.
    fn session_id(&self) -> Option<String> {
        self.cookie.lock().unwrap().clone()
    }

    /// Sends a request and returns the response with its body unread, keeping the cookie.
    async fn open(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: BoxBody<Bytes, Infallible>,
    ) -> http::Response<Incoming> {
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        if let Some(id) = self.session_id() {
            request = request.header("cookie", format!("{COOKIE}={id}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = send
            .send_request(request.body(body).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        for set in response.headers().get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let pair = set.split(';').next().unwrap_or_default();
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            if name.trim() == COOKIE {
                let expired = value.is_empty() || set.to_ascii_lowercase().contains("max-age=0");
                *self.cookie.lock().unwrap() = (!expired).then(|| value.trim().to_owned());
            }
        }
        response
    }

    /// Sends a request and reads the whole answer.
    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let body = Full::new(body.into()).boxed();
        let response = self.open(method, path, headers, body).await;
        tokio::time::timeout(WAIT, Reply::read(response))
            .await
            .unwrap_or_else(|_| panic!("{method} {path} answered within {WAIT:?}"))
            .unwrap()
    }

    async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, &[], Bytes::new()).await
    }

    /// Posts a form (`application/x-www-form-urlencoded`).
    async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let headers = [("content-type", "application/x-www-form-urlencoded")];
        self.send("POST", path, &headers, body).await
    }

    /// Posts JSON, with `X-CSRF-Token` when `token` is given.
    async fn post_json(&self, path: &str, token: Option<&str>, value: &Value) -> Reply {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(token) = token {
            headers.push(("x-csrf-token", token));
        }
        self.send("POST", path, &headers, value.to_string()).await
    }

    /// Loads the page and returns it with the CSRF token of its `<meta>` tag.
    async fn page(&self) -> (Reply, String) {
        let page = self.get("/notes/").await;
        assert_eq!(page.status, 200, "{}", page.body);
        let token = meta(&page.body, "csrf-token");
        (page, token)
    }

    /// Logs in through the page's form as `user`; returns the page's new CSRF token.
    async fn log_in(&self, user: &str, password: &str) -> String {
        let (_, token) = self.page().await;
        let r = self
            .post_form(
                "/notes/login",
                &[("user", user), ("password", password), ("csrf", &token)],
            )
            .await;
        assert_eq!((r.status, r.header("location")), (303, "/notes/"), "{r:?}");
        self.page().await.1
    }

    /// Opens the live event stream, from `last_event_id` if given.
    async fn events(&self, last_event_id: Option<i64>) -> Events {
        let id = last_event_id.map(|id| id.to_string());
        let mut headers = vec![("accept", "text/event-stream")];
        if let Some(id) = &id {
            headers.push(("last-event-id", id));
        }
        let response = self
            .open(
                "GET",
                "/notes/events",
                &headers,
                Full::new(Bytes::new()).boxed(),
            )
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let version = response.headers()["x-baton-version"]
            .to_str()
            .unwrap()
            .to_owned();
        let mut events = Events {
            body: response.into_body(),
            text: String::new(),
            version,
        };
        events.until("event: hello").await;
        events
    }
}

/// The `content` of `<meta name="NAME" content="...">` in a page.
fn meta(page: &str, name: &str) -> String {
    let start = format!(r#"<meta name="{name}" content=""#);
    let at = page
        .find(&start)
        .unwrap_or_else(|| panic!("no {name} meta tag in {page}"))
        + start.len();
    page[at..].split('"').next().unwrap().to_owned()
}

/// A server-sent event stream being read.
struct Events {
    body: Incoming,
    /// Everything received so far.
    text: String,
    /// The `x-baton-version` that answered.
    version: String,
}

impl Events {
    /// Reads until the text received contains `needle`; panics if the stream ends first or
    /// nothing arrives for a while.
    async fn until(&mut self, needle: &str) {
        while !self.text.contains(needle) {
            let frame = tokio::time::timeout(WAIT, self.body.frame())
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} within {WAIT:?}: {}", self.text));
            let frame = frame
                .unwrap_or_else(|| panic!("the stream ended before {needle:?}: {}", self.text))
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.text.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    /// Reads to the end of the stream; returns all it received.
    async fn rest(mut self) -> String {
        while let Some(frame) = tokio::time::timeout(WAIT, self.body.frame())
            .await
            .unwrap_or_else(|_| panic!("the stream did not end: {}", self.text))
        {
            if let Ok(data) = frame.expect("the stream ends cleanly").into_data() {
                self.text.push_str(&String::from_utf8_lossy(&data));
            }
        }
        self.text
    }

    /// The data of each `note` event received so far, as JSON.
    fn notes(&self) -> Vec<Value> {
        self.text
            .split("\n\n")
            .filter(|event| event.lines().any(|l| l == "event: note"))
            .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
            .map(|data| serde_json::from_str(data).unwrap())
            .collect()
    }
}

/// Everything a user and a script do with the app, on whatever store `host` uses; uploads
/// land in `data_dir`.
async fn api_flow(host: &HostProc, data_dir: &Path) {
    let alice = Browser::new(host);
    let anonymous = Browser::new(host);

    // The page, logged out: HTML with the login form, which carries a CSRF token.
    let (page, token) = alice.page().await;
    assert!(
        page.header("content-type").starts_with("text/html"),
        "{page:?}"
    );
    assert!(
        page.body.contains(r#"action="/notes/login""#),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains(&format!(r#"name="csrf" value="{token}""#))
    );
    assert!(
        page.body.contains("/notes/static/app.js?v="),
        "assets are versioned"
    );
    let before_login = alice.session_id();

    // Logging in needs the token and the right password, and rotates the session id.
    let wrong = alice
        .post_form(
            "/notes/login",
            &[("user", "demo"), ("password", "nope"), ("csrf", &token)],
        )
        .await;
    assert_eq!(wrong.header("location"), "/notes/?login=failed");
    let forged = alice
        .post_form("/notes/login", &[("user", "demo"), ("password", "demo")])
        .await;
    assert_eq!(forged.status, 403, "a login without the token is refused");
    let token = alice.log_in("demo", "demo").await;
    let after_login = alice.session_id().expect("a session after login");
    assert_ne!(
        before_login.as_deref(),
        Some(after_login.as_str()),
        "the id rotates"
    );
    assert!(
        alice
            .page()
            .await
            .0
            .body
            .contains("Signed in as <b>demo</b>")
    );

    // Live notes: a stream opened now sends only what is posted from now on.
    let mut live = anonymous.events(None).await;

    // The JSON API: posting needs a login (401) and the CSRF header (403).
    let text = "He said \"hi\", then left\nsecond line";
    let note = json!({ "text": text });
    anonymous
        .post_json("/notes/api/notes", Some(&token), &note)
        .await
        .assert_error(401, "log in");
    alice
        .post_json("/notes/api/notes", None, &note)
        .await
        .assert_error(403, "CSRF");
    alice
        .post_json("/notes/api/notes", Some("0123"), &note)
        .await
        .assert_error(403, "CSRF");
    alice
        .post_json("/notes/api/notes", Some(&token), &json!({ "text": " " }))
        .await
        .assert_error(400, "1 to 2000");
    let created = alice
        .post_json("/notes/api/notes", Some(&token), &note)
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let first = created.json();
    assert_eq!(
        (first["author"].as_str(), first["text"].as_str()),
        (Some("demo"), Some(text))
    );
    let second = alice
        .post_json(
            "/notes/api/notes",
            Some(&token),
            &json!({ "text": "newer" }),
        )
        .await
        .json();

    // The stream delivers both, with their ids and the serving version.
    live.until("newer").await;
    let streamed = live.notes();
    assert_eq!(streamed.len(), 2, "{}", live.text);
    assert_eq!(streamed[0]["id"], first["id"]);
    assert_eq!(streamed[0]["text"], text);
    assert_eq!(streamed[1]["version"].as_str(), Some(live.version.as_str()));
    assert!(
        live.text
            .contains(&format!("id: {}\nevent: note\n", first["id"]))
    );
    drop(live);

    // A reconnecting browser gets what it missed after its Last-Event-ID.
    let mut resumed = anonymous.events(first["id"].as_i64()).await;
    resumed.until("newer").await;
    assert_eq!(resumed.notes().len(), 1, "{}", resumed.text);
    drop(resumed);

    // Anyone may list, newest first.
    let list = anonymous.get("/notes/api/notes").await;
    assert_eq!(list.status, 200);
    let list = list.json();
    assert_eq!(list[0]["id"], second["id"]);
    assert_eq!(list[1]["id"], first["id"]);
    let one = anonymous.get("/notes/api/notes?limit=1").await.json();
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(anonymous.get("/notes/api/notes?limit=x").await.status, 400);

    // The form post of the page needs the token too.
    let r = alice
        .post_form("/notes/", &[("text", "from the form")])
        .await;
    assert_eq!(r.status, 403);
    let r = alice
        .post_form(
            "/notes/",
            &[("text", "from the form <b>"), ("csrf", &token)],
        )
        .await;
    assert_eq!((r.status, r.header("location")), (303, "/notes/"));
    let page = anonymous.get("/notes/").await.body;
    assert!(page.contains("from the form &lt;b&gt;"), "escaped: {page}");

    // whoami: the addresses the host passed, the scheme, the user.
    let me = alice.get("/notes/whoami").await.json();
    assert_eq!(me["user"], "demo");
    assert_eq!(me["scheme"], "http");
    // The host fills the addresses in once it passes them (null until then).
    for (key, prefix) in [("peer", "127.0.0.1:"), ("client", "127.0.0.1")] {
        let value = &me[key];
        assert!(
            value.is_null() || value.as_str().is_some_and(|v| v.starts_with(prefix)),
            "{me}"
        );
    }
    assert_eq!(
        anonymous.get("/notes/whoami").await.json()["user"],
        Value::Null
    );

    // The export: CSV with proper quoting, as an attachment.
    let csv = anonymous.get("/notes/export").await;
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").starts_with("text/csv"));
    assert_eq!(
        csv.header("content-disposition"),
        "attachment; filename=\"notes.csv\""
    );
    assert!(
        csv.body.starts_with("id,author,created,text"),
        "{}",
        csv.body
    );
    assert!(
        csv.body
            .contains("\"He said \"\"hi\"\", then left\nsecond line\""),
        "{}",
        csv.body
    );

    // A 5 MiB upload, streamed without a declared length, lands on disk whole.
    let chunked = |left| support::body::Generated::new(left, false).boxed();
    // (A small body: the refusal comes before the body is read, and the host does not wait
    // for a large one before it answers.)
    let refused = alice
        .open("POST", "/notes/upload", &[], chunked(1024))
        .await;
    assert_eq!(
        refused.status(),
        403,
        "an upload without the token is refused"
    );
    let response = alice
        .open(
            "POST",
            "/notes/upload",
            &[("x-csrf-token", &token)],
            chunked(UPLOAD),
        )
        .await;
    let uploaded = Reply::read(response).await.unwrap();
    assert_eq!(uploaded.status, 201, "{}", uploaded.body);
    let uploaded = uploaded.json();
    assert_eq!(uploaded["bytes"], UPLOAD);
    let file = data_dir
        .join("uploads")
        .join(uploaded["file"].as_str().unwrap());
    assert_eq!(std::fs::metadata(&file).unwrap().len(), UPLOAD);

    assert_eq!(anonymous.get("/notes/healthz").await.body, "ok");

    // Logging out needs the token, then ends the session.
    let r = alice.post_form("/notes/logout", &[]).await;
    assert_eq!(r.status, 403);
    let r = alice.post_form("/notes/logout", &[("csrf", &token)]).await;
    assert_eq!(r.status, 303);
    alice
        .post_json("/notes/api/notes", Some(&token), &note)
        .await
        .assert_error(401, "log in");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_app_works_end_to_end_on_sqlite() {
    let data = tempfile::tempdir().unwrap();
    let host = start(&[notes("1.0.0")], &sqlite_config(data.path()));
    api_flow(&host, data.path()).await;
    assert!(data.path().join("notes.db").exists());
}

/// A database of its own on the PostgreSQL server, dropped when the test ends.
struct PgDatabase {
    admin_url: String,
    name: String,
}

impl PgDatabase {
    /// Creates `notes_test_<random>`; panics with psql's message if the server does not answer.
    fn create() -> PgDatabase {
        let admin_url = std::env::var("BATON_TEST_POSTGRES").unwrap_or_else(|_| POSTGRES.into());
        let mut random = [0u8; 6];
        getrandom::fill(&mut random).unwrap();
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let db = PgDatabase {
            admin_url,
            name: format!("notes_test_{suffix}"),
        };
        db.psql(&format!("CREATE DATABASE {}", db.name));
        db
    }

    /// The URL of the test database.
    fn url(&self) -> String {
        let (server, _) = self
            .admin_url
            .rsplit_once('/')
            .expect("a URL with a database");
        format!("{server}/{}", self.name)
    }

    /// Runs `sql` on the test database; returns its output (unaligned, tuples only).
    fn query(&self, sql: &str) -> String {
        psql(&self.url(), sql)
    }

    fn psql(&self, sql: &str) {
        psql(&self.admin_url, sql);
    }
}

/// Runs `sql` with psql on the database at `url`; returns its output.
fn psql(url: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-A", "-t", "-c", sql])
        .output()
        .unwrap_or_else(|e| {
            panic!("psql (PostgreSQL's client) does not run: {e}; install postgresql-client")
        });
    assert!(
        out.status.success(),
        "PostgreSQL at {url} refused {sql:?} (is the server running, with trust auth for \
         user postgres? set BATON_TEST_POSTGRES to use another): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Not `psql`: a panic here, while a failed test unwinds, would abort the whole run.
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let dropped = std::process::Command::new("psql")
            .args([&self.admin_url, "-q", "-c", &sql])
            .status();
        if !dropped.is_ok_and(|s| s.success()) {
            eprintln!("could not drop the test database {}", self.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_app_works_end_to_end_on_postgres() {
    let pg = PgDatabase::create();
    let data = tempfile::tempdir().unwrap();
    let config = format!(
        "{{ data_dir = {:?}, database = {:?}, poll_ms = 100 }}",
        data.path().to_str().unwrap(),
        pg.url()
    );
    {
        let host = start(&[notes("1.0.0")], &config);
        api_flow(&host, data.path()).await;

        // v2 adds its column on PostgreSQL too, once, and keeps the notes v1 wrote.
        host.drop_module(&notes("2.0.0"), &module_name(&host));
        active(&host, "2.0.0").await;
        let bob = Browser::new(&host);
        let token = bob.log_in("demo", "demo").await;
        let tagged = bob
            .post_json(
                "/notes/api/notes",
                Some(&token),
                &json!({ "text": "tagged", "tags": "pg v2" }),
            )
            .await;
        assert_eq!(
            (tagged.status, tagged.version()),
            (201, "notes@2.0.0"),
            "{}",
            tagged.body
        );
        let list = bob.get("/notes/api/notes").await.json();
        assert_eq!(list[0]["tags"], json!(["pg", "v2"]));
        assert_eq!(list[1]["tags"], json!([]), "v1's notes have no tags");
        assert_eq!(
            pg.query(
                "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations"
            ),
            "1,2"
        );
    }
    assert!(
        !data.path().join("notes.db").exists(),
        "no SQLite file when PostgreSQL keeps the notes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn v1_to_v2_migrates_under_load_and_live_clients_follow() {
    let data = tempfile::tempdir().unwrap();
    let (v1, v2) = (notes("1.0.0"), notes("2.0.0"));
    let host = start(&[v1], &sqlite_config(data.path()));
    let alice = Browser::new(&host);
    let token = alice.log_in("demo", "demo").await;

    let old = alice
        .post_json(
            "/notes/api/notes",
            Some(&token),
            &json!({ "text": "written by v1", "tags": ["ignored"] }),
        )
        .await;
    assert_eq!(
        (old.status, old.version()),
        (201, "notes@1.0.0"),
        "{}",
        old.body
    );
    let old = old.json();
    assert_eq!(old.get("tags"), None, "v1 knows no tags");
    let live = alice.events(old["id"].as_i64()).await;
    assert_eq!(live.version, "notes@1.0.0");

    // Swap while clients list notes and a live stream is open.
    let load = Load::start(host.url("/notes/api/notes?limit=5"), 4);
    host.drop_module(&v2, &module_name(&host));
    active(&host, "2.0.0").await;
    let after = Browser::new(&host).get("/notes/api/notes").await;
    assert_eq!(after.version(), "notes@2.0.0");

    // The stream opened on v1 ends with a retry hint, so the browser reconnects to v2.
    let rest = live.rest().await;
    assert!(rest.contains("event: draining\nretry: 500\n"), "{rest}");
    let samples = load.stop().await;
    assert_served(&samples, 10);

    // v2 lists v1's note (without tags), accepts tags, and the session survived the swap.
    let list = after.json();
    assert_eq!(list[0]["id"], old["id"]);
    assert_eq!(list[0]["tags"], json!([]));
    let mut live = alice.events(old["id"].as_i64()).await;
    assert_eq!(live.version, "notes@2.0.0");
    let tagged = alice
        .post_json(
            "/notes/api/notes",
            Some(&token),
            &json!({ "text": "written by v2", "tags": ["Swap", "v2"] }),
        )
        .await;
    assert_eq!(
        (tagged.status, tagged.version()),
        (201, "notes@2.0.0"),
        "{}",
        tagged.body
    );
    assert_eq!(tagged.json()["tags"], json!(["swap", "v2"]));
    live.until("written by v2").await;
    let streamed = live.notes();
    assert_eq!(streamed.last().unwrap()["tags"], json!(["swap", "v2"]));
    assert_eq!(streamed.last().unwrap()["version"], "notes@2.0.0");
    let page = alice.get("/notes/").await.body;
    assert!(page.contains(r#"<span class="tag">#swap</span>"#), "{page}");
    assert!(
        page.contains(r#"name="tags""#),
        "v2's form has a tags field"
    );

    let csv = alice.get("/notes/export").await.body;
    assert!(csv.starts_with("id,author,created,text,tags\n"), "{csv}");
}
