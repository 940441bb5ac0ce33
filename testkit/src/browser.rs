//! A headless Chromium driven through the W3C WebDriver protocol, for tests that use a page as
//! a user does: type into forms, click, read what the page shows, run a script in it, take a
//! screenshot.
//!
//! [`ChromeDriver`] runs Debian's `chromedriver` (package `chromium-driver`) on a free local
//! port, in a process group of its own, and kills the group (the browsers with it) when dropped.
//! Each [`Session`] is one browser with a fresh profile (`--headless=new`, `--no-sandbox`,
//! `--disable-gpu`), ended when dropped; an [`Element`] is a node found by a CSS selector.
//!
//! The client is a few blocking HTTP/1.1 requests with JSON bodies, one connection each, so it
//! needs no async runtime: an async test calls it from a multi-threaded runtime (or
//! `spawn_blocking`). Every wait is a poll against a deadline ([`Session::wait_for`],
//! [`Session::wait_until`]); nothing sleeps for a fixed time to let the page catch up.
//!
//! Like the rest of the kit, starting something that must work panics when it does not
//! ([`ChromeDriver::start`], [`ChromeDriver::session`]), and so do the session's commands: a
//! WebDriver error fails the test with the command, the error and the message. The `try_` forms
//! return the error.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use serde_json::{Value, json};

/// Where Debian's `chromium-driver` installs `chromedriver` (used when it is not on `PATH`).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The Chromium binary sessions run (Debian's `chromium`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// How long `chromedriver` may take to answer its status as ready.
const DRIVER_READY: Duration = Duration::from_secs(30);
/// The longest one WebDriver command may take (a new session starts a browser).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(50);
/// The JSON key under which WebDriver names an element.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running `chromedriver`: killed, with every browser it started, when dropped.
#[derive(Debug)]
pub struct ChromeDriver {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl ChromeDriver {
    /// Starts `chromedriver` on a free port and waits until it is ready.
    ///
    /// # Panics
    /// When it cannot start, e.g. `chromium-driver` is not installed (`.ci/run` installs it).
    pub fn start() -> ChromeDriver {
        ChromeDriver::try_start().unwrap_or_else(|e| panic!("chromedriver does not start: {e:#}"))
    }

    /// Starts `chromedriver` on a free port and waits until it is ready; tries another port
    /// when the one picked was taken before the driver bound it.
    ///
    /// # Errors
    /// `chromedriver` is missing, exits, or is not ready within 30 s.
    pub fn try_start() -> anyhow::Result<ChromeDriver> {
        let program = std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("chromedriver"))
            .chain([PathBuf::from(CHROMEDRIVER)])
            .find(|path| path.is_file())
            .context("chromedriver is missing: `apt-get install -y chromium-driver`")?;
        let mut last = None;
        for _ in 0..3 {
            match ChromeDriver::spawn(&program) {
                Ok(driver) => return Ok(driver),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("chromedriver did not start")))
    }

    fn spawn(program: &Path) -> anyhow::Result<ChromeDriver> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("cannot bind a local port")?
            .local_addr()?
            .port();
        let dir = tempfile::tempdir().context("cannot create chromedriver's directory")?;
        let log = dir.path().join("chromedriver.log");
        let output = File::create(dir.path().join("chromedriver.out"))?;
        let child = Command::new(program)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            // Its own group: dropping the driver kills the browsers it started too.
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot run {}", program.display()))?;
        let mut driver = ChromeDriver {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            dir,
        };
        let deadline = Instant::now() + DRIVER_READY;
        loop {
            if let Some(status) = driver.child.try_wait()? {
                bail!("chromedriver exited ({status}): {}", driver.output());
            }
            let ready = request(driver.addr, "GET", "/status", None)
                .is_ok_and(|(_, answer)| answer["value"]["ready"] == true);
            if ready {
                return Ok(driver);
            }
            if Instant::now() > deadline {
                bail!(
                    "chromedriver not ready within {DRIVER_READY:?}: {}",
                    driver.output()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// What `chromedriver` printed, for error messages.
    fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromedriver.out")).unwrap_or_default()
    }

    /// The driver's log file (`--log-path`), for a failing test to point at.
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("chromedriver.log")
    }

    /// A new headless Chromium session with a fresh profile.
    ///
    /// # Panics
    /// When the browser does not start.
    pub fn session(&self) -> Session<'_> {
        self.try_session().unwrap_or_else(|e| {
            panic!(
                "no browser session: {e:#} (log: {})",
                self.log_file().display()
            )
        })
    }

    /// A new headless Chromium session with a fresh profile.
    ///
    /// # Errors
    /// The browser does not start.
    pub fn try_session(&self) -> anyhow::Result<Session<'_>> {
        let profile = tempfile::tempdir_in(self.dir.path())?;
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "timeouts": { "implicit": 0, "pageLoad": 30_000, "script": 30_000 },
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--disable-quic",
                            "--no-first-run",
                            "--disable-background-networking",
                            "--disable-component-update",
                            "--disable-sync",
                            "--window-size=1024,768",
                            format!("--user-data-dir={}", profile.path().display()),
                        ],
                    },
                },
            },
        });
        let value =
            command(self.addr, "POST", "/session", Some(&capabilities)).context("new session")?;
        let id = value["sessionId"]
            .as_str()
            .with_context(|| format!("a new session without an id: {value}"))?
            .to_owned();
        Ok(Session {
            driver: self,
            id,
            _profile: profile,
        })
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // Best effort: the group may be gone already; the child is reaped below either way.
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser: a window on a page. Ended (its browser closed) when dropped.
#[derive(Debug)]
pub struct Session<'d> {
    driver: &'d ChromeDriver,
    id: String,
    _profile: tempfile::TempDir,
}

impl<'d> Session<'d> {
    /// Sends `method path` under this session with `body`; returns the answer's `value`.
    ///
    /// # Errors
    /// A transport error or a WebDriver error (with its name and message).
    pub fn try_command(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let path = format!("/session/{}{path}", self.id);
        command(self.driver.addr, method, &path, body)
    }

    #[track_caller]
    fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.try_command(method, path, body)
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e:#}"))
    }

    /// Opens `url` and waits until the page has loaded.
    #[track_caller]
    pub fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Reloads the page and waits until it has loaded.
    #[track_caller]
    pub fn refresh(&self) {
        self.command("POST", "/refresh", Some(&json!({})));
    }

    /// The page's URL.
    #[track_caller]
    pub fn url(&self) -> String {
        self.command("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The first element matching the CSS `selector`, if there is one now.
    ///
    /// # Errors
    /// Any WebDriver error but "no such element".
    pub fn try_find(&self, selector: &str) -> anyhow::Result<Option<Element<'_, 'd>>> {
        let body = json!({ "using": "css selector", "value": selector });
        match self.try_command("POST", "/element", Some(&body)) {
            Ok(value) => Ok(Some(self.element(&value)?)),
            Err(e)
                if e.downcast_ref::<WebDriverError>()
                    .is_some_and(|e| e.error == "no such element") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The first element matching the CSS `selector`.
    ///
    /// # Panics
    /// There is none.
    #[track_caller]
    pub fn find(&self, selector: &str) -> Element<'_, 'd> {
        match self.try_find(selector) {
            Ok(Some(element)) => element,
            Ok(None) => panic!("no element matches {selector:?} on {}", self.url()),
            Err(e) => panic!("finding {selector:?}: {e:#}"),
        }
    }

    /// Waits up to `timeout` for an element matching `selector`.
    ///
    /// # Panics
    /// None appeared in time.
    #[track_caller]
    pub fn wait_for(&self, selector: &str, timeout: Duration) -> Element<'_, 'd> {
        self.wait_until(
            timeout,
            &format!("an element matching {selector:?}"),
            |_| self.try_find(selector).ok().flatten(),
        )
    }

    /// Polls `check` every 50 ms until it gives a value, for at most `timeout`.
    ///
    /// # Panics
    /// Naming `what`, when `timeout` passes first.
    #[track_caller]
    pub fn wait_until<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&Self) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check(self) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what} on {}",
                self.url()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Runs `script` (a function body: `return` gives the result) in the page with `args`
    /// (`arguments[0]`…) and returns its result as JSON.
    #[track_caller]
    pub fn execute(&self, script: &str, args: &[Value]) -> Value {
        let body = json!({ "script": script, "args": args });
        self.command("POST", "/execute/sync", Some(&body))
    }

    /// Runs `script` in the page with `args` and a callback as its last argument; returns
    /// what the script passes to the callback (e.g. after a `fetch`), within the session's
    /// 30 s script timeout.
    #[track_caller]
    pub fn execute_async(&self, script: &str, args: &[Value]) -> Value {
        let body = json!({ "script": script, "args": args });
        self.command("POST", "/execute/async", Some(&body))
    }

    /// A PNG of the window as it is now.
    #[track_caller]
    pub fn screenshot(&self) -> Vec<u8> {
        let encoded = self.command("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("a screenshot that is not base64: {e}"))
    }

    /// Ends the session and closes its browser (dropping it does the same, ignoring errors).
    ///
    /// # Errors
    /// The driver did not end it.
    pub fn close(mut self) -> anyhow::Result<()> {
        let id = std::mem::take(&mut self.id);
        command(self.driver.addr, "DELETE", &format!("/session/{id}"), None).map(|_| ())
    }

    fn element(&self, value: &Value) -> anyhow::Result<Element<'_, 'd>> {
        let id = value[ELEMENT_KEY]
            .as_str()
            .with_context(|| format!("not an element: {value}"))?;
        Ok(Element {
            session: self,
            id: id.to_owned(),
        })
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if !self.id.is_empty() {
            // Best effort: the driver's drop kills whatever is left.
            let _ = command(
                self.driver.addr,
                "DELETE",
                &format!("/session/{}", self.id),
                None,
            );
        }
    }
}

/// An element of a session's page.
#[derive(Debug)]
pub struct Element<'s, 'd> {
    session: &'s Session<'d>,
    id: String,
}

impl Element<'_, '_> {
    #[track_caller]
    fn command(&self, method: &str, what: &str, body: Option<&Value>) -> Value {
        self.session
            .command(method, &format!("/element/{}{what}", self.id), body)
    }

    /// Types `text` into the element.
    #[track_caller]
    pub fn send_keys(&self, text: &str) {
        self.command("POST", "/value", Some(&json!({ "text": text })));
    }

    /// Clicks the element.
    #[track_caller]
    pub fn click(&self) {
        self.command("POST", "/click", Some(&json!({})));
    }

    /// The element's rendered text.
    #[track_caller]
    pub fn text(&self) -> String {
        self.command("GET", "/text", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The element's attribute `name`, if it has one.
    #[track_caller]
    pub fn attribute(&self, name: &str) -> Option<String> {
        self.command("GET", &format!("/attribute/{name}"), None)
            .as_str()
            .map(str::to_owned)
    }
}

/// An error WebDriver answered with.
#[derive(Debug, thiserror::Error)]
#[error("{status} {error}: {message}")]
pub struct WebDriverError {
    /// The HTTP status.
    pub status: u16,
    /// The WebDriver error code, e.g. `no such element`.
    pub error: String,
    /// What the driver says about it.
    pub message: String,
}

/// Sends a WebDriver command; returns the answer's `value`, or the error it names.
fn command(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<Value> {
    let (status, mut answer) = request(addr, method, path, body)?;
    let value = answer["value"].take();
    if status != 200 {
        return Err(WebDriverError {
            status,
            error: value["error"]
                .as_str()
                .unwrap_or("unknown error")
                .to_owned(),
            message: value["message"].as_str().unwrap_or_default().to_owned(),
        }
        .into());
    }
    Ok(value)
}

/// One HTTP/1.1 request on a connection of its own; the status and the JSON body.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let what = || format!("{method} {path}");
    let mut stream = TcpStream::connect_timeout(&addr, COMMAND_TIMEOUT)
        .with_context(|| format!("{}: cannot connect to chromedriver at {addr}", what()))?;
    stream.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    stream.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\
         content-type: application/json; charset=utf-8\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).with_context(what)?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).with_context(what)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{}: not an HTTP status line: {line:?}", what()))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        reader.read_line(&mut line).with_context(what)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "content-length" {
                length = value.parse::<usize>().ok();
            } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let mut raw = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line).with_context(what)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .with_context(|| format!("{}: bad chunk size {line:?}", what()))?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).with_context(what)?;
            if size == 0 {
                break;
            }
            raw.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = length {
        raw.resize(length, 0);
        reader.read_exact(&mut raw).with_context(what)?;
    } else {
        reader.read_to_end(&mut raw).with_context(what)?;
    }
    let answer = if raw.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&raw)
            .with_context(|| format!("{}: not JSON: {}", what(), String::from_utf8_lossy(&raw)))?
    };
    Ok((status, answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-request server answering `response`; returns its address and the request it got.
    fn serve_once(response: &'static str) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0; 4096];
            // The client sends a whole request (a JSON object last), then waits for the answer.
            while !request.ends_with(b"}") {
                let n = stream.read(&mut buf).unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            stream.write_all(response.as_bytes()).unwrap();
            String::from_utf8(request).unwrap()
        });
        (addr, server)
    }

    #[test]
    fn commands_send_json_and_read_the_value() {
        let (addr, server) = serve_once(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 25\r\n\r\n\
             {\"value\":{\"ready\":true}}\n",
        );
        let value = command(addr, "POST", "/session/1/url", Some(&json!({"url": "x"}))).unwrap();
        assert_eq!(value, json!({"ready": true}));
        let request = server.join().unwrap();
        assert!(
            request.starts_with("POST /session/1/url HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.ends_with("\r\n\r\n{\"url\":\"x\"}"), "{request}");
    }

    #[test]
    fn chunked_answers_and_webdriver_errors_are_read() {
        let (addr, server) = serve_once(
            "HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n\
             f\r\n{\"value\":{\"erro\r\n\
             2b\r\nr\":\"no such element\",\"message\":\"none: #x\"}}\r\n\
             0\r\n\r\n",
        );
        let err = command(addr, "POST", "/session/1/element", Some(&json!({}))).unwrap_err();
        let err = err.downcast::<WebDriverError>().unwrap();
        assert_eq!(
            (err.status, err.error.as_str(), err.message.as_str()),
            (404, "no such element", "none: #x")
        );
        server.join().unwrap();
    }
}
