//! HTTPS end to end: real `baton` processes with a certificate made in the test, real clients
//! (curl, and rustls with hyper over HTTP/1.1 and HTTP/2), certificate rotation while a client
//! holds a connection, the redirect of plain HTTP, and the refusal of a bad certificate at start.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use support::http::Http;
use support::tls::{
    TestCa, TlsConn, connect, curl, handshake, openssl, replace_file, resolve, write_pair,
};
use support::{
    HostOptions, HostProc, Signal, baton, baton_binary, counter, eventually, get, hello, status,
};
use tokio::io::AsyncReadExt;

const WAIT: Duration = Duration::from_secs(60);

/// A host serving `modules` on plain HTTP and on HTTPS (`listen_tls` on port 0) with the `[tls]`
/// table `tls` and more `config`.
fn tls_host(
    modules: Vec<std::path::PathBuf>,
    tls: &str,
    config: &str,
    supervised: bool,
) -> HostProc {
    HostProc::start_with(HostOptions {
        modules,
        config: format!("{config}{tls}"),
        args: vec!["--listen-tls".into(), "127.0.0.1:0".into()],
        supervised,
        ..HostOptions::default()
    })
}

/// A host serving `hello` 1.0.0 unsupervised over TLS (see [`tls_host`]), and its HTTPS address.
fn hello_tls(tls: &str, config: &str) -> (HostProc, SocketAddr) {
    let host = tls_host(vec![hello("1.0.0")], tls, config, false);
    let addr = host.tls_addr.unwrap();
    (host, addr)
}

/// A TLS connection to `addr` on which `/hello/` has answered 200.
async fn answering(addr: SocketAddr, client: Arc<ClientConfig>) -> TlsConn {
    let mut conn = connect(addr, client).await.unwrap();
    assert_eq!(conn.get("/hello/").await.unwrap().0.status, 200);
    conn
}

/// A certificate authority, a directory with `cert.pem` and `key.pem` it issued, and the `[tls]`
/// table naming them.
fn certificates() -> (TestCa, tempfile::TempDir, String) {
    let ca = TestCa::new("CA");
    let certs = tempfile::tempdir().unwrap();
    let tls = write_pair(certs.path(), &ca.issue());
    (ca, certs, tls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_apps_over_http1_and_http2_beside_plain_http() {
    // The certificate of the README's "Running the host", made with the README's command.
    let certs = tempfile::tempdir().unwrap();
    openssl(
        certs.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "365",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ],
    );
    let tls = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n",
        certs.path().join("cert.pem"),
        certs.path().join("key.pem")
    );
    let host = tls_host(vec![hello("1.0.0"), counter("1.0.0")], &tls, "", false);
    let tls_addr = host.tls_addr.expect("the host logs its HTTPS address");
    let cacert = certs.path().join("cert.pem");
    let cacert = cacert.to_str().unwrap();
    let url = |path: &str| format!("https://localhost:{}{path}", tls_addr.port());

    // curl over HTTP/1.1 and over HTTP/2 (ALPN), over TLS 1.3 and over TLS 1.2.
    let flags: [&[&str]; 3] = [
        &["--http1.1", "--tlsv1.3"],
        &["--http2", "--tlsv1.3"],
        &["--http1.1", "--tls-max", "1.2"],
    ];
    for (flags, version) in flags.into_iter().zip(["1.1", "2", "1.1"]) {
        let resolve = resolve(tls_addr);
        let mut args = flags.to_vec();
        args.extend(["--cacert", cacert, "--resolve", &resolve]);
        let url = url("/hello/");
        args.extend(["-w", "\n%{http_code} %{http_version}", &url]);
        let out = curl(&args);
        assert!(out.ok, "curl {flags:?}: {}", out.stderr);
        assert_eq!(
            out.stdout,
            format!("hello from hello@1.0.0\n\n200 {version}"),
            "curl {flags:?}"
        );
    }
    // A client that does not trust the certificate refuses it.
    let untrusted = curl(&["--resolve", &resolve(tls_addr), &url("/hello/")]);
    assert!(!untrusted.ok, "{untrusted:?}");

    // The same apps on plain HTTP.
    let plain = get(&host, "/hello/").await;
    assert_eq!(
        (plain.status, plain.body.as_str()),
        (200, "hello from hello@1.0.0\n")
    );

    // A session started over TLS gets a Secure cookie; over plain HTTP it does not (the
    // default `cookie_secure` is off while plain HTTP serves apps).
    let over_tls = curl(&[
        "-i",
        "--cacert",
        cacert,
        "--resolve",
        &resolve(tls_addr),
        &url("/counter/"),
    ]);
    let set_cookie = over_tls
        .stdout
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie over TLS: {}", over_tls.stdout));
    assert!(set_cookie.contains("; Secure"), "{set_cookie}");
    let over_plain = get(&host, "/counter/").await;
    let cookie = over_plain.header("set-cookie");
    assert!(
        cookie.starts_with("BATON_SESSION=") && !cookie.contains("Secure"),
        "{cookie}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_from_a_rustls_client_and_a_rotated_certificate_spares_held_connections() {
    let (first_ca, second_ca) = (TestCa::new("first CA"), TestCa::new("second CA"));
    let certs = tempfile::tempdir().unwrap();
    let first = first_ca.issue();
    let tls = write_pair(certs.path(), &first);
    let (host, addr) = hello_tls(&tls, "");

    // HTTP/2 by ALPN.
    let mut h2 = connect(addr, first_ca.client(&[b"h2", b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
    let (reply, version) = h2.get("/hello/").await.unwrap();
    assert_eq!((reply.status, version), (200, http::Version::HTTP_2));
    assert_eq!(reply.version(), "hello@1.0.0");

    // An HTTP/1.1 keep-alive connection held across the rotation.
    let mut held = answering(addr, first_ca.client(&[b"http/1.1"])).await;
    assert_eq!(held.leaf, first.leaf);

    let second = second_ca.issue();
    write_pair(certs.path(), &second);
    host.wait_log(WAIT, |l| {
        l["message"] == "TLS certificate reloaded; new connections use it"
            && l["trigger"] == "file change"
    });
    // The held connections carry on with the old certificate...
    let (reply, _) = held
        .get("/hello/")
        .await
        .expect("the held connection still works");
    assert_eq!(reply.status, 200);
    assert_eq!(h2.get("/hello/").await.unwrap().0.status, 200);
    // ...new ones get the new certificate, which a client of the old CA refuses.
    let fresh = eventually(
        WAIT,
        "a new connection with the new certificate",
        async || connect(addr, second_ca.client(&[b"http/1.1"])).await.ok(),
    )
    .await;
    assert_eq!(fresh.leaf, second.leaf);
    let refused = connect(addr, first_ca.client(&[b"http/1.1"])).await;
    assert!(
        refused.is_err(),
        "the old CA's client accepted the new certificate"
    );

    // A key that does not match the certificate is refused; the certificate in use stays.
    replace_file(&certs.path().join("key.pem"), &second_ca.issue().key_pem);
    support::logged_error(
        &host,
        "new TLS certificate or key refused; the previous certificate keeps serving",
        "does not match",
    );
    let after = answering(addr, second_ca.client(&[b"http/1.1"])).await;
    assert_eq!(after.leaf, second.leaf);
    assert_eq!(held.get("/hello/").await.unwrap().0.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervised_host_serves_https_and_sighup_reloads_the_certificate() {
    let (first_ca, second_ca) = (TestCa::new("first CA"), TestCa::new("second CA"));
    let certs = tempfile::tempdir().unwrap();
    let tls = write_pair(certs.path(), &first_ca.issue());
    // File watching off, so only the signal reloads.
    let host = tls_host(
        vec![hello("1.0.0")],
        &format!("{tls}watch = false\n"),
        "",
        true,
    );
    let addr = host.tls_addr.unwrap();
    let serving = host.wait_log(WAIT, |l| l["message"] == "listening")["pid"]
        .as_u64()
        .unwrap();
    assert_ne!(
        serving,
        u64::from(host.pid()),
        "served by the serving process"
    );
    let mut conn = answering(addr, first_ca.client(&[b"h2"])).await;

    let second = second_ca.issue();
    write_pair(certs.path(), &second);
    // Not watched: new connections still get the first certificate.
    let mut still = answering(addr, first_ca.client(&[b"http/1.1"])).await;

    // SIGHUP to the supervisor reaches the serving process, which reloads and keeps serving.
    host.signal(Signal::HUP);
    host.wait_log(WAIT, |l| {
        l["message"] == "TLS certificate reloaded; new connections use it"
            && l["trigger"] == "SIGHUP"
    });
    let fresh = answering(addr, second_ca.client(&[b"http/1.1"])).await;
    assert_eq!(fresh.leaf, second.leaf);
    assert_eq!(conn.get("/hello/").await.unwrap().0.status, 200);
    assert_eq!(still.get("/hello/").await.unwrap().0.status, 200);
    assert!(
        !host
            .log_lines()
            .iter()
            .any(|l| l["message"] == "serving process died; starting a new one"),
        "SIGHUP must not end the serving process"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_host_keeps_serving_https_and_its_new_supervisor_passes_the_listener_on() {
    let upgraded = baton_binary("9.9.9-upgraded");
    let (ca, _certs, tls) = certificates();
    let bin = tempfile::tempdir().unwrap();
    let binary = bin.path().join("baton");
    std::fs::copy(env!("CARGO_BIN_EXE_baton"), &binary).unwrap();
    let host = HostProc::start_with(HostOptions {
        modules: vec![hello("1.0.0")],
        config: tls,
        args: vec!["--listen-tls".into(), "127.0.0.1:0".into()],
        supervised: true,
        binary: Some(binary.clone()),
        ..HostOptions::default()
    });
    let addr = host.tls_addr.unwrap();
    let client = ca.client(&[b"h2", b"http/1.1"]);
    let _before = answering(addr, client.clone()).await;
    let old_pid = status(&host).await["host"]["pid"].as_u64().unwrap();
    // A client whose handshake has not started when the hand-over begins.
    let pending = tokio::net::TcpStream::connect(addr).await.unwrap();

    let tmp = binary.with_extension("new");
    std::fs::copy(&upgraded, &tmp).unwrap();
    std::fs::rename(&tmp, &binary).unwrap();
    let admin = host.admin.to_string();
    let upgrade = tokio::spawn(async move { baton(&["upgrade", "--admin", &admin], &[]).await });
    host.wait_log(WAIT, |l| {
        l["message"] == "handing over to the new serving process"
    });
    // The old process finishes that handshake and answers, telling the client to reconnect.
    let mut late = handshake(pending, ca.client(&[b"http/1.1"])).await.unwrap();
    let (reply, _) = late.get("/hello/").await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("connection"), "close");
    let run = upgrade.await.unwrap();
    assert!(run.ok, "{run:?}");
    host.wait_log(WAIT, |l| {
        l["message"] == "supervisor started" && l["version"] == "9.9.9-upgraded"
    });
    let new_pid = status(&host).await["host"]["pid"].as_u64().unwrap();
    assert_ne!(new_pid, old_pid);
    let _after = answering(addr, client.clone()).await;

    // The re-executed supervisor still holds the HTTPS listener: a new serving process after a
    // crash serves it.
    support::kill(new_pid as u32, Signal::KILL);
    let mut third = eventually(WAIT, "HTTPS from a third serving process", async || {
        let pid = status(&host).await["host"]["pid"].as_u64()?;
        if pid == new_pid || pid == old_pid {
            return None;
        }
        connect(addr, client.clone()).await.ok()
    })
    .await;
    let (reply, _) = third.get("/hello/").await.unwrap();
    assert_eq!((reply.status, reply.version()), (200, "hello@1.0.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_redirected_to_https_and_health_stays_on_the_admin_listener() {
    let (ca, certs, tls) = certificates();
    let (host, tls_addr) = hello_tls(&format!("{tls}redirect_http = true\n"), "");
    let host_header = format!("localhost:{}", host.addr.port());
    let reply = Http::new()
        .get_with(&host.url("/hello/there?x=1"), &[("host", &host_header)])
        .await;
    assert_eq!(reply.status, 308);
    let location = format!("https://localhost:{}/hello/there?x=1", tls_addr.port());
    assert_eq!(reply.header("location"), location);
    assert_eq!(reply.header("x-baton-version"), "", "no app answered");

    // curl follows it to the app, over TLS.
    let ca_file = certs.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let followed = curl(&[
        "-L",
        "--cacert",
        ca_file.to_str().unwrap(),
        "--resolve",
        &resolve(tls_addr),
        "-H",
        &format!("Host: {host_header}"),
        &host.url("/hello/"),
    ]);
    assert!(followed.ok, "{followed:?}");
    assert_eq!(followed.stdout, "hello from hello@1.0.0\n");

    for health in ["/healthz", "/readyz"] {
        let reply = Http::new().get(&host.admin_url(health)).await;
        assert_eq!(reply.status, 200, "{health}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_are_held_to_the_handshake_timeout_and_the_connection_cap() {
    let (ca, _certs, tls) = certificates();
    let (host, addr) = hello_tls(
        &format!("{tls}handshake_timeout_ms = 300\n"),
        "[http]\nmax_connections = 2\n",
    );

    // A client that connects and never says hello is closed after the handshake timeout.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let opened = Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, silent.read(&mut buf))
        .await
        .expect("the server closes a connection whose handshake stalls");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        opened.elapsed() >= Duration::from_millis(250),
        "{:?}",
        opened.elapsed()
    );

    // TLS connections count against the cap: at the cap the longest-idle one is closed to
    // make room, and the newest is served.
    let client = ca.client(&[b"http/1.1"]);
    let mut oldest = answering(addr, client.clone()).await;
    let _newer = answering(addr, client.clone()).await;
    let _third = answering(addr, client.clone()).await;
    assert!(
        oldest.get("/hello/").await.is_err(),
        "the longest-idle TLS connection was closed to make room"
    );
    host.wait_log(WAIT, |l| {
        l["message"]
            == "connection limit reached; closing the longest-idle connections to make room"
    });
}

/// Runs `baton serve` with `tls` and `--listen-tls`; returns its exit code and stderr.
fn serve_exit(tls: &str, supervised: bool) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("baton.toml");
    std::fs::write(&config, tls).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--listen-tls", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--modules")
        .arg(dir.path().join("modules"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args((!supervised).then_some("--no-supervisor"))
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_missing_unreadable_or_mismatched_certificate_or_key_exits_64() {
    let (ca, certs, _) = certificates();
    let d = certs.path();
    std::fs::write(d.join("other-key.pem"), ca.issue().key_pem).unwrap();
    std::fs::create_dir(d.join("a-directory.pem")).unwrap();
    let table = |cert: &str, key: &str| {
        format!(
            "[tls]\ncert = {:?}\nkey = {:?}\n",
            d.join(cert),
            d.join(key)
        )
    };
    for (tls, expected, supervised) in [
        (
            table("missing.pem", "key.pem"),
            "cannot read the TLS certificate",
            true,
        ),
        (
            table("cert.pem", "a-directory.pem"),
            "cannot read the TLS key",
            false,
        ),
        (
            table("cert.pem", "other-key.pem"),
            "does not match the certificate",
            true,
        ),
        (table("key.pem", "key.pem"), "holds no CERTIFICATE", false),
        (table("cert.pem", "cert.pem"), "holds no private key", false),
        ("".to_owned(), "tls.cert is required", true),
    ] {
        let (code, stderr) = serve_exit(&tls, supervised);
        assert_eq!(code, Some(64), "{tls}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{tls}: expected {expected:?} in {stderr}"
        );
    }
}
