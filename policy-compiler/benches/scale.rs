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
//! After criterion, the lookups again in interleaved rounds (per-round growth ratios), written
//! to `target/scale/native_interleaved.json` for the report.
//!
//! `cargo bench -p policy-compiler --bench scale -- --warm-up-time 1 --measurement-time 3`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

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

    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--test" || a == "--list") {
        interleaved(&engines, &alice);
    }
}

/// Interleaved rounds, and calls timed per route count per round.
const ROUNDS: usize = 21;
const CALLS: usize = 20_000;

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// The lookups again, in interleaved rounds: each round times every route count back to
/// back (order rotated each round), and the growth ratio is taken per round. On a shared
/// machine a burst of load then spoils one round, not one route count. Written to
/// `target/scale/native_interleaved.json` (the format of the wasm bench's file) for the
/// report.
fn interleaved(engines: &[(usize, Engine, [Probe; 3])], alice: &Subject) {
    type Op = fn(&Engine, &Probe, &Request<'_>, &Subject) -> bool;
    let ops: [(&str, Op); 3] = [
        ("route_by_id", |e, p, _, _| {
            black_box(e.route_by_id(black_box(&p.route_id))).is_some()
        }),
        ("find_route", |e, p, _, _| {
            black_box(e.find_route(black_box(&p.authority), black_box(&p.path))).is_some()
        }),
        ("find_route_evaluate", |e, p, req, who| {
            e.find_route(black_box(&p.authority), black_box(&p.path))
                .map(|r| black_box(e.evaluate(r, black_box(req), Some(who))))
                .is_some()
        }),
    ];
    let mut rows = Vec::new();
    for (mode, op) in ops {
        for pi in 0..3 {
            let mut times = vec![[0.0f64; 3]; ROUNDS];
            for (round, t) in times.iter_mut().enumerate() {
                for k in 0..engines.len() {
                    let slot = (k + round) % engines.len();
                    let (_, e, probes) = &engines[slot];
                    let p = &probes[pi];
                    let req = Request::new("GET", &p.path, NOW);
                    let start = std::time::Instant::now();
                    for _ in 0..CALLS {
                        black_box(op(e, p, &req, alice));
                    }
                    t[slot] = start.elapsed().as_nanos() as f64 / CALLS as f64;
                }
            }
            let per: Vec<serde_json::Value> = (0..engines.len())
                .map(|i| {
                    let mut col: Vec<f64> = times.iter().map(|t| t[i]).collect();
                    serde_json::json!([engines[i].0, median(&mut col)])
                })
                .collect();
            let mut ratios: Vec<f64> = times.iter().map(|t| t[2] / t[0]).collect();
            let m = median(&mut ratios);
            println!(
                "scale interleaved {mode}/{}: ×{m:.2} ({:.2}–{:.2}) 10→10 000 routes",
                engines[0].2[pi].name,
                ratios[0],
                ratios[ROUNDS - 1]
            );
            rows.push(serde_json::json!({
                "mode": mode,
                "probe": engines[0].2[pi].name,
                "per_request_ns": per,
                "ratio": [m, ratios[0], ratios[ROUNDS - 1]],
                "net_ratio": null,
            }));
        }
    }
    let doc = serde_json::json!({
        "rounds": ROUNDS,
        "requests": CALLS,
        "floor_ns": null,
        "rows": rows,
    });
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        std::path::PathBuf::from,
    );
    let out = target.join("scale/native_interleaved.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, doc.to_string()).unwrap();
    println!("wrote {}", out.display());
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
