//! [`JsonSpanFields`]: the JSON log's span-field formatter. It writes exactly what
//! `tracing-subscriber`'s `JsonFields` writes — one JSON object, keys in order — without its
//! per-span map and copied values: each value is written as JSON text once, into one buffer,
//! and the object is put together from it. A request's span has four fields, so this is most
//! of what making it costs in the JSON log.

use std::fmt;

use serde::Serializer as _;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FormatFields, FormattedFields};

/// Formats span fields as `JsonFields` does.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonSpanFields;

/// The fields of one span: each value's JSON text in `text`, in the order visited.
#[derive(Default)]
struct Collect<'a> {
    entries: Vec<(&'a str, std::ops::Range<usize>)>,
    text: Vec<u8>,
    failed: bool,
}

impl<'a> Collect<'a> {
    /// Adds `name` with the JSON text `write` writes.
    fn add(
        &mut self,
        name: &'a str,
        write: impl FnOnce(&mut serde_json::Serializer<&mut Vec<u8>>) -> serde_json::Result<()>,
    ) {
        let start = self.text.len();
        let mut serializer = serde_json::Serializer::new(&mut self.text);
        if write(&mut serializer).is_err() {
            self.failed = true;
        }
        self.entries.push((name, start..self.text.len()));
    }

    /// The object: keys in order, the last value of a key repeated, as a map keeps it.
    fn write(mut self, out: &mut Writer<'_>) -> fmt::Result {
        if self.failed {
            return Err(fmt::Error);
        }
        // Stable: of equal keys the last visited comes last, and wins.
        self.entries.sort_by(|a, b| a.0.cmp(b.0));
        let mut object = Vec::with_capacity(self.text.len() + 16 * self.entries.len());
        object.push(b'{');
        let mut first = true;
        for (i, (name, range)) in self.entries.iter().enumerate() {
            if self.entries.get(i + 1).is_some_and(|next| next.0 == *name) {
                continue;
            }
            if !std::mem::take(&mut first) {
                object.push(b',');
            }
            serde_json::to_writer(&mut object, name).map_err(|_| fmt::Error)?;
            object.push(b':');
            object.extend_from_slice(&self.text[range.clone()]);
        }
        object.push(b'}');
        out.write_str(std::str::from_utf8(&object).map_err(|_| fmt::Error)?)
    }
}

/// `Debug` shown through `Display`, for `collect_str`.
struct AsDebug<'a>(&'a dyn fmt::Debug);

impl fmt::Display for AsDebug<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl<'a> Visit for Collect<'a> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.add(field.name(), |s| s.serialize_f64(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.add(field.name(), |s| s.serialize_i64(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.add(field.name(), |s| s.serialize_u64(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.add(field.name(), |s| s.serialize_bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.add(field.name(), |s| s.serialize_str(value));
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        // A list of numbers, as `serde_json::Value::from(&[u8])` is.
        self.add(field.name(), |s| {
            serde::Serialize::serialize(&value.iter().collect::<Vec<_>>(), s)
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        // As `JsonFields`: `log.` fields are the log record's, already shown; `r#` is dropped.
        if name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.add(name, |s| s.collect_str(&AsDebug(value)));
    }
}

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut collect = Collect::default();
        fields.record(&mut collect);
        collect.write(&mut writer)
    }

    /// Fields recorded on a span after it was made: rare, so left to `JsonFields`, which
    /// reads the object back and writes it again with them.
    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut json = FormattedFields::<JsonFields>::new(std::mem::take(&mut current.fields));
        let result = JsonFields::new().add_fields(&mut json, fields);
        current.fields = json.fields;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::fields::tests::log_everything;
    use crate::logging::tests::Captured;

    /// The JSON log's lines, as the host configures it, with these span fields or the default.
    fn lines(fast: bool) -> String {
        let out = Captured::default();
        let builder = tracing_subscriber::fmt()
            .without_time()
            .with_writer(out.clone())
            .json()
            .flatten_event(true)
            .with_span_list(false);
        if fast {
            let subscriber = builder.fmt_fields(JsonSpanFields).finish();
            tracing::subscriber::with_default(subscriber, log_everything);
        } else {
            tracing::subscriber::with_default(builder.finish(), log_everything);
        }
        out.text()
    }

    #[test]
    fn json_span_fields_write_exactly_what_json_fields_write() {
        let fast = lines(true);
        let default = lines(false);
        assert!(fast.lines().count() >= 79, "{fast}");
        assert!(fast.contains(r#""span":{"#), "{fast}");
        for (f, d) in fast.lines().zip(default.lines()) {
            assert_eq!(f, d);
        }
        assert_eq!(fast, default);
    }

    /// Keys repeated or out of order come out once each, sorted, the last value kept.
    #[test]
    fn repeated_keys_keep_the_last_value_in_key_order() {
        let mut out = String::new();
        let mut collect = Collect::default();
        collect.add("zeta", |s| s.serialize_u64(1));
        collect.add("alpha", |s| s.serialize_str("first"));
        collect.add("alpha", |s| s.serialize_str("second \"quoted\""));
        collect.add("mid", |s| s.serialize_f64(f64::NAN));
        collect.write(&mut Writer::new(&mut out)).unwrap();
        assert_eq!(out, r#"{"alpha":"second \"quoted\"","mid":null,"zeta":1}"#);
    }
}
