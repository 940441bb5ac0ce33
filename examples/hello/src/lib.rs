//! `hello`: the smallest useful Baton app, plus endpoints for testing drains and panics,
//! `/thread` (names the worker thread, as apps that log thread names do), and streams: a
//! download of any size (`/bytes?n=N`), an upload counted as it arrives (`POST /upload`), the
//! length of a body read whole (`POST /length`) and server-sent events that end when the
//! version drains (`/ticks`).

use std::io::{Read, Write};
use std::time::Duration;

use baton_sdk::{App, Error, Event, InitContext, Request, Response, Result, Router};

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
            .get("/bytes", Self::bytes)
            .post("/upload", Self::upload)
            // The whole body in memory (`req.body()`), answered with its length.
            .post("/length", |_: &Self, req: &Request| {
                format!("{}\n", req.body().len())
            })
            .get("/ticks", Self::ticks)
            .get("/whoami", |_: &Self, req: &Request| {
                let client = req.client_addr().map(|a| a.to_string());
                format!("{} {}\n", client.as_deref().unwrap_or("-"), req.scheme())
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

impl Hello {
    /// Streams `?n=N` bytes (`a`…`z` repeating) in 64 KiB writes.
    fn bytes(&self, req: &Request) -> Result<Response> {
        let n: u64 = req
            .query_param("n")
            .unwrap_or_default()
            .parse()
            .map_err(|_| Error::bad_request("?n=N expected"))?;
        let block: Vec<u8> = (0..64 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
        Ok(Response::stream(move |out| {
            let mut left = n;
            while left > 0 {
                let take = left.min(block.len() as u64) as usize;
                out.write_all(&block[..take])?;
                left -= take as u64;
            }
            Ok(())
        })
        .with_header("content-type", "application/octet-stream"))
    }

    /// Reads the body as it arrives and answers how many bytes it had.
    fn upload(&self, req: &Request) -> Result<String> {
        let mut reader = req.body_reader();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        Ok(format!("{total}\n"))
    }

    /// Server-sent events: a tick every `?ms=N` milliseconds (100 by default) with this
    /// version's id, until the version drains; then a retry hint, and the stream ends.
    fn ticks(&self, req: &Request) -> Response {
        let ms: u64 = req
            .query_param("ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(100);
        let id = self.id.clone();
        Response::event_stream(move |out| {
            let mut n = 0u64;
            while !out.is_draining() {
                out.send_event(&Event::new(&id).id(n.to_string()))?;
                n += 1;
                std::thread::sleep(Duration::from_millis(ms.min(10_000)));
            }
            out.send_event(&Event::retry(200).event("draining"))
        })
    }
}

baton_sdk::export!(Hello);
