//! Tests of the config loader.
use super::*;
use crate::diag::Severity;

const SECRET: &str = "KDBIqKTq8aJ4OuU07np7qBtT6jX37I2H5DCczzExvP8=";

fn no_env(_: &str) -> Option<String> {
    None
}

fn load(text: &str) -> Result<Loaded, Diagnostics> {
    load_str("c.yaml", text, &no_env)
}

fn with_secrets(body: &str) -> String {
    format!("shared_secret: {SECRET}\ncookie_secret: {SECRET}\n{body}")
}

fn errors(text: &str) -> String {
    load(text).unwrap_err().to_string()
}

#[test]
fn defaults_are_pomeriums() {
    let l = load(&with_secrets("")).unwrap();
    let c = &l.config;
    assert_eq!(c.cookie_name, "_pomerium");
    assert_eq!(c.cookie_expire, Duration::from_secs(14 * 3600));
    assert!(c.cookie_secure && c.cookie_http_only);
    assert_eq!(
        c.idp_scopes,
        ["openid", "profile", "email", "offline_access"]
    );
    assert_eq!(c.programmatic_redirect_domain_whitelist, ["localhost"]);
    assert_eq!(c.databroker_storage_type, StorageType::Memory);
    assert_eq!(c.log_level, LogLevel::Info);
    assert_eq!(c.address.to_string(), ":443");
    assert_eq!(c.sidecar_address.to_string(), "127.0.0.1:5080");
    assert_eq!(
        c.identity_user_info_refresh_interval,
        Duration::from_secs(600)
    );
    assert_eq!(c.default_upstream_timeout, Duration::from_secs(30));
    assert_eq!(c.pass_identity_headers, None);
    assert!(!c.shared_secret.generated && !c.cookie_secret.generated);
    assert!(l.warnings.is_empty(), "{}", l.warnings);
}

#[test]
fn missing_secrets_are_generated_with_a_warning() {
    let l = load("").unwrap();
    assert!(l.config.shared_secret.generated && l.config.cookie_secret.generated);
    assert_ne!(l.config.shared_secret.secret, l.config.cookie_secret.secret);
    assert_eq!(l.warnings.len(), 2, "{}", l.warnings);
    assert!(l.warnings.iter().all(|w| w.severity == Severity::Warning));
}

#[test]
fn a_route_loads_typed() {
    let l = load(&with_secrets(
        "routes:\n  - from: https://app.example.com\n    to: [\"http://a:80,3\", \"http://b:80,1\"]\n    prefix: /api\n    allowed_users: [alice@example.com]\n    timeout: 1m30s\n    policy:\n      allow:\n        or:\n          - email:\n              is: bob@example.com\n",
    ))
    .unwrap();
    let r = &l.config.routes[0];
    assert_eq!(r.from.value.as_str(), "https://app.example.com/");
    assert_eq!(r.to.len(), 2);
    assert_eq!(r.to[0].weight, Some(3));
    assert_eq!(r.to[0].url.as_str(), "http://a/");
    assert_eq!(
        r.path_match.as_ref().unwrap().value,
        PathMatch::Prefix("/api".into())
    );
    assert_eq!(r.allowed_users[0].value, "alice@example.com");
    assert_eq!(r.allowed_users[0].span, Span::new(7, 21));
    assert_eq!(r.timeout, Some(Duration::from_secs(90)));
    assert_eq!(r.policy.as_ref().unwrap().span.line, 10);
    assert_eq!(r.span, Span::new(4, 5));
    assert_eq!(r.file, "c.yaml");
}

#[test]
fn errors_are_positioned_and_all_reported() {
    let e = errors(&with_secrets(
        "routes:\n  - from: https://a.example.com/admin\n    to: http://b\n    frmo: x\n  - from: https://c\n    to: ftp://d\n",
    ));
    assert_eq!(
        e,
        "c.yaml:4:11: route `from` URL must not contain a path (`/admin`); use `prefix` instead\n\
         c.yaml:6:5: unknown field `frmo` in route (did you mean `from`?)\n\
         c.yaml:8:9: route `to` URL `ftp://d` must use `http`, `https` or `h2c`, not `ftp`"
    );
}

#[test]
fn env_overrides_file() {
    let env = |k: &str| match k {
        "COOKIE_NAME" => Some("_env".to_owned()),
        "IDP_SCOPES" => Some("openid,email".to_owned()),
        "INSECURE_SERVER" => Some("true".to_owned()),
        "COOKIE_EXPIRE" => Some("xx".to_owned()),
        _ => None,
    };
    let e = load_str("c.yaml", &with_secrets("cookie_name: _file\n"), &env).unwrap_err();
    assert_eq!(
        e.to_string(),
        "env COOKIE_EXPIRE: invalid duration `xx` for `cookie_expire`: expected a number"
    );
    let env2 = |k: &str| if k == "COOKIE_EXPIRE" { None } else { env(k) };
    let l = load_str("c.yaml", &with_secrets("cookie_name: _file\n"), &env2).unwrap();
    assert_eq!(l.config.cookie_name, "_env");
    assert_eq!(l.config.idp_scopes, ["openid", "email"]);
    assert!(l.config.insecure_server);
}

#[test]
fn ignored_pomerium_options_warn_once() {
    let l = load(&with_secrets(
        "debug_address: :9999\ntracing_provider: jaeger\n",
    ))
    .unwrap();
    assert_eq!(
        l.warnings.to_string(),
        "c.yaml:3:1: warning: option `debug_address` is not implemented by portcullis; ignored\n\
         c.yaml:4:1: warning: option `tracing_provider` is not implemented by portcullis; ignored"
    );
    assert!(
        errors("cookie_nmae: x\n")
            .contains("c.yaml:1:1: unknown option `cookie_nmae` (did you mean `cookie_name`?)")
    );
}

#[test]
fn secrets_never_print() {
    let l = load(&with_secrets("idp_client_secret: hunter2\n")).unwrap();
    let dbg = format!("{:?}", l.config);
    assert!(!dbg.contains("hunter2"));
    assert!(!dbg.contains(SECRET));
}
