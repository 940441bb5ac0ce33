//! The admin API's client: what `baton status`, `baton deploy`, `baton canary` … run.
//!
//! Requests and answers are the [`wire`](super::wire) types the server sends, so a renamed
//! field fails to compile rather than printing `-`. Each command prints what an operator wants
//! to read to `out` and returns an error whose message says why the command failed (the admin
//! API's own message when it answered); `--json` prints the API's answer as it came.
//!
//! - this module: the [`Client`], `baton status` and the one-call commands (rollback, undeploy,
//!   canary, promote, abort, upgrade).
//! - `deploy`: `baton deploy`, following the new version through its steps.
//! - `fleet`: `baton deploy` to several hosts, one at a time, rolling the done ones back when
//!   one fails.
//! - `sessions` and `quarantine`: `baton sessions …` and `baton quarantine …`.
//! - `cli`: the admin subcommands of the command line and how each runs.

mod cli;
mod deploy;
mod fleet;
mod quarantine;
mod sessions;

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::wire::{
    Aborted, CanaryRequest, CanarySet, DeployOutcome, ErrorReply, Promoted, Status, Undeployed,
    encode_segment,
};
use crate::deploy::GuardState;
use crate::error::{Error, Result};

pub use cli::{AdminArgs, AdminCommand, QuarantineCommand, SessionsCommand};
use deploy::deploy;

/// How long a `GET` of the admin API may take: the status reads a command polls answer at once.
const GET_TIMEOUT: Duration = Duration::from_secs(30);
/// The least a poll near its command's deadline still waits for an answer.
const POLL_MIN: Duration = Duration::from_secs(1);
/// How long connecting to the admin API may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

fn out_error(e: std::io::Error) -> Error {
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
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        Client {
            base,
            token,
            http: HyperClient::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Sends a request and returns the body of a 2xx answer as it came.
    ///
    /// # Errors
    /// [`Error::Admin`] with the status and the API's message for any other answer, or why the
    /// API could not be reached.
    pub async fn send(&self, method: Method, path: &str, body: Bytes) -> Result<Bytes> {
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
        if status.is_success() {
            return Ok(body);
        }
        let message = serde_json::from_slice::<ErrorReply>(&body).map_or_else(
            |_| String::from_utf8_lossy(&body).trim().to_owned(),
            |reply| reply.error,
        );
        Err(admin_error(format!("{}: {message}", describe(status))))
    }

    /// Sends a request and reads the answer of a 2xx response as a `T`.
    ///
    /// # Errors
    /// As [`Client::send`], and [`Error::Admin`] for an answer that is not a `T`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<T> {
        let answer = self.send(method.clone(), path, body).await?;
        serde_json::from_slice(&answer)
            .map_err(|e| admin_error(format!("unexpected answer to {method} {path}: {e}")))
    }

    /// `GET path`, read as a `T`: bounded by [`GET_TIMEOUT`], so a host that accepted the
    /// connection and then stopped answering (one that is hanging, or exiting) fails the call
    /// instead of holding the command forever.
    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.get_within(path, GET_TIMEOUT).await
    }

    /// `GET path`, read as a `T`, failing after `timeout`.
    async fn get_within<T: DeserializeOwned>(&self, path: &str, timeout: Duration) -> Result<T> {
        self.bounded(path, timeout, self.call(Method::GET, path, Bytes::new()))
            .await
    }

    /// `GET path` without [`GET_TIMEOUT`]: for the session store's listing and counting, which
    /// walk the whole store (each of its round trips bounded by the host's op timeout).
    async fn get_unbounded<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, Bytes::new()).await
    }

    /// `call`, failing after `timeout` with an error that says so.
    async fn bounded<T>(
        &self,
        path: &str,
        timeout: Duration,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::time::timeout(timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(admin_error(format!(
                    "GET {path}: no answer from {} within {} s",
                    self.base,
                    timeout.as_secs_f64()
                )))
            })
    }

    /// `GET path`, printed as the API answered it (for `--json`); bounded by [`GET_TIMEOUT`]
    /// unless `unbounded` (as [`Client::get_unbounded`]).
    async fn print(&self, path: &str, unbounded: bool, out: &mut dyn Write) -> Result<()> {
        let send = self.send(Method::GET, path, Bytes::new());
        let answer = if unbounded {
            send.await?
        } else {
            self.bounded(path, GET_TIMEOUT, send).await?
        };
        writeln!(out, "{}", String::from_utf8_lossy(&answer).trim_end()).map_err(out_error)
    }
}

fn describe(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
}

/// A body of JSON `value`.
fn body(value: &impl Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// The name a unit enum has on the wire (`active`, `errors`…).
fn wire_name(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "-".to_owned(),
    }
}

/// An optional number as the status line has always shown it (`null` when absent).
fn number(value: Option<u64>) -> String {
    value.map_or_else(|| "null".to_owned(), |n| n.to_string())
}

/// `baton status`: every app, its versions, states, split and counters (or the raw JSON).
///
/// # Errors
/// As [`Client::call`].
async fn status(client: &Client, json: bool, out: &mut dyn Write) -> Result<()> {
    if json {
        return client.print("/status", false, out).await;
    }
    let status: Status = client.get("/status").await?;
    if status.apps.is_empty() {
        writeln!(out, "no apps").map_err(out_error)?;
    }
    for app in &status.apps {
        let canary = match &app.canary {
            Some(c) => format!(", canary {} at {}%", c.version, c.percent),
            None => String::new(),
        };
        writeln!(
            out,
            "{} at {}: active {}{canary}",
            app.name,
            app.mount,
            app.active.as_deref().unwrap_or("none"),
        )
        .map_err(out_error)?;
        for v in &app.versions {
            writeln!(
                out,
                "  #{:<4} {:<12} {:<9} weight {:>3}%  in-flight {:<4} served {}",
                v.id,
                v.version,
                wire_name(&v.state),
                v.weight,
                v.in_flight,
                v.served,
            )
            .map_err(out_error)?;
        }
        if let Some(swap) = &app.last_swap {
            let (from, to) = (swap.from.as_deref().unwrap_or("none"), &swap.to);
            writeln!(
                out,
                "  last swap {from} -> {to}: switched {} ms, drained {} ms, retired {} ms",
                swap.switched_ms,
                number(swap.drained_ms),
                number(swap.retired_ms),
            )
            .map_err(out_error)?;
            if let Some(back) = &swap.rolled_back {
                writeln!(
                    out,
                    "  rolled back {to} -> {from} after {} ms ({}): {}",
                    back.after_switch_ms,
                    wire_name(&back.cause),
                    back.reason
                )
                .map_err(out_error)?;
            } else if let Some(guard) = &swap.guard
                && guard.state == GuardState::Watching
            {
                writeln!(
                    out,
                    "  guard window open: {from} in standby; {to} so far {} requests, {} 5xx",
                    guard.new.requests, guard.new.errors_5xx
                )
                .map_err(out_error)?;
            }
        }
        if let Some(e) = &app.last_error {
            writeln!(out, "  last error: {e}").map_err(out_error)?;
        }
    }
    for r in &status.rejected {
        writeln!(out, "rejected {}: {}", r.file.display(), r.error).map_err(out_error)?;
    }
    Ok(())
}

/// `/apps/{app}` and what follows it, the app's name percent-encoded.
fn app_path(app: &str, rest: &str) -> String {
    format!("/apps/{}{rest}", encode_segment(app))
}

/// One call on an app's path whose answer becomes one printed line.
struct AppCall<'c> {
    client: &'c Client,
    method: Method,
    path: String,
}

impl<'c> AppCall<'c> {
    fn new(client: &'c Client, method: Method, app: &str, rest: &str) -> AppCall<'c> {
        let path = app_path(app, rest);
        AppCall {
            client,
            method,
            path,
        }
    }

    /// Sends `body` and prints what `line` makes of the answer.
    async fn say<T: DeserializeOwned>(
        self,
        body: Bytes,
        out: &mut dyn Write,
        line: impl FnOnce(T) -> String,
    ) -> Result<()> {
        let answer = self.client.call(self.method, &self.path, body).await?;
        writeln!(out, "{}", line(answer)).map_err(out_error)
    }
}

/// `baton rollback APP`: the previous version kept in the store becomes active again.
///
/// # Errors
/// As [`Client::call`].
async fn rollback(client: &Client, app: &str, out: &mut dyn Write) -> Result<()> {
    let call = AppCall::new(client, Method::POST, app, "/rollback");
    call.say(Bytes::new(), out, |outcome: DeployOutcome| {
        let replaced = outcome
            .replaced
            .map_or_else(String::new, |r| format!(" (replaced {r})"));
        format!("{app}: rolled back to {}{replaced}", outcome.version)
    })
    .await
}

/// `baton upgrade`: the host's supervisor starts a new serving process from the `baton` binary
/// now on disk; once its apps are warm the old one hands over and exits. Waits (up to `timeout`)
/// until the new process answers `/status` and the old one is gone.
///
/// # Errors
/// As [`Client::call`], or when the new process does not take over in time.
async fn upgrade(client: &Client, timeout: Duration, out: &mut dyn Write) -> Result<()> {
    let before: Status = client.get("/status").await?;
    let old = before.host;
    client.send(Method::POST, "/upgrade", Bytes::new()).await?;
    writeln!(
        out,
        "upgrading: serving process {} ({})",
        old.pid, old.version
    )
    .map_err(out_error)?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Until the old process stops accepting, either may answer.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let Ok(status) = client
            .get_within::<Status>("/status", GET_TIMEOUT.min(left).max(POLL_MIN))
            .await
            && status.host.pid != old.pid
            && gone(old.pid)
        {
            writeln!(
                out,
                "upgraded: serving process {} ({})",
                status.host.pid, status.host.version
            )
            .map_err(out_error)?;
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(admin_error(format!(
                "the upgrade did not finish within {} s; see the host's log",
                timeout.as_secs()
            )));
        }
    }
}

/// Whether process `pid` has exited (on this machine; a remote host counts as gone once another
/// process answers).
fn gone(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// `baton undeploy APP`: the app stops taking requests, drains and retires.
///
/// # Errors
/// As [`Client::call`].
async fn undeploy(client: &Client, app: &str, out: &mut dyn Write) -> Result<()> {
    let call = AppCall::new(client, Method::DELETE, app, "");
    call.say(Bytes::new(), out, |outcome: Undeployed| {
        format!(
            "{app}: undeployed {} (draining, then retired)",
            outcome.undeployed
        )
    })
    .await
}

/// `baton canary APP VERSION PERCENT`: `VERSION` takes `PERCENT` of the app's new requests.
///
/// # Errors
/// As [`Client::call`].
async fn canary(
    client: &Client,
    app: &str,
    version: &str,
    percent: u8,
    out: &mut dyn Write,
) -> Result<()> {
    let request = CanaryRequest {
        version: version.to_owned(),
        percent,
    };
    let call = AppCall::new(client, Method::PUT, app, "/canary");
    call.say(body(&request), out, |outcome: CanarySet| {
        format!(
            "{app}: canary {} takes {}% of new requests",
            outcome.canary, outcome.percent
        )
    })
    .await
}

/// `baton promote APP`: the canary becomes the active version.
///
/// # Errors
/// As [`Client::call`].
async fn promote(client: &Client, app: &str, out: &mut dyn Write) -> Result<()> {
    let call = AppCall::new(client, Method::POST, app, "/canary/promote");
    call.say(Bytes::new(), out, |outcome: Promoted| {
        format!("{app}: {} is active", outcome.active)
    })
    .await
}

/// `baton abort APP`: the canary takes no new requests, drains and retires.
///
/// # Errors
/// As [`Client::call`].
async fn abort(client: &Client, app: &str, out: &mut dyn Write) -> Result<()> {
    let call = AppCall::new(client, Method::DELETE, app, "/canary");
    call.say(Bytes::new(), out, |outcome: Aborted| {
        format!(
            "{app}: canary {} aborted (draining, then retired)",
            outcome.aborted
        )
    })
    .await
}
