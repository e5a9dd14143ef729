//! Route matching (criterion): a request that only the last of 500 routes takes, each route
//! with a path prefix and a header condition, tried in order as the router does.
//!
//! Run: `cargo bench -p wasmgate-tests --bench routing`.

#![expect(missing_docs, reason = "criterion_group! generates an undocumented function")]

use criterion::{Criterion, criterion_group, criterion_main};
use wasmgate::config::RouteConfig;
use wasmgate::proxy::matcher::RouteMatch;

fn routes(count: usize) -> Vec<RouteMatch> {
    (0..count)
        .map(|i| {
            let text = format!(
                "upstream = \"o\"\npath_prefix = \"/svc{i}\"\nmethods = [\"GET\", \"POST\"]\n\
                 headers = [{{ name = \"x-tenant\", regex = \"t[0-9]+\" }}]\n\
                 query = [{{ name = \"v\", value = \"2\" }}]"
            );
            let config: RouteConfig = toml::from_str(&text).expect("route");
            RouteMatch::new(&config).expect("matches")
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let routes = routes(500);
    let request = http::Request::get("/svc499/items/7?v=2")
        .header("host", "api.example.org")
        .header("x-tenant", "t42")
        .header("user-agent", "bench/1.0")
        .header("accept", "*/*")
        .body(())
        .expect("request")
        .into_parts()
        .0;
    assert_eq!(routes.iter().position(|r| r.matches("api.example.org", &request)), Some(499));
    c.bench_function("route match, the last of 500", |b| {
        b.iter(|| routes.iter().position(|r| r.matches(std::hint::black_box("api.example.org"), &request)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
