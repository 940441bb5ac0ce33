//! The listening sockets: bound by the supervisor (or inherited from systemd), passed to every
//! serving process as `LISTEN_FDS`, and taken back from the environment on the other side.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;

use command_fds::FdMapping;

use crate::config::Config;
use crate::error::{Error, Result};

/// Names of the inherited sockets, in descriptor order, as `LISTEN_FDNAMES` gives them.
const HTTP: &str = "http";
const ADMIN: &str = "admin";
const HTTPS: &str = "https";
/// The first inherited descriptor (`SD_LISTEN_FDS_START`).
pub(super) const FIRST_FD: i32 = 3;

/// The listening sockets of a host.
#[derive(Debug)]
pub struct Listeners {
    /// The plain HTTP listener.
    pub http: TcpListener,
    /// The admin listener.
    pub admin: TcpListener,
    /// The HTTPS listener, with `listen_tls`.
    pub https: Option<TcpListener>,
}

impl Listeners {
    /// How many sockets these are.
    pub(super) fn count(&self) -> i32 {
        if self.https.is_some() { 3 } else { 2 }
    }
}

/// The listening sockets a supervisor or systemd handed to this process (`LISTEN_FDS`): HTTP
/// first, admin second and HTTPS third, or named `http`, `admin` and `https` in
/// `LISTEN_FDNAMES`. `None` when the environment passes none.
///
/// # Errors
/// If descriptors are passed but are not two or three TCP listeners.
pub fn inherited_listeners() -> Result<Option<Listeners>> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|names| names.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let index =
        |name: &str, default: usize| names.iter().position(|n| n == name).unwrap_or(default);
    let passes_https = names.iter().any(|n| n == HTTPS) || fds.len() > 2;
    let mut take = |name: &str, default: usize| {
        let i = index(name, default);
        fds.take_tcp_listener(i)
            .map_err(|e| Error::io(format!("inherited socket {i} ({name}) is unusable"), e))?
            .ok_or_else(|| {
                Error::Config(format!(
                    "LISTEN_FDS passes {} socket(s); the {name} listener (socket {i}) is missing",
                    fds.len()
                ))
            })
    };
    let http = take(HTTP, 0)?;
    let admin = take(ADMIN, 1)?;
    let https = if passes_https {
        Some(take(HTTPS, 2)?)
    } else {
        None
    };
    Ok(Some(Listeners { http, admin, https }))
}

fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| Error::io(format!("cannot listen on {addr} ({what})"), e))
}

/// The listeners `config` asks for, taking those the environment passes first.
///
/// # Errors
/// If an inherited socket is unusable or a listener cannot be bound.
pub(super) fn bind_all(config: &Config) -> Result<Listeners> {
    let mut listeners = match inherited_listeners()? {
        Some(listeners) => listeners,
        None => Listeners {
            http: bind(config.listen, HTTP)?,
            admin: bind(config.admin, ADMIN)?,
            https: None,
        },
    };
    if let (None, Some(addr)) = (&listeners.https, config.listen_tls) {
        listeners.https = Some(bind(addr, HTTPS)?);
    }
    Ok(listeners)
}

/// The listeners, duplicated, at the descriptors a serving process inherits them as.
pub(super) fn fd_mappings(listeners: &Listeners) -> Result<Vec<FdMapping>> {
    let dup = |l: &TcpListener| {
        l.as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::io("cannot pass a listener on", e))
    };
    let mut fds = vec![
        FdMapping {
            parent_fd: dup(&listeners.http)?,
            child_fd: FIRST_FD,
        },
        FdMapping {
            parent_fd: dup(&listeners.admin)?,
            child_fd: FIRST_FD + 1,
        },
    ];
    if let Some(https) = &listeners.https {
        fds.push(FdMapping {
            parent_fd: dup(https)?,
            child_fd: FIRST_FD + 2,
        });
    }
    Ok(fds)
}

/// `LISTEN_FDS` and `LISTEN_FDNAMES` for the descriptors of [`fd_mappings`].
pub(super) fn listen_env(listeners: &Listeners) -> [(&'static str, String); 2] {
    let names = match listeners.https {
        Some(_) => format!("{HTTP}:{ADMIN}:{HTTPS}"),
        None => format!("{HTTP}:{ADMIN}"),
    };
    [
        ("LISTEN_FDS", listeners.count().to_string()),
        ("LISTEN_FDNAMES", names),
    ]
}
