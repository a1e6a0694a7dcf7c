//! Locations of the artifacts under test, overridable by environment variables (the
//! Makefile exports them; the defaults fit a checkout after `make build`/`make test`).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// The workspace root.
pub fn root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .map_or_else(|| here.to_path_buf(), Path::to_path_buf)
}

fn from_env(var: &str, default: PathBuf) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map_or(default, PathBuf::from)
}

fn existing(what: &str, p: PathBuf, hint: &str) -> Result<PathBuf> {
    if !p.exists() {
        bail!("{what} not found at {} ({hint})", p.display());
    }
    Ok(p)
}

/// Directory of our binaries (`sidecar`, `envoy-config`, `policy-compiler`):
/// `PORTCULLIS_BIN_DIR`, default `target/debug`.
pub fn bin_dir() -> PathBuf {
    from_env("PORTCULLIS_BIN_DIR", root().join("target/debug"))
}

/// One of our binaries.
pub fn bin(name: &str) -> Result<PathBuf> {
    existing(
        name,
        bin_dir().join(name),
        "build it: `cargo build --workspace --exclude filter --bins`, or set PORTCULLIS_BIN_DIR",
    )
}

/// The filter module: `PORTCULLIS_WASM`, default the release build.
pub fn wasm() -> Result<PathBuf> {
    existing(
        "filter.wasm",
        from_env(
            "PORTCULLIS_WASM",
            root().join("target/wasm32-wasip1/release/filter.wasm"),
        ),
        "run `make wasm` or set PORTCULLIS_WASM",
    )
}

/// Envoy: `PORTCULLIS_ENVOY`, default `.venv/bin/envoy`.
pub fn envoy() -> Result<PathBuf> {
    existing(
        "envoy",
        from_env("PORTCULLIS_ENVOY", root().join(".venv/bin/envoy")),
        "run `make deps-envoy` or set PORTCULLIS_ENVOY",
    )
}

/// The IdP folder (tests/idp, with node_modules): `PORTCULLIS_IDP_DIR`.
pub fn idp_dir() -> Result<PathBuf> {
    let dir = from_env("PORTCULLIS_IDP_DIR", root().join("tests/idp"));
    existing(
        "tests/idp/node_modules",
        dir.join("node_modules"),
        "run `make deps-node`",
    )?;
    Ok(dir)
}

/// Chromium: `CHROMIUM`, default `/usr/bin/chromium`.
pub fn chromium() -> Result<PathBuf> {
    existing(
        "chromium",
        from_env("CHROMIUM", PathBuf::from("/usr/bin/chromium")),
        "run `make deps-system` or set CHROMIUM",
    )
}

/// `redis-server` from `PATH` (or `REDIS_SERVER`).
pub fn redis_server() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("REDIS_SERVER") {
        return existing("redis-server", PathBuf::from(p), "REDIS_SERVER");
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join("redis-server");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("redis-server not found on PATH (run `make deps-system`)")
}

/// A fresh output directory for one test's logs and artifacts: `tests/output/<name>/`.
pub fn output_dir(name: &str) -> Result<PathBuf> {
    let dir = root().join("tests/output").join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
