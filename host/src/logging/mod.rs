//! The host's log output: every line — the `tracing` events and the access log — is appended
//! to one shared buffer, and a background thread (`baton-log`) writes the buffer out in
//! batches, as nginx's `access_log … buffer=` and Tomcat's `AccessLogValve` do. A request pays
//! for formatting its line and copying it into the buffer, never for a system call or for
//! waking a thread.
//!
//! The writer writes what has gathered when it reaches [`HIGH_WATER`] bytes, when a warning or
//! an error is logged, and otherwise at most [`FLUSH_INTERVAL`] after the first line of a
//! batch. Past [`MAX_BUFFERED`] bytes (stderr read slowly, or not at all) a logging thread
//! waits for the writer, so a slow reader loses nothing; but once the output has taken nothing
//! for [`STALL`] while the buffer is full (a reader that holds the pipe open and never reads)
//! the lines that find no room are dropped and counted instead: the threads that log are the
//! ones serving requests and handling the stop signal, and no log output may stop them. When
//! the output takes lines again, a warning says how many were dropped, and
//! `baton_log_lines_dropped_total` counts them all. [`LogGuard`] writes what is left when it
//! is dropped, or when [`LogGuard::flush`] is called, waiting at most [`EXIT_WAIT`]: a process
//! that exits is not held back by a stderr nobody reads.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

mod fields;
mod json_fields;
pub(crate) mod request;
mod timestamp;

pub use fields::PlainFields;
pub use json_fields::JsonSpanFields;
pub(crate) use timestamp::timestamp;

/// At most this long between a line and its write, unless the buffer fills first.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);

/// The writer is woken once this many bytes gathered.
pub const HIGH_WATER: usize = 64 * 1024;

/// Past this many bytes waiting, a logging thread waits for the writer instead of growing the
/// buffer.
pub const MAX_BUFFERED: usize = 8 * 1024 * 1024;

/// A full buffer whose output has taken nothing for this long drops the lines that find no
/// room, until the output takes lines again.
pub const STALL: Duration = Duration::from_secs(1);

/// How long the end of the log may take to be written when the process exits.
pub const EXIT_WAIT: Duration = Duration::from_secs(5);

/// How the log lines are formatted; the access log writes its lines in the same format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LineFormat {
    /// `tracing-subscriber`'s full text format, without colours.
    #[default]
    Plain,
    /// One JSON object per line, event fields flattened.
    Json,
}

#[derive(Debug, Default)]
struct Pending {
    lines: Vec<u8>,
    /// Write now: a warning or error was logged, or a flush was asked for.
    urgent: bool,
    stop: bool,
    /// The writer wrote everything and returned.
    done: bool,
    /// The process is exiting: loggers no longer wait for room (see [`LogGuard::exiting`]).
    exiting: bool,
    /// The writer is writing a batch it took.
    writing: bool,
    /// Batches written so far; a flush waits for the one holding its lines.
    written: u64,
    /// When the waits for the output at exit end: the first of them starts [`EXIT_WAIT`], the
    /// others share it (see [`LogGuard::exit_wait_left`]).
    exit_deadline: Option<Instant>,
    /// Pieces of a batch written so far: the output is taking lines.
    progress: u64,
    /// The buffer is full and the output took nothing for [`STALL`]: lines that find no room
    /// are dropped, until the writer takes the next batch.
    dropping: bool,
    /// Lines dropped since the last warning about them.
    dropped: u64,
}

/// Lines dropped by every sink of the process, for the metric.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many log lines the process dropped so far (see the module's documentation).
pub fn lines_dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// `baton_log_lines_dropped_total`, read on each scrape.
#[derive(Debug)]
pub(crate) struct DroppedLines;

impl Collector for DroppedLines {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let counter = ConstCounter::new(lines_dropped());
        let family = encoder.encode_descriptor(
            "log_lines_dropped",
            "Log lines dropped because the log output took nothing for a second while the \
             buffer was full",
            None,
            counter.metric_type(),
        )?;
        counter.encode(family)
    }
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer.
    wake: Condvar,
    /// Wakes threads waiting for a batch to be written.
    drained: Condvar,
    /// How long a batch gathers at most.
    interval: Duration,
    /// The format of the warning about dropped lines.
    format: LineFormat,
    /// How long a full buffer's output may take nothing before lines are dropped ([`STALL`]).
    stall: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        crate::sync::lock(&self.pending)
    }

    fn append(&self, bytes: &[u8], urgent: bool) {
        let mut pending = self.lock();
        // Waiting for room, since when and at which progress of the writer: the output has
        // until `STALL` passes without it taking anything.
        let mut waiting: Option<(Instant, u64)> = None;
        while pending.lines.len() >= MAX_BUFFERED && !pending.stop && !pending.exiting {
            if pending.dropping {
                pending.dropped += 1;
                DROPPED.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let now = Instant::now();
            let since = match waiting {
                Some((since, progress)) if progress == pending.progress => since,
                _ => {
                    waiting = Some((now, pending.progress));
                    now
                }
            };
            let waited = now.duration_since(since);
            if waited >= self.stall {
                // Those waiting beside this thread drop their lines too.
                pending.dropping = true;
                self.drained.notify_all();
                continue;
            }
            pending.urgent = true;
            self.wake.notify_one();
            pending = self
                .drained
                .wait_timeout(pending, self.stall - waited)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let was_empty = pending.lines.is_empty();
        pending.lines.extend_from_slice(bytes);
        // The writer sleeps until a first line arrives; after that it wakes by itself at the
        // end of the interval, so only a first line, a full buffer or an urgent line wakes it.
        if urgent {
            pending.urgent = true;
        }
        if was_empty || urgent || pending.lines.len() >= HIGH_WATER {
            self.wake.notify_one();
        }
    }
}

/// Where the host's log lines go: a [`MakeWriter`] for `tracing-subscriber`, and the access
/// log's fast path.
#[derive(Debug, Clone)]
pub struct LogSink {
    shared: Arc<Shared>,
    format: LineFormat,
}

/// Writes what is left and stops the writer thread when dropped.
#[derive(Debug)]
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// The sink the access log writes to, once [`install`]ed.
static ACCESS_SINK: OnceLock<LogSink> = OnceLock::new();

/// Starts the writer thread writing to `out` and makes the returned sink the access log's.
///
/// # Errors
/// If the writer thread cannot be started.
pub fn install(
    out: Box<dyn Write + Send>,
    format: LineFormat,
) -> std::io::Result<(LogSink, LogGuard)> {
    let (sink, guard) = LogSink::start(out, format)?;
    let _ = ACCESS_SINK.set(sink.clone());
    Ok((sink, guard))
}

/// The installed sink, if any: without one (the host embedded in another program), the access
/// log goes through `tracing` like any other event.
pub(crate) fn access_sink() -> Option<&'static LogSink> {
    ACCESS_SINK.get()
}

impl LogSink {
    /// A sink writing to `out` from its own thread.
    ///
    /// # Errors
    /// If the writer thread cannot be started.
    pub fn start(
        out: Box<dyn Write + Send>,
        format: LineFormat,
    ) -> std::io::Result<(LogSink, LogGuard)> {
        Self::start_with(out, format, FLUSH_INTERVAL, STALL)
    }

    fn start_with(
        mut out: Box<dyn Write + Send>,
        format: LineFormat,
        interval: Duration,
        stall: Duration,
    ) -> std::io::Result<(LogSink, LogGuard)> {
        let shared = Arc::new(Shared {
            interval,
            format,
            stall,
            ..Shared::default()
        });
        let writer = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("baton-log".into())
            .spawn(move || write_batches(&writer, &mut *out))?;
        Ok((
            LogSink {
                shared: Arc::clone(&shared),
                format,
            },
            LogGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }

    /// The format of the lines.
    pub fn format(&self) -> LineFormat {
        self.format
    }

    /// Appends whole lines (each ending with `\n`).
    pub fn append(&self, lines: &[u8]) {
        self.shared.append(lines, false);
    }
}

fn write_batches(shared: &Shared, out: &mut dyn Write) {
    let mut batch = Vec::new();
    loop {
        let mut pending = shared.lock();
        while pending.lines.is_empty() && !pending.stop {
            pending = shared.wake.wait(pending).unwrap_or_else(|e| e.into_inner());
        }
        // Gather for a while, unless told to hurry.
        if !pending.urgent && !pending.stop && pending.lines.len() < HIGH_WATER {
            pending = shared
                .wake
                .wait_timeout_while(pending, shared.interval, |p| {
                    !p.urgent && !p.stop && p.lines.len() < HIGH_WATER
                })
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if pending.lines.is_empty() && pending.stop {
            pending.done = true;
            shared.drained.notify_all();
            return;
        }
        std::mem::swap(&mut batch, &mut pending.lines);
        pending.urgent = false;
        pending.writing = true;
        // The buffer has room again: the lines dropped came after those just taken.
        pending.dropping = false;
        let dropped = std::mem::take(&mut pending.dropped);
        drop(pending);
        if dropped > 0 {
            dropped_warning(&mut batch, shared.format, dropped);
        }
        // In pieces, each one progress: loggers waiting for room tell a slow output from one
        // that takes nothing. A log that cannot be written has nowhere to report it.
        for piece in batch.chunks(HIGH_WATER) {
            let _ = out.write_all(piece);
            shared.lock().progress += 1;
            shared.drained.notify_all();
        }
        let _ = out.flush();
        batch.clear();
        if batch.capacity() > 4 * HIGH_WATER {
            batch.shrink_to(HIGH_WATER);
        }
        let mut pending = shared.lock();
        pending.writing = false;
        pending.written += 1;
        shared.drained.notify_all();
    }
}

const DROPPED_MESSAGE: &str =
    "log lines dropped: the log output took nothing for a second while its buffer was full";

/// The warning that `dropped` lines were dropped, in the log's format (target `baton::log`).
fn dropped_warning(out: &mut Vec<u8>, format: LineFormat, dropped: u64) {
    const TARGET: &str = "baton::log";
    let mut line = String::with_capacity(200);
    start_line(&mut line, format, "WARN", TARGET, DROPPED_MESSAGE);
    line.push_str(match format {
        LineFormat::Plain => " dropped=",
        LineFormat::Json => r#","dropped":"#,
    });
    line.push_str(itoa::Buffer::new().format(dropped));
    end_line(&mut line, format, TARGET);
    out.extend_from_slice(line.as_bytes());
}

/// The start of a line the host writes itself, as `tracing-subscriber` writes an event in the
/// log's format: the timestamp, `level` (`INFO`, `WARN`…), `target` and `message` (which needs
/// no escape); the event's fields follow, then [`end_line`].
pub(crate) fn start_line(
    out: &mut String,
    format: LineFormat,
    level: &str,
    target: &str,
    message: &str,
) {
    match format {
        LineFormat::Plain => {
            timestamp(out);
            // The level right-aligned in five columns.
            out.push_str(&"      "[..6 - level.len().min(5)]);
            out.push_str(level);
            out.push(' ');
            out.push_str(target);
            out.push_str(": ");
            out.push_str(message);
        }
        LineFormat::Json => {
            out.push_str(r#"{"timestamp":""#);
            timestamp(out);
            out.push_str(r#"","level":""#);
            out.push_str(level);
            out.push_str(r#"","message":""#);
            out.push_str(message);
            out.push('"');
        }
    }
}

/// The end of a line begun with [`start_line`].
pub(crate) fn end_line(out: &mut String, format: LineFormat, target: &str) {
    if format == LineFormat::Json {
        out.push_str(r#","target":""#);
        out.push_str(target);
        out.push_str(r#""}"#);
    }
    out.push('\n');
}

impl LogGuard {
    /// What is left of the exit's wait for the output: the first call starts [`EXIT_WAIT`];
    /// a flush before the exit, other waits of the exit (a runtime's blocking threads writing
    /// to the same stderr) and the guard's drop share it, so that a stderr nobody reads costs
    /// the exit [`EXIT_WAIT`] once, not once per wait.
    pub fn exit_wait_left(&self) -> Duration {
        left(&mut self.shared.lock())
    }

    /// Writes every line appended so far, and waits until it is written (at most what is
    /// left of [`EXIT_WAIT`], see [`LogGuard::exit_wait_left`]).
    pub fn flush(&self) {
        let mut pending = self.shared.lock();
        // Lines still gathering go out in the batch after the one being written, if any.
        let target = match (pending.lines.is_empty(), pending.writing) {
            (true, false) => return,
            (true, true) => pending.written + 1,
            (false, writing) => pending.written + 1 + u64::from(writing),
        };
        pending.urgent = true;
        self.shared.wake.notify_one();
        // Bounded: it comes before an exit or an exec, which a stderr nobody reads must not
        // hold back.
        let wait = left(&mut pending);
        let _ = self
            .shared
            .drained
            .wait_timeout_while(pending, wait, |p| p.written < target);
    }

    /// The process is about to exit: from now on a logging thread never waits for room in the
    /// buffer (a stderr nobody reads must not hold back the exit's own last lines), and those
    /// waiting go on.
    pub fn exiting(&self) {
        self.shared.lock().exiting = true;
        self.shared.drained.notify_all();
    }
}

impl Drop for LogGuard {
    /// Writes what is left, waiting at most what is left of [`EXIT_WAIT`] for it: a stderr
    /// nobody reads must not keep the process from exiting.
    fn drop(&mut self) {
        let mut pending = self.shared.lock();
        pending.stop = true;
        self.shared.wake.notify_one();
        // Loggers waiting for room go on.
        self.shared.drained.notify_all();
        let wait = left(&mut pending);
        let (pending, waited) = self
            .shared
            .drained
            .wait_timeout_while(pending, wait, |p| !p.done)
            .unwrap_or_else(|e| e.into_inner());
        let done = pending.done && !waited.timed_out();
        drop(pending);
        if let Some(thread) = self.thread.take()
            && done
        {
            let _ = thread.join();
        }
    }
}

/// What is left of the exit's wait, started by the first caller.
fn left(pending: &mut Pending) -> Duration {
    pending
        .exit_deadline
        .get_or_insert_with(|| Instant::now() + EXIT_WAIT)
        .saturating_duration_since(Instant::now())
}

/// One event's bytes, appended to the buffer as a whole when the formatter is done with it.
#[derive(Debug)]
pub struct EventWriter<'a> {
    sink: &'a LogSink,
    line: Vec<u8>,
    urgent: bool,
}

impl Write for EventWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter<'_> {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.sink.shared.append(&self.line, self.urgent);
        }
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            sink: self,
            line: Vec::new(),
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        EventWriter {
            sink: self,
            line: Vec::new(),
            // A warning or an error is written at once, so it is not lost in a crash that
            // follows it.
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Instant;

    /// A writer the test can read back, as a sink's output or a test subscriber's writer.
    #[derive(Clone, Default)]
    pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            crate::sync::lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        /// Everything written so far.
        pub(crate) fn text(&self) -> String {
            String::from_utf8(crate::sync::lock(&self.0).clone()).unwrap()
        }

        /// Waits (10 s at most, else fails with `failure`) until what was written is `done`.
        fn wait_for(&self, done: impl Fn(&str) -> bool, failure: &str) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !done(&self.text()) {
                assert!(Instant::now() < deadline, "{failure}");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    #[test]
    fn lines_arrive_whole_in_order_from_many_threads_and_nothing_is_lost() {
        let out = Captured::default();
        let (sink, guard) = LogSink::start(Box::new(out.clone()), LineFormat::Plain).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        sink.append(
                            format!("thread {t} line {i} {}\n", "x".repeat(i % 300)).as_bytes(),
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = out.text();
        let mut next = [0usize; 4];
        for line in text.lines() {
            let mut words = line.split(' ');
            assert_eq!(words.next(), Some("thread"), "{line:?}");
            let t: usize = words.next().unwrap().parse().unwrap();
            assert_eq!(words.next(), Some("line"));
            let i: usize = words.next().unwrap().parse().unwrap();
            assert_eq!(words.next().unwrap().len(), i % 300, "line cut: {line:?}");
            assert_eq!(i, next[t], "thread {t}'s lines out of order or lost");
            next[t] += 1;
        }
        assert_eq!(next, [20_000; 4]);
    }

    #[test]
    fn a_line_is_written_within_the_interval_without_a_flush() {
        let out = Captured::default();
        let (sink, _guard) = LogSink::start(Box::new(out.clone()), LineFormat::Plain).unwrap();
        sink.append(b"one\n");
        out.wait_for(|text| text == "one\n", "the line was never written");
    }

    /// A warning goes out at once, with the lines gathered before it, however long the
    /// interval.
    #[test]
    fn a_warning_is_written_at_once_with_what_gathered_before_it() {
        let out = Captured::default();
        let (sink, _guard) = LogSink::start_with(
            Box::new(out.clone()),
            LineFormat::Plain,
            Duration::from_secs(3600),
            STALL,
        )
        .unwrap();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_writer(sink)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("gathering");
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(out.text(), "", "an info line went out before the interval");
            tracing::warn!("now");
        });
        out.wait_for(
            |text| text.contains("now"),
            "the warning was not written at once",
        );
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text:?}");
        assert!(
            lines[0].ends_with("gathering") && lines[0].contains("INFO"),
            "{text:?}"
        );
        assert!(
            lines[1].ends_with("now") && lines[1].contains("WARN"),
            "{text:?}"
        );
    }

    /// Once 64 KiB gathered they are written, however long the interval.
    #[test]
    fn a_full_batch_is_written_without_waiting_for_the_interval() {
        let out = Captured::default();
        let (sink, _guard) = LogSink::start_with(
            Box::new(out.clone()),
            LineFormat::Plain,
            Duration::from_secs(3600),
            STALL,
        )
        .unwrap();
        let line = format!("{}\n", "z".repeat(1023));
        sink.append(line.as_bytes());
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(out.text(), "", "a line went out before the batch was full");
        for _ in 1..HIGH_WATER / line.len() {
            sink.append(line.as_bytes());
        }
        out.wait_for(
            |text| text.len() >= HIGH_WATER,
            "a full batch was not written",
        );
    }

    #[test]
    fn flush_returns_once_every_line_so_far_is_written() {
        let out = Captured::default();
        let (sink, guard) = LogSink::start(Box::new(out.clone()), LineFormat::Plain).unwrap();
        for round in 0..200 {
            sink.append(format!("{round}\n").as_bytes());
            guard.flush();
            assert!(out.text().ends_with(&format!("{round}\n")), "round {round}");
        }
    }

    /// A thread appending `line` to `sink`, `lines` times.
    fn appending(sink: &LogSink, line: &str, lines: usize) -> JoinHandle<()> {
        let (sink, line) = (sink.clone(), line.to_owned());
        std::thread::spawn(move || {
            for _ in 0..lines {
                sink.append(line.as_bytes());
            }
        })
    }

    /// A sink whose output may take nothing for 20 s before lines are dropped: far more than
    /// the pauses of a test's reader on a loaded machine.
    fn patient(out: std::io::PipeWriter) -> (LogSink, LogGuard) {
        LogSink::start_with(
            Box::new(out),
            LineFormat::Plain,
            FLUSH_INTERVAL,
            Duration::from_secs(20),
        )
        .unwrap()
    }

    /// A reader that stops reading for less than the stall limit: logging threads wait once the
    /// buffer is full, and every line arrives once it reads again.
    #[test]
    fn a_blocked_output_holds_loggers_back_without_losing_lines() {
        let (mut reader, writer) = std::io::pipe().unwrap();
        let (sink, guard) = patient(writer);
        let line = format!("{}\n", "y".repeat(1023));
        let lines = 3 * MAX_BUFFERED / line.len();
        let logger = appending(&sink, &line, lines);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !logger.is_finished(),
            "the logger never waited for the blocked output"
        );
        let reading = std::thread::spawn(move || {
            let mut all = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut all).unwrap();
            all
        });
        logger.join().unwrap();
        drop(sink);
        drop(guard);
        let all = reading.join().unwrap();
        assert_eq!(all.len(), lines * line.len());
    }

    /// A reader that takes a piece at a time, each within the stall limit but all together
    /// for longer: loggers wait as long as it takes, and nothing is dropped.
    #[test]
    fn a_slow_output_loses_nothing_however_long_it_takes() {
        let (mut reader, writer) = std::io::pipe().unwrap();
        let stall = Duration::from_millis(1500);
        let (sink, guard) =
            LogSink::start_with(Box::new(writer), LineFormat::Plain, FLUSH_INTERVAL, stall)
                .unwrap();
        let line = format!("{}\n", "s".repeat(1023));
        let lines = 2 * MAX_BUFFERED / line.len();
        let logger = appending(&sink, &line, lines);
        let reading = std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut piece = vec![0; HIGH_WATER];
            let started = Instant::now();
            while started.elapsed() < stall * 2 {
                std::thread::sleep(stall / 5);
                let n = std::io::Read::read(&mut reader, &mut piece).unwrap();
                all.extend_from_slice(&piece[..n]);
            }
            std::io::Read::read_to_end(&mut reader, &mut all).unwrap();
            all
        });
        logger.join().unwrap();
        drop(sink);
        drop(guard);
        let all = reading.join().unwrap();
        assert!(
            !String::from_utf8_lossy(&all).contains(DROPPED_MESSAGE),
            "lines were dropped"
        );
        assert_eq!(all.len(), lines * line.len());
    }

    /// A reader that holds the pipe open and never reads: once the buffer is full and the
    /// output took nothing for [`STALL`], loggers go on and their lines are dropped; each is
    /// counted, and when the output reads again a warning says how many.
    #[test]
    fn an_output_that_takes_nothing_costs_lines_not_loggers_and_says_how_many() {
        let (mut reader, writer) = std::io::pipe().unwrap();
        let (sink, guard) = LogSink::start(Box::new(writer), LineFormat::Plain).unwrap();
        let lines = 3 * MAX_BUFFERED / 1024;
        let before = lines_dropped();
        let (done, logged) = std::sync::mpsc::channel();
        std::thread::spawn({
            let sink = sink.clone();
            move || {
                for i in 0..lines {
                    sink.append(format!("{i:>1023}\n").as_bytes());
                }
                let _ = done.send(());
            }
        });
        assert!(
            logged.recv_timeout(STALL * 30).is_ok(),
            "the logger waited for an output that takes nothing"
        );
        let reading = std::thread::spawn(move || {
            let mut all = String::new();
            std::io::Read::read_to_string(&mut reader, &mut all).unwrap();
            all
        });
        drop(sink);
        drop(guard);
        let all = reading.join().unwrap();
        let mut received = all.lines();
        let warning = received.next_back().unwrap();
        let mut next = 0;
        for line in received {
            assert_eq!(
                line.trim_start().parse::<usize>().unwrap(),
                next,
                "{line:?}"
            );
            next += 1;
        }
        assert!(warning.contains("  WARN baton::log: "), "{warning}");
        let dropped: usize = warning
            .split_once(&format!("{DROPPED_MESSAGE} dropped="))
            .unwrap_or_else(|| panic!("no warning: {warning}"))
            .1
            .parse()
            .unwrap();
        assert!(dropped > 0 && next > 0, "{next} written, {dropped} dropped");
        assert_eq!(next + dropped, lines, "lines lost without being counted");
        assert!(lines_dropped() - before >= dropped as u64);
    }

    /// The warning reads as the same event through `tracing-subscriber` would, in either
    /// format (the timestamps aside).
    #[test]
    fn the_dropped_lines_warning_is_in_the_logs_own_format() {
        for format in [LineFormat::Plain, LineFormat::Json] {
            let out = Captured::default();
            let builder = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(out.clone());
            let event =
                || tracing::warn!(target: "baton::log", dropped = 1234_u64, "{DROPPED_MESSAGE}");
            let at = match format {
                LineFormat::Plain => {
                    tracing::subscriber::with_default(builder.finish(), event);
                    0
                }
                LineFormat::Json => {
                    let json = builder.json().flatten_event(true).with_span_list(false);
                    tracing::subscriber::with_default(json.finish(), event);
                    r#"{"timestamp":""#.len()
                }
            };
            let mut ours = Vec::new();
            dropped_warning(&mut ours, format, 1234);
            let ours = String::from_utf8(ours).unwrap();
            let theirs = out.text();
            let masked = |text: &str| format!("{}{}", &text[..at], &text[at + 27..]);
            assert_eq!(masked(&ours), masked(&theirs), "{format:?}");
        }
    }

    /// A sink writing to a pipe nobody reads, given more than the pipe holds: its writer is
    /// blocked in a write. The reader is returned to keep the pipe open.
    fn stuck_in_a_write() -> (std::io::PipeReader, LogGuard) {
        let (reader, writer) = std::io::pipe().unwrap();
        let (sink, guard) = LogSink::start(Box::new(writer), LineFormat::Plain).unwrap();
        let line = format!("{}\n", "w".repeat(1023));
        for _ in 0..1024 {
            sink.append(line.as_bytes());
        }
        (reader, guard)
    }

    /// A stderr nobody reads (a stopped log collector) holds the last lines back, not the
    /// process: the guard gives up after a while and the process can exit.
    #[test]
    fn a_stderr_nobody_reads_does_not_keep_the_guard_waiting() {
        let (reader, guard) = stuck_in_a_write();
        let (done, dropped) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(guard);
            let _ = done.send(());
        });
        assert!(
            dropped.recv_timeout(EXIT_WAIT * 12).is_ok(),
            "dropping the guard waited for a reader that never reads"
        );
        drop(reader);
    }

    /// A flush before the exit that waited out [`EXIT_WAIT`] for a stderr nobody reads leaves
    /// nothing of it to the guard's drop: the exit pays for the stuck output once.
    #[test]
    fn the_waits_of_an_exit_share_one_exit_wait() {
        let (reader, guard) = stuck_in_a_write();
        let started = Instant::now();
        guard.flush();
        let flushed = started.elapsed();
        assert!(
            flushed >= EXIT_WAIT - Duration::from_millis(100),
            "{flushed:?}"
        );
        assert_eq!(guard.exit_wait_left(), Duration::ZERO);
        let started = Instant::now();
        drop(guard);
        assert!(started.elapsed() < EXIT_WAIT / 2, "{:?}", started.elapsed());
        drop(reader);
    }
}
