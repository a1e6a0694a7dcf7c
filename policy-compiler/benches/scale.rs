//! Issue 7, scenario "Scale", natively: route lookup and policy evaluation with 10, 1 000 and
//! 10 000 routes (`policy_compiler::testing::config`), compile time of the 10 000-route
//! config, and evaluation on the seed config (`examples/demo/config.yaml`).
//!
//! Groups (criterion ids; `bench/src/scale.rs` reads their medians):
//! - `scale_route_by_id/<probe>/<n>`: Envoy names the route (the filter's normal path);
//! - `scale_find_route/<probe>/<n>`: host + path lookup (hand-written Envoy configs, ext_authz);
//! - `scale_find_route_evaluate/<probe>/<n>`: lookup + decision, as the filter without a
//!   route name does; for `missing` the lookup alone (there is nothing to evaluate);
//! - `scale_compile/10000`: YAML text → checked config → bundle bytes → `Engine`;
//! - `scale_seed_evaluate/admin-allow`: the demo's `admin` route (domain + groups), allowed.
//!
//! Probes: `early` = the first host's `/admin` route, `late` = the last host's, `missing` = a
//! host (and a route name) no route has.
//!
//! `cargo bench -p policy-compiler --bench scale -- --warm-up-time 1 --measurement-time 3`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use policy_compiler::compile;
use policy_compiler::config::{load_file, load_str};
use policy_compiler::eval::{Claims, Engine, Request, Subject};
use policy_compiler::testing::{self, Probe};

const SIZES: [usize; 3] = [10, 1_000, 10_000];
const NOW: i64 = 1_717_416_000;

fn compile_yaml(yaml: &str) -> Engine {
    let loaded = load_str("scale.yaml", yaml, &|_| None).expect("config");
    Engine::from_bytes(
        &compile::compile(&loaded.config)
            .expect("compiles")
            .to_bytes(),
    )
    .expect("bundle")
}

fn admin() -> Subject {
    let claims = serde_json::json!({
        "email": "alice@example.com",
        "groups": ["admins", "staff", "team-0"],
        "name": "Alice",
    });
    Subject::new(
        "u-1".into(),
        "alice@example.com".into(),
        Claims::from_json(claims.as_object().unwrap()),
    )
}

fn lookups(c: &mut Criterion) {
    let alice = admin();
    let engines: Vec<(usize, Engine, [Probe; 3])> = SIZES
        .iter()
        .map(|&n| (n, compile_yaml(&testing::config(n)), testing::probes(n)))
        .collect();
    // The probes must hit what they claim, or the numbers mean nothing.
    for (n, e, probes) in &engines {
        for p in probes {
            let found = e.find_route(&p.authority, &p.path);
            assert_eq!(found, e.route_by_id(&p.route_id), "n={n} {p:?}");
            assert_eq!(found.is_none(), p.name == "missing", "n={n} {p:?}");
            if let Some(r) = found {
                let req = Request::new("GET", &p.path, NOW);
                assert_eq!(e.evaluate(r, &req, Some(&alice)).as_str(), "allow");
            }
        }
    }

    let mut g = c.benchmark_group("scale_route_by_id");
    for (n, e, probes) in &engines {
        for p in probes {
            g.bench_with_input(BenchmarkId::new(p.name, n), p, |b, p| {
                b.iter(|| black_box(e.route_by_id(black_box(&p.route_id))))
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("scale_find_route");
    for (n, e, probes) in &engines {
        for p in probes {
            g.bench_with_input(BenchmarkId::new(p.name, n), p, |b, p| {
                b.iter(|| black_box(e.find_route(black_box(&p.authority), black_box(&p.path))))
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("scale_find_route_evaluate");
    for (n, e, probes) in &engines {
        for p in probes {
            let req = Request::new("GET", &p.path, NOW);
            g.bench_with_input(BenchmarkId::new(p.name, n), p, |b, p| {
                b.iter(|| {
                    e.find_route(black_box(&p.authority), black_box(&p.path))
                        .map(|r| black_box(e.evaluate(r, black_box(&req), Some(&alice))))
                })
            });
        }
    }
    g.finish();
}

fn compile_time(c: &mut Criterion) {
    let yaml = testing::config(10_000);
    let mut g = c.benchmark_group("scale_compile");
    // One compile takes tens of milliseconds: few samples, enough to see the median.
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.bench_function(BenchmarkId::from_parameter(10_000), |b| {
        b.iter(|| black_box(compile_yaml(black_box(&yaml))).route_count())
    });
    g.finish();
}

fn seed(c: &mut Criterion) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo/config.yaml");
    let loaded = load_file(&path).expect("seed config");
    let e = Engine::from_bytes(
        &compile::compile(&loaded.config)
            .expect("compiles")
            .to_bytes(),
    )
    .expect("bundle");
    let alice = admin();
    let r = e
        .find_route("127.0.0.3:8000", "/admin/users")
        .expect("route");
    assert_eq!(e.route(r).name, "admin");
    let req = Request::new("GET", "/admin/users", NOW);
    assert_eq!(e.evaluate(r, &req, Some(&alice)).as_str(), "allow");
    let mut g = c.benchmark_group("scale_seed_evaluate");
    g.bench_function("admin-allow", |b| {
        b.iter(|| black_box(e.evaluate(black_box(r), black_box(&req), Some(black_box(&alice)))))
    });
    g.finish();
}

criterion_group!(benches, lookups, compile_time, seed);
criterion_main!(benches);
