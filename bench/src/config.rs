//! The benchmark's Pomerium configuration: `examples/demo/config.yaml` (the seed config)
//! with its loopback hosts renamed to `*.example.com` names, so every scenario serves the
//! same routes and the same policy as the demo.

use anyhow::{Context as _, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The demo configuration, as committed.
const DEMO: &str = include_str!("../../examples/demo/config.yaml");

/// Authenticate service host (the sidecar's routes; the identity JWT's issuer).
pub const AUTHENTICATE_HOST: &str = "authenticate.example.com";
/// Host of the demo's `admin` route.
pub const ADMIN_HOST: &str = "admin.example.com";
/// Path of the measured request: the demo's `admin` route (`prefix: /admin`).
pub const ADMIN_PATH: &str = "/admin";

/// The demo's loopback URLs and what the benchmark calls them.
const RENAMES: [(&str, &str); 4] = [
    ("http://127.0.0.1:8000", "https://authenticate.example.com"),
    ("http://127.0.0.2:8000", "https://app.example.com"),
    ("http://127.0.0.3:8000", "https://admin.example.com"),
    ("http://127.0.0.4:8000", "https://public.example.com"),
];

/// The configuration and what the Envoy layouts need from it.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The YAML the sidecar child loads.
    pub yaml: String,
    /// The compiled bundle (inline in the filter's plugin configuration).
    pub bundle: Vec<u8>,
    /// (host, Envoy route name = bundle route id) of every virtual host.
    pub hosts: Vec<(String, String)>,
    /// `shared_secret`, base64.
    pub shared_secret: String,
    /// `cookie_secret`, base64.
    pub cookie_secret: String,
    /// The internal API token (derived from `shared_secret`): ext_authz callers send it.
    pub api_token: String,
}

/// The demo config with `*.example.com` hosts; `redis` = a connection string to use the
/// Redis databroker instead of memory.
pub fn demo_based(redis: Option<&str>) -> Result<BenchConfig> {
    let mut yaml = DEMO.to_owned();
    for (from, to) in RENAMES {
        if !yaml.contains(from) {
            bail!(
                "examples/demo/config.yaml no longer mentions {from}: update bench/src/config.rs"
            );
        }
        yaml = yaml.replace(from, to);
    }
    if let Some(url) = redis {
        const MEMORY: &str = "databroker_storage_type: memory";
        if !yaml.contains(MEMORY) {
            bail!("examples/demo/config.yaml has no `{MEMORY}` line");
        }
        yaml = yaml.replace(
            MEMORY,
            &format!("databroker_storage_type: redis\ndatabroker_storage_connection_string: {url}"),
        );
    }
    let loaded = policy_compiler::config::load_str("bench.yaml", &yaml, &|_| None)
        .map_err(|d| anyhow!("bench config: {d:?}"))?;
    let config = &loaded.config;
    let bundle = policy_compiler::compile::compile(config)
        .map_err(|d| anyhow!("compiling the bench config: {d:?}"))?
        .to_bytes();
    let route = |name: &str| -> Result<String> {
        config
            .routes
            .iter()
            .find(|r| r.name.as_deref() == Some(name))
            .map(policy_compiler::compile::route_id)
            .with_context(|| format!("the demo config has no route named {name}"))
    };
    let hosts = vec![
        (ADMIN_HOST.to_owned(), route("admin")?),
        ("app.example.com".to_owned(), route("app")?),
        ("public.example.com".to_owned(), route("public")?),
        (
            AUTHENTICATE_HOST.to_owned(),
            "portcullis-sidecar".to_owned(),
        ),
    ];
    Ok(BenchConfig {
        shared_secret: STANDARD.encode(config.shared_secret.secret.expose()),
        cookie_secret: STANDARD.encode(config.cookie_secret.secret.expose()),
        api_token: portcullis_common::api::api_token(&config.shared_secret.secret),
        yaml,
        bundle,
        hosts,
    })
}

impl BenchConfig {
    /// The filter's plugin configuration (inline bundle, as envoy-config generates it).
    pub fn plugin_config(&self) -> String {
        format!(
            r#"{{"sidecar_cluster":"portcullis-sidecar","shared_secret":"{}","cookie_secret":"{}","bundle":"{}"}}"#,
            self.shared_secret,
            self.cookie_secret,
            STANDARD.encode(&self.bundle)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_config_becomes_the_bench_config() {
        let c = demo_based(None).unwrap();
        assert!(c.yaml.contains("from: https://admin.example.com"));
        assert!(!c.yaml.contains("127.0.0.3"));
        // The admin route keeps the demo's policy: domain AND group.
        assert!(c.yaml.contains("has: admins"));
        assert_eq!(c.hosts[0].0, ADMIN_HOST);
        assert!(!c.hosts[0].1.is_empty());
        assert!(c.plugin_config().contains("\"bundle\":\""));
        let r = demo_based(Some("redis://127.0.0.1:1/0")).unwrap();
        assert!(r.yaml.contains("databroker_storage_type: redis"));
    }
}
