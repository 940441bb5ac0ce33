//! # baton-host
//!
//! The Baton host: loads app modules built with `baton-sdk`, serves them over HTTP, and swaps
//! versions without failing a request.
//!
//! - [`config`]: the TOML configuration and its validation.
//! - `loader`: the only code that touches `libloading` and the raw module boundary; it maps a
//!   module, validates its descriptor and offers safe calls into it.
//! - [`deploy`]: apps, versions and their lifecycle (load, init, warm-up, switch, drain,
//!   retire), each version with its own worker threads.
//! - [`server`]: the hyper accept loop and the per-request path (routing by mount, limits,
//!   dispatch to the version's workers, timeouts).
//! - [`watch`]: turns files dropped into the modules directory into deploys and undeploys.
//! - [`admin`]: the admin listener: JSON API, health, dashboard, and the CLI's client.
//! - [`metrics`]: Prometheus metrics, with per-version handles for the request path.
//! - [`session`]: session stores (in memory, Redis) and each request's lazy view of its session.
//! - [`crash`]: what the supervisor and the serving process share about crashes: the live
//!   versions, the blame of a death, the quarantine.
//! - [`supervisor`]: the small process that owns the listening sockets and restarts the serving
//!   process when it dies.
//!
//! [`Host`] ties them together; the `baton` binary is a thin command line over it.

pub mod admin;
pub mod config;
pub mod crash;
pub mod deploy;
mod error;
pub mod loader;
pub mod metrics;
pub mod server;
pub mod session;
pub mod supervisor;
pub mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub use config::Config;
pub use error::{Error, Result};

use deploy::Registry;
use session::Sessions;

/// A running host: its registry of apps, its sessions, its listeners and its watcher.
#[derive(Debug)]
pub struct Host {
    registry: Arc<Registry>,
    sessions: Arc<Sessions>,
    listener: tokio::net::TcpListener,
    admin: tokio::net::TcpListener,
    watcher: Option<watch::Watcher>,
}

/// The listener for `addr`: the one inherited from a supervisor or systemd, or a new one.
async fn bind(
    addr: SocketAddr,
    inherited: Option<std::net::TcpListener>,
    what: &str,
) -> Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = match inherited {
        Some(listener) => listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener))
            .map_err(|e| Error::io(format!("cannot use the inherited {what} listener"), e))?,
        None => tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(format!("cannot listen on {addr} ({what})"), e))?,
    };
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the listener address", e))?;
    Ok((listener, local))
}

impl Host {
    /// Validates `config`, loads every module in its modules directory and binds the listeners
    /// (or takes those inherited through `LISTEN_FDS` from a supervisor or systemd).
    ///
    /// # Errors
    /// An invalid config, an unreadable modules directory, or a listener that cannot bind.
    /// Individual modules that fail to load are logged and skipped.
    pub async fn start(mut config: Config) -> Result<Host> {
        config.validate()?;
        let (http, admin) = supervisor::inherited_listeners()?.unzip();
        std::fs::create_dir_all(&config.modules).map_err(|e| {
            Error::io(
                format!(
                    "cannot create modules directory {}",
                    config.modules.display()
                ),
                e,
            )
        })?;
        // One spelling of every module path, whether it came from the scan or the watcher.
        config.modules = config
            .modules
            .canonicalize()
            .map_err(|e| Error::io(format!("cannot resolve {}", config.modules.display()), e))?;
        let config = Arc::new(config);
        let registry = Arc::new(Registry::new(Arc::clone(&config))?);
        let sessions = Sessions::from_config(&config.sessions, registry.metrics().session_store())?;

        // Watch first, so a file dropped during the initial scan is not missed.
        let watcher = if config.watch {
            Some(watch::watch(Arc::clone(&registry), &config.modules)?)
        } else {
            None
        };
        // The versions active before a restart first; then the directory's other apps.
        registry.restore().await;
        let deployed = registry.deploy_dir(&config.modules).await?;
        registry.started();
        let (admin, admin_addr) = bind(config.admin, admin, "admin").await?;
        tracing::info!(addr = %admin_addr, "admin listening");
        let (listener, addr) = bind(config.listen, http, "http").await?;
        tracing::info!(%addr, modules = %config.modules.display(), apps = deployed,
            sessions = sessions.store().kind(), pid = std::process::id(), "listening");
        Ok(Host {
            registry,
            sessions,
            listener,
            admin,
            watcher,
        })
    }

    /// The address the admin listener is bound to.
    ///
    /// # Errors
    /// If the socket cannot report it.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// The address the HTTP listener is bound to.
    ///
    /// # Errors
    /// If the socket cannot report it.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The registry of apps.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets running requests finish
    /// (bounded by the drain timeout), runs the apps' shutdown hooks and unloads them.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Host {
            registry,
            sessions,
            listener,
            admin,
            watcher,
        } = self;
        let drain = registry.config().drain_timeout();
        // The admin listener outlives the app listener, so operators can watch the drain.
        let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let state = Arc::new(admin::Admin::new(
            Arc::clone(&registry),
            Arc::clone(&sessions),
        ));
        let admin_task = {
            let state = Arc::clone(&state);
            let handler = move |req| admin::handle(Arc::clone(&state), req);
            tokio::spawn(server::serve(
                admin,
                handler,
                async {
                    let _ = admin_stopped.await;
                },
                std::time::Duration::from_secs(1),
            ))
        };
        let grace = std::time::Duration::from_millis(registry.config().shutdown_grace_ms);
        let shutdown = async {
            shutdown.await;
            // Not ready from the first moment, so balancers stop sending before the drain.
            state.set_not_ready();
            if !grace.is_zero() {
                tracing::info!(
                    grace_ms = grace.as_millis() as u64,
                    "not ready; still accepting"
                );
                tokio::time::sleep(grace).await;
            }
        };
        let started = tokio::time::Instant::now();
        server::serve_apps(listener, Arc::clone(&registry), sessions, shutdown, drain).await;
        drop(watcher);
        let left = drain
            .saturating_sub(started.elapsed())
            .max(std::time::Duration::from_secs(1));
        registry.shutdown(left).await;
        let _ = admin_stop.send(());
        let _ = admin_task.await;
        tracing::info!("stopped");
    }
}
