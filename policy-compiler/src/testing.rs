//! Generated Pomerium configs for the scale benchmarks (`benches/scale.rs`, the wasm host's
//! `wasm_scale` bench, the filter memory measurement) and for tests. Not part of the API:
//! hidden from the docs, and only built with the `frontend` feature (the filter never links
//! it).
//!
//! The generator is deterministic (a function of `n` only), so every run and every bench
//! measures the same configuration.

use std::fmt::Write as _;

/// Routes per generated host (the last host may have fewer).
pub const ROUTES_PER_HOST: usize = 5;

/// The `authenticate_service_url` of generated configs.
pub const AUTHENTICATE: &str = "https://authenticate.example.com";

/// Number of wildcard routes at the end of every generated config (fixed, whatever `n`:
/// wildcard hosts are rare in real configs, and a request for an unknown host is checked
/// against each of them).
pub const WILDCARD_ROUTES: usize = 1;

/// The host of generated host number `h` (with its port when not the scheme's default).
pub fn host(h: usize) -> String {
    // Every seventh host on a non-default port, every eleventh plain HTTP: the route index
    // keeps `host:port` keys and the default-port rule apart.
    if h % 7 == 3 {
        format!("svc-{h:05}.corp.example.com:8443")
    } else {
        format!("svc-{h:05}.example.com")
    }
}

fn scheme(h: usize) -> &'static str {
    if h % 11 == 5 { "http" } else { "https" }
}

/// The id (= Envoy route name) of generated route `i`.
pub fn route_id(i: usize) -> String {
    format!("r{i:05}")
}

/// A Pomerium `config.yaml` with exactly `n` routes (`n` ≥ [`WILDCARD_ROUTES`] + 1; smaller
/// `n` gives `n` exact-host routes and no wildcard). Hosts `svc-NNNNN…` have
/// [`ROUTES_PER_HOST`] routes each, in this order, so that every route is reachable (first
/// match wins):
///
/// 0. `prefix: /api/` — `domain is example.com` and `claim/groups has team-<h % 50>`;
/// 1. `path: /healthz` — public;
/// 2. `regex: ^/v[0-9]+/items/[0-9]+$` — any signed-in user;
/// 3. `prefix: /admin` — `domain is example.com` and `claim/groups has admins` (like the
///    demo's `admin` route), identity headers;
/// 4. no path (the rest of the host) — any signed-in user, identity headers.
///
/// The last [`WILDCARD_ROUTES`] routes are `*.apps-K.example.com` catch-alls (any signed-in user).
pub fn config(n: usize) -> String {
    let mut y = String::with_capacity(200 + n * 220);
    let _ = write!(
        y,
        "authenticate_service_url: {AUTHENTICATE}\n\
         shared_secret: 9Tq3Yq0tC0f0x5yJ3m8k1cVv2cR3H0pQm8a4ZrJ6W1E=\n\
         cookie_secret: 7m0Q0H6mY7sY1Yy8d0b3x9S6s8T0e1j3L2f4A6x8c0k=\n\
         jwt_claims_headers:\n  X-Pomerium-Claim-Email: email\n\
         routes:\n"
    );
    let wildcards = if n > WILDCARD_ROUTES {
        WILDCARD_ROUTES
    } else {
        0
    };
    let exact = n - wildcards;
    for i in 0..exact {
        let h = i / ROUTES_PER_HOST;
        let _ = write!(
            y,
            "  - from: {}://{}\n    to: http://127.0.0.1:9\n    id: {}\n",
            scheme(h),
            host(h),
            route_id(i)
        );
        let body = match i % ROUTES_PER_HOST {
            0 => format!(
                "    prefix: /api/\n    policy:\n      - allow:\n          and:\n            - domain:\n                is: example.com\n            - claim/groups:\n                has: team-{}\n",
                h % 50
            ),
            1 => "    path: /healthz\n    allow_public_unauthenticated_access: true\n".to_owned(),
            2 => "    regex: ^/v[0-9]+/items/[0-9]+$\n    allow_any_authenticated_user: true\n"
                .to_owned(),
            3 => "    prefix: /admin\n    pass_identity_headers: true\n    policy:\n      - allow:\n          and:\n            - domain:\n                is: example.com\n            - claim/groups:\n                has: admins\n".to_owned(),
            _ => "    pass_identity_headers: true\n    allow_any_authenticated_user: true\n"
                .to_owned(),
        };
        y.push_str(&body);
    }
    for k in 0..wildcards {
        let _ = write!(
            y,
            "  - from: https://*.apps-{k}.example.com\n    to: http://127.0.0.1:9\n    id: {}\n    allow_any_authenticated_user: true\n",
            route_id(exact + k)
        );
    }
    y
}

/// A request the scale benchmarks send to a generated config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// `early`, `late` or `missing`.
    pub name: &'static str,
    /// The Envoy route name naming it (`route_by_id`); for `missing`, an id no route has.
    pub route_id: String,
    /// `:authority`.
    pub authority: String,
    /// `:path`.
    pub path: String,
}

/// Three requests against [`config`]`(n)`, each hitting the `prefix: /admin` route (domain +
/// groups policy, identity headers) of a host: `early` = the first host, `late` = the last
/// host that has one, `missing` = a host no route names (and an id no route has).
/// `n` must be at least 4 + [`WILDCARD_ROUTES`]; from 10 on, `early` and `late` are on
/// different hosts.
pub fn probes(n: usize) -> [Probe; 3] {
    let exact = n.saturating_sub(WILDCARD_ROUTES);
    // The last host whose route 3 exists.
    let last_host = exact.saturating_sub(4) / ROUTES_PER_HOST;
    let at = |name, h: usize| Probe {
        name,
        route_id: route_id(h * ROUTES_PER_HOST + 3),
        authority: host(h),
        path: "/admin/users?page=2".to_owned(),
    };
    [
        at("early", 0),
        at("late", last_host),
        Probe {
            name: "missing",
            route_id: "no-such-route".to_owned(),
            authority: "nope.example.org".to_owned(),
            path: "/admin/users?page=2".to_owned(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile;
    use crate::config::load_str;
    use crate::eval::{Claims, Decision, Engine, Request, Subject};

    fn engine(n: usize) -> Engine {
        let loaded = load_str("scale.yaml", &config(n), &|_| None).unwrap();
        Engine::from_bytes(&compile::compile(&loaded.config).unwrap().to_bytes()).unwrap()
    }

    fn admin(email: &str, groups: &[&str]) -> Subject {
        let claims = serde_json::json!({ "email": email, "groups": groups });
        Subject::new(
            "u".into(),
            email.into(),
            Claims::from_json(claims.as_object().unwrap()),
        )
    }

    #[test]
    fn generates_exactly_n_routes_deterministically() {
        for n in [1, 7, 10, 1000] {
            assert_eq!(config(n), config(n));
            assert_eq!(engine(n).route_count(), n, "n = {n}");
        }
        assert_ne!(config(10), config(11));
    }

    #[test]
    fn every_route_is_reachable_and_the_probes_hit_their_route() {
        let e = engine(1000);
        for p in &probes(1000)[..2] {
            let by_id = e.route_by_id(&p.route_id).unwrap();
            assert_eq!(e.find_route(&p.authority, &p.path), Some(by_id), "{p:?}");
        }
        assert_eq!(
            e.route_by_id(&probes(1000)[1].route_id).unwrap().index(),
            998
        );
        assert_eq!(probes(10)[1].route_id, route_id(8));
        let missing = &probes(1000)[2];
        assert_eq!(e.route_by_id(&missing.route_id), None);
        assert_eq!(e.find_route(&missing.authority, &missing.path), None);
        // One request per kind of route reaches exactly that route.
        let cases = [
            (0, "/api/things"),
            (1, "/healthz"),
            (2, "/v2/items/42"),
            (3, "/admin"),
            (4, "/other"),
        ];
        for h in [0, 3, 5, 197] {
            for (k, path) in cases {
                let want = e.route_by_id(&route_id(h * ROUTES_PER_HOST + k)).unwrap();
                assert_eq!(e.find_route(&host(h), path), Some(want), "{h} {path}");
            }
        }
        // The wildcard routes catch their hosts.
        let w = e.find_route("x.apps-0.example.com", "/").unwrap();
        assert_eq!(e.route(w).id, route_id(999));
    }

    #[test]
    fn probe_route_decides_like_the_demo_admin_route() {
        let e = engine(10);
        let p = &probes(10)[1];
        let r = e.route_by_id(&p.route_id).unwrap();
        let req = Request::new("GET", &p.path, 1_717_416_000);
        let yes = admin("alice@example.com", &["admins"]);
        let no = admin("bob@example.com", &["staff"]);
        assert_eq!(e.evaluate(r, &req, Some(&yes)), Decision::Allow);
        assert!(matches!(e.evaluate(r, &req, Some(&no)), Decision::Deny(_)));
        assert_eq!(e.evaluate(r, &req, None), Decision::Login);
    }
}
