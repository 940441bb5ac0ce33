//! Canary splits: which version a new request goes to while an app has a canary.
//!
//! During a split the app's new requests go to the canary with probability `percent` and to
//! the active version otherwise. Without stickiness the choice walks a fixed permutation of
//! 0..100 (a shared counter times 61, mod 100), so every hundred requests split exactly. With
//! `canary_sticky`, a request carrying the session cookie goes by a hash of the cookie's value:
//! the same session lands on the same version without any store lookup, and raising the
//! percentage only ever moves sessions from the active version to the canary.

use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use serde::Serialize;

use super::AppSlot;
use crate::deploy::version::Version;

/// A canary split as installed: the canary version and its share of new requests.
#[derive(Debug)]
pub(crate) struct Split {
    pub(crate) version: Arc<Version>,
    pub(crate) percent: u8,
}

/// An app's canary, as reported.
#[derive(Debug, Clone)]
pub struct Canary {
    /// The canary version.
    pub version: Arc<Version>,
    /// Its share of new requests, in percent.
    pub percent: u8,
}

/// The canary part of the status document.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CanaryStatus {
    /// Canary version.
    pub version: String,
    /// Its share of new requests, in percent; the active version takes the rest.
    pub percent: u8,
}

impl From<&Canary> for CanaryStatus {
    fn from(canary: &Canary) -> Self {
        CanaryStatus {
            version: canary.version.info().version.clone(),
            percent: canary.percent,
        }
    }
}

impl AppSlot {
    /// The canary, if a split is set.
    pub fn canary(&self) -> Option<Canary> {
        self.split.load().as_ref().map(|split| Canary {
            version: Arc::clone(&split.version),
            percent: split.percent,
        })
    }

    /// The share of new requests `version` takes now, in percent.
    pub fn weight(&self, version: &Version) -> u8 {
        let canary = self.split.load();
        match (canary.as_ref(), self.active.load().as_ref()) {
            (Some(split), _) if split.version.id() == version.id() => split.percent,
            (split, Some(active)) if active.id() == version.id() => {
                100 - split.map_or(0, |s| s.percent)
            }
            _ => 0,
        }
    }

    /// Installs (or with `None` removes) the canary; returns the canary it replaced, if that
    /// was another version. Only [`AppSlot::switch`] calls it.
    pub(super) fn set_split(
        &self,
        canary: Option<Arc<Version>>,
        percent: u8,
    ) -> Option<Arc<Version>> {
        let id = canary.as_ref().map(|c| c.id());
        let split = canary.map(|version| Arc::new(Split { version, percent }));
        self.split_on.store(split.is_some(), SeqCst);
        let old = self.split.swap(split)?;
        (Some(old.version.id()) != id).then(|| Arc::clone(&old.version))
    }

    /// The version a new request goes to during a split.
    pub(super) fn pick(&self, headers: &http::HeaderMap) -> Option<Arc<Version>> {
        let split = self.split.load();
        let Some(split) = split.as_ref() else {
            return self.active.load_full();
        };
        let sticky = self
            .sticky
            .then(|| crate::session::sticky_key(headers, &self.cookie_name))
            .flatten();
        let bucket = match sticky {
            Some(id) => xxhash_rust::xxh3::xxh3_64(id.as_bytes()) % 100,
            None => self.split_counter.fetch_add(1, Relaxed).wrapping_mul(61) % 100,
        };
        if bucket < u64::from(split.percent) {
            Some(Arc::clone(&split.version))
        } else {
            self.active.load_full()
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;
    use http::header::COOKIE;

    use super::*;
    use crate::config::Config;
    use crate::deploy::registry::Switch;
    use crate::sync::lock;

    /// An app with an active version (id 1) and, at `percent`, a canary (id 2).
    fn split(percent: u8, sticky: bool) -> (AppSlot, Arc<Version>, Arc<Version>) {
        let config = Config {
            canary_sticky: sticky,
            ..Config::default()
        };
        let slot = AppSlot::new("app", &config);
        let (active, canary) = (Version::stub(1, "app", "1"), Version::stub(2, "app", "2"));
        let _ = slot.switch(
            &mut lock(&slot.guard),
            Switch::To(Some(Arc::clone(&active))),
        );
        let _ = slot.switch(
            &mut lock(&slot.guard),
            Switch::Split(Arc::clone(&canary), percent),
        );
        (slot, active, canary)
    }

    /// How many of `n` requests with these headers go to version `id`.
    fn count(slot: &AppSlot, headers: &HeaderMap, n: usize, id: u64) -> usize {
        (0..n)
            .filter(|_| slot.pick(headers).is_some_and(|v| v.id() == id))
            .count()
    }

    fn cookies(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(COOKIE, format!("BATON_SESSION={value}").parse().unwrap());
        }
        headers
    }

    /// A well-formed session id (48 lower-case hex digits).
    fn session(n: u64) -> String {
        format!("{n:048x}")
    }

    fn bucket(value: &str) -> u64 {
        xxhash_rust::xxh3::xxh3_64(value.as_bytes()) % 100
    }

    #[test]
    fn weights_add_up_to_a_hundred() {
        let (slot, active, canary) = split(30, false);
        assert_eq!(slot.weight(&active), 70);
        assert_eq!(slot.weight(&canary), 30);
        assert_eq!(slot.weight(&Version::stub(3, "app", "3")), 0);
        let status = CanaryStatus::from(&slot.canary().unwrap());
        assert_eq!((status.version.as_str(), status.percent), ("2", 30));

        let _ = slot.switch(&mut lock(&slot.guard), Switch::Unsplit);
        assert!(slot.canary().is_none());
        assert_eq!(slot.weight(&active), 100);
        assert_eq!(slot.weight(&canary), 0);
    }

    #[test]
    fn every_hundred_requests_split_exactly() {
        for percent in [0, 1, 30, 50, 99, 100] {
            let (slot, active, canary) = split(percent, false);
            let headers = HeaderMap::new();
            assert_eq!(
                count(&slot, &headers, 200, canary.id()),
                2 * usize::from(percent)
            );
            let to_active = count(&slot, &headers, 100, active.id());
            assert_eq!(to_active, 100 - usize::from(percent));
        }
    }

    #[test]
    fn without_stickiness_the_cookie_is_ignored() {
        let (slot, _, canary) = split(50, false);
        let headers = cookies(&[&session(7)]);
        assert_eq!(count(&slot, &headers, 100, canary.id()), 50);
    }

    #[test]
    fn a_sticky_session_stays_on_one_version() {
        let (slot, active, canary) = split(40, true);
        for n in 0..50 {
            let id = session(n);
            let expected = if bucket(&id) < 40 { &canary } else { &active };
            let headers = cookies(&[&id]);
            assert_eq!(
                count(&slot, &headers, 20, expected.id()),
                20,
                "session {id}"
            );
        }
        // Without the cookie the split is by count.
        assert_eq!(count(&slot, &HeaderMap::new(), 100, canary.id()), 40);
    }

    #[test]
    fn raising_the_percentage_only_moves_sessions_to_the_canary() {
        let ids: Vec<String> = (0..200).map(session).collect();
        let on_canary = |percent| {
            let (slot, _, canary) = split(percent, true);
            ids.iter()
                .filter(|id| count(&slot, &cookies(&[id.as_str()]), 1, canary.id()) == 1)
                .cloned()
                .collect::<Vec<_>>()
        };
        let (low, high) = (on_canary(20), on_canary(60));
        assert!(!low.is_empty() && high.len() > low.len());
        assert!(low.iter().all(|id| high.contains(id)));
    }

    #[test]
    fn sticky_routing_keys_on_the_id_the_session_layer_uses() {
        // A malformed cookie whose value would land on the active version, then a well-formed
        // one that lands on the canary: both the session layer and the split take the second.
        let forged = (0..)
            .map(|n| format!("forged-{n}"))
            .find(|v| bucket(v) >= 50)
            .unwrap();
        let good = (0..).map(session).find(|id| bucket(id) < 50).unwrap();
        let headers = cookies(&[&forged, &good]);
        assert_eq!(
            crate::session::session_id(&headers, "BATON_SESSION"),
            Some(good.as_str())
        );
        let (slot, _, canary) = split(50, true);
        assert_eq!(count(&slot, &headers, 20, canary.id()), 20);
    }
}
