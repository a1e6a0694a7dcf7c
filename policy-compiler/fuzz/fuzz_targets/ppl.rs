//! Fuzz the PPL parser on arbitrary YAML/JSON: `Ok` or positioned diagnostics, never a
//! panic; a policy that parses cleanly must also compile and evaluate.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(value) = policy_compiler::value::parse("fuzz.yaml", text) else {
        return;
    };
    let (_terms, diags) = policy_compiler::ppl::parse("fuzz.yaml", &value);
    if diags.has_errors() {
        return;
    }
    // Put it on a route and run the whole pipeline.
    let yaml = format!(
        "routes:\n  - from: https://a.example.com\n    to: http://up\n    policy: {}\n",
        serde_json_like(&value.value)
    );
    if let Ok(loaded) = policy_compiler::config::load_str("fuzz.yaml", &yaml, &|_| None)
        && let Ok(bundle) = policy_compiler::compile::compile(&loaded.config)
    {
        let engine = policy_compiler::eval::Engine::from_bytes(&bundle.to_bytes())
            .expect("compiled bundles load");
        let req = policy_compiler::eval::Request::new("GET", "/", 1_700_000_000);
        if let Some(r) = engine.find_route("a.example.com", "/") {
            let _ = engine.evaluate(r, &req, None);
        }
    }
});

/// Renders a value as JSON flow syntax (valid YAML) so it can be embedded in a config.
fn serde_json_like(v: &policy_compiler::value::Value) -> String {
    use policy_compiler::value::Value;
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) if f.is_finite() => format!("{f:?}"),
        Value::Float(_) => "0".into(),
        Value::String(s) => format!("{s:?}").replace("\\'", "'"),
        Value::Seq(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|i| serde_json_like(&i.value))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Map(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{:?}: {}", k.value, serde_json_like(&v.value)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
