//! PPL parser tests: structure, every error with its position, all errors at once.

use super::*;
use crate::value;

fn parse_yaml(text: &str) -> (Vec<Term>, Vec<String>) {
    let v = value::parse("p.yaml", text).unwrap();
    let (terms, diags) = parse("p.yaml", &v);
    (terms, diags.iter().map(|d| d.to_string()).collect())
}

fn errors(text: &str) -> Vec<String> {
    parse_yaml(text).1
}

#[test]
fn rule_and_rule_list_give_terms_in_pomerium_order() {
    let (terms, d) = parse_yaml(
        "deny:\n  or:\n    - email: a\nallow:\n  nor:\n    - email: b\n  and:\n    - email: c\n",
    );
    assert!(d.is_empty(), "{d:?}");
    let shape: Vec<(Action, OpKind)> = terms.iter().map(|t| (t.action, t.op)).collect();
    assert_eq!(
        shape,
        [
            (Action::Allow, OpKind::And),
            (Action::Allow, OpKind::Nor),
            (Action::Deny, OpKind::Or)
        ]
    );
    assert_eq!(terms[0].origin, "p.yaml:7:3");
    let (terms, d) = parse_yaml("- allow:\n    or:\n      - accept: true\n- deny:\n    and: []\n");
    assert!(d.is_empty());
    // Empty operators are skipped, as Pomerium does.
    assert_eq!(terms.len(), 1);
}

#[test]
fn bare_values_mean_is_and_has() {
    let (terms, _) = parse_yaml("allow:\n  and:\n    - email: a@b\n    - claim/groups: x\n");
    assert_eq!(
        terms[0].criteria[0].kind,
        CriterionKind::Email(vec![StrCond::Is(Const::Str("a@b".into()))])
    );
    assert_eq!(
        terms[0].criteria[1].kind,
        CriterionKind::Claim("groups".into(), vec![ListCond::Has(Const::Str("x".into()))])
    );
}

#[test]
fn claim_names_split_at_the_first_slash_only() {
    let (terms, _) = parse_yaml("allow:\n  and:\n    - claim/a/b.c: 1\n");
    assert_eq!(
        terms[0].criteria[0].kind,
        CriterionKind::Claim("a/b.c".into(), vec![ListCond::Has(Const::Num(1.0))])
    );
}

#[test]
fn unknown_criterion_has_its_position() {
    assert_eq!(
        errors("allow:\n  and:\n    - emial: a@b\n"),
        ["p.yaml:3:7: unknown policy criterion `emial`"]
    );
}

#[test]
fn enterprise_record_criterion_is_unknown() {
    assert_eq!(
        errors("allow:\n  or:\n    - record: x\n"),
        ["p.yaml:3:7: unknown policy criterion `record`"]
    );
}

#[test]
fn bad_matchers_are_errors() {
    assert_eq!(
        errors("allow:\n  and:\n    - email:\n        equals: a\n"),
        [
            "p.yaml:4:9: unknown string matcher `equals` in `email` (expected `is`, `not`, `contains`, `starts_with`, `ends_with`, `in`, `not_in`)"
        ]
    );
    assert_eq!(
        errors("allow:\n  and:\n    - claim/groups:\n        contains: a\n"),
        [
            "p.yaml:4:9: unknown list matcher `contains` in `claim/groups` (expected `has`, `is`, `exclude`)"
        ]
    );
}

#[test]
fn in_without_a_list_is_an_error() {
    assert_eq!(
        errors("allow:\n  and:\n    - email:\n        in: a@b\n"),
        ["p.yaml:4:13: `email` matcher `in` needs a list of values, found a string"]
    );
}

#[test]
fn wrong_types_are_errors() {
    assert_eq!(
        errors("allow:\n  and:\n    - email:\n        is: [a, b]\n"),
        ["p.yaml:4:13: `email` matcher `is` must be a string, number or boolean, found a list"]
    );
    assert_eq!(
        errors("allow:\n  and:\n    - email:\n        starts_with: 5\n"),
        ["p.yaml:4:22: `email` matcher `starts_with` must be a string, found an integer"]
    );
    assert_eq!(
        errors("allow: [email: a]\n"),
        [
            "p.yaml:1:8: policy action must be a map of operators (`and`, `or`, `not`, `nor`), found a list"
        ]
    );
    assert_eq!(
        errors("allow:\n  and:\n    email: a\n"),
        ["p.yaml:3:5: `and` must be a list of criteria, found a map"]
    );
    assert_eq!(
        errors("42\n"),
        ["p.yaml:1:1: policy must be a rule or a list of rules, found an integer"]
    );
}

#[test]
fn unknown_action_and_operator() {
    assert_eq!(
        errors("permit:\n  and:\n    - accept: true\nallow:\n  xor:\n    - accept: true\n"),
        [
            "p.yaml:1:1: unknown policy action `permit` (expected `allow` or `deny`)",
            "p.yaml:5:3: unknown policy operator `xor` (expected `and`, `or`, `not` or `nor`)"
        ]
    );
}

#[test]
fn criterion_with_two_keys() {
    assert_eq!(
        errors("allow:\n  and:\n    - email: a\n      domain: b\n"),
        ["p.yaml:3:7: a criterion must have exactly one key, found 2"]
    );
}

#[test]
fn every_error_at_once() {
    let e = errors(
        "- allow:\n    and:\n      - emial: a\n      - email:\n          in: x\n- deny:\n    or:\n      - claim: x\n      - time_of_day:\n          after: '25:00'\n          timezone: Mars/Olympus\n",
    );
    assert_eq!(
        e,
        [
            "p.yaml:3:9: unknown policy criterion `emial`",
            "p.yaml:5:15: `email` matcher `in` needs a list of values, found a string",
            "p.yaml:8:9: warning: `claim` without a claim name never matches (pomerium accepts it); write `claim/<name>`",
            "p.yaml:11:21: unknown time zone `Mars/Olympus` (use an IANA name like `Europe/Paris`)",
            "p.yaml:10:18: `time_of_day` `after` must be `HH:MM` or `HH:MM:SS`, found `25:00`",
        ]
    );
}

#[test]
fn lists_for_one_value_and_nameless_claims_warn_and_never_match() {
    let (terms, d) = parse_yaml(
        "allow:\n  or:\n    - email: [a, b]\n    - claim/groups: [a, b]\n    - claim/: x\n",
    );
    assert_eq!(
        d,
        [
            "p.yaml:3:14: warning: `email` given a list: pomerium accepts it but it never matches (for any of several values use `in: [...]`)",
            "p.yaml:4:21: warning: `claim/groups` given a list: pomerium accepts it but it never matches (for any of several values use one criterion per value under `or`)",
            "p.yaml:5:7: warning: `claim` without a claim name never matches (pomerium accepts it); write `claim/<name>`",
        ]
    );
    let kinds: Vec<&CriterionKind> = terms[0].criteria.iter().map(|c| &c.kind).collect();
    assert_eq!(
        kinds,
        [
            &CriterionKind::Email(vec![StrCond::In(vec![])]),
            &CriterionKind::Claim("groups".into(), never_list_conds()),
            &CriterionKind::Claim(String::new(), never_list_conds()),
        ]
    );
}

#[test]
fn groups_and_sub_paths_warn() {
    let (terms, d) = parse_yaml("allow:\n  or:\n    - groups: admins\n    - email/x: a\n");
    assert_eq!(terms[0].criteria.len(), 2);
    assert_eq!(d.len(), 2);
    assert!(d[0].starts_with("p.yaml:3:7: warning: `groups` uses directory data"));
    assert_eq!(
        d[1],
        "p.yaml:4:7: warning: `email` takes no `/` sub-path; `email/x` is ignored"
    );
}

#[test]
fn certificate_matchers_are_validated() {
    assert_eq!(
        errors(
            "allow:\n  or:\n    - client_certificate:\n        fingerprint: abc\n        spki_hash: notbase64\n        san_ip: x\n"
        ),
        [
            "p.yaml:4:22: unsupported certificate fingerprint format `abc`",
            "p.yaml:5:20: certificate SPKI hash must be a base64-encoded SHA-256 hash (was `notbase64`)",
            "p.yaml:6:9: unsupported certificate matcher condition `san_ip`",
        ]
    );
}

#[test]
fn day_and_time_forms() {
    let (t, d) = parse_yaml(
        "allow:\n  or:\n    - day_of_week: fri-mon\n    - day_of_week: [tue, Wednesday]\n    - time_of_day:\n        before: '08:30:15'\n",
    );
    assert!(d.is_empty(), "{d:?}");
    let kinds: Vec<&CriterionKind> = t[0].criteria.iter().map(|c| &c.kind).collect();
    assert_eq!(
        kinds[0],
        &CriterionKind::DayOfWeek {
            mask: 0b110_0011,
            zone: "UTC".into()
        }
    );
    assert_eq!(
        kinds[1],
        &CriterionKind::DayOfWeek {
            mask: 0b000_1100,
            zone: "UTC".into()
        }
    );
    assert_eq!(
        kinds[2],
        &CriterionKind::TimeOfDay {
            after: None,
            before: Some(8 * 3600 + 30 * 60 + 15),
            zone: "UTC".into()
        }
    );
    assert_eq!(
        errors(
            "allow:\n  or:\n    - day_of_week: someday\n    - date:\n        after: yesterday\n"
        ),
        [
            "p.yaml:3:20: invalid day of week `someday` (use `mon`…`sun`, `monday`, ranges like `mon-fri`)",
            "p.yaml:5:16: `date` `after` must be an RFC 3339 time (`2025-01-31T09:00:00Z`) or a date (`2025-01-31`, midnight UTC), found `yesterday`",
        ]
    );
}

#[test]
fn nesting_is_bounded() {
    let mut s = String::from("allow:\n  and:\n");
    let mut indent = 4;
    for _ in 0..30 {
        s.push_str(&" ".repeat(indent));
        s.push_str("- not:\n");
        indent += 4;
    }
    s.push_str(&" ".repeat(indent));
    s.push_str("- accept: true\n");
    let e = errors(&s);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].ends_with("policy operators nested deeper than 24"));
}
