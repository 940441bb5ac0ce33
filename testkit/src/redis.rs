//! A private `redis-server` for one test or run: started from PATH on a free local port with
//! nothing written to disk (`--save "" --appendonly no`), killed on purpose with
//! [`RedisServer::kill`], frozen with [`RedisServer::pause`], started again on the same port
//! with [`RedisServer::restart`], and killed on drop.
//!
//! A missing `redis-server` is a clear failure, never a silent skip: the tests that need it run
//! in the default test command.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::process::{Signal, signal};

/// A running (or killed) `redis-server` child process.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// `redis-server` is not installed.
#[derive(Debug)]
struct NotOnPath;

impl std::fmt::Display for NotOnPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "redis-server is not on PATH; the session tests and sessionbench need it \
             (install Redis, e.g. `apt-get install redis-server`)",
        )
    }
}

impl std::error::Error for NotOnPath {}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// # Panics
    /// If it does not start (see [`RedisServer::try_start`]).
    pub fn start() -> RedisServer {
        Self::try_start().unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// # Errors
    /// If `redis-server` is not on PATH, or does not answer within 10 s (after a few ports).
    pub fn try_start() -> anyhow::Result<RedisServer> {
        let mut last = None;
        // Another process may take the free port before the server binds it: try a few.
        for _ in 0..5 {
            let mut server = RedisServer {
                child: None,
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?)),
                dir: tempfile::tempdir()?,
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) if e.is::<NotOnPath>() => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let port = self.addr.port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => anyhow::Error::new(NotOnPath),
                _ => anyhow::Error::new(e).context("cannot run redis-server"),
            })?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.ping() {
            let exited = child.try_wait()?;
            if exited.is_some() || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                match exited {
                    Some(status) => bail!("redis-server exited with {status} on port {port}"),
                    None => bail!("redis-server gave no answer on port {port} within 10 s"),
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        Ok(())
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

    /// A direct connection, to look at what a host stored.
    ///
    /// # Panics
    /// If the server does not accept one within 5 s.
    pub fn conn(&self) -> ::redis::Connection {
        ::redis::Client::open(self.url())
            .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url()))
    }

    /// The process id.
    ///
    /// # Panics
    /// If the server was killed.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server is running").id()
    }

    /// Kills the server (SIGKILL) and waits for it to exit; its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing answers.
    ///
    /// # Panics
    /// If the server was killed.
    pub fn pause(&self) {
        signal(self.pid(), Signal::STOP).unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Lets a paused server run again (SIGCONT).
    ///
    /// # Panics
    /// If the server was killed.
    pub fn resume(&self) {
        signal(self.pid(), Signal::CONT).unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Starts the server again on the same port, empty.
    ///
    /// # Panics
    /// If it does not come up.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn()
            .unwrap_or_else(|e| panic!("redis-server did not restart: {e:#}"));
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A local port no one listens on right now.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .context("cannot bind a local port")?
        .local_addr()?
        .port())
}
