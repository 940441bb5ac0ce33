//! Notes for `GET /notes/api/notes` to list, posted the way a script does (see the `notes`
//! example's README): fetch the page for a session cookie and a CSRF token, log in through the
//! form as `demo`, fetch the page again for the new token, post JSON with `X-CSRF-Token`.

use std::net::SocketAddr;

use anyhow::{Context, bail, ensure};
use baton_benches::load::{Reply, request};

/// A client's cookies, as a browser keeps them.
#[derive(Debug, Default)]
struct Jar {
    cookies: Vec<(String, String)>,
}

impl Jar {
    /// Keeps what `reply` set (an empty value forgets the cookie).
    fn keep(&mut self, reply: &Reply) {
        for set in reply.headers_named("set-cookie") {
            let pair = set.split(';').next().unwrap_or_default();
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            self.cookies.retain(|(n, _)| n != name);
            if !value.is_empty() {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    /// The `Cookie` header's value.
    fn header(&self) -> String {
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        pairs.join("; ")
    }

    /// `method path` with the cookies and `headers`; keeps the cookies it sets.
    async fn send(
        &mut self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<Reply> {
        let cookie = self.header();
        let mut all = headers.to_vec();
        if !cookie.is_empty() {
            all.push(("cookie", &cookie));
        }
        let reply = request(addr, method, path, &all, body).await?;
        self.keep(&reply);
        Ok(reply)
    }

    /// The page's CSRF token (its `<meta name="csrf-token">`).
    async fn token(&mut self, addr: SocketAddr) -> anyhow::Result<String> {
        let page = self.send(addr, "GET", "/notes/", &[], &[]).await?;
        ensure!(page.status == 200, "GET /notes/ answered {}", page.status);
        meta(&String::from_utf8_lossy(&page.body), "csrf-token")
    }
}

/// The `content` of `<meta name="NAME" content="...">` in a page.
fn meta(page: &str, name: &str) -> anyhow::Result<String> {
    let start = format!(r#"<meta name="{name}" content=""#);
    let at = page
        .find(&start)
        .with_context(|| format!("no {name} meta tag in the page"))?
        + start.len();
    Ok(page[at..].split('"').next().unwrap_or_default().to_owned())
}

/// `value` for an `application/x-www-form-urlencoded` body.
fn form_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Logs in as `demo` and posts `count` notes; returns how many `GET /notes/api/notes` then
/// lists.
///
/// # Errors
/// A step that does not answer as the app's README says.
pub(crate) async fn notes(addr: SocketAddr, count: usize) -> anyhow::Result<usize> {
    let mut jar = Jar::default();
    let token = jar.token(addr).await?;
    let form = format!("user=demo&password=demo&csrf={}", form_value(&token));
    let login = jar
        .send(
            addr,
            "POST",
            "/notes/login",
            &[("content-type", "application/x-www-form-urlencoded")],
            form.as_bytes(),
        )
        .await?;
    if login.status != 303 || login.header("location") != "/notes/" {
        bail!(
            "login answered {} to {:?}",
            login.status,
            login.header("location")
        );
    }
    let token = jar.token(addr).await?;
    for i in 0..count {
        let note = serde_json::json!({
            "text": format!("note {i}: a short line, the size of a real one, for the list"),
        });
        let posted = jar
            .send(
                addr,
                "POST",
                "/notes/api/notes",
                &[
                    ("content-type", "application/json"),
                    ("x-csrf-token", &token),
                ],
                note.to_string().as_bytes(),
            )
            .await?;
        ensure!(
            posted.status == 201,
            "POST /notes/api/notes answered {}: {}",
            posted.status,
            String::from_utf8_lossy(&posted.body)
        );
    }
    let list = request(addr, "GET", "/notes/api/notes", &[], &[]).await?;
    ensure!(
        list.status == 200,
        "GET /notes/api/notes answered {}",
        list.status
    );
    let notes: Vec<serde_json::Value> =
        serde_json::from_slice(&list.body).context("the list is not a JSON array")?;
    Ok(notes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_and_form_encoded() {
        let page = r#"<head><meta name="csrf-token" content="a+b/c="></head>"#;
        let token = meta(page, "csrf-token").unwrap();
        assert_eq!(token, "a+b/c=");
        assert_eq!(form_value(&token), "a%2Bb%2Fc%3D");
        assert!(meta("<head></head>", "csrf-token").is_err());
    }
}
