//! Streamed answers: live notes as server-sent events, and the CSV export.
//!
//! The event stream polls the database for notes above the last one it sent, so it sees notes
//! posted through any version and any host; a post in this version wakes it at once. When the
//! version drains (a newer one took over), the stream sends a short retry hint and ends: the
//! browser reconnects with `Last-Event-ID` and the new version sends what it missed.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use baton_sdk::{Error, Event, Request, Response, tracing};
use serde_json::json;

use crate::Notes;
use crate::note::Note;

/// How long a reconnecting browser waits after a drain, in milliseconds.
const DRAIN_RETRY_MS: u64 = 500;

/// Wakes the event streams of this version when a note is posted here.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    posts: Mutex<u64>,
    changed: Condvar,
}

impl Wake {
    /// Tells the waiting streams that a note was posted.
    pub(crate) fn notify(&self) {
        *self.posts.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.changed.notify_all();
    }

    /// The number of posts so far.
    fn posts(&self) -> u64 {
        *self.posts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until a post after the `seen`th, or `timeout`.
    fn wait(&self, seen: u64, timeout: Duration) {
        let posts = self.posts.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = self
            .changed
            .wait_timeout_while(posts, timeout, |posts| *posts == seen)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

/// Counts the open event streams of this version. Each holds one of the version's worker
/// threads for as long as it is open, so their number is capped below the pool's size: the
/// rest of the app keeps threads to answer with.
#[derive(Debug)]
pub(crate) struct Streams {
    open: AtomicUsize,
    max: usize,
}

/// One open stream; closing it (dropping this) frees its place.
#[derive(Debug)]
struct StreamSlot(Arc<Streams>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Streams {
    /// Room for `max` streams at once.
    pub(crate) fn new(max: usize) -> Streams {
        Streams {
            open: AtomicUsize::new(0),
            max,
        }
    }

    /// A place for one more stream, if there is room.
    fn enter(self: &Arc<Self>) -> Option<StreamSlot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| StreamSlot(Arc::clone(self)))
    }
}

/// A note as an event's data: the note and the version that sent it.
fn note_event(note: &Note, version: &str) -> Event {
    let mut data = serde_json::to_value(note).unwrap_or_default();
    data["version"] = json!(version);
    Event::new(data.to_string())
        .id(note.id.to_string())
        .event("note")
}

/// `GET /events`: server-sent events, one `note` event per new note (`id:` the note's id),
/// after a `hello` event naming the serving version. With `Last-Event-ID` the stream starts
/// with the notes after that id; without it, with the next new note. Past `max_streams` open
/// streams, a 503 with `Retry-After`.
pub(crate) fn events(app: &Notes, req: &Request) -> Result<Response, Error> {
    let slot = app
        .streams
        .enter()
        .ok_or_else(|| Error::unavailable("too many live streams open, try again later", 5))?;
    let resume = req
        .header("last-event-id")
        .and_then(|id| id.trim().parse::<i64>().ok());
    // Read before the stream starts: a database that is down is a plain 500, not a cut stream.
    let mut last = match resume {
        Some(id) => id,
        None => app.db.latest_id()?,
    };
    let db = Arc::clone(&app.db);
    let wake = Arc::clone(&app.wake);
    let version = app.version.clone();
    let (poll, keepalive) = (app.poll, app.keepalive);
    Ok(Response::event_stream(move |out| {
        let _slot = slot;
        out.send_event(&Event::new(json!({ "version": version }).to_string()).event("hello"))?;
        let mut written = Instant::now();
        loop {
            if out.is_draining() {
                let bye = Event::new(json!({ "version": version }).to_string())
                    .event("draining")
                    .with_retry(DRAIN_RETRY_MS);
                return out.send_event(&bye);
            }
            let seen = wake.posts();
            let notes = db.after(last).map_err(|e| {
                tracing::warn!(error = %e, "event stream ends: cannot read new notes");
                std::io::Error::other(e)
            })?;
            for note in &notes {
                out.send_event(&note_event(note, &version))?;
                last = note.id;
                written = Instant::now();
            }
            if notes.is_empty() {
                if written.elapsed() >= keepalive {
                    // A comment: keeps proxies from closing an idle stream, and finds out
                    // that the client has gone.
                    out.write_all(b": keep-alive\n\n")?;
                    out.flush()?;
                    written = Instant::now();
                }
                wake.wait(seen, poll);
            }
        }
    }))
}

/// `GET /export`: every note as CSV (`id,author,created,text` and, from schema 2, `tags`),
/// written row by row as the database returns them.
pub(crate) fn export(app: &Notes, _: &Request) -> Response {
    let db = Arc::clone(&app.db);
    Response::stream(move |out| {
        let mut csv = csv::Writer::from_writer(out);
        let with_tags = db.schema() >= 2;
        let mut header = vec!["id", "author", "created", "text"];
        if with_tags {
            header.push("tags");
        }
        csv.write_record(&header)?;
        db.for_each(|note| {
            let id = note.id.to_string();
            let mut row = vec![id.as_str(), &note.author, &note.created, &note.text];
            let tags = note.tags.as_deref().unwrap_or_default().join(" ");
            if with_tags {
                row.push(&tags);
            }
            csv.write_record(&row)?;
            Ok(())
        })
        .map_err(std::io::Error::other)?;
        csv.flush()
    })
    .with_header("content-type", "text/csv; charset=utf-8")
    .with_header("content-disposition", "attachment; filename=\"notes.csv\"")
    .with_header("cache-control", "no-store")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_event_carries_id_type_and_version() {
        let note = Note {
            id: 7,
            author: "ada".into(),
            text: "two\nlines".into(),
            created: "2026-12-07T03:24:05Z".into(),
            tags: None,
        };
        let text = note_event(&note, "notes@1.0.0").to_string();
        assert!(text.starts_with("id: 7\nevent: note\ndata: {"), "{text}");
        let data: serde_json::Value =
            serde_json::from_str(text.lines().nth(2).unwrap().strip_prefix("data: ").unwrap())
                .unwrap();
        assert_eq!(data["text"], "two\nlines");
        assert_eq!(data["version"], "notes@1.0.0");
    }

    #[test]
    fn streams_are_capped_and_closing_one_frees_its_place() {
        let streams = Arc::new(Streams::new(2));
        let (a, b) = (streams.enter().unwrap(), streams.enter().unwrap());
        assert!(streams.enter().is_none());
        drop(a);
        let c = streams.enter().expect("a place again");
        drop((b, c));
        assert_eq!(streams.open.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_post_wakes_a_waiting_stream() {
        let wake = Arc::new(Wake::default());
        let seen = wake.posts();
        let poster = Arc::clone(&wake);
        let thread = std::thread::spawn(move || poster.notify());
        // Would wait a minute without the post.
        wake.wait(seen, Duration::from_secs(60));
        thread.join().unwrap();
        assert_eq!(wake.posts(), seen + 1);
    }
}
