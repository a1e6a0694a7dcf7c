//! A hand-built deployment exercising every route option (tests only).

use std::time::Duration;

use crate::model::*;

/// 32 bytes, base64 (test values only).
pub const SHARED_SECRET: &str = "c2hhcmVkLXNlY3JldC1mb3ItdGVzdHMtMDEyMzQ1Njc=";
/// 32 bytes, base64 (test values only).
pub const COOKIE_SECRET: &str = "Y29va2llLXNlY3JldC1mb3ItdGVzdHMtMDEyMzQ1Njc=";

pub fn deployment(wasm: &str, tls: ListenerTls) -> Deployment {
    let base = Route {
        id: "r0".into(),
        from: ExternalHost {
            https: true,
            host: "app.example.com".into(),
            port: None,
        },
        path: PathMatch::Prefix("/".into()),
        to: vec![Target {
            https: false,
            address: SocketAddress::new("127.0.0.1", 8081),
            weight: 1,
        }],
        upstream_tls: None,
        prefix_rewrite: None,
        regex_rewrite: None,
        host_rewrite: HostRewrite::Auto,
        timeout: None,
        idle_timeout: None,
        websockets: false,
        set_request_headers: vec![],
        remove_request_headers: vec![],
        set_response_headers: vec![],
        rewrite_response_headers: vec![],
    };
    let routes = vec![
        Route {
            id: "admin".into(),
            path: PathMatch::Prefix("/admin".into()),
            to: vec![
                Target {
                    https: false,
                    address: SocketAddress::new("10.0.0.1", 80),
                    weight: 3,
                },
                Target {
                    https: false,
                    address: SocketAddress::new("10.0.0.2", 80),
                    weight: 1,
                },
            ],
            prefix_rewrite: Some("/".into()),
            set_request_headers: vec![("X-Team".into(), "ops".into())],
            remove_request_headers: vec!["x-debug".into()],
            timeout: Some(Duration::from_millis(1500)),
            idle_timeout: Some(Duration::from_secs(300)),
            ..base.clone()
        },
        Route {
            id: "app".into(),
            websockets: true,
            host_rewrite: HostRewrite::Preserve,
            set_response_headers: vec![("Strict-Transport-Security".into(), "max-age=1".into())],
            rewrite_response_headers: vec![ResponseHeaderRewrite {
                header: "Location".into(),
                prefix: Some("http://internal/\"x".into()),
                value: "https://app.example.com/".into(),
            }],
            ..base.clone()
        },
        Route {
            id: "api-regex".into(),
            from: ExternalHost {
                https: true,
                host: "api.example.com".into(),
                port: Some(8443),
            },
            path: PathMatch::Regex("^/v[0-9]+/.*$".into()),
            regex_rewrite: Some(("^/v([0-9]+)/".into(), "/api/\\1/".into())),
            host_rewrite: HostRewrite::Literal("api.internal".into()),
            to: vec![Target {
                https: true,
                address: SocketAddress::new("api.internal", 443),
                weight: 1,
            }],
            upstream_tls: Some(UpstreamTls {
                sni: Some("api.internal".into()),
                skip_verify: false,
                ca: DataSource::File("/etc/ssl/certs/ca-certificates.crt".into()),
            }),
            ..base.clone()
        },
        Route {
            id: "exact".into(),
            from: ExternalHost {
                https: true,
                host: "*.corp.example.com".into(),
                port: None,
            },
            path: PathMatch::Path("/healthz".into()),
            host_rewrite: HostRewrite::Header("x-upstream-host".into()),
            ..base.clone()
        },
    ];
    Deployment {
        admin: SocketAddress::new("127.0.0.1", 9901),
        listener: Listener {
            address: SocketAddress::new("0.0.0.0", 8443),
            additional_addresses: vec![],
            tls,
            xff_num_trusted_hops: 0,
        },
        authenticate: ExternalHost {
            https: true,
            host: "authenticate.example.com".into(),
            port: None,
        },
        sidecar: vec![SocketAddress::new("127.0.0.1", 5080)],
        routes,
        wasm: Wasm {
            filename: wasm.into(),
            vm_id: "portcullis".into(),
            configuration: crate::plugin::PluginConfig {
                sidecar_cluster: SIDECAR_CLUSTER.into(),
                sidecar_authority: Some("127.0.0.1:5080".into()),
                shared_secret: SHARED_SECRET.into(),
                cookie_secret: COOKIE_SECRET.into(),
                sidecar_route_name: Some(SIDECAR_ROUTE.into()),
                ..Default::default()
            }
            .to_json(),
        },
    }
}
