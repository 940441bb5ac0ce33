//! Route lookup and dispatch with `baton_sdk::Router` on a realistic table: a shop's REST API
//! of 30 routes with parameters, a catch-all tail, and requests that miss (404) or use the
//! wrong method (405).

use std::hint::black_box;

use baton_sdk::{Method, Request, Router};
use criterion::{Criterion, criterion_group, criterion_main};

struct Shop;

fn ok(_: &Shop, _: &Request<'_>) -> &'static str {
    "ok"
}

fn router() -> Router<Shop> {
    let mut router = Router::new().get("/", ok).get("/health", ok);
    for resource in ["users", "products", "orders", "carts", "reviews"] {
        let item = format!("/{resource}/{{id}}");
        router = router
            .get(&format!("/{resource}"), ok)
            .post(&format!("/{resource}"), ok)
            .get(&item, ok)
            .put(&item, ok)
            .delete(&item, ok);
    }
    router
        .get("/users/{id}/orders", ok)
        .get("/users/{id}/orders/{order}", ok)
        .get("/products/{id}/reviews", ok)
        .get("/static/{*path}", ok)
}

fn routes(c: &mut Criterion) {
    let router = router();
    let mut group = c.benchmark_group("router");
    for (name, method, path) in [
        ("static /health", "GET", "/health"),
        ("param /products/{id}", "GET", "/products/8812"),
        (
            "two params /users/{id}/orders/{order}",
            "GET",
            "/users/42/orders/1007",
        ),
        ("tail /static/{*path}", "GET", "/static/css/site.min.css"),
        ("miss 404", "GET", "/nowhere/at/all"),
        ("wrong method 405", "PATCH", "/orders/5"),
    ] {
        let method: Method = method.parse().expect("method");
        group.bench_function(name, |b| {
            b.iter(|| {
                let request = Request::builder(method.as_str(), black_box(path)).build();
                black_box(router.dispatch(&Shop, request))
            });
        });
    }
    group.finish();
}

criterion_group!(benches, routes);
criterion_main!(benches);
