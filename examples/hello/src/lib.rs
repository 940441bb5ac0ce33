//! `hello`: the smallest useful Baton app, plus endpoints for testing drains and panics, and
//! `/thread` (names the worker thread, as apps that log thread names do).

use std::time::Duration;

use baton_sdk::{App, Error, InitContext, Request, Result, Router};

struct Hello {
    id: String,
}

impl App for Hello {
    fn init(ctx: &InitContext) -> Result<Self> {
        Ok(Hello {
            id: format!("{}@{}", ctx.app_name(), ctx.app_version()),
        })
    }

    fn router() -> Router<Self> {
        Router::new()
            .get("/", |app: &Self, _: &Request| {
                format!("hello from {}\n", app.id)
            })
            .get("/slow", Self::slow)
            .get("/thread", |app: &Self, _: &Request| {
                let thread = std::thread::current();
                format!(
                    "{} on {}\n",
                    app.id,
                    thread.name().unwrap_or("an unnamed thread")
                )
            })
            .get("/panic", |_: &Self, _: &Request| -> &'static str {
                panic!("asked to panic")
            })
    }
}

impl Hello {
    /// Answers after `?ms=N` milliseconds (at most a minute).
    fn slow(&self, req: &Request) -> Result<String> {
        let ms: u64 = req
            .query_param("ms")
            .unwrap_or_default()
            .parse()
            .map_err(|_| Error::bad_request("?ms=N expected"))?;
        std::thread::sleep(Duration::from_millis(ms.min(60_000)));
        Ok(format!("slept {ms} ms in {}\n", self.id))
    }
}

baton_sdk::export!(Hello);
