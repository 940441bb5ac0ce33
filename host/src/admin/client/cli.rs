//! The admin subcommands of the `baton` command line (`status`, `deploy`, `sessions list` …),
//! each run against a host's admin API.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

use super::Client;
use super::deploy::Follow;
use super::fleet::Target;
use crate::admin::wire::SessionsQuery;
use crate::error::{Error, Result};

/// A `baton` subcommand that talks to a running host's admin API.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Show every app, its versions, their states, weights and counters.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the admin API's JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Upload a module and follow it: loading, warming, active, old version drained, the guard
    /// window, old version retired; exits non-zero if the new version was rolled back. With
    /// several `--admin`, a rolling deploy: one host at a time, each once its guard window has
    /// passed; a failure on any host stops it and rolls back the hosts already done.
    Deploy {
        #[command(flatten)]
        admin: AdminArgs,
        /// The module file (`.so`).
        file: PathBuf,
        /// Deploy as a canary taking this percentage of new requests beside the active version
        /// (one host only).
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
        canary: Option<u8>,
        /// How long to wait for the old version to retire (after the guard window, if any).
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
        /// Return once the new version is active: do not follow the old version's drain, the
        /// guard window or a rollback (one host only).
        #[arg(long)]
        no_wait: bool,
        /// Print the outcome on each host as JSON instead of the progress (a rolling deploy's
        /// report, for one host too).
        #[arg(long)]
        json: bool,
    },
    /// Make the previous version (kept in the host's store) active again.
    Rollback {
        #[command(flatten)]
        admin: AdminArgs,
        /// App name.
        app: String,
    },
    /// Start a new serving process from the `baton` binary now on disk and hand over to it
    /// (supervised hosts only); waits until the old process is gone.
    Upgrade {
        #[command(flatten)]
        admin: AdminArgs,
        /// How long to wait for the new process to take over.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
    /// Stop serving an app: its mount answers 404; its version drains and retires.
    Undeploy {
        #[command(flatten)]
        admin: AdminArgs,
        /// App name.
        app: String,
    },
    /// Send PERCENT of an app's new requests to VERSION (the canary), the rest to the active one.
    Canary {
        #[command(flatten)]
        admin: AdminArgs,
        /// App name.
        app: String,
        /// The canary version: the current canary, or a version kept in the store.
        version: String,
        /// Its share of new requests, 0 to 100.
        #[arg(value_parser = clap::value_parser!(u8).range(0..=100))]
        percent: u8,
    },
    /// Make an app's canary its active version.
    Promote {
        #[command(flatten)]
        admin: AdminArgs,
        /// App name.
        app: String,
    },
    /// End an app's canary split: the canary drains and retires.
    Abort {
        #[command(flatten)]
        admin: AdminArgs,
        /// App name.
        app: String,
    },
    /// List, count or invalidate the host's sessions (shared by all its apps).
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// List the versions quarantined for crashing the serving process, or clear one.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
}

#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// The quarantined versions: when and how they crashed the serving process.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the admin API's JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Lift a version's quarantine, so its module file can be deployed again.
    Clear {
        #[command(flatten)]
        admin: AdminArgs,
        /// App name.
        app: String,
        /// The quarantined version.
        version: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List sessions, most recently used first: id prefix, age, idle time, expiry, attributes.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        /// Most sessions to list (1 to 1000) [default: 100].
        #[arg(long)]
        limit: Option<usize>,
        /// Only sessions whose id starts with these hex digits.
        #[arg(long)]
        prefix: Option<String>,
        /// Print the admin API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Count the live sessions (a scan of the whole store with Redis).
    Count {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete a session; its client starts a fresh one.
    Invalidate {
        #[command(flatten)]
        admin: AdminArgs,
        /// The session id, or at least its first 8 hex digits if they match only one session.
        id: String,
    },
}

/// Where the admin API is and how to authenticate to it.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Address of the host's admin listener (`deploy` takes several, repeated or separated by
    /// commas: a rolling deploy, one host at a time, in this order).
    #[arg(
        long,
        env = "BATON_ADMIN",
        default_value = "127.0.0.1:9090",
        value_delimiter = ','
    )]
    pub admin: Vec<String>,
    /// Admin bearer token (for several hosts: once for all, or once per `--admin`, in order).
    #[arg(
        long,
        visible_alias = "admin-token",
        env = "BATON_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Vec<String>,
}

impl AdminArgs {
    /// The client of the one host a command other than `deploy` talks to.
    ///
    /// # Errors
    /// [`Error::Invalid`] for more than one host or token.
    fn connect(self) -> Result<Client> {
        let mut targets = self.connect_all()?;
        if targets.len() != 1 {
            return Err(Error::Invalid(
                "this command talks to one host: give one --admin (only deploy takes several)"
                    .to_owned(),
            ));
        }
        Ok(targets.remove(0).client)
    }

    /// A client per host, each with its token.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a number of tokens other than none, one or one per host, or a
    /// host named twice.
    fn connect_all(self) -> Result<Vec<Target>> {
        let AdminArgs { admin, token } = self;
        if token.len() > 1 && token.len() != admin.len() {
            return Err(Error::Invalid(format!(
                "{} --admin-token for {} --admin: give one token for every host, or one per \
                 host in the order of --admin",
                token.len(),
                admin.len()
            )));
        }
        for (i, a) in admin.iter().enumerate() {
            if admin[..i].contains(a) {
                return Err(Error::Invalid(format!("--admin {a} is given twice")));
            }
        }
        Ok(admin
            .into_iter()
            .enumerate()
            .map(|(i, admin)| {
                let token = token.get(i).or(token.first()).cloned();
                Target {
                    client: Client::new(&admin, token),
                    admin,
                }
            })
            .collect())
    }
}

impl AdminCommand {
    /// Runs the command, printing what an operator reads to `out`.
    ///
    /// # Errors
    /// Why the command failed, as the command's own function says.
    pub async fn run(self, out: &mut dyn Write) -> Result<()> {
        match self {
            AdminCommand::Status { admin, json } => {
                super::status(&admin.connect()?, json, out).await
            }
            AdminCommand::Deploy {
                admin,
                file,
                canary,
                timeout_secs,
                no_wait,
                json,
            } => {
                let mut targets = admin.connect_all()?;
                let follow = Follow {
                    canary,
                    wait: !no_wait,
                    timeout: Duration::from_secs(timeout_secs),
                };
                if targets.len() == 1 && !json {
                    let target = targets.remove(0);
                    return super::deploy(&target.client, &file, follow, out).await;
                }
                if canary.is_some() || no_wait {
                    return Err(Error::Invalid(
                        "--canary and --no-wait deploy to one host; a rolling deploy (several \
                         --admin, or --json) waits for each host's guard window"
                            .to_owned(),
                    ));
                }
                super::fleet::rolling(&targets, &file, follow, json, out).await
            }
            AdminCommand::Rollback { admin, app } => {
                super::rollback(&admin.connect()?, &app, out).await
            }
            AdminCommand::Undeploy { admin, app } => {
                super::undeploy(&admin.connect()?, &app, out).await
            }
            AdminCommand::Upgrade {
                admin,
                timeout_secs,
            } => super::upgrade(&admin.connect()?, Duration::from_secs(timeout_secs), out).await,
            AdminCommand::Canary {
                admin,
                app,
                version,
                percent,
            } => super::canary(&admin.connect()?, &app, &version, percent, out).await,
            AdminCommand::Promote { admin, app } => {
                super::promote(&admin.connect()?, &app, out).await
            }
            AdminCommand::Abort { admin, app } => super::abort(&admin.connect()?, &app, out).await,
            AdminCommand::Sessions(SessionsCommand::List {
                admin,
                limit,
                prefix,
                json,
            }) => {
                let query = SessionsQuery { limit, prefix };
                if json {
                    super::sessions::list_json(&admin.connect()?, &query, out).await
                } else {
                    super::sessions::list(&admin.connect()?, &query, out).await
                }
            }
            AdminCommand::Sessions(SessionsCommand::Count { admin }) => {
                super::sessions::count(&admin.connect()?, out).await
            }
            AdminCommand::Sessions(SessionsCommand::Invalidate { admin, id }) => {
                super::sessions::invalidate(&admin.connect()?, &id, out).await
            }
            AdminCommand::Quarantine(QuarantineCommand::List { admin, json }) => {
                super::quarantine::list(&admin.connect()?, json, out).await
            }
            AdminCommand::Quarantine(QuarantineCommand::Clear {
                admin,
                app,
                version,
            }) => super::quarantine::clear(&admin.connect()?, &app, &version, out).await,
        }
    }
}
