//! An HTTP client with a one-cookie jar for the session cookie, like a browser tab.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::http::{Http, Reply};

/// Sends the session cookie it was last given, and takes new ones from `Set-Cookie`.
#[derive(Clone, Debug)]
pub struct Jar {
    http: Http,
    name: String,
    cookie: Arc<Mutex<Option<String>>>,
}

impl Jar {
    /// A jar for the cookie named `name` (`BATON_SESSION` by default in the host).
    pub fn new(name: &str) -> Jar {
        Jar {
            http: Http::new(),
            name: name.to_owned(),
            cookie: Arc::default(),
        }
    }

    /// The session id in the jar.
    pub fn id(&self) -> Option<String> {
        self.cookie.lock().unwrap().clone()
    }

    /// Puts `id` into the jar, as a client with a stolen or made-up cookie would.
    pub fn set_id(&self, id: &str) {
        *self.cookie.lock().unwrap() = Some(id.to_owned());
    }

    /// GET with the cookie; panics on a transport error.
    pub async fn get(&self, url: &str) -> Reply {
        let cookie = self.id().map(|id| format!("{}={id}", self.name));
        let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("cookie", c.as_str())).collect();
        let reply = self
            .http
            .send("GET", url, &headers, Bytes::new())
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        for set in reply.headers.get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let Some((pair, _)) = set.split_once(';').or(Some((set, ""))) else {
                continue;
            };
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            if name.trim() != self.name {
                continue;
            }
            let expired = set.to_ascii_lowercase().contains("max-age=0") || value.is_empty();
            *self.cookie.lock().unwrap() = (!expired).then(|| value.trim().to_owned());
        }
        reply
    }
}
