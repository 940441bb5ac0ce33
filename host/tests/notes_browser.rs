//! The `notes` example app end to end in a real headless Chromium, driven over WebDriver as a
//! user would use it: log in through the page's form, post notes from one window and watch them
//! arrive live in another, then swap the app from 1.0.0 to 2.0.0 under load while both windows
//! stay open, and check that they keep working on the new version: the live stream follows to
//! 2.0.0, the session and the page's form still post, concurrent posts find a sound database
//! once 1.0.0 is retired, the assets the pages were built with still load, and a reload is
//! rendered by 2.0.0. Ends with a screenshot of the second window in
//! `target/tmp/notes_browser_window_b.png`.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use baton_testkit::browser::{ChromeDriver, Session};
use serde_json::{Value, json};
use support::load::{Load, assert_served};
use support::{GUARD_OFF, HostProc, eventually, module, status};

/// How long anything the user would see may take to show.
const WAIT: Duration = Duration::from_secs(20);

/// `notes` built as `version`.
fn notes(version: &str) -> PathBuf {
    module("notes", &[("BATON_APP_VERSION", version)])
}

/// The texts of the notes the page lists, newest first.
fn listed(page: &Session) -> Vec<String> {
    let texts = page.execute(
        "return [...document.querySelectorAll('#notes li .text')].map(e => e.textContent)",
        &[],
    );
    serde_json::from_value(texts).unwrap_or_default()
}

/// Waits until the page lists a note with `text`.
fn shows_note(page: &Session, text: &str) {
    page.wait_until(WAIT, &format!("the note {text:?} listed"), |p| {
        listed(p).iter().any(|t| t == text).then_some(())
    });
}

/// Waits until the page's `#version` reads `version` and its event stream is connected (the
/// stream's `hello` marks it `live`).
fn live_on(page: &Session, version: &str) {
    page.wait_until(WAIT, &format!("a live stream from {version}"), |p| {
        let shown = p.execute(
            "const v = document.getElementById('version');
             return [v.textContent, v.classList.contains('live')]",
            &[],
        );
        (shown == json!([version, true])).then_some(())
    });
}

/// Posts `text` through the page's note form (its script sends it to the JSON API).
fn post(page: &Session, text: &str) {
    let textarea = page.wait_for("#post textarea[name=text]", WAIT);
    textarea.send_keys(text);
    page.find("#post button[type=submit]").click();
    shows_note(page, text);
    let error = page.execute(
        "const e = document.getElementById('post-error'); return e && !e.hidden ? e.textContent : null",
        &[],
    );
    assert_eq!(error, Value::Null, "posting {text:?} showed an error");
}

/// Fetches the page's stylesheet and script from the page, as it would to revalidate them:
/// their statuses, and whether the stylesheet applies (has rules).
fn assets(page: &Session) -> Value {
    page.execute_async(
        "const done = arguments[arguments.length - 1];
         const css = document.querySelector('link[rel=stylesheet]').href;
         const js = document.querySelector('script[src]').src;
         const rules = [...document.styleSheets].reduce((n, s) => n + s.cssRules.length, 0);
         Promise.all([fetch(css, { cache: 'no-cache' }), fetch(js, { cache: 'no-cache' })])
           .then(([c, j]) => done({ css: c.status, js: j.status, rules: rules > 0,
                                    cssUrl: css, jsUrl: js }))
           .catch(e => done({ error: String(e) }));",
        &[],
    )
}

/// What answered a `fetch` of `path` from the page: its `x-baton-version`.
fn fetched_version(page: &Session, path: &str) -> Value {
    page.execute_async(
        "const done = arguments[arguments.length - 1];
         fetch(arguments[0], { credentials: 'same-origin' })
           .then(r => done(r.headers.get('x-baton-version')))
           .catch(e => done('error: ' + e));",
        &[json!(path)],
    )
}

/// From the page (logged in): `posts` notes posted and as many listings fetched, all at once.
/// The statuses, and the texts of the notes a listing fetched after them shows.
fn burst(page: &Session, posts: usize) -> Value {
    page.execute_async(
        "const done = arguments[arguments.length - 1];
         const n = arguments[0];
         const token = document.querySelector('meta[name=csrf-token]').content;
         const post = (i) => fetch('/notes/api/notes', {
             method: 'POST', credentials: 'same-origin',
             headers: { 'content-type': 'application/json', 'x-csrf-token': token },
             body: JSON.stringify({ text: 'burst ' + i }) }).then(r => r.status);
         const list = () => fetch('/notes/api/notes?limit=1000').then(r => r.status);
         const all = [];
         for (let i = 0; i < n; i++) { all.push(post(i), list()); }
         Promise.all(all)
           .then(statuses => fetch('/notes/api/notes?limit=1000')
             .then(r => r.ok ? r.json() : r.text().then(t => { throw new Error(r.status + ' ' + t); }))
             .then(notes => done({ statuses, texts: notes.map(n => n.text) })))
           .catch(e => done({ error: String(e) }));",
        &[json!(posts)],
    )
}

/// Prints the host's log but its access lines when the test fails, to tell what the app did.
struct LogOnFailure<'h>(&'h HostProc);

impl Drop for LogOnFailure<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for line in self.0.log_lines() {
                if line["target"] != "baton::access" {
                    eprintln!("host: {line}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_windows_follow_live_notes_and_a_swap_in_headless_chromium() {
    let data = tempfile::tempdir().unwrap();
    let host = HostProc::start_with_config(
        &[notes("1.0.0")],
        &format!(
            "{GUARD_OFF}[apps.notes]\nconfig = {{ data_dir = {:?}, poll_ms = 100 }}\n",
            data.path().to_str().unwrap()
        ),
    );
    let v2 = notes("2.0.0");
    let page_url = host.url("/notes/");
    let _log = LogOnFailure(&host);
    let driver = ChromeDriver::start();

    // Window A: log in as demo through the page's form, then post a note through the page.
    let a = driver.session();
    a.goto(&page_url);
    a.wait_for("#login input[name=user]", WAIT)
        .send_keys("demo");
    a.find("#login input[name=password]").send_keys("demo");
    a.find("#login button[type=submit]").click();
    let who = a.wait_for("header .who b", WAIT);
    assert_eq!(who.text(), "demo");
    live_on(&a, "notes@1.0.0");
    post(&a, "first, from window A");

    // Window B, logged out: lists the note, and then gets the next one over server-sent events
    // without reloading (the marker set on this document survives).
    let b = driver.session();
    b.goto(&page_url);
    assert!(b.try_find("#post").unwrap().is_none(), "B is logged out");
    assert!(listed(&b).contains(&"first, from window A".to_owned()));
    live_on(&b, "notes@1.0.0");
    b.execute("window.sameDocument = true; return null", &[]);
    post(&a, "second, live to window B");
    shows_note(&b, "second, live to window B");

    // Swap to 2.0.0 under load, both windows open.
    let load = Load::start(host.url("/notes/api/notes?limit=5"), 3);
    let name = host.module_file(0).file_name().unwrap().to_owned();
    host.drop_module(&v2, name.to_str().unwrap());
    eventually(Duration::from_secs(30), "notes@2.0.0 active", async || {
        let s = status(&host).await;
        (support::app(&s, "notes")["active"] == "2.0.0").then_some(())
    })
    .await;

    // B's stream ended with v1's drain and reconnected to v2, which B now shows.
    live_on(&b, "notes@2.0.0");
    live_on(&a, "notes@2.0.0");
    let samples = load.stop().await;
    assert_served(&samples, 10);

    // With 1.0.0 retired (its SQLite connections closed), 2.0.0 keeps a sound database under
    // concurrent posts and listings.
    host.wait_log(Duration::from_secs(30), |line| {
        line["message"] == "retired and unmapped" && line["version"] == "1.0.0"
    });
    let burst = burst(&a, 12);
    let statuses = burst["statuses"].as_array().cloned().unwrap_or_default();
    assert!(
        statuses.len() == 24
            && statuses.iter().all(|s| s == 200 || s == 201)
            && (0..12).all(|i| burst["texts"]
                .as_array()
                .is_some_and(|t| t.contains(&json!(format!("burst {i}"))))),
        "concurrent posts and listings on 2.0.0 after 1.0.0 retired: {burst}"
    );

    // A's session and page (rendered by v1) still post, now to v2; B gets the note live.
    post(&a, "third, after the swap");
    shows_note(&b, "third, after the swap");
    assert_eq!(
        b.execute("return window.sameDocument === true", &[]),
        true,
        "B was never reloaded"
    );

    // The asset URLs both pages were built with still load, and apply. 1.0.0 is retired by now,
    // so 2.0.0's files answer them; that an old page gets the old version's own files while
    // that version is still loaded is asserted in `assets.rs`.
    for (window, page) in [("A", &a), ("B", &b)] {
        let assets = assets(page);
        assert_eq!(
            (&assets["css"], &assets["js"], &assets["rules"]),
            (&json!(200), &json!(200), &json!(true)),
            "window {window}'s assets after the swap: {assets}"
        );
    }

    // Reloaded, A is rendered by v2: its version, its form with tags, its assets.
    a.refresh();
    live_on(&a, "notes@2.0.0");
    a.wait_for("#post input[name=tags]", WAIT);
    assert_eq!(fetched_version(&a, "/notes/"), "notes@2.0.0");
    let assets = assets(&a);
    assert_eq!(
        (&assets["css"], &assets["js"], &assets["rules"]),
        (&json!(200), &json!(200), &json!(true)),
        "window A's assets from v2: {assets}"
    );
    let listed = listed(&a);
    for text in [
        "third, after the swap",
        "second, live to window B",
        "first, from window A",
    ] {
        assert!(listed.contains(&text.to_owned()), "{text:?} in {listed:?}");
    }

    // What B looks like now, for a person to check.
    let png = b.screenshot();
    assert!(
        png.len() > 8 && png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "a PNG screenshot ({} bytes)",
        png.len()
    );
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("notes_browser_window_b.png");
    std::fs::write(&shot, &png).unwrap();
    println!("window B after the swap: {}", shot.display());

    b.close().unwrap();
    a.close().unwrap();
}
