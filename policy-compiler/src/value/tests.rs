//! Tests of the value parser.
use super::*;

fn p(text: &str) -> Spanned<Value> {
    parse("t.yaml", text).unwrap()
}

#[test]
fn scalars_resolve_by_core_schema_and_quotes_stay_strings() {
    let v = p(
        "a: true\nb: 'true'\nc: 1\nd: \"1\"\ne: 1.5\nf: ~\ng:\nh: 0x1F\ni: yes\nj: !!str 2\nk: 12abc\n",
    );
    let get = |k: &str| v.value.get(k).unwrap().value.clone();
    assert_eq!(get("a"), Value::Bool(true));
    assert_eq!(get("b"), Value::String("true".into()));
    assert_eq!(get("c"), Value::Int(1));
    assert_eq!(get("d"), Value::String("1".into()));
    assert_eq!(get("e"), Value::Float(1.5));
    assert_eq!(get("f"), Value::Null);
    assert_eq!(get("g"), Value::Null);
    assert_eq!(get("h"), Value::Int(31));
    // YAML 1.2 (go-yaml v3): `yes` is a string.
    assert_eq!(get("i"), Value::String("yes".into()));
    assert_eq!(get("j"), Value::String("2".into()));
    assert_eq!(get("k"), Value::String("12abc".into()));
}

#[test]
fn integers_resolve_like_go_yaml_v3() {
    let cases: &[(&str, Value)] = &[
        ("0123", Value::Int(83)), // YAML 1.1 octal, still decoded by go-yaml v3
        ("-0123", Value::Int(-83)),
        ("0", Value::Int(0)),
        ("00", Value::Int(0)),
        ("1_000", Value::Int(1000)),
        ("1_000.5", Value::Float(1000.5)),
        ("0b101", Value::Int(5)),
        ("0B101", Value::Int(5)),
        ("-0b101", Value::Int(-5)),
        ("0X1F", Value::Int(31)),
        ("+0x1f", Value::Int(31)),
        ("0o17", Value::Int(15)),
        ("0O17", Value::Int(15)),
        ("0x_1F", Value::Int(31)),
        ("08", Value::Float(8.0)), // not octal: go-yaml falls back to its float pattern
        ("09.5", Value::Float(9.5)),
        ("0x", Value::String("0x".into())),
        ("0b", Value::String("0b".into())),
        ("0b12", Value::String("0b12".into())),
        ("_1", Value::String("_1".into())),
        ("1_a", Value::String("1_a".into())),
        ("-x", Value::String("-x".into())),
        ("9223372036854775807", Value::Int(i64::MAX)),
        ("-9223372036854775808", Value::Int(i64::MIN)),
    ];
    for (text, want) in cases {
        let v = p(&format!("k: {text}\n"));
        assert_eq!(&v.value.get("k").unwrap().value, want, "{text}");
    }
}

#[test]
fn positions_are_one_based_line_and_column() {
    let v = p("top: 1\nroutes:\n  - from: https://a\n    to: http://b\n");
    let routes = v.value.get("routes").unwrap();
    let Value::Seq(items) = &routes.value else {
        panic!()
    };
    let Value::Map(entries) = &items[0].value else {
        panic!()
    };
    assert_eq!(entries[0].0.span, Span::new(3, 5)); // `from`
    assert_eq!(entries[0].1.span, Span::new(3, 11)); // its value
    assert_eq!(entries[1].0.span, Span::new(4, 5)); // `to`
    // map order is kept
    let Value::Map(top) = &v.value else { panic!() };
    assert_eq!(top[0].0.value, "top");
    assert_eq!(top[1].0.value, "routes");
}

#[test]
fn json_parses_with_positions() {
    let v = p("{\n  \"a\": [1, \"x\", true],\n  \"b\": {\"c\": null}\n}");
    let a = v.value.get("a").unwrap();
    assert_eq!(a.span.line, 2);
    assert_eq!(
        a.value,
        Value::Seq(vec![
            Spanned::new(Span::new(2, 9), Value::Int(1)),
            Spanned::new(Span::new(2, 12), Value::String("x".into())),
            Spanned::new(Span::new(2, 17), Value::Bool(true)),
        ])
    );
    assert_eq!(
        v.value.get("b").unwrap().value.get("c").unwrap().value,
        Value::Null
    );
}

#[test]
fn duplicate_keys_are_errors_with_both_positions() {
    let e = parse("t.yaml", "a: 1\nb: 2\na: 3\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "t.yaml:3:1: duplicate key `a` (first defined at line 1)"
    );
}

#[test]
fn syntax_errors_have_positions() {
    let e = parse("t.yaml", "a: [1, 2\nb: 3\n").unwrap_err();
    assert_eq!(e.len(), 1);
    let d = &e.0[0];
    assert!(d.line >= 1, "{d}");
    assert!(d.message.starts_with("invalid yaml: "), "{d}");
}

#[test]
fn anchors_aliases_and_merge_keys() {
    let v = p("base: &b\n  x: 1\n  y: 2\nderived:\n  <<: *b\n  y: 3\nlist: [*b]\n");
    let d = v.value.get("derived").unwrap();
    assert_eq!(d.value.get("x").unwrap().value, Value::Int(1));
    assert_eq!(d.value.get("y").unwrap().value, Value::Int(3));
    assert_eq!(
        v.value.get("list").unwrap().value.as_seq().unwrap().len(),
        1
    );
}

#[test]
fn limits_refuse_deep_nesting_and_alias_bombs() {
    let deep = "[".repeat(MAX_DEPTH + 5);
    assert!(
        parse("t", &deep)
            .unwrap_err()
            .to_string()
            .contains("nested deeper")
    );
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    let mut prev = 'a';
    for c in 'b'..='j' {
        bomb.push_str(&format!("{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        prev = c;
    }
    assert!(
        parse("t", &bomb)
            .unwrap_err()
            .to_string()
            .contains("more than")
    );
}

#[test]
fn complex_keys_and_multiple_documents_are_refused() {
    assert!(parse("t", "? [a]\n: 1\n").is_err());
    assert!(
        parse("t", "a: 1\n---\nb: 2\n")
            .unwrap_err()
            .to_string()
            .contains("multiple")
    );
}

#[test]
fn empty_document_is_null() {
    assert_eq!(p("").value, Value::Null);
    assert_eq!(p("# just a comment\n").value, Value::Null);
}

#[test]
fn block_map_starts_at_its_first_key() {
    let v = p("routes:\n  - from: a\n    to: b\n");
    let item = &v.value.get("routes").unwrap().value.as_seq().unwrap()[0];
    assert_eq!(item.span, Span::new(2, 5));
    assert_eq!(v.span, Span::new(1, 1));
}
