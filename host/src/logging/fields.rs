//! [`PlainFields`]: the plain log's field formatter. It writes exactly what
//! `tracing-subscriber`'s `DefaultFields` writes, but writes `name=value` itself when the output
//! has no colours: `DefaultFields` paints every field name through `nu_ansi_term` even when
//! colours are off, which was half the cost of making a request's span, and a text of printable
//! ASCII needs no `fmt` to be quoted. The message, raw identifiers, `log.` fields, errors, byte
//! strings and coloured output are `DefaultFields`'s to write.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

/// Formats event and span fields as `DefaultFields` does, faster for plain values.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainFields;

impl<'a> MakeVisitor<Writer<'a>> for PlainFields {
    type Visitor = PlainVisitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> Self::Visitor {
        PlainVisitor {
            writer: target,
            is_empty: true,
            result: Ok(()),
        }
    }
}

/// The visitor of [`PlainFields`]: `name=value` pairs separated by spaces.
#[derive(Debug)]
pub struct PlainVisitor<'a> {
    writer: Writer<'a>,
    /// Nothing written yet: the next field needs no separating space.
    is_empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// Whether `field` is one this visitor writes itself: a plainly named field on a writer
    /// without colours. The message, raw identifiers (`r#type`) and `log.` fields (which
    /// `DefaultFields` skips) are left to it.
    fn writes(&self, field: &Field) -> bool {
        let name = field.name();
        !self.writer.has_ansi_escapes()
            && name != "message"
            && !name.starts_with("r#")
            && !name.starts_with("log.")
    }

    /// Writes `name=value` with `value` written by `value`.
    fn pair(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let writer = &mut self.writer;
        self.result = (|| {
            if !std::mem::take(&mut self.is_empty) {
                writer.write_char(' ')?;
            }
            writer.write_str(field.name())?;
            writer.write_char('=')?;
            value(writer)
        })();
    }

    /// Lets `DefaultFields`'s visitor write `field`, continuing where this one is.
    fn delegate(&mut self, field: &Field, visit: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut default = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        visit(&mut default);
        self.result = default.finish();
        // It writes every field but the `log.` ones.
        self.is_empty = self.is_empty && field.name().starts_with("log.");
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.writes(field) {
            self.pair(field, |w| write_quoted(w, value));
        } else {
            self.delegate(field, |d| d.record_str(field, value));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.writes(field) {
            self.pair(field, |w| w.write_str(itoa::Buffer::new().format(value)));
        } else {
            self.delegate(field, |d| d.record_u64(field, value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.writes(field) {
            self.pair(field, |w| w.write_str(itoa::Buffer::new().format(value)));
        } else {
            self.delegate(field, |d| d.record_i64(field, value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.writes(field) {
            self.pair(field, |w| w.write_str(if value { "true" } else { "false" }));
        } else {
            self.delegate(field, |d| d.record_bool(field, value));
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.record_debug(field, &value);
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.record_debug(field, &value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.record_debug(field, &value);
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.delegate(field, |d| d.record_bytes(field, value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.delegate(field, |d| d.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.writes(field) {
            self.pair(field, |w| write!(w, "{value:?}"));
        } else {
            self.delegate(field, |d| d.record_debug(field, value));
        }
    }
}

/// Writes `value` as `{:?}` does: quoted, and escaped where it needs to be (only texts of
/// printable ASCII without quotes or backslashes are written as they are, without `fmt`).
fn write_quoted(w: &mut Writer<'_>, value: &str) -> fmt::Result {
    if value
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        w.write_char('"')?;
        w.write_str(value)?;
        w.write_char('"')
    } else {
        write!(w, "{value:?}")
    }
}

impl VisitOutput<fmt::Result> for PlainVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for PlainVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::logging::tests::Captured;

    #[derive(Debug)]
    struct Failed;

    impl fmt::Display for Failed {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("inner \"cause\"")
        }
    }

    impl std::error::Error for Failed {}

    #[derive(Debug)]
    struct Outer(Failed);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// Events and spans with every kind of field, as the host logs them.
    pub(crate) fn log_everything() {
        let texts = [
            "",
            "plain",
            "with \"quotes\" and \\ backslash",
            "tab\tnewline\ncr\r",
            "\u{1b}[31mred\u{1b}[0m",
            "combining e\u{301} and \u{200b} zero width",
            "ünïcødé 日本",
        ];
        for (i, text) in texts.iter().enumerate() {
            let n = i as u64;
            let span = tracing::info_span!(
                "request",
                app = *text,
                version = "1.0.0",
                method = "GET",
                path = *text,
                n,
                neg = -(i as i64),
                ok = i % 2 == 0
            );
            let _entered = span.enter();
            tracing::info!(app = *text, n, "message {text}");
            tracing::info!(message = *text, app = "x");
            tracing::warn!(r#type = *text, n, ok = true, "raw identifier");
            tracing::info!(
                ratio = 0.1 * i as f64,
                big = u128::MAX,
                small = i128::MIN,
                "numbers"
            );
            tracing::info!(
                nan = f64::NAN,
                inf = f64::NEG_INFINITY,
                tiny = 1e-300,
                "floats"
            );
            tracing::info!(method = %http::Method::GET, status = ?http::StatusCode::OK, "typed");
            tracing::info!(shown = %text, debugged = ?text, "display and debug");
            tracing::info!(bytes = text.as_bytes(), "bytes");
            tracing::error!(
                error = &Outer(Failed) as &(dyn std::error::Error + 'static),
                "error with a source"
            );
            tracing::error!(
                error = &Failed as &(dyn std::error::Error + 'static),
                code = n,
                "error"
            );
            tracing::info!(
                log.target = "t",
                log.line = 3u64,
                first = *text,
                "log fields"
            );
            tracing::info!(log.target = "t", "log field first");
            let kinds = tracing::info_span!("kinds", ratio = 0.5 * i as f64, nan = f64::NAN,
                big = u128::MAX, small = i128::MIN, shown = %text, debugged = ?text,
                bytes = text.as_bytes(), r#type = *text, log.target = "t", ok = false,
                error = &Outer(Failed) as &(dyn std::error::Error + 'static));
            kinds.in_scope(|| tracing::info!(n, "in a span with every kind of field"));
            let inner = tracing::info_span!("inner", empty = "", m = tracing::field::Empty);
            inner.record("m", *text);
            inner.in_scope(|| tracing::info!(after = *text, "in an inner span"));
        }
        tracing::info!("no fields");
        tracing::info!(only = 1u64);
    }

    fn lines(ansi: bool, plain: bool) -> String {
        let out = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_ansi(ansi)
            .without_time()
            .with_writer(out.clone());
        if plain {
            tracing::subscriber::with_default(
                builder.fmt_fields(PlainFields).finish(),
                log_everything,
            );
        } else {
            tracing::subscriber::with_default(builder.finish(), log_everything);
        }
        out.text()
    }

    #[test]
    fn plain_fields_write_exactly_what_default_fields_write() {
        for ansi in [false, true] {
            let plain = lines(ansi, true);
            let default = lines(ansi, false);
            assert!(plain.lines().count() >= 79, "{plain}");
            for (p, d) in plain.lines().zip(default.lines()) {
                assert_eq!(p, d, "ansi {ansi}");
            }
            assert_eq!(plain, default, "ansi {ansi}");
        }
    }
}
