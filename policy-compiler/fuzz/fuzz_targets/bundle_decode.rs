//! Fuzz the bundle decoder (what the filter runs on bytes from the sidecar/config): arbitrary
//! bytes must give `Ok` or `BundleError`, never a panic; whatever validates must then route
//! and evaluate without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use policy_compiler::eval::{Engine, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(engine) = Engine::from_bytes(data) else {
        return;
    };
    let routes: Vec<_> = engine.routes().map(|r| r.route).collect();
    for r in routes {
        let req = Request::new("GET", "/a/../b%20c?q", 1_700_000_000);
        let _ = engine.evaluate(r, &req, None);
        let _ = engine.explain(r, &req, None);
    }
    let _ = engine.find_route("example.com:443", "//x/./y");
});
