//! Issue 7, scenario "Scale", inside the VM: one whole request through the real release
//! `filter.wasm` (`$PORTCULLIS_WASM`, else `target/wasm32-wasip1/release/filter.wasm`) on
//! the wasmtime host, with generated bundles of 10, 1 000 and 10 000 routes.
//!
//! Per iteration: `on_context_create` + `on_request_headers` + `on_done`/`on_log`/
//! `on_delete` for one request with a session cookie, plus the host's own bookkeeping
//! (the same at every route count, so growth is the filter's). Probes
//! (`policy_compiler::testing::probes`): `early` / `late` = a cached session on the first /
//! last host's `/admin` route (domain + groups policy, identity headers): cookie open,
//! cache hit, evaluation, JWT + claim header; `missing` = an unknown route (403 named,
//! 404 looked up), refused before any session work.
//!
//! Groups: `wasm_scale_named/<probe>/<n>` (Envoy names the route: `route_by_id`) and
//! `wasm_scale_unnamed/<probe>/<n>` (no route name: `find_route` on host + path in the VM);
//! `wasm_scale_floor/noop`: the same request through the no-op module of `make bench`
//! (`bench/noop-filter`, skipped when not built): what the host itself costs.
//!
//! `cargo bench -p proxy-wasm-test-host --bench wasm_scale -- --warm-up-time 1 --measurement-time 3`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use proxy_wasm_test_host::scale::{self, SIZES};
use proxy_wasm_test_host::{Action, Process, fixtures, wasm_path};

fn bench(c: &mut Criterion) {
    let process = Process::load(&wasm_path()).expect("filter.wasm (run `make wasm`)");
    // One VM per route count, each checked by `prepare` (hits are hits, misses refused).
    let mut vms: Vec<_> = SIZES
        .iter()
        .map(|&n| {
            let (vm, probes) = scale::prepare(&process, n).expect("prepare");
            (n, vm, probes)
        })
        .collect();
    for (group, named) in [("wasm_scale_named", true), ("wasm_scale_unnamed", false)] {
        let mut g = c.benchmark_group(group);
        for (n, vm, probes) in &mut vms {
            for p in probes.iter() {
                let want = if p.status.is_some() {
                    Action::Pause
                } else {
                    Action::Continue
                };
                assert_eq!(scale::send(vm, p, named).unwrap(), want);
                g.bench_function(BenchmarkId::new(p.probe.name, *n), |b| {
                    b.iter(|| black_box(scale::send(vm, black_box(p), named).unwrap()))
                });
            }
        }
        g.finish();
    }
    // The host's own cost for the same request: the no-op module (built by `make bench`).
    let noop = scale::noop_wasm_path();
    if !noop.is_file() {
        eprintln!(
            "wasm_scale_floor not measured: {} missing (`cargo build --release --target wasm32-wasip1 -p portcullis-bench-noop`)",
            noop.display()
        );
        return;
    }
    let floor = Process::load(&noop).expect("no-op module");
    let mut vm = floor.vm().expect("vm");
    assert!(vm.configure("").expect("configure"));
    let cookie = fixtures::cookie_header(&fixtures::session_id(0), floor.now_ms() / 1000).unwrap();
    let probe = &policy_compiler::testing::probes(10)[0];
    let h = scale::headers(&probe.authority, &probe.path, &cookie);
    let props = [("xds.route_name", probe.route_id.as_str())];
    let mut g = c.benchmark_group("wasm_scale_floor");
    g.bench_function("noop", |b| {
        b.iter(|| {
            let (id, action) = vm.request(black_box(&h), &props).unwrap();
            vm.end_stream(id).unwrap();
            black_box(action)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
