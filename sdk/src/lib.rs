//! # baton-sdk
//!
//! Write a web app once, build it as a dynamic library (a *module*), and let the Baton host load
//! it, serve it, and swap in new versions without dropping a request or a session.
//!
//! An app implements [`App`]: [`App::init`] builds it from its config table, [`App::router`]
//! maps method and path to handlers, [`App::warmup`] runs before the version takes traffic and
//! [`App::shutdown`] after its last request. Handlers take `&self` and a [`Request`] and return
//! anything that is [`IntoResponse`]: a [`Response`], a `String`, [`Json`], or a
//! [`Result`] whose [`Error`] carries its HTTP status. Handlers are plain synchronous functions;
//! the host runs them on the version's own worker threads. Logs written with [`tracing`] reach
//! the host's log, tagged with the app's name and version. [`Request::session`] gives the
//! client's [`Session`]: typed attributes the host keeps in memory or in Redis, shared by every
//! version of the app and every host process. Unit tests of handlers build requests with
//! [`Request::builder`]; the `test-util` feature adds `TestSession`, an in-memory session for
//! them (enable it under `[dev-dependencies]` only).
//!
//! [`export!`] turns the app into a module. The crate must be a `cdylib`:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//! ```
//!
//! ```
//! use baton_sdk::{App, InitContext, Request, Result, Router};
//!
//! struct Hello;
//!
//! impl App for Hello {
//!     fn init(_: &InitContext) -> Result<Self> {
//!         Ok(Hello)
//!     }
//!
//!     fn router() -> Router<Self> {
//!         Router::new().get("/", |_: &Self, _: &Request| "hello\n")
//!     }
//! }
//!
//! baton_sdk::export!(Hello);
//! ```
//!
//! The module's app name is the crate's package name (or `export!(Hello, name = "...")`); its
//! version is the crate's package version, or the value of the environment variable
//! `BATON_APP_VERSION` when the module is compiled.
//!
//! The [`abi`] module holds the C-compatible types that cross between host and module; apps never
//! need it.

#![warn(missing_docs)]

pub mod abi;
mod app;
mod assets;
mod cookies;
mod error;
mod middleware;
mod request;
mod response;
mod router;
mod session;
mod stream;

pub use app::{App, InitContext};
pub use assets::{Assets, EmbeddedDir};
pub use cookie;
pub use error::{Error, Result};
pub use http::{Method, StatusCode};
pub use middleware::Next;
pub use request::{BodyReader, Request, RequestBuilder, RequestError};
pub use response::{IntoResponse, Json, Response};
pub use stream::{BodyWriter, Event};

#[doc(hidden)]
pub mod __private {
    pub use include_dir;
}
pub use router::Router;
#[cfg(feature = "test-util")]
pub use session::TestSession;
pub use session::{Session, SessionError};
pub use tracing;

/// Exports an [`App`] as a Baton module: generates the entry symbol and its descriptor.
///
/// Use it once per `cdylib` crate. The app name defaults to the crate's package name; pass
/// `name = "..."` to choose another. The version is the crate's package version unless
/// `BATON_APP_VERSION` is set in the environment of the build.
///
/// ```
/// # use baton_sdk::{App, InitContext, Result, Router};
/// # struct Shop;
/// # impl App for Shop {
/// #     fn init(_: &InitContext) -> Result<Self> { Ok(Shop) }
/// #     fn router() -> Router<Self> { Router::new() }
/// # }
/// baton_sdk::export!(Shop, name = "shop");
/// ```
#[macro_export]
macro_rules! export {
    ($app:ty) => {
        $crate::export!($app, name = ::core::env!("CARGO_PKG_NAME"));
    };
    ($app:ty, name = $name:expr) => {
        const _: () = {
            struct BatonModule;

            impl $crate::abi::ModuleDef for BatonModule {
                type App = $app;
                const NAME: &'static str = $name;
                const VERSION: &'static str = match ::core::option_env!("BATON_APP_VERSION") {
                    ::core::option::Option::Some(version) => version,
                    ::core::option::Option::None => ::core::env!("CARGO_PKG_VERSION"),
                };
            }

            /// The module's entry point: its descriptor.
            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn baton_module() -> *const $crate::abi::ModuleDescriptor {
                static DESCRIPTOR: $crate::abi::ModuleDescriptor =
                    $crate::abi::ModuleDescriptor::new::<BatonModule>();
                &DESCRIPTOR
            }
        };
    };
}

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
