//! Static files embedded in a module, served by a real host without calling the module:
//! content types, revalidation, ranges, precompressed variants, and each version serving its
//! own files during a swap.

mod support;

use std::time::Duration;

use support::http::Http;
use support::{GUARD_OFF, HostProc, eventually, module};

fn site(version: &str) -> std::path::PathBuf {
    module("fixture-assets", &[("BATON_APP_VERSION", version)])
}

/// The stylesheet URL the page of the version serving `/site/` links.
async fn linked_css(host: &HostProc) -> String {
    let page = Http::new().get(&host.url("/site/")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let start = page.body.find("href=\"").unwrap() + 6;
    let end = start + page.body[start..].find('"').unwrap();
    page.body[start..end].to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_files_are_served_with_validators_ranges_and_variants() {
    let host = HostProc::start_with_config(&[site("1.0.0")], GUARD_OFF);
    let http = Http::new();

    let css = http.get(&host.url("/site/static/app.css")).await;
    assert_eq!(css.status, 200);
    assert!(css.body.starts_with("/* version 1.0.0 */"), "{}", css.body);
    assert_eq!(css.header("content-type"), "text/css; charset=utf-8");
    assert_eq!(css.header("cache-control"), "no-cache");
    assert_eq!(css.header("x-baton-version"), "site@1.0.0");
    let etag = css.header("etag").to_owned();
    assert!(etag.starts_with('"'), "{etag}");
    assert!(!css.header("last-modified").is_empty());
    assert_eq!(
        css.header("content-length"),
        css.body.len().to_string().as_str()
    );

    // Revalidation: the same ETag is a 304 without a body.
    let again = http
        .get_with(
            &host.url("/site/static/app.css"),
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    // A range of the binary file.
    let part = http
        .get_with(
            &host.url("/site/static/big.bin"),
            &[("range", "bytes=100-199")],
        )
        .await;
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), "bytes 100-199/102400");
    assert_eq!(part.header("content-length"), "100");
    let outside = http
        .get_with(
            &host.url("/site/static/big.bin"),
            &[("range", "bytes=200000-")],
        )
        .await;
    assert_eq!(outside.status, 416);

    // The shipped gzip variant for a client that takes gzip.
    let gz = http
        .get_with(
            &host.url("/site/static/app.css"),
            &[("accept-encoding", "gzip")],
        )
        .await;
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding"), "gzip");
    assert_eq!(gz.header("content-type"), "text/css; charset=utf-8");
    assert!(
        gz.header("vary")
            .to_ascii_lowercase()
            .contains("accept-encoding")
    );

    // Brotli, which the app did not ship: made once at load, with its own strong ETag.
    let br = http
        .get_with(
            &host.url("/site/static/app.css"),
            &[("accept-encoding", "br")],
        )
        .await;
    assert_eq!(br.header("content-encoding"), "br");
    assert!(br.header("etag").starts_with('"'), "{}", br.header("etag"));

    // Files in subfolders and single files; other methods; paths that are not files.
    let js = http.get(&host.url("/site/static/js/app.js")).await;
    assert_eq!(js.status, 200);
    assert!(
        js.header("content-type").starts_with("text/javascript"),
        "{}",
        js.header("content-type")
    );
    assert_eq!(http.get(&host.url("/site/robots.txt")).await.status, 200);
    let post = http
        .send("POST", &host.url("/site/static/app.css"), &[], "x")
        .await
        .unwrap();
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), "GET, HEAD");
    for path in [
        "/site/static/",
        "/site/static/../static/app.css",
        "/site/static/%2e%2e/static/app.css",
        "/site/static/js%2Fapp.js",
        "/site/static/nothing.css",
    ] {
        let r = http.get(&host.url(path)).await;
        assert_eq!(r.status, 404, "{path}: {}", r.body);
    }

    // The page links its files by content hash; such a URL is cached for good.
    let url = linked_css(&host).await;
    assert!(url.starts_with("/site/static/app.css?v="), "{url}");
    let pinned = http.get(&host.url(&url)).await;
    assert_eq!(pinned.status, 200);
    assert_eq!(
        pinned.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_version_serves_its_own_files_during_a_swap() {
    // The guard keeps 1.0.0 loaded (standby) for its window after the switch.
    let host = HostProc::start_with_config(
        &[site("1.0.0")],
        "[guard]\nwindow_secs = 60\n[assets]\ncache_control = \"public, max-age=60\"\n",
    );
    let http = Http::new();
    let old_url = linked_css(&host).await;

    host.drop_module(&site("2.0.0"), "site.so");
    eventually(Duration::from_secs(60), "2.0.0 active", async || {
        let r = http.get(&host.url("/site/")).await;
        (r.version() == "site@2.0.0").then_some(())
    })
    .await;
    let new_url = linked_css(&host).await;
    assert_ne!(old_url, new_url, "the two versions' stylesheets differ");

    // The old page's link still gets the old stylesheet; the new page's, the new one.
    let old = http.get(&host.url(&old_url)).await;
    assert!(old.body.starts_with("/* version 1.0.0 */"), "{}", old.body);
    let new = http.get(&host.url(&new_url)).await;
    assert!(new.body.starts_with("/* version 2.0.0 */"), "{}", new.body);
    // An unversioned URL is the active version's, with the configured Cache-Control.
    let plain = http.get(&host.url("/site/static/app.css")).await;
    assert!(plain.body.starts_with("/* version 2.0.0 */"));
    assert_eq!(plain.header("cache-control"), "public, max-age=60");
}
