//! One request's session: lazy load, buffered writes, immediate atomic operations, and the
//! flush and cookie at the end of the request.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::id::{self, CookieChange};
use super::store::{Attributes, Cas, CasRequest, StoreError};
use super::{Sessions, StoreOp};
use crate::loader::{AccessError, SessionAccess, UpdateFn};

/// How many times an atomic update retries after losing a race before giving up.
const MAX_UPDATE_ATTEMPTS: usize = 100;

/// A value that is not JSON text.
#[derive(Debug, thiserror::Error)]
#[error("value of {name:?} is not JSON: {source}")]
struct NotJson {
    name: String,
    source: serde_json::Error,
}

impl From<StoreError> for AccessError {
    fn from(e: StoreError) -> Self {
        AccessError::Unavailable(Box::new(e))
    }
}

#[derive(Debug)]
enum Current {
    /// Not looked at yet; the well-formed id from the cookie, if any.
    Unloaded(Option<String>),
    /// No session (none asked for, unknown id, or invalidated).
    Absent,
    /// A session in the store, as loaded (plus this request's atomic updates).
    Stored { id: String, attributes: Attributes },
    /// A session this request creates when it ends.
    New { id: String },
}

#[derive(Debug)]
struct State {
    current: Current,
    /// Buffered writes: `Some` sets, `None` removes.
    changes: BTreeMap<String, Option<Vec<u8>>>,
    had_cookie: bool,
    cookie: Option<CookieChange>,
}

/// Where an atomic update stands.
#[derive(Debug)]
enum Plan {
    /// Compare-and-set session `id`'s attribute, expected to hold `expected`; a `guessed` value
    /// is this host's guess, and the session is not loaded yet.
    Cas {
        id: String,
        expected: Option<Vec<u8>>,
        guessed: bool,
    },
    /// Create the session with the attribute, whose value this request sees as `old`.
    Create { old: Option<Vec<u8>> },
}

/// What is left to do when a request's session ends: the session as the request left it, its
/// buffered writes and its cookie change.
#[derive(Debug)]
pub struct Ending {
    current: Current,
    changes: BTreeMap<String, Option<Vec<u8>>>,
    had_cookie: bool,
    cookie: Option<CookieChange>,
}

/// One request's session, shared by the request's service task and the worker thread running
/// its handler, which reaches it through the loader's [`SessionAccess`].
#[derive(Debug)]
pub struct RequestSession {
    sessions: Arc<Sessions>,
    state: Mutex<State>,
    /// The request arrived over TLS: its cookie is `Secure`.
    over_tls: bool,
}

fn check_name(name: &str) -> Result<(), AccessError> {
    baton_sdk::abi::check_attribute_name(name).map_err(|e| AccessError::Invalid(Box::new(e)))
}

fn check_json(name: &str, value: &[u8]) -> Result<(), AccessError> {
    serde_json::from_slice::<serde::de::IgnoredAny>(value)
        .map(drop)
        .map_err(|source| {
            AccessError::Invalid(Box::new(NotJson {
                name: name.to_owned(),
                source,
            }))
        })
}

fn initial_attributes(changes: &BTreeMap<String, Option<Vec<u8>>>) -> Attributes {
    changes
        .iter()
        .filter_map(|(name, value)| Some((name.clone(), value.clone()?)))
        .collect()
}

impl RequestSession {
    pub(super) fn new(
        sessions: Arc<Sessions>,
        cookie: Option<String>,
        over_tls: bool,
    ) -> RequestSession {
        RequestSession {
            sessions,
            over_tls,
            state: Mutex::new(State {
                had_cookie: cookie.is_some(),
                current: Current::Unloaded(cookie),
                changes: BTreeMap::new(),
                cookie: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// Loads the session on first use. An id the store does not know is never adopted.
    fn load(&self, state: &mut State) -> Result<(), AccessError> {
        let Current::Unloaded(cookie) = &state.current else {
            return Ok(());
        };
        state.current = match cookie.clone() {
            None => Current::Absent,
            Some(id) => match self
                .sessions
                .run(StoreOp::Load, self.sessions.store.load(&id))?
            {
                Some(attributes) => Current::Stored { id, attributes },
                None => {
                    state.cookie = Some(CookieChange::Clear);
                    Current::Absent
                }
            },
        };
        Ok(())
    }

    /// Forgets the session (it ended meanwhile, or was invalidated).
    fn forget(state: &mut State) {
        state.current = Current::Absent;
        state.changes.clear();
        state.cookie = state.had_cookie.then_some(CookieChange::Clear);
    }

    /// How an update of `name` starts: from a guess if the session is not loaded yet and this
    /// host kept one (and `guess` allows it), else from the loaded session, whose buffered
    /// change of `name`, if any, is stored first so that the update applies on top of it.
    fn plan(&self, name: &str, guess: bool) -> Result<Plan, AccessError> {
        let mut state = self.lock();
        if let (Current::Unloaded(Some(id)), Some(guesses)) =
            (&state.current, &self.sessions.guesses)
            && guess
            && let Some(expected) = guesses.get(id, name)
        {
            return Ok(Plan::Cas {
                id: id.clone(),
                expected: Some(expected),
                guessed: true,
            });
        }
        self.load(&mut state)?;
        let State {
            current, changes, ..
        } = &mut *state;
        let mut ended = false;
        if let Current::Stored { id, attributes } = current
            && let Some(change) = changes.get(name).cloned()
        {
            let one = BTreeMap::from([(name.to_owned(), change.clone())]);
            let store = &self.sessions.store;
            if self.sessions.run(StoreOp::Save, store.save(id, &one))? {
                changes.remove(name);
                match change {
                    Some(value) => attributes.insert(name.to_owned(), value),
                    None => attributes.remove(name),
                };
            } else {
                ended = true;
            }
        }
        if ended {
            // It ended meanwhile: the update goes on in a new one.
            Self::forget(&mut state);
        }
        Ok(match &state.current {
            Current::Stored { id, attributes } => Plan::Cas {
                id: id.clone(),
                expected: attributes.get(name).cloned(),
                guessed: false,
            },
            _ => Plan::Create {
                old: state.changes.get(name).cloned().flatten(),
            },
        })
    }

    /// Creates the session that this request started or is about to start, with its buffered
    /// changes and `name` set to `new`: nobody else knows its id, so this is atomic. `false`
    /// if the request has a stored session meanwhile (the update starts over).
    fn create_with(&self, name: &str, new: Vec<u8>) -> Result<bool, AccessError> {
        let mut state = self.lock();
        let store = &self.sessions.store;
        for _ in 0..3 {
            if matches!(state.current, Current::Absent) {
                let id = id::new_id()?;
                state.cookie = Some(CookieChange::Set(id.clone()));
                state.current = Current::New { id };
            }
            let State {
                current, changes, ..
            } = &mut *state;
            let Current::New { id } = current else {
                return Ok(false);
            };
            let mut attributes = initial_attributes(changes);
            attributes.insert(name.to_owned(), new.clone());
            if self
                .sessions
                .run(StoreOp::Create, store.create(id, &attributes))?
            {
                if let Some(guesses) = &self.sessions.guesses {
                    guesses.stored(id, name, Some(&new));
                }
                changes.clear();
                *current = Current::Stored {
                    id: id.clone(),
                    attributes,
                };
                return Ok(true);
            }
            // Another session has this id: pick another.
            state.current = Current::Absent;
        }
        Err(StoreError::Unavailable("could not create a session".into()).into())
    }

    /// A compare-and-set of `name` to `new` stored: the request's view follows, with the
    /// session it loaded, if it asked for it.
    fn stored(&self, id: &str, name: &str, new: Vec<u8>, session: Option<Attributes>) {
        if let Some(guesses) = &self.sessions.guesses {
            guesses.stored(id, name, Some(&new));
        }
        let mut state = self.lock();
        if let Some(mut attributes) = session {
            attributes.insert(name.to_owned(), new);
            if matches!(state.current, Current::Unloaded(_)) {
                state.current = Current::Stored {
                    id: id.to_owned(),
                    attributes,
                };
            }
        } else if let Current::Stored {
            id: current,
            attributes,
        } = &mut state.current
            && current == id
        {
            attributes.insert(name.to_owned(), new);
        }
    }

    /// A guessed compare-and-set that loaded the session found it: the request's view.
    fn loaded(&self, id: &str, attributes: Attributes) {
        let mut state = self.lock();
        if matches!(state.current, Current::Unloaded(_)) {
            state.current = Current::Stored {
                id: id.to_owned(),
                attributes,
            };
        }
    }

    /// Session `id` is gone: if the update's guess was the request's first use of it, the id
    /// is not adopted (as a load that finds nothing); otherwise it ended during the update and
    /// the update continues in a new session, once.
    fn gone(&self, id: &str, guessed: bool, restarted: &mut bool) -> Result<Plan, AccessError> {
        if let Some(guesses) = &self.sessions.guesses {
            guesses.forget(id);
        }
        let mut state = self.lock();
        if guessed && matches!(state.current, Current::Unloaded(_)) {
            state.cookie = Some(CookieChange::Clear);
            state.current = Current::Absent;
        } else if std::mem::replace(restarted, true) {
            return Err(StoreError::Unavailable(
                "the session keeps ending during the update".into(),
            )
            .into());
        } else {
            Self::forget(&mut state);
        }
        // Nothing is buffered now: a request's first use buffers nothing, and forgetting
        // drops the buffer.
        Ok(Plan::Create { old: None })
    }

    /// Ends the request: stores the buffered changes (only those, in one round trip) or creates
    /// the new session, and returns the `Set-Cookie` value to send, if any. A session that
    /// ended meanwhile is not recreated; its changes are dropped and the cookie expired.
    ///
    /// # Errors
    /// The store's error: nothing was written, and the client should get a 503.
    pub async fn finish(&self) -> Result<Option<String>, StoreError> {
        match self.end() {
            Some(ending) => self.store(ending).await,
            None => Ok(None),
        }
    }

    /// Whether the session store is in an outage, as [`Sessions`] logs it once.
    pub fn store_is_down(&self) -> bool {
        self.sessions.is_down()
    }

    /// Ends the session's part of the request: what [`finish`](Self::finish) has left to do,
    /// or `None` when it has nothing to store and no cookie to send, as for a request that never
    /// touched its session. A caller that can finish without awaiting then skips the future.
    pub fn end(&self) -> Option<Ending> {
        let mut state = self.lock();
        let current = std::mem::replace(&mut state.current, Current::Absent);
        let idle = match &current {
            Current::Stored { .. } => state.changes.is_empty(),
            Current::New { .. } => false,
            Current::Unloaded(_) | Current::Absent => true,
        };
        if idle && state.cookie.is_none() {
            state.changes.clear();
            return None;
        }
        Some(Ending {
            current,
            changes: std::mem::take(&mut state.changes),
            had_cookie: state.had_cookie,
            cookie: state.cookie.take(),
        })
    }

    /// Stores what [`end`](Self::end) took and answers the cookie to send, if any.
    pub async fn store(&self, ending: Ending) -> Result<Option<String>, StoreError> {
        let Ending {
            current,
            changes,
            had_cookie,
            mut cookie,
        } = ending;
        let store = &self.sessions.store;
        match current {
            Current::Stored { id, .. } if !changes.is_empty() => {
                let saved = self
                    .sessions
                    .call(StoreOp::Save, store.save(&id, &changes))
                    .await?;
                if !saved {
                    cookie = had_cookie.then_some(CookieChange::Clear);
                } else if let Some(guesses) = &self.sessions.guesses {
                    guesses.saved(&id, &changes);
                }
            }
            Current::New { mut id } => {
                let attributes = initial_attributes(&changes);
                let mut created = false;
                for _ in 0..3 {
                    if self
                        .sessions
                        .call(StoreOp::Create, store.create(&id, &attributes))
                        .await?
                    {
                        created = true;
                        break;
                    }
                    id = id::new_id()?;
                }
                if !created {
                    return Err(StoreError::Unavailable("could not create a session".into()));
                }
                cookie = Some(CookieChange::Set(id));
            }
            _ => {}
        }
        Ok(cookie.map(|change| self.sessions.cookie.header(&change, self.over_tls)))
    }
}

impl SessionAccess for RequestSession {
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, AccessError> {
        check_name(name)?;
        let mut state = self.lock();
        self.load(&mut state)?;
        if let Some(change) = state.changes.get(name) {
            return Ok(change.clone());
        }
        Ok(match &state.current {
            Current::Stored { attributes, .. } => attributes.get(name).cloned(),
            _ => None,
        })
    }

    fn set(&self, name: &str, value: Vec<u8>) -> Result<(), AccessError> {
        check_name(name)?;
        check_json(name, &value)?;
        let mut state = self.lock();
        self.load(&mut state)?;
        if matches!(state.current, Current::Absent) {
            let id = id::new_id()?;
            state.cookie = Some(CookieChange::Set(id.clone()));
            state.current = Current::New { id };
        }
        state.changes.insert(name.to_owned(), Some(value));
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<(), AccessError> {
        check_name(name)?;
        let mut state = self.lock();
        self.load(&mut state)?;
        if !matches!(state.current, Current::Absent) {
            state.changes.insert(name.to_owned(), None);
        }
        Ok(())
    }

    fn names(&self) -> Result<Vec<String>, AccessError> {
        let mut state = self.lock();
        self.load(&mut state)?;
        let mut names = match &state.current {
            Current::Stored { attributes, .. } => attributes.keys().cloned().collect(),
            _ => std::collections::BTreeSet::new(),
        };
        for (name, change) in &state.changes {
            if change.is_some() {
                names.insert(name.clone());
            } else {
                names.remove(name);
            }
        }
        Ok(names.into_iter().collect())
    }

    fn id(&self) -> Result<Option<String>, AccessError> {
        let mut state = self.lock();
        self.load(&mut state)?;
        Ok(match &state.current {
            Current::Stored { id, .. } | Current::New { id } => Some(id.clone()),
            _ => None,
        })
    }

    fn invalidate(&self) -> Result<(), AccessError> {
        let mut state = self.lock();
        self.load(&mut state)?;
        if let Current::Stored { id, .. } = &state.current {
            self.sessions
                .run(StoreOp::Remove, self.sessions.store.remove(id))?;
            if let Some(guesses) = &self.sessions.guesses {
                guesses.forget(id);
            }
        }
        Self::forget(&mut state);
        Ok(())
    }

    fn rotate(&self) -> Result<(), AccessError> {
        let mut state = self.lock();
        self.load(&mut state)?;
        let fresh = match &state.current {
            Current::Absent | Current::Unloaded(_) => return Ok(()),
            Current::New { .. } => id::new_id()?,
            Current::Stored { id, .. } => {
                let fresh = id::new_id()?;
                if !self
                    .sessions
                    .run(StoreOp::Rename, self.sessions.store.rename(id, &fresh))?
                {
                    Self::forget(&mut state);
                    return Ok(());
                }
                if let Some(guesses) = &self.sessions.guesses {
                    guesses.moved(id, &fresh);
                }
                fresh
            }
        };
        match &mut state.current {
            Current::Stored { id, .. } | Current::New { id } => id.clone_from(&fresh),
            Current::Absent | Current::Unloaded(_) => {}
        }
        state.cookie = Some(CookieChange::Set(fresh));
        Ok(())
    }

    /// One round trip when the session was loaded already or this host's guess of the
    /// attribute is right (the store then loads the session in the same step); a wrong guess or
    /// a concurrent change costs one more per attempt, as the store answers the current value
    /// with the conflict. The closure runs outside every lock: it may use the session.
    fn update(&self, name: &str, f: &mut UpdateFn<'_>) -> Result<(), AccessError> {
        check_name(name)?;
        let store = &self.sessions.store;
        let mut restarted = false;
        let mut plan = self.plan(name, true)?;
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let (id, expected, guessed) = match plan {
                Plan::Create { old } => {
                    let new = f(old.as_deref())?;
                    check_json(name, &new)?;
                    if self.create_with(name, new)? {
                        return Ok(());
                    }
                    plan = self.plan(name, false)?;
                    continue;
                }
                Plan::Cas {
                    id,
                    expected,
                    guessed,
                } => (id, expected, guessed),
            };
            let new = match f(expected.as_deref()).and_then(|new| {
                check_json(name, &new)?;
                Ok(new)
            }) {
                Ok(new) => new,
                // A guess may be a value that no longer fits the app: only the real one counts.
                Err(_) if guessed => {
                    plan = self.plan(name, false)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let request = CasRequest::new(&id, name, expected.as_deref(), &new);
            let request = if guessed { request.loading() } else { request };
            plan = match self
                .sessions
                .run(StoreOp::CompareAndSet, store.compare_and_set(request))?
            {
                Cas::Done { session } => {
                    self.stored(&id, name, new, session);
                    return Ok(());
                }
                Cas::Conflict { current, session } => {
                    if let Some(attributes) = session {
                        self.loaded(&id, attributes);
                    } else {
                        // A concurrent request changed it: let it finish.
                        std::thread::yield_now();
                    }
                    Plan::Cas {
                        id,
                        expected: current,
                        guessed: false,
                    }
                }
                Cas::Gone => self.gone(&id, guessed, &mut restarted)?,
            };
        }
        Err(StoreError::Unavailable(format!(
            "attribute {name:?} changed concurrently {MAX_UPDATE_ATTEMPTS} times in a row"
        ))
        .into())
    }
}

#[cfg(test)]
mod tests;
