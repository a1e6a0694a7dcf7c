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
//! After criterion, the same requests in interleaved rounds (every route count and the floor
//! timed back to back each round, order rotated; ratios per round), written to
//! `target/scale/wasm_interleaved.json` for the report: on a shared machine that is steadier
//! than dividing criterion medians measured minutes apart.
//!
//! `cargo bench -p proxy-wasm-test-host --bench wasm_scale -- --warm-up-time 1 --measurement-time 3`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use proxy_wasm_test_host::scale::{self, SIZES};
use proxy_wasm_test_host::{Action, Process, fixtures, wasm_path};

/// Interleaved rounds, and requests timed per route count per round.
const ROUNDS: usize = 21;
const REQUESTS: usize = 1_000;

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
    let floor = if noop.is_file() {
        let process = Process::load(&noop).expect("no-op module");
        let mut vm = process.vm().expect("vm");
        assert!(vm.configure("").expect("configure"));
        let probe = policy_compiler::testing::probes(10)[0].clone();
        let cookie =
            fixtures::cookie_header(&fixtures::session_id(0), process.now_ms() / 1000).unwrap();
        let p = scale::Prepared {
            probe,
            cookie,
            status: None,
        };
        let mut g = c.benchmark_group("wasm_scale_floor");
        g.bench_function("noop", |b| {
            b.iter(|| black_box(scale::send(&mut vm, &p, true).unwrap()))
        });
        g.finish();
        Some((vm, p))
    } else {
        eprintln!(
            "wasm_scale_floor not measured: {} missing (`cargo build --release --target wasm32-wasip1 -p portcullis-bench-noop`)",
            noop.display()
        );
        None
    };

    // Growth in interleaved rounds (see `scale::interleaved_growth`), for the report.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let mut floor = floor;
    let result = scale::interleaved_growth(
        &mut vms,
        floor.as_mut().map(|(vm, p)| (vm, &*p)),
        ROUNDS,
        REQUESTS,
    )
    .expect("interleaved rounds");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        std::path::PathBuf::from,
    );
    let out = target.join(scale::INTERLEAVED_FILE);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, result.to_json()).unwrap();
    for r in &result.rows {
        println!(
            "wasm_scale interleaved {}/{}: ×{:.2} ({:.2}–{:.2}) 10→10 000 routes, net of floor {}",
            r.mode,
            r.probe,
            r.ratio.0,
            r.ratio.1,
            r.ratio.2,
            r.net_ratio
                .map_or_else(|| "—".to_owned(), |x| format!("×{x:.2}"))
        );
    }
    println!("wrote {}", out.display());
}

criterion_group!(benches, bench);
criterion_main!(benches);
