//! `Settings::from_config`: the sidecar's view of the shared config loader.

use crate::support::*;
use sidecar::settings::{Settings, StorageSettings};
use std::time::Duration;

fn load(yaml: &str) -> policy_compiler::config::Config {
    policy_compiler::config::load_str("config.yaml", yaml, &|_| None)
        .unwrap()
        .config
}

#[test]
fn maps_pomerium_options() {
    let yaml = format!(
        "{}{}",
        config_yaml("admins"),
        r#"  - from: https://other.example.com:8443
    to: http://127.0.0.1:9
    allow_any_authenticated_user: true
    idp_client_id: route-client
    idp_client_secret: route-secret
sidecar_address: 127.0.0.1:7001
metrics_address: 127.0.0.1:7002
cookie_name: _custom
cookie_expire: 2h
databroker_storage_type: redis
databroker_storage_connection_string: redis://:pw@127.0.0.1:6379/2
identity_user_info_refresh_interval: 90s
jwt_claims_headers:
  X-Email: email
log_level: debug
"#
    );
    let s = Settings::from_config(&load(&yaml), None).unwrap();
    assert_eq!(s.address.to_string(), "127.0.0.1:7001");
    assert_eq!(s.metrics_address.unwrap().to_string(), "127.0.0.1:7002");
    assert_eq!(s.cookie_name, "_custom");
    assert_eq!(s.cookie_expire, Duration::from_secs(7200));
    assert_eq!(
        s.storage,
        StorageSettings::Redis {
            connection_string: "redis://:pw@127.0.0.1:6379/2".into(),
            key_prefix: "portcullis:".into()
        }
    );
    assert_eq!(
        s.identity.user_info_refresh_interval,
        Duration::from_secs(90)
    );
    assert_eq!(
        s.jwt_claims_headers,
        vec![("X-Email".to_owned(), "email".to_owned())]
    );
    assert_eq!(s.log_level, "debug");
    assert_eq!(
        s.idp_client.as_ref().unwrap().client_id,
        "portcullis-test-client"
    );
    assert_eq!(s.route_idp_clients.len(), 1);
    assert_eq!(s.route_idp_clients[0].client_id, "route-client");
    assert_eq!(
        s.route_idp_clients[0].client_secret.expose(),
        "route-secret"
    );
    assert_eq!(
        s.route_hosts,
        vec!["app.example.com", "other.example.com:8443"]
    );
    assert_eq!(s.login_routes[1].from, "https://other.example.com:8443");
    assert_eq!(
        s.api_token(),
        portcullis_common::api::api_token(&portcullis_common::Secret::from_bytes(SHARED))
    );
    // Secrets never show in Debug output.
    let dbg = format!("{s:?}");
    assert!(
        !dbg.contains("route-secret") && !dbg.contains(":pw@") || !dbg.contains("route-secret"),
        "{dbg}"
    );
}

#[test]
fn defaults_are_pomerium_and_portcullis_defaults() {
    let s = Settings::from_config(&load(&config_yaml("x")), None).unwrap();
    assert_eq!(s.address.to_string(), "127.0.0.1:5080");
    assert_eq!(s.metrics_address, None);
    assert_eq!(s.cookie_name, "_pomerium");
    assert_eq!(s.cookie_expire, Duration::from_secs(14 * 3600));
    assert_eq!(s.storage, StorageSettings::Memory);
    assert_eq!(
        s.identity.user_info_refresh_interval,
        Duration::from_secs(600)
    );
}

#[test]
fn generated_secrets_are_refused() {
    let yaml = config_yaml("x");
    let without_shared: String = yaml
        .lines()
        .filter(|l| !l.starts_with("shared_secret"))
        .map(|l| format!("{l}\n"))
        .collect();
    let err = Settings::from_config(&load(&without_shared), None).unwrap_err();
    assert!(err.to_string().contains("shared_secret"), "{err}");
    let without_cookie: String = yaml
        .lines()
        .filter(|l| !l.starts_with("cookie_secret"))
        .map(|l| format!("{l}\n"))
        .collect();
    let err = Settings::from_config(&load(&without_cookie), None).unwrap_err();
    assert!(err.to_string().contains("cookie_secret"), "{err}");
}
