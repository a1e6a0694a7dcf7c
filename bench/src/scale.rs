//! Issue 7, scenario "Scale": the report section. Runs after the two scale benches
//! (`policy-compiler/benches/scale.rs`, `tests/wasm-host/benches/wasm_scale.rs`): reads
//! their criterion medians and interleaved rounds under the target dir and measures the
//! filter's memory per cached session in the wasmtime host (about 10 s).
//!
//! The logic lives in `proxy_wasm_test_host::scale`, next to the workloads it reports on,
//! and is unit-tested there (`cargo test -p proxy-wasm-test-host --lib scale`).

use proxy_wasm_test_host::scale::Section;
use std::path::Path;

/// The "Scale" section: [`Section::headline`] gives (what, value, goal, met) rows,
/// [`Section::markdown`] the tables. `target_dir` is the cargo target directory (criterion
/// results in `criterion/`, interleaved rounds in `scale/`). Missing bench results show as
/// "not measured"; a filter memory failure is recorded in the section; unreadable result
/// files are an error.
pub fn collect(target_dir: &Path) -> anyhow::Result<Section> {
    proxy_wasm_test_host::scale::collect(target_dir)
}
