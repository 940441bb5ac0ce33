//! [`TestSession`]: an in-memory session for unit tests of handlers, behind the `test-util`
//! feature so it is not compiled into modules.

use std::cell::RefCell;
use std::collections::BTreeMap;

use super::SessionError;
use crate::abi::check_attribute_name;

/// An in-memory session for unit tests of handlers, attached with
/// [`RequestBuilder::session`](crate::RequestBuilder::session).
///
/// It behaves like a host session of one client (a write creates it, invalidation deletes it)
/// and can simulate a store outage or values stored by an older version of the app.
///
/// Needs the `test-util` feature, enabled for tests only:
///
/// ```toml
/// [dev-dependencies]
/// baton-sdk = { version = "0.1", features = ["test-util"] }
/// ```
///
/// ```
/// use baton_sdk::{Request, TestSession};
///
/// let session = TestSession::new();
/// session.insert_json("cart", "{\"old\":\"shape\"}");
/// let req = Request::builder("GET", "/").session(&session).build();
/// assert!(req.session().get::<Vec<u32>>("cart").unwrap_err().is_decode());
///
/// session.set_unavailable(true);
/// assert!(req.session().get::<String>("user").unwrap_err().is_unavailable());
/// ```
#[derive(Debug, Default)]
pub struct TestSession {
    state: RefCell<TestState>,
}

#[derive(Debug, Default)]
struct TestState {
    id: Option<String>,
    attrs: BTreeMap<String, Vec<u8>>,
    ids_made: u64,
    unavailable: bool,
}

fn check_name(name: &str) -> Result<(), SessionError> {
    check_attribute_name(name).map_err(|e| SessionError::Rejected(e.to_string()))
}

impl TestSession {
    /// An empty session store for one client.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every operation fail with [`SessionError::Unavailable`] (or work again).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.state.borrow_mut().unavailable = unavailable;
    }

    /// Stores a raw JSON text under `name`, creating the session if needed, e.g. a value in the
    /// shape an older version of the app wrote.
    ///
    /// # Panics
    /// If `json` is not valid JSON.
    pub fn insert_json(&self, name: &str, json: &str) {
        serde_json::from_str::<serde::de::IgnoredAny>(json).expect("valid JSON");
        let mut state = self.state.borrow_mut();
        state.ensure_id();
        state
            .attrs
            .insert(name.to_owned(), json.as_bytes().to_vec());
    }

    /// The raw JSON text stored under `name`.
    pub fn json(&self, name: &str) -> Option<String> {
        let state = self.state.borrow();
        state
            .attrs
            .get(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The current session id, if the session exists.
    pub fn id(&self) -> Option<String> {
        self.state.borrow().id.clone()
    }

    pub(super) fn check(&self) -> Result<(), SessionError> {
        if self.state.borrow().unavailable {
            return Err(SessionError::Unavailable("test store is down".into()));
        }
        Ok(())
    }

    pub(super) fn get(&self, name: &str) -> Result<Option<Vec<u8>>, SessionError> {
        self.check()?;
        check_name(name)?;
        Ok(self.state.borrow().attrs.get(name).cloned())
    }

    pub(super) fn set(&self, name: &str, value: Option<&[u8]>) -> Result<(), SessionError> {
        self.check()?;
        check_name(name)?;
        let mut state = self.state.borrow_mut();
        match value {
            Some(value) => {
                state.ensure_id();
                state.attrs.insert(name.to_owned(), value.to_vec());
            }
            None => {
                state.attrs.remove(name);
            }
        }
        Ok(())
    }

    pub(super) fn names(&self) -> Result<Vec<String>, SessionError> {
        self.check()?;
        Ok(self.state.borrow().attrs.keys().cloned().collect())
    }

    pub(super) fn invalidate(&self) -> Result<(), SessionError> {
        self.check()?;
        let mut state = self.state.borrow_mut();
        state.id = None;
        state.attrs.clear();
        Ok(())
    }

    pub(super) fn rotate(&self) -> Result<(), SessionError> {
        self.check()?;
        let mut state = self.state.borrow_mut();
        if state.id.is_some() {
            state.id = None;
            state.ensure_id();
        }
        Ok(())
    }
}

impl TestState {
    fn ensure_id(&mut self) {
        if self.id.is_none() {
            self.ids_made += 1;
            self.id = Some(format!("test-session-{}", self.ids_made));
        }
    }
}
