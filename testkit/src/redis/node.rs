//! One `redis-server` process and the helpers every launcher shares: free loopback ports, the
//! arguments of a data node (no persistence), synchronous queries, and polling with a deadline.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a topology may take to come up, or to fail over.
pub(crate) const SETTLE: Duration = Duration::from_secs(60);

/// `redis-server` is not installed.
#[derive(Debug)]
pub(crate) struct NotOnPath;

impl std::fmt::Display for NotOnPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "redis-server is not on PATH; the session tests and sessionbench need it \
             (install Redis, e.g. `apt-get install redis-server`)",
        )
    }
}

impl std::error::Error for NotOnPath {}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .context("cannot bind a local port")?
        .local_addr()?
        .port())
}

/// `start(port)` on a free port; on another if it fails (another process may take the port
/// before the server binds it), a few times.
///
/// # Errors
/// The last failure, or at once [`NotOnPath`].
pub(crate) fn on_a_free_port<T>(
    mut start: impl FnMut(u16) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut last = None;
    for _ in 0..5 {
        match start(free_port()?) {
            Ok(started) => return Ok(started),
            Err(e) if e.is::<NotOnPath>() => return Err(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
}

/// Polls `ready` every 50 ms until it holds.
///
/// # Errors
/// Naming `what`, if it does not hold within `timeout`.
pub(crate) fn try_wait_until(
    timeout: Duration,
    what: &str,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A synchronous connection to `url`, or `None` if it does not answer.
pub(crate) fn connect(url: &str) -> Option<::redis::Connection> {
    ::redis::Client::open(url)
        .ok()?
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()
}

/// `cmd` on the server at `url`, or `None` if it does not answer.
pub(crate) fn query<T: ::redis::FromRedisValue>(url: &str, cmd: &::redis::Cmd) -> Option<T> {
    cmd.query(&mut connect(url)?).ok()
}

/// `redis://127.0.0.1:PORT/0`, with `password` when there is one.
pub(crate) fn local_url(port: u16, password: Option<&str>) -> String {
    match password {
        Some(password) => format!("redis://:{password}@127.0.0.1:{port}/0"),
        None => format!("redis://127.0.0.1:{port}/0"),
    }
}

/// Whether the server on `port` answers `PING`.
pub(crate) fn pings(port: u16, password: Option<&str>) -> bool {
    query::<String>(&local_url(port, password), &::redis::cmd("PING")).is_some()
}

/// The arguments every data node gets: loopback only, no persistence.
pub(crate) fn node_args(port: u16, password: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = ["--port", &port.to_string(), "--bind", "127.0.0.1"]
        .into_iter()
        .chain(["--save", "", "--appendonly", "no"])
        .map(str::to_owned)
        .collect();
    if let Some(password) = password {
        args.extend(["--requirepass", password, "--masterauth", password].map(str::to_owned));
    }
    args
}

/// Starts `redis-server args` in `dir`, its output in `dir/redis-PORT.log`, and waits up to
/// 15 s until `ready`.
///
/// # Errors
/// [`NotOnPath`], or the server exited or did not become ready (it is killed then).
pub(crate) fn spawn(
    dir: &Path,
    port: u16,
    args: &[String],
    ready: impl Fn() -> bool,
) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join(format!("redis-{port}.log")))?;
    let mut child = Command::new("redis-server")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow::Error::new(NotOnPath),
            _ => anyhow::Error::new(e).context("cannot run redis-server"),
        })?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ready() {
        let exited = child.try_wait()?;
        if exited.is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            match exited {
                Some(status) => bail!("redis-server exited with {status} on port {port}"),
                None => bail!("redis-server gave no answer on port {port} within 15 s"),
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

/// One `redis-server` of a topology, on a port of its own, killed on drop.
#[derive(Debug)]
pub struct RedisProc {
    child: Option<Child>,
    /// Its client port.
    pub port: u16,
}

impl RedisProc {
    /// Starts `redis-server` with the arguments `args(port)` makes for a free port, in `dir`,
    /// and waits until `ready(port)`; tries other ports if another process took one.
    ///
    /// # Panics
    /// If it does not start (see [`RedisProc::try_start`]).
    pub fn start(
        dir: &Path,
        args: impl Fn(u16) -> Vec<String>,
        ready: impl Fn(u16) -> bool,
    ) -> RedisProc {
        Self::try_start(dir, args, ready).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// [`RedisProc::start`], returning what went wrong.
    ///
    /// # Errors
    /// If `redis-server` is not on PATH, or does not come up on any of a few ports.
    pub fn try_start(
        dir: &Path,
        args: impl Fn(u16) -> Vec<String>,
        ready: impl Fn(u16) -> bool,
    ) -> anyhow::Result<RedisProc> {
        on_a_free_port(|port| {
            let child = spawn(dir, port, &args(port), || ready(port))?;
            Ok(RedisProc {
                child: Some(child),
                port,
            })
        })
    }

    /// A plain server that wants `password`, its files in `dir`.
    ///
    /// # Panics
    /// If it does not start.
    pub fn with_password(dir: &Path, password: &str) -> RedisProc {
        RedisProc::start(
            dir,
            |port| node_args(port, Some(password)),
            |port| pings(port, Some(password)),
        )
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it was not killed.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.kill();
    }
}
