//! `Engine::evaluate` on the seed config (`examples/demo/config.yaml`), natively. Target:
//! well under 1 µs per decision. Run with `cargo bench -p policy-compiler`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use policy_compiler::compile;
use policy_compiler::config::load_file;
use policy_compiler::eval::{Claims, Engine, Request, Subject};

fn seed() -> Engine {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo/config.yaml");
    let loaded = load_file(&path).expect("seed config");
    Engine::from_bytes(
        &compile::compile(&loaded.config)
            .expect("compiles")
            .to_bytes(),
    )
    .expect("bundle")
}

fn subject(email: &str, groups: &[&str]) -> Subject {
    let claims = serde_json::json!({ "groups": groups, "email": email, "name": "Someone", "org": {"unit": "x"} });
    Subject::new(
        "u-1".into(),
        email.into(),
        Claims::from_json(claims.as_object().unwrap()),
    )
}

fn bench(c: &mut Criterion) {
    let e = seed();
    let alice = subject("alice@example.com", &["admins", "staff"]);
    let bob = subject("bob@example.com", &["staff"]);
    let cases = [
        (
            "app/authenticated",
            "127.0.0.2:8000",
            "/page?x=1",
            Some(&alice),
        ),
        ("app/anonymous-login", "127.0.0.2:8000", "/page", None),
        (
            "admin/allow",
            "127.0.0.3:8000",
            "/admin/users",
            Some(&alice),
        ),
        ("admin/deny", "127.0.0.3:8000", "/admin/users", Some(&bob)),
        (
            "admin-host/allow",
            "127.0.0.3:8000",
            "/dashboard",
            Some(&bob),
        ),
        ("public/anonymous", "127.0.0.4:8000", "/", None),
    ];
    let mut g = c.benchmark_group("evaluate");
    for (name, host, path, who) in cases {
        let route = e.find_route(host, path).expect("route");
        let req = Request::new("GET", path, 1_717_416_000);
        g.bench_function(name, |b| {
            b.iter(|| black_box(e.evaluate(black_box(route), black_box(&req), black_box(who))))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("find_route+evaluate");
    for (name, host, path, who) in cases {
        let req = Request::new("GET", path, 1_717_416_000);
        g.bench_function(name, |b| {
            b.iter(|| {
                let r = e
                    .find_route(black_box(host), black_box(path))
                    .expect("route");
                black_box(e.evaluate(r, &req, who))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
