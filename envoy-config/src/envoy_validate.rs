//! Every bootstrap we generate must load in the real Envoy (`envoy --mode validate`), with
//! the real filter module (its `on_configure` runs and must accept the plugin config).
//!
//! Envoy: `PORTCULLIS_ENVOY`, else `.venv/bin/envoy` at the workspace root. Filter:
//! `PORTCULLIS_WASM`, else `target/wasm32-wasip1/release/filter.wasm` (`make wasm`).
//! A missing one fails the test with what to run: a skipped validation is not a pass.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::model::{Certificate, DataSource, ListenerTls};
use crate::{bootstrap, from_config, sample, tls, to_yaml};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn envoy() -> PathBuf {
    let p = std::env::var_os("PORTCULLIS_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/envoy"));
    assert!(
        p.exists(),
        "Envoy not found at {} (run `make deps-envoy` or set PORTCULLIS_ENVOY)",
        p.display()
    );
    p
}

pub(crate) fn wasm() -> String {
    let p = std::env::var_os("PORTCULLIS_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/wasm32-wasip1/release/filter.wasm"));
    assert!(
        p.exists(),
        "filter.wasm not found at {} (run `make wasm` or set PORTCULLIS_WASM)",
        p.display()
    );
    std::fs::canonicalize(p).unwrap().display().to_string()
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "envoy-config-validate-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Run `envoy --mode validate` on the rendered YAML; panic with Envoy's output if it fails.
pub(crate) fn validate(name: &str, yaml: &str) {
    let dir = tempdir();
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(envoy())
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "envoy rejected {name}:\n{}\n{}\n--- config ---\n{yaml}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sample_plain_bootstrap_validates() {
    let d = sample::deployment(&wasm(), ListenerTls::Plain);
    validate("plain", &to_yaml(&bootstrap::render(&d)).unwrap());
}

#[test]
fn sample_tls_bootstrap_with_sni_chains_validates() {
    let dir = tempdir();
    // A "configured" certificate written to files, and the generated fallback inline.
    let named = tls::self_signed(&["app.example.com".into(), "*.corp.example.com".into()]).unwrap();
    let (DataSource::Inline(chain), DataSource::Inline(key)) = (&named.chain, &named.key) else {
        panic!()
    };
    std::fs::write(dir.join("c.pem"), chain).unwrap();
    std::fs::write(dir.join("k.pem"), key).unwrap();
    let configured = tls::certificate(
        DataSource::File(dir.join("c.pem").display().to_string()),
        DataSource::File(dir.join("k.pem").display().to_string()),
        chain,
    )
    .unwrap();
    assert_eq!(
        configured.server_names,
        ["*.corp.example.com", "app.example.com"]
    );
    let fallback: Certificate = tls::self_signed(&["authenticate.example.com".into()]).unwrap();
    let d = sample::deployment(
        &wasm(),
        ListenerTls::Tls {
            certificates: vec![configured],
            fallback,
        },
    );
    validate("tls", &to_yaml(&bootstrap::render(&d)).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every example config of the repository, through the same path as the CLI.
#[test]
fn example_configs_validate() {
    for name in ["demo", "redis"] {
        let path = root().join("examples").join(name).join("config.yaml");
        let loaded = policy_compiler::config::load_file(&path)
            .unwrap_or_else(|d| panic!("{}: {d:?}", path.display()));
        let ids = crate::tests_support::route_ids(&loaded.config);
        let opts = from_config::Options {
            wasm: wasm(),
            ..Default::default()
        };
        let d = from_config::deployment(&loaded.config, &ids, &opts).unwrap();
        validate(name, &to_yaml(&bootstrap::render(&d)).unwrap());
    }
}

/// The hand-written example in docs/envoy.md loads, with the real filter accepting it.
#[test]
fn docs_hand_written_example_validates() {
    let doc = std::fs::read_to_string(root().join("docs/envoy.md")).unwrap();
    let start = doc.find("A minimal example").expect("example section");
    let rest = &doc[start..];
    let block_start = rest.find("```yaml\n").unwrap() + "```yaml\n".len();
    let block = &rest[block_start..];
    let yaml = &block[..block.find("```").unwrap()];
    let yaml = yaml
        .replace("/path/to/filter.wasm", &wasm())
        .replace("<shared_secret from config.yaml>", sample::SHARED_SECRET)
        .replace("<cookie_secret from config.yaml>", sample::COOKIE_SECRET);
    validate("docs-envoy", &yaml);
}
