//! Routing a request path to the app mounted there.
//!
//! The table holds the apps that have an active version, longest mount first, so the most
//! specific mount wins. A mount matches its own path and the paths below it (`/app`, `/app/x`),
//! never a longer name that merely starts with it (`/application`). It is republished whenever
//! an app gains its first active version or loses its last, and read without a lock.

use std::sync::Arc;

use super::{AppSlot, Registry};
use crate::sync::lock;

/// The published routing table.
#[derive(Debug, Default)]
pub(super) struct Routes {
    /// (mount, app), longest mount first.
    mounts: Vec<(String, Arc<AppSlot>)>,
}

impl Routes {
    /// The table of these apps' mounts.
    fn of(apps: impl IntoIterator<Item = Arc<AppSlot>>) -> Routes {
        let mut mounts: Vec<(String, Arc<AppSlot>)> = apps
            .into_iter()
            .map(|slot| (slot.mount.clone(), slot))
            .collect();
        mounts.sort_by_key(|(mount, _)| std::cmp::Reverse(mount.len()));
        Routes { mounts }
    }

    /// The app mounted at `path`, and the path relative to its mount.
    fn find<'p>(&self, path: &'p str) -> Option<(Arc<AppSlot>, &'p str)> {
        self.mounts.iter().find_map(|(mount, slot)| {
            let rest = if mount == "/" {
                path
            } else {
                let rest = path.strip_prefix(mount.as_str())?;
                if !(rest.is_empty() || rest.starts_with('/')) {
                    return None;
                }
                rest
            };
            Some((Arc::clone(slot), if rest.is_empty() { "/" } else { rest }))
        })
    }
}

impl Registry {
    /// The app mounted at `path`, and the path relative to its mount.
    pub fn route<'p>(&self, path: &'p str) -> Option<(Arc<AppSlot>, &'p str)> {
        self.routes.load().find(path)
    }

    /// Republishes the routing table from the apps that have an active version.
    pub(super) fn publish_routes(&self) {
        let serving: Vec<Arc<AppSlot>> = lock(&self.apps)
            .values()
            .filter(|slot| slot.active.load().is_some())
            .cloned()
            .collect();
        self.routes.store(Arc::new(Routes::of(serving)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AppConfig, Config};

    /// A table of apps mounted where `mounts` says, by app name.
    fn routes(mounts: &[(&str, &str)]) -> Routes {
        let mut config = Config::default();
        for (app, mount) in mounts {
            config.apps.insert(
                (*app).to_owned(),
                AppConfig {
                    mount: Some((*mount).to_owned()),
                    ..AppConfig::default()
                },
            );
        }
        Routes::of(
            mounts
                .iter()
                .map(|(app, _)| Arc::new(AppSlot::new(app, &config))),
        )
    }

    fn route<'p>(routes: &Routes, path: &'p str) -> Option<(String, &'p str)> {
        routes
            .find(path)
            .map(|(slot, rest)| (slot.name().to_owned(), rest))
    }

    #[test]
    fn a_mount_takes_its_path_and_the_paths_below_it() {
        let routes = routes(&[("app", "/app")]);
        assert_eq!(route(&routes, "/app"), Some(("app".into(), "/")));
        assert_eq!(route(&routes, "/app/"), Some(("app".into(), "/")));
        assert_eq!(route(&routes, "/app/x/y"), Some(("app".into(), "/x/y")));
        assert_eq!(route(&routes, "/application"), None);
        assert_eq!(route(&routes, "/ap"), None);
        assert_eq!(route(&routes, "/"), None);
    }

    #[test]
    fn the_longest_mount_wins() {
        let routes = routes(&[("root", "/"), ("api", "/api"), ("v2", "/api/v2")]);
        assert_eq!(
            route(&routes, "/api/v2/users"),
            Some(("v2".into(), "/users"))
        );
        assert_eq!(route(&routes, "/api/v2"), Some(("v2".into(), "/")));
        assert_eq!(route(&routes, "/api/v3"), Some(("api".into(), "/v3")));
        assert_eq!(route(&routes, "/api"), Some(("api".into(), "/")));
        assert_eq!(route(&routes, "/apiary"), Some(("root".into(), "/apiary")));
        assert_eq!(route(&routes, "/"), Some(("root".into(), "/")));
    }

    #[test]
    fn apps_mount_at_their_name_by_default() {
        let config = Config::default();
        let routes = Routes::of([Arc::new(AppSlot::new("hello", &config))]);
        assert_eq!(route(&routes, "/hello/x"), Some(("hello".into(), "/x")));
        assert_eq!(route(&routes, "/hello2"), None);
    }

    #[test]
    fn an_empty_table_routes_nothing() {
        assert!(Routes::default().find("/").is_none());
    }
}
