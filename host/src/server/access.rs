//! The access log: one line per app request, target `baton::access`.
//!
//! With the host's log sink installed (the `baton` binary installs it) the line is formatted
//! here, in the log's own format, into a buffer per thread and appended to the sink: no
//! `tracing` event, no field visitors, no allocation per request. Without a sink it is an
//! ordinary `tracing` event with the same fields. `BATON_LOG=…,baton::access=off` turns either
//! off.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::logging::{self, LineFormat};

/// What one access log line says.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccessLine<'a> {
    pub(crate) app: Option<&'a str>,
    pub(crate) version: Option<&'a str>,
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) status: u16,
    pub(crate) duration_ms: f64,
    pub(crate) client: Option<IpAddr>,
    pub(crate) scheme: Option<&'a str>,
    /// The peer, when it is a proxy that forwarded for the client.
    pub(crate) proxy: Option<IpAddr>,
}

thread_local! {
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Logs the line, if the access log's target is enabled.
pub(crate) fn log(line: &AccessLine<'_>) {
    if !tracing::enabled!(target: "baton::access", tracing::Level::INFO) {
        return;
    }
    match logging::access_sink() {
        Some(sink) => LINE.with_borrow_mut(|text| {
            text.clear();
            match sink.format() {
                LineFormat::Plain => line.plain(text),
                LineFormat::Json => line.json(text),
            }
            sink.append(text.as_bytes());
        }),
        None => line.event(),
    }
}

impl AccessLine<'_> {
    /// As an ordinary `tracing` event.
    fn event(&self) {
        tracing::info!(target: "baton::access", app = self.app, version = self.version,
            method = %self.method, path = self.path, status = self.status,
            duration_ms = self.duration_ms,
            client = self.client.map(tracing::field::display),
            scheme = self.scheme,
            proxy = self.proxy.map(tracing::field::display),
            "request");
    }

    /// `tracing-subscriber`'s full format without colours, as the rest of the log.
    fn plain(&self, out: &mut String) {
        timestamp(out);
        out.push_str("  INFO baton::access: request");
        if let Some(app) = self.app {
            out.push_str(" app=");
            debug_str(out, app);
        }
        if let Some(version) = self.version {
            out.push_str(" version=");
            debug_str(out, version);
        }
        out.push_str(" method=");
        out.push_str(self.method);
        out.push_str(" path=");
        debug_str(out, self.path);
        out.push_str(" status=");
        out.push_str(itoa::Buffer::new().format(self.status));
        let _ = write!(out, " duration_ms={:?}", self.duration_ms);
        if let Some(client) = self.client {
            out.push_str(" client=");
            crate::text::push_ip(out, client);
        }
        if let Some(scheme) = self.scheme {
            out.push_str(" scheme=");
            debug_str(out, scheme);
        }
        if let Some(proxy) = self.proxy {
            out.push_str(" proxy=");
            crate::text::push_ip(out, proxy);
        }
        out.push('\n');
    }

    /// `tracing-subscriber`'s JSON format with flattened fields, as the rest of the log.
    fn json(&self, out: &mut String) {
        out.push_str(r#"{"timestamp":""#);
        timestamp(out);
        out.push_str(r#"","level":"INFO","message":"request""#);
        if let Some(app) = self.app {
            json_field(out, "app", app);
        }
        if let Some(version) = self.version {
            json_field(out, "version", version);
        }
        json_field(out, "method", self.method);
        json_field(out, "path", self.path);
        out.push_str(r#","status":"#);
        out.push_str(itoa::Buffer::new().format(self.status));
        // serde_json writes numbers as the log's JSON formatter does.
        let duration = serde_json::Value::from(self.duration_ms);
        let _ = write!(out, r#","duration_ms":{duration}"#);
        if let Some(client) = self.client {
            out.push_str(r#","client":""#);
            crate::text::push_ip(out, client);
            out.push('"');
        }
        if let Some(scheme) = self.scheme {
            json_field(out, "scheme", scheme);
        }
        if let Some(proxy) = self.proxy {
            out.push_str(r#","proxy":""#);
            crate::text::push_ip(out, proxy);
            out.push('"');
        }
        out.push_str(r#","target":"baton::access"}"#);
        out.push('\n');
    }
}

/// `,"name":"value"`, the value escaped as JSON.
fn json_field(out: &mut String, name: &str, value: &str) {
    let _ = write!(out, r#","{name}":"#);
    // Writing a string into a `String` cannot fail.
    let _ = serde_json::to_writer(StringWriter(out), value);
}

/// `io::Write` into a `String`, for serde_json (which only writes UTF-8).
struct StringWriter<'a>(&'a mut String);

impl std::io::Write for StringWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = std::str::from_utf8(buf).map_err(std::io::Error::other)?;
        self.0.push_str(text);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `value` as `{:?}` writes it: quoted, escaped. Most values need no escape and are copied.
fn debug_str(out: &mut String, value: &str) {
    if value
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        out.push('"');
        out.push_str(value);
        out.push('"');
    } else {
        let _ = write!(out, "{value:?}");
    }
}

thread_local! {
    /// The second last formatted, and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Now, as the log's timer writes it (`2026-12-07T05:49:21.051602Z`): the date and time of day
/// are formatted once a second.
fn timestamp(out: &mut String) {
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
    let _ = write!(out, ".{:06}Z", now.subsec_micros());
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
    use crate::logging::tests::Captured;

    /// What `tracing-subscriber` writes for the line as an event, in either format.
    fn as_event(line: &AccessLine<'_>, format: LineFormat) -> String {
        let out = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(out.clone());
        match format {
            LineFormat::Plain => {
                tracing::subscriber::with_default(builder.finish(), || line.event());
            }
            LineFormat::Json => tracing::subscriber::with_default(
                builder
                    .json()
                    .flatten_event(true)
                    .with_span_list(false)
                    .finish(),
                || line.event(),
            ),
        }
        out.text()
    }

    fn formatted(line: &AccessLine<'_>, format: LineFormat) -> String {
        let mut text = String::new();
        match format {
            LineFormat::Plain => line.plain(&mut text),
            LineFormat::Json => line.json(&mut text),
        }
        text
    }

    /// The 27 characters of `2026-12-07T05:49:21.051602Z`, masked.
    fn without_timestamp(text: &str, at: usize) -> String {
        let stamp = &text[at..at + 27];
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{text:?}"
        );
        format!("{}{}", &text[..at], &text[at + 27..])
    }

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
            if ours[..19] == theirs[..19] {
                return;
            }
            // A second ended between the two: try again.
        }
        panic!("the timestamps never agreed to the second");
    }

    #[test]
    fn lines_are_what_the_log_formatter_writes_for_the_same_event() {
        let paths = [
            "/hello/",
            "/notes/api/notes",
            "/a b/\"quoted\"/back\\slash",
            "/\u{e9}t\u{e9}/\u{1F600}",
            "/ctl/\u{1}\u{7f}\t\n",
            "/combining/\u{301}x/\u{200b}/\u{feff}",
            "",
        ];
        let addrs: [Option<IpAddr>; 3] = [
            None,
            Some("127.0.0.1".parse().unwrap()),
            Some("2001:db8::1".parse().unwrap()),
        ];
        let durations = [0.0, 0.23956, 1.0, 12_345.678_901, 1e-7, 3.0e9];
        let mut checked = 0;
        for (i, path) in paths.iter().enumerate() {
            for (j, client) in addrs.iter().enumerate() {
                for (k, duration_ms) in durations.iter().enumerate() {
                    let line = AccessLine {
                        app: (i % 2 == 0).then_some("hello"),
                        version: (j != 1).then_some("1.0.0-rc.1+\"x\""),
                        method: ["GET", "POST", "PROPFIND"][k % 3],
                        path,
                        status: [200, 404, 503][(i + k) % 3],
                        duration_ms: *duration_ms,
                        client: *client,
                        scheme: client.map(|_| if k % 2 == 0 { "http" } else { "https" }),
                        proxy: addrs[(j + k) % 3],
                    };
                    let plain = formatted(&line, LineFormat::Plain);
                    assert_eq!(
                        without_timestamp(&plain, 0),
                        without_timestamp(&as_event(&line, LineFormat::Plain), 0),
                        "{line:?}"
                    );
                    let json = formatted(&line, LineFormat::Json);
                    let at = r#"{"timestamp":""#.len();
                    assert_eq!(
                        without_timestamp(&json, at),
                        without_timestamp(&as_event(&line, LineFormat::Json), at),
                        "{line:?}"
                    );
                    serde_json::from_str::<serde_json::Value>(&json).unwrap();
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 7 * 3 * 6);
    }
}
