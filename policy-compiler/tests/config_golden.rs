//! Golden tests of the config loader's diagnostics: every `tests/fixtures/golden/*.yaml`
//! is loaded (no environment) and its errors — or, when it loads, its warnings — are
//! compared with the insta snapshot `tests/snapshots/config_golden__<name>.snap`.
//! Review changes with `cargo insta review` (or `INSTA_UPDATE=always` then `git diff`).
#![cfg(feature = "frontend")]
// Test helpers outside #[test] fns: panicking on a broken fixture is the point.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use policy_compiler::config::load_str_in;
use std::path::Path;

fn render(name: &str) -> String {
    let dir = Path::new("tests/fixtures/golden");
    let text = std::fs::read_to_string(dir.join(name)).unwrap();
    match load_str_in(&format!("golden/{name}"), &text, &|_| None, Some(dir)) {
        Err(errors) => {
            assert!(errors.has_errors(), "Err must carry at least one error");
            assert!(
                errors.iter().all(|d| d.is_error()),
                "Err carries only errors"
            );
            format!("errors:\n{errors}\n")
        }
        Ok(loaded) => {
            assert!(!loaded.warnings.has_errors());
            format!(
                "loaded {} route(s)\nwarnings:\n{}\n",
                loaded.config.routes.len(),
                loaded.warnings
            )
        }
    }
}

#[test]
fn golden_diagnostics() {
    let mut names: Vec<String> = std::fs::read_dir("tests/fixtures/golden")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "fixtures missing: {names:?}");
    for name in names {
        let out = render(&name);
        insta::assert_snapshot!(name.trim_end_matches(".yaml").to_owned(), out);
    }
}
