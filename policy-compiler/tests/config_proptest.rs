//! `config::load_str` (and the value parser under it) never panics, whatever the input:
//! arbitrary text, and YAML-shaped text built from config-ish fragments.
#![cfg(feature = "frontend")]

use policy_compiler::config::load_str;
use policy_compiler::value::parse;
use proptest::prelude::*;

/// Keys and values that reach deep into the loader (known options, route fields, PPL).
fn fragment() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "routes:",
        "policy:",
        "- from: https://a.example.com",
        "  to: http://a",
        "to:",
        "  - http://b,3",
        "prefix: /x",
        "regex: '(['",
        "path: /p",
        "allowed_users: [a]",
        "allow_public_unauthenticated_access: true",
        "allow_any_authenticated_user: yes",
        "allowed_idp_claims: {groups: [x, {y: z}]}",
        "cookie_expire: 1h",
        "cookie_expire: 1",
        "shared_secret: c2hvcnQ=",
        "signing_key_file: /nonexistent",
        "certificates: [{cert: a}]",
        "&a [1, *a]",
        "<<: *a",
        "*b",
        "? [x]",
        ": y",
        "---",
        "{",
        "}",
        "[",
        "]",
        "- ",
        "  ",
        "    ",
        "\t",
        "'",
        "\"",
        "#",
        "!!str",
        "~",
        "null",
        "-5s",
        "address: ':x'",
        "idp_provider: azure",
        "set_response_headers: {a: [1]}",
        "id: same",
        "timeout: -1s",
        "jwt_claims_headers: [[x]]",
        "debug_address: :1",
        "tcp+https://x:1",
    ])
    .prop_map(str::to_owned)
}

fn yamlish() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..40).prop_map(|parts| {
        let mut s = String::new();
        for (i, p) in parts.iter().enumerate() {
            s.push_str(p);
            s.push(if i % 3 == 0 { ' ' } else { '\n' });
        }
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn load_str_never_panics_on_arbitrary_text(text in any::<String>()) {
        let _ = load_str("p.yaml", &text, &|_| None);
    }

    #[test]
    fn load_str_never_panics_on_yamlish_text(text in yamlish()) {
        let _ = load_str("p.yaml", &text, &|_| None);
        let _ = parse("p.json", &text);
    }

    #[test]
    fn env_values_never_panic(text in yamlish(), raw in any::<String>()) {
        let env = move |_: &str| Some(raw.clone());
        let _ = load_str("p.yaml", &text, &env);
    }

    #[test]
    fn every_error_has_the_file_name(text in yamlish()) {
        if let Err(diags) = load_str("p.yaml", &text, &|_| None) {
            prop_assert!(!diags.is_empty());
            for d in diags.iter() {
                prop_assert!(d.is_error());
                prop_assert!(d.file == "p.yaml" || d.file.starts_with("env "), "{}", d);
                prop_assert!(!d.message.is_empty());
            }
        }
    }
}
