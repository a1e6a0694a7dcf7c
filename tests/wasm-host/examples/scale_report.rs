//! Prints the "Scale" report section (Markdown) from the criterion results already under
//! `target/criterion`, measuring the filter's memory on the way — what `make bench` adds to
//! its report, without the Envoy part. Run the two scale benches first.
//!
//! `cargo run -p proxy-wasm-test-host --example scale_report [-- <target dir>]`

fn main() -> anyhow::Result<()> {
    let target = match std::env::args_os().nth(1) {
        Some(t) => std::path::PathBuf::from(t),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    };
    let section = proxy_wasm_test_host::scale::collect(&target)?;
    print!("{}", section.markdown());
    Ok(())
}
