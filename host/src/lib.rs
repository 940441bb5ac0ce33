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
//! - [`session`]: session stores (in memory, Redis) and each request's lazy view of its session.
//!
//! [`Host`] ties them together; the `baton` binary is a thin command line over it.

pub mod config;
pub mod deploy;
mod error;
pub mod loader;
pub mod server;
pub mod session;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub use config::Config;
pub use error::{Error, Result};

use deploy::Registry;
use session::Sessions;

/// A running host: its registry of apps, its sessions and its listener.
#[derive(Debug)]
pub struct Host {
    registry: Arc<Registry>,
    sessions: Arc<Sessions>,
    listener: tokio::net::TcpListener,
}

impl Host {
    /// Validates `config`, loads every module in its modules directory and binds the listener.
    ///
    /// # Errors
    /// An invalid config, an unreadable modules directory, or a listener that cannot bind.
    /// Individual modules that fail to load are logged and skipped.
    pub async fn start(config: Config) -> Result<Host> {
        config.validate()?;
        let config = Arc::new(config);
        let registry = Arc::new(Registry::new(Arc::clone(&config))?);
        let sessions = Sessions::from_config(&config.sessions)?;
        std::fs::create_dir_all(&config.modules).map_err(|e| {
            Error::io(
                format!(
                    "cannot create modules directory {}",
                    config.modules.display()
                ),
                e,
            )
        })?;
        let deployed = registry.deploy_dir(&config.modules).await?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| Error::io(format!("cannot listen on {}", config.listen), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the listener address", e))?;
        tracing::info!(%addr, modules = %config.modules.display(), apps = deployed,
            sessions = sessions.store().kind(), "listening");
        Ok(Host {
            registry,
            sessions,
            listener,
        })
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
        let drain = self.registry.config().drain_timeout();
        let started = tokio::time::Instant::now();
        server::serve(
            self.listener,
            Arc::clone(&self.registry),
            self.sessions,
            shutdown,
            drain,
        )
        .await;
        let left = drain
            .saturating_sub(started.elapsed())
            .max(std::time::Duration::from_secs(1));
        self.registry.shutdown(left).await;
        tracing::info!("stopped");
    }
}
