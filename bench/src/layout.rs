//! The Envoy bootstrap every configuration runs: the filter tests' layout
//! (`proxy_wasm_test_host::envoy::bootstrap`: same listener, virtual hosts and route names, with
//! or without a wasm module), plus an upstream that costs as little as possible.

use proxy_wasm_test_host::envoy::{self, EnvoySpec};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// The virtual hosts of the benchmark: (domain, Envoy route name = bundle route id). The
/// same layout as the filter's Envoy tests, so the filter finds its routes by name.
pub const HOSTS: &[(&str, &str)] = &[
    ("app.example.com", "app"),
    ("admin.example.com", "admin"),
    ("public.example.com", "public"),
    ("authenticate.example.com", "portcullis-sidecar"),
];

/// The response header the upstream sets from the request's `x-pomerium-claim-email`, so the
/// harness can check that the filter really added identity headers on the measured path.
pub const SEEN_EMAIL_HEADER: &str = "x-bench-seen-email";

/// The filter part of the bootstrap; absent = bare Envoy.
pub struct Filter<'a> {
    /// The module.
    pub wasm: &'a str,
    /// The plugin configuration JSON.
    pub plugin_config: &'a str,
}

/// One Envoy: listener `main` (the measured one) routes to cluster `upstream`, which is a
/// second listener of the same Envoy answering with `direct_response` — no extra process, so
/// the only difference between configurations is the filter. Both Envoy hops are in every
/// configuration's numbers alike.
pub fn bootstrap(filter: Option<&Filter<'_>>, upstream_port: u16, sidecar: SocketAddr) -> String {
    let upstream_listener = format!(
        r#"    - name: upstream
      stat_prefix: upstream
      address:
        socket_address: {{ address: 127.0.0.1, port_value: {upstream_port} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: upstream
                route_config:
                  name: upstream
                  virtual_hosts:
                    - name: any
                      domains: ["*"]
                      routes:
                        - match: {{ prefix: "/" }}
                          direct_response: {{ status: 200, body: {{ inline_string: "ok\n" }} }}
                          response_headers_to_add:
                            - header: {{ key: {SEEN_EMAIL_HEADER}, value: "%REQ(x-pomerium-claim-email)%" }}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    );
    envoy::bootstrap(&EnvoySpec {
        wasm: PathBuf::from(filter.map_or("", |f| f.wasm)),
        plugin_config: filter.map_or("", |f| f.plugin_config),
        upstream: SocketAddr::from((Ipv4Addr::LOCALHOST, upstream_port)),
        sidecar,
        without_filter: filter.is_none(),
        hosts: HOSTS,
        extra_listeners: &upstream_listener,
    })
}
