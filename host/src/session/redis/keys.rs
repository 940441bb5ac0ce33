//! Where a session lives in Redis: its key, the pattern that finds the keys of sessions, and
//! the way back from a key to its session id.
//!
//! On one server (or a Sentinel master) a session's key is `PREFIX + id`. In a cluster it is
//! `PREFIX{id}`: Redis hashes only the part in braces, so every key of one session (its hash,
//! and the stash a rotation moves it through, `PREFIX{id}~`) is in one slot, and every script
//! on it runs on one node.

/// The key layout of one store.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
    tagged: bool,
}

impl Keys {
    /// Keys under `prefix`; `tagged` for a cluster.
    pub(super) fn new(prefix: &str, tagged: bool) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
            tagged,
        }
    }

    /// The key of session `id`'s hash.
    pub(super) fn session(&self, id: &str) -> String {
        if self.tagged {
            format!("{}{{{id}}}", self.prefix)
        } else {
            format!("{}{id}", self.prefix)
        }
    }

    /// Where a rotation keeps session `id` while it copies it to its new slot.
    pub(super) fn stash(&self, id: &str) -> String {
        format!("{}~", self.session(id))
    }

    /// The `SCAN` pattern of the keys of sessions whose id starts with `id_prefix`.
    pub(super) fn pattern(&self, id_prefix: &str) -> String {
        let open = if self.tagged { "{" } else { "" };
        format!(
            "{}*",
            glob_escape(&format!("{}{open}{id_prefix}", self.prefix))
        )
    }

    /// The session id of `key`, found by a scan; `None` for a key that is no session's hash
    /// (a rotation's stash, or another key under the prefix).
    pub(super) fn id_of(&self, key: Vec<u8>) -> Option<String> {
        let key = String::from_utf8(key).ok()?;
        let id = key.strip_prefix(&self.prefix)?;
        if !self.tagged {
            return Some(id.to_owned());
        }
        let id = id.strip_prefix('{')?.strip_suffix('}')?;
        (!id.contains(['{', '}'])).then(|| id.to_owned())
    }
}

/// `text` with Redis glob patterns' special characters escaped.
pub(super) fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_in_the_prefix_are_escaped() {
        assert_eq!(glob_escape("baton:session:"), "baton:session:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn cluster_keys_carry_the_id_as_their_hash_tag() {
        let plain = Keys::new("p:", false);
        assert_eq!(plain.session("ab"), "p:ab");
        assert_eq!(plain.pattern("a"), "p:a*");
        assert_eq!(plain.id_of(b"p:ab".to_vec()).as_deref(), Some("ab"));

        let tagged = Keys::new("p:", true);
        assert_eq!(tagged.session("ab"), "p:{ab}");
        assert_eq!(tagged.stash("ab"), "p:{ab}~");
        assert_eq!(tagged.pattern("a"), "p:{a*");
        assert_eq!(tagged.id_of(b"p:{ab}".to_vec()).as_deref(), Some("ab"));
        for not_a_session in ["p:{ab}~", "p:ab", "q:{ab}", "p:{a{b}"] {
            assert_eq!(tagged.id_of(not_a_session.as_bytes().to_vec()), None);
        }
    }
}
