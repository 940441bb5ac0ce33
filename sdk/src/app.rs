//! The app trait and what an app gets when it starts.

use serde::de::DeserializeOwned;

use crate::assets::Assets;
use crate::error::{Error, Result};
use crate::router::Router;

/// A web app the host can load, serve and swap.
///
/// The lifecycle is the servlet's: the host calls [`init`](App::init) once per loaded version with
/// the app's config table, then [`warmup`](App::warmup) before the version receives any traffic,
/// then routes requests through [`router`](App::router) on the version's worker threads, many at
/// once, and finally [`shutdown`](App::shutdown) after the last request has finished.
///
/// ```
/// use baton_sdk::{App, InitContext, Request, Result, Router};
///
/// struct Greeter {
///     greeting: String,
/// }
///
/// impl App for Greeter {
///     fn init(ctx: &InitContext) -> Result<Self> {
///         let greeting = ctx.config_value("greeting")?.unwrap_or_else(|| "hi".to_owned());
///         Ok(Greeter { greeting })
///     }
///
///     fn router() -> Router<Self> {
///         Router::new().get("/{name}", |app: &Self, req: &Request| {
///             format!("{} {}\n", app.greeting, req.param("name").unwrap_or("you"))
///         })
///     }
/// }
/// ```
pub trait App: Sized + Send + Sync + 'static {
    /// Builds the app. Runs once per loaded version, before any request.
    ///
    /// # Errors
    /// An error here fails the load: the previous version keeps serving and the message is shown
    /// in the host's log and status.
    fn init(ctx: &InitContext) -> Result<Self>;

    /// The app's routes.
    fn router() -> Router<Self>;

    /// Prepares the app for traffic (fill caches, open pools). The host switches traffic to this
    /// version only after it returns `Ok`.
    ///
    /// # Errors
    /// An error or panic here aborts the deploy; the previous version keeps serving.
    fn warmup(&self) -> Result<()> {
        Ok(())
    }

    /// The static files the host serves for the app without calling it (see [`Assets`]); none
    /// by default. Called once per loaded version, after [`init`](App::init).
    ///
    /// ```
    /// use baton_sdk::{App, Assets, InitContext, Result, Router};
    ///
    /// struct Site;
    /// impl App for Site {
    ///     fn init(_: &InitContext) -> Result<Self> { Ok(Site) }
    ///     fn router() -> Router<Self> { Router::new() }
    ///     fn assets() -> Assets {
    ///         Assets::new().dir("/static", baton_sdk::embed_dir!("$CARGO_MANIFEST_DIR/src"))
    ///     }
    /// }
    /// assert!(Site::assets().contains("/static/lib.rs"));
    /// ```
    fn assets() -> Assets {
        Assets::new()
    }

    /// Releases what the app holds. Runs once, after the version's last request has finished and
    /// before its library is unloaded.
    fn shutdown(&self) {}
}

/// What [`App::init`] gets: the app's identity and its config table from the host config.
#[derive(Debug)]
pub struct InitContext {
    name: &'static str,
    version: &'static str,
    config: serde_json::Map<String, serde_json::Value>,
}

impl InitContext {
    pub(crate) fn new(name: &'static str, version: &'static str, config: &[u8]) -> Result<Self> {
        let config = if config.is_empty() {
            serde_json::Map::new()
        } else {
            serde_json::from_slice(config)
                .map_err(|e| Error::internal(format!("app config is not a JSON object: {e}")))?
        };
        Ok(InitContext {
            name,
            version,
            config,
        })
    }

    /// A context for tests of an app's `init`, with `config` as its config table.
    ///
    /// ```
    /// let ctx = baton_sdk::InitContext::for_test("shop", "1.0.0", serde_json::json!({"items": 3}));
    /// assert_eq!(ctx.config_value::<u32>("items").unwrap(), Some(3));
    /// ```
    ///
    /// # Panics
    /// If `config` is not a JSON object.
    pub fn for_test(name: &'static str, version: &'static str, config: serde_json::Value) -> Self {
        let serde_json::Value::Object(config) = config else {
            panic!("an app config is a table (JSON object)");
        };
        InitContext {
            name,
            version,
            config,
        }
    }

    /// The app's name, as its module declares it.
    pub fn app_name(&self) -> &'static str {
        self.name
    }

    /// This version, as its module declares it.
    pub fn app_version(&self) -> &'static str {
        self.version
    }

    /// The whole config table deserialized into `T` (use `#[serde(default)]` for optional keys).
    ///
    /// # Errors
    /// If the table does not fit `T`; `init` failing with it refuses the version.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(serde_json::Value::Object(self.config.clone()))
            .map_err(|e| Error::internal(format!("invalid config for {}: {e}", self.name)))
    }

    /// One key of the config table, or `None` if absent.
    ///
    /// # Errors
    /// If the key is present but does not fit `T`.
    pub fn config_value<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.config
            .get(key)
            .map(|v| {
                serde_json::from_value(v.clone()).map_err(|e| {
                    Error::internal(format!("invalid config key {key} for {}: {e}", self.name))
                })
            })
            .transpose()
    }
}
