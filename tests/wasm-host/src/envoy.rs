//! Run the real Envoy (from PyPI; `$PORTCULLIS_ENVOY` or `.venv/bin/envoy`) with the real
//! filter, as a child process killed on drop.

use crate::http;
use anyhow::{Context as _, Result, anyhow, bail};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The Envoy binary to run.
pub fn envoy_path() -> PathBuf {
    match std::env::var_os("PORTCULLIS_ENVOY") {
        Some(p) => p.into(),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/envoy"),
    }
}

/// What the test Envoy routes where.
pub struct EnvoySpec<'a> {
    /// The filter module.
    pub wasm: PathBuf,
    /// Plugin configuration JSON.
    pub plugin_config: &'a str,
    /// The upstream (echo server).
    pub upstream: SocketAddr,
    /// The (fake) sidecar.
    pub sidecar: SocketAddr,
    /// Without the wasm filter (a baseline for measurements).
    pub without_filter: bool,
    /// Virtual hosts: (domain, Envoy route name = bundle route id). Every one goes to the
    /// upstream except the route named `portcullis-sidecar`, which goes to the sidecar.
    pub hosts: &'a [(&'a str, &'a str)],
    /// More listeners, as YAML list items indented for `static_resources.listeners` (the
    /// benchmark's in-Envoy `direct_response` upstream); empty for none.
    pub extra_listeners: &'a str,
}

/// A running Envoy; killed (and its files removed) on drop.
pub struct Envoy {
    child: Child,
    dir: PathBuf,
    /// The HTTP listener.
    pub addr: SocketAddr,
    /// The admin interface.
    pub admin: SocketAddr,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn yaml_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The bootstrap for `spec`: one listener on a free loopback port, two clusters.
pub fn bootstrap(spec: &EnvoySpec<'_>) -> String {
    let http_filters = if spec.without_filter {
        String::new()
    } else {
        wasm_filter(spec)
    };
    bootstrap_with(spec, &http_filters, "")
}

/// [`bootstrap`] with caller-written HTTP filters in place of the wasm filter (YAML list
/// items indented for `http_filters`, placed before the router; `spec.wasm`,
/// `plugin_config` and `without_filter` are ignored) and more clusters (YAML list items
/// indented for `static_resources.clusters`). Used by `bench/` for `jwt_authn` and
/// `ext_authz` layouts that share the listener and routes of the filter's tests.
pub fn bootstrap_with(spec: &EnvoySpec<'_>, http_filters: &str, extra_clusters: &str) -> String {
    let mut vhosts = String::new();
    for (domain, route) in spec.hosts {
        let cluster = if *route == "portcullis-sidecar" {
            "portcullis-sidecar"
        } else {
            "upstream"
        };
        vhosts.push_str(&format!(
            r#"                    - name: {route}-{domain}
                      domains: ["{domain}", "{domain}:*"]
                      routes:
                        - name: {route}
                          match: {{ prefix: "/" }}
                          route: {{ cluster: {cluster}, timeout: 30s }}
"#
        ));
    }
    let cluster = |name: &str, addr: SocketAddr| {
        format!(
            r#"    - name: {name}
      type: STATIC
      connect_timeout: 0.25s
      load_assignment:
        cluster_name: {name}
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: {ip}, port_value: {port} }}
"#,
            ip = addr.ip(),
            port = addr.port()
        )
    };
    format!(
        r#"admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: 0 }}
static_resources:
  listeners:
    - name: main
      stat_prefix: main
      address:
        socket_address: {{ address: 127.0.0.1, port_value: 0 }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress
                route_config:
                  name: local
                  virtual_hosts:
{vhosts}                http_filters:
{wasm_filter}                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{extra_listeners}  clusters:
{upstream}{sidecar}{extra_clusters}"#,
        extra_listeners = spec.extra_listeners,
        upstream = cluster("upstream", spec.upstream),
        sidecar = cluster("portcullis-sidecar", spec.sidecar),
        wasm_filter = http_filters,
    )
}

fn wasm_filter(spec: &EnvoySpec<'_>) -> String {
    format!(
        r#"                  - name: envoy.filters.http.wasm
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                      config:
                        name: portcullis
                        root_id: portcullis
                        failure_policy: FAIL_RELOAD
                        configuration:
                          "@type": type.googleapis.com/google.protobuf.StringValue
                          value: {config}
                        vm_config:
                          vm_id: portcullis
                          runtime: envoy.wasm.runtime.v8
                          code:
                            local:
                              filename: {wasm}
"#,
        config = yaml_quote(spec.plugin_config),
        wasm = yaml_quote(&spec.wasm.display().to_string()),
    )
}

impl Envoy {
    /// Start Envoy (`--concurrency 2`) and wait until `/ready` answers and the listener is bound.
    pub fn start(spec: &EnvoySpec<'_>) -> Result<Envoy> {
        Envoy::start_bootstrap(&bootstrap(spec), 2)
    }

    /// Start Envoy with a caller-written bootstrap (it must bind a listener named `main` and
    /// an admin interface on port 0) and `concurrency` workers; used by `bench/`.
    pub fn start_bootstrap(bootstrap_yaml: &str, concurrency: u32) -> Result<Envoy> {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-envoy-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir)?;
        let admin_file = dir.join("admin-address");
        let config = dir.join("envoy.yaml");
        std::fs::write(&config, bootstrap_yaml)?;
        let child = Command::new(envoy_path())
            .arg("-c")
            .arg(&config)
            .arg("--concurrency")
            .arg(concurrency.to_string())
            .args(["--disable-hot-restart", "--log-level", "info"])
            // The log is read by tests (no panic, decisions): flush it promptly.
            .args(["--file-flush-interval-msec", "50"])
            .arg("--admin-address-path")
            .arg(&admin_file)
            .arg("--log-path")
            .arg(dir.join("envoy.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {}", envoy_path().display()))?;
        let mut envoy = Envoy {
            child,
            dir,
            addr: "127.0.0.1:0".parse()?,
            admin: "127.0.0.1:0".parse()?,
        };
        envoy.wait_ready()?;
        Ok(envoy)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        // The admin address file appears once the admin listener is bound.
        let admin = loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("envoy exited with {status}:\n{}", self.log_tail());
            }
            if let Ok(a) = std::fs::read_to_string(self.dir.join("admin-address"))
                && let Ok(a) = a.trim().parse::<SocketAddr>()
            {
                break a;
            }
            if Instant::now() > deadline {
                bail!("envoy admin never came up:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.admin = admin;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("envoy exited with {status}:\n{}", self.log_tail());
            }
            if http::get(admin, "admin", "/ready", &[]).is_ok_and(|r| r.status == 200) {
                break;
            }
            if Instant::now() > deadline {
                bail!("envoy never became ready:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let listeners = http::get(admin, "admin", "/listeners", &[])?.text();
        // Format: `main::127.0.0.1:PORT`.
        let addr = listeners
            .lines()
            .find_map(|l| l.strip_prefix("main::"))
            .ok_or_else(|| anyhow!("no listener in {listeners:?}"))?;
        self.addr = addr.trim().parse()?;
        Ok(())
    }

    /// The process id of the Envoy child (for CPU accounting and pinning).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of Envoy's log (for failure messages).
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines
            .get(lines.len().saturating_sub(40)..)
            .unwrap_or_default()
            .join("\n")
    }

    /// The whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    /// A counter or gauge from `/stats` (0 when absent).
    pub fn stat(&self, name: &str) -> Result<u64> {
        let text = http::get(self.admin, "admin", &format!("/stats?filter=^{name}$"), &[])?.text();
        Ok(text
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(": ")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0))
    }

    /// Connections each worker accepted on the main listener.
    pub fn per_worker_connections(&self) -> Result<[u64; 2]> {
        let p = "listener.main";
        Ok([
            self.stat(&format!("{p}.worker_0.downstream_cx_total"))?,
            self.stat(&format!("{p}.worker_1.downstream_cx_total"))?,
        ])
    }

    /// GET through Envoy on a fresh connection.
    pub fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Result<http::Response> {
        http::get(self.addr, host, path, headers)
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("PORTCULLIS_KEEP_ENVOY_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
