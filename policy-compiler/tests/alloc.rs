//! `Engine::evaluate` (and `find_route`) allocate nothing on the heap for common rules: a
//! counting global allocator watches this thread while the seed config's routes are decided.

// Needs the YAML front end and compiler.
#![cfg(feature = "frontend")]
// A counting global allocator needs `unsafe impl GlobalAlloc`; it only forwards to `System`.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use policy_compiler::compile;
use policy_compiler::config::load_file;
use policy_compiler::eval::{Claims, Decision, DenyReason, Engine, Request, Subject};

struct Counting;

// Both per thread: the tests run in parallel, and another test's allocations while it is
// watching must not count here (a shared counter made this flaky).
thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    if WATCHING.with(Cell::get) {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn count<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATIONS.with(Cell::get);
    WATCHING.with(|w| w.set(true));
    let out = f();
    WATCHING.with(|w| w.set(false));
    (out, ALLOCATIONS.with(Cell::get) - before)
}

fn seed_engine() -> Engine {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo/config.yaml");
    let loaded = load_file(&path).unwrap();
    Engine::from_bytes(&compile::compile(&loaded.config).unwrap().to_bytes()).unwrap()
}

fn subject(email: &str, groups: &[&str]) -> Subject {
    let claims = serde_json::json!({ "groups": groups, "email": email });
    Subject::new(
        "u-1".into(),
        email.into(),
        Claims::from_json(claims.as_object().unwrap()),
    )
}

#[test]
fn counting_allocator_sees_allocations() {
    // The harness itself must be able to fail.
    let (_, n) = count(|| vec![1u8; 16]);
    assert!(n >= 1);
}

#[test]
fn evaluate_allocates_nothing_on_the_seed_config() {
    let e = seed_engine();
    let alice = subject("alice@example.com", &["admins", "staff"]);
    let bob = subject("bob@example.com", &["staff"]);
    let cases: &[(&str, &str, Option<&Subject>, Decision)] = &[
        ("127.0.0.2:8000", "/", Some(&alice), Decision::Allow),
        ("127.0.0.2:8000", "/some/page?x=1", None, Decision::Login),
        (
            "127.0.0.3:8000",
            "/admin/users",
            Some(&alice),
            Decision::Allow,
        ),
        (
            "127.0.0.3:8000",
            "/admin/users",
            Some(&bob),
            Decision::Deny(DenyReason::NotAllowed),
        ),
        ("127.0.0.3:8000", "/dashboard", Some(&bob), Decision::Allow),
        ("127.0.0.4:8000", "/", None, Decision::Allow),
    ];
    for (host, path, who, want) in cases {
        let (route, n) = count(|| e.find_route(host, path));
        assert_eq!(n, 0, "find_route({host}, {path}) allocated");
        let route = route.unwrap();
        let req = Request::new("GET", path, 1_717_416_000);
        let (d, n) = count(|| e.evaluate(route, &req, *who));
        assert_eq!(d, *want, "{host}{path}");
        assert_eq!(n, 0, "evaluate({host}{path}) allocated {n} times");
    }
}

#[test]
fn http_path_rules_allocate_only_for_encoded_paths() {
    let yaml = "routes:\n  - from: https://a.example.com\n    to: http://up\n    policy:\n      allow:\n        and:\n          - http_path: {starts_with: /api/}\n          - http_method: {in: [GET, HEAD]}\n          - claim/groups: {has: staff, exclude: banned}\n";
    let loaded = policy_compiler::config::load_str("a.yaml", yaml, &|_| None).unwrap();
    let e = Engine::from_bytes(&compile::compile(&loaded.config).unwrap().to_bytes()).unwrap();
    let bob = subject("bob@example.com", &["staff"]);
    let r = e.find_route("a.example.com", "/api/v1").unwrap();
    let (d, n) = count(|| e.evaluate(r, &Request::new("GET", "/api/v1?page=2", 0), Some(&bob)));
    assert_eq!((d, n), (Decision::Allow, 0));
    // Percent-decoding needs a buffer: allowed, and still correct.
    let (d, n) = count(|| e.evaluate(r, &Request::new("GET", "/%61pi/v1", 0), Some(&bob)));
    assert_eq!(d, Decision::Allow);
    assert!(n >= 1);
}

#[test]
fn long_legacy_rules_allocate_nothing() {
    let users: Vec<String> = (0..40).map(|i| format!("user{i}@example.com")).collect();
    let yaml = format!(
        "routes:\n  - from: https://a.example.com\n    to: http://up\n    allowed_users: [{}]\n",
        users.join(", ")
    );
    let loaded = policy_compiler::config::load_str("a.yaml", &yaml, &|_| None).unwrap();
    let e = Engine::from_bytes(&compile::compile(&loaded.config).unwrap().to_bytes()).unwrap();
    let r = e.find_route("a.example.com", "/").unwrap();
    let last = subject("user39@example.com", &[]);
    let other = subject("eve@example.com", &[]);
    let req = Request::new("GET", "/", 0);
    let (d, n) = count(|| e.evaluate(r, &req, Some(&last)));
    assert_eq!((d, n), (Decision::Allow, 0));
    let (d, n) = count(|| e.evaluate(r, &req, Some(&other)));
    assert_eq!((d, n), (Decision::Deny(DenyReason::NotAllowed), 0));
}

#[test]
fn wildcard_route_lookup_allocates_nothing() {
    let yaml = "routes:\n  - from: https://a.example.com\n    to: http://up\n    allow_public_unauthenticated_access: true\n  - from: https://app-*.*.example.com\n    to: http://up\n    allow_public_unauthenticated_access: true\n";
    let loaded = policy_compiler::config::load_str("w.yaml", yaml, &|_| None).unwrap();
    let e = Engine::from_bytes(&compile::compile(&loaded.config).unwrap().to_bytes()).unwrap();
    for (host, want) in [
        ("app-x.eu.example.com", true),
        ("app-x.eu.example.com:443", true),
        ("a.example.com:443", true),
        ("api.eu.example.com", false),
    ] {
        let (route, n) = count(|| e.find_route(host, "/x"));
        assert_eq!(n, 0, "find_route({host}) allocated");
        assert_eq!(route.is_some(), want, "{host}");
    }
}
