//! `make test` runs the benchmark harness end to end in its quickest mode (`--smoke`), so
//! it cannot rot: real Envoy, the real filter.wasm, the seeded sidecar child, Redis, wrk.
//! It times nothing: it checks that every scenario produced numbers and that the
//! harness's functional checks (sign-in redirect without cookie, identity headers with
//! it, denial after revocation) passed — the harness aborts on any failed check.
//!
//! Needs `wrk`, `redis-server`, Envoy (`$PORTCULLIS_ENVOY`) and filter.wasm
//! (`$PORTCULLIS_WASM`): `make test` installs and builds them.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Cells of the Markdown table row whose first cell is `id`, in the section `section`.
fn row(text: &str, section: &str, id: &str) -> Option<Vec<String>> {
    let start = text.find(section)?;
    let rest = text.get(start..)?;
    let end = rest.get(3..)?.find("\n## ").map_or(rest.len(), |e| e + 3);
    rest.get(..end)?.lines().find_map(|l| {
        let cells: Vec<String> = l
            .trim()
            .strip_prefix('|')?
            .strip_suffix('|')?
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect();
        (cells.first().map(String::as_str) == Some(id)).then_some(cells)
    })
}

/// The leading number of a cell (`"7949"`, `"0.67× (…)"`, `"12.3 MiB"`).
fn number(cell: &str) -> f64 {
    let n: String = cell
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-')
        .collect();
    n.parse().unwrap_or(f64::NAN)
}

#[test]
fn the_harness_runs_every_scenario_end_to_end() {
    let out = std::env::temp_dir().join(format!("portcullis-bench-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis-bench"))
        .arg("--smoke")
        .arg("--out")
        .arg(&out)
        .spawn()
        .expect("run portcullis-bench");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            panic!("the smoke run took more than 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "portcullis-bench --smoke failed: {status}"
    );

    let md: PathBuf = std::fs::read_dir(&out)
        .expect("output directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "md"))
        .expect("a results file");
    let text = std::fs::read_to_string(&md).unwrap();
    let svg = std::fs::read_to_string(md.with_extension("svg")).expect("the plot");
    assert!(svg.starts_with("<svg") && svg.contains("</svg>"));
    assert!(text.contains("## Goals"));
    assert!(
        text.find("## Goals").unwrap() < text.find("## Scenarios").unwrap(),
        "ratios first"
    );

    // Every scenario: req/s, p99 and CPU per request > 0.
    for id in ["1", "2", "3 HTTP", "3 gRPC", "4", "5"] {
        let r = row(&text, "## Scenarios", id).unwrap_or_else(|| panic!("no row {id}:\n{text}"));
        for (col, what) in [(2, "req/s"), (5, "p99"), (6, "CPU/req")] {
            let v = number(&r[col]);
            assert!(v > 0.0, "scenario {id} {what} = {:?}:\n{text}", r[col]);
        }
    }
    // Scenario 5 is the miss path: about one sidecar lookup per request.
    let miss = row(&text, "## Scenarios", "5").unwrap();
    assert!(
        number(&miss[9]) >= 0.9,
        "cache-miss lookups/req {:?}",
        miss[9]
    );
    // The cache hit made no sidecar lookups while measured.
    let hit = row(&text, "## Scenarios", "2").unwrap();
    assert_eq!(number(&hit[9]), 0.0, "cache-hit lookups/req {:?}", hit[9]);
    // Half load: achieved rate and p99 for the static scenarios.
    for id in ["1", "2", "3 HTTP", "3 gRPC", "4"] {
        let r =
            row(&text, "## At half load", id).unwrap_or_else(|| panic!("no half-load row {id}"));
        assert!(number(&r[2]) > 0.0 && number(&r[4]) > 0.0, "{r:?}");
    }
    // Revocation: every trial denied (the harness aborts otherwise); times measured.
    let revocation_rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("| sign-out |") || l.starts_with("| group removal |"))
        .collect();
    assert_eq!(
        revocation_rows.len(),
        8,
        "filter, ext_authz, filter with Redis (same / other replica); 2 kinds each:\n{text}"
    );
    for kind in ["sign-out", "group removal"] {
        let r = row(&text, "## Revocation", kind).unwrap_or_else(|| panic!("no {kind} row"));
        assert!(number(&r[2]) >= 1.0, "{r:?}");
        assert!(number(&r[5]) > 0.0, "{r:?}");
    }
    // Memory: both databrokers.
    for backend in ["memory", "redis"] {
        let r =
            row(&text, "## Sidecar memory", backend).unwrap_or_else(|| panic!("no {backend} row"));
        assert!(number(&r[1]) > 0.0, "{r:?}");
    }
    // The functional checks passed.
    for check in [
        "passed: 2 filter: 302 (sign-in) without cookie",
        "passed: 2 filter: 200 with cookie, upstream saw x-pomerium-claim-email",
        "passed: 2 filter: 403 once `admins` is removed",
        "passed: 3 HTTP: 302 (sign-in) without cookie, 200 with it",
        "passed: 3 gRPC: 302 (sign-in) without cookie, 200 with it",
        "passed: 4 jwt_authn: 401 without token, 200 with it",
        "passed: 5 filter: a fresh session's first request is one sidecar lookup",
        "passed: 6 revocation (filter): every one of",
        "passed: 6 revocation (ext_authz HTTP): every one of",
        "passed: 6 revocation (filter, Redis databroker): every one of",
        "passed: 6 revocation (filter, Redis, change made on another replica): every one of",
    ] {
        assert!(text.contains(check), "missing check {check:?}:\n{text}");
    }
    let _ = std::fs::remove_dir_all(&out);
}
