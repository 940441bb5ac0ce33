//! The admin API's client: what `baton status`, `baton deploy`, `baton canary` … run.
//!
//! Each command prints what an operator wants to read to `out` and returns an error whose
//! message says why the command failed (the admin API's own message when it answered).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::error::{Error, Result};

/// A connection to one host's admin API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: HyperClient<HttpConnector, Full<Bytes>>,
}

fn admin_error(message: impl Into<String>) -> Error {
    Error::Admin(message.into())
}

pub(crate) fn out_error(e: std::io::Error) -> Error {
    Error::io("cannot write the output", e)
}

impl Client {
    /// A client of the admin API at `admin` (`HOST:PORT` or `http://HOST:PORT`), sending
    /// `token` as a bearer token when given.
    pub fn new(admin: &str, token: Option<String>) -> Client {
        let base = if admin.starts_with("http://") {
            admin.trim_end_matches('/').to_owned()
        } else {
            format!("http://{admin}")
        };
        Client {
            base,
            token,
            http: HyperClient::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends a request and returns the JSON answer of a 2xx response.
    ///
    /// # Errors
    /// [`Error::Admin`] with the status and the API's message for any other answer, or why the
    /// API could not be reached.
    pub async fn call(&self, method: Method, path: &str, body: Bytes) -> Result<Value> {
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| admin_error(format!("bad request {method} {path}: {e}")))?;
        let response = self.http.request(request).await.map_err(|e| {
            admin_error(format!("cannot reach the admin API at {}: {e}", self.base))
        })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| admin_error(format!("reading the answer to {method} {path}: {e}")))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).trim().to_owned()));
        if status.is_success() {
            return Ok(value);
        }
        let message = value["error"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| value.as_str().map(str::to_owned))
            .unwrap_or_else(|| value.to_string());
        Err(admin_error(format!("{}: {message}", describe(status))))
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.call(Method::GET, path, Bytes::new()).await
    }
}

fn describe(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
}

pub(crate) fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// `baton status`: every app, its versions, states, split and counters (or the raw JSON).
///
/// # Errors
/// As [`Client::call`].
pub async fn status(client: &Client, json: bool, out: &mut dyn Write) -> Result<()> {
    let status = client.get("/status").await?;
    if json {
        writeln!(out, "{status:#}").map_err(out_error)?;
        return Ok(());
    }
    let apps = status["apps"].as_array().cloned().unwrap_or_default();
    if apps.is_empty() {
        writeln!(out, "no apps").map_err(out_error)?;
    }
    for app in &apps {
        let canary = match app["canary"].as_object() {
            Some(c) => format!(
                ", canary {} at {}%",
                text(&c["version"]),
                c["percent"].as_u64().unwrap_or(0)
            ),
            None => String::new(),
        };
        writeln!(
            out,
            "{} at {}: active {}{canary}",
            text(&app["name"]),
            text(&app["mount"]),
            app["active"].as_str().unwrap_or("none"),
        )
        .map_err(out_error)?;
        for v in app["versions"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "  #{:<4} {:<12} {:<9} weight {:>3}%  in-flight {:<4} served {}",
                v["id"].as_u64().unwrap_or(0),
                text(&v["version"]),
                text(&v["state"]),
                v["weight"].as_u64().unwrap_or(0),
                v["in_flight"].as_u64().unwrap_or(0),
                v["served"].as_u64().unwrap_or(0),
            )
            .map_err(out_error)?;
        }
        if let Some(swap) = app["last_swap"].as_object() {
            writeln!(
                out,
                "  last swap {} -> {}: switched {} ms, drained {} ms, retired {} ms",
                swap["from"].as_str().unwrap_or("none"),
                text(&swap["to"]),
                swap["switched_ms"],
                swap["drained_ms"],
                swap["retired_ms"],
            )
            .map_err(out_error)?;
            let (from, to) = (swap["from"].as_str().unwrap_or("none"), text(&swap["to"]));
            if let Some(back) = swap["rolled_back"].as_object() {
                writeln!(
                    out,
                    "  rolled back {to} -> {from} after {} ms ({}): {}",
                    back["after_switch_ms"],
                    text(&back["cause"]),
                    text(&back["reason"])
                )
                .map_err(out_error)?;
            } else if swap["guard"]["state"] == "watching" {
                writeln!(
                    out,
                    "  guard window open: {from} in standby; {to} so far {} requests, {} 5xx",
                    swap["guard"]["new"]["requests"], swap["guard"]["new"]["errors_5xx"]
                )
                .map_err(out_error)?;
            }
        }
        if let Some(e) = app["last_error"].as_str() {
            writeln!(out, "  last error: {e}").map_err(out_error)?;
        }
    }
    for r in status["rejected"].as_array().into_iter().flatten() {
        writeln!(out, "rejected {}: {}", text(&r["file"]), text(&r["error"])).map_err(out_error)?;
    }
    Ok(())
}

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
}

fn max_id(status: &Value) -> u64 {
    status["apps"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["versions"].as_array().into_iter().flatten())
        .filter_map(|v| v["id"].as_u64())
        .max()
        .unwrap_or(0)
}

/// The newest version deployed after `after`: (app, version, state).
fn newest_after(status: &Value, after: u64) -> Option<(String, String, String)> {
    status["apps"]
        .as_array()?
        .iter()
        .flat_map(|a| {
            a["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |v| (a, v))
        })
        .filter(|(_, v)| v["id"].as_u64().is_some_and(|id| id > after))
        .max_by_key(|(_, v)| v["id"].as_u64())
        .map(|(a, v)| {
            (
                text(&a["name"]).to_owned(),
                text(&v["version"]).to_owned(),
                text(&v["state"]).to_owned(),
            )
        })
}

fn ms(v: &Value) -> String {
    v.as_u64()
        .map_or_else(String::new, |ms| format!(" ({ms} ms)"))
}

/// `baton deploy FILE`: uploads a module and follows it through loading, warming, active, the
/// old version drained, its guard window (if the app has one) and the old version retired.
/// With `canary`, the new version takes that share of new requests beside the active one
/// instead of replacing it. Without `wait`, it returns once the new version is active.
///
/// # Errors
/// The deploy's failure reason (a refused module, a failed warm-up, a rollback during the guard
/// window), or the old version not retiring within `timeout`.
pub async fn deploy(
    client: &Client,
    file: &Path,
    canary: Option<u8>,
    wait: bool,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<()> {
    let bytes =
        std::fs::read(file).map_err(|e| Error::io(format!("cannot read {}", file.display()), e))?;
    let name = file.file_name().map_or_else(
        || "module.so".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    writeln!(out, "uploading {} ({} bytes)", file.display(), bytes.len()).map_err(out_error)?;
    let before = max_id(&client.get("/status").await?);
    let mut path = format!("/apps?name={}", encode(&name));
    if let Some(percent) = canary {
        path.push_str(&format!("&canary={percent}"));
    }
    let upload = {
        let client = client.clone();
        tokio::spawn(async move { client.call(Method::POST, &path, Bytes::from(bytes)).await })
    };
    let mut progress = Progress { out, printed: 0 };
    // Follow the new version while the upload's deploy runs.
    while !upload.is_finished() {
        if let Ok(status) = client.get("/status").await
            && let Some((app, version, state)) = newest_after(&status, before)
        {
            // The `active` line waits for the upload's answer, which says what it replaced.
            let step = match state.as_str() {
                "warming" => Some(1),
                "active" if canary.is_none() => Some(1),
                "loading" | "active" => Some(0),
                _ => None,
            };
            if let Some(step) = step {
                progress.reach(step, &format!("{app} {version}"), |_| String::new())?;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let outcome = match upload.await {
        Ok(result) => result,
        Err(e) => Err(admin_error(format!("upload task failed: {e}"))),
    };
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => {
            writeln!(progress.out, "failed   {e}").map_err(out_error)?;
            return Err(admin_error(format!("deploy failed: {e}")));
        }
    };
    let (app, version) = (text(&outcome["app"]), text(&outcome["version"]));
    let what = format!("{app} {version}");
    match text(&outcome["outcome"]) {
        "unchanged" => {
            writeln!(
                progress.out,
                "{what} is already live with the same bytes: nothing to do"
            )
            .map_err(out_error)?;
            return Ok(());
        }
        "canary" => {
            progress.reach(1, &what, |_| String::new())?;
            writeln!(
                progress.out,
                "canary   {what} takes {}% of new requests (promote with `baton promote {app}`, \
                 abort with `baton abort {app}`)",
                outcome["percent"].as_u64().unwrap_or(0)
            )
            .map_err(out_error)?;
            return Ok(());
        }
        _ => {}
    }
    let swap = outcome["last_swap"].clone();
    let replaced = outcome["replaced"].as_str().map(str::to_owned);
    progress.reach(2, &what, |step| match step {
        0 => ms(&swap["loaded_ms"]),
        1 => ms(&swap["warmed_ms"]),
        _ => match &replaced {
            Some(old) => format!(" (replaced {old}){}", ms(&swap["switched_ms"])),
            None => ms(&swap["switched_ms"]),
        },
    })?;
    let Some(old) = replaced else { return Ok(()) };
    if !wait {
        writeln!(
            progress.out,
            "not waiting for {app} {old} to drain and retire (or for the guard window); follow \
             with `baton status`"
        )
        .map_err(out_error)?;
        return Ok(());
    }
    let new_id = outcome["id"].as_u64().unwrap_or(u64::MAX);
    let deadline = Instant::now() + timeout;
    let mut told_draining = false;
    let mut told_guard = false;
    loop {
        let app_status = client.get(&format!("/apps/{}", encode(app))).await?;
        let old_version = app_status["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["version"] == old.as_str() && v["id"].as_u64() < Some(new_id))
            .max_by_key(|v| v["id"].as_u64())
            .cloned();
        let Some(old_version) = old_version else {
            return Err(admin_error(format!("{app} {old} vanished from the status")));
        };
        let swap = &app_status["last_swap"];
        let ours = swap["to_id"].as_u64() == Some(new_id);
        let old_what = format!("{app} {old}");
        if ours && let Some(back) = swap["rolled_back"].as_object() {
            let reason = text(&back["reason"]);
            writeln!(
                progress.out,
                "rolled back {what} -> {old} after {} ms ({}): {reason}",
                back["after_switch_ms"],
                text(&back["cause"]),
            )
            .map_err(out_error)?;
            return Err(admin_error(format!(
                "{what} was rolled back to {old}: {reason}"
            )));
        }
        if ours && swap["drained_ms"].is_u64() {
            progress.reach(3, &old_what, |_| ms(&swap["drained_ms"]))?;
        }
        let guard = &swap["guard"];
        if ours && !told_guard && guard["state"] == "watching" {
            writeln!(
                progress.out,
                "guarding {what}: {old} stays loaded as the fallback for {} s; a clear rise in \
                 5xx or latency switches back (`--no-wait` returns at once)",
                guard["window_ms"].as_u64().unwrap_or(0) / 1000
            )
            .map_err(out_error)?;
            told_guard = true;
        }
        match text(&old_version["state"]) {
            "retired" => {
                progress.reach(4, &old_what, |step| {
                    ms(&swap[if step == 3 {
                        "drained_ms"
                    } else {
                        "retired_ms"
                    }])
                })?;
                if let Some(e) = old_version["error"].as_str() {
                    writeln!(progress.out, "warning  {e}").map_err(out_error)?;
                }
                if ours && guard["state"] == "passed" {
                    let new = &guard["new"];
                    writeln!(
                        progress.out,
                        "passed   {what}: guard window over, {} requests, {:.1}% 5xx",
                        new["requests"],
                        new["error_ratio"].as_f64().unwrap_or(0.0) * 100.0
                    )
                    .map_err(out_error)?;
                }
                return Ok(());
            }
            "draining" if !told_draining && old_version["in_flight"].as_u64() > Some(0) => {
                writeln!(
                    progress.out,
                    "draining {app} {old}: {} request(s) still running",
                    old_version["in_flight"]
                )
                .map_err(out_error)?;
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

/// Percent-encodes what is not safe in a query value or path segment.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `baton rollback APP`: the previous version kept in the store becomes active again.
///
/// # Errors
/// As [`Client::call`].
pub async fn rollback(client: &Client, app: &str, out: &mut dyn Write) -> Result<()> {
    let outcome = client
        .call(
            Method::POST,
            &format!("/apps/{}/rollback", encode(app)),
            Bytes::new(),
        )
        .await?;
    writeln!(
        out,
        "{app}: rolled back to {}{}",
        text(&outcome["version"]),
        outcome["replaced"]
            .as_str()
            .map_or_else(String::new, |r| format!(" (replaced {r})"))
    )
    .map_err(out_error)
}

/// `baton upgrade`: the host's supervisor starts a new serving process from the `baton` binary
/// now on disk; once its apps are warm the old one hands over and exits. Waits (up to `timeout`)
/// until the new process answers `/status` and the old one is gone.
///
/// # Errors
/// As [`Client::call`], or when the new process does not take over in time.
pub async fn upgrade(client: &Client, timeout: Duration, out: &mut dyn Write) -> Result<()> {
    let before = client.call(Method::GET, "/status", Bytes::new()).await?;
    let old_pid = before["host"]["pid"].as_u64();
    let old_version = text(&before["host"]["version"]).to_owned();
    client.call(Method::POST, "/upgrade", Bytes::new()).await?;
    writeln!(
        out,
        "upgrading: serving process {} ({old_version})",
        old_pid.unwrap_or(0)
    )
    .map_err(out_error)?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Until the old process stops accepting, either may answer.
        if let Ok(status) = client.call(Method::GET, "/status", Bytes::new()).await
            && status["host"]["pid"].as_u64() != old_pid
            && old_pid.is_none_or(gone)
        {
            writeln!(
                out,
                "upgraded: serving process {} ({})",
                status["host"]["pid"].as_u64().unwrap_or(0),
                text(&status["host"]["version"])
            )
            .map_err(out_error)?;
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Admin(format!(
                "the upgrade did not finish within {} s; see the host's log",
                timeout.as_secs()
            )));
        }
    }
}

/// Whether process `pid` has exited (on this machine; a remote host counts as gone once another
/// process answers).
fn gone(pid: u64) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// `baton undeploy APP`: the app stops taking requests, drains and retires.
///
/// # Errors
/// As [`Client::call`].
pub async fn undeploy(client: &Client, app: &str, out: &mut dyn Write) -> Result<()> {
    let outcome = client
        .call(
            Method::DELETE,
            &format!("/apps/{}", encode(app)),
            Bytes::new(),
        )
        .await?;
    writeln!(
        out,
        "{app}: undeployed {} (draining, then retired)",
        text(&outcome["undeployed"])
    )
    .map_err(out_error)
}

/// `baton canary APP VERSION PERCENT`: `VERSION` takes `PERCENT` of the app's new requests.
///
/// # Errors
/// As [`Client::call`].
pub async fn canary(
    client: &Client,
    app: &str,
    version: &str,
    percent: u8,
    out: &mut dyn Write,
) -> Result<()> {
    let body = serde_json::json!({ "version": version, "percent": percent }).to_string();
    let outcome = client
        .call(
            Method::PUT,
            &format!("/apps/{}/canary", encode(app)),
            Bytes::from(body),
        )
        .await?;
    writeln!(
        out,
        "{app}: canary {} takes {}% of new requests",
        text(&outcome["canary"]),
        outcome["percent"]
    )
    .map_err(out_error)
}

/// `baton promote APP`: the canary becomes the active version.
///
/// # Errors
/// As [`Client::call`].
pub async fn promote(client: &Client, app: &str, out: &mut dyn Write) -> Result<()> {
    let outcome = client
        .call(
            Method::POST,
            &format!("/apps/{}/canary/promote", encode(app)),
            Bytes::new(),
        )
        .await?;
    writeln!(out, "{app}: {} is active", text(&outcome["active"])).map_err(out_error)
}

/// `baton abort APP`: the canary takes no new requests, drains and retires.
///
/// # Errors
/// As [`Client::call`].
pub async fn abort(client: &Client, app: &str, out: &mut dyn Write) -> Result<()> {
    let outcome = client
        .call(
            Method::DELETE,
            &format!("/apps/{}/canary", encode(app)),
            Bytes::new(),
        )
        .await?;
    writeln!(
        out,
        "{app}: canary {} aborted (draining, then retired)",
        text(&outcome["aborted"])
    )
    .map_err(out_error)
}

/// A duration in seconds as an operator reads it: `42s`, `7m 03s`, `2h 05m`.
fn human_ms(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// `baton sessions list`: the host's sessions, most recently used first, up to `limit`, only
/// those whose id starts with `prefix` when given (or the raw JSON).
///
/// # Errors
/// As [`Client::call`].
pub async fn sessions_list(
    client: &Client,
    limit: Option<usize>,
    prefix: Option<&str>,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let mut query = Vec::new();
    if let Some(limit) = limit {
        query.push(format!("limit={limit}"));
    }
    if let Some(prefix) = prefix {
        query.push(format!("prefix={}", encode(prefix)));
    }
    let path = if query.is_empty() {
        "/sessions".to_owned()
    } else {
        format!("/sessions?{}", query.join("&"))
    };
    let page = client.get(&path).await?;
    if json {
        return writeln!(out, "{page:#}").map_err(out_error);
    }
    let sessions = page["sessions"].as_array().cloned().unwrap_or_default();
    if sessions.is_empty() {
        return writeln!(out, "no sessions ({} store)", text(&page["store"])).map_err(out_error);
    }
    let now = crate::session::now_unix_ms();
    writeln!(
        out,
        "{:<14} {:>9} {:>9} {:>10}  attributes",
        "id", "age", "idle", "expires in"
    )
    .map_err(out_error)?;
    for s in &sessions {
        let at = |field: &str| s[field].as_u64().unwrap_or(0);
        let names: Vec<&str> = s["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        writeln!(
            out,
            "{:<14} {:>9} {:>9} {:>10}  {}",
            format!("{}…", text(&s["id_prefix"])),
            human_ms(now.saturating_sub(at("created_unix_ms"))),
            human_ms(now.saturating_sub(at("accessed_unix_ms"))),
            human_ms(at("expires_in_ms")),
            names.join(", "),
        )
        .map_err(out_error)?;
    }
    if page["more"].as_bool() == Some(true) {
        writeln!(
            out,
            "… more sessions than the {} listed (raise --limit or narrow with --prefix)",
            sessions.len()
        )
        .map_err(out_error)?;
    }
    Ok(())
}

/// `baton sessions count`: how many live sessions the host's store holds.
///
/// # Errors
/// As [`Client::call`].
pub async fn sessions_count(client: &Client, out: &mut dyn Write) -> Result<()> {
    let answer = client.get("/sessions/count").await?;
    writeln!(
        out,
        "{} sessions ({} store)",
        answer["count"].as_u64().unwrap_or(0),
        text(&answer["store"])
    )
    .map_err(out_error)
}

/// `baton sessions invalidate ID`: deletes a session, named by its id or a unique prefix of
/// it; its client starts a fresh one.
///
/// # Errors
/// As [`Client::call`]: 404 for an unknown session, 409 for an ambiguous prefix.
pub async fn sessions_invalidate(client: &Client, id: &str, out: &mut dyn Write) -> Result<()> {
    let answer = client
        .call(
            Method::DELETE,
            &format!("/sessions/{}", encode(id)),
            Bytes::new(),
        )
        .await?;
    writeln!(out, "invalidated session {}…", text(&answer["invalidated"])).map_err(out_error)
}
