//! Fuzz the config loader (YAML/JSON value parser + every option reader): arbitrary bytes
//! must give `Ok` or positioned errors, never a panic, a hang or an abort.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first line doubles as the value of every environment variable, so env parsing
    // (lists, maps, base64 routes) is fuzzed too.
    let env_value = text.lines().next().unwrap_or("").to_owned();
    let env = move |name: &str| (name.len() % 3 == 0).then(|| env_value.clone());
    if let Err(diags) = policy_compiler::config::load_str("fuzz.yaml", text, &env) {
        assert!(diags.has_errors());
    }
    let _ = policy_compiler::value::parse("fuzz.json", text);
});
