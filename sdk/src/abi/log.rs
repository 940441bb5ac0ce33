//! Forwards the module's `tracing` events to the host's log.
//!
//! A module carries its own copy of `tracing` with its own global dispatcher, invisible to the
//! host's. The module installs this subscriber as its global default at `create`, so an app's
//! `tracing::info!` lands in the host's log with the app's name and version attached.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

use super::{HostApi, LEVEL_DEBUG, LEVEL_ERROR, LEVEL_INFO, LEVEL_TRACE, LEVEL_WARN, RawStr};

struct HostLog {
    api: *const HostApi,
}

// SAFETY: the host's log callbacks are thread-safe and its table is immutable while the module
// is loaded.
unsafe impl Send for HostLog {}
// SAFETY: as above.
unsafe impl Sync for HostLog {}

fn level_number(level: &Level) -> u32 {
    match *level {
        Level::ERROR => LEVEL_ERROR,
        Level::WARN => LEVEL_WARN,
        Level::INFO => LEVEL_INFO,
        Level::DEBUG => LEVEL_DEBUG,
        Level::TRACE => LEVEL_TRACE,
    }
}

impl HostLog {
    fn api(&self) -> &HostApi {
        // SAFETY: the host keeps its table alive until the module is unloaded.
        unsafe { &*self.api }
    }
}

#[derive(Default)]
struct Message {
    text: String,
    fields: String,
}

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.text.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.text, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

impl Subscriber for HostLog {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // The host's filter can change at run time: ask it every time.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let api = self.api();
        // SAFETY: a live host callback taking plain values.
        unsafe { (api.log_enabled)(api.ctx, level_number(metadata.level())) }
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut message = Message::default();
        event.record(&mut message);
        message.text.push_str(&message.fields);
        let metadata = event.metadata();
        let api = self.api();
        // SAFETY: a live host callback; both slices outlive the call.
        unsafe {
            (api.log)(
                api.ctx,
                level_number(metadata.level()),
                RawStr::from_str(metadata.target()),
                RawStr::from_str(&message.text),
            )
        }
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// Makes the host's log the module's global `tracing` subscriber (once per loaded module).
pub(crate) fn install(api: *const HostApi) {
    let _ = tracing::subscriber::set_global_default(HostLog { api });
}
