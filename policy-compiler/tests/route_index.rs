//! The engine's indexed route lookup (`Engine::find_route`, `Engine::route_by_id`: hash maps
//! built at load) against a straightforward linear reference of Pomerium's routing, on
//! generated route sets compiled by the real compiler:
//! - a route whose `from` names exactly the request's host (or the host without the scheme's
//!   default port) shadows every wildcard route, even when none of its paths match;
//! - otherwise wildcard routes are tried;
//! - in both cases in definition order, first match wins;
//! - `route_by_id` gives the route with that id, and nothing for an unknown one.

// Needs the YAML front end and compiler.
#![cfg(feature = "frontend")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use policy_compiler::compile;
use policy_compiler::config::load_str;
use policy_compiler::eval::{self, Engine, RouteRef, path, wildcard_host_matches};
use proptest::prelude::*;

const HOSTS: &[&str] = &[
    "a.example.com",
    "b.example.com",
    "x.b.example.com",
    "127.0.0.3",
    "*.example.com",
    "*.b.example.com",
];

#[derive(Clone, Debug)]
enum PathRule {
    Any,
    Prefix(&'static str),
    Path(&'static str),
    Regex(&'static str),
}

#[derive(Clone, Debug)]
struct GenRoute {
    https: bool,
    host: &'static str,
    port: Option<&'static str>,
    rule: PathRule,
}

fn route() -> impl Strategy<Value = GenRoute> {
    let rule = prop_oneof![
        Just(PathRule::Any),
        prop::sample::select(&["/", "/api", "/api/"][..]).prop_map(PathRule::Prefix),
        prop::sample::select(&["/healthz", "/api"][..]).prop_map(PathRule::Path),
        prop::sample::select(&["^/v[0-9]+/.*$", "/a.*"][..]).prop_map(PathRule::Regex),
    ];
    (
        any::<bool>(),
        prop::sample::select(HOSTS),
        prop::option::of(prop::sample::select(&["8443", "8080"][..])),
        rule,
    )
        .prop_map(|(https, host, port, rule)| GenRoute {
            https,
            host,
            port,
            rule,
        })
}

fn yaml(routes: &[GenRoute]) -> String {
    let mut y = String::from(
        "authenticate_service_url: https://authenticate.example.com\n\
         shared_secret: 9Tq3Yq0tC0f0x5yJ3m8k1cVv2cR3H0pQm8a4ZrJ6W1E=\n\
         cookie_secret: 7m0Q0H6mY7sY1Yy8d0b3x9S6s8T0e1j3L2f4A6x8c0k=\nroutes:\n",
    );
    for (i, r) in routes.iter().enumerate() {
        let scheme = if r.https { "https" } else { "http" };
        let port = r.port.map(|p| format!(":{p}")).unwrap_or_default();
        y.push_str(&format!(
            "  - from: {scheme}://{}{port}\n    to: http://127.0.0.1:9\n    id: id-{}\n    allow_public_unauthenticated_access: true\n",
            r.host, i
        ));
        match r.rule {
            PathRule::Any => {}
            PathRule::Prefix(p) => y.push_str(&format!("    prefix: {p}\n")),
            PathRule::Path(p) => y.push_str(&format!("    path: {p}\n")),
            PathRule::Regex(p) => y.push_str(&format!("    regex: '{p}'\n")),
        }
    }
    y
}

/// Pomerium's routing, spelled out route by route.
fn reference(routes: &[GenRoute], authority: &str, raw_path: &str) -> Option<usize> {
    let auth = authority.to_ascii_lowercase();
    let norm = path::normalise(path::strip_query(raw_path));
    let query = raw_path.find('?').map_or("", |i| &raw_path[i..]);
    let with_query = format!("{norm}{query}");
    let path_ok = |r: &GenRoute| match r.rule {
        PathRule::Any => true,
        PathRule::Prefix(p) => with_query.starts_with(p),
        PathRule::Path(p) => *norm == *p,
        PathRule::Regex(p) => eval::compile_route_regex(p).unwrap().is_match(&norm),
    };
    let host_ok = |r: &GenRoute| {
        let wild = r.host.contains('*');
        let key = match r.port {
            Some(p) => format!("{}:{p}", r.host),
            None => r.host.to_owned(),
        };
        let eq = |a: &str| {
            if wild {
                wildcard_host_matches(&key, a)
            } else {
                key == a
            }
        };
        // Without a port in `from`, `host:<the scheme's default port>` is the same host.
        let default = if r.https { "443" } else { "80" };
        eq(&auth)
            || r.port.is_none()
                && auth
                    .strip_suffix(default)
                    .and_then(|a| a.strip_suffix(':'))
                    .is_some_and(eq)
    };
    let exact: Vec<usize> = (0..routes.len())
        .filter(|&i| !routes[i].host.contains('*') && host_ok(&routes[i]))
        .collect();
    if !exact.is_empty() {
        return exact.into_iter().find(|&i| path_ok(&routes[i]));
    }
    (0..routes.len())
        .find(|&i| routes[i].host.contains('*') && host_ok(&routes[i]) && path_ok(&routes[i]))
}

fn authority() -> impl Strategy<Value = String> {
    let host = prop::sample::select(
        &[
            "a.example.com",
            "A.Example.COM",
            "b.example.com",
            "x.b.example.com",
            "y.b.example.com",
            "zz.example.com",
            "127.0.0.3",
            "example.com",
            "other.org",
        ][..],
    );
    let port = prop::option::of(prop::sample::select(
        &["443", "80", "8443", "8080", "9"][..],
    ));
    (host, port).prop_map(|(h, p)| match p {
        Some(p) => format!("{h}:{p}"),
        None => h.to_owned(),
    })
}

const PATHS: &[&str] = &[
    "/",
    "/api",
    "/api/x?y=1",
    "/api?x",
    "/healthz",
    "/healthz?x=1",
    "/v1/items",
    "/a//b",
    "/api/../healthz",
    "/API",
    "/x/./v2/y",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn indexed_lookup_equals_linear_reference(
        routes in prop::collection::vec(route(), 1..24),
        requests in prop::collection::vec((authority(), prop::sample::select(PATHS)), 1..24),
    ) {
        let loaded = load_str("routes.yaml", &yaml(&routes), &|_| None).expect("config");
        let engine = Engine::from_bytes(&compile::compile(&loaded.config).expect("compiles").to_bytes())
            .expect("bundle");
        prop_assert_eq!(engine.route_count(), routes.len());
        for (auth, p) in &requests {
            let got = engine.find_route(auth, p).map(RouteRef::index);
            prop_assert_eq!(got, reference(&routes, auth, p), "{} {}", auth, p);
        }
        // Ids are unique (the config loader refuses duplicates).
        for id in 0..routes.len() + 2 {
            let got = engine.route_by_id(&format!("id-{id}")).map(RouteRef::index);
            prop_assert_eq!(got, (id < routes.len()).then_some(id));
        }
    }
}
