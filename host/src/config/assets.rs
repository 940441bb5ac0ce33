//! Static assets an app embeds in its module, under `[assets]` and an app's
//! `[apps.NAME] assets_cache_control`: how browsers and CDNs may cache them.

use http::HeaderValue;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The `Cache-Control` an asset answer carries unless its URL is content-addressed (a `v`
/// query parameter equal to the asset's hash, which is always `immutable`).
const DEFAULT_CACHE_CONTROL: &str = "no-cache";

/// How an app's embedded static assets are served, under `[assets]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AssetsConfig {
    /// `Cache-Control` of every asset answer whose URL is not content-addressed. The default,
    /// `no-cache`, makes browsers revalidate with the ETag each time: a swap is seen at once
    /// and an unchanged file costs a `304`.
    pub cache_control: String,
}

impl Default for AssetsConfig {
    fn default() -> Self {
        AssetsConfig {
            cache_control: DEFAULT_CACHE_CONTROL.to_owned(),
        }
    }
}

impl AssetsConfig {
    /// These settings with an app's `assets_cache_control` applied.
    pub fn merged(&self, cache_control: Option<&str>) -> AssetsConfig {
        AssetsConfig {
            cache_control: cache_control.map_or_else(|| self.cache_control.clone(), str::to_owned),
        }
    }

    /// `cache_control` as a header value (the default's when it is not one; `validate` refuses
    /// such a config before it is used).
    pub(crate) fn cache_control_header(&self) -> HeaderValue {
        HeaderValue::from_str(self.cache_control.trim())
            .unwrap_or_else(|_| HeaderValue::from_static(DEFAULT_CACHE_CONTROL))
    }

    /// Checks that `cache_control` is a usable, non-empty header value; `scope` names the
    /// setting in the message (`assets.cache_control`, `apps.NAME.assets_cache_control`).
    pub(crate) fn validate(&self, scope: &str) -> Result<()> {
        let value = self.cache_control.trim();
        if value.is_empty() || HeaderValue::from_str(value).is_err() {
            return Err(Error::Config(format!(
                "{scope} must be a non-empty header value such as \"no-cache\" or \
                 \"public, max-age=600\", not {:?}",
                self.cache_control
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn defaults_to_revalidation() {
        let config = AssetsConfig::default();
        config.validate("assets.cache_control").unwrap();
        assert_eq!(config.cache_control_header(), "no-cache");
    }

    #[test]
    fn an_app_override_replaces_the_global_value() {
        let global = AssetsConfig {
            cache_control: "public, max-age=60".to_owned(),
        };
        assert_eq!(global.merged(None), global);
        assert_eq!(
            global.merged(Some("private")).cache_control_header(),
            "private"
        );
    }

    #[test]
    fn apps_override_the_global_table_in_toml() {
        let config: Config = toml::from_str(
            r#"
            [assets]
            cache_control = "public, max-age=60"
            [apps.shop]
            assets_cache_control = "public, max-age=600"
            [apps.blog]
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.assets_for("shop").cache_control,
            "public, max-age=600"
        );
        assert_eq!(
            config.assets_for("blog").cache_control,
            "public, max-age=60"
        );
        assert_eq!(
            config.assets_for("other").cache_control,
            "public, max-age=60"
        );
        assert_eq!(Config::default().assets_for("x"), AssetsConfig::default());
    }

    #[test]
    fn bad_values_and_unknown_keys_are_refused_in_toml() {
        assert!(
            toml::from_str::<Config>(
                "[assets]
max_age = 1"
            )
            .is_err()
        );
        for (toml, named) in [
            ("[assets]\ncache_control = \"\"", "assets.cache_control"),
            (
                "[apps.shop]\nassets_cache_control = \"a\\u0007b\"",
                "apps.shop.assets_cache_control",
            ),
        ] {
            let config: Config = toml::from_str(toml).unwrap();
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(named), "{toml}: {error}");
        }
    }

    #[test]
    fn values_that_are_not_header_values_are_refused() {
        for bad in ["", "   ", "no-cache\r\nx-evil: 1", "max-age=\u{0}1"] {
            let config = AssetsConfig {
                cache_control: bad.to_owned(),
            };
            let error = config.validate("assets.cache_control").unwrap_err();
            assert!(
                error.to_string().contains("assets.cache_control"),
                "{bad:?}: {error}"
            );
        }
    }
}
