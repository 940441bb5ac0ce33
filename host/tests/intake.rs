//! Module intake that cannot crash the host: truncated module files (dropped, renamed into
//! place, uploaded, left there across a restart) are refused by name and reason while the other
//! apps keep serving; plain `cp` storms over a live file never load a partial copy; a module
//! linked with `-z nodelete` is still unloaded after a swap. The ELF checks themselves run
//! in-process over every short prefix and a fixed-seed set of mutations of a real module.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use baton_host::loader::{self, LoadError};
use serde_json::Value;
use support::http::Http;
use support::load::{Load, assert_no_failures, assert_served};
use support::{
    GUARD_OFF, HostOptions, HostProc, app, counter, eventually, get, hello, mapped, module, status,
};

const WAIT: Duration = Duration::from_secs(60);

/// A small deterministic generator (xorshift64*), so every run tries the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Whether `result` refuses its input as incomplete: a part ends past the file, or not even
/// the ELF header is complete.
fn refused_as_truncated(result: &Result<loader::Checked, LoadError>) -> bool {
    match result {
        Err(e) if e.is_truncated() => {
            matches!(e, LoadError::Truncated { end, len, .. } if end > len)
        }
        Err(LoadError::NotElf { .. }) => true,
        _ => false,
    }
}

#[test]
fn every_prefix_of_a_real_module_is_refused_as_truncated() {
    let bytes = std::fs::read(hello("1.0.0")).unwrap();
    assert!(loader::check(&bytes).is_ok(), "the whole module passes");
    let len = bytes.len();
    // Every length in the first 64 KiB, then every 4 KiB step, plus odd lengths near the end.
    let mut lengths: Vec<usize> = (0..=65_536.min(len - 1)).collect();
    lengths.extend((65_536..len).step_by(4096));
    lengths.extend([len / 2 + 3, len - 4095, len - 64, len - 7, len - 1]);
    for n in lengths {
        let result = loader::check(&bytes[..n]);
        assert!(
            refused_as_truncated(&result),
            "a {n}-byte prefix of a {len}-byte module: {result:?}"
        );
    }
}

#[test]
fn mutated_modules_never_panic_the_checks_and_truncated_ones_are_refused() {
    let mut bytes = std::fs::read(hello("1.0.0")).unwrap();
    let len = bytes.len();
    // The ELF header, the program headers behind it and the section header table at the end
    // are where offsets and sizes live.
    let shoff = u64::from_le_bytes(bytes[0x28..0x30].try_into().unwrap()) as usize;
    assert!(shoff < len, "section header table inside the module");
    let regions = [(0, 4096), (shoff, len)];
    let interesting = [
        0,
        1,
        0x40,
        0xffff,
        len as u64 - 1,
        len as u64,
        len as u64 + 1,
        1 << 32,
        1 << 63,
        u64::MAX,
    ];
    let mut rng = Rng(0x5eed_ba70_1234_5678);
    let (mut refused, mut truncated) = (0, 0);
    for _ in 0..6000 {
        let (start, end) = regions[rng.below(regions.len())];
        let at = start + rng.below(end - start);
        let width = [1, 2, 4, 8][rng.below(4)];
        let at = (at & !(width - 1)).min(len - width);
        let original = bytes[at..at + width].to_vec();
        match rng.below(3) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => {
                let value = interesting[rng.below(interesting.len())].to_le_bytes();
                bytes[at..at + width].copy_from_slice(&value[..width]);
            }
            _ => {
                let value = rng.next().to_le_bytes();
                bytes[at..at + width].copy_from_slice(&value[..width]);
            }
        }
        // A third of the inputs are also cut short.
        let cut = if rng.below(3) == 0 {
            rng.below(len)
        } else {
            len
        };
        let result = loader::check(&bytes[..cut]);
        if result.is_err() {
            refused += 1;
        }
        if cut < len {
            truncated += 1;
            assert!(
                result.is_err(),
                "a {cut}-byte prefix with a mutation at {at} passed"
            );
        }
        bytes[at..at + width].copy_from_slice(&original);
    }
    assert!(loader::check(&bytes).is_ok(), "every mutation was undone");
    assert!(
        truncated > 1000 && refused > truncated,
        "{refused} refused, {truncated} truncated"
    );
}

/// Prefix lengths tried against a real host: a representative spread of the in-process sweep.
fn spread(len: usize) -> Vec<usize> {
    let mut lengths = vec![0, 1, 63, 64, 700, 4096, 30_681, 65_536, 65_537];
    lengths.extend([len / 4, len / 2, len * 3 / 4, len - 4096, len - 1]);
    lengths
}

fn write_prefix(dir: &Path, bytes: &[u8], n: usize) -> PathBuf {
    let path = dir.join(format!("prefix-{n}"));
    std::fs::write(&path, &bytes[..n]).unwrap();
    path
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

#[test]
fn each_refusal_is_a_load_error_naming_its_cause() {
    use baton_host::Error;
    use baton_sdk::abi::{ABI_MAJOR, ABI_MINOR, SDK_VERSION};
    let open = |file: &Path| loader::Module::open(file, file).map(drop);
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("missing.so");
    match open(&missing) {
        Err(Error::Load {
            path,
            source: LoadError::Read { source },
        }) => {
            assert_eq!(path, missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }

    let garbage = dir.path().join("garbage.so");
    std::fs::write(&garbage, b"this is not an ELF file").unwrap();
    assert!(
        matches!(
            open(&garbage),
            Err(Error::Load {
                source: LoadError::NotElf { len: 23 },
                ..
            })
        ),
        "{:?}",
        open(&garbage)
    );

    match open(&module("fixture-nosymbol", &[])) {
        Err(Error::Load { source, .. }) => assert!(source.is_not_a_module(), "{source:?}"),
        other => panic!("{other:?}"),
    }

    match open(&module("fixture-badabi", &[])) {
        Err(Error::Load {
            source: source @ LoadError::AbiMajor { module, host, .. },
            ..
        }) => {
            assert!(source.is_abi_mismatch());
            assert_eq!(
                (module, host),
                ((ABI_MAJOR + 1, ABI_MINOR), (ABI_MAJOR, ABI_MINOR))
            );
            assert!(
                matches!(&source, LoadError::AbiMajor { module_sdk, .. } if module_sdk == SDK_VERSION)
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_modules_dropped_or_uploaded_are_refused_and_the_host_keeps_serving() {
    let host = HostProc::start(&[hello("1.0.0"), counter("1.0.0")]);
    let load = Load::start(host.url("/hello/"), 4);
    let bytes = std::fs::read(hello("2.0.0")).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let lengths = spread(bytes.len());

    // Dropped: half with the copy-then-rename convention, half written in place.
    for (i, &n) in lengths.iter().enumerate() {
        let name = format!("hello-cut-{n}.so");
        if i % 2 == 0 {
            host.drop_module(&write_prefix(scratch.path(), &bytes, n), &name);
        } else {
            std::fs::write(host.modules_dir().join(&name), &bytes[..n]).unwrap();
        }
        let line = host.wait_log(WAIT, |l| {
            l["message"] == "deploy failed" && l["error"].as_str().unwrap_or("").contains(&name)
        });
        let error = line["error"].as_str().unwrap();
        if n < 64 {
            assert!(error.contains("not an ELF file"), "{error}");
        } else {
            assert!(error.contains(&format!("{name}: truncated: ")), "{error}");
            assert!(error.contains("but the file has"), "{error}");
        }
        let r = get(&host, "/counter/").await;
        assert_eq!(r.status, 200, "other apps keep serving");
    }
    let s = status(&host).await;
    let rejected = s["rejected"].as_array().unwrap();
    for n in &lengths {
        let r = rejected
            .iter()
            .find(|r| {
                r["file"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("hello-cut-{n}.so"))
            })
            .unwrap_or_else(|| panic!("hello-cut-{n}.so not rejected in {s:#}"));
        assert!(!r["error"].as_str().unwrap().is_empty());
    }
    let metrics = Http::new().get(&host.admin_url("/metrics")).await.body;
    assert_eq!(
        metric(&metrics, "baton_module_rejections_total"),
        Some(lengths.len() as f64),
        "{metrics}"
    );

    // Uploaded: a 400 naming the reason.
    for n in [100, 30_681, bytes.len() / 2, bytes.len() - 1] {
        let r = Http::new()
            .send(
                "POST",
                &host.admin_url("/apps?name=hello-upload.so"),
                &[],
                bytes[..n].to_vec(),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{}", r.body);
        let error = r.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains("truncated: "), "{error}");
        assert!(error.contains("hello-upload.so"), "{error}");
    }
    assert_no_failures(&load.stop().await);
    assert_eq!(app(&status(&host).await, "hello")["active"], "1.0.0");

    // A restart with every truncated file still there starts and serves.
    let pid = host.pid();
    let host = host.restart();
    assert_ne!(host.pid(), pid);
    let r = get(&host, "/hello/").await;
    assert_eq!((r.status, r.version()), (200, "hello@1.0.0"));
    assert_eq!(get(&host, "/counter/").await.status, 200);
    host.wait_log(WAIT, |l| {
        l["message"] == "deploy failed"
            && l["error"]
                .as_str()
                .unwrap_or("")
                .contains("hello-cut-30681.so: truncated")
    });

    // A refused file is tried again when it changes: completed, it deploys.
    std::fs::write(host.modules_dir().join("hello-cut-30681.so"), &bytes).unwrap();
    eventually(WAIT, "hello@2.0.0 active", async || {
        (app(&status(&host).await, "hello")["active"] == "2.0.0").then_some(())
    })
    .await;
    let s = status(&host).await;
    assert!(
        !s["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["file"].as_str().unwrap().ends_with("hello-cut-30681.so")),
        "{s:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_module_linked_with_nodelete_is_unloaded_after_a_swap() {
    let v1 = module("fixture-nodelete", &[("BATON_APP_VERSION", "1.0.0")]);
    let v2 = module("fixture-nodelete", &[("BATON_APP_VERSION", "2.0.0")]);
    let checked = loader::check(&std::fs::read(&v1).unwrap()).unwrap();
    assert!(
        checked.nodelete().is_some(),
        "the fixture is linked with -z nodelete"
    );
    let plain = loader::check(&std::fs::read(hello("1.0.0")).unwrap()).unwrap();
    assert!(plain.nodelete().is_none());

    // The swap below checks the old version is unmapped: no guard window keeps it in standby.
    let host = HostProc::start_with_config(&[v1], GUARD_OFF);
    host.wait_log(WAIT, |l| {
        l["level"] == "WARN"
            && l["message"]
                .as_str()
                .unwrap_or("")
                .contains("DF_1_NODELETE")
    });
    let r = get(&host, "/nodelete/").await;
    assert_eq!((r.status, r.version()), (200, "nodelete@1.0.0"));
    let s = status(&host).await;
    let copy = app(&s, "nodelete")["versions"][0]["copy"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        !mapped(host.pid(), &copy).is_empty(),
        "v1 is mapped while active"
    );
    let copied = loader::check(&std::fs::read(&copy).unwrap()).unwrap();
    assert!(
        copied.nodelete().is_none(),
        "the flag is cleared in the private copy"
    );
    for file in std::fs::read_dir(host.modules_dir()).unwrap().flatten() {
        let original = loader::check(&std::fs::read(file.path()).unwrap()).unwrap();
        assert!(
            original.nodelete().is_some(),
            "the operator's file is untouched"
        );
    }

    host.drop_module(&v2, "nodelete-v2.so");
    let entry = eventually(WAIT, "nodelete@1.0.0 retired", async || {
        let s = status(&host).await;
        let a = app(&s, "nodelete");
        a["versions"]
            .as_array()?
            .iter()
            .find(|v| v["version"] == "1.0.0" && v["state"] == "retired")
            .cloned()
    })
    .await;
    assert!(entry["error"].is_null(), "{entry:#}");
    assert_eq!(
        mapped(host.pid(), &copy),
        Vec::<String>::new(),
        "v1 unmapped"
    );
    let r = get(&host, "/nodelete/").await;
    assert_eq!((r.status, r.version()), (200, "nodelete@2.0.0"));
}

/// Waits until the host's log has not grown for `quiet`: the watcher has acted on every event.
async fn quiet_log(host: &HostProc, quiet: Duration) {
    let mut seen = host.log_lines().len();
    let mut since = Instant::now();
    let deadline = Instant::now() + WAIT;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = host.log_lines().len();
        if now != seen {
            (seen, since) = (now, Instant::now());
        } else if since.elapsed() >= quiet {
            return;
        }
        assert!(Instant::now() < deadline, "the host's log never went quiet");
    }
}

/// `cp SOURCE TARGET` 50 times, 20 ms apart, cycling through `sources`, under keep-alive load;
/// then checks that the host stayed up, failed no request, never loaded a partial file and
/// ends with the last file active. Returns how many versions were loaded.
async fn cp_storm(sources: &[(PathBuf, &str)]) -> usize {
    let (first, first_version) = &sources[0];
    let host = HostProc::start_with(HostOptions {
        modules: vec![first.clone()],
        // The load's access lines would drown the log this test reads; versions replaced go
        // straight to retired, with no guard window in standby.
        config: format!("access_log = false\n{GUARD_OFF}"),
        ..HostOptions::default()
    });
    let live = std::fs::read_dir(host.modules_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "so"))
        .unwrap();
    let r = get(&host, "/hello/").await;
    assert_eq!(r.version(), format!("hello@{first_version}"));
    let load = Load::start(host.url("/hello/"), 8);
    let mut last = None;
    for k in 1..=50 {
        // The 50th copy is of the last source.
        let (source, version) = &sources[(51 - k) % sources.len()];
        let status = tokio::process::Command::new("cp")
            .arg(source)
            .arg(&live)
            .status()
            .await
            .unwrap();
        assert!(status.success());
        last = Some((source.clone(), *version));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (last_source, last_version) = last.unwrap();
    let active = eventually(WAIT, "the last file active", async || {
        let s = status(&host).await;
        let a = app(&s, "hello");
        (a["active"] == last_version).then(|| a.clone())
    })
    .await;
    quiet_log(&host, Duration::from_secs(3)).await;
    let samples = load.stop().await;
    assert_served(&samples, 100);

    let s = status(&host).await;
    let hello_app = app(&s, "hello");
    assert_eq!(hello_app["active"], last_version, "{s:#}");
    let expected: Vec<&str> = sources.iter().map(|(_, v)| *v).collect();
    for v in hello_app["versions"].as_array().unwrap() {
        assert!(expected.contains(&v["version"].as_str().unwrap()), "{v:#}");
        assert!(v["state"] == "active" || v["state"] == "retired", "{v:#}");
    }
    let active_copy = active["versions"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|v| v["state"] == "active")
        .unwrap()["copy"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        std::fs::read(&active_copy).unwrap() == std::fs::read(&last_source).unwrap(),
        "the active version was loaded from the complete last file"
    );
    assert_eq!(s["rejected"], serde_json::json!([]), "{s:#}");

    // Every version loaded came from a complete file; anything else was refused before it was
    // mapped, or waited for its writer.
    let lines = host.log_lines();
    for l in lines.iter().filter(|l| l["message"] == "loading") {
        assert!(
            expected.contains(&l["version"].as_str().unwrap_or("")),
            "{l}"
        );
    }
    let refusals: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "deploy failed")
        .collect();
    for l in &refusals {
        let error = l["error"].as_str().unwrap_or("");
        assert!(
            error.contains("truncated: ") || error.contains("not an ELF file"),
            "only incomplete files are refused: {l}"
        );
    }
    let waits = lines
        .iter()
        .filter(|l| l["message"] == "module file still being written")
        .count();
    let loads = lines.iter().filter(|l| l["message"] == "loading").count();
    eprintln!(
        "{} requests, {loads} loads, {waits} copies discarded as unsettled, {} refused as \
         incomplete",
        samples.len(),
        refusals.len()
    );
    let r = get(&host, "/hello/").await;
    assert_eq!(r.version(), format!("hello@{last_version}"));
    loads
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_plain_cps_of_the_same_bytes_under_load_change_nothing() {
    let loads = cp_storm(&[(hello("1.0.0"), "1.0.0")]).await;
    assert_eq!(
        loads, 1,
        "only the version the host started with was ever loaded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_plain_cps_alternating_v1_and_v2_under_load_end_with_the_last_one() {
    let loads = cp_storm(&[(hello("1.0.0"), "1.0.0"), (hello("2.0.0"), "2.0.0")]).await;
    assert!(loads >= 2, "v2 was deployed");
}
