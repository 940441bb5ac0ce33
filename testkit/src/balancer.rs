//! A load balancer in front of Baton hosts: Debian's `nginx` or `haproxy` as a child process,
//! running the configuration the README documents (`docs/nginx.conf`, `docs/haproxy.cfg`) with
//! the run's own addresses put in place of the example ones, on a free local port. Its
//! configuration, logs and temporary files live in a temporary directory; it is stopped when
//! dropped.
//!
//! The example hosts in the docs are `10.0.0.N:8080` (apps) with their admin API on port
//! 9090; the balancer listens on port 80. A docs file that no longer has those is an error
//! here, so the docs cannot drift from what the tests run. A missing `nginx` or `haproxy` is a
//! clear failure, never a silent skip.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::process::{Signal, signal};

/// Which load balancer, and the docs file it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `nginx` with `docs/nginx.conf` (an `http`-block snippet): passive checks.
    Nginx,
    /// `haproxy` with `docs/haproxy.cfg`: active checks of each host's `/readyz`.
    Haproxy,
}

impl Kind {
    fn program(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
        }
    }

    /// The configuration the README documents for this balancer.
    pub fn docs_file(self) -> PathBuf {
        let name = match self {
            Kind::Nginx => "nginx.conf",
            Kind::Haproxy => "haproxy.cfg",
        };
        crate::build::workspace().join("docs").join(name)
    }

    /// The line in the docs file that says where the balancer listens.
    fn listen_line(self) -> &'static str {
        match self {
            Kind::Nginx => "listen 80;",
            Kind::Haproxy => "bind :80",
        }
    }

    /// That line for a local port.
    fn listen_on(self, port: u16) -> String {
        match self {
            Kind::Nginx => format!("listen 127.0.0.1:{port};"),
            Kind::Haproxy => format!("bind 127.0.0.1:{port}"),
        }
    }
}

/// A Baton host as a balancer sees it.
#[derive(Debug, Clone, Copy)]
pub struct Backend {
    /// Where it serves apps (`--listen`).
    pub addr: SocketAddr,
    /// Where its admin API answers (`--admin`), for `/readyz`.
    pub admin: SocketAddr,
}

/// The example host in the docs files whose line stands for every host.
const FIRST_HOST: &str = "10.0.0.1:8080";
/// Any example host's address.
const EXAMPLE_HOSTS: &str = "10.0.0.";
const EXAMPLE_ADMIN: &str = "port 9090";
const EXAMPLE_NAME: &str = "baton1 ";

/// `text` (a docs configuration) for `backends`, listening on `127.0.0.1:port`: the example
/// hosts' lines become one line per backend, made from the first one's.
///
/// # Errors
/// If the text no longer has the listen line or the example hosts it had.
pub fn render(kind: Kind, text: &str, backends: &[Backend], port: u16) -> anyhow::Result<String> {
    let listen = kind.listen_line();
    let drifted = |what: &str| {
        anyhow::anyhow!(
            "{} changed: it has no {what}; update the test kit's balancer with it",
            kind.docs_file().display()
        )
    };
    if !text.lines().any(|l| l.trim() == listen) {
        return Err(drifted(&format!("`{listen}` line")));
    }
    let template = text
        .lines()
        .find(|l| l.contains(FIRST_HOST))
        .ok_or_else(|| drifted(&format!("host {FIRST_HOST}")))?;
    if kind == Kind::Haproxy && !template.contains(EXAMPLE_ADMIN) {
        return Err(drifted(&format!(
            "`{EXAMPLE_ADMIN}` on the {FIRST_HOST} line"
        )));
    }
    let mut out = String::new();
    for line in text.lines() {
        if line.trim() == listen {
            out.push_str(&line.replace(listen, &kind.listen_on(port)));
        } else if line == template {
            for (i, backend) in backends.iter().enumerate() {
                let host = line
                    .replace(FIRST_HOST, &backend.addr.to_string())
                    .replace(EXAMPLE_ADMIN, &format!("port {}", backend.admin.port()))
                    .replace(EXAMPLE_NAME, &format!("baton{} ", i + 1));
                out.push_str(&host);
                out.push('\n');
            }
            continue;
        } else if line.contains(EXAMPLE_HOSTS) && !line.trim_start().starts_with('#') {
            continue;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    Ok(out)
}

/// A running `nginx` or `haproxy`, stopped when dropped.
#[derive(Debug)]
pub struct Balancer {
    child: Child,
    kind: Kind,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Balancer {
    /// Starts `kind` in front of `backends` with the docs configuration and waits until it
    /// accepts connections.
    ///
    /// # Panics
    /// If it does not start (see [`Balancer::try_start`]).
    pub fn start(kind: Kind, backends: &[Backend]) -> Balancer {
        Self::try_start(kind, backends).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Starts `kind` in front of `backends` with the docs configuration and waits until it
    /// accepts connections.
    ///
    /// # Errors
    /// If the program is not installed, the docs file cannot be read or has drifted, or it
    /// does not accept connections within 10 s (after a few ports).
    pub fn try_start(kind: Kind, backends: &[Backend]) -> anyhow::Result<Balancer> {
        let program = find(kind.program()).with_context(|| {
            format!(
                "{0} is not installed; the fleet tests need it (`apt-get install {0}`; \
                 .ci/run does this)",
                kind.program()
            )
        })?;
        let docs = kind.docs_file();
        let text = std::fs::read_to_string(&docs)
            .with_context(|| format!("cannot read {}", docs.display()))?;
        let mut last = None;
        // Another process may take the free port before the balancer binds it: try a few.
        for _ in 0..5 {
            let port = crate::redis::free_port()?;
            let config = render(kind, &text, backends, port)?;
            match Self::spawn(kind, &program, &config, port) {
                Ok(balancer) => return Ok(balancer),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("{} did not start", kind.program())))
    }

    fn spawn(kind: Kind, program: &Path, config: &str, port: u16) -> anyhow::Result<Balancer> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let log = std::fs::File::create(d.join("stderr.log"))?;
        let mut cmd = Command::new(program);
        match kind {
            Kind::Nginx => {
                // The docs file is a snippet of the `http` block; the rest is what a packaged
                // nginx.conf has, with every path in the temporary directory.
                let temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
                    .map(|t| format!("    {t}_temp_path {};\n", d.join(t).display()))
                    .concat();
                let full = format!(
                    "daemon off;\nworker_processes 1;\npid {pid};\nerror_log {log} warn;\n\
                     events {{\n    worker_connections 1024;\n}}\nhttp {{\n    access_log off;\n\
                     {temp}{config}}}\n",
                    pid = d.join("nginx.pid").display(),
                    log = d.join("error.log").display(),
                );
                std::fs::write(d.join("nginx.conf"), full)?;
                cmd.arg("-p")
                    .arg(d)
                    .arg("-c")
                    .arg(d.join("nginx.conf"))
                    .arg("-e")
                    .arg(d.join("error.log"));
            }
            Kind::Haproxy => {
                std::fs::write(d.join("haproxy.cfg"), config)?;
                cmd.arg("-f").arg(d.join("haproxy.cfg")).arg("-db");
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("cannot run {}", program.display()))?;
        let mut balancer = Balancer {
            child,
            kind,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&balancer.addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = balancer.child.try_wait()? {
                bail!(
                    "{} exited with {status} on port {port}:\n{}",
                    kind.program(),
                    balancer.log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not accept connections on port {port} within 10 s:\n{}",
                    kind.program(),
                    balancer.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(balancer)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What it logged so far: its standard output and error (HAProxy's server state changes)
    /// and nginx's error log (failed attempts on a host).
    pub fn log(&self) -> String {
        ["stderr.log", "error.log"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(self.dir.path().join(f)).ok())
            .collect::<Vec<_>>()
            .join("")
    }

    /// Which balancer this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        // nginx's master stops its workers on SIGTERM; killed at once, it would leave them.
        if signal(self.child.id(), Signal::TERM).is_ok() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `program` on PATH, or in the system directories Debian installs daemons to (which are not
/// on an unprivileged user's PATH).
fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends() -> Vec<Backend> {
        (0..2)
            .map(|i| Backend {
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 8000 + i)),
                admin: SocketAddr::from((Ipv4Addr::LOCALHOST, 9000 + i)),
            })
            .collect()
    }

    #[test]
    fn the_docs_configurations_render_for_any_number_of_hosts() {
        for kind in [Kind::Nginx, Kind::Haproxy] {
            let text = std::fs::read_to_string(kind.docs_file()).unwrap();
            let config = render(kind, &text, &backends(), 4242).unwrap();
            assert!(config.contains("127.0.0.1:4242"), "{config}");
            assert!(!config.contains("10.0.0.2"), "{config}");
            assert_eq!(config.matches("127.0.0.1:8001").count(), 1, "{config}");
            if kind == Kind::Haproxy {
                assert!(
                    config.contains("server baton2 127.0.0.1:8001 check port 9001"),
                    "{config}"
                );
            }
        }
    }

    #[test]
    fn a_drifted_docs_file_is_an_error() {
        let err = render(Kind::Nginx, "listen 8080;\n", &backends(), 1).unwrap_err();
        assert!(err.to_string().contains("listen 80;"), "{err}");
    }
}
