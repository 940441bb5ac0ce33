use http::HeaderName;

use super::*;

const CSS: &str = "body { color: red }\n";
const CSS_HASH: &str = "00112233aabbccdd";

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn entry(path: &str, bytes: impl Into<Bytes>, hash: &str) -> AssetEntry {
    AssetEntry {
        path: path.to_owned(),
        bytes: bytes.into(),
        hash: hash.to_owned(),
        modified: None,
    }
}

fn table(entries: Vec<AssetEntry>) -> AssetTable {
    AssetTable::new(entries, &AssetsConfig::default())
}

/// A site with a stylesheet (and its brotli and gzip siblings), a script without variants, a
/// ten-byte text file, and a file with a space in its name.
fn site() -> AssetTable {
    let mut css = entry("/static/app.css", CSS, CSS_HASH);
    css.modified = Some(at(1_700_000_000) + Duration::from_millis(250));
    table(vec![
        css,
        entry("/static/app.css.br", &b"BROTLI"[..], "b0b0b0b0b0b0b0b0"),
        entry("/static/app.css.gz", &b"GZIPPED!"[..], "9a9a9a9a9a9a9a9a"),
        entry("/static/app.js", "console.log(1)", "1111222233334444"),
        entry("/digits.txt", "0123456789", "d161d161d161d161"),
        entry("/static/my file.css", "p {}", "5555666677778888"),
    ])
}

fn request(
    table: &AssetTable,
    method: Method,
    path: &str,
    query: Option<&str>,
    headers: &[(HeaderName, &str)],
) -> Option<Response<Bytes>> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(name.clone(), HeaderValue::from_str(value).unwrap());
    }
    table.serve(&method, path, query, &map)
}

fn get(table: &AssetTable, path: &str, headers: &[(HeaderName, &str)]) -> Response<Bytes> {
    request(table, Method::GET, path, None, headers).expect("an asset")
}

/// The whole body of a response.
fn body(response: Response<Bytes>) -> Bytes {
    response.into_body()
}

fn header(response: &Response<Bytes>, name: HeaderName) -> Option<&str> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("visible ASCII"))
}

fn content_length(response: &Response<Bytes>) -> u64 {
    header(response, header::CONTENT_LENGTH)
        .expect("Content-Length")
        .parse()
        .unwrap()
}

#[test]
fn a_get_answers_the_file_with_its_headers() {
    let site = site();
    let response = get(&site, "/static/app.js", &[]);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, header::CONTENT_TYPE),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        header(&response, header::ETAG),
        Some("\"1111222233334444\"")
    );
    assert_eq!(header(&response, header::CACHE_CONTROL), Some("no-cache"));
    assert_eq!(header(&response, header::ACCEPT_RANGES), Some("bytes"));
    assert_eq!(
        header(&response, header::X_CONTENT_TYPE_OPTIONS),
        Some("nosniff")
    );
    assert_eq!(header(&response, header::LAST_MODIFIED), None, "not known");
    assert_eq!(header(&response, header::VARY), None, "no variants");
    assert_eq!(header(&response, header::CONTENT_ENCODING), None);
    assert_eq!(content_length(&response), 14);
    assert_eq!(body(response), "console.log(1)");
}

#[test]
fn last_modified_is_the_embedded_time_in_whole_seconds() {
    let response = get(&site(), "/static/app.css", &[]);
    assert_eq!(
        header(&response, header::LAST_MODIFIED),
        Some("Tue, 14 Nov 2023 22:13:20 GMT")
    );
    let before_1970 = table(vec![AssetEntry {
        modified: Some(UNIX_EPOCH - Duration::from_secs(5)),
        ..entry("/old.txt", "x", "01")
    }]);
    assert_eq!(
        header(&get(&before_1970, "/old.txt", &[]), header::LAST_MODIFIED),
        None
    );
}

#[test]
fn content_types_follow_the_extension() {
    let paths = [
        ("/a.css", "text/css; charset=utf-8"),
        ("/a.js", "text/javascript; charset=utf-8"),
        ("/a.mjs", "application/javascript; charset=utf-8"),
        ("/a.json", "application/json; charset=utf-8"),
        (
            "/site.webmanifest",
            "application/manifest+json; charset=utf-8",
        ),
        ("/a.html", "text/html; charset=utf-8"),
        ("/a.svg", "image/svg+xml"),
        ("/a.png", "image/png"),
        ("/a.woff2", "font/woff2"),
        ("/a.wasm", "application/wasm"),
        ("/a.CSS", "text/css; charset=utf-8"),
        ("/a.unknownext", "application/octet-stream"),
        ("/LICENSE", "application/octet-stream"),
    ];
    let table = table(paths.iter().map(|(p, _)| entry(p, "x", "ab")).collect());
    for (path, expected) in paths {
        let response = get(&table, path, &[]);
        assert_eq!(
            header(&response, header::CONTENT_TYPE),
            Some(expected),
            "{path}"
        );
        assert_eq!(
            header(&response, header::X_CONTENT_TYPE_OPTIONS),
            Some("nosniff")
        );
    }
}

#[test]
fn head_has_the_headers_of_get_without_the_body() {
    let site = site();
    let response = request(&site, Method::HEAD, "/static/app.js", None, &[]).unwrap();
    let got = get(&site, "/static/app.js", &[]);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers(), got.headers());
    assert_eq!(content_length(&response), 14);
    assert_eq!(response.body().len(), 0);
    let ranged = request(
        &site,
        Method::HEAD,
        "/digits.txt",
        None,
        &[(header::RANGE, "bytes=0-1")],
    )
    .unwrap();
    assert_eq!(ranged.status(), StatusCode::OK, "Range is for GET only");
    assert_eq!(content_length(&ranged), 10);
}

#[test]
fn other_methods_on_an_asset_get_405() {
    let site = site();
    for method in [
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::from_bytes(b"BREW").unwrap(),
    ] {
        let response = request(&site, method.clone(), "/static/app.js", None, &[]).unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
        assert_eq!(header(&response, header::ALLOW), Some("GET, HEAD"));
        assert_eq!(content_length(&response), 0);
        assert!(
            request(&site, method, "/api/orders", None, &[]).is_none(),
            "not an asset: the app answers"
        );
    }
    let with_variants = request(&site, Method::POST, "/static/app.css", None, &[]).unwrap();
    assert_eq!(
        header(&with_variants, header::VARY),
        Some("Accept-Encoding")
    );
}

#[test]
fn paths_that_are_not_files_go_to_the_app() {
    let site = site();
    for path in [
        "/",
        "/static",
        "/static/",
        "/static/app.css/",
        "/static/app",
        "/Static/app.css",
        "/static/./app.css",
        "/static//app.css",
        "/x/../static/app.css",
        "/static/%2e%2e/static/app.css",
        "/static%2Fapp.css",
        "/static%2fapp.css",
        "%2Fstatic/app.css",
        "/static\\app.css",
        "/static/%5Capp.css",
        "/static/app.css%00",
        "/static/app.css\0",
        "/static/app%2ecss/..",
        "static/app.css",
        "",
    ] {
        assert!(!site.contains(path), "{path:?}");
        assert!(
            request(&site, Method::GET, path, None, &[]).is_none(),
            "{path:?}"
        );
    }
}

#[test]
fn percent_encoded_paths_are_decoded_once() {
    let site = site();
    assert!(site.contains("/static/my%20file.css"));
    assert!(site.contains("/static/my file.css"));
    assert!(site.contains("/static/app%2Ecss"));
    assert!(!site.contains("/static/my%2520file.css"));
    assert_eq!(body(get(&site, "/static/my%20file.css", &[])), "p {}");
}

#[test]
fn entries_with_unclean_paths_or_twice_listed_are_left_out() {
    let kept = table(vec![
        entry("/ok.css", "first", "01"),
        entry("/ok.css", "second", "02"),
        entry("relative.css", "x", "03"),
        entry("/a/../b.css", "x", "04"),
        entry("/a//b.css", "x", "05"),
        entry("/dir/", "x", "06"),
        entry("/a\\b.css", "x", "07"),
        entry("/nul\0.css", "x", "08"),
    ]);
    assert_eq!((kept.len(), kept.bytes()), (1, 5));
    assert!(!kept.is_empty());
    assert_eq!(body(get(&kept, "/ok.css", &[])), "first");
    assert!(!kept.contains("/b.css"));
    assert!(table(Vec::new()).is_empty());
}

#[test]
fn a_hash_unusable_in_an_etag_is_computed_from_the_bytes() {
    for bad in ["", "a\"b", "with space", "é", &"f".repeat(200)] {
        let table = table(vec![entry("/a.txt", "hello", bad)]);
        let response = get(&table, "/a.txt", &[]);
        let expected = format!("\"{:016x}\"", xxhash_rust::xxh3::xxh3_64(b"hello"));
        assert_eq!(
            header(&response, header::ETAG),
            Some(expected.as_str()),
            "{bad:?}"
        );
    }
}

#[test]
fn len_and_bytes_count_every_file() {
    let site = site();
    assert_eq!(site.len(), 6);
    let expected = CSS.len() + "BROTLI".len() + "GZIPPED!".len() + 14 + 10 + 4;
    assert_eq!(site.bytes(), expected as u64);
}

#[test]
fn if_none_match_answers_304_with_the_cache_headers() {
    let site = site();
    for value in [
        "\"00112233aabbccdd\"",
        "W/\"00112233aabbccdd\"",
        "\"nope\", \"00112233aabbccdd\"",
        "*",
    ] {
        let response = get(&site, "/static/app.css", &[(header::IF_NONE_MATCH, value)]);
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{value}");
        assert_eq!(
            header(&response, header::ETAG),
            Some("\"00112233aabbccdd\"")
        );
        assert_eq!(header(&response, header::CACHE_CONTROL), Some("no-cache"));
        assert_eq!(header(&response, header::VARY), Some("Accept-Encoding"));
        assert!(header(&response, header::LAST_MODIFIED).is_some());
        assert_eq!(header(&response, header::CONTENT_TYPE), None);
        assert_eq!(header(&response, header::CONTENT_LENGTH), None);
        assert!(body(response).is_empty());
    }
    let head = request(
        &site,
        Method::HEAD,
        "/static/app.js",
        None,
        &[(header::IF_NONE_MATCH, "\"1111222233334444\"")],
    )
    .unwrap();
    assert_eq!(head.status(), StatusCode::NOT_MODIFIED);
    for miss in [
        "\"00112233aabbccdc\"",
        "00112233aabbccdd",
        "\"\"",
        "W/",
        ",",
    ] {
        let response = get(&site, "/static/app.css", &[(header::IF_NONE_MATCH, miss)]);
        assert_eq!(response.status(), StatusCode::OK, "{miss:?}");
        assert_eq!(body(response), CSS);
    }
}

#[test]
fn if_modified_since_counts_only_without_if_none_match() {
    let site = site();
    let same = "Tue, 14 Nov 2023 22:13:20 GMT";
    let before = "Tue, 14 Nov 2023 22:13:19 GMT";
    let check = |headers: &[(HeaderName, &str)]| get(&site, "/static/app.css", headers).status();
    assert_eq!(
        check(&[(header::IF_MODIFIED_SINCE, same)]),
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(
        check(&[(header::IF_MODIFIED_SINCE, "Wed, 15 Nov 2023 00:00:00 GMT")]),
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(
        check(&[(header::IF_MODIFIED_SINCE, before)]),
        StatusCode::OK
    );
    assert_eq!(
        check(&[(header::IF_MODIFIED_SINCE, "garbage")]),
        StatusCode::OK
    );
    assert_eq!(
        check(&[
            (header::IF_NONE_MATCH, "\"stale\""),
            (header::IF_MODIFIED_SINCE, same)
        ]),
        StatusCode::OK,
        "If-None-Match takes precedence"
    );
    assert_eq!(
        get(
            &site,
            "/static/app.js",
            &[(header::IF_MODIFIED_SINCE, same)]
        )
        .status(),
        StatusCode::OK,
        "no Last-Modified, nothing to compare"
    );
}

#[test]
fn if_match_and_if_unmodified_since_fail_with_412() {
    let site = site();
    let failed = get(&site, "/static/app.js", &[(header::IF_MATCH, "\"other\"")]);
    assert_eq!(failed.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(content_length(&failed), 0);
    let passed = get(
        &site,
        "/static/app.js",
        &[(header::IF_MATCH, "\"1111222233334444\"")],
    );
    assert_eq!(passed.status(), StatusCode::OK);
    let stale = get(
        &site,
        "/static/app.css",
        &[(header::IF_UNMODIFIED_SINCE, "Mon, 13 Nov 2023 00:00:00 GMT")],
    );
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
}

fn range(table: &AssetTable, path: &str, value: &str) -> Response<Bytes> {
    get(table, path, &[(header::RANGE, value)])
}

#[test]
fn a_single_range_answers_206() {
    let site = site();
    for (value, content_range, expected) in [
        ("bytes=0-3", "bytes 0-3/10", "0123"),
        ("bytes=2-2", "bytes 2-2/10", "2"),
        ("bytes=7-", "bytes 7-9/10", "789"),
        ("bytes=-4", "bytes 6-9/10", "6789"),
        ("bytes=-100", "bytes 0-9/10", "0123456789"),
        ("bytes=5-1000", "bytes 5-9/10", "56789"),
        ("bytes=0-1,", "bytes 0-1/10", "01"),
    ] {
        let response = range(&site, "/digits.txt", value);
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{value}");
        assert_eq!(
            header(&response, header::CONTENT_RANGE),
            Some(content_range)
        );
        assert_eq!(content_length(&response), expected.len() as u64);
        assert_eq!(
            header(&response, header::CONTENT_TYPE),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(
            header(&response, header::ETAG),
            Some("\"d161d161d161d161\"")
        );
        assert_eq!(body(response), expected);
    }
}

#[test]
fn an_unsatisfiable_range_answers_416() {
    let site = site();
    let empty = table(vec![entry("/empty.txt", "", "e0")]);
    for (table, path, value, len) in [
        (&site, "/digits.txt", "bytes=10-", 10),
        (&site, "/digits.txt", "bytes=10-20", 10),
        (&site, "/digits.txt", "bytes=-0", 10),
        (&empty, "/empty.txt", "bytes=0-", 0),
        (&empty, "/empty.txt", "bytes=-1", 0),
    ] {
        let response = range(table, path, value);
        assert_eq!(
            response.status(),
            StatusCode::RANGE_NOT_SATISFIABLE,
            "{value}"
        );
        let expected = format!("bytes */{len}");
        assert_eq!(
            header(&response, header::CONTENT_RANGE),
            Some(expected.as_str())
        );
        assert_eq!(content_length(&response), 0);
        assert!(body(response).is_empty());
    }
    let whole = get(&empty, "/empty.txt", &[]);
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(content_length(&whole), 0);
}

#[test]
fn several_or_malformed_ranges_answer_the_whole_file() {
    let site = site();
    for value in [
        "bytes=0-1,3-4",
        "bytes=0-1, 5-",
        "bytes=5-2",
        "bytes=abc",
        "bytes=",
        "bytes=--1",
        "lines=0-1",
        "bytes=0-99999999999999999999999",
        "bytes 0-1",
        "\u{7f}",
    ] {
        let Ok(value) = HeaderValue::from_str(value) else {
            continue;
        };
        let mut map = HeaderMap::new();
        map.insert(header::RANGE, value.clone());
        let response = site.serve(&Method::GET, "/digits.txt", None, &map).unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{value:?}");
        assert_eq!(header(&response, header::CONTENT_RANGE), None);
        assert_eq!(header(&response, header::ACCEPT_RANGES), Some("bytes"));
        assert_eq!(content_length(&response), 10);
        assert_eq!(body(response), "0123456789");
    }
    let mut twice = HeaderMap::new();
    twice.append(header::RANGE, HeaderValue::from_static("bytes=0-1"));
    twice.append(header::RANGE, HeaderValue::from_static("bytes=2-3"));
    let response = site
        .serve(&Method::GET, "/digits.txt", None, &twice)
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "two Range lines");
}

#[test]
fn if_range_lets_a_range_through_only_for_the_current_file() {
    let site = site();
    let ranged = |if_range: &str| {
        get(
            &site,
            "/static/app.css",
            &[(header::RANGE, "bytes=0-3"), (header::IF_RANGE, if_range)],
        )
    };
    let current = ranged("\"00112233aabbccdd\"");
    assert_eq!(current.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(body(current), "body");
    let by_date = ranged("Tue, 14 Nov 2023 22:13:20 GMT");
    assert_eq!(by_date.status(), StatusCode::PARTIAL_CONTENT);
    for stale in [
        "\"ffffffffffffffff\"",
        "W/\"00112233aabbccdd\"",
        "Tue, 14 Nov 2023 22:13:21 GMT",
        "not a validator",
    ] {
        let response = ranged(stale);
        assert_eq!(response.status(), StatusCode::OK, "{stale}");
        assert_eq!(content_length(&response), CSS.len() as u64);
        assert_eq!(body(response), CSS);
    }
}

#[test]
fn precompressed_variants_are_negotiated() {
    let site = site();
    for (accept, encoding, etag, expected) in [
        (
            "gzip, deflate, br, zstd",
            Some("br"),
            "\"b0b0b0b0b0b0b0b0-br\"",
            "BROTLI",
        ),
        (
            "gzip",
            Some("gzip"),
            "\"9a9a9a9a9a9a9a9a-gzip\"",
            "GZIPPED!",
        ),
        (
            "br;q=0, gzip",
            Some("gzip"),
            "\"9a9a9a9a9a9a9a9a-gzip\"",
            "GZIPPED!",
        ),
        (
            "br;q=0.1, gzip;q=0.9",
            Some("gzip"),
            "\"9a9a9a9a9a9a9a9a-gzip\"",
            "GZIPPED!",
        ),
        ("br;q=0, gzip;q=0", None, "\"00112233aabbccdd\"", CSS),
        ("identity", None, "\"00112233aabbccdd\"", CSS),
        ("deflate", None, "\"00112233aabbccdd\"", CSS),
    ] {
        let response = get(
            &site,
            "/static/app.css",
            &[(header::ACCEPT_ENCODING, accept)],
        );
        assert_eq!(response.status(), StatusCode::OK, "{accept}");
        assert_eq!(
            header(&response, header::CONTENT_ENCODING),
            encoding,
            "{accept}"
        );
        assert_eq!(header(&response, header::ETAG), Some(etag), "{accept}");
        assert_eq!(
            header(&response, header::CONTENT_TYPE),
            Some("text/css; charset=utf-8")
        );
        assert_eq!(header(&response, header::VARY), Some("Accept-Encoding"));
        assert_eq!(content_length(&response), expected.len() as u64);
        assert_eq!(body(response), expected);
    }
    let identity = get(&site, "/static/app.css", &[]);
    assert_eq!(header(&identity, header::VARY), Some("Accept-Encoding"));
    assert_eq!(header(&identity, header::CONTENT_ENCODING), None);
}

#[test]
fn a_variant_revalidates_with_its_own_etag() {
    let site = site();
    let br = [
        (header::ACCEPT_ENCODING, "br"),
        (header::IF_NONE_MATCH, "\"b0b0b0b0b0b0b0b0-br\""),
    ];
    let response = get(&site, "/static/app.css", &br);
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(
        header(&response, header::ETAG),
        Some("\"b0b0b0b0b0b0b0b0-br\"")
    );
    assert_eq!(header(&response, header::VARY), Some("Accept-Encoding"));
    let identity_tag = [
        (header::ACCEPT_ENCODING, "br"),
        (header::IF_NONE_MATCH, "\"00112233aabbccdd\""),
    ];
    let response = get(&site, "/static/app.css", &identity_tag);
    assert_eq!(response.status(), StatusCode::OK, "another representation");
    assert_eq!(body(response), "BROTLI");
}

#[test]
fn a_range_is_served_from_the_identity_file() {
    let site = site();
    let response = get(
        &site,
        "/static/app.css",
        &[
            (header::ACCEPT_ENCODING, "br, gzip"),
            (header::RANGE, "bytes=0-3"),
        ],
    );
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&response, header::CONTENT_ENCODING), None);
    assert_eq!(
        header(&response, header::ETAG),
        Some("\"00112233aabbccdd\"")
    );
    assert_eq!(header(&response, header::VARY), Some("Accept-Encoding"));
    let len = CSS.len();
    let expected = format!("bytes 0-3/{len}");
    assert_eq!(
        header(&response, header::CONTENT_RANGE),
        Some(expected.as_str())
    );
    assert_eq!(body(response), "body");
}

#[test]
fn variant_files_stay_directly_requestable() {
    let site = site();
    let response = get(
        &site,
        "/static/app.css.gz",
        &[(header::ACCEPT_ENCODING, "gzip")],
    );
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, header::CONTENT_ENCODING), None);
    assert_eq!(
        header(&response, header::CONTENT_TYPE),
        Some("application/gzip")
    );
    assert_eq!(
        header(&response, header::ETAG),
        Some("\"9a9a9a9a9a9a9a9a\"")
    );
    assert_eq!(body(response), "GZIPPED!");
    let br = get(&site, "/static/app.css.br", &[]);
    assert_eq!(body(br), "BROTLI");
}

#[test]
fn a_content_addressed_url_is_immutable() {
    let site = site();
    let cache = |path: &str, query: Option<&str>, headers: &[(HeaderName, &str)]| {
        let response = request(&site, Method::GET, path, query, headers).unwrap();
        header(&response, header::CACHE_CONTROL).map(str::to_owned)
    };
    let immutable = Some(IMMUTABLE.to_owned());
    assert_eq!(
        cache("/static/app.css", Some("v=00112233aabbccdd"), &[]),
        immutable
    );
    assert_eq!(
        cache("/static/app.css", Some("x=1&v=00112233AABBCCDD"), &[]),
        immutable
    );
    assert_eq!(
        cache(
            "/static/app.css",
            Some("v=00112233aabbccdd"),
            &[(header::ACCEPT_ENCODING, "br")]
        ),
        immutable,
        "the variant of a content-addressed file is too"
    );
    let no_cache = Some("no-cache".to_owned());
    assert_eq!(cache("/static/app.css", Some("v=ffff"), &[]), no_cache);
    assert_eq!(cache("/static/app.css", Some("v="), &[]), no_cache);
    assert_eq!(
        cache("/static/app.css", Some("version=00112233aabbccdd"), &[]),
        no_cache
    );
    assert_eq!(cache("/static/app.css", None, &[]), no_cache);
    let not_modified = request(
        &site,
        Method::GET,
        "/static/app.css",
        Some("v=00112233aabbccdd"),
        &[(header::IF_NONE_MATCH, "\"00112233aabbccdd\"")],
    )
    .unwrap();
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(
        header(&not_modified, header::CACHE_CONTROL),
        Some(IMMUTABLE)
    );
}

#[test]
fn cache_control_comes_from_the_config() {
    let config = AssetsConfig {
        cache_control: "public, max-age=600".to_owned(),
    };
    let table = AssetTable::new(vec![entry("/a.css", "x", "01")], &config);
    let response = get(&table, "/a.css", &[]);
    assert_eq!(
        header(&response, header::CACHE_CONTROL),
        Some("public, max-age=600")
    );
}

fn versioned(hash: &str, bytes: &'static str) -> AssetTable {
    table(vec![
        entry("/static/app.css", bytes, hash),
        entry(&format!("/only-{hash}.css"), bytes, hash),
    ])
}

#[test]
fn find_version_picks_the_table_a_versioned_url_names() {
    let new = versioned("2222", "new");
    let old = versioned("1111", "old");
    let older = versioned("0000", "older");
    let tables = || [&new, &old, &older].into_iter();
    let pick = |path: &str, query: Option<&str>| {
        find_version(tables(), path, query).map(|t| body(get(t, path, &[])))
    };
    assert_eq!(pick("/static/app.css", None).as_deref(), Some(&b"new"[..]));
    assert_eq!(
        pick("/static/app.css", Some("v=2222")).as_deref(),
        Some(&b"new"[..])
    );
    assert_eq!(
        pick("/static/app.css", Some("v=1111")).as_deref(),
        Some(&b"old"[..])
    );
    assert_eq!(
        pick("/static/app.css", Some("v=0000")).as_deref(),
        Some(&b"older"[..])
    );
    assert_eq!(
        pick("/static/app.css", Some("v=9999")).as_deref(),
        Some(&b"new"[..]),
        "an unknown hash is served normally by the active version"
    );
    assert_eq!(
        pick("/only-1111.css", Some("v=1111")).as_deref(),
        Some(&b"old"[..]),
        "a file the new version dropped, for a page of the old one"
    );
    assert_eq!(pick("/only-1111.css", None), None);
    assert_eq!(pick("/only-1111.css", Some("v=0000")), None);
    assert_eq!(pick("/static/", Some("v=1111")), None);
    assert_eq!(pick("/static/%2e%2e/x", None), None);
    assert!(find_version(std::iter::empty(), "/static/app.css", None).is_none());
    let served = find_version(tables(), "/static/app.css", Some("v=1111")).unwrap();
    let response = request(served, Method::GET, "/static/app.css", Some("v=1111"), &[]).unwrap();
    assert_eq!(header(&response, header::CACHE_CONTROL), Some(IMMUTABLE));
}

#[test]
fn hostile_header_values_are_answered_not_panicked_on() {
    let site = site();
    let long = "9".repeat(10_000);
    let many_commas = ",".repeat(10_000);
    let many_tags = "\"x\",".repeat(2_000);
    let values: Vec<String> = vec![
        String::new(),
        " ".into(),
        "\"".into(),
        "W/".into(),
        "W/\"".into(),
        "*, \"x\"".into(),
        format!("bytes={long}-"),
        format!("bytes=-{long}"),
        format!("bytes=0-{long}"),
        format!("bytes={many_commas}"),
        format!("bytes=0-1{many_commas}"),
        many_tags,
        "br;q=".into(),
        "br;q=1.0000".into(),
        "br;;;q=0.5;;".into(),
        ";q=1".into(),
        "=,=;=".into(),
        "Thu, 01 Jan 1970 00:00:00 GMT".into(),
        "Fri, 31 Dec 9999 23:59:59 GMT".into(),
        "Sun, 06 Nov 1994 08:49:37 GMT".into(),
    ];
    let names = [
        header::RANGE,
        header::IF_RANGE,
        header::IF_NONE_MATCH,
        header::IF_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
        header::ACCEPT_ENCODING,
    ];
    for name in &names {
        for value in &values {
            let response = get(&site, "/static/app.css", &[(name.clone(), value)]);
            assert!(response.status().as_u16() < 500, "{name}: {value:?}");
        }
        // Not visible ASCII: read as absent, or as a tag that matches nothing.
        let mut map = HeaderMap::new();
        map.insert(
            name.clone(),
            HeaderValue::from_bytes(b"\xff\xfe bytes=0-1").unwrap(),
        );
        let response = site.serve(&Method::GET, "/digits.txt", None, &map).unwrap();
        let expected = if name == header::IF_MATCH {
            StatusCode::PRECONDITION_FAILED
        } else {
            StatusCode::OK
        };
        assert_eq!(response.status(), expected, "{name}");
    }
}

/// A small xorshift generator, so the random inputs are the same on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A header value built from pieces of real syntax and random bytes.
fn random_value(rng: &mut XorShift) -> Vec<u8> {
    const PIECES: &[&str] = &[
        "bytes",
        "=",
        "-",
        ",",
        " ",
        "0",
        "1",
        "9",
        "10",
        "99999999999999999999",
        "W/",
        "\"",
        "00112233aabbccdd",
        "b0b0b0b0b0b0b0b0-br",
        "*",
        ";",
        "q=",
        "0.5",
        "br",
        "gzip",
        "identity",
        "x-gzip",
        "Tue, 14 Nov 2023 22:13:20 GMT",
        "\t",
        "%",
        "\\",
    ];
    let mut value = Vec::new();
    for _ in 0..rng.below(12) {
        if rng.below(8) == 0 {
            value.push(rng.next() as u8);
        } else {
            value.extend_from_slice(rng.pick(PIECES).as_bytes());
        }
    }
    value
}

#[test]
fn random_requests_never_panic_and_ranges_match_their_bodies() {
    let site = site();
    let methods = [Method::GET, Method::GET, Method::HEAD, Method::POST];
    let names = [
        header::RANGE,
        header::IF_RANGE,
        header::IF_NONE_MATCH,
        header::IF_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
        header::ACCEPT_ENCODING,
    ];
    let paths = [
        "/static/app.css",
        "/static/app.css.br",
        "/digits.txt",
        "/static/my%20file.css",
        "/static/%2e%2e/app.css",
        "/static/",
        "/nope",
    ];
    let queries = [
        None,
        Some("v=00112233aabbccdd"),
        Some("v=%ff&v"),
        Some("&&=="),
    ];
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut partial = 0;
    for round in 0..20_000 {
        let method = rng.pick(&methods);
        let path = rng.pick(&paths);
        let query = *rng.pick(&queries);
        let mut headers = HeaderMap::new();
        for _ in 0..rng.below(4) {
            if let Ok(value) = HeaderValue::from_bytes(&random_value(&mut rng)) {
                headers.append(rng.pick(&names).clone(), value);
            }
        }
        if rng.below(3) == 0 {
            let (a, b) = (rng.below(40), rng.below(40));
            let value = match rng.below(3) {
                0 => format!("bytes={a}-{b}"),
                1 => format!("bytes={a}-"),
                _ => format!("bytes=-{b}"),
            };
            headers.insert(header::RANGE, HeaderValue::from_str(&value).unwrap());
        }
        let Some(response) = site.serve(method, path, query, &headers) else {
            continue;
        };
        let status = response.status();
        let context = format!("round {round}: {method} {path} {headers:?} -> {status}");
        if *path == "/static/app.css" {
            assert_eq!(
                header(&response, header::VARY),
                Some("Accept-Encoding"),
                "{context}"
            );
        }
        match status {
            StatusCode::PARTIAL_CONTENT => {
                partial += 1;
                let range = header(&response, header::CONTENT_RANGE).expect(&context);
                let (span, total) = range
                    .strip_prefix("bytes ")
                    .and_then(|r| r.split_once('/'))
                    .expect(&context);
                let (first, last) = span.split_once('-').expect(&context);
                let (first, last, total): (u64, u64, u64) = (
                    first.parse().unwrap(),
                    last.parse().unwrap(),
                    total.parse().unwrap(),
                );
                assert!(first <= last && last < total, "{context}");
                let length = content_length(&response);
                let body = body(response);
                assert_eq!(body.len() as u64, last - first + 1, "{context}");
                assert_eq!(length, body.len() as u64, "{context}");
            }
            StatusCode::OK => {
                let length = content_length(&response);
                let is_head = method == Method::HEAD;
                let body = body(response);
                let expected = if is_head { 0 } else { length };
                assert_eq!(body.len() as u64, expected, "{context}");
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let range = header(&response, header::CONTENT_RANGE).expect(&context);
                assert!(range.starts_with("bytes */"), "{context}");
                assert_eq!(content_length(&response), 0, "{context}");
            }
            StatusCode::NOT_MODIFIED
            | StatusCode::PRECONDITION_FAILED
            | StatusCode::METHOD_NOT_ALLOWED => {
                assert!(body(response).is_empty(), "{context}");
            }
            other => panic!("unexpected {other}: {context}"),
        }
    }
    assert!(partial > 100, "the loop reaches ranges: {partial}");
}

#[test]
fn compressible_files_without_shipped_variants_are_compressed_once_at_load() {
    let css = "body { color: red }\n".repeat(100);
    let compression = CompressionConfig::default();
    let table = table(vec![
        entry("/big.css", css.clone(), "aa11"),
        entry("/small.css", "a{}", "bb22"),
        entry("/logo.png", vec![7u8; 4096], "cc33"),
    ])
    .precompressed(&compression);

    let br = get(&table, "/big.css", &[(http::header::ACCEPT_ENCODING, "br")]);
    assert_eq!(br.status(), StatusCode::OK);
    assert_eq!(header(&br, http::header::CONTENT_ENCODING), Some("br"));
    assert_eq!(
        header(&br, http::header::ETAG),
        Some("\"aa11-br\""),
        "strong"
    );
    let mut decoded = Vec::new();
    brotli::BrotliDecompress(&mut &body(br)[..], &mut decoded).unwrap();
    assert_eq!(decoded, css.as_bytes());
    let gz = get(
        &table,
        "/big.css",
        &[(http::header::ACCEPT_ENCODING, "gzip")],
    );
    assert_eq!(header(&gz, http::header::CONTENT_ENCODING), Some("gzip"));
    // A HEAD says what a GET would send.
    let head = request(
        &table,
        Method::HEAD,
        "/big.css",
        None,
        &[(http::header::ACCEPT_ENCODING, "br")],
    )
    .unwrap();
    assert_eq!(header(&head, http::header::CONTENT_ENCODING), Some("br"));

    // Small files and types that are compressed already stay as they are.
    for path in ["/small.css", "/logo.png"] {
        let r = get(&table, path, &[(http::header::ACCEPT_ENCODING, "br, gzip")]);
        assert_eq!(header(&r, http::header::CONTENT_ENCODING), None, "{path}");
    }
    // With compression off nothing is made.
    let off = CompressionConfig {
        enabled: false,
        ..CompressionConfig::default()
    };
    let plain = super::AssetTable::new(
        vec![entry("/big.css", css, "aa11")],
        &AssetsConfig::default(),
    )
    .precompressed(&off);
    let r = get(&plain, "/big.css", &[(http::header::ACCEPT_ENCODING, "br")]);
    assert_eq!(header(&r, http::header::CONTENT_ENCODING), None);
}
