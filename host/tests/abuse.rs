//! The host's edges under abuse, against a real `baton` process over real sockets: slow and
//! idle clients, connection floods at a low open-files limit, cross-site admin calls, huge
//! uploads, and the smaller edges (signals, log colours, requests without `Host`).

mod support;

use std::time::{Duration, Instant};

use support::http::Http;
use support::{HostOptions, HostProc, Signal, eventually, get, hello, in_flight};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(60);

/// Raises this test process's own open-files limit to its hard limit (the flood tests open
/// more than 1,024 sockets).
fn raise_own_open_files_limit(at_least: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
    let now = getrlimit(Resource::Nofile).current;
    assert!(
        now.is_none_or(|n| n >= at_least),
        "the test needs {at_least} open files, the limit is {now:?}"
    );
}

/// Reads from `stream` until the peer closes it (end of stream or reset); returns what arrived
/// and when the close came. Panics after `limit`.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Instant) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return (received, Instant::now()),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "connection still open after {limit:?}; received {:?}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
}

/// What the host sends on `stream` from now until it closes it, and how long it kept it open.
async fn open_for(stream: &mut TcpStream) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let (got, at) = until_closed(stream, WAIT).await;
    (got, at - start)
}

/// A connection to `addr` that has sent `bytes`.
async fn connect_sending(addr: std::net::SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// Reads one response with a `content-length` from `stream`: its status and body.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                let status = text[9..12].parse().unwrap();
                return (status, text[end + 4..end + 4 + length].to_owned());
            }
        }
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("a response within a minute")
            .unwrap();
        assert!(n > 0, "closed mid-response: {received:?}");
        received.extend_from_slice(&buf[..n]);
    }
}

/// The host's resident memory in bytes, from `/proc`.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// How many file descriptors the process has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// `POST` to the admin API, without a token; panics on a transport error.
async fn post(host: &HostProc, path: &str, body: impl Into<bytes::Bytes>) -> support::http::Reply {
    Http::new()
        .send("POST", &host.admin_url(path), &[], body)
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

fn count_log(host: &HostProc, message: &str) -> usize {
    host.log_lines()
        .iter()
        .filter(|l| l["message"].as_str().unwrap_or("").starts_with(message))
        .count()
}

// ---------------------------------------------------------------------------------------------
// Timeouts

#[tokio::test(flavor = "multi_thread")]
async fn slow_header_slow_body_and_idle_clients_are_dropped_at_their_timeouts() {
    let host = HostProc::start_with(HostOptions {
        modules: vec![hello("1.0.0")],
        config: "[http]\nheader_read_timeout_ms = 1000\nbody_read_timeout_ms = 1000\n\
                 idle_timeout_ms = 6000\n"
            .into(),
        ..HostOptions::default()
    });
    let addr = host.addr;
    let silent = tokio::spawn(async move { open_for(&mut connect_sending(addr, b"").await).await });
    let half_header = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let start = Instant::now();
        stream
            .write_all(b"GET /hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: ")
            .await
            .unwrap();
        let (got, at) = until_closed(&mut stream, WAIT).await;
        (got, at - start)
    });
    let half_body = tokio::spawn(async move {
        let mut stream = connect_sending(
            addr,
            b"POST /hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n",
        )
        .await;
        stream.write_all(b"only ten..").await.unwrap();
        open_for(&mut stream).await
    });
    let admin = host.admin;
    let silent_admin =
        tokio::spawn(async move { open_for(&mut connect_sending(admin, b"").await).await });
    const GET: &[u8] = b"GET /hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let idle = tokio::spawn(async move {
        let mut stream = connect_sending(addr, GET).await;
        let (status, body) = read_response(&mut stream).await;
        assert_eq!((status, body.as_str()), (200, "hello from hello@1.0.0\n"));
        open_for(&mut stream).await
    });
    // On a keep-alive connection the header timeout runs from the next request's first byte.
    let keep_alive_half_header = tokio::spawn(async move {
        let mut stream = connect_sending(addr, GET).await;
        assert_eq!(read_response(&mut stream).await.0, 200);
        // The client idles a while (the scenario, not a synchronisation), then drips.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stream
            .write_all(b"GET /hello/ HTTP/1.1\r\nHo")
            .await
            .unwrap();
        open_for(&mut stream).await
    });
    // Meanwhile other clients are served.
    let http = Http::new();
    let mut served = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        assert_eq!(http.get(&host.url("/hello/")).await.status, 200);
        served += 1;
    }
    assert!(served > 0);

    let (got, took) = silent.await.unwrap();
    assert!(got.is_empty(), "{got:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "a silent connection closed after {took:?} (header timeout 1 s)"
    );
    let (got, took) = silent_admin.await.unwrap();
    assert!(
        got.is_empty() && took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "a silent admin connection closed after {took:?} (header timeout 1 s)"
    );
    let (got, took) = half_header.await.unwrap();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "half-sent headers closed after {took:?} (header timeout 1 s): {got:?}"
    );
    let (got, took) = half_body.await.unwrap();
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "a half-sent body was answered after {took:?} (body timeout 1 s)"
    );
    let (got, took) = keep_alive_half_header.await.unwrap();
    assert!(got.is_empty(), "{got:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(3500),
        "half-sent headers on a keep-alive connection closed after {took:?} (header timeout \
         1 s, idle timeout 6 s)"
    );
    let (got, took) = idle.await.unwrap();
    assert!(got.is_empty(), "{got:?}");
    assert!(
        took >= Duration::from_millis(5800) && took < Duration::from_secs(16),
        "an idle keep-alive connection closed after {took:?} (idle timeout 6 s)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_peer_that_stops_answering_pings_is_dropped() {
    // Long header and idle timeouts: only the pings can end this connection early.
    let host = HostProc::start_with(HostOptions {
        modules: vec![hello("1.0.0")],
        config: "[http]\nheader_read_timeout_ms = 120000\nidle_timeout_ms = 120000\n\
                 http2_keep_alive_interval_ms = 500\nhttp2_keep_alive_timeout_ms = 500\n"
            .into(),
        ..HostOptions::default()
    });
    let mut stream = TcpStream::connect(host.addr).await.unwrap();
    // The h2c preface and an empty SETTINGS frame; then this peer reads but never answers.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let start = Instant::now();
    let (got, at) = until_closed(&mut stream, WAIT).await;
    let took = at - start;
    // Frame type 6 is PING.
    assert!(
        got.windows(4).any(|w| w[..3] == [0, 0, 8] && w[3] == 6),
        "the host pinged: {got:?}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(15),
        "a peer that does not answer pings was dropped after {took:?} (ping every 0.5 s, 0.5 s to answer)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_closes_idle_connections_at_once_and_waits_only_for_running_requests() {
    // Default timeouts: idle and silent connections would stay for 10 to 20 s, the drain 30 s.
    let mut host = HostProc::start(&[hello("1.0.0")]);
    let mut silent = TcpStream::connect(host.addr).await.unwrap();
    let mut idle = TcpStream::connect(host.addr).await.unwrap();
    idle.write_all(b"GET /hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut idle).await.0, 200);
    let slow = in_flight(&host, "hello", "/hello/slow?ms=1500").await;
    let stopping = Instant::now();
    host.signal(Signal::TERM);
    let (_, closed) = until_closed(&mut silent, WAIT).await;
    assert!(
        closed - stopping < Duration::from_secs(1),
        "a connection that sent nothing closed {:?} after SIGTERM",
        closed - stopping
    );
    let (_, closed) = until_closed(&mut idle, WAIT).await;
    assert!(
        closed - stopping < Duration::from_secs(1),
        "an idle keep-alive connection closed {:?} after SIGTERM",
        closed - stopping
    );
    let r = slow.await.unwrap().unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("slept 1500 ms"), "{}", r.body);
    let status = host.wait_exit(WAIT);
    assert!(status.success(), "{status:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "the host took {:?} to stop; only the 1.5 s request should have held it",
        stopping.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Connection limits and running out of file descriptors

/// A host serving `hello` with `config`, limited to `limit` open files.
fn hello_with_open_files(limit: u64, config: &str) -> HostProc {
    HostProc::start_with(HostOptions {
        modules: vec![hello("1.0.0")],
        config: config.to_owned(),
        open_files_limit: Some((limit, limit)),
        ..HostOptions::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn at_1024_open_files_1100_idle_connections_lock_nobody_out() {
    raise_own_open_files_limit(4096);
    // Long timeouts: only the cap's eviction closes the idle connections here.
    let host = hello_with_open_files(
        1024,
        "[http]\nheader_read_timeout_ms = 300000\nidle_timeout_ms = 300000\n",
    );
    let listening = host.wait_log(WAIT, |l| l["message"] == "listening");
    assert_eq!(listening["max_connections"], 896, "{listening}");
    assert_eq!(listening["open_files_limit"], 1024, "{listening}");

    let mut idle = Vec::new();
    for _ in 0..1100 {
        idle.push(TcpStream::connect(host.addr).await.unwrap());
    }
    host.wait_log(WAIT, |l| {
        l["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("connection limit reached")
    });
    let fds = open_fds(host.pid());
    assert!(
        (896..1024).contains(&fds),
        "the host holds {fds} descriptors: the idle connections up to the cap, with room left"
    );

    // The admin listener and a new client are served while the flood holds the app listener.
    let http = Http::new();
    let started = Instant::now();
    let health = tokio::time::timeout(
        Duration::from_secs(10),
        http.get(&host.admin_url("/healthz")),
    )
    .await
    .expect("/healthz answers");
    assert_eq!(health.status, 200);
    let started_app = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), http.get(&host.url("/hello/")))
        .await
        .expect("a new client is served");
    assert_eq!(r.status, 200);
    let took = started_app.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "a new client waited {took:?} at the cap (healthz took {:?})",
        started_app - started
    );
    // A module dropped meanwhile is deployed.
    host.drop_module(&hello("2.0.0"), "libhello.so");
    eventually(WAIT, "hello 2.0.0 serving", async || {
        let r = get(&host, "/hello/").await;
        (r.version() == "hello@2.0.0").then_some(())
    })
    .await;
    assert_eq!(
        count_log(&host, "accept failed"),
        0,
        "the cap kept the host from running out of descriptors"
    );
    // The oldest idle connections made room; the rest are still open.
    let mut evicted = 0;
    for stream in &mut idle {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), stream.read(&mut byte)).await
        {
            evicted += 1;
        }
    }
    assert!(
        (100..=1100).contains(&evicted),
        "{evicted} of 1100 idle connections were closed to make room"
    );

    drop(idle);
    eventually(WAIT, "the idle connections gone", async || {
        (open_fds(host.pid()) < 200).then_some(())
    })
    .await;
    let r = get(&host, "/hello/").await;
    assert_eq!((r.status, r.version()), (200, "hello@2.0.0"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_open_files_limit_is_raised_at_start_and_sizes_the_cap() {
    let host = HostProc::start_with(HostOptions {
        open_files_limit: Some((1024, 4096)),
        ..HostOptions::default()
    });
    let raised = host.wait_log(WAIT, |l| {
        l["message"] == "raised the open-files limit (RLIMIT_NOFILE) to its hard limit"
    });
    assert_eq!(
        (raised["from"].as_u64(), raised["to"].as_u64()),
        (Some(1024), Some(4096))
    );
    let listening = host.wait_log(WAIT, |l| l["message"] == "listening");
    assert_eq!(listening["open_files_limit"], 4096, "{listening}");
    assert_eq!(listening["max_connections"], 4096 - 512, "{listening}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_listener_has_its_own_cap() {
    let host = HostProc::start_with(HostOptions {
        config: "[http]\nadmin_max_connections = 4\nheader_read_timeout_ms = 300000\n".into(),
        ..HostOptions::default()
    });
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(TcpStream::connect(host.admin).await.unwrap());
    }
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        Http::new().get(&host.admin_url("/healthz")),
    )
    .await
    .expect("/healthz answers past the cap");
    assert_eq!(r.status, 200);
    // Ten idle connections and this client's: at most four stay open.
    let mut open = 0;
    for stream in &mut idle {
        let mut byte = [0u8; 1];
        if tokio::time::timeout(Duration::from_millis(200), stream.read(&mut byte))
            .await
            .is_err()
        {
            open += 1;
        }
    }
    assert!(open <= 4, "{open} idle admin connections still open");
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_descriptors_accept_backs_off_with_one_line_and_a_deploy_is_retried() {
    raise_own_open_files_limit(1024);
    // A cap above the open-files limit: the host runs out of descriptors instead.
    let host = hello_with_open_files(
        256,
        "[http]\nmax_connections = 5000\nheader_read_timeout_ms = 300000\n",
    );
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(host.addr).await.unwrap());
    }
    host.wait_log(WAIT, |l| {
        l["message"] == "accept failed; backing off until it works again"
    });
    host.drop_module(&hello("2.0.0"), "libhello.so");
    support::logged_error(
        &host,
        "deploy failed for a transient reason; retrying",
        "Too many open files",
    );
    // Still out of descriptors a while later: still one line.
    eventually(WAIT, "a second retry", async || {
        (count_log(&host, "deploy failed for a transient reason") >= 2).then_some(())
    })
    .await;
    assert_eq!(count_log(&host, "accept failed"), 1, "one line per episode");

    drop(idle);
    host.wait_log(WAIT, |l| l["message"] == "accepting again");
    eventually(WAIT, "hello 2.0.0 serving after the retry", async || {
        let r = get(&host, "/hello/").await;
        (r.version() == "hello@2.0.0").then_some(())
    })
    .await;
    assert_eq!(count_log(&host, "accept failed"), 1);
}

// ---------------------------------------------------------------------------------------------
// The admin API without and with a token

#[tokio::test(flavor = "multi_thread")]
async fn cross_site_and_foreign_host_admin_calls_are_refused_without_a_token() {
    let host = HostProc::start(&[hello("1.0.0")]);
    let http = Http::new();
    let module = std::fs::read(hello("2.0.0")).unwrap();
    // A page on another site posting the module as a "simple" request.
    let r = http
        .send(
            "POST",
            &host.admin_url("/apps?name=libhello.so"),
            &[
                ("origin", "http://evil.example"),
                ("content-type", "text/plain"),
            ],
            module.clone(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    let message = r.json()["error"].as_str().unwrap().to_owned();
    assert!(
        message.contains("http://evil.example") && message.contains("admin_token"),
        "the refusal says why and how to set a token: {message}"
    );
    // DNS rebinding: the attacker's name as Host.
    let own_port = host.admin.port().to_string();
    let evil_host = format!("evil.example:{own_port}");
    let r = http
        .get_with(&host.admin_url("/status"), &[("host", &evil_host)])
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("not a loopback"), "{}", r.body);
    let r = http
        .get_with(&host.admin_url("/"), &[("host", &evil_host)])
        .await;
    assert_eq!(r.status, 403, "the dashboard page too");
    assert_eq!(
        get(&host, "/hello/").await.version(),
        "hello@1.0.0",
        "the refused upload did not deploy"
    );

    // The local operator: tools without Origin, the dashboard's own origin, loopback names.
    let own_origin = format!("http://{}", host.admin);
    for headers in [
        vec![],
        vec![("origin", own_origin.as_str())],
        vec![("host", "localhost")],
    ] {
        let r = http.get_with(&host.admin_url("/status"), &headers).await;
        assert_eq!(r.status, 200, "{headers:?}: {}", r.body);
    }
    let r = http
        .send(
            "POST",
            &host.admin_url("/apps?name=libhello.so"),
            &[("origin", own_origin.as_str())],
            module,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["version"], "2.0.0");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_token_the_token_decides_and_its_scheme_is_case_insensitive() {
    let token = "t0ken-for-abuse";
    let host =
        HostProc::start_with_config(&[hello("1.0.0")], &format!("admin_token = \"{token}\"\n"));
    let http = Http::new();
    let url = host.admin_url("/status");
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let auth = format!("{scheme} {token}");
        let r = http
            .send(
                "GET",
                &url,
                &[
                    ("authorization", &auth),
                    ("origin", "http://evil.example"),
                    ("host", "evil.example"),
                ],
                "",
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{scheme}: {}", r.body);
    }
    let r = http
        .get_with(&url, &[("origin", "http://evil.example")])
        .await;
    assert_eq!(r.status, 401, "no token: {}", r.body);
}

// ---------------------------------------------------------------------------------------------
// Uploads

#[tokio::test(flavor = "multi_thread")]
async fn a_600_mb_upload_is_refused_while_streaming_and_memory_stays_bounded() {
    let host = HostProc::start(&[hello("1.0.0")]);
    let pid = host.pid();
    let before = rss_bytes(pid);
    let stream = TcpStream::connect(host.admin).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let reply = tokio::spawn(async move {
        let mut got = Vec::new();
        let _ = rd.read_to_end(&mut got).await;
        String::from_utf8_lossy(&got).into_owned()
    });
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (peak, sampling) = (peak.clone(), sampling.clone());
        async move {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    // A generated body, sent chunk by chunk: 600 MB never sit in this process either.
    const TOTAL: u64 = 600_000_000;
    let chunk = vec![0x5au8; 1 << 20];
    let framing = format!("{:x}\r\n", chunk.len());
    wr.write_all(
        b"POST /apps?name=big.so HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    let mut sent = 0u64;
    while sent < TOTAL {
        let wrote = async {
            wr.write_all(framing.as_bytes()).await?;
            wr.write_all(&chunk).await?;
            wr.write_all(b"\r\n").await
        };
        if wrote.await.is_err() {
            break;
        }
        sent += chunk.len() as u64;
    }
    if sent >= TOTAL {
        let _ = wr.write_all(b"0\r\n\r\n").await;
    }
    let reply = tokio::time::timeout(WAIT, reply).await.unwrap().unwrap();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    sampler.await.unwrap();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    let limit = 512u64 << 20;
    assert!(
        sent < TOTAL,
        "the host took all {sent} bytes instead of refusing past {limit}"
    );
    assert!(
        sent >= limit - (8 << 20),
        "refused after {sent} bytes, before the {limit}-byte limit"
    );
    assert!(
        reply.starts_with("HTTP/1.1 413") && reply.contains("uploads.max_bytes"),
        "{reply}"
    );
    assert!(
        peak < before + (64 << 20),
        "host RSS went from {before} to {peak} bytes during the upload"
    );
    let uploads = host.dir.path().join("state").join("uploads");
    assert_eq!(
        std::fs::read_dir(&uploads).unwrap().count(),
        0,
        "the partial upload is removed"
    );
    assert_eq!(get(&host, "/hello/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_uploads_are_bounded_stalled_ones_time_out_and_leftovers_go_at_start() {
    let host = HostProc::start_with(HostOptions {
        modules: vec![hello("1.0.0")],
        config: "[uploads]\nmax_concurrent = 1\nmax_bytes = 65536\n\
                 [http]\nbody_read_timeout_ms = 4000\n"
            .into(),
        ..HostOptions::default()
    });
    let mut stalled = TcpStream::connect(host.admin).await.unwrap();
    stalled
        .write_all(
            b"POST /apps?name=slow.so HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4096\r\n\r\n\
              the first bytes",
        )
        .await
        .unwrap();
    // It holds the one slot once its file exists (the slot is taken before the file is made):
    // only then may a second upload be sent, or that one could take the slot first.
    let uploads = host.dir.path().join("state").join("uploads");
    eventually(WAIT, "the stalled upload receiving", async || {
        let entries = std::fs::read_dir(&uploads).ok()?;
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".part"))
            .then_some(())
    })
    .await;
    let busy = eventually(WAIT, "a second upload refused", async || {
        let r = post(&host, "/apps?name=x.so", "not a module").await;
        (r.status == 503).then_some(r)
    })
    .await;
    assert!(
        busy.body.contains("uploads.max_concurrent"),
        "{}",
        busy.body
    );
    assert_eq!(busy.header("retry-after"), "1");
    let (status, body) = read_response(&mut stalled).await;
    assert_eq!(status, 408, "{body}");
    // The slot is free again: the next upload gets to the loader.
    let r = post(&host, "/apps?name=x.so", "not a module").await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("not a loadable shared library"),
        "{}",
        r.body
    );

    // The size limit is configurable (the 600 MB test covers the default).
    let r = post(&host, "/apps?name=libhello.so", vec![0u8; 70_000]).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.contains("(65536 bytes)"), "{}", r.body);

    // A name the file system cannot take is a clear 400.
    let long = format!("{}.so", "a".repeat(240));
    let r = post(&host, &format!("/apps?name={long}"), "x").await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("243 characters long, at most 128"),
        "{}",
        r.body
    );

    // An upload cut short by a crash leaves a file; the next start removes it.
    std::fs::create_dir_all(&uploads).unwrap();
    std::fs::write(uploads.join("4242-0.part"), b"half a module").unwrap();
    let host = host.restart();
    assert_eq!(std::fs::read_dir(&uploads).unwrap().count(), 0);
    host.wait_log(WAIT, |l| {
        l["message"] == "removed uploads left by an earlier run"
    });
}

// ---------------------------------------------------------------------------------------------
// Smaller edges

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_undeploy_is_remembered_across_a_restart_while_the_file_stays() {
    let host = HostProc::start(&[hello("1.0.0")]);
    let r = Http::new()
        .send("DELETE", &host.admin_url("/apps/hello"), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let file = std::fs::read_dir(host.modules_dir())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let host = host.restart();
    let skipped = host.wait_log(WAIT, |l| l["message"] == "file skipped");
    assert!(
        skipped["reason"]
            .as_str()
            .unwrap()
            .contains("undeployed through the admin API"),
        "{skipped}"
    );
    assert_eq!(get(&host, "/hello/").await.status, 404);

    // Deploying the file again brings the app back, for good.
    host.drop_module(&hello("1.0.0"), file.file_name().unwrap().to_str().unwrap());
    eventually(WAIT, "hello back", async || {
        (get(&host, "/hello/").await.status == 200).then_some(())
    })
    .await;
    let host = host.restart();
    assert_eq!(get(&host, "/hello/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_signal_exits_at_once_with_128_plus_its_number() {
    let mut host = HostProc::start(&[hello("1.0.0")]);
    let slow = in_flight(&host, "hello", "/hello/slow?ms=30000").await;
    support::stop_twice(&mut host, 143, Duration::from_secs(10));
    host.wait_log(WAIT, |l| {
        l["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("second signal")
    });
    slow.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_1_1_request_without_host_is_a_400() {
    let host = HostProc::start(&[hello("1.0.0")]);
    for addr in [host.addr, host.admin] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /hello/ HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let (status, body) = read_response(&mut stream).await;
        assert_eq!(status, 400, "{addr}: {body}");
        assert!(body.contains("Host"), "{body}");
    }
    // HTTP/1.0 has no such rule.
    let mut stream = TcpStream::connect(host.addr).await.unwrap();
    stream
        .write_all(b"GET /hello/ HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await.0, 200);
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--modules")
        .arg(dir.path().join("modules"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("BATON_LOG_FORMAT", "plain")
        .env("BATON_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (started, started_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut log = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("listening") && !line.contains("admin") {
                let _ = started.send(());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    started_rx.recv_timeout(WAIT).expect("the host starts");
    support::kill(child.id(), Signal::TERM);
    let status = child.wait().unwrap();
    let log = reader.join().unwrap();
    assert!(status.success(), "{status:?}: {log}");
    assert!(log.contains("graceful shutdown"), "{log}");
    assert!(log.contains("listening"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "colour codes in a piped log:\n{log:?}"
    );
}

/// Sends `count` requests for a 4 KiB path to `hello` on `addr`, 16 at a time, each answered
/// within 30 s with the status a path `hello` does not route gets: each one's access line is
/// 4 KiB of log.
async fn long_paths(http: &Http, addr: &str, count: usize) {
    let url = format!("http://{addr}/hello/{}", "x".repeat(4096));
    let mut running = tokio::task::JoinSet::new();
    for i in 0..count {
        if running.len() == 16 {
            running.join_next().await.unwrap().unwrap();
        }
        let (http, url) = (http.clone(), url.clone());
        running.spawn(async move {
            let reply = tokio::time::timeout(Duration::from_secs(30), http.get(&url))
                .await
                .unwrap_or_else(|_| panic!("request {i} not answered within 30 s"));
            assert_eq!(reply.status, 404, "request {i}: {}", reply.body);
        });
    }
    while let Some(done) = running.join_next().await {
        done.unwrap();
    }
}

/// A child process killed if the test fails before it exits.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `baton_log_lines_dropped_total` on the admin listener at `admin`.
async fn lines_dropped(http: &Http, admin: &str) -> u64 {
    let metrics = http.get(&format!("http://{admin}/metrics")).await.body;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("baton_log_lines_dropped_total "))
        .unwrap_or_else(|| panic!("no dropped lines counter:\n{metrics}"))
        .parse()
        .unwrap()
}

/// A log collector that keeps the pipe open and stops reading (wedged, or stopped): the host
/// fills its log buffer, then drops the lines that find no room and counts them — it goes on
/// serving, says how many it dropped once the output reads again, and stops on SIGTERM even
/// while nobody reads — as one process, or under the supervisor, which relays the serving
/// process's stderr to its own.
async fn a_stderr_nobody_reads_costs_log_lines_not_requests_nor_the_stop(supervised: bool) {
    use std::io::BufRead;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let modules = dir.path().join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    let module = hello("1.0.0");
    std::fs::copy(&module, modules.join(module.file_name().unwrap())).unwrap();
    let mut child = KilledOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args((!supervised).then_some("--no-supervisor"))
            .args(["--admin", "127.0.0.1:0", "--modules"])
            .arg(&modules)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env("BATON_LOG_FORMAT", "json")
            .env("BATON_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Reads a line at a time while not paused; the pipe stays open either way.
    let stderr = child.0.stderr.take().unwrap();
    let paused = Arc::new(AtomicBool::new(false));
    let (lines, logged) = std::sync::mpsc::channel::<serde_json::Value>();
    let reader = std::thread::spawn({
        let paused = Arc::clone(&paused);
        move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = lines.send(serde_json::from_str(&line).unwrap_or_default());
                while paused.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    });
    let until_logged = |message: &str| loop {
        let line = logged
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("never logged: {message}"));
        if line["message"] == message {
            return line;
        }
    };
    let admin = until_logged("admin listening")["addr"]
        .as_str()
        .unwrap()
        .to_owned();
    let addr = until_logged("listening")["addr"]
        .as_str()
        .unwrap()
        .to_owned();
    let http = Http::new();
    eventually(WAIT, "hello is served", async || {
        (http.get(&format!("http://{addr}/hello/")).await.status == 200).then_some(())
    })
    .await;

    // Nobody reads: past 8 MiB of lines and a second, lines are dropped, requests still answered.
    paused.store(true, Ordering::Relaxed);
    long_paths(&http, &addr, 3000).await;
    let dropped = lines_dropped(&http, &admin).await;
    assert!(dropped > 0, "no line dropped: the log took 12 MiB");

    // Reading again: every line the output could not take is accounted for.
    paused.store(false, Ordering::Relaxed);
    let warning = until_logged(
        "log lines dropped: the log output took nothing for a second while its buffer was full",
    );
    assert_eq!(warning["level"], "WARN", "{warning}");
    let said = warning["dropped"].as_u64().unwrap();
    assert!(said >= dropped, "{said} < {dropped}");
    assert_eq!(lines_dropped(&http, &admin).await, said);

    // Nobody reads again, and the host is asked to stop: it stops.
    paused.store(true, Ordering::Relaxed);
    long_paths(&http, &addr, 3000).await;
    assert!(lines_dropped(&http, &admin).await > said);
    support::kill(child.0.id(), Signal::TERM);
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < WAIT,
            "SIGTERM'd with a stderr nobody reads, the host did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    paused.store(false, Ordering::Relaxed);
    reader.join().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stderr_nobody_reads_costs_log_lines_not_requests_nor_the_stop_of_one_process() {
    a_stderr_nobody_reads_costs_log_lines_not_requests_nor_the_stop(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stderr_nobody_reads_costs_log_lines_not_requests_nor_the_stop_of_the_supervisor() {
    a_stderr_nobody_reads_costs_log_lines_not_requests_nor_the_stop(true).await;
}
