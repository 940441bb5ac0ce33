//! # baton-host
//!
//! The Baton host: loads app modules built with `baton-sdk`, serves them over HTTP, and swaps
//! versions without failing a request.
//!
//! - `config`: the TOML configuration and its validation.
//! - [`loader`]: the only code that touches `libloading` and the raw module boundary; it maps a
//!   module, validates its descriptor and offers safe calls into it.
//! - `deploy`: apps, versions and their lifecycle (load, init, warm-up, switch, drain,
//!   retire), each version with its own worker threads.
//! - `server`: the hyper accept loop and the per-request path (routing by mount, limits,
//!   dispatch to the version's workers, timeouts).
//! - `watch`: turns files dropped into the modules directory into deploys and undeploys.
//! - [`admin`]: the admin listener: JSON API, health, dashboard, and the CLI's client.
//! - `metrics`: Prometheus metrics, with per-version handles for the request path.
//! - [`session`]: session stores (in memory, Redis) and each request's lazy view of its session.
//! - `crash`: what the supervisor and the serving process share about crashes: the live
//!   versions, the blame of a death, the quarantine.
//! - [`supervisor`]: the small process that owns the listening sockets and restarts the serving
//!   process when it dies.
//! - `tls`: the HTTPS listener's certificate: loaded and checked, handed to each handshake,
//!   reloaded when its files change or on SIGHUP.
//!
//! Only what the `baton` binary, the benchmarks and the fuzz targets use is public: [`Host`],
//! [`Config`], [`Stop`], [`supervisor`], the [`admin`] client and wire types, the [`loader`]
//! (benchmarks call modules directly), [`session`]. [`Host`] ties the parts together; the
//! `baton` binary is a thin command line over it.

pub mod admin;
mod assets;
mod clock;
mod config;
mod crash;
mod deploy;
mod error;
pub mod loader;
pub mod logging;
mod metrics;
mod server;
pub mod session;
pub mod supervisor;
mod sync;
mod text;
mod tls;
mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub use config::Config;
pub use tls::Certificates;

/// This build's version: the crate version, or `BATON_BUILD_VERSION` when it was set at build
/// time (shown by `baton --version` and in `/status`, so an upgrade can be told apart).
pub const VERSION: &str = match option_env!("BATON_BUILD_VERSION") {
    Some(version) => version,
    None => env!("CARGO_PKG_VERSION"),
};

/// How a serving process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A graceful shutdown: not ready at once, stop accepting, drain, unload.
    Shutdown,
    /// An upgrade's hand-over to a new serving process: stop accepting (the new process takes
    /// the listeners' connections), finish the running requests, pass the in-memory sessions
    /// on, then unload as in a shutdown.
    HandOver,
}

/// How long idle keep-alive connections stay open in a serving process that hands over: a
/// request sent on one meanwhile is answered (with `Connection: close`), not cut off.
const HANDOVER_LINGER: std::time::Duration = std::time::Duration::from_millis(1000);

/// Where the in-memory sessions wait for the next serving process of an upgrade.
fn handover_file(config: &Config) -> std::path::PathBuf {
    config.state_dir.join("handover-sessions.json")
}
pub use error::{Error, Result, StartStage};

use deploy::Registry;
use session::Sessions;

/// A running host: its registry of apps, its sessions, its listeners and its watchers.
#[derive(Debug)]
pub struct Host {
    registry: Arc<Registry>,
    sessions: Arc<Sessions>,
    listener: tokio::net::TcpListener,
    admin: tokio::net::TcpListener,
    https: Option<Https>,
    watcher: Option<watch::Watcher>,
    max_connections: usize,
}

/// The HTTPS listener, its certificate and the watch of the certificate's files.
#[derive(Debug)]
struct Https {
    listener: tokio::net::TcpListener,
    certificates: Arc<tls::Certificates>,
    cert_watcher: Option<tls::CertWatcher>,
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
    /// Validates `config`, loads the TLS certificate, loads every module in its modules
    /// directory and binds the listeners (or takes those inherited through `LISTEN_FDS` from a
    /// supervisor or systemd).
    ///
    /// # Errors
    /// An invalid config, a TLS certificate or key that cannot be used, an unreadable modules
    /// directory, or a listener that cannot bind. Individual modules that fail to load are
    /// logged and skipped.
    pub async fn start(mut config: Config) -> Result<Host> {
        config.validate()?;
        // Before any module is loaded: a bad certificate is a configuration error.
        let certificates = match config.tls.files() {
            Some((cert, key)) => Some(tls::Certificates::load(cert, key)?),
            None => None,
        };
        let (http, admin, https) = match supervisor::inherited_listeners()? {
            Some(l) => (Some(l.http), Some(l.admin), l.https),
            None => (None, None, None),
        };
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
        admin::upload::remove_leftovers(&config.state_dir);
        let registry = Arc::new(Registry::new(Arc::clone(&config))?);
        deploy::register_collector(&registry);
        registry
            .metrics()
            .register_collector(Box::new(logging::DroppedLines));
        let sessions =
            Sessions::from_config(&config.sessions, config.cookie_secure(), registry.metrics())?;

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
        let https = match (config.listen_tls, certificates) {
            (Some(addr), Some(certificates)) => {
                let (listener, addr) = bind(addr, https, "https").await?;
                let watcher = if config.tls.watch {
                    Some(tls::CertWatcher::start(Arc::clone(&certificates))?)
                } else {
                    None
                };
                tracing::info!(%addr, redirect_http = config.tls.redirect_http, "https listening");
                Some(Https {
                    listener,
                    certificates,
                    cert_watcher: watcher,
                })
            }
            _ => None,
        };
        let (listener, addr) = bind(config.listen, http, "http").await?;
        let nofile = server::open_files_limit();
        let max_connections = config
            .http
            .max_connections
            .unwrap_or_else(|| server::default_max_connections(nofile));
        let tls_addr = https
            .as_ref()
            .and_then(|h| h.listener.local_addr().ok())
            .map(|a| a.to_string());
        tracing::info!(%addr, tls_addr, modules = %config.modules.display(), apps = deployed,
            sessions = sessions.store().kind(), max_connections, open_files_limit = nofile,
            pid = std::process::id(), "listening");
        Ok(Host {
            registry,
            sessions,
            listener,
            admin,
            https,
            watcher,
            max_connections,
        })
    }

    /// The address the HTTPS listener is bound to, if there is one.
    ///
    /// # Errors
    /// If the socket cannot report it.
    pub fn tls_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        self.https
            .as_ref()
            .map(|h| h.listener.local_addr())
            .transpose()
    }

    /// The HTTPS listener's certificate, to reload it (on SIGHUP); `None` without HTTPS.
    pub fn certificates(&self) -> Option<Arc<tls::Certificates>> {
        self.https.as_ref().map(|h| Arc::clone(&h.certificates))
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

    /// Whether this host keeps its sessions in memory (so an upgrade hands them over).
    pub fn sessions_in_memory(&self) -> bool {
        self.sessions.in_memory()
    }

    /// Takes over the in-memory sessions the previous serving process of an upgrade handed
    /// over. Returns how many.
    ///
    /// # Errors
    /// If the hand-over file cannot be read.
    pub fn take_over_sessions(&self) -> Result<usize> {
        self.sessions
            .take_over(&handover_file(self.registry.config()))
    }

    /// Serves until `stop` resolves, then stops accepting, lets running requests finish
    /// (bounded by the drain timeout), runs the apps' shutdown hooks and unloads them. On a
    /// hand-over, the in-memory sessions are written for the next serving process once the
    /// running requests are done, and the supervisor is told.
    pub async fn run(self, stop: impl Future<Output = Stop>) {
        let registry = self.registry;
        let sessions = self.sessions;
        let http = registry.config().http.clone();
        let app_settings = server::ConnectionSettings::new(&http, self.max_connections)
            .with_tls_handshake_timeout(registry.config().tls.handshake_timeout());
        let admin_settings = server::ConnectionSettings::new(&http, http.admin_max_connections);
        let drain = registry.config().drain_timeout();
        // The admin listener outlives the app listener, so operators can watch the drain.
        let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let state = Arc::new(admin::Admin::new(
            Arc::clone(&registry),
            Arc::clone(&sessions),
        ));
        let admin_task = {
            let state = Arc::clone(&state);
            let handler = move |req, _client| admin::handle(Arc::clone(&state), req);
            tokio::spawn(server::serve(
                vec![server::Listener::plain(self.admin)],
                handler,
                async {
                    let _ = admin_stopped.await;
                    std::time::Duration::ZERO
                },
                std::time::Duration::from_secs(1),
                admin_settings,
            ))
        };
        let grace = std::time::Duration::from_millis(registry.config().shutdown_grace_ms);
        let handing_over = std::sync::atomic::AtomicBool::new(false);
        let shutdown = async {
            if stop.await == Stop::HandOver {
                // The new serving process is warm and takes the listeners' connections now:
                // still ready, no grace.
                handing_over.store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::info!("handing over to the new serving process");
                registry.begin_stop();
                return HANDOVER_LINGER;
            }
            // Not ready from the first moment, so balancers stop sending before the drain.
            state.set_not_ready();
            if !grace.is_zero() {
                tracing::info!(
                    grace_ms = crate::clock::millis(grace),
                    "not ready; still accepting"
                );
                tokio::time::sleep(grace).await;
            }
            registry.begin_stop();
            std::time::Duration::ZERO
        };
        let mut listeners = vec![server::Listener::plain(self.listener)];
        let mut redirect = None;
        // Kept until the drain ends: its file watch reloads the certificate meanwhile.
        let mut https_watch = None;
        if let Some(Https {
            listener,
            certificates,
            cert_watcher,
        }) = self.https
        {
            if registry.config().tls.redirect_http {
                redirect = listener.local_addr().ok().map(|a| a.port());
            }
            listeners.push(server::Listener::tls(listener, certificates.acceptor()));
            https_watch = cert_watcher;
        }
        let started = tokio::time::Instant::now();
        server::serve_apps(
            listeners,
            Arc::clone(&registry),
            Arc::clone(&sessions),
            shutdown,
            drain,
            app_settings,
            redirect,
        )
        .await;
        if handing_over.load(std::sync::atomic::Ordering::SeqCst) {
            match sessions.hand_over(&handover_file(registry.config())) {
                Ok(handed) if sessions.in_memory() => {
                    tracing::info!(sessions = handed, "sessions handed over");
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "sessions not handed over; they are lost"),
            }
            supervisor::tell_supervisor();
        }
        drop(self.watcher);
        drop(https_watch);
        let left = drain
            .saturating_sub(started.elapsed())
            .max(std::time::Duration::from_secs(1));
        registry.shutdown(left).await;
        let _ = admin_stop.send(());
        let _ = admin_task.await;
        tracing::info!("stopped");
    }
}
