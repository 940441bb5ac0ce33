//! The admin listener: operational endpoints on a separate, loopback-by-default address, and
//! the `baton` command line's client of them.
//!
//! - `api`: a request's way through the checks, the routing table and its endpoint's handler
//!   (status, deploy by upload, rollback, undeploy, canary split, upgrade, quarantine, metrics,
//!   health).
//! - `auth`: the bearer token when one is configured; without one the API answers only the
//!   local operator: a request from another site's page (`Origin`) or for a name that is not
//!   loopback (`Host`) is refused.
//! - `routes`: the routing table (`matchit`), built once; a `405` lists the route's methods.
//! - `reply`: JSON answers, and the one error type whose variants know their status.
//! - `report`: the status document and a deploy's outcome, built from the registry.
//! - `sessions`: the API's session endpoints (list, count, describe, invalidate).
//! - `upload`: module uploads stream into `state_dir/uploads/`, bounded in size and number.
//! - [`wire`]: the requests and answers as types, shared by the server and the client, and the
//!   query strings and path segments both sides encode and decode.
//! - the dashboard (`GET /`): one page that polls `/status` and shows apps, versions, states,
//!   the traffic split and request rates.
//! - [`client`]: the other side, used by the `baton` command line (`baton status`, `baton
//!   deploy`, `baton quarantine list`…).
//!
//! `GET /status` reports every app, its versions and their states, counters, the timeline of
//! the last swap and the last error, plus module files that were refused.

mod api;
mod auth;
pub mod client;
mod reply;
mod report;
mod routes;
mod sessions;
pub(crate) mod upload;
pub mod wire;

pub use api::Admin;
pub(crate) use api::handle;

/// The dashboard page: plain HTML and JavaScript polling `/status`.
const DASHBOARD: &str = include_str!("dashboard.html");
