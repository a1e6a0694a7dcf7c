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
    assert!(c.ext_authz_address.is_none());
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
    assert!(
        l.warnings
            .to_string()
            .starts_with("c.yaml: warning: `cookie_secret` is not set; a random one was generated"),
        "{}",
        l.warnings
    );
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
fn several_path_matchers_take_pomeriums_precedence() {
    let l = load(&with_secrets(
        "routes:\n  - from: https://a.example.com\n    to: http://a\n    prefix: /api\n    path: /api/v1\n  - from: https://b.example.com\n    to: http://b\n    path: /x\n    regex: ^/y$\n    prefix: /z\n",
    ))
    .unwrap();
    let m = |i: usize| {
        l.config.routes[i]
            .path_match
            .as_ref()
            .unwrap()
            .value
            .clone()
    };
    assert_eq!(m(0), PathMatch::Path("/api/v1".into()));
    assert_eq!(m(1), PathMatch::Regex("^/y$".into()));
    assert_eq!(l.warnings.iter().count(), 3, "{}", l.warnings);
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

mod read_tests {
    use super::super::read::{parse_go_bool, parse_go_duration, split_list};
    use std::time::Duration;

    #[test]
    fn go_durations() {
        let ok = |s: &str, d: Duration| assert_eq!(parse_go_duration(s), Ok(d), "{s}");
        ok("14h", Duration::from_secs(14 * 3600));
        ok("1m30s", Duration::from_secs(90));
        ok("500ms", Duration::from_millis(500));
        ok("1.5h", Duration::from_secs(5400));
        ok("2us", Duration::from_micros(2));
        ok("3µs", Duration::from_micros(3));
        ok("7ns", Duration::from_nanos(7));
        ok("0", Duration::ZERO);
        ok("-0s", Duration::ZERO);
        ok("+5s", Duration::from_secs(5));
        ok(".5s", Duration::from_millis(500));
        ok("1h2m3s4ms", Duration::new(3723, 4_000_000));
        for bad in [
            "",
            "10",
            "5 minutes",
            "1x",
            "-5s",
            "--5s",
            "h",
            "1..5s",
            "s5",
            "99999999999999h",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn go_bools_and_lists() {
        for t in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(parse_go_bool(t), Some(true));
        }
        for f in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse_go_bool(f), Some(false));
        }
        assert_eq!(parse_go_bool("yes"), None);
        assert_eq!(split_list(" a, b ,,c "), ["a", "b", "c"]);
    }
}

#[test]
fn env_values_parse_like_the_files() {
    let env = |k: &str| {
        Some(
            match k {
                "SET_RESPONSE_HEADERS" => "X-A=1, X-B=two",
                "IDP_REQUEST_PARAMS" => r#"{"prompt": "login"}"#,
                "JWT_CLAIMS_HEADERS" => "email,groups",
                "PROGRAMMATIC_REDIRECT_DOMAIN_WHITELIST" => r#"["a.example.com", "b"]"#,
                "COOKIE_SECURE" => "f",
                "COOKIE_EXPIRE" => "1h30m",
                "DATABROKER_STORAGE_TYPE" => "redis",
                "DATABROKER_STORAGE_CONNECTION_STRING" => "redis://:pw@127.0.0.1:6379/0",
                "ADDRESS" => ":8443",
                "PASS_IDENTITY_HEADERS" => "true",
                _ => return None,
            }
            .to_owned(),
        )
    };
    let c = load_str("c.yaml", &with_secrets("cookie_secure: true\n"), &env)
        .unwrap()
        .config;
    let h = c.set_response_headers.unwrap();
    assert_eq!(h.get("X-A").map(String::as_str), Some("1"));
    assert_eq!(h.get("X-B").map(String::as_str), Some("two"));
    assert_eq!(
        c.idp_request_params.get("prompt").map(String::as_str),
        Some("login")
    );
    assert_eq!(
        c.jwt_claims_headers,
        [
            ClaimHeader {
                header: "x-pomerium-claim-email".into(),
                claim: "email".into()
            },
            ClaimHeader {
                header: "x-pomerium-claim-groups".into(),
                claim: "groups".into()
            },
        ]
    );
    assert_eq!(
        c.programmatic_redirect_domain_whitelist,
        ["a.example.com", "b"]
    );
    assert!(!c.cookie_secure);
    assert_eq!(c.cookie_expire, Duration::from_secs(5400));
    assert_eq!(c.databroker_storage_type, StorageType::Redis);
    assert!(format!("{:?}", c.databroker_storage_connection_string).contains("***"));
    assert_eq!(c.address.port, 8443);
    assert_eq!(c.pass_identity_headers, Some(true));
}

#[test]
fn env_errors_name_the_variable() {
    let env = |k: &str| match k {
        "COOKIE_SECURE" => Some("maybe".to_owned()),
        "SET_RESPONSE_HEADERS" => Some("novalue".to_owned()),
        "SHARED_SECRET" => Some("c2hvcnQ=".to_owned()),
        _ => None,
    };
    let e = load_str("c.yaml", "", &env).unwrap_err().to_string();
    assert_eq!(
        e,
        "env COOKIE_SECURE: `cookie_secure` must be `true` or `false`, found `maybe`\n\
         env SET_RESPONSE_HEADERS: invalid map entry `novalue`: expected `key=value` (or a json object)\n\
         env SHARED_SECRET: invalid `shared_secret`: secret must decode to 32 bytes, got 5"
    );
}

#[test]
fn routes_from_the_policy_env_var_base64() {
    use base64::Engine as _;
    let yaml = "- from: https://env.example.com\n  to: http://env\n  frmo: x\n";
    let b64 = base64::engine::general_purpose::STANDARD.encode(yaml);
    let env = move |k: &str| (k == "POLICY").then(|| b64.clone());
    let e = load_str("c.yaml", &with_secrets(""), &env).unwrap_err();
    // Positions inside the decoded env value, file named after the variable.
    assert_eq!(
        e.to_string(),
        "env POLICY:3:3: unknown field `frmo` in route (did you mean `from`?)"
    );
    let yaml_ok =
        "[{from: 'https://env.example.com', to: 'http://env', allow_any_authenticated_user: true}]";
    let env = |k: &str| (k == "ROUTES").then(|| yaml_ok.to_owned());
    let c = load_str("c.yaml", &with_secrets(""), &env).unwrap().config;
    assert_eq!(c.routes.len(), 1);
    assert_eq!(c.routes[0].file, "env ROUTES");
}

#[test]
fn policy_routes_come_before_routes() {
    let c = load(&with_secrets(
        "routes:\n  - from: https://b\n    to: http://b\npolicy:\n  - from: https://a\n    to: http://a\n",
    ))
    .unwrap()
    .config;
    let hosts: Vec<_> = c
        .routes
        .iter()
        .map(|r| r.from.value.host_str().unwrap().to_owned())
        .collect();
    assert_eq!(hosts, ["a", "b"]);
    assert_eq!((c.routes[0].index, c.routes[1].index), (0, 1));
}

#[test]
fn route_options_are_typed() {
    let c = load(&with_secrets(
        r#"routes:
  - from: https://*.example.com:8443
    to: ["h2c://grpc:9000"]
    regex: "^/api/v[0-9]+/.*$"
    regex_rewrite_pattern: "^/api/(.*)$"
    regex_rewrite_substitution: /\1
    host_rewrite_header: X-Host
    idle_timeout: 0s
    allow_websockets: true
    cors_allow_preflight: true
    allowed_domains: example.com, example.org
    allowed_idp_claims:
      groups: [admins, 42]
      org:
        team: core
    pass_identity_headers: false
    set_request_headers: {X-Env: prod}
    remove_request_headers: [X-Secret]
    rewrite_response_headers:
      - header: Location
        prefix: http://internal/
        value: https://example.com/
    tls_skip_verify: true
    tls_server_name: internal.example.com
    idp_client_id: route-client
    idp_client_secret: route-secret
    name: api
    id: api-1
"#,
    ))
    .unwrap()
    .config;
    let r = &c.routes[0];
    assert_eq!(r.from.value.as_str(), "https://*.example.com:8443/");
    assert_eq!(r.to[0].url.scheme(), "h2c");
    assert_eq!(
        r.path_match.as_ref().unwrap().value,
        PathMatch::Regex("^/api/v[0-9]+/.*$".into())
    );
    assert_eq!(
        r.regex_rewrite,
        Some(RegexRewrite {
            pattern: "^/api/(.*)$".into(),
            substitution: "/\\1".into()
        })
    );
    assert_eq!(r.host_rewrite, HostRewrite::Header("X-Host".into()));
    assert_eq!(r.idle_timeout, Some(Duration::ZERO));
    assert!(r.allow_websockets && r.cors_allow_preflight.value);
    let domains: Vec<_> = r.allowed_domains.iter().map(|d| d.value.as_str()).collect();
    assert_eq!(domains, ["example.com", "example.org"]);
    let claims: Vec<_> = r
        .allowed_idp_claims
        .iter()
        .map(|(k, v)| {
            (
                k.value.as_str(),
                v.iter().map(|x| x.value.clone()).collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_eq!(
        claims,
        [
            (
                "groups",
                vec![Value::String("admins".into()), Value::Int(42)]
            ),
            ("org.team", vec![Value::String("core".into())]),
        ]
    );
    assert_eq!(r.pass_identity_headers, Some(false));
    assert!(!c.pass_identity_headers_for(r));
    assert_eq!(c.timeout_for(r), Duration::from_secs(30));
    assert_eq!(
        r.set_request_headers.get("X-Env").map(String::as_str),
        Some("prod")
    );
    assert_eq!(r.remove_request_headers, ["X-Secret"]);
    assert_eq!(
        r.rewrite_response_headers[0].prefix.as_deref(),
        Some("http://internal/")
    );
    assert!(r.upstream_tls.skip_verify);
    assert_eq!(
        r.upstream_tls.server_name.as_deref(),
        Some("internal.example.com")
    );
    assert_eq!(
        r.idp_client_secret.as_ref().unwrap().expose(),
        "route-secret"
    );
    assert_eq!(r.display_name(), "api");
    assert_eq!(r.id.as_ref().unwrap().value, "api-1");
    assert!(r.has_any_rule());
}

#[test]
fn global_options_are_typed() {
    let c = load(&with_secrets(
        r#"authenticate_service_url: https://auth.example.com
idp_provider: oidc
idp_provider_url: https://idp.example.com/realms/x
idp_client_id: portcullis
idp_client_secret: s3cret
idp_scopes: openid, email
cookie_domain: example.com
cookie_same_site: Lax
cookie_http_only: false
address: 0.0.0.0:8443
insecure_server: true
jwt_claims_headers:
  X-Email: email
pass_identity_headers: true
log_level: WARN
metrics_address: 127.0.0.1:9090
identity_user_info_refresh_interval: 5m
sidecar_address: "[::1]:5081"
ext_authz_address: 127.0.0.1:5090
"#,
    ))
    .unwrap()
    .config;
    assert_eq!(c.idp_provider, Some(IdpProvider::Oidc));
    assert_eq!(c.idp_scopes, ["openid", "email"]);
    assert_eq!(c.cookie_same_site, Some(SameSite::Lax));
    assert!(!c.cookie_http_only);
    assert_eq!(c.address.to_string(), "0.0.0.0:8443");
    assert!(c.insecure_server);
    assert_eq!(
        c.jwt_claims_headers,
        [ClaimHeader {
            header: "X-Email".into(),
            claim: "email".into()
        }]
    );
    assert_eq!(c.log_level, LogLevel::Warn);
    assert_eq!(c.metrics_address.unwrap().port, 9090);
    assert_eq!(
        c.identity_user_info_refresh_interval,
        Duration::from_secs(300)
    );
    assert_eq!(c.sidecar_address.to_string(), "[::1]:5081");
    assert_eq!(c.ext_authz_address.unwrap().to_string(), "127.0.0.1:5090");
}
