//! The servers under test, as child processes: the `baton` host on a temporary modules
//! directory, and the `hyper-hello` baseline. Both listen on port 0 and say where on stderr.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
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
    /// The watched modules directory.
    pub modules: PathBuf,
    /// The host's private module store (`state/store`).
    pub store: PathBuf,
    warnings: Arc<Mutex<Vec<String>>>,
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
        let mut child = Command::new(binary)
            .arg("serve")
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
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let child = Killed(child);
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let warnings = Arc::clone(&warnings);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    // The access log is one line per request: skip it without parsing, so the
                    // harness's own work on it does not compete with the host it measures.
                    if line.contains(r#""target":"baton::access""#) {
                        continue;
                    }
                    let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                        push(&warnings, line);
                        continue;
                    };
                    let message = value["message"].as_str().unwrap_or("");
                    if let Some(addr) = value["addr"].as_str() {
                        let _ = tx.send((message.to_owned(), addr.to_owned()));
                    }
                    if matches!(value["level"].as_str(), Some("WARN" | "ERROR")) {
                        push(&warnings, line);
                    }
                }
            });
        }
        let (mut addr, mut admin) = (None, None);
        while addr.is_none() || admin.is_none() {
            let (message, at) = rx
                .recv_timeout(Duration::from_secs(60))
                .context("baton did not start listening within 60 s")?;
            let at: SocketAddr = at.parse()?;
            match message.as_str() {
                "listening" => addr = Some(at),
                "admin listening" => admin = Some(at),
                _ => {}
            }
        }
        Ok(Baton {
            child,
            addr: addr.context("no address")?,
            admin: admin.context("no admin address")?,
            modules,
            store: state.join("store"),
            warnings,
            _dir: dir,
        })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.0.try_wait(), Ok(None))
    }

    /// Warnings and errors the host logged so far (and anything it printed that was not JSON).
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().map(|w| w.clone()).unwrap_or_default()
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

fn push(warnings: &Mutex<Vec<String>>, line: String) {
    if let Ok(mut w) = warnings.lock()
        && w.len() < 1000
    {
        w.push(line);
    }
}

/// A running `hyper-hello`.
#[derive(Debug)]
pub struct HyperHello {
    _child: Killed,
    /// HTTP listener.
    pub addr: SocketAddr,
}

impl HyperHello {
    /// Starts the baseline server.
    ///
    /// # Errors
    /// If it does not say where it listens.
    pub fn start(binary: &Path) -> anyhow::Result<HyperHello> {
        let mut child = Command::new(binary)
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
            _child: child,
        })
    }
}
