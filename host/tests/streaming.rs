//! Streaming through a real host: a request body read as it arrives and a response written as
//! it goes, with the host's memory flat whatever their size; a client that reads slowly; the
//! body limit on a body without a declared length; server-sent events across a swap.

mod support;

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use support::body::Generated;
use support::{GUARD_OFF, HostProc, eventually, hello};

const MIB: u64 = 1024 * 1024;
/// The size of the large transfers.
const LARGE: u64 = 200 * MIB;
/// How much the host's resident memory may grow while it moves a large body: a few buffers of
/// 64 KiB per transfer, far below the body's size.
const RSS_SLACK: u64 = 24 * MIB;

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

/// A host serving `hello` with `config` added.
fn host(config: &str) -> HostProc {
    HostProc::start_with_config(&[hello("1.0.0")], &format!("{GUARD_OFF}{config}"))
}

/// Waits until `version` of `hello` is retired (drained and unloaded).
async fn retired(host: &HostProc, version: &str) {
    eventually(
        Duration::from_secs(30),
        "the old version retired",
        async || {
            let status = support::status(host).await;
            let app = support::app(&status, "hello");
            (support::version(app, version)["state"] == "retired").then_some(())
        },
    )
    .await;
}

/// Sends `req` on `send` once the connection is ready for it.
async fn send_on(
    send: &mut SendRequest<Generated>,
    req: http::Request<Generated>,
) -> hyper::Result<http::Response<Incoming>> {
    send.ready().await?;
    send.send_request(req).await
}

/// An HTTP/1.1 connection to the host's app listener.
async fn connect(host: &HostProc) -> SendRequest<Generated> {
    let url: http::Uri = host.url("/").parse().unwrap();
    let addr = format!("{}:{}", url.host().unwrap(), url.port_u16().unwrap());
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

fn request(method: &str, path: &str, body: Generated) -> http::Request<Generated> {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(body)
        .unwrap()
}

/// Reads `body` to its end, counting bytes and sampling the host's memory; returns the count
/// and the highest resident size seen.
async fn drain(mut body: Incoming, pid: u32) -> (u64, u64) {
    let (mut total, mut peak, mut frames) = (0u64, rss(pid), 0u64);
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("the body arrives whole");
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            frames += 1;
            if frames % 64 == 0 {
                peak = peak.max(rss(pid));
            }
        }
    }
    (total, peak)
}

/// Warms the host up (a few requests of each kind) and returns its resident size then.
async fn idle_rss(host: &HostProc) -> u64 {
    for _ in 0..3 {
        let mut send = connect(host).await;
        let r = send_on(
            &mut send,
            request("POST", "/hello/upload", Generated::new(MIB, false)),
        )
        .await
        .unwrap();
        drain(r.into_body(), host.pid()).await;
        let r = send_on(
            &mut send,
            request(
                "GET",
                &format!("/hello/bytes?n={}", 4 * MIB),
                Generated::new(0, true),
            ),
        )
        .await
        .unwrap();
        drain(r.into_body(), host.pid()).await;
    }
    rss(host.pid())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mb_upload_and_download_stream_through_flat_memory() {
    let host = host(&format!("[limits]\nmax_body_bytes = {}\n", LARGE + MIB));
    let idle = idle_rss(&host).await;

    // Upload: the handler counts the bytes as they arrive.
    let mut send = connect(&host).await;
    // The host's memory is sampled every 20 ms while the upload runs.
    let sampled = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let (pid, sampled) = (host.pid(), std::sync::Arc::clone(&sampled));
        tokio::spawn(async move {
            loop {
                sampled.fetch_max(rss(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let response = send_on(
        &mut send,
        request("POST", "/hello/upload", Generated::new(LARGE, true)),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, format!("{LARGE}\n"));
    sampler.abort();
    let upload_peak = sampled
        .load(std::sync::atomic::Ordering::Relaxed)
        .max(rss(host.pid()));

    // Download: 200 MB streamed by the handler in 64 KiB writes.
    let response = send_on(
        &mut send,
        request(
            "GET",
            &format!("/hello/bytes?n={LARGE}"),
            Generated::new(0, true),
        ),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("content-length").is_none(),
        "streamed, not buffered"
    );
    let (received, download_peak) = drain(response.into_body(), host.pid()).await;
    assert_eq!(received, LARGE);

    let peak = upload_peak.max(download_peak);
    eprintln!(
        "host RSS: idle {} KiB, peak {} KiB while moving {} MiB each way",
        idle / 1024,
        peak / 1024,
        LARGE / MIB
    );
    assert!(
        peak < idle + RSS_SLACK,
        "host RSS grew from {} MiB idle to {} MiB moving {} MiB",
        idle / MIB,
        peak / MIB,
        LARGE / MIB
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_slowly_does_not_grow_host_memory() {
    let host = host("");
    let idle = idle_rss(&host).await;
    let mut send = connect(&host).await;
    let response = send_on(
        &mut send,
        request(
            "GET",
            &format!("/hello/bytes?n={LARGE}"),
            Generated::new(0, true),
        ),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    // Take a little, then stall while the handler keeps writing: its writes must block.
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    let mut stalled_peak = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stalled_peak = stalled_peak.max(rss(host.pid()));
    }
    assert!(
        stalled_peak < idle + RSS_SLACK,
        "host RSS grew from {} MiB to {} MiB behind a stalled client",
        idle / MIB,
        stalled_peak / MIB
    );
    // The rest still arrives whole once the client reads again.
    let (rest, _) = drain(body, host.pid()).await;
    assert_eq!(rest + first.into_data().unwrap().len() as u64, LARGE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_limit_holds_for_a_streamed_body() {
    let host = host("[limits]\nmax_body_bytes = 1048576\n");
    // Declared too large: refused before the handler runs. Not declared (chunked): the
    // handler's reader fails past the limit, and `?` answers 413. Either way the host may close
    // the connection while the client still sends, so the client sees the 413 or a write error.
    for declared in [true, false] {
        let mut send = connect(&host).await;
        let r = send_on(
            &mut send,
            request("POST", "/hello/upload", Generated::new(2 * MIB, declared)),
        )
        .await;
        match r {
            Ok(r) => assert_eq!(r.status(), 413, "declared: {declared}"),
            // A broken pipe or a reset while sending: the host stopped reading.
            Err(e) => assert!(!e.is_parse(), "declared: {declared}: {e:?}"),
        }
    }

    // Within the limit, chunked: counted whole.
    let mut send = connect(&host).await;
    let r = send_on(
        &mut send,
        request("POST", "/hello/upload", Generated::new(MIB - 1, false)),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, format!("{}\n", MIB - 1));

    // The host keeps serving.
    let r = support::http::Http::new().get(&host.url("/hello/")).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_end_on_a_swap_and_reconnect_to_the_new_version() {
    let host = host("");
    let mut send = connect(&host).await;
    let response = send_on(
        &mut send,
        request("GET", "/hello/ticks?ms=50", Generated::new(0, true)),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut text = String::new();
    while !text.contains("hello@1.0.0") {
        let frame = body.frame().await.unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&frame.into_data().unwrap()));
    }

    // Swap while the stream is open: the old version's stream ends itself with a retry hint.
    host.drop_module(&hello("2.0.0"), "hello.so");
    let rest = tokio::time::timeout(Duration::from_secs(30), body.collect())
        .await
        .expect("the stream ends after the swap")
        .expect("it ends cleanly")
        .to_bytes();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("event: draining\nretry: 200"), "{rest}");

    // Reconnecting reaches the new version; the old one retires once its stream ended.
    let mut send = connect(&host).await;
    let response = send_on(
        &mut send,
        request("GET", "/hello/ticks?ms=50", Generated::new(0, true)),
    )
    .await
    .unwrap();
    let mut body = response.into_body();
    let mut text = String::new();
    while !text.contains("hello@2.0.0") {
        let frame = body.frame().await.unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&frame.into_data().unwrap()));
    }
    retired(&host, "1.0.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_still_running_at_the_drain_deadline_is_cut() {
    // A stream that never looks at `is_draining`: the bytes endpoint with a slow reader keeps
    // its handler writing; the drain deadline (1 s) cuts it and the old version unloads.
    let host = host("drain_timeout_secs = 1\n");
    let mut send = connect(&host).await;
    let response = send_on(
        &mut send,
        request(
            "GET",
            &format!("/hello/bytes?n={LARGE}"),
            Generated::new(0, true),
        ),
    )
    .await
    .unwrap();
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    host.drop_module(&hello("2.0.0"), "hello.so");
    // The client reads nothing more: the handler blocks in a write until the cut.
    retired(&host, "1.0.0").await;
    // The client sees the response cut, not a complete body.
    let mut outcome = Ok(());
    while let Some(frame) = body.frame().await {
        if let Err(e) = frame {
            outcome = Err(e);
            break;
        }
    }
    assert!(outcome.is_err(), "a cut stream must not look complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_of_abi_1_0_gets_every_body_whole_and_lists_no_assets() {
    let host = HostProc::start_with_config(&[support::module("fixture-oldabi", &[])], GUARD_OFF);
    let status = support::status(&host).await;
    let app = support::app(&status, "oldabi");
    assert_eq!(support::version(app, "1.0.0")["state"], "active", "{app}");
    // 300 KiB, more than the first part a 1.1 module gets with the request.
    for declared in [true, false] {
        let mut send = connect(&host).await;
        let r = send_on(
            &mut send,
            request("POST", "/oldabi/len", Generated::new(300 * 1024, declared)),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "307200\n", "declared: {declared}");
    }
    // Its assets are not asked for: the path goes to its router, which has no such route.
    let r = support::http::Http::new()
        .get(&host.url("/oldabi/robots.txt"))
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_server_sent_events_arrive_one_by_one() {
    use std::io::Write;
    let host = host("");
    let mut send = connect(&host).await;
    let mut req = request("GET", "/hello/ticks?ms=50", Generated::new(0, true));
    req.headers_mut()
        .insert("accept-encoding", http::HeaderValue::from_static("gzip"));
    let response = send_on(&mut send, req).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let mut body = response.into_body();
    // Each event is flushed through the encoder: the first ones decode while the stream is
    // still open.
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    let mut events = 0;
    while events < 3 {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("an event arrives without waiting for more")
            .unwrap()
            .unwrap();
        decoder.write_all(&frame.into_data().unwrap()).unwrap();
        decoder.flush().unwrap();
        events = String::from_utf8_lossy(decoder.get_ref())
            .matches("data: hello@1.0.0")
            .count();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_a_body_holds_a_worker_no_longer_than_the_request_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The client stalls for less than the body read and idle timeouts, so only the request
    // timeout can end it.
    let host = host(
        "[limits]\nrequest_timeout_ms = 1000\n\
         [http]\nbody_read_timeout_ms = 120000\nidle_timeout_ms = 120000\n",
    );
    let url: http::Uri = host.url("/").parse().unwrap();
    let addr = format!("{}:{}", url.host().unwrap(), url.port_u16().unwrap());
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = "POST /hello/upload HTTP/1.1\r\nhost: localhost\r\ncontent-length: 1048576\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    // More than the first part, so the handler is reading the rest when the client stops.
    stream.write_all(&vec![b'x'; 200 * 1024]).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut answer))
        .await
        .expect("the request timeout answers")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    // The handler's read failed when the request timed out: it returned and its thread is free,
    // while the client still holds its connection open.
    eventually(Duration::from_secs(15), "no handler stuck", async || {
        let status = support::status(&host).await;
        let app = support::app(&status, "hello");
        let version = support::version(app, "1.0.0");
        (version["stuck"] == 0).then_some(())
    })
    .await;
    let r = support::http::Http::new().get(&host.url("/hello/")).await;
    assert_eq!(r.status, 200);
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_max_streams_are_refused_and_other_requests_keep_their_workers() {
    let host = host("[limits]\nmax_streams = 2\nworker_threads = 4\n");
    let ticks = || request("GET", "/hello/ticks?ms=50", Generated::new(0, true));
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut send = connect(&host).await;
        let r = send_on(&mut send, ticks()).await.unwrap();
        assert_eq!(r.status(), 200);
        open.push((send, r.into_body()));
    }
    // A third stream would take a worker the version keeps for other requests.
    let mut send = connect(&host).await;
    let refused = send_on(&mut send, ticks()).await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let r = support::http::Http::new().get(&host.url("/hello/")).await;
    assert_eq!(r.status, 200);

    // A stream that ends gives its place back.
    drop(open.pop());
    eventually(
        Duration::from_secs(20),
        "a stream's place back",
        async || {
            let mut send = connect(&host).await;
            let r = send_on(&mut send, ticks()).await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_host_ends_its_event_streams_instead_of_waiting_out_the_drain() {
    // A long drain timeout: only the streams ending by themselves lets the host stop soon.
    let mut host = host("drain_timeout_secs = 120\n");
    let mut send = connect(&host).await;
    let response = send_on(
        &mut send,
        request("GET", "/hello/ticks?ms=50", Generated::new(0, true)),
    )
    .await
    .unwrap();
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    host.signal(support::Signal::TERM);
    let rest = tokio::time::timeout(Duration::from_secs(20), body.collect())
        .await
        .expect("the stream ends once the host stops")
        .expect("it ends cleanly")
        .to_bytes();
    assert!(
        String::from_utf8_lossy(&rest).contains("event: draining"),
        "{rest:?}"
    );
    drop(send);
    let status = tokio::task::spawn_blocking(move || host.wait_exit(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_body_read_past_the_limit_answers_413_whatever_the_handler_made_of_it() {
    let host = host("[limits]\nmax_body_bytes = 1048576\n");
    // Within the limit, larger than what comes with the request: read whole on `req.body()`.
    let mut send = connect(&host).await;
    let r = send_on(
        &mut send,
        request("POST", "/hello/length", Generated::new(300 * 1024, false)),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "307200\n");
    // Past it, undeclared: the handler answered 200 with a partial length; the host's answer
    // is the 413 (or the connection closes while the client still sends).
    let mut send = connect(&host).await;
    match send_on(
        &mut send,
        request(
            "POST",
            "/hello/length",
            Generated::new(2 * 1024 * 1024, false),
        ),
    )
    .await
    {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(e) => assert!(!e.is_parse(), "{e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_takes_nothing_for_the_send_timeout_has_its_stream_cut() {
    let host = host("[limits]\nstream_send_timeout_ms = 300\n");
    let mut send = connect(&host).await;
    let response = send_on(
        &mut send,
        request(
            "GET",
            &format!("/hello/bytes?n={LARGE}"),
            Generated::new(0, true),
        ),
    )
    .await
    .unwrap();
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    // Read nothing for much longer than the send timeout: the handler's write fails, its
    // stream is cut and its request leaves the version.
    eventually(
        Duration::from_secs(20),
        "the stalled stream gone",
        async || {
            let status = support::status(&host).await;
            let app = support::app(&status, "hello");
            let version = support::version(app, "1.0.0");
            (version["in_flight"] == 0).then_some(())
        },
    )
    .await;
    let mut outcome = Ok(0u64);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let (Ok(data), Ok(n)) = (frame.into_data(), outcome.as_mut()) {
                    *n += data.len() as u64;
                }
            }
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    assert!(
        outcome.is_err(),
        "a cut stream must not look complete: {outcome:?}"
    );
}
