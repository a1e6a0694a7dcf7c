//! Real-world input: the Azure/vaultwarden config from a Pomerium issue report
//! (`/work/shared/reference/issue-claims-not-refreshed.txt`, indentation restored) loads.
#![cfg(feature = "frontend")]
// Test helpers outside #[test] fns: panicking on a broken fixture is the point.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use policy_compiler::config::{IdpProvider, LogLevel, PathMatch, load_file, load_str_in};
use policy_compiler::value::Value;
use std::path::Path;

const FIXTURE: &str = "tests/fixtures/issue-claims-not-refreshed.yaml";

fn text() -> String {
    std::fs::read_to_string(FIXTURE).unwrap()
}

#[test]
fn issue_config_loads_with_warnings_for_ignored_options() {
    let dir = Path::new("tests/fixtures");
    let loaded = load_str_in(FIXTURE, &text(), &|_| None, Some(dir)).unwrap();
    let c = &loaded.config;

    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        warnings,
        [
            format!(
                "{FIXTURE}:7:1: warning: option `debug_address` is not implemented by portcullis; ignored"
            ),
            format!(
                "{FIXTURE}:8:1: warning: option `envoy_admin_address` is not implemented by portcullis; ignored"
            ),
        ]
    );

    assert_eq!(c.address.host.as_deref(), Some("::"));
    assert_eq!(c.address.port, 443);
    assert_eq!(c.log_level, LogLevel::Debug);
    assert_eq!(c.idp_provider, Some(IdpProvider::Azure));
    assert_eq!(
        c.idp_provider_url.as_ref().unwrap().as_str(),
        "https://login.microsoftonline.com/%3COMITTED%3E/v2.0"
    );
    assert_eq!(c.idp_client_id.as_deref(), Some("<OMITTED>"));
    assert_eq!(c.idp_client_secret.as_ref().unwrap().expose(), "<OMITTED>");
    assert!(!c.shared_secret.generated && !c.cookie_secret.generated);
    assert!(
        c.signing_key
            .as_ref()
            .unwrap()
            .expose()
            .contains("BEGIN EC PRIVATE KEY")
    );
    assert_eq!(
        c.authenticate_service_url.as_ref().unwrap().as_str(),
        "https://authenticate.pomerium.localhost/"
    );

    assert_eq!(c.routes.len(), 4);
    let hosts: Vec<&str> = c
        .routes
        .iter()
        .map(|r| r.from.value.host_str().unwrap())
        .collect();
    assert_eq!(
        hosts,
        [
            "verify.pomerium.localhost",
            "httpbin.pomerium.localhost",
            "vaultwarden.pomerium.localhost",
            "vaultwarden.pomerium.localhost"
        ]
    );
    for r in &c.routes[..2] {
        assert!(r.allow_any_authenticated_user.value);
        assert_eq!(r.pass_identity_headers, Some(true));
        assert!(r.policy.is_none());
    }
    let admin = &c.routes[2];
    assert_eq!(
        admin.path_match.as_ref().unwrap().value,
        PathMatch::Prefix("/admin".into())
    );
    assert_eq!(admin.to[0].url.as_str(), "http://vaultwarden/");
    assert_eq!(admin.index, 2);
    // The policy is handed on as a faithful tree: a list with one `allow` rule.
    let policy = admin.policy.as_ref().unwrap();
    assert_eq!(policy.span.line, 32); // `- allow:`
    let rules = policy.value.as_seq().unwrap();
    let and = rules[0]
        .value
        .get("allow")
        .unwrap()
        .value
        .get("and")
        .unwrap();
    let claim = and.value.as_seq().unwrap()[1]
        .value
        .get("claim/groups")
        .unwrap();
    assert_eq!(
        claim.value.get("has").unwrap().value,
        Value::String("f64d91fa-e526-441c-965e-8edb8b6f0a8b".into())
    );
    assert!(c.routes[3].path_match.is_none());
}

#[test]
fn load_file_resolves_key_files_next_to_the_config() {
    // load_file reads the process environment; this test only relies on the file.
    let loaded = load_file(Path::new(FIXTURE)).unwrap();
    assert!(loaded.config.signing_key.is_some());
    assert_eq!(loaded.config.file, FIXTURE);
}

#[test]
fn the_reports_original_key_path_is_a_clear_error() {
    // As reported, `signing_key_file` names a file that only exists in the reporter's
    // container: loading must say which option and which file.
    let original = text().replace(
        "signing_key_file: 'ec_private.pem'",
        "signing_key_file: '/pomerium/ec_private.pem'",
    );
    let errors = load_str_in(
        FIXTURE,
        &original,
        &|_| None,
        Some(Path::new("tests/fixtures")),
    )
    .unwrap_err();
    assert_eq!(
        errors.to_string(),
        format!(
            "{FIXTURE}:11:19: cannot read `signing_key_file` `/pomerium/ec_private.pem`: no such file"
        )
    );
}

#[test]
fn missing_config_file_is_an_error_not_a_panic() {
    let e = load_file(Path::new("tests/fixtures/does-not-exist.yaml")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tests/fixtures/does-not-exist.yaml: cannot read config file: no such file"
    );
}
