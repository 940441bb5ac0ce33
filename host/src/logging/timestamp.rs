//! The log's timestamps, as `tracing-subscriber`'s timer writes them, for the lines the host
//! formats itself (the access log, the note of dropped lines).

use std::cell::RefCell;
use std::fmt::Write as _;

thread_local! {
    /// The second last formatted, and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Now, as the log's timer writes it (`2026-12-07T05:49:21.051602Z`): the date and time of day
/// are formatted once a second.
pub(crate) fn timestamp(out: &mut String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != secs {
            *second = secs;
            text.clear();
            civil(text, secs);
        }
        out.push_str(text);
    });
    // `.{:06}Z`, without `fmt`.
    let mut micros = now.subsec_micros();
    let mut fraction = *b".000000Z";
    for digit in fraction[1..7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.push_str(std::str::from_utf8(&fraction).unwrap_or(".000000Z"));
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of a time `secs` after the epoch.
fn civil(out: &mut String, secs: u64) {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let of_day = secs % 86_400;
    // Days to a proleptic Gregorian date, counted in 400-year eras from 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_the_calendar_dates() {
        for (secs, expected) in [
            (0, "1970-01-01T00:00:00"),
            (951_782_400, "2000-02-29T00:00:00"),
            (1_709_164_799, "2024-02-28T23:59:59"),
            (1_796_625_361, "2026-12-07T06:36:01"),
            (4_107_542_399, "2100-02-28T23:59:59"),
            (253_402_300_799, "9999-12-31T23:59:59"),
        ] {
            let mut text = String::new();
            civil(&mut text, secs);
            assert_eq!(text, expected, "{secs}");
        }
    }

    /// The date and time of day the log's own timer writes now, to the second.
    #[test]
    fn timestamps_are_the_log_timers() {
        use tracing_subscriber::fmt::format::Writer;
        use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
        for _ in 0..3 {
            let mut ours = String::new();
            let mut theirs = String::new();
            timestamp(&mut ours);
            let _ = SystemTime.format_time(&mut Writer::new(&mut theirs));
            assert_eq!(ours.len(), theirs.len(), "{ours} / {theirs}");
            assert!(
                ours[19..].starts_with('.')
                    && ours[20..26].bytes().all(|b| b.is_ascii_digit())
                    && ours.ends_with('Z'),
                "{ours}"
            );
            if ours[..19] == theirs[..19] {
                return;
            }
            // A second ended between the two: try again.
        }
        panic!("the timestamps never agreed to the second");
    }
}
