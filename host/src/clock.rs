//! The host's one clock in milliseconds: wall-clock times for what is stored or shown
//! (`…_unix_ms`), and durations as whole milliseconds for logs and status.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `t` as milliseconds since the Unix epoch (0 before it, saturating far after it).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, millis)
}

/// Now, as milliseconds since the Unix epoch.
pub(crate) fn now_unix_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// `d` in whole milliseconds, saturating at `u64::MAX`.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whole milliseconds since `start`.
pub(crate) fn ms_since(start: Instant) -> u64 {
    millis(start.elapsed())
}

/// Milliseconds on a process-wide monotonic clock; never 0, so 0 can mean "not set" in an
/// atomic.
pub(crate) fn mono_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    millis(EPOCH.get_or_init(Instant::now).elapsed()) + 1
}

/// The tokio instant at `ms` on the clock of [`mono_ms`].
pub(crate) fn instant_at(ms: u64) -> tokio::time::Instant {
    let now = mono_ms();
    let now_instant = tokio::time::Instant::now();
    if ms >= now {
        now_instant + Duration::from_millis(ms - now)
    } else {
        now_instant
            .checked_sub(Duration::from_millis(now - ms))
            .unwrap_or(now_instant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_saturate_and_the_epoch_is_zero() {
        assert_eq!(millis(Duration::MAX), u64::MAX);
        assert_eq!(millis(Duration::from_micros(2_999)), 2);
        assert_eq!(unix_ms(UNIX_EPOCH), 0);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert!(now_unix_ms() > 1_600_000_000_000);
    }
}
