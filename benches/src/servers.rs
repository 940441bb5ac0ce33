//! The servers under test, as child processes: the `baton` host on a temporary modules
//! directory, and the `hyper-hello` baseline. Both listen on port 0 and say where on stderr.
//!
//! The host's log goes to a file, as it would in production: the harness reads it only until
//! the host says where it listens, and again at the end for warnings, so its own work on the log
//! (a line per request with the access log) never competes with the host it measures.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// A child process that is killed when dropped.
#[derive(Debug)]
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `baton serve`.
#[derive(Debug)]
pub struct Baton {
    child: Killed,
    /// HTTP listener.
    pub addr: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// HTTPS listener, when started with `--listen-tls`.
    pub tls_addr: Option<SocketAddr>,
    /// The watched modules directory.
    pub modules: PathBuf,
    /// The host's private module store (`state/store`).
    pub store: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Baton {
    /// Starts `baton` serving `module` (as `hello.so`), with `config` as its config file.
    ///
    /// # Errors
    /// If it does not start listening within a minute.
    pub fn start(binary: &Path, module: &Path, config: &str) -> anyhow::Result<Baton> {
        Baton::start_with(binary, &[("hello", module)], config, &[])
    }

    /// Starts `baton` serving each `(app, module)` as `app.so` (at `/app/`), with `config` as
    /// its config file and `args` after the others on its command line.
    ///
    /// # Errors
    /// If it does not start listening within a minute.
    pub fn start_with(
        binary: &Path,
        apps: &[(&str, &Path)],
        config: &str,
        args: &[&str],
    ) -> anyhow::Result<Baton> {
        let dir = tempfile::tempdir()?;
        let modules = dir.path().join("modules");
        std::fs::create_dir_all(&modules)?;
        for (app, module) in apps {
            std::fs::copy(module, modules.join(format!("{app}.so")))
                .with_context(|| format!("cannot copy {}", module.display()))?;
        }
        let config_file = dir.path().join("baton.toml");
        std::fs::write(&config_file, config)?;
        let state = dir.path().join("state");
        let log = dir.path().join("baton.log");
        let child = Command::new(binary)
            .arg("serve")
            // One process: the figures (RSS, mappings) are those of the serving process.
            .arg("--no-supervisor")
            .arg("--config")
            .arg(&config_file)
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .arg("--modules")
            .arg(&modules)
            .arg("--state-dir")
            .arg(&state)
            .args(args)
            .env("BATON_LOG_FORMAT", "json")
            .env("BATON_LOG", "info")
            .env_remove("RUST_LOG")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log)?))
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut child = Killed(child);
        let (mut addr, mut admin, mut tls_addr) = (None, None, None);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut reader = BufReader::new(std::fs::File::open(&log)?);
        let mut line = String::new();
        while addr.is_none() || admin.is_none() {
            line.clear();
            if reader.read_line(&mut line)? == 0 || !line.ends_with('\n') {
                // Not a whole line yet: wait for the host to write more.
                if std::time::Instant::now() > deadline {
                    bail!("baton did not start listening within 60 s");
                }
                if !matches!(child.0.try_wait(), Ok(None)) {
                    bail!("baton exited before listening; its log: {}", log.display());
                }
                std::thread::sleep(Duration::from_millis(10));
                if !line.is_empty() {
                    // Re-read the partial line from its start next time.
                    reader.seek_relative(-(line.len() as i64))?;
                }
                continue;
            }
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(at) = value["addr"].as_str() {
                let at: SocketAddr = at.parse()?;
                match value["message"].as_str() {
                    Some("listening") => {
                        addr = Some(at);
                        tls_addr = value["tls_addr"].as_str().map(str::parse).transpose()?;
                    }
                    Some("admin listening") => admin = Some(at),
                    _ => {}
                }
            }
        }
        Ok(Baton {
            child,
            addr: addr.context("no address")?,
            admin: admin.context("no admin address")?,
            tls_addr,
            modules,
            store: state.join("store"),
            log,
            _dir: dir,
        })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Waits until `path` answers 200 over plain HTTP.
    ///
    /// # Errors
    /// If it does not within a minute.
    pub async fn wait_ready(&self, path: &str) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match crate::load::get(self.addr, path).await {
                Ok((200, _)) => return Ok(()),
                answer if std::time::Instant::now() > deadline => {
                    bail!("{path} does not answer 200 within 60 s: {answer:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.0.try_wait(), Ok(None))
    }

    /// Warnings and errors the host logged so far (and anything it printed that was not JSON),
    /// at most 1,000.
    pub fn warnings(&self) -> Vec<String> {
        let Ok(file) = std::fs::File::open(&self.log) else {
            return Vec::new();
        };
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter(|line| {
                !line.contains(r#""target":"baton::access""#)
                    && serde_json::from_str::<serde_json::Value>(line).map_or(true, |v| {
                        matches!(v["level"].as_str(), Some("WARN" | "ERROR"))
                    })
            })
            .take(1000)
            .collect()
    }

    /// Drops `module` into the watched directory as `hello.so` the way operators should: copy to
    /// a hidden temporary name, then rename. Returns right after the rename.
    ///
    /// # Errors
    /// File system errors.
    pub fn drop_module(&self, module: &Path) -> anyhow::Result<()> {
        let tmp = self.modules.join(".hello.so.tmp");
        std::fs::copy(module, &tmp)?;
        std::fs::rename(&tmp, self.modules.join("hello.so"))?;
        Ok(())
    }
}

/// A running `hyper-hello`.
#[derive(Debug)]
pub struct HyperHello {
    child: Killed,
    /// HTTP listener.
    pub addr: SocketAddr,
}

impl HyperHello {
    /// Starts the baseline server.
    ///
    /// # Errors
    /// If it does not say where it listens.
    pub fn start(binary: &Path) -> anyhow::Result<HyperHello> {
        HyperHello::start_with(binary, &[])
    }

    /// Starts the baseline server with `args` (e.g. `--tls-cert FILE --tls-key FILE`).
    ///
    /// # Errors
    /// If it does not say where it listens.
    pub fn start_with(binary: &Path, args: &[&str]) -> anyhow::Result<HyperHello> {
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let child = Killed(child);
        let mut stderr = BufReader::new(stderr);
        let mut line = String::new();
        stderr.read_line(&mut line)?;
        // Keep reading, so the server never writes into a closed pipe.
        std::thread::spawn(move || for _ in stderr.lines().map_while(Result::ok) {});
        let Some(addr) = line.trim().strip_prefix("listening addr=") else {
            bail!("hyper-hello said {line:?}");
        };
        Ok(HyperHello {
            addr: addr.parse()?,
            child,
        })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }
}
