//! Session attribute encoding: the JSON (serde_json) the sdk stores one attribute as, for a
//! typical attribute — a small shopping cart — and for a tiny one.

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    sku: String,
    name: String,
    quantity: u32,
    unit_price_cents: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cart {
    items: Vec<Item>,
    currency: String,
    coupon: Option<String>,
    updated_unix_ms: u64,
}

fn cart() -> Cart {
    let item = |sku: &str, name: &str, quantity, unit_price_cents| Item {
        sku: sku.to_owned(),
        name: name.to_owned(),
        quantity,
        unit_price_cents,
    };
    Cart {
        items: vec![
            item("SKU-10442", "Espresso beans, 1 kg", 2, 2_490),
            item("SKU-20017", "Milk frother", 1, 3_999),
            item("SKU-30988", "Ceramic cup, set of 4", 1, 2_450),
        ],
        currency: "EUR".to_owned(),
        coupon: Some("WELCOME10".to_owned()),
        updated_unix_ms: 1_767_225_600_000,
    }
}

/// Benchmarks encoding `value` and decoding its bytes (`encode NAME`, `decode NAME`), with the
/// encoded size as throughput; returns the bytes.
fn encode_and_decode<T: Serialize + DeserializeOwned>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    value: &T,
) -> Vec<u8> {
    let encoded = serde_json::to_vec(value).expect("encodes");
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.bench_function(format!("encode {name}"), |b| {
        b.iter(|| serde_json::to_vec(black_box(value)).expect("encodes"))
    });
    group.bench_function(format!("decode {name}"), |b| {
        b.iter(|| serde_json::from_slice::<T>(black_box(&encoded)).expect("decodes"))
    });
    encoded
}

fn session_json(c: &mut Criterion) {
    let mut group = c.benchmark_group("session attribute");
    let cart = cart();
    let encoded = encode_and_decode(&mut group, "cart", &cart);
    encode_and_decode(&mut group, "counter", &42_u64);
    group.finish();
    assert_eq!(
        serde_json::from_slice::<Cart>(&encoded).expect("decodes"),
        cart
    );
}

criterion_group!(benches, session_json);
criterion_main!(benches);
