//! Pomerium policy semantics, criterion by criterion and matcher by matcher, through the
//! whole pipeline: YAML → config → PPL → bundle bytes → `Engine::evaluate`. Every decision is
//! also checked against the oracle interpreter and against `Engine::explain`.

// Needs the YAML front end and compiler.
#![cfg(feature = "frontend")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use policy_compiler::compile;
use policy_compiler::config::load_str;
use policy_compiler::eval::{
    CertInfo, Claims, ClientCertificate, Decision, DenyReason, Engine, Request, Subject,
};
use policy_compiler::oracle;
use policy_compiler::ppl::{self, RoutePolicy};

const ALLOW: Decision = Decision::Allow;
const LOGIN: Decision = Decision::Login;
const NOT_ALLOWED: Decision = Decision::Deny(DenyReason::NotAllowed);
const DENIED: Decision = Decision::Deny(DenyReason::PolicyDenied);

struct T {
    engine: Engine,
    policies: Vec<RoutePolicy>,
}

/// One route `https://app.example.com` with `route` (YAML, route-level keys) added.
fn t(route: &str) -> T {
    let mut yaml = String::from("routes:\n  - from: https://app.example.com\n    to: http://up\n");
    for line in route.trim_matches('\n').lines() {
        yaml.push_str("    ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    let loaded = load_str("t.yaml", &yaml, &|_| None).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let bundle = compile::compile(&loaded.config).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let engine = Engine::from_bytes(&bundle.to_bytes()).unwrap();
    let policies = loaded
        .config
        .routes
        .iter()
        .map(|r| ppl::route_policy(r).0)
        .collect();
    T { engine, policies }
}

/// A policy (PPL YAML) as the route's `policy`.
fn p(policy: &str) -> T {
    let mut s = String::from("policy:\n");
    for line in policy.trim_matches('\n').lines() {
        s.push_str("  ");
        s.push_str(line);
        s.push('\n');
    }
    t(&s)
}

fn user(email: &str, claims: serde_json::Value) -> Subject {
    let claims = match claims {
        serde_json::Value::Object(m) => Claims::from_json(&m),
        _ => Claims::default(),
    };
    Subject::new("user-1".into(), email.into(), claims)
}

fn alice() -> Subject {
    user("alice@example.com", serde_json::json!({}))
}

const NOON_2024_06_03: i64 = 1_717_416_000; // Monday 2024-06-03 12:00:00 UTC

impl T {
    fn req(&self, req: &Request<'_>, s: Option<&Subject>) -> Decision {
        let r = self
            .engine
            .find_route("app.example.com", req.path)
            .expect("route");
        let d = self.engine.evaluate(r, req, s);
        let o = oracle::evaluate(&self.policies[r.index()], req, s);
        assert_eq!(d, o, "engine and oracle disagree on {req:?}");
        assert_eq!(self.engine.explain(r, req, s).decision, d);
        d
    }
    fn get(&self, path: &str, s: Option<&Subject>) -> Decision {
        self.req(&Request::new("GET", path, NOON_2024_06_03), s)
    }
    fn at(&self, now: i64, s: Option<&Subject>) -> Decision {
        self.req(&Request::new("GET", "/", now), s)
    }
}

// --- outcome rules -------------------------------------------------------------------------

#[test]
fn no_rule_denies_everyone_without_sign_in() {
    let t = t("name: bare");
    assert_eq!(t.get("/", None), NOT_ALLOWED);
    assert_eq!(t.get("/", Some(&alice())), NOT_ALLOWED);
}

#[test]
fn unauthenticated_on_non_public_route_is_login() {
    let t = t("allow_any_authenticated_user: true");
    assert_eq!(t.get("/", None), LOGIN);
    assert_eq!(t.get("/", Some(&alice())), ALLOW);
}

#[test]
fn public_route_allows_anonymous() {
    let t = t("allow_public_unauthenticated_access: true");
    assert_eq!(t.get("/", None), ALLOW);
    assert_eq!(t.get("/", Some(&alice())), ALLOW);
}

#[test]
fn public_route_with_deny_on_email_sends_anonymous_to_login() {
    let t = t(
        "allow_public_unauthenticated_access: true\npolicy:\n  deny:\n    or:\n      - email: mallory@example.com",
    );
    assert_eq!(t.get("/", None), LOGIN);
    assert_eq!(t.get("/", Some(&alice())), ALLOW);
    assert_eq!(
        t.get(
            "/",
            Some(&user("mallory@example.com", serde_json::json!({})))
        ),
        DENIED
    );
}

#[test]
fn cors_only_route_gives_403_not_login() {
    let t = t("cors_allow_preflight: true");
    assert_eq!(t.get("/", None), NOT_ALLOWED);
    let pre = Request {
        origin: Some("https://other.example"),
        access_control_request_method: Some("POST"),
        ..Request::new("OPTIONS", "/", 0)
    };
    assert_eq!(t.req(&pre, None), ALLOW);
    // Missing Origin: not a preflight.
    let half = Request {
        access_control_request_method: Some("POST"),
        ..Request::new("OPTIONS", "/", 0)
    };
    assert_eq!(t.req(&half, None), NOT_ALLOWED);
    // Empty headers do not count (Pomerium: `count(...) > 0`).
    for (origin, acrm) in [("", "POST"), ("https://other.example", ""), ("", "")] {
        let empty = Request {
            origin: Some(origin),
            access_control_request_method: Some(acrm),
            ..Request::new("OPTIONS", "/", 0)
        };
        assert_eq!(t.req(&empty, None), NOT_ALLOWED, "{origin:?} {acrm:?}");
    }
}

#[test]
fn pomerium_accepted_never_matching_criteria() {
    // A list where one value is expected, and a nameless claim: accepted (warning), never
    // match — on allow (403 / sign-in) and on deny (nothing denied).
    for c in [
        "email: [alice@example.com, bob@example.com]",
        "claim/groups: [admins]",
        "claim/: admins",
        "user: [user-1]",
    ] {
        let t = p(&format!("allow:\n  or:\n    - {c}"));
        let admin = user(
            "alice@example.com",
            serde_json::json!({"groups": ["admins"], "": "admins"}),
        );
        assert_eq!(t.get("/", Some(&admin)), NOT_ALLOWED, "{c}");
        assert_eq!(t.get("/", None), LOGIN, "{c}");
        let d = p(&format!(
            "- allow:\n    or:\n      - accept: true\n- deny:\n    or:\n      - {c}"
        ));
        assert_eq!(d.get("/", Some(&admin)), ALLOW, "{c}");
    }
    let t = p("allow:\n  or:\n    - http_path: [/a, /b]");
    assert_eq!(t.get("/a", None), NOT_ALLOWED);
}

#[test]
fn deny_wins_over_allow() {
    let t = p(
        "- allow:\n    or:\n      - accept: true\n- deny:\n    or:\n      - email: alice@example.com",
    );
    assert_eq!(t.get("/", Some(&alice())), DENIED);
    assert_eq!(
        t.get("/", Some(&user("bob@example.com", serde_json::json!({})))),
        ALLOW
    );
}

#[test]
fn failed_and_naming_an_identity_criterion_gives_login() {
    let t = p("allow:\n  and:\n    - http_method: POST\n    - email: alice@example.com");
    assert_eq!(t.get("/", None), LOGIN);
    assert_eq!(t.get("/", Some(&alice())), NOT_ALLOWED);
    let post = Request::new("POST", "/", 0);
    assert_eq!(t.req(&post, Some(&alice())), ALLOW);
}

#[test]
fn accept_in_or_hides_the_sign_in_reason() {
    let t = p("allow:\n  or:\n    - accept: true\n    - email: alice@example.com");
    assert_eq!(t.get("/", None), ALLOW);
}

#[test]
fn unauthenticated_reason_survives_not_and_nor() {
    let t = p("allow:\n  not:\n    - email: bob@example.com");
    // Anonymous: `email: bob` fails with user-unauthenticated; `not` passes but keeps it.
    assert_eq!(t.get("/", None), LOGIN);
    assert_eq!(t.get("/", Some(&alice())), ALLOW);
    // The matcher `not` is different: email "" ≠ bob passes (email-ok), no sign-in.
    let t = p("allow:\n  or:\n    - email:\n        not: bob@example.com");
    assert_eq!(t.get("/", None), ALLOW);
    let t = p("allow:\n  not:\n    - domain: example.com");
    // Anonymous has no domain → domain fails with user-unauthenticated → `not` keeps it.
    assert_eq!(t.get("/", None), LOGIN);
    let t = p("allow:\n  nor:\n    - user: u1\n    - accept: true");
    assert_eq!(t.get("/", None), LOGIN);
    assert_eq!(t.get("/", Some(&alice())), ALLOW);
}

#[test]
fn operators_of_one_rule_are_ored() {
    let t = p("allow:\n  and:\n    - email: a@x.com\n  or:\n    - email: alice@example.com");
    assert_eq!(t.get("/", Some(&alice())), ALLOW);
    assert_eq!(
        t.get("/", Some(&user("a@x.com", serde_json::json!({})))),
        ALLOW
    );
    assert_eq!(
        t.get("/", Some(&user("c@x.com", serde_json::json!({})))),
        NOT_ALLOWED
    );
}

#[test]
fn or_not_nor_operators() {
    let t = p("allow:\n  or:\n    - email: a@x.com\n    - email: b@x.com");
    assert_eq!(
        t.get("/", Some(&user("b@x.com", serde_json::json!({})))),
        ALLOW
    );
    let t = p("allow:\n  not:\n    - email: a@x.com\n    - email: b@x.com");
    assert_eq!(
        t.get("/", Some(&user("b@x.com", serde_json::json!({})))),
        NOT_ALLOWED
    );
    assert_eq!(
        t.get("/", Some(&user("c@x.com", serde_json::json!({})))),
        ALLOW
    );
    let t = p("allow:\n  nor:\n    - email: a@x.com\n    - domain: x.com");
    assert_eq!(
        t.get("/", Some(&user("a@x.com", serde_json::json!({})))),
        NOT_ALLOWED
    );
    assert_eq!(
        t.get("/", Some(&user("b@x.com", serde_json::json!({})))),
        ALLOW
    );
}

#[test]
fn nested_operators_extension() {
    let t = p(
        "allow:\n  and:\n    - domain: example.com\n    - or:\n        - claim/groups: admins\n        - http_method: GET",
    );
    assert_eq!(t.get("/", Some(&alice())), ALLOW);
    let post = Request::new("POST", "/", 0);
    assert_eq!(t.req(&post, Some(&alice())), NOT_ALLOWED);
    let admin = user(
        "root@example.com",
        serde_json::json!({"groups": ["admins"]}),
    );
    assert_eq!(t.req(&post, Some(&admin)), ALLOW);
}

#[test]
fn rule_or_list_of_rules() {
    let one = p("allow:\n  or:\n    - email: alice@example.com");
    let list = p(
        "- allow:\n    or:\n      - email: bob@example.com\n- allow:\n    or:\n      - email: alice@example.com",
    );
    assert_eq!(one.get("/", Some(&alice())), ALLOW);
    assert_eq!(list.get("/", Some(&alice())), ALLOW);
}

// --- criteria --------------------------------------------------------------------------------

#[test]
fn accept_and_reject() {
    assert_eq!(p("allow:\n  or:\n    - accept: true").get("/", None), ALLOW);
    assert_eq!(
        p("allow:\n  or:\n    - reject: true").get("/", None),
        NOT_ALLOWED
    );
}

#[test]
fn authenticated_user_needs_a_user_id() {
    let t = p("allow:\n  or:\n    - authenticated_user: true");
    assert_eq!(t.get("/", Some(&alice())), ALLOW);
    let no_id = Subject::new(String::new(), "x@y.z".into(), Claims::default());
    assert_eq!(t.get("/", Some(&no_id)), NOT_ALLOWED);
    assert_eq!(t.get("/", None), LOGIN);
}

#[test]
fn email_is_case_and_unicode_sensitive() {
    let t = p("allow:\n  or:\n    - email: alice@example.com");
    assert_eq!(
        t.get("/", Some(&user("Alice@Example.com", serde_json::json!({})))),
        NOT_ALLOWED
    );
    let t = p("allow:\n  or:\n    - email: josé@exämple.com");
    assert_eq!(
        t.get("/", Some(&user("josé@exämple.com", serde_json::json!({})))),
        ALLOW
    );
    // Same look, decomposed é (e + U+0301): a different string.
    assert_eq!(
        t.get(
            "/",
            Some(&user("jose\u{301}@exämple.com", serde_json::json!({})))
        ),
        NOT_ALLOWED
    );
}

#[test]
fn string_matchers_are_anded() {
    let t = p(
        "allow:\n  or:\n    - email:\n        starts_with: al\n        ends_with: '@example.com'\n        contains: ice\n        not: alice@evil.example.com",
    );
    assert_eq!(t.get("/", Some(&alice())), ALLOW);
    assert_eq!(
        t.get(
            "/",
            Some(&user("alfred@example.com", serde_json::json!({})))
        ),
        NOT_ALLOWED
    );
}

#[test]
fn in_and_not_in() {
    let t = p("allow:\n  or:\n    - email:\n        in: [a@x.com, alice@example.com]");
    assert_eq!(t.get("/", Some(&alice())), ALLOW);
    assert_eq!(
        t.get("/", Some(&user("b@x.com", serde_json::json!({})))),
        NOT_ALLOWED
    );
    let t = p("allow:\n  or:\n    - email:\n        not_in: [a@x.com]");
    assert_eq!(t.get("/", Some(&alice())), ALLOW);
    assert_eq!(
        t.get("/", Some(&user("a@x.com", serde_json::json!({})))),
        NOT_ALLOWED
    );
    // Anonymous users have email "": `not_in` passes for them.
    assert_eq!(t.get("/", None), ALLOW);
}

#[test]
fn matchers_are_type_sensitive() {
    // A number never equals the string "42".
    let t = p("allow:\n  or:\n    - user: 42");
    let s = Subject::new("42".into(), "x@y.z".into(), Claims::default());
    assert_eq!(t.get("/", Some(&s)), NOT_ALLOWED);
    let t = p("allow:\n  or:\n    - user: '42'");
    assert_eq!(t.get("/", Some(&s)), ALLOW);
}

#[test]
fn domain_is_the_part_after_the_first_at() {
    let t = p("allow:\n  or:\n    - domain: example.com");
    assert_eq!(t.get("/", Some(&alice())), ALLOW);
    assert_eq!(
        t.get("/", Some(&user("a@sub.example.com", serde_json::json!({})))),
        NOT_ALLOWED
    );
    assert_eq!(
        t.get("/", Some(&user("no-at-sign", serde_json::json!({})))),
        NOT_ALLOWED
    );
    assert_eq!(
        t.get(
            "/",
            Some(&user("a@example.com@evil.com", serde_json::json!({})))
        ),
        ALLOW
    );
    assert_eq!(
        t.get("/", Some(&user("a@Example.COM", serde_json::json!({})))),
        NOT_ALLOWED
    );
    assert_eq!(t.get("/", None), LOGIN);
}

#[test]
fn user_criterion_and_anonymous_not() {
    let t = p("allow:\n  or:\n    - user: user-1");
    assert_eq!(t.get("/", Some(&alice())), ALLOW);
    // Anonymous: no user id at all, so even `not` asks for sign-in.
    let t = p("allow:\n  or:\n    - user:\n        not: someone");
    assert_eq!(t.get("/", None), LOGIN);
    assert_eq!(t.get("/", Some(&alice())), ALLOW);
}

#[test]
fn claims_list_vs_scalar() {
    let t = p("allow:\n  or:\n    - claim/groups: admins");
    assert_eq!(
        t.get(
            "/",
            Some(&user(
                "a@x",
                serde_json::json!({"groups": ["staff", "admins"]})
            ))
        ),
        ALLOW
    );
    assert_eq!(
        t.get(
            "/",
            Some(&user("a@x", serde_json::json!({"groups": "admins"})))
        ),
        ALLOW
    );
    assert_eq!(
        t.get(
            "/",
            Some(&user("a@x", serde_json::json!({"groups": ["staff"]})))
        ),
        NOT_ALLOWED
    );
    assert_eq!(t.get("/", None), LOGIN);
}

#[test]
fn claim_list_is_means_exactly_one() {
    let t = p("allow:\n  or:\n    - claim/groups:\n        is: admins");
    assert_eq!(
        t.get(
            "/",
            Some(&user("a@x", serde_json::json!({"groups": ["admins"]})))
        ),
        ALLOW
    );
    assert_eq!(
        t.get(
            "/",
            Some(&user("a@x", serde_json::json!({"groups": "admins"})))
        ),
        ALLOW
    );
    assert_eq!(
        t.get(
            "/",
            Some(&user("a@x", serde_json::json!({"groups": ["admins", "x"]})))
        ),
        NOT_ALLOWED
    );
    // A null element still counts.
    assert_eq!(
        t.get(
            "/",
            Some(&user(
                "a@x",
                serde_json::json!({"groups": ["admins", null]})
            ))
        ),
        NOT_ALLOWED
    );
}

#[test]
fn missing_and_empty_claims() {
    let has = p("allow:\n  or:\n    - claim/groups: admins");
    let exclude = p("allow:\n  or:\n    - claim/groups:\n        exclude: banned");
    let none = user("a@x", serde_json::json!({}));
    let empty = user("a@x", serde_json::json!({"groups": []}));
    assert_eq!(has.get("/", Some(&none)), NOT_ALLOWED);
    assert_eq!(has.get("/", Some(&empty)), NOT_ALLOWED);
    assert_eq!(exclude.get("/", Some(&none)), ALLOW);
    assert_eq!(exclude.get("/", Some(&empty)), ALLOW);
    assert_eq!(
        exclude.get(
            "/",
            Some(&user("a@x", serde_json::json!({"groups": ["banned"]})))
        ),
        NOT_ALLOWED
    );
    // Anonymous: missing claim = empty list, so `exclude` passes without sign-in.
    assert_eq!(exclude.get("/", None), ALLOW);
}

#[test]
fn nested_claims_join_with_dots() {
    let claims = serde_json::json!({"org": {"team": {"name": "infra"}}, "a/b": "slash"});
    let dots = p("allow:\n  or:\n    - claim/org.team.name: infra");
    let slashes = p("allow:\n  or:\n    - claim/org/team/name: infra");
    let literal = p("allow:\n  or:\n    - claim/a/b: slash");
    assert_eq!(dots.get("/", Some(&user("a@x", claims.clone()))), ALLOW);
    assert_eq!(
        slashes.get("/", Some(&user("a@x", claims.clone()))),
        NOT_ALLOWED
    );
    assert_eq!(literal.get("/", Some(&user("a@x", claims))), ALLOW);
}

#[test]
fn claim_values_keep_their_json_type() {
    let t = p("allow:\n  or:\n    - claim/level: 3");
    assert_eq!(
        t.get("/", Some(&user("a@x", serde_json::json!({"level": 3})))),
        ALLOW
    );
    assert_eq!(
        t.get("/", Some(&user("a@x", serde_json::json!({"level": 3.0})))),
        ALLOW
    );
    assert_eq!(
        t.get("/", Some(&user("a@x", serde_json::json!({"level": "3"})))),
        NOT_ALLOWED
    );
    let t = p("allow:\n  or:\n    - claim/email_verified: true");
    assert_eq!(
        t.get(
            "/",
            Some(&user("a@x", serde_json::json!({"email_verified": true})))
        ),
        ALLOW
    );
    assert_eq!(
        t.get(
            "/",
            Some(&user("a@x", serde_json::json!({"email_verified": "true"})))
        ),
        NOT_ALLOWED
    );
}

#[test]
fn groups_criterion_has_no_directory() {
    let t = p("allow:\n  or:\n    - groups: admins");
    assert_eq!(
        t.get(
            "/",
            Some(&user("a@x", serde_json::json!({"groups": ["admins"]})))
        ),
        NOT_ALLOWED
    );
    assert_eq!(t.get("/", None), LOGIN);
    // Even `exclude` fails: there is no directory record to read.
    let t = p("allow:\n  or:\n    - groups:\n        exclude: admins");
    assert_eq!(t.get("/", Some(&alice())), NOT_ALLOWED);
    assert_eq!(t.get("/", None), LOGIN);
}

#[test]
fn http_method_is_case_sensitive() {
    let t = p("allow:\n  or:\n    - http_method: GET");
    assert_eq!(t.get("/", None), ALLOW);
    assert_eq!(t.req(&Request::new("get", "/", 0), None), NOT_ALLOWED);
}

#[test]
fn http_path_strips_query_decodes_and_normalises() {
    let t = p("allow:\n  or:\n    - http_path: /admin page");
    assert_eq!(t.get("/admin%20page", None), ALLOW);
    assert_eq!(t.get("/admin%20page?x=1", None), ALLOW);
    assert_eq!(t.get("/x/../admin%20page", None), ALLOW);
    assert_eq!(t.get("//admin%20page", None), ALLOW);
    assert_eq!(t.get("/admin%2520page", None), NOT_ALLOWED);
    let t = p("allow:\n  or:\n    - http_path:\n        starts_with: /api/");
    assert_eq!(t.get("/api/v1", None), ALLOW);
    assert_eq!(t.get("/%61pi/v1", None), ALLOW);
    assert_eq!(t.get("/apix", None), NOT_ALLOWED);
    // Only `?` ends the path (Pomerium's `getCheckRequestURL`): `#` is part of it.
    assert_eq!(t.get("/apix#/api/", None), NOT_ALLOWED);
    assert_eq!(t.get("/api/#x?y", None), ALLOW);
    // A malformed escape anywhere: Pomerium's `url.PathUnescape` fails and the path is "".
    assert_eq!(t.get("/api/%zz", None), NOT_ALLOWED);
    assert_eq!(t.get("/api/v1%4", None), NOT_ALLOWED);
    let t = p("allow:\n  or:\n    - http_path: ''");
    assert_eq!(t.get("/api/%zz", None), ALLOW);
    assert_eq!(t.get("/x%", None), ALLOW);
    assert_eq!(t.get("/x%41", None), NOT_ALLOWED);
}

#[test]
fn client_certificate_fingerprint_and_invalid_certificates() {
    let fp = "3f".repeat(32);
    let tt = p(&format!(
        "allow:\n  or:\n    - client_certificate:\n        fingerprint: {fp}"
    ));
    let with = |c| Request {
        client_certificate: c,
        ..Request::new("GET", "/", 0)
    };
    let good = CertInfo {
        fingerprint_sha256: &fp,
        ..Default::default()
    };
    assert_eq!(tt.req(&with(ClientCertificate::Valid(good)), None), ALLOW);
    assert_eq!(tt.req(&with(ClientCertificate::None), None), NOT_ALLOWED);
    let other = "00".repeat(32);
    let bad = CertInfo {
        fingerprint_sha256: &other,
        ..Default::default()
    };
    assert_eq!(
        tt.req(&with(ClientCertificate::Valid(bad)), None),
        NOT_ALLOWED
    );
    // The long (colon) form is canonicalised.
    let long = vec!["3F"; 32].join(":");
    let t2 = p(&format!(
        "allow:\n  or:\n    - client_certificate:\n        fingerprint: [\"{long}\"]"
    ));
    assert_eq!(t2.req(&with(ClientCertificate::Valid(good)), None), ALLOW);
    // Without client-certificate verification configured (Portcullis refuses the mTLS options)
    // Pomerium generates no `deny: invalid_client_certificate` rule: the certificate is not
    // looked at.
    let public = t("allow_public_unauthenticated_access: true");
    assert_eq!(public.req(&with(ClientCertificate::Invalid), None), ALLOW);
    let private = t("allow_any_authenticated_user: true");
    assert_eq!(private.req(&with(ClientCertificate::Invalid), None), LOGIN);
    // An explicit `invalid_client_certificate` deny refuses it before sign-in is considered.
    let explicit = t(
        "allow_any_authenticated_user: true\npolicy:\n  deny:\n    or:\n      - invalid_client_certificate: true",
    );
    assert_eq!(
        explicit.req(&with(ClientCertificate::Invalid), None),
        Decision::Deny(DenyReason::InvalidClientCertificate)
    );
    assert_eq!(explicit.req(&with(ClientCertificate::None), None), LOGIN);
}

#[test]
fn client_certificate_san_matchers() {
    let t = p(
        "allow:\n  or:\n    - client_certificate:\n        san_dns:\n          ends_with: .corp.example",
    );
    let sans = ["a.corp.example"];
    let c = CertInfo {
        fingerprint_sha256: "",
        san_dns: &sans,
        ..Default::default()
    };
    let req = Request {
        client_certificate: ClientCertificate::Valid(c),
        ..Request::new("GET", "/", 0)
    };
    assert_eq!(t.req(&req, None), ALLOW);
}

#[test]
fn generated_rule_has_no_pomerium_routes_criterion() {
    // Current Pomerium generates no `pomerium_routes` criterion: `/.pomerium/` in the URL
    // (least of all in the query) opens nothing on an ordinary route.
    let t = t("allowed_users: [bob@example.com]");
    for path in [
        "/x?q=/.pomerium/",
        "/.pomerium/",
        "/a/.pomerium/x",
        "/.pomerium/jwt",
    ] {
        assert_eq!(t.get(path, None), LOGIN, "{path}");
        assert_eq!(t.get(path, Some(&alice())), NOT_ALLOWED, "{path}");
    }
    let bare = self::t("name: bare");
    assert_eq!(bare.get("/x?q=/.pomerium/", None), NOT_ALLOWED);
    let r = bare.engine.find_route("app.example.com", "/").unwrap();
    let e = bare.engine.explain(r, &Request::new("GET", "/", 0), None);
    assert_eq!(e.trace, vec![], "a route without rules evaluates nothing");
    let public = self::t("allow_public_unauthenticated_access: true");
    let e = public.engine.explain(r, &Request::new("GET", "/", 0), None);
    assert_eq!(e.reasons, vec!["accept"]);
}

#[test]
fn explicit_pomerium_routes_matches_only_the_path_prefix() {
    let t = p("allow:\n  or:\n    - pomerium_routes: true");
    assert_eq!(t.get("/.pomerium/", None), ALLOW);
    assert_eq!(t.get("/.pomerium/x?y=1", None), ALLOW);
    assert_eq!(t.get("/.pomerium/jwt", None), LOGIN);
    assert_eq!(t.get("/.pomerium/jwt", Some(&alice())), ALLOW);
    assert_eq!(t.get("/x?q=/.pomerium/", None), NOT_ALLOWED);
    assert_eq!(t.get("/a/.pomerium/x", None), NOT_ALLOWED);
    assert_eq!(t.get("/x?/.pomerium/jwt", None), NOT_ALLOWED);
}

// --- time criteria (Portcullis extensions) -------------------------------------------------

#[test]
fn date_after_before() {
    let t = p(
        "allow:\n  or:\n    - date:\n        after: 2024-01-01T00:00:00Z\n        before: '2024-12-31'",
    );
    assert_eq!(t.at(NOON_2024_06_03, None), ALLOW);
    assert_eq!(t.at(1_704_067_200, None), NOT_ALLOWED); // exactly 2024-01-01: not after
    assert_eq!(t.at(1_735_603_200, None), NOT_ALLOWED); // 2024-12-31 00:00 UTC
}

#[test]
fn time_of_day_follows_dst() {
    // 09:00–17:00 Paris time. Europe/Paris went CET→CEST on 2024-03-31 at 01:00 UTC.
    let t = p(
        "allow:\n  or:\n    - time_of_day:\n        after: '09:00'\n        before: '17:00'\n        timezone: Europe/Paris",
    );
    let sat_0830_utc = 1_711_787_400; // 2024-03-30 08:30 UTC = 09:30 CET
    let sun_0730_utc = 1_711_870_200; // 2024-03-31 07:30 UTC = 09:30 CEST (08:30 under CET)
    let sun_0630_utc = 1_711_866_600; // 2024-03-31 06:30 UTC = 08:30 CEST
    let sun_1530_utc = 1_711_899_000; // 2024-03-31 15:30 UTC = 17:30 CEST
    assert_eq!(t.at(sat_0830_utc, None), ALLOW);
    assert_eq!(t.at(sun_0730_utc, None), ALLOW);
    assert_eq!(t.at(sun_0630_utc, None), NOT_ALLOWED);
    assert_eq!(t.at(sun_1530_utc, None), NOT_ALLOWED);
    // Autumn: 2024-10-27 07:30 UTC = 08:30 CET (would be 09:30 under CEST).
    assert_eq!(t.at(1_730_014_200, None), NOT_ALLOWED);
    assert_eq!(t.at(1_730_017_800, None), ALLOW); // 08:30 UTC = 09:30 CET
}

#[test]
fn time_of_day_spanning_midnight() {
    let t = p("allow:\n  or:\n    - time_of_day:\n        after: '22:00'\n        before: '06:00'");
    assert_eq!(t.at(1_717_455_600, None), ALLOW); // 2024-06-03 23:00 UTC
    assert_eq!(t.at(1_717_473_600, None), ALLOW); // 2024-06-04 04:00 UTC
    assert_eq!(t.at(NOON_2024_06_03, None), NOT_ALLOWED);
}

#[test]
fn day_of_week_with_timezone() {
    let utc = p("allow:\n  or:\n    - day_of_week: mon-fri");
    let tokyo =
        p("allow:\n  or:\n    - day_of_week:\n        is: mon-fri\n        timezone: Asia/Tokyo");
    let fri_2030_utc = 1_717_791_000; // Friday 2024-06-07 20:10 UTC = Saturday 05:10 in Tokyo
    assert_eq!(utc.at(fri_2030_utc, None), ALLOW);
    assert_eq!(tokyo.at(fri_2030_utc, None), NOT_ALLOWED);
    let list = p("allow:\n  or:\n    - day_of_week: [sat, sunday]");
    assert_eq!(list.at(fri_2030_utc, None), NOT_ALLOWED);
    assert_eq!(list.at(fri_2030_utc + 86_400, None), ALLOW);
}

// --- legacy route options ------------------------------------------------------------------

#[test]
fn legacy_allowed_users_match_user_id_or_email() {
    let t = t("allowed_users: [alice@example.com, user-42]");
    assert_eq!(t.get("/", Some(&alice())), ALLOW);
    let by_id = Subject::new("user-42".into(), "z@z.z".into(), Claims::default());
    assert_eq!(t.get("/", Some(&by_id)), ALLOW);
    assert_eq!(
        t.get("/", Some(&user("bob@example.com", serde_json::json!({})))),
        NOT_ALLOWED
    );
    assert_eq!(t.get("/", None), LOGIN);
}

#[test]
fn legacy_allowed_domains_and_claims() {
    let t = t("allowed_domains: [example.com]\nallowed_idp_claims:\n  groups: [admins, ops]");
    assert_eq!(t.get("/", Some(&alice())), ALLOW);
    assert_eq!(
        t.get(
            "/",
            Some(&user("x@other.org", serde_json::json!({"groups": ["ops"]})))
        ),
        ALLOW
    );
    assert_eq!(
        t.get(
            "/",
            Some(&user("x@other.org", serde_json::json!({"groups": ["dev"]})))
        ),
        NOT_ALLOWED
    );
}

#[test]
fn legacy_fields_or_with_policy() {
    let t = t(
        "allowed_users: [bob@example.com]\npolicy:\n  allow:\n    or:\n      - email: alice@example.com",
    );
    assert_eq!(t.get("/", Some(&alice())), ALLOW);
    assert_eq!(
        t.get("/", Some(&user("bob@example.com", serde_json::json!({})))),
        ALLOW
    );
    assert_eq!(
        t.get("/", Some(&user("eve@example.com", serde_json::json!({})))),
        NOT_ALLOWED
    );
}

#[test]
fn route_info_reports_public_identity_use_and_headers() {
    let t1 = t("allow_public_unauthenticated_access: true\npass_identity_headers: true");
    let r = t1.engine.find_route("app.example.com", "/").unwrap();
    let info = t1.engine.route(r);
    assert!(info.public && info.pass_identity_headers && !info.uses_identity);
    let t2 = t(
        "allow_public_unauthenticated_access: true\npolicy:\n  deny:\n    or:\n      - email: x@y.z",
    );
    let info = t2
        .engine
        .route(t2.engine.find_route("app.example.com", "/").unwrap());
    assert!(info.public && info.uses_identity);
}

#[test]
fn routes_carry_their_oauth_client_for_the_filter() {
    let yaml = "idp_client_id: default-client\nroutes:\n  - from: https://a.example.com\n    to: http://up\n    allow_any_authenticated_user: true\n  - from: https://b.example.com\n    to: http://up\n    allow_any_authenticated_user: true\n    idp_client_id: client-b\n    idp_client_secret: secret-b\n";
    let loaded = load_str("t.yaml", yaml, &|_| None).unwrap();
    let bundle = compile::compile(&loaded.config).unwrap();
    let engine = Engine::from_bytes(&bundle.to_bytes()).unwrap();
    let a = engine.find_route("a.example.com", "/").unwrap();
    let b = engine.find_route("b.example.com", "/").unwrap();
    assert_eq!(engine.route(a).idp_client_id, "default-client");
    assert_eq!(engine.route(b).idp_client_id, "client-b");
}
