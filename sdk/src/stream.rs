//! Streamed responses: a body the handler writes piece by piece after the status and headers
//! went out, and server-sent events on top of it.
//!
//! The host sends each piece as it comes (HTTP/1.1 chunks, HTTP/2 data frames) and holds at most
//! a few pieces per response: when the client reads slowly, writes block, so a slow client never
//! makes the host buffer without bound. A write fails once the client is gone, or the version's
//! drain deadline passed: the handler should then return. [`BodyWriter::is_draining`] tells a
//! long stream (server-sent events) that a newer version took over, so it can end itself and let
//! the client reconnect there.

use std::io::{self, Write};

use crate::abi::HostIo;

/// Writes of at most this many bytes are gathered before they go to the host.
const GATHER_BYTES: usize = 16 * 1024;

/// Where a streamed body goes.
enum Target<'a> {
    /// The host sends it to the client as it comes.
    Host(HostIo<'a>),
    /// Gathered in memory: unit tests, and a host older than streaming.
    Memory(&'a mut Vec<u8>),
}

/// The body of a streamed response, as the handler's stream function writes it.
///
/// Writes are gathered into pieces of up to 16 KiB; [`flush`](Write::flush) sends what is
/// gathered at once (do so after each event of a live stream). Dropping the writer sends the rest.
///
/// ```
/// use std::io::Write;
/// use baton_sdk::Response;
///
/// let response = Response::stream(|out| {
///     for i in 0..3 {
///         writeln!(out, "line {i}")?;
///     }
///     Ok(())
/// });
/// assert_eq!(response.into_bytes().unwrap(), b"line 0\nline 1\nline 2\n");
/// ```
pub struct BodyWriter<'a> {
    target: Target<'a>,
    gathered: Vec<u8>,
    failed: bool,
}

impl std::fmt::Debug for BodyWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyWriter")
            .field("gathered", &self.gathered.len())
            .finish_non_exhaustive()
    }
}

impl<'a> BodyWriter<'a> {
    pub(crate) fn to_host(io: HostIo<'a>) -> Self {
        BodyWriter {
            target: Target::Host(io),
            gathered: Vec::new(),
            failed: false,
        }
    }

    pub(crate) fn to_memory(buf: &'a mut Vec<u8>) -> Self {
        BodyWriter {
            target: Target::Memory(buf),
            gathered: Vec::new(),
            failed: false,
        }
    }

    /// Whether the version serving this response stopped taking new requests (a newer version
    /// took over, or the host is stopping). A long-lived stream should end soon; a client that
    /// reconnects reaches the new version. Always `false` outside a host.
    pub fn is_draining(&self) -> bool {
        match &self.target {
            Target::Host(io) => io.draining(),
            Target::Memory(_) => false,
        }
    }

    /// Sends one server-sent event and flushes it.
    ///
    /// # Errors
    /// The client is gone or the stream was cut.
    pub fn send_event(&mut self, event: &Event) -> io::Result<()> {
        self.write_all(event.to_string().as_bytes())?;
        self.flush()
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the response stream is closed",
            ));
        }
        let result = match &mut self.target {
            Target::Host(io) => io.write(bytes),
            Target::Memory(buf) => {
                buf.extend_from_slice(bytes);
                Ok(())
            }
        };
        self.failed = result.is_err();
        result
    }
}

impl Write for BodyWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() >= GATHER_BYTES {
            self.flush()?;
            self.send(buf)?;
        } else {
            if self.gathered.len() + buf.len() > GATHER_BYTES {
                self.flush()?;
            }
            self.gathered.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.gathered.is_empty() {
            return Ok(());
        }
        let gathered = std::mem::take(&mut self.gathered);
        let result = self.send(&gathered);
        self.gathered = gathered;
        self.gathered.clear();
        result
    }
}

impl Drop for BodyWriter<'_> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// One server-sent event (`text/event-stream`), for [`BodyWriter::send_event`].
///
/// ```
/// use baton_sdk::Event;
///
/// let e = Event::new("two\nlines").id("7").event("note");
/// assert_eq!(e.to_string(), "id: 7\nevent: note\ndata: two\ndata: lines\n\n");
/// assert_eq!(Event::retry(500).to_string(), "retry: 500\n\n");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    retry_ms: Option<u64>,
}

impl Event {
    /// An event carrying `data` (several lines become several `data:` lines).
    pub fn new(data: impl Into<String>) -> Self {
        Event {
            data: Some(data.into()),
            ..Event::default()
        }
    }

    /// An event that only tells the client how long to wait before reconnecting.
    pub fn retry(ms: u64) -> Self {
        Event {
            retry_ms: Some(ms),
            ..Event::default()
        }
    }

    /// Sets the id, which the browser sends back as `Last-Event-ID` when it reconnects.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(one_line(id.into()));
        self
    }

    /// Sets the event type (`addEventListener(type, …)` in the browser).
    pub fn event(mut self, event: impl Into<String>) -> Self {
        self.event = Some(one_line(event.into()));
        self
    }

    /// Sets the reconnection delay sent with this event.
    pub fn with_retry(mut self, ms: u64) -> Self {
        self.retry_ms = Some(ms);
        self
    }
}

/// Field values other than data must not break the event's framing.
fn one_line(s: String) -> String {
    s.replace(['\r', '\n'], " ")
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(id) = &self.id {
            writeln!(f, "id: {id}")?;
        }
        if let Some(event) = &self.event {
            writeln!(f, "event: {event}")?;
        }
        if let Some(ms) = self.retry_ms {
            writeln!(f, "retry: {ms}")?;
        }
        if let Some(data) = &self.data {
            for line in data.split('\n') {
                writeln!(f, "data: {}", line.trim_end_matches('\r'))?;
            }
        }
        writeln!(f)
    }
}
