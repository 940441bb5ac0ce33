//! The load generator: HTTP/1.1 keep-alive connections over raw tokio TCP, one request in
//! flight per connection, every request recorded.
//!
//! It does the least work a correct client can (a prebuilt request, `httparse` on the response
//! head, the body skipped by length) so that on a small machine it costs the server under test
//! as little CPU as possible, and it costs both servers of a comparison the same.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A 2xx response without a known version header.
pub const OK_UNTAGGED: u8 = 0;
/// A response with a status other than 2xx.
pub const FAIL_STATUS: u8 = 250;
/// A connection error (refused, reset, closed mid-response, malformed response).
pub const FAIL_IO: u8 = 251;
/// No complete response within the request timeout.
pub const FAIL_TIMEOUT: u8 = 252;

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
}

impl Recorded {
    /// Requests that failed.
    pub fn failed(&self) -> usize {
        self.samples.iter().filter(|s| s.failed()).count()
    }
}

/// Keep-alive load from a number of connections, until stopped.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<(Vec<Sample>, Vec<String>)>>,
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
            if let Ok((samples, errors)) = task.await {
                recorded.samples.extend(samples);
                if recorded.errors.len() < 20 {
                    recorded.errors.extend(errors);
                }
            }
        }
        recorded
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

async fn connection(
    target: &Target,
    stop: &AtomicBool,
    origin: Instant,
) -> (Vec<Sample>, Vec<String>) {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: swapbench\r\n\r\n",
        target.path, target.addr
    )
    .into_bytes();
    let mut samples = Vec::with_capacity(1 << 16);
    let mut errors = Vec::new();
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            target.timeout,
            exchange(&mut conn, target, &request, &mut buf),
        )
        .await;
        let latency = started.elapsed();
        let outcome = match outcome {
            Ok(Ok(outcome)) => outcome,
            Ok(Err((code, error))) => {
                conn = None;
                if errors.len() < 5 {
                    errors.push(error);
                }
                code
            }
            Err(_) => {
                conn = None;
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
    (samples, errors)
}

type Failure = (u8, String);

/// Sends one request and reads its response; leaves `conn` open for the next one unless the
/// server asked to close.
async fn exchange(
    conn: &mut Option<TcpStream>,
    target: &Target,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<u8, Failure> {
    let io = |e: std::io::Error| (FAIL_IO, format!("connection error: {e}"));
    if conn.is_none() {
        let stream = TcpStream::connect(target.addr).await.map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        *conn = Some(stream);
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
                let mut tag = OK_UNTAGGED;
                let mut close = false;
                for header in response.headers.iter() {
                    if header.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(header.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<usize>().ok());
                    } else if header.name.eq_ignore_ascii_case("x-baton-version") {
                        if let Some(i) = target
                            .versions
                            .iter()
                            .position(|v| v.as_bytes() == header.value)
                        {
                            tag = u8::try_from(i + 1).unwrap_or(OK_UNTAGGED);
                        }
                    } else if header.name.eq_ignore_ascii_case("connection") {
                        close = header.value.eq_ignore_ascii_case(b"close");
                    }
                }
                let Some(length) = length else {
                    return Err((FAIL_IO, format!("status {status} without content-length")));
                };
                while buf.len() < head + length {
                    if stream.read_buf(buf).await.map_err(io)? == 0 {
                        return Err((FAIL_IO, "connection closed mid-body".into()));
                    }
                }
                buf.drain(..head + length);
                if close {
                    *conn = None;
                }
                return if (200..300).contains(&status) {
                    Ok(tag)
                } else {
                    Err((FAIL_STATUS, format!("status {status}")))
                };
            }
            Ok(httparse::Status::Partial) => {
                if stream.read_buf(buf).await.map_err(io)? == 0 {
                    return Err((FAIL_IO, "connection closed before a response".into()));
                }
            }
            Err(e) => return Err((FAIL_IO, format!("malformed response: {e}"))),
        }
    }
}

/// `GET path` on a fresh connection (`Connection: close`); returns status and body.
///
/// # Errors
/// Connection errors and malformed responses.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(&buf)? {
        httparse::Status::Complete(head) => Ok((response.code.unwrap_or(0), buf[head..].to_vec())),
        httparse::Status::Partial => anyhow::bail!("incomplete response from {addr}{path}"),
    }
}
