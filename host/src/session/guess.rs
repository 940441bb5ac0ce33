//! The values this host last stored with atomic updates, kept as guesses of what a session's
//! attribute holds now, so that an update that is a request's first use of its session can
//! send its compare-and-set at once, loading the session in the same round trip.
//!
//! A guess never answers a read. It is only ever the expected value of a compare-and-set, which
//! the store checks atomically: a wrong guess (another host or request changed the attribute,
//! or this one forgot it) costs one more round trip, never a stale value. So entries need no
//! invalidation to be correct; they are dropped or moved when this host learns of an end or a
//! rotation only to spare that round trip.
//!
//! Memory is bounded by two generations of at most [`GENERATION_BYTES`] each: new entries go to
//! the young one; when it is full it becomes the old one (the previous old one is dropped), and
//! an entry found in the old one moves back to the young one. Large values are not kept.

use std::collections::HashMap;
use std::sync::Mutex;

/// Bytes of entries (ids, names, values and a fixed overhead each) per generation.
const GENERATION_BYTES: usize = 8 << 20;

/// Longest value kept: larger ones are seldom updated atomically, and a wrong guess would cost
/// its size twice on the wire.
const MAX_VALUE_BYTES: usize = 256;

/// Most attributes kept per session.
const MAX_NAMES: usize = 4;

/// What an entry costs besides its bytes: map slots, vectors' headers.
const ENTRY_OVERHEAD: usize = 96;

/// The attributes of one session: name and last stored value.
type Entry = Vec<(String, Vec<u8>)>;

#[derive(Debug, Default)]
struct Generation {
    sessions: HashMap<String, Entry>,
    bytes: usize,
}

fn size(id: &str, entry: &Entry) -> usize {
    id.len()
        + entry
            .iter()
            .map(|(name, value)| name.len() + value.len() + ENTRY_OVERHEAD)
            .sum::<usize>()
}

impl Generation {
    fn take(&mut self, id: &str) -> Option<Entry> {
        let entry = self.sessions.remove(id)?;
        self.bytes -= size(id, &entry);
        Some(entry)
    }
}

#[derive(Debug, Default)]
struct Generations {
    young: Generation,
    old: Generation,
}

impl Generations {
    /// Session `id`'s entry, taken out of whichever generation holds it.
    fn take(&mut self, id: &str) -> Option<Entry> {
        self.young.take(id).or_else(|| self.old.take(id))
    }

    /// Puts `entry` back as session `id`'s, in the young generation.
    fn put(&mut self, id: String, entry: Entry) {
        if entry.is_empty() {
            return;
        }
        let bytes = size(&id, &entry);
        if self.young.bytes + bytes > GENERATION_BYTES {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.bytes += bytes;
        self.young.sessions.insert(id, entry);
    }
}

/// Guesses of attribute values, by session id and name.
#[derive(Debug, Default)]
pub(super) struct Guesses {
    generations: Mutex<Generations>,
}

impl Guesses {
    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        crate::sync::lock(&self.generations)
    }

    /// The value this host last stored under `name` in session `id`, if it kept it.
    pub(super) fn get(&self, id: &str, name: &str) -> Option<Vec<u8>> {
        let mut generations = self.lock();
        if let Some(entry) = generations.young.sessions.get(id) {
            return entry
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone());
        }
        let entry = generations.old.take(id)?;
        let found = entry
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone());
        generations.put(id.to_owned(), entry);
        found
    }

    /// `value` is now stored under `name` in session `id` (`None`: the attribute was removed).
    pub(super) fn stored(&self, id: &str, name: &str, value: Option<&[u8]>) {
        let mut generations = self.lock();
        let mut entry = generations.take(id).unwrap_or_default();
        entry.retain(|(n, _)| n != name);
        if let Some(value) = value.filter(|v| v.len() <= MAX_VALUE_BYTES) {
            if entry.len() >= MAX_NAMES {
                entry.remove(0);
            }
            entry.push((name.to_owned(), value.to_vec()));
        }
        generations.put(id.to_owned(), entry);
    }

    /// The request's saved changes (`None`: removed), for the attributes a guess is kept of.
    pub(super) fn saved<'c>(
        &self,
        id: &str,
        changes: impl IntoIterator<Item = (&'c String, &'c Option<Vec<u8>>)>,
    ) {
        let mut generations = self.lock();
        let Some(mut entry) = generations.take(id) else {
            return;
        };
        for (name, value) in changes {
            if let Some(at) = entry.iter().position(|(n, _)| n == name) {
                match value.as_ref().filter(|v| v.len() <= MAX_VALUE_BYTES) {
                    Some(value) => entry[at].1.clone_from(value),
                    None => {
                        entry.remove(at);
                    }
                }
            }
        }
        generations.put(id.to_owned(), entry);
    }

    /// Session `id` ended.
    pub(super) fn forget(&self, id: &str) {
        self.lock().take(id);
    }

    /// Session `from` is now session `to`.
    pub(super) fn moved(&self, from: &str, to: &str) {
        let mut generations = self.lock();
        if let Some(entry) = generations.take(from) {
            generations.put(to.to_owned(), entry);
        }
    }

    /// Sessions with guesses kept, for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        let generations = self.lock();
        generations.young.sessions.len() + generations.old.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_stored_value_is_the_guess_until_the_session_ends_or_moves() {
        let guesses = Guesses::default();
        assert_eq!(guesses.get("s", "n"), None);
        guesses.stored("s", "n", Some(b"1"));
        guesses.stored("s", "n", Some(b"2"));
        assert_eq!(guesses.get("s", "n").as_deref(), Some(&b"2"[..]));
        assert_eq!(guesses.get("s", "other"), None);
        guesses.saved("s", [(&"n".to_owned(), &Some(b"7".to_vec()))]);
        assert_eq!(guesses.get("s", "n").as_deref(), Some(&b"7"[..]));
        guesses.moved("s", "t");
        assert_eq!(guesses.get("s", "n"), None);
        assert_eq!(guesses.get("t", "n").as_deref(), Some(&b"7"[..]));
        guesses.saved("t", [(&"n".to_owned(), &None)]);
        assert_eq!(guesses.get("t", "n"), None);
        guesses.stored("t", "n", Some(b"3"));
        guesses.forget("t");
        assert_eq!(guesses.get("t", "n"), None);
        assert_eq!(guesses.len(), 0);
    }

    #[test]
    fn large_values_and_many_names_are_not_kept() {
        let guesses = Guesses::default();
        guesses.stored("s", "big", Some(&[b'1'; MAX_VALUE_BYTES + 1]));
        assert_eq!(guesses.get("s", "big"), None);
        for i in 0..=MAX_NAMES {
            guesses.stored("s", &format!("n{i}"), Some(b"1"));
        }
        assert_eq!(guesses.get("s", "n0"), None, "the oldest name made room");
        assert_eq!(
            guesses.get("s", &format!("n{MAX_NAMES}")).as_deref(),
            Some(&b"1"[..])
        );
    }

    #[test]
    fn memory_stays_within_two_generations_and_recent_guesses_survive() {
        let guesses = Guesses::default();
        let value = [b'1'; MAX_VALUE_BYTES];
        let per_entry = 48 + 1 + value.len() + ENTRY_OVERHEAD;
        let sessions = 3 * GENERATION_BYTES / per_entry;
        for i in 0..sessions {
            guesses.stored(&format!("{i:048}"), "n", Some(&value));
            // One session in constant use is never dropped.
            guesses.stored("busy", "n", Some(b"1"));
        }
        let kept = guesses.len();
        assert!(
            kept * per_entry <= 2 * GENERATION_BYTES + 2 * per_entry,
            "{kept} sessions kept"
        );
        assert!(
            kept * per_entry >= GENERATION_BYTES / 2,
            "{kept} sessions kept"
        );
        assert_eq!(guesses.get("busy", "n").as_deref(), Some(&b"1"[..]));
        let last = format!("{:048}", sessions - 1);
        assert!(guesses.get(&last, "n").is_some(), "the newest is kept");
        assert!(
            guesses.get(&format!("{:048}", 0), "n").is_none(),
            "the oldest went"
        );
    }
}
