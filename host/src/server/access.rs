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

use super::client::Scheme;
use crate::logging::{self, LineFormat};

/// A version's `app` and `version` fields of its access lines, written once when it is loaded,
/// in either format.
#[derive(Debug)]
pub(crate) struct VersionFields {
    app: String,
    version: String,
    plain: String,
    json: String,
}

impl VersionFields {
    pub(crate) fn new(app: &str, version: &str) -> VersionFields {
        let mut plain = String::from(" app=");
        debug_str(&mut plain, app);
        plain.push_str(" version=");
        debug_str(&mut plain, version);
        let mut json = String::new();
        json_field(&mut json, "app", app);
        json_field(&mut json, "version", version);
        VersionFields {
            app: app.to_owned(),
            version: version.to_owned(),
            plain,
            json,
        }
    }
}

/// Which app and version served the request, as far as known.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ServedBy<'a> {
    /// A version, with its fields written beforehand.
    Version(&'a VersionFields),
    /// An app before a version took the request (or none).
    App(Option<&'a str>),
}

impl ServedBy<'_> {
    fn app(&self) -> Option<&str> {
        match self {
            ServedBy::Version(fields) => Some(&fields.app),
            ServedBy::App(app) => *app,
        }
    }

    fn version(&self) -> Option<&str> {
        match self {
            ServedBy::Version(fields) => Some(&fields.version),
            ServedBy::App(_) => None,
        }
    }
}

/// What one access log line says.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccessLine<'a> {
    pub(crate) by: ServedBy<'a>,
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) status: u16,
    pub(crate) duration_ms: f64,
    /// The client: the peer, or the one a trusted proxy forwarded for.
    pub(crate) client: IpAddr,
    pub(crate) scheme: Scheme,
    /// The peer, when it is a proxy that forwarded for the client.
    pub(crate) proxy: Option<IpAddr>,
}

/// The access log's `tracing` target.
const TARGET: &str = "baton::access";

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
        tracing::info!(target: "baton::access", app = self.by.app(), version = self.by.version(),
            method = %self.method, path = self.path, status = self.status,
            duration_ms = self.duration_ms,
            client = %self.client,
            scheme = self.scheme.as_str(),
            proxy = self.proxy.map(tracing::field::display),
            "request");
    }

    /// `tracing-subscriber`'s full format without colours, as the rest of the log.
    fn plain(&self, out: &mut String) {
        logging::start_line(out, LineFormat::Plain, "INFO", TARGET, "request");
        match self.by {
            ServedBy::Version(fields) => out.push_str(&fields.plain),
            ServedBy::App(Some(app)) => {
                out.push_str(" app=");
                debug_str(out, app);
            }
            ServedBy::App(None) => {}
        }
        out.push_str(" method=");
        out.push_str(self.method);
        out.push_str(" path=");
        debug_str(out, self.path);
        out.push_str(" status=");
        out.push_str(itoa::Buffer::new().format(self.status));
        out.push_str(" duration_ms=");
        debug_f64(out, self.duration_ms);
        out.push_str(" client=");
        crate::text::push_ip(out, self.client);
        // Needs no escape.
        out.push_str(" scheme=\"");
        out.push_str(self.scheme.as_str());
        out.push('"');
        if let Some(proxy) = self.proxy {
            out.push_str(" proxy=");
            crate::text::push_ip(out, proxy);
        }
        logging::end_line(out, LineFormat::Plain, TARGET);
    }

    /// `tracing-subscriber`'s JSON format with flattened fields, as the rest of the log.
    fn json(&self, out: &mut String) {
        logging::start_line(out, LineFormat::Json, "INFO", TARGET, "request");
        match self.by {
            ServedBy::Version(fields) => out.push_str(&fields.json),
            ServedBy::App(Some(app)) => json_field(out, "app", app),
            ServedBy::App(None) => {}
        }
        json_field(out, "method", self.method);
        json_field(out, "path", self.path);
        out.push_str(r#","status":"#);
        out.push_str(itoa::Buffer::new().format(self.status));
        // As serde_json writes a number for the log's JSON formatter: with zmij, `null` when
        // not finite.
        out.push_str(r#","duration_ms":"#);
        if self.duration_ms.is_finite() {
            out.push_str(zmij::Buffer::new().format_finite(self.duration_ms));
        } else {
            out.push_str("null");
        }
        out.push_str(r#","client":""#);
        crate::text::push_ip(out, self.client);
        out.push('"');
        out.push_str(r#","scheme":""#);
        out.push_str(self.scheme.as_str());
        out.push('"');
        if let Some(proxy) = self.proxy {
            out.push_str(r#","proxy":""#);
            crate::text::push_ip(out, proxy);
            out.push('"');
        }
        logging::end_line(out, LineFormat::Json, TARGET);
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

/// `value` as `{:?}` writes it. Between 1e-4 and 1e15 that is the shortest decimal that reads
/// back as `value`, which zmij writes too, for a fraction of the cost. Up to 15 significant
/// digits there is only one such decimal (a duration in milliseconds from whole nanoseconds,
/// [`duration_ms`], has at most 14); with more, two can tie and the two break ties their own
/// ways, so `{:?}` writes it, as it does the exponents outside that range.
fn debug_f64(out: &mut String, value: f64) {
    if (1e-4..1e15).contains(&value) {
        let mut buffer = zmij::Buffer::new();
        let text = buffer.format_finite(value);
        let significant = text
            .trim_start_matches(['0', '.'])
            .bytes()
            .filter(u8::is_ascii_digit)
            .count();
        if significant <= 15 {
            out.push_str(text);
            return;
        }
    }
    let _ = write!(out, "{value:?}");
}

/// `took` in milliseconds, as the nearest double to its whole nanoseconds over a million: it
/// reads as that decimal (`0.239561`, not `0.23956100000000002`).
pub(crate) fn duration_ms(took: std::time::Duration) -> f64 {
    // Exact below 2^53 ns (104 days).
    took.as_nanos() as f64 / 1e6
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
        let fields = [
            VersionFields::new("hello", "1.0.0-rc.1+\"x\""),
            VersionFields::new("h\u{e9}\\\"\u{1}", "2.0.0"),
        ];
        let mut checked = 0;
        for (i, path) in paths.iter().enumerate() {
            for (j, client) in addrs.iter().enumerate() {
                for (k, duration_ms) in durations.iter().enumerate() {
                    let line = AccessLine {
                        by: match (i + j) % 4 {
                            0 => ServedBy::Version(&fields[0]),
                            1 => ServedBy::Version(&fields[1]),
                            2 => ServedBy::App(Some("hello")),
                            _ => ServedBy::App(None),
                        },
                        method: ["GET", "POST", "PROPFIND"][k % 3],
                        path,
                        status: [200, 404, 503][(i + k) % 3],
                        duration_ms: *duration_ms,
                        client: client.unwrap_or(IpAddr::from([192, 0, 2, 7])),
                        scheme: if k % 2 == 0 {
                            Scheme::Http
                        } else {
                            Scheme::Https
                        },
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

    /// Spread over every magnitude, the boundaries of the shortcut and the integers near
    /// them: `debug_f64` writes what `{:?}` writes.
    #[test]
    fn durations_are_written_as_debug_writes_them() {
        use std::time::Duration;
        let mut values = vec![0.0, -0.0, -1.5, f64::NAN, f64::INFINITY, f64::MIN_POSITIVE];
        let mut fast = 0;
        for exponent in -8..=18 {
            let power = 10f64.powi(exponent);
            for scale in [1.0, 1.5, 9.999_999_999, 0.999_999_999_999_9] {
                values.extend([power * scale, power * scale + power / 3.0]);
            }
            values.extend([
                f64::from_bits(power.to_bits() - 1),
                f64::from_bits(power.to_bits() + 1),
            ]);
        }
        // Pseudo-random doubles from 1e-6 to 1e17, and durations as the host computes them.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..300_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let exponent = (state % 23) as i32 - 6;
            let mantissa = (state >> 11) as f64 / (1u64 << 53) as f64;
            values.push((1.0 + mantissa) * 10f64.powi(exponent));
            let took = Duration::from_nanos(state % 100_000_000_000);
            values.push(duration_ms(took));
            fast += usize::from(format!("{:?}", duration_ms(took)).len() <= 17);
        }
        for value in values {
            let mut ours = String::new();
            debug_f64(&mut ours, value);
            assert_eq!(ours, format!("{value:?}"), "{:e}", value);
        }
        // Durations take the short way.
        assert_eq!(fast, 300_000);
    }
}
