//! The `policy-compiler` binary: golden `check` output on broken configs, `build`
//! determinism and atomicity, `eval` / `explain` JSON and exit codes, and the issue-report
//! fixture deciding as the bug report expects.

// Needs the YAML front end and compiler.
#![cfg(feature = "frontend")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_policy-compiler");
const ISSUE: &str = "tests/fixtures/issue-claims-not-refreshed.yaml";

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        // The loader honours environment overrides; keep the tests independent of the host.
        .env_remove("COOKIE_SECRET")
        .env_remove("SHARED_SECRET")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn session(name: &str, json: &str) -> PathBuf {
    let p = tmp(name);
    std::fs::write(&p, json).unwrap();
    p
}

#[test]
fn golden_check_output() {
    let mut names: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ppl"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".yaml"))
            .collect();
    names.sort();
    assert!(names.len() >= 3);
    for name in names {
        let o = run(&["check", "--config", &format!("tests/fixtures/ppl/{name}")]);
        let code = o.status.code().unwrap();
        assert!(code == 0 || code == 1, "{name}: exit {code}");
        assert!(
            o.stdout.is_empty(),
            "{name}: check writes diagnostics to stderr only"
        );
        let snap = format!("exit {code}\n{}", stderr(&o));
        insta::assert_snapshot!(format!("check__{}", name.trim_end_matches(".yaml")), snap);
    }
}

#[test]
fn check_never_panics_on_garbage() {
    let p = tmp("garbage.yaml");
    std::fs::write(&p, "routes:\n  - from: [\n\u{0}\u{1}").unwrap();
    let o = run(&["check", "--config", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("garbage.yaml:"), "{}", stderr(&o));
    let o = run(&["check", "--config", "/nonexistent/config.yaml"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn build_is_deterministic_and_loads() {
    let a = tmp("a.pb");
    let b = tmp("b.pb");
    assert!(
        run(&["build", "--config", ISSUE, "-o", a.to_str().unwrap()])
            .status
            .success()
    );
    assert!(
        run(&["build", "--config", ISSUE, "-o", b.to_str().unwrap()])
            .status
            .success()
    );
    let (ba, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(ba, bb, "same input must give byte-identical bundles");
    let e = policy_compiler::eval::Engine::from_bytes(&ba).unwrap();
    assert_eq!(e.route_count(), 4);
    assert_eq!(e.version().len(), 32);
}

#[test]
fn build_with_errors_writes_nothing() {
    let out = tmp("broken.pb");
    let _ = std::fs::remove_file(&out);
    let o = run(&[
        "build",
        "--config",
        "tests/fixtures/ppl/ppl-errors.yaml",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unknown policy criterion `emial`"));
    assert!(!out.exists());
}

fn eval(config: &str, url: &str, extra: &[&str]) -> String {
    let mut args = vec!["eval", "--config", config, "--url", url];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    stdout(&o).trim_end().to_string()
}

#[test]
fn issue_fixture_decides_as_the_report_expects() {
    let member = session(
        "member.json",
        r#"{"user_id":"ec150b5a","email":"bert.proesmans@e-powerinternational.com","claims":{"groups":["f64d91fa-e526-441c-965e-8edb8b6f0a8b"]}}"#,
    );
    let removed = session(
        "removed.json",
        r#"{"user_id":"ec150b5a","email":"bert.proesmans@e-powerinternational.com","claims":{"groups":["0a1b"]}}"#,
    );
    let outsider = session(
        "outsider.json",
        r#"{"user_id":"x","email":"eve@example.com","claims":{}}"#,
    );
    let admin = "https://vaultwarden.pomerium.localhost/admin";
    let other = "https://vaultwarden.pomerium.localhost/api/sync";
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    assert_eq!(
        eval(ISSUE, admin, &["--session", &s(&member)]),
        r#"{"decision":"allow","route":"2","reasons":["claim-ok","domain-ok"]}"#
    );
    assert_eq!(
        eval(ISSUE, admin, &["--session", &s(&removed)]),
        r#"{"decision":"deny","route":"2","reasons":["claim-unauthorized"],"deny_reason":"not-allowed"}"#
    );
    assert_eq!(
        eval(ISSUE, other, &["--session", &s(&removed)]),
        r#"{"decision":"allow","route":"3","reasons":["domain-ok"]}"#
    );
    assert!(
        eval(ISSUE, other, &["--session", &s(&outsider)])
            .starts_with(r#"{"decision":"deny","route":"3""#)
    );
    assert_eq!(
        eval(ISSUE, admin, &[]),
        r#"{"decision":"login","route":"2","reasons":["user-unauthenticated"]}"#
    );
    assert!(
        eval(
            ISSUE,
            "https://verify.pomerium.localhost/",
            &["--session", &s(&outsider)]
        )
        .starts_with(r#"{"decision":"allow","route":"0""#)
    );
}

#[test]
fn eval_on_yaml_equals_eval_on_bundle() {
    let pb = tmp("issue.pb");
    assert!(
        run(&["build", "--config", ISSUE, "-o", pb.to_str().unwrap()])
            .status
            .success()
    );
    let member = session(
        "member2.json",
        r#"{"user_id":"u","email":"a@e-powerinternational.com","claims":{"groups":"f64d91fa-e526-441c-965e-8edb8b6f0a8b"}}"#,
    );
    for url in [
        "https://vaultwarden.pomerium.localhost/admin",
        "https://vaultwarden.pomerium.localhost/x",
        "https://httpbin.pomerium.localhost/get",
        "https://nowhere.example/",
    ] {
        for extra in [
            vec![],
            vec!["--session", member.to_str().unwrap()],
            vec!["--explain"],
        ] {
            assert_eq!(
                eval(ISSUE, url, &extra),
                eval(pb.to_str().unwrap(), url, &extra),
                "{url} {extra:?}"
            );
        }
    }
}

#[test]
fn no_route_json() {
    assert_eq!(
        eval(ISSUE, "https://unknown.example/", &[]),
        r#"{"decision":"deny","route":null,"reasons":["no-route"],"deny_reason":"no-route"}"#
    );
}

#[test]
fn explain_names_the_deciding_rule_and_criterion() {
    let removed = session(
        "removed2.json",
        r#"{"user_id":"u","email":"a@e-powerinternational.com","claims":{}}"#,
    );
    let o = run(&[
        "explain",
        "--config",
        ISSUE,
        "--url",
        "https://vaultwarden.pomerium.localhost/admin",
        "--session",
        removed.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let decided = v["explain"]["decided_by"].to_string();
    assert!(
        decided.contains("issue-claims-not-refreshed.yaml:33:11"),
        "{decided}"
    );
    let trace = v["explain"]["trace"].as_array().unwrap();
    let claim = trace
        .iter()
        .find(|t| t["criterion"] == "claim/groups")
        .unwrap();
    assert_eq!(claim["pass"], false);
    assert_eq!(claim["reasons"], serde_json::json!(["claim-unauthorized"]));
}

#[test]
fn cors_preflight_headers_reach_the_policy() {
    let p = tmp("cors.yaml");
    std::fs::write(&p, "routes:\n  - from: https://api.example.com\n    to: http://api\n    cors_allow_preflight: true\n").unwrap();
    let c = p.to_str().unwrap();
    let url = "https://api.example.com/v1";
    assert!(eval(c, url, &[]).starts_with(r#"{"decision":"deny""#));
    assert!(
        eval(
            c,
            url,
            &[
                "--method",
                "OPTIONS",
                "--header",
                "Origin: https://x",
                "--header",
                "Access-Control-Request-Method: PUT"
            ]
        )
        .starts_with(r#"{"decision":"allow""#)
    );
}

#[test]
fn time_flag_drives_time_criteria() {
    let p = tmp("hours.yaml");
    std::fs::write(
        &p,
        "routes:\n  - from: https://app.example.com\n    to: http://app\n    policy:\n      allow:\n        and:\n          - time_of_day:\n              after: '09:00'\n              before: '17:00'\n              timezone: America/New_York\n",
    )
    .unwrap();
    let c = p.to_str().unwrap();
    let url = "https://app.example.com/";
    assert!(
        eval(c, url, &["--time", "2024-07-01T14:00:00Z"]).starts_with(r#"{"decision":"allow""#)
    );
    assert!(eval(c, url, &["--time", "2024-07-01T12:30:00Z"]).starts_with(r#"{"decision":"deny""#));
}

#[test]
fn bad_input_exits_2_with_a_message() {
    let cases: Vec<Vec<&str>> = vec![
        vec!["eval", "--config", ISSUE, "--url", "not a url"],
        vec![
            "eval",
            "--config",
            ISSUE,
            "--url",
            "https://a/",
            "--time",
            "yesterday",
        ],
        vec![
            "eval",
            "--config",
            ISSUE,
            "--url",
            "https://a/",
            "--session",
            "/nonexistent.json",
        ],
        vec![
            "eval",
            "--config",
            ISSUE,
            "--url",
            "https://a/",
            "--header",
            "no-colon",
        ],
        vec![
            "eval",
            "--config",
            "tests/fixtures/ppl/ppl-errors.yaml",
            "--url",
            "https://a/",
        ],
        vec!["eval", "--config", "/nonexistent.pb", "--url", "https://a/"],
    ];
    for args in cases {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&o).starts_with("error: "),
            "{args:?}: {}",
            stderr(&o)
        );
        assert!(o.stdout.is_empty());
    }
    let bad_session = session("bad.json", r#"{"user_id": 5}"#);
    let o = run(&[
        "eval",
        "--config",
        ISSUE,
        "--url",
        "https://a/",
        "--session",
        bad_session.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let garbage = tmp("garbage.pb");
    std::fs::write(&garbage, b"\x08\x63garbage").unwrap();
    let o = run(&[
        "eval",
        "--config",
        garbage.to_str().unwrap(),
        "--url",
        "https://a/",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a valid bundle"), "{}", stderr(&o));
}
