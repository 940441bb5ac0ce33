//! A private `redis-server` for one run: from PATH, on a free local port, nothing written to
//! disk (`--save "" --appendonly no`), killed when dropped.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running `redis-server` child process.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// # Errors
    /// If `redis-server` is not on PATH, or does not answer within 10 s (after a few ports).
    pub fn start() -> anyhow::Result<RedisServer> {
        let mut last = None;
        // Another process may take the free port before the server binds it: try a few.
        for _ in 0..5 {
            match RedisServer::start_on(free_port()?) {
                Ok(server) => return Ok(server),
                Err(e) if e.is::<NotOnPath>() => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    fn start_on(port: u16) -> anyhow::Result<RedisServer> {
        let dir = tempfile::tempdir()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => anyhow::Error::new(NotOnPath),
                _ => anyhow::Error::new(e).context("cannot run redis-server"),
            })?;
        let mut server = RedisServer {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.ping() {
            if let Some(status) = server.child.try_wait()? {
                bail!("redis-server exited with {status} on port {port}");
            }
            if Instant::now() > deadline {
                bail!("redis-server gave no answer on port {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    fn ping(&self) -> bool {
        let answer = || -> std::io::Result<bool> {
            let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200))?;
            stream.set_read_timeout(Some(Duration::from_millis(500)))?;
            stream.write_all(b"PING\r\n")?;
            let mut reply = [0u8; 7];
            stream.read_exact(&mut reply)?;
            Ok(&reply == b"+PONG\r\n")
        };
        answer().unwrap_or(false)
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `redis-server` is not installed.
#[derive(Debug)]
struct NotOnPath;

impl std::fmt::Display for NotOnPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "redis-server is not on PATH; the session benchmark needs it \
             (install Redis, e.g. `apt-get install redis-server`)",
        )
    }
}

impl std::error::Error for NotOnPath {}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .context("cannot bind a local port")?
        .local_addr()?
        .port())
}
