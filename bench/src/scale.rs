//! Issue 7, scenario "Scale": the report section. Runs after the two criterion benches
//! (`policy-compiler/benches/scale.rs`, `tests/wasm-host/benches/wasm_scale.rs`); reads
//! their medians from `<target>/criterion` and measures the filter's memory per cached
//! session in the wasmtime host (about 10 s, debug build).
//!
//! The logic lives in `proxy_wasm_test_host::scale` next to the workloads it reports on
//! (and is unit-tested there: `cargo test -p proxy-wasm-test-host`); this module is the
//! report's entry point.

pub use proxy_wasm_test_host::scale::{Section, collect};
