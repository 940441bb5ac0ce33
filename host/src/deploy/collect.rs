//! The registry's metrics collector: the gauges that describe live versions (requests in
//! flight, stuck handlers, traffic weight) and the quarantine, read from the registry on each
//! scrape. Nothing is stored between scrapes, so overlapping scrapes cannot see each other's
//! half-written state.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::{Registry, State};
use crate::metrics::encode_gauges;

/// Adds the registry's gauges to every scrape of its own metrics.
pub(crate) fn register_collector(registry: &Arc<Registry>) {
    let gauges = VersionGauges {
        registry: Arc::downgrade(registry),
    };
    registry.metrics().register_collector(Box::new(gauges));
}

/// Reads the gauges from the registry when scraped. The registry owns its metrics, which own
/// this collector: it holds the registry weakly.
#[derive(Debug)]
struct VersionGauges {
    registry: Weak<Registry>,
}

/// One live version's gauges.
#[derive(Debug, Default)]
struct Live {
    in_flight: i64,
    stuck: i64,
    weight: i64,
}

/// The `app` and `version` labels.
type Labels<'a> = [(&'static str, &'a str); 2];

fn labels<'a>(app: &'a str, version: &'a str) -> Labels<'a> {
    [("app", app), ("version", version)]
}

impl Collector for VersionGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let Some(registry) = self.registry.upgrade() else {
            return Ok(());
        };
        // By (app, version): two live versions can share a version string (the same version
        // rebuilt), and then their gauges add up.
        let mut live: BTreeMap<(String, String), Live> = BTreeMap::new();
        for slot in registry.apps() {
            for version in slot.versions() {
                if matches!(version.state(), State::Retired | State::Failed) {
                    continue;
                }
                let key = (slot.name().to_owned(), version.info().version.clone());
                let gauges = live.entry(key).or_default();
                gauges.in_flight += version.in_flight() as i64;
                gauges.stuck += version.stuck() as i64;
                gauges.weight += i64::from(slot.weight(&version));
            }
        }
        let each = |value: fn(&Live) -> i64| {
            live.iter()
                .map(move |((app, version), gauges)| (labels(app, version), value(gauges)))
        };
        encode_gauges(
            &mut encoder,
            "requests_in_flight",
            "Requests running on an app version now",
            each(|g| g.in_flight),
        )?;
        encode_gauges(
            &mut encoder,
            "stuck_handlers",
            "Handlers of an app version running past the request timeout",
            each(|g| g.stuck),
        )?;
        encode_gauges(
            &mut encoder,
            "version_weight_percent",
            "Share of an app's new requests a version takes",
            each(|g| g.weight),
        )?;
        let quarantined: BTreeSet<(String, String)> = registry
            .quarantine()
            .into_iter()
            .map(|q| (q.app, q.version))
            .collect();
        encode_gauges(
            &mut encoder,
            "quarantined_versions",
            "Versions quarantined because they crashed the serving process (1 while quarantined)",
            quarantined
                .iter()
                .map(|(app, version)| (labels(app, version), 1)),
        )
    }
}
