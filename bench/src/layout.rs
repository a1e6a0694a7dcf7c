//! The Envoy bootstrap every configuration runs: the same listener and route layout, with or
//! without the filter, and an upstream that costs as little as possible.

use std::net::SocketAddr;

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

fn yaml_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// One Envoy: listener `main` (the measured one) routes to cluster `upstream`, which is a
/// second listener of the same Envoy answering with `direct_response` — no extra process, so
/// the only difference between configurations is the filter. Both Envoy hops are in every
/// configuration's numbers alike.
pub fn bootstrap(filter: Option<&Filter<'_>>, upstream_port: u16, sidecar: SocketAddr) -> String {
    let mut vhosts = String::new();
    for (domain, route) in HOSTS {
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
    let wasm = filter.map_or_else(String::new, |f| {
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
            config = yaml_quote(f.plugin_config),
            wasm = yaml_quote(f.wasm),
        )
    });
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
{wasm}                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
    - name: upstream
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
  clusters:
    - name: upstream
      type: STATIC
      connect_timeout: 0.25s
      load_assignment:
        cluster_name: upstream
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: 127.0.0.1, port_value: {upstream_port} }}
    - name: portcullis-sidecar
      type: STATIC
      connect_timeout: 0.25s
      load_assignment:
        cluster_name: portcullis-sidecar
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: {sidecar_ip}, port_value: {sidecar_port} }}
"#,
        sidecar_ip = sidecar.ip(),
        sidecar_port = sidecar.port(),
    )
}
