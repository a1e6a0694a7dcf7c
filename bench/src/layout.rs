//! The Envoy bootstraps of the scenarios: the filter tests' layout
//! (`proxy_wasm_test_host::envoy::bootstrap_with`: same listener, virtual hosts and route
//! names), each with its own HTTP filters, plus an upstream that costs as little as
//! possible (`direct_response` on a second listener of the same Envoy).

use proxy_wasm_test_host::envoy::{self, EnvoySpec};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// Response header carrying what the upstream saw as `x-pomerium-claim-email`.
pub const SEEN_EMAIL_HEADER: &str = "x-bench-seen-email";
/// Response header carrying the first 10 characters of the `x-pomerium-jwt-assertion`
/// the upstream saw (enough to see a JWT arrived, without copying it on every answer).
pub const SEEN_JWT_HEADER: &str = "x-bench-seen-jwt";

/// What sits in front of the router.
pub enum Filters<'a> {
    /// Nothing: bare Envoy.
    None,
    /// A proxy-wasm module with its plugin configuration (the Portcullis filter or the
    /// no-op module).
    Wasm {
        /// Module path.
        wasm: &'a str,
        /// Plugin configuration JSON.
        plugin_config: &'a str,
    },
    /// `envoy.filters.http.jwt_authn` with one provider and an inline JWKS.
    JwtAuthn {
        /// Expected `iss`.
        issuer: &'a str,
        /// Expected `aud`.
        audience: &'a str,
        /// The JWKS JSON.
        jwks: &'a str,
    },
    /// Other HTTP filters (YAML list items for `http_filters`, e.g. [`ext_authz`]) and
    /// the clusters they need (YAML list items for `clusters`).
    Raw {
        /// HTTP filter YAML.
        filter: String,
        /// Cluster YAML.
        clusters: String,
    },
}

fn yaml_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn jwt_authn(issuer: &str, audience: &str, jwks: &str) -> String {
    format!(
        r#"                  - name: envoy.filters.http.jwt_authn
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
                      providers:
                        bench:
                          issuer: {issuer}
                          audiences: [{audience}]
                          forward: true
                          local_jwks:
                            inline_string: {jwks}
                          claim_to_headers:
                            - header_name: x-pomerium-claim-email
                              claim_name: email
                      rules:
                        - match: {{ prefix: "/" }}
                          requires: {{ provider_name: bench }}
"#,
        issuer = yaml_quote(issuer),
        audience = yaml_quote(audience),
        jwks = yaml_quote(jwks),
    )
}

/// How Envoy calls the sidecar's ext_authz listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtAuthz {
    /// `http_service` with `path_prefix` (HTTP/1.1).
    Http,
    /// `grpc_service` (`envoy.service.auth.v3.Authorization/Check`, HTTP/2).
    Grpc,
}

/// The `ext_authz` filter and its cluster, as docs/ext_authz.md shows them (what
/// `sidecar/tests/ext_authz_envoy.rs` runs), for the listener at `addr`.
pub fn ext_authz(kind: ExtAuthz, addr: SocketAddr, token: &str) -> Filters<'static> {
    let filter = match kind {
        ExtAuthz::Http => format!(
            r#"                  - name: envoy.filters.http.ext_authz
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
                      transport_api_version: V3
                      failure_mode_allow: false
                      status_on_error: {{ code: 503 }}
                      allowed_headers:
                        patterns:
                          - exact: cookie
                          - exact: accept
                          - exact: x-forwarded-proto
                          - exact: x-request-id
                          - exact: origin
                          - exact: access-control-request-method
                          - prefix: x-pomerium-
                      http_service:
                        server_uri:
                          uri: http://{addr}
                          cluster: portcullis-ext-authz
                          timeout: 1s
                        path_prefix: {prefix}
                        authorization_request:
                          headers_to_add:
                            - key: {header}
                              value: "{token}"
                        authorization_response:
                          allowed_upstream_headers:
                            patterns:
                              - exact: cookie
                              - prefix: x-pomerium-
"#,
            prefix = sidecar::ext_authz::HTTP_PATH_PREFIX,
            header = sidecar::ext_authz::TOKEN_HEADER,
        ),
        ExtAuthz::Grpc => format!(
            r#"                  - name: envoy.filters.http.ext_authz
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
                      transport_api_version: V3
                      failure_mode_allow: false
                      status_on_error: {{ code: 503 }}
                      grpc_service:
                        envoy_grpc:
                          cluster_name: portcullis-ext-authz
                        timeout: 1s
                        initial_metadata:
                          - key: {header}
                            value: "{token}"
"#,
            header = sidecar::ext_authz::TOKEN_HEADER,
        ),
    };
    let http2 = match kind {
        ExtAuthz::Http => "",
        ExtAuthz::Grpc => {
            r#"      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {}
"#
        }
    };
    let clusters = format!(
        r#"    - name: portcullis-ext-authz
      type: STATIC
      connect_timeout: 0.25s
{http2}      load_assignment:
        cluster_name: portcullis-ext-authz
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: {ip}, port_value: {port} }}
"#,
        ip = addr.ip(),
        port = addr.port()
    );
    Filters::Raw { filter, clusters }
}

/// The bootstrap: `hosts` routed by name to the in-Envoy upstream listener on
/// `upstream_port`, the sidecar route to `sidecar`.
pub fn bootstrap(
    filters: &Filters<'_>,
    hosts: &[(String, String)],
    upstream_port: u16,
    sidecar: SocketAddr,
) -> String {
    // The upstream: a second listener answering `200 ok` itself, echoing the identity the
    // request carried into response headers so the harness can check it.
    let upstream_listener = format!(
        r#"    - name: upstream
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
                            - header: {{ key: {SEEN_JWT_HEADER}, value: "%REQ(x-pomerium-jwt-assertion):10%" }}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    );
    let host_refs: Vec<(&str, &str)> = hosts
        .iter()
        .map(|(h, r)| (h.as_str(), r.as_str()))
        .collect();
    let (wasm, plugin_config) = match filters {
        Filters::Wasm {
            wasm,
            plugin_config,
        } => (*wasm, *plugin_config),
        _ => ("", ""),
    };
    let spec = EnvoySpec {
        wasm: PathBuf::from(wasm),
        plugin_config,
        upstream: SocketAddr::from((Ipv4Addr::LOCALHOST, upstream_port)),
        sidecar,
        without_filter: !matches!(filters, Filters::Wasm { .. }),
        hosts: &host_refs,
        extra_listeners: &upstream_listener,
    };
    match filters {
        Filters::None | Filters::Wasm { .. } => envoy::bootstrap(&spec),
        Filters::JwtAuthn {
            issuer,
            audience,
            jwks,
        } => envoy::bootstrap_with(&spec, &jwt_authn(issuer, audience, jwks), ""),
        Filters::Raw { filter, clusters } => envoy::bootstrap_with(&spec, filter, clusters),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_share_listener_and_routes_and_differ_in_filters() {
        let hosts = vec![("admin.example.com".to_owned(), "route-1".to_owned())];
        let sidecar: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let bare = bootstrap(&Filters::None, &hosts, 1234, sidecar);
        let jwt = bootstrap(
            &Filters::JwtAuthn {
                issuer: "iss",
                audience: "aud",
                jwks: r#"{"keys":[]}"#,
            },
            &hosts,
            1234,
            sidecar,
        );
        for y in [&bare, &jwt] {
            assert!(y.contains("name: route-1"));
            assert!(y.contains("port_value: 1234"));
            assert!(y.contains("envoy.filters.http.router"));
        }
        assert!(!bare.contains("jwt_authn") && !bare.contains("envoy.filters.http.wasm"));
        assert!(jwt.contains("jwt_authn") && jwt.contains(r#"inline_string: '{"keys":[]}'"#));
        let authz: SocketAddr = "127.0.0.1:5090".parse().unwrap();
        let grpc = bootstrap(
            &ext_authz(ExtAuthz::Grpc, authz, "tok"),
            &hosts,
            1234,
            sidecar,
        );
        assert!(grpc.contains("cluster_name: portcullis-ext-authz"));
        assert!(grpc.contains("http2_protocol_options"));
        assert!(grpc.contains(r#"value: "tok""#));
        let http = bootstrap(
            &ext_authz(ExtAuthz::Http, authz, "tok"),
            &hosts,
            1234,
            sidecar,
        );
        assert!(http.contains("path_prefix: /ext_authz"));
        assert!(!http.contains("http2_protocol_options"));
        assert!(http.contains("port_value: 5090"));
    }
}
