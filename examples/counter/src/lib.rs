//! `counter`: sessions in a few lines. Each client gets its own count, kept by the host in
//! memory or in Redis, so it survives new versions of the app and moves between hosts.

use baton_sdk::{App, Error, InitContext, Request, Result, Router};

struct Counter;

impl App for Counter {
    fn init(_: &InitContext) -> Result<Self> {
        Ok(Counter)
    }

    fn router() -> Router<Self> {
        Router::new()
            .get("/", Self::count)
            .get("/login", Self::login)
            .get("/whoami", Self::whoami)
            .get("/logout", Self::logout)
    }
}

impl Counter {
    /// Counts this client's visits. The increment is atomic: concurrent requests of one
    /// session never lose a count.
    fn count(&self, req: &Request) -> Result<String> {
        let count = req
            .session()
            .update("count", |n: Option<u64>| n.unwrap_or(0) + 1)?;
        Ok(format!("count {count}\n"))
    }

    /// Logs in as `?user=NAME`: a new session id first (the old one stops working), then the
    /// user; the count is kept.
    fn login(&self, req: &Request) -> Result<String> {
        let user = req
            .query_param("user")
            .filter(|user| !user.is_empty())
            .ok_or_else(|| Error::bad_request("?user=NAME expected"))?;
        let session = req.session();
        session.rotate_id()?;
        session.insert("user", &user)?;
        Ok(format!("logged in as {user}\n"))
    }

    /// Who is logged in.
    fn whoami(&self, req: &Request) -> Result<String> {
        let user: Option<String> = req.session().get("user")?;
        Ok(format!("{}\n", user.as_deref().unwrap_or("anonymous")))
    }

    /// Ends the session: user and count are gone.
    fn logout(&self, req: &Request) -> Result<String> {
        req.session().invalidate()?;
        Ok("logged out\n".to_owned())
    }
}

baton_sdk::export!(Counter);
