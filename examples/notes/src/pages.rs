//! The HTML side: the page, and the form posts behind it (log in, log out, post a note), each
//! answered with a `303 See Other` back to the page (post, redirect, get).

use baton_sdk::{Error, Request, Response, StatusCode};
use serde::Deserialize;

use crate::Notes;
use crate::auth;
use crate::note::{MAX_TEXT_CHARS, Note, Tags};

/// Notes shown on the page.
const PAGE_NOTES: u32 = 50;

/// Escapes text for HTML content and quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A `303 See Other` to `location`.
fn see_other(location: String) -> Response {
    Response::new(StatusCode::SEE_OTHER)
        .with_header("location", location)
        .with_header("cache-control", "no-store")
}

/// Parses a form-encoded body.
fn form<T: serde::de::DeserializeOwned>(req: &Request) -> Result<T, Error> {
    serde_urlencoded::from_bytes(req.try_body()?)
        .map_err(|e| Error::bad_request(format!("invalid form: {e}")))
}

/// What the page shows.
struct View<'a> {
    mount: &'a str,
    version: &'a str,
    css: String,
    js: String,
    csrf: &'a str,
    user: Option<&'a str>,
    notes: &'a [Note],
    with_tags: bool,
    login_failed: bool,
}

/// A hidden form field with the CSRF token.
fn csrf_field(token: &str) -> String {
    format!(
        r#"<input type="hidden" name="csrf" value="{}">"#,
        escape(token)
    )
}

/// One note as a list item (`static/app.js` builds the same markup for live notes).
fn note_item(note: &Note) -> String {
    let tags: String = note
        .tags
        .iter()
        .flatten()
        .map(|t| format!(r#" <span class="tag">#{}</span>"#, escape(t)))
        .collect();
    format!(
        r#"<li class="note" data-id="{id}"><p class="text">{text}</p><p class="meta"><span class="author">{author}</span> · <time datetime="{created}">{created}</time>{tags}</p></li>"#,
        id = note.id,
        text = escape(&note.text),
        author = escape(&note.author),
        created = escape(&note.created),
    )
}

fn render(v: &View) -> String {
    let mount = escape(v.mount);
    let csrf = csrf_field(v.csrf);
    let account = match v.user {
        Some(user) => format!(
            r#"<span class="who">Signed in as <b>{}</b></span>
      <form method="post" action="{mount}/logout" class="inline">{csrf}<button type="submit">Log out</button></form>"#,
            escape(user)
        ),
        None => String::new(),
    };
    let editor = match v.user {
        Some(_) => {
            let tags = if v.with_tags {
                r#"<input name="tags" placeholder="tags, e.g. rust web" autocomplete="off">"#
            } else {
                ""
            };
            format!(
                r#"<form id="post" method="post" action="{mount}/" class="card">
      <textarea name="text" maxlength="{MAX_TEXT_CHARS}" required placeholder="Write a note…"></textarea>
      <div class="row">{tags}{csrf}<button type="submit">Post</button></div>
      <p class="error" id="post-error" hidden></p>
    </form>"#
            )
        }
        None => {
            let failed = if v.login_failed {
                r#"<p class="error">Wrong user name or password.</p>"#
            } else {
                ""
            };
            format!(
                r#"<form id="login" method="post" action="{mount}/login" class="card">
      {failed}
      <label>User <input name="user" autocomplete="username" required></label>
      <label>Password <input type="password" name="password" autocomplete="current-password" required></label>
      {csrf}<button type="submit">Log in</button>
    </form>"#
            )
        }
    };
    let notes: String = v.notes.iter().map(note_item).collect();
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="csrf-token" content="{token}">
  <meta name="notes-mount" content="{mount}">
  <title>Notes</title>
  <link rel="stylesheet" href="{css}">
  <script src="{js}" defer></script>
</head>
<body>
  <header class="bar">
    <h1>Notes</h1>
    <span id="version" title="the version serving this page">{version}</span>
    <span class="spacer"></span>
    {account}
  </header>
  <main>
    {editor}
    <ul id="notes">{notes}</ul>
    <p class="foot"><a href="{mount}/export">Export as CSV</a> · <a href="{mount}/api/notes">JSON</a></p>
  </main>
</body>
</html>
"#,
        token = escape(v.csrf),
        css = escape(&v.css),
        js = escape(&v.js),
        version = escape(v.version),
    )
}

/// The versioned URL of an asset, or its plain URL when the request has no asset table.
fn asset(req: &Request, path: &str) -> String {
    req.asset_url(path)
        .unwrap_or_else(|| format!("{}{path}", req.mount()))
}

/// `GET /`: the newest notes, and the form to post one or to log in.
pub(crate) fn page(app: &Notes, req: &Request) -> Result<Response, Error> {
    // Every form on the page carries the token, the login form too (a forged login would sign
    // the victim in as the attacker): the session starts here.
    let csrf = auth::csrf_token(req)?;
    let user = auth::user(req)?;
    let notes = app.db.list(PAGE_NOTES)?;
    let html = render(&View {
        mount: req.mount(),
        version: &app.version,
        css: asset(req, "/static/app.css"),
        js: asset(req, "/static/app.js"),
        csrf: &csrf,
        user: user.as_deref(),
        notes: &notes,
        with_tags: app.db.schema() >= 2,
        login_failed: req.query_param("login").is_some_and(|v| v == "failed"),
    });
    Ok(Response::html(html)
        .with_header("cache-control", "no-store")
        .with_header(
            "content-security-policy",
            "default-src 'self'; style-src 'self'; script-src 'self'; form-action 'self'; frame-ancestors 'none'",
        ))
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
    csrf: Option<String>,
}

/// `POST /login`: logs in and goes back to the page; a wrong name or password goes back with
/// `?login=failed`.
pub(crate) fn login(app: &Notes, req: &Request) -> Result<Response, Error> {
    let form: LoginForm = form(req)?;
    auth::check_csrf(req, form.csrf.as_deref())?;
    if !app.users.check(&form.user, &form.password) {
        return Ok(see_other(format!("{}/?login=failed", req.mount())));
    }
    auth::log_in(req, &form.user)?;
    Ok(see_other(format!("{}/", req.mount())))
}

#[derive(Deserialize)]
struct LogoutForm {
    csrf: Option<String>,
}

/// `POST /logout`: ends the session.
pub(crate) fn logout(_: &Notes, req: &Request) -> Result<Response, Error> {
    let form: LogoutForm = form(req)?;
    auth::check_csrf(req, form.csrf.as_deref())?;
    req.session().invalidate()?;
    Ok(see_other(format!("{}/", req.mount())))
}

#[derive(Deserialize)]
struct NoteForm {
    text: String,
    #[serde(default)]
    tags: Option<String>,
    csrf: Option<String>,
}

/// `POST /`: posts a note from the page's form.
pub(crate) fn post_note(app: &Notes, req: &Request) -> Result<Response, Error> {
    let form: NoteForm = form(req)?;
    auth::check_csrf(req, form.csrf.as_deref())?;
    let user =
        auth::user(req)?.ok_or_else(|| Error::new(StatusCode::UNAUTHORIZED, "log in first"))?;
    app.post(&user, &form.text, form.tags.map(Tags::Text))?;
    Ok(see_other(format!("{}/", req.mount())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_everywhere() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let note = Note {
            id: 1,
            author: "<b>".into(),
            text: "<script>alert(1)</script>".into(),
            created: "t".into(),
            tags: Some(vec!["x".into()]),
        };
        let html = note_item(&note);
        assert!(
            !html.contains("<script>") && !html.contains("<b>"),
            "{html}"
        );
        assert!(html.contains(r#"<span class="tag">#x</span>"#));
    }

    #[test]
    fn the_page_has_the_login_form_or_the_editor() {
        let mut view = View {
            mount: "/notes",
            version: "notes@1.0.0",
            css: "/notes/static/app.css?v=1".into(),
            js: "/notes/static/app.js?v=1".into(),
            csrf: "tok",
            user: None,
            notes: &[],
            with_tags: false,
            login_failed: true,
        };
        let html = render(&view);
        assert!(html.contains(r#"action="/notes/login""#));
        assert!(html.contains(r#"<meta name="csrf-token" content="tok">"#));
        assert!(html.contains(r#"name="csrf" value="tok""#));
        assert!(html.contains("Wrong user name"));
        assert!(!html.contains(r#"id="post""#));
        view.user = Some("ada");
        view.with_tags = true;
        let html = render(&view);
        assert!(html.contains(r#"id="post""#) && html.contains(r#"name="tags""#));
        assert!(html.contains(r#"action="/notes/logout""#));
        assert!(!html.contains(r#"id="login""#));
    }
}
