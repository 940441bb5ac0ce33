//! The load generator: HTTP/1.1 keep-alive connections over raw tokio TCP, one request in
//! flight per connection, every request recorded.
//!
//! It does the least work a correct client can (a prebuilt request, `httparse` on the response
//! head, the body skipped by length) so that on a small machine it costs the server under test
//! as little CPU as possible, and it costs both servers of a comparison the same.
//!
//! A [`Target`] may speak TLS ([`Target::tls`]), and may open a new connection for every request
//! ([`Target::reconnect`]) so that each request costs a TCP connect and, with TLS, a full
//! handshake: requests per second are then handshakes per second.
//!
//! A [`Target`] may also ask each connection to behave as one browser: keep the cookies the server
//! sets and send them back ([`Target::cookies`]), so one connection is one session; and to check
//! the `counter` example's answers ([`Target::counter`]), so a session lost or a count skipped is
//! a failed request, never a silently faster one.
//!
//! Bodies are read with or without a declared length (`Transfer-Encoding: chunked`, as streamed
//! responses are sent) and counted ([`Recorded::bytes`]); [`Target::body_bytes`] makes a body of
//! any other length a failed request, so a cut download never counts as a fast one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::stats::Latency;

/// A 2xx response without a known version header.
pub const OK_UNTAGGED: u8 = 0;
/// A 5xx response from the version named by [`Target::tolerate_5xx_from`]: expected, not failed.
pub const TOLERATED_5XX: u8 = 249;
/// A response with a status other than 2xx.
pub const FAIL_STATUS: u8 = 250;
/// A connection error (refused, reset, closed mid-response, malformed response).
pub const FAIL_IO: u8 = 251;
/// No complete response within the request timeout.
pub const FAIL_TIMEOUT: u8 = 252;
/// A 2xx response whose body is not the one expected ([`Target::counter`],
/// [`Target::body_bytes`]).
pub const FAIL_BODY: u8 = 253;

/// One request: when it started (µs after the load started), how long it took, and its
/// outcome: [`OK_UNTAGGED`], `1 + i` for a 2xx answered by `versions[i]`, or a `FAIL_*`.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Start, in µs after [`Load::started`].
    pub start_us: u32,
    /// Latency in µs.
    pub latency_us: u32,
    /// Outcome code.
    pub outcome: u8,
}

impl Sample {
    /// End, in µs after [`Load::started`].
    pub fn end_us(&self) -> u32 {
        self.start_us.saturating_add(self.latency_us)
    }

    /// Whether the request failed.
    pub fn failed(&self) -> bool {
        self.outcome >= FAIL_STATUS
    }
}

/// A connection's byte stream: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How a load speaks TLS: the connector (trusted roots, ALPN, resumption) and the server name
/// it asks for.
#[derive(Clone)]
pub struct TlsClient {
    /// The client's TLS configuration.
    pub connector: TlsConnector,
    /// The name the server's certificate must carry.
    pub name: ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What the load is aimed at.
#[derive(Debug, Clone)]
pub struct Target {
    /// Server address.
    pub addr: SocketAddr,
    /// Request path (with query).
    pub path: String,
    /// Values of the `x-baton-version` header to tell apart (outcome `1 + index`).
    pub versions: Vec<String>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Keep cookies per connection: what `Set-Cookie` gave is sent back on every later request
    /// of that connection (and after a reconnect), so each connection is one client.
    pub cookies: bool,
    /// Check that every 2xx body is `count N`, N one more than the connection's previous count
    /// (1 first): the `counter` example with one session per connection.
    pub counter: bool,
    /// A 5xx answered by this version (`x-baton-version` value) is [`TOLERATED_5XX`], not a
    /// failure: a deliberately bad version's own errors.
    pub tolerate_5xx_from: Option<String>,
    /// Speak TLS.
    pub tls: Option<TlsClient>,
    /// A new connection for every request (`Connection: close`).
    pub reconnect: bool,
    /// The length every 2xx body must have; another is [`FAIL_BODY`].
    pub body_bytes: Option<u64>,
}

impl Target {
    /// `GET path` on `addr`, no version tags, no cookies, bodies unchecked.
    pub fn new(addr: SocketAddr, path: impl Into<String>, timeout: Duration) -> Target {
        Target {
            addr,
            path: path.into(),
            versions: Vec::new(),
            timeout,
            cookies: false,
            counter: false,
            tolerate_5xx_from: None,
            tls: None,
            reconnect: false,
            body_bytes: None,
        }
    }
}

/// Everything one load run recorded.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Every request, per connection in order, connections one after the other.
    pub samples: Vec<Sample>,
    /// The first few failures, described.
    pub errors: Vec<String>,
    /// How long the load ran.
    pub elapsed: Duration,
    /// Cookies the connections were given (with [`Target::cookies`]): one per connection when
    /// the server keeps every session.
    pub cookies_set: usize,
    /// Counts checked and found right (with [`Target::counter`]).
    pub counts_ok: usize,
    /// Body bytes of the 2xx responses (after chunked decoding).
    pub bytes: u64,
}

impl Recorded {
    /// Requests that failed.
    pub fn failed(&self) -> usize {
        self.samples.iter().filter(|s| s.failed()).count()
    }

    /// Requests with this outcome.
    pub fn with_outcome(&self, outcome: u8) -> usize {
        self.samples.iter().filter(|s| s.outcome == outcome).count()
    }

    /// Successful requests per second.
    pub fn rps(&self) -> f64 {
        (self.samples.len() - self.failed()) as f64 / self.elapsed.as_secs_f64()
    }

    /// Body bytes of the 2xx responses per second, in MiB (2^20 bytes).
    pub fn mib_per_sec(&self) -> f64 {
        self.bytes as f64 / f64::from(1 << 20) / self.elapsed.as_secs_f64()
    }

    /// `cpu_secs` of a process's CPU time per successful request, in µs.
    pub fn cpu_us_per_request(&self, cpu_secs: f64) -> f64 {
        cpu_secs * 1e6 / (self.samples.len() - self.failed()).max(1) as f64
    }

    /// The first ten failures, described.
    pub fn first_errors(&self) -> Vec<String> {
        self.errors.iter().take(10).cloned().collect()
    }

    /// Latency of every request, failed ones included.
    pub fn latency(&self) -> Latency {
        let mut l: Vec<u32> = self.samples.iter().map(|s| s.latency_us).collect();
        Latency::from_micros(&mut l)
    }
}

/// Runs `connections` connections on `target` for `secs` seconds.
pub async fn run_for(target: &Target, connections: usize, secs: f64) -> Recorded {
    let load = Load::start(target, connections);
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    load.stop().await
}

/// Keep-alive load from a number of connections, until stopped.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<Connection>>,
}

impl Load {
    /// Starts `connections` connections to `target` on the current runtime.
    pub fn start(target: &Target, connections: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let target = Arc::new(target.clone());
        let tasks = (0..connections)
            .map(|_| {
                let (target, stop) = (Arc::clone(&target), Arc::clone(&stop));
                tokio::spawn(async move { connection(&target, &stop, started).await })
            })
            .collect();
        Load {
            stop,
            started,
            tasks,
        }
    }

    /// When the load started: the origin of [`Sample::start_us`].
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Stops the load, waits for the requests in flight and returns what was recorded.
    pub async fn stop(self) -> Recorded {
        self.stop.store(true, Ordering::Relaxed);
        let elapsed = self.started.elapsed();
        let mut recorded = Recorded {
            elapsed,
            ..Recorded::default()
        };
        for task in self.tasks {
            if let Ok(conn) = task.await {
                recorded.samples.extend(conn.samples);
                if recorded.errors.len() < 20 {
                    recorded.errors.extend(conn.errors);
                }
                recorded.cookies_set += conn.client.cookies_set;
                recorded.counts_ok += conn.client.counts_ok;
                recorded.bytes += conn.bytes;
            }
        }
        recorded
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// What one connection recorded.
#[derive(Debug)]
struct Connection {
    samples: Vec<Sample>,
    errors: Vec<String>,
    client: Client,
    /// Body bytes of the 2xx responses.
    bytes: u64,
}

/// What a connection remembers between requests, as a browser would.
#[derive(Debug, Default)]
struct Client {
    /// `(name, value)` of the cookies to send back.
    cookies: Vec<(String, String)>,
    cookies_set: usize,
    /// The last count seen, 0 before the first.
    count: u64,
    /// A request failed since that count: the server may have counted it or not.
    uncertain: bool,
    counts_ok: usize,
}

impl Client {
    fn request(&self, target: &Target) -> Vec<u8> {
        let mut request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: baton-benches\r\n",
            target.path, target.addr
        );
        if !self.cookies.is_empty() {
            let pairs: Vec<String> = self
                .cookies
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect();
            request.push_str(&format!("Cookie: {}\r\n", pairs.join("; ")));
        }
        if target.reconnect {
            request.push_str("Connection: close\r\n");
        }
        request.push_str("\r\n");
        request.into_bytes()
    }

    /// Applies a `Set-Cookie` value: a new value is kept, an empty one forgets the cookie.
    fn set_cookie(&mut self, header: &str) {
        let pair = header.split(';').next().unwrap_or("");
        let Some((name, value)) = pair.split_once('=') else {
            return;
        };
        let (name, value) = (name.trim(), value.trim());
        self.cookies.retain(|(n, _)| n != name);
        if !value.is_empty() {
            self.cookies.push((name.to_owned(), value.to_owned()));
            self.cookies_set += 1;
        }
    }

    /// Checks a `counter` body: `count N`, N one more than the last (or two more, if the
    /// request in between failed after the server counted it).
    fn check_count(&mut self, body: &[u8]) -> Result<(), String> {
        let text = String::from_utf8_lossy(body);
        let Some(n) = text
            .trim_end()
            .strip_prefix("count ")
            .and_then(|n| n.parse::<u64>().ok())
        else {
            return Err(format!("body {text:?} is not `count N`"));
        };
        let expected = self.count + 1;
        let ok = n == expected || (self.uncertain && n == expected + 1);
        self.count = n;
        self.uncertain = false;
        if ok {
            self.counts_ok += 1;
            Ok(())
        } else {
            Err(format!(
                "count {n}, expected {expected} (session lost or a count skipped)"
            ))
        }
    }
}

async fn connection(target: &Target, stop: &AtomicBool, origin: Instant) -> Connection {
    let mut client = Client::default();
    let mut request = client.request(target);
    let mut samples = Vec::with_capacity(1 << 16);
    let mut errors = Vec::new();
    let mut conn: Option<Box<dyn Io>> = None;
    let mut buf = Vec::with_capacity(4096);
    let mut bytes = 0;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            target.timeout,
            exchange(&mut conn, target, &request, &mut buf, &mut client),
        )
        .await;
        let latency = started.elapsed();
        let outcome = match outcome {
            Ok(Ok(answer)) => {
                if answer.cookies_changed {
                    request = client.request(target);
                }
                bytes += answer.body_bytes;
                answer.outcome
            }
            Ok(Err((code, error))) => {
                // A failed response may still have set cookies (a lost session's
                // replacement): send what the client now holds.
                request = client.request(target);
                if code != FAIL_BODY {
                    conn = None;
                    client.uncertain = true;
                }
                if errors.len() < 5 {
                    errors.push(error);
                }
                code
            }
            Err(_) => {
                conn = None;
                client.uncertain = true;
                if errors.len() < 5 {
                    errors.push(format!("no response within {:?}", target.timeout));
                }
                FAIL_TIMEOUT
            }
        };
        samples.push(Sample {
            start_us: micros(started.duration_since(origin)),
            latency_us: micros(latency),
            outcome,
        });
        if outcome == FAIL_IO && conn.is_none() {
            // Do not spin on a server that refuses connections.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Connection {
        samples,
        errors,
        client,
        bytes,
    }
}

type Failure = (u8, String);

/// A response read to its end.
struct Answer {
    outcome: u8,
    /// Whether the client's cookies changed.
    cookies_changed: bool,
    /// Body bytes of a 2xx response, 0 otherwise.
    body_bytes: u64,
}

/// Reads more of the response into `buf`, with room for a large read.
async fn fill(stream: &mut Box<dyn Io>, buf: &mut Vec<u8>, what: &str) -> Result<(), Failure> {
    if buf.capacity() - buf.len() < 16 * 1024 {
        buf.reserve(64 * 1024);
    }
    match stream.read_buf(buf).await {
        Ok(0) => Err((FAIL_IO, format!("connection closed {what}"))),
        Ok(_) => Ok(()),
        Err(e) => Err((FAIL_IO, format!("connection error: {e}"))),
    }
}

/// Where the line starting at `pos` ends (its CR), or `None` while it is incomplete.
fn line_end(buf: &[u8], pos: usize) -> Result<Option<usize>, String> {
    let rest = buf.get(pos..).unwrap_or_default();
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some(pos + i)),
        None if rest.len() > 4096 => Err("a chunk line longer than 4 KiB".into()),
        None => Ok(None),
    }
}

/// The size of the chunk whose size line is `line` (extensions ignored).
fn chunk_size(line: &[u8]) -> Result<usize, String> {
    let text = String::from_utf8_lossy(line);
    let hex = text.split(';').next().unwrap_or_default().trim();
    usize::from_str_radix(hex, 16).map_err(|_| format!("bad chunk size line {text:?}"))
}

/// One step of a chunked body whose next size line starts at `pos`.
#[derive(Debug, PartialEq, Eq)]
enum Chunk {
    /// More bytes are needed.
    Incomplete,
    /// Data at `start..start + len`; the next size line starts at `start + len + 2`.
    Data { start: usize, len: usize },
    /// The last chunk and the trailers: the body ends before `end`.
    End { end: usize },
}

/// Parses the chunk whose size line starts at `pos`.
fn chunk_at(buf: &[u8], pos: usize) -> Result<Chunk, String> {
    let Some(eol) = line_end(buf, pos)? else {
        return Ok(Chunk::Incomplete);
    };
    let len = chunk_size(&buf[pos..eol])?;
    let start = eol + 2;
    if len == 0 {
        // Trailer lines until an empty one.
        let mut at = start;
        loop {
            match line_end(buf, at)? {
                None => return Ok(Chunk::Incomplete),
                Some(e) if e == at => return Ok(Chunk::End { end: at + 2 }),
                Some(e) => at = e + 2,
            }
        }
    }
    let Some(after) = buf.get(start + len..start + len + 2) else {
        return Ok(Chunk::Incomplete);
    };
    if after != b"\r\n" {
        return Err("chunk data not followed by CRLF".into());
    }
    Ok(Chunk::Data { start, len })
}

/// Reads a chunked body whose first size line starts at `head`; returns where it ends in `buf`,
/// and its data when `keep` (otherwise empty).
async fn read_chunked(
    stream: &mut Box<dyn Io>,
    buf: &mut Vec<u8>,
    head: usize,
    keep: bool,
) -> Result<(usize, u64, Vec<u8>), Failure> {
    let (mut pos, mut total, mut data) = (head, 0u64, Vec::new());
    loop {
        match chunk_at(buf, pos).map_err(|e| (FAIL_IO, format!("malformed chunked body: {e}")))? {
            Chunk::Incomplete => fill(stream, buf, "mid-body").await?,
            Chunk::Data { start, len } => {
                if keep {
                    data.extend_from_slice(&buf[start..start + len]);
                }
                total += len as u64;
                pos = start + len + 2;
            }
            Chunk::End { end } => return Ok((end, total, data)),
        }
    }
}

/// Decodes a whole chunked body.
fn decode_chunked(body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let (mut pos, mut data) = (0, Vec::new());
    loop {
        match chunk_at(body, pos).map_err(anyhow::Error::msg)? {
            Chunk::Incomplete => anyhow::bail!("incomplete chunked body"),
            Chunk::Data { start, len } => {
                data.extend_from_slice(&body[start..start + len]);
                pos = start + len + 2;
            }
            Chunk::End { .. } => return Ok(data),
        }
    }
}

/// Sends one request and reads its response; leaves `conn` open for the next one unless the
/// server asked to close.
async fn exchange(
    conn: &mut Option<Box<dyn Io>>,
    target: &Target,
    request: &[u8],
    buf: &mut Vec<u8>,
    client: &mut Client,
) -> Result<Answer, Failure> {
    let io = |e: std::io::Error| (FAIL_IO, format!("connection error: {e}"));
    if conn.is_none() {
        let stream = TcpStream::connect(target.addr).await.map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        *conn = Some(match &target.tls {
            None => Box::new(stream),
            Some(tls) => Box::new(
                tls.connector
                    .connect(tls.name.clone(), stream)
                    .await
                    .map_err(|e| (FAIL_IO, format!("TLS handshake: {e}")))?,
            ),
        });
        buf.clear();
    }
    let Some(stream) = conn.as_mut() else {
        return Err((FAIL_IO, "no connection".into()));
    };
    stream.write_all(request).await.map_err(io)?;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(buf) {
            Ok(httparse::Status::Complete(head)) => {
                let status = response.code.unwrap_or(0);
                let mut length = None;
                let mut chunked = false;
                let mut tag = OK_UNTAGGED;
                let mut close = false;
                let mut tolerated = false;
                let mut set_cookies = Vec::new();
                for header in response.headers.iter() {
                    if header.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(header.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<usize>().ok());
                    } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                        chunked = String::from_utf8_lossy(header.value)
                            .to_ascii_lowercase()
                            .contains("chunked");
                    } else if header.name.eq_ignore_ascii_case("x-baton-version") {
                        tolerated = target
                            .tolerate_5xx_from
                            .as_ref()
                            .is_some_and(|v| v.as_bytes() == header.value);
                        if let Some(i) = target
                            .versions
                            .iter()
                            .position(|v| v.as_bytes() == header.value)
                        {
                            tag = u8::try_from(i + 1).unwrap_or(OK_UNTAGGED);
                        }
                    } else if header.name.eq_ignore_ascii_case("connection") {
                        close = header.value.eq_ignore_ascii_case(b"close");
                    } else if target.cookies && header.name.eq_ignore_ascii_case("set-cookie") {
                        set_cookies.push(String::from_utf8_lossy(header.value).into_owned());
                    }
                }
                let ok = (200..300).contains(&status);
                // The body: its end in `buf`, its length, and its bytes when they are checked.
                let (end, body_bytes, body) = if chunked {
                    read_chunked(stream, buf, head, ok && target.counter).await?
                } else if let Some(length) = length {
                    while buf.len() < head + length {
                        fill(stream, buf, "mid-body").await?;
                    }
                    let body = if ok && target.counter {
                        buf[head..head + length].to_vec()
                    } else {
                        Vec::new()
                    };
                    (head + length, length as u64, body)
                } else {
                    return Err((FAIL_IO, format!("status {status} without content-length")));
                };
                let checked = if !ok {
                    Ok(())
                } else if target.counter {
                    client.check_count(&body)
                } else {
                    match target.body_bytes {
                        Some(want) if want != body_bytes => {
                            Err(format!("a body of {body_bytes} bytes, expected {want}"))
                        }
                        _ => Ok(()),
                    }
                };
                buf.drain(..end);
                if close {
                    if target.reconnect {
                        // Let the server close first, so the TIME_WAIT state (and a local
                        // port with it) stays on the server's side and the load never runs
                        // out of ports.
                        while matches!(stream.read_buf(buf).await, Ok(n) if n > 0) {}
                    }
                    *conn = None;
                }
                for cookie in &set_cookies {
                    client.set_cookie(cookie);
                }
                let cookies_changed = !set_cookies.is_empty();
                if tolerated && (500..600).contains(&status) {
                    return Ok(Answer {
                        outcome: TOLERATED_5XX,
                        cookies_changed,
                        body_bytes: 0,
                    });
                }
                if !ok {
                    return Err((FAIL_STATUS, format!("status {status}")));
                }
                checked.map_err(|e| (FAIL_BODY, e))?;
                return Ok(Answer {
                    outcome: tag,
                    cookies_changed,
                    body_bytes,
                });
            }
            Ok(httparse::Status::Partial) => fill(stream, buf, "before a response").await?,
            Err(e) => return Err((FAIL_IO, format!("malformed response: {e}"))),
        }
    }
}

/// A response read to its end by [`request`].
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, chunked encoding decoded.
    pub body: Vec<u8>,
}

impl Reply {
    /// The first value of header `name` (lower case), or `""`.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Every value of header `name` (lower case).
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` on a fresh connection (`Connection: close`); returns status and body.
///
/// # Errors
/// Connection errors and malformed responses.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let reply = request(addr, "GET", path, &[], &[]).await?;
    Ok((reply.status, reply.body))
}

/// `POST path` with `body` on a fresh connection (`Connection: close`); returns status and body.
///
/// # Errors
/// Connection errors and malformed responses.
pub async fn post(addr: SocketAddr, path: &str, body: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let reply = request(addr, "POST", path, &[], body).await?;
    Ok((reply.status, reply.body))
}

/// `method path` with `headers` and `body` on a fresh connection (`Connection: close`), read
/// to its end.
///
/// # Errors
/// Connection errors and malformed responses.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<Reply> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    let mut parsed = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut parsed);
    let httparse::Status::Complete(head) = response.parse(&buf)? else {
        anyhow::bail!("incomplete response from {addr}{path}");
    };
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        decode_chunked(&buf[head..])?
    } else {
        buf[head..].to_vec()
    };
    Ok(Reply {
        status: response.code.unwrap_or(0),
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_keeps_sends_and_forgets_cookies() {
        let target = Target::new(([127, 0, 0, 1], 80).into(), "/counter/", Duration::ZERO);
        let mut client = Client::default();
        assert!(
            !String::from_utf8(client.request(&target))
                .unwrap()
                .contains("Cookie")
        );
        client.set_cookie("BATON_SESSION=abc; Path=/; HttpOnly; SameSite=Lax");
        client.set_cookie("other=1");
        let request = String::from_utf8(client.request(&target)).unwrap();
        assert!(request.contains("\r\nCookie: BATON_SESSION=abc; other=1\r\n\r\n"));
        client.set_cookie("BATON_SESSION=; Path=/; Max-Age=0");
        assert_eq!(client.cookies, [("other".to_owned(), "1".to_owned())]);
        assert_eq!(client.cookies_set, 2);
    }

    #[test]
    fn counts_must_go_up_by_one() {
        let mut client = Client::default();
        assert!(client.check_count(b"count 1\n").is_ok());
        assert!(client.check_count(b"count 2\n").is_ok());
        // A new session starts again at 1: the old one was lost.
        assert!(client.check_count(b"count 1\n").is_err());
        assert!(client.check_count(b"count 2\n").is_ok());
        assert!(client.check_count(b"hello\n").is_err());
        // After a failed request the server may have counted it or not.
        client.uncertain = true;
        assert!(client.check_count(b"count 4\n").is_ok());
        assert!(client.check_count(b"count 6\n").is_err());
        assert_eq!(client.counts_ok, 4);
    }

    #[test]
    fn chunked_bodies_are_decoded_across_reads() {
        let body = b"4\r\nabcd\r\n3;ext=1\r\nefg\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        assert_eq!(decode_chunked(body).unwrap(), b"abcdefg");
        assert_eq!(chunk_at(body, 0), Ok(Chunk::Data { start: 3, len: 4 }));
        assert_eq!(chunk_at(body, 9), Ok(Chunk::Data { start: 18, len: 3 }));
        assert_eq!(chunk_at(body, 23), Ok(Chunk::End { end: 42 }));
        assert_eq!(&body[42..], b"NEXT");
        // Any prefix is incomplete, never an error or a short body.
        for cut in 0..42 {
            let parsed = (0..)
                .try_fold(0, |pos, _| match chunk_at(&body[..cut], pos) {
                    Ok(Chunk::Data { start, len }) => Ok(start + len + 2),
                    other => Err(other),
                })
                .unwrap_err();
            assert_eq!(parsed, Ok(Chunk::Incomplete), "cut at {cut}");
        }
        assert!(decode_chunked(b"zz\r\n").is_err());
        assert!(decode_chunked(b"2\r\nabcd\r\n").is_err());
    }
}
