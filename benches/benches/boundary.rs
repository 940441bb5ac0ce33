//! One request across the module boundary: the real `hello` module loaded with the host's
//! loader, `Instance::handle` called directly (no HTTP, no worker pool): request in, response
//! out, every byte copied into host memory.

use std::hint::black_box;
use std::sync::Arc;

use baton_host::loader::{MemoryIo, Module, ModuleRequest};
use criterion::{Criterion, criterion_group, criterion_main};

fn boundary(c: &mut Criterion) {
    let path = baton_benches::artifacts::hello_module(true, "1.0.0").expect("hello builds");
    let dir = tempfile::tempdir().expect("temporary directory");
    let copy = dir.path().join("hello.so");
    std::fs::copy(&path, &copy).expect("copy of the module");
    let module = Arc::new(Module::open(&copy, &path).expect("hello loads"));
    let instance = module.instantiate(b"{}").expect("hello initialises");

    let no_headers = http::HeaderMap::new();
    let mut browser = http::HeaderMap::new();
    for (name, value) in [
        ("host", "example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("connection", "keep-alive"),
        ("cookie", "BATONSESSION=3f1c2a9b8e7d6c5b4a3f2e1d0c9b8a7f"),
        ("upgrade-insecure-requests", "1"),
        ("sec-fetch-dest", "document"),
        ("sec-fetch-mode", "navigate"),
    ] {
        browser.insert(name, value.parse().expect("header value"));
    }

    let mut group = c.benchmark_group("boundary");
    for (name, headers) in [
        ("GET / no headers", &no_headers),
        ("GET / 10 headers", &browser),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let response = instance
                    .handle(
                        black_box(&ModuleRequest {
                            headers,
                            ..ModuleRequest::default()
                        }),
                        &mut MemoryIo::default(),
                    )
                    .expect("hello answers");
                black_box(response)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, boundary);
criterion_main!(benches);
