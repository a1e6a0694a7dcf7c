//! Differential and round-trip properties on generated policies, requests and subjects:
//! - the compiled engine (YAML → config → bundle bytes → `Engine`) decides exactly as the
//!   oracle interpreter on the checked PPL model of the same YAML;
//! - `explain` agrees with `evaluate`;
//! - the bundle round-trips (`decode(encode(b)) == b`) and compiling twice gives the same bytes.

// Needs the YAML front end and compiler.
#![cfg(feature = "frontend")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use policy_compiler::bundle::Bundle;
use policy_compiler::compile;
use policy_compiler::config::load_str;
use policy_compiler::eval::{CertInfo, Claims, ClientCertificate, Engine, Request, Subject};
use policy_compiler::{oracle, ppl};
use proptest::prelude::*;
use serde_json::{Value, json};

fn pick<T: Clone + std::fmt::Debug + 'static>(xs: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(xs)
}

const EMAILS: &[&str] = &[
    "alice@example.com",
    "Alice@Example.com",
    "bob@x.org",
    "",
    "noat",
    "a@b@c",
];
const DOMAINS: &[&str] = &["example.com", "x.org", "b", "Example.com"];
const USERS: &[&str] = &["u1", "u2", ""];
const GROUPS: &[&str] = &["admins", "ops", "1"];
const PATHS: &[&str] = &[
    "/",
    "/admin",
    "/admin%20x?q=1",
    "/.pomerium/jwt",
    "/.pomerium/x",
    "/a/../admin",
    "//api/v1",
    "/admin/%zz",
    "/x?q=/.pomerium/",
    "/a/./.pomerium/jwt?x",
];
const ZONES: &[&str] = &["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"];
const CLOCKS: &[&str] = &["00:00", "06:30", "09:00", "12:00", "17:00", "23:59:59"];
const FP: &str = "3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f";

fn string_matcher(pool: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop_oneof![
        pick(pool).prop_map(|s| json!(s)),
        (
            pick(&["is", "not", "contains", "starts_with", "ends_with"]),
            pick(pool)
        )
            .prop_map(|(m, s)| json!({ m: s })),
        (
            pick(&["in", "not_in"]),
            proptest::collection::vec(pick(pool), 0..3)
        )
            .prop_map(|(m, v)| json!({ m: v })),
        (pick(pool), pick(pool)).prop_map(|(a, b)| json!({"starts_with": a, "not": b})),
        Just(json!({"is": 5})),
    ]
}

fn list_matcher() -> impl Strategy<Value = Value> {
    prop_oneof![
        pick(GROUPS).prop_map(|s| json!(s)),
        (pick(&["has", "is", "exclude"]), pick(GROUPS)).prop_map(|(m, s)| json!({ m: s })),
        Just(json!({"has": 1})),
        Just(json!({"is": true})),
        (pick(GROUPS), pick(GROUPS)).prop_map(|(a, b)| json!({"has": a, "exclude": b})),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"accept": true})),
        Just(json!({"reject": true})),
        Just(json!({"authenticated_user": true})),
        string_matcher(EMAILS).prop_map(|m| json!({"email": m})),
        string_matcher(DOMAINS).prop_map(|m| json!({"domain": m})),
        string_matcher(USERS).prop_map(|m| json!({"user": m})),
        list_matcher().prop_map(|m| json!({"claim/groups": m})),
        list_matcher().prop_map(|m| json!({"claim/org.team": m})),
        list_matcher().prop_map(|m| json!({"groups": m})),
        string_matcher(&["GET", "POST", "get"]).prop_map(|m| json!({"http_method": m})),
        string_matcher(&["/admin", "/admin x", "/", "/api/v1", "/.pomerium/jwt"])
            .prop_map(|m| json!({"http_path": m})),
        Just(json!({"cors_preflight": true})),
        Just(json!({"invalid_client_certificate": true})),
        Just(json!({"pomerium_routes": true})),
        Just(json!({"client_certificate": {"fingerprint": FP}})),
        (pick(CLOCKS), pick(CLOCKS), pick(ZONES))
            .prop_map(|(a, b, z)| json!({"time_of_day": {"after": a, "before": b, "timezone": z}})),
        (pick(&["mon-fri", "sat,sun", "wed", "fri-mon"]), pick(ZONES))
            .prop_map(|(d, z)| json!({"day_of_week": {"is": d, "timezone": z}})),
        pick(&[
            "2024-03-31T01:00:00Z",
            "2024-06-01",
            "2030-01-01T00:00:00+02:00"
        ])
        .prop_map(|d| json!({"date": {"after": d}})),
    ]
}

fn criterion() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 3, |inner| {
        (
            pick(&["and", "or", "not", "nor"]),
            proptest::collection::vec(inner, 1..4),
        )
            .prop_map(|(op, cs)| json!({ op: cs }))
    })
}

fn rule() -> impl Strategy<Value = Value> {
    (
        pick(&["allow", "deny"]),
        proptest::collection::btree_map(
            pick(&["and", "or", "not", "nor"]),
            proptest::collection::vec(criterion(), 0..4),
            1..3,
        ),
    )
        .prop_map(|(action, ops)| json!({ action: ops }))
}

fn policy() -> impl Strategy<Value = Value> {
    prop_oneof![
        rule(),
        proptest::collection::vec(rule(), 0..4).prop_map(Value::Array)
    ]
}

/// Legacy route options in combinations Pomerium accepts.
fn legacy() -> impl Strategy<Value = &'static str> {
    pick(&[
        "",
        "allow_public_unauthenticated_access: true\n",
        "allow_any_authenticated_user: true\n",
        "cors_allow_preflight: true\n",
        "allowed_users: [alice@example.com, u2]\n",
        "allowed_domains: [x.org]\n",
        "allowed_idp_claims:\n  groups: [admins]\n",
        "allow_public_unauthenticated_access: true\nallowed_idp_claims:\n  groups: [ops]\n",
    ])
}

#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    path: &'static str,
    cors: bool,
    cert: u8,
    now: i64,
}

fn req() -> impl Strategy<Value = Req> {
    (
        pick(&["GET", "POST", "OPTIONS", "get"]),
        pick(PATHS),
        any::<bool>(),
        0u8..3,
        prop_oneof![
            // Around the 2024 Paris/New York DST changes, and anywhere in 2000–2100.
            (1_711_846_800i64 - 7_200..1_711_846_800 + 7_200),
            (1_710_054_000i64 - 7_200..1_710_054_000 + 7_200),
            (946_684_800i64..4_102_444_800),
        ],
    )
        .prop_map(|(method, path, cors, cert, now)| Req {
            method,
            path,
            cors,
            cert,
            now,
        })
}

fn subject() -> impl Strategy<Value = Option<Subject>> {
    let claims = prop_oneof![
        Just(json!({})),
        Just(json!({"groups": []})),
        Just(json!({"groups": "admins"})),
        Just(json!({"groups": ["admins", "ops"]})),
        Just(json!({"groups": ["ops", null]})),
        Just(json!({"groups": [1, true]})),
        Just(json!({"org": {"team": "admins"}})),
        Just(json!({"org.team": ["ops"], "groups": ["1"]})),
    ];
    proptest::option::weighted(
        0.75,
        (pick(USERS), pick(EMAILS), claims).prop_map(|(u, e, c)| {
            let Value::Object(m) = c else { unreachable!() };
            Subject::new(u.to_string(), e.to_string(), Claims::from_json(&m))
        }),
    )
}

fn config_yaml(legacy: &str, policy: &Value) -> String {
    let mut y = String::from("routes:\n  - from: https://app.example.com\n    to: http://up\n");
    for line in legacy.lines() {
        y.push_str("    ");
        y.push_str(line);
        y.push('\n');
    }
    if !policy.is_null() {
        y.push_str(&format!("    policy: {policy}\n"));
    }
    y
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn engine_agrees_with_oracle(
        legacy in legacy(),
        policy in prop_oneof![1 => Just(Value::Null), 6 => policy()],
        reqs in proptest::collection::vec(req(), 1..6),
        subjects in proptest::collection::vec(subject(), 1..4),
    ) {
        let yaml = config_yaml(legacy, &policy);
        let loaded = load_str("gen.yaml", &yaml, &|_| None).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let bundle = compile::compile(&loaded.config).unwrap_or_else(|e| panic!("{e}\n{yaml}"));

        // Round trip and determinism.
        let bytes = bundle.to_bytes();
        prop_assert_eq!(&Bundle::decode_bytes(&bytes).unwrap(), &bundle);
        prop_assert_eq!(&compile::compile(&loaded.config).unwrap().to_bytes(), &bytes);

        let engine = Engine::from_bytes(&bytes).unwrap();
        let (model, _) = ppl::route_policy(&loaded.config.routes[0]);
        for r in &reqs {
            let cert = match r.cert {
                0 => ClientCertificate::None,
                1 => ClientCertificate::Valid(CertInfo { fingerprint_sha256: FP, ..Default::default() }),
                _ => ClientCertificate::Invalid,
            };
            let request = Request {
                method: r.method,
                path: r.path,
                origin: r.cors.then_some("https://o.example"),
                access_control_request_method: r.cors.then_some("PUT"),
                client_certificate: cert,
                now_unix: r.now,
            };
            let route = engine.find_route("app.example.com", r.path).unwrap();
            for s in &subjects {
                let got = engine.evaluate(route, &request, s.as_ref());
                let want = oracle::evaluate(&model, &request, s.as_ref());
                prop_assert_eq!(got, want, "yaml:\n{}\nrequest {:?}\nsubject {:?}", yaml, r, s);
                prop_assert_eq!(engine.explain(route, &request, s.as_ref()).decision, got);
            }
        }
    }

    #[test]
    fn hostile_bundle_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Engine::from_bytes(&bytes);
    }

    #[test]
    fn mutated_real_bundles_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let yaml = "routes:\n  - from: https://a.example.com\n    to: http://up\n    regex: '/x/[0-9]+'\n    policy:\n      allow:\n        and:\n          - email: {in: [a, b]}\n          - not:\n              - time_of_day: {after: '09:00', timezone: Europe/Paris}\n";
        let loaded = load_str("m.yaml", yaml, &|_| None).unwrap();
        let mut bytes = compile::compile(&loaded.config).unwrap().to_bytes();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        if let Ok(e) = Engine::from_bytes(&bytes) {
            // Whatever survived validation must evaluate without panicking.
            for r in e.routes().map(|r| r.route).collect::<Vec<_>>() {
                let _ = e.evaluate(r, &Request::new("GET", "/x/1", 1_700_000_000), None);
                let _ = e.explain(r, &Request::new("GET", "/x/1", 1_700_000_000), None);
            }
            let _ = e.find_route("a.example.com", "/x/1");
        }
    }
}
