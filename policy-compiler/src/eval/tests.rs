//! Engine tests on hand-built bundles (the compiler's own tests cover YAML → decision).

use super::*;
use crate::bundle::{self, Bundle, Cond, CondOp, Const, ConstKind, NodeKind, PathKind};

/// A tiny bundle builder for tests.
#[derive(Default)]
struct B {
    b: Bundle,
}

impl B {
    fn s(&mut self, s: &str) -> u32 {
        if let Some(i) = self.b.strings.iter().position(|x| x == s) {
            return i as u32;
        }
        self.b.strings.push(s.to_string());
        (self.b.strings.len() - 1) as u32
    }
    fn node(&mut self, kind: NodeKind, children: Vec<u32>, conds: Vec<Cond>, name: &str) -> u32 {
        let label = self.s(name);
        let name_str = self.s(name.strip_prefix("claim/").unwrap_or(""));
        self.b.nodes.push(bundle::Node {
            kind: kind as i32,
            children,
            conds,
            name_str,
            label_str: label,
            ..Default::default()
        });
        (self.b.nodes.len() - 1) as u32
    }
    fn cond(&mut self, op: CondOp, v: &str) -> Cond {
        let i = self.s(v);
        Cond {
            op: op as i32,
            value: Some(Const {
                kind: Some(ConstKind::Str(i)),
            }),
            ..Default::default()
        }
    }
    fn route(
        &mut self,
        id: &str,
        host: &str,
        kind: PathKind,
        p: &str,
        allow: Vec<u32>,
        deny: Vec<u32>,
    ) {
        let origin = self.s("test");
        // `host` may carry an `http://` scheme (else the route is `https`).
        let from = host;
        let host = host.strip_prefix("http://").unwrap_or(host);
        let r = bundle::Route {
            id_str: self.s(id),
            name_str: self.s(id),
            from_str: self.s(from),
            host_str: self.s(host),
            path_kind: kind as i32,
            path_str: self.s(p),
            allow: allow
                .into_iter()
                .map(|node| bundle::Term {
                    node,
                    origin_str: origin,
                })
                .collect(),
            deny: deny
                .into_iter()
                .map(|node| bundle::Term {
                    node,
                    origin_str: origin,
                })
                .collect(),
            ..Default::default()
        };
        let idx = self.b.routes.len() as u32;
        self.b.routes.push(r);
        if host.contains('*') {
            self.b.wildcard_routes.push(idx);
        } else {
            let h = self.s(host);
            match self.b.hosts.iter_mut().find(|x| x.host_str == h) {
                Some(e) => e.routes.push(idx),
                None => self.b.hosts.push(bundle::HostRoutes {
                    host_str: h,
                    routes: vec![idx],
                }),
            }
        }
    }
    fn engine(mut self) -> Engine {
        self.b.format_version = bundle::FORMAT_VERSION;
        Engine::from_bytes(&self.b.to_bytes()).unwrap()
    }
}

fn subject(email: &str) -> Subject {
    Subject::new("u1".into(), email.into(), Claims::default())
}

#[test]
fn email_rule_allows_denies_and_asks_for_login() {
    let mut b = B::default();
    let c = b.cond(CondOp::Is, "a@example.com");
    let e = b.node(NodeKind::Email, vec![], vec![c], "email");
    let and = b.node(NodeKind::And, vec![e], vec![], "and");
    b.route(
        "r1",
        "app.example.com",
        PathKind::Any,
        "",
        vec![and],
        vec![],
    );
    let eng = b.engine();
    let r = eng.find_route("App.Example.com:443", "/x?y").unwrap();
    assert_eq!(eng.route(r).id, "r1");
    let req = Request::new("GET", "/x", 0);
    assert_eq!(
        eng.evaluate(r, &req, Some(&subject("a@example.com"))),
        Decision::Allow
    );
    assert_eq!(
        eng.evaluate(r, &req, Some(&subject("A@example.com"))),
        Decision::Deny(DenyReason::NotAllowed)
    );
    assert_eq!(eng.evaluate(r, &req, None), Decision::Login);
}

#[test]
fn route_lookup_exact_hosts_shadow_wildcards() {
    let mut b = B::default();
    let a = b.node(NodeKind::Accept, vec![], vec![], "accept");
    let a2 = b.node(NodeKind::Accept, vec![], vec![], "accept");
    let a3 = b.node(NodeKind::Accept, vec![], vec![], "accept");
    let a4 = b.node(NodeKind::Accept, vec![], vec![], "accept");
    let a5 = b.node(NodeKind::Accept, vec![], vec![], "accept");
    b.route(
        "admin",
        "app.example.com",
        PathKind::Prefix,
        "/admin",
        vec![a],
        vec![],
    );
    b.route("wild", "*.example.com", PathKind::Any, "", vec![a2], vec![]);
    b.route(
        "app",
        "app.example.com",
        PathKind::Any,
        "",
        vec![a3],
        vec![],
    );
    b.route(
        "api",
        "b.example.com",
        PathKind::Prefix,
        "/api",
        vec![a4],
        vec![],
    );
    b.route(
        "plain",
        "http://c.example.com",
        PathKind::Any,
        "",
        vec![a5],
        vec![],
    );
    let eng = b.engine();
    let id = |h: &str, p: &str| eng.find_route(h, p).map(|r| eng.route(r).id.to_string());
    assert_eq!(id("app.example.com", "/admin/x").as_deref(), Some("admin"));
    assert_eq!(
        id("app.example.com", "/a/../admin").as_deref(),
        Some("admin")
    );
    assert_eq!(id("app.example.com", "//admin").as_deref(), Some("admin"));
    // The host has exact routes: the wildcard route defined before `app` is not consulted.
    assert_eq!(id("app.example.com", "/other").as_deref(), Some("app"));
    assert_eq!(id("app.example.com:443", "/other").as_deref(), Some("app"));
    // No fall-through from a concrete host's routes to the wildcards.
    assert_eq!(id("b.example.com", "/x"), None);
    assert_eq!(id("b.example.com", "/api/v1").as_deref(), Some("api"));
    assert_eq!(id("x.y.example.com", "/").as_deref(), Some("wild"));
    assert_eq!(id("x.example.com:443", "/").as_deref(), Some("wild"));
    // Only the scheme's own default port is implied.
    assert_eq!(id("x.example.com:80", "/"), None);
    assert_eq!(id("app.example.com:80", "/"), None);
    assert_eq!(id("c.example.com:80", "/").as_deref(), Some("plain"));
    assert_eq!(id("c.example.com", "/").as_deref(), Some("plain"));
    // `c.example.com:443` is no domain of the `http` route: the catch-all's wildcard takes it.
    assert_eq!(id("c.example.com:443", "/").as_deref(), Some("wild"));
    assert_eq!(id("x.example.com:8443", "/"), None);
    assert_eq!(id("app.example.com:8443", "/admin"), None);
    // A trailing dot is another host (Envoy does not strip it).
    assert_eq!(id("app.example.com.", "/other"), None);
    assert_eq!(id("example.com", "/"), None);
    assert_eq!(id("other.org", "/"), None);
    assert!(eng.route(eng.route_by_id("wild").unwrap()).wildcard);
    assert!(!eng.route(eng.route_by_id("app").unwrap()).wildcard);
}

#[test]
fn wildcards_anywhere_in_the_host_in_definition_order() {
    let mut b = B::default();
    let acc = |b: &mut B| b.node(NodeKind::Accept, vec![], vec![], "accept");
    let n: Vec<u32> = (0..5).map(|_| acc(&mut b)).collect();
    b.route(
        "mid",
        "app-*.example.com",
        PathKind::Any,
        "",
        vec![n[0]],
        vec![],
    );
    b.route(
        "twostar",
        "*.*.example.org",
        PathKind::Any,
        "",
        vec![n[1]],
        vec![],
    );
    b.route(
        "broad",
        "*.example.net",
        PathKind::Any,
        "",
        vec![n[2]],
        vec![],
    );
    b.route(
        "narrow",
        "*.b.example.net",
        PathKind::Any,
        "",
        vec![n[3]],
        vec![],
    );
    b.route("star", "*", PathKind::Prefix, "/star", vec![n[4]], vec![]);
    let eng = b.engine();
    let id = |h: &str, p: &str| eng.find_route(h, p).map(|r| eng.route(r).id.to_string());
    assert_eq!(id("app-x.example.com", "/").as_deref(), Some("mid"));
    assert_eq!(id("app-.example.com", "/").as_deref(), Some("mid"));
    assert_eq!(id("app-x.example.com:443", "/").as_deref(), Some("mid"));
    assert_eq!(id("api-x.example.com", "/"), None);
    assert_eq!(id("a.b.example.org", "/").as_deref(), Some("twostar"));
    assert_eq!(id("b.example.org", "/"), None);
    // Definition order among wildcards, not specificity.
    assert_eq!(id("x.b.example.net", "/").as_deref(), Some("broad"));
    assert_eq!(id("anything:9", "/star").as_deref(), Some("star"));
    assert_eq!(id("anything", "/"), None);
}

#[test]
fn wildcard_host_matching() {
    let m = wildcard_host_matches;
    assert!(m("*.example.com", "a.example.com"));
    assert!(m("*.example.com", "a.b.example.com"));
    assert!(m("*.example.com", ".example.com")); // `(.*)` may be empty, as Pomerium's regex
    assert!(!m("*.example.com", "example.com"));
    assert!(!m("*.example.com", "a.example.com:443"));
    assert!(!m("*.example.com", "a.example.com."));
    assert!(m("a*b*c", "abc"));
    assert!(m("a*b*c", "axxbyyc"));
    assert!(m("a*b*c", "abcbc"));
    assert!(!m("a*b*c", "abcb"));
    assert!(m("*", ""));
    assert!(m("**", "x"));
    assert!(!m("x", ""));
    assert!(m("", ""));
}

#[test]
fn hostile_bundles_are_rejected() {
    assert!(Engine::from_bytes(b"\xff\xff\xff").is_err());
    // Wrong version.
    let b = Bundle {
        format_version: 99,
        ..Default::default()
    };
    assert!(matches!(
        Engine::from_bytes(&b.to_bytes()),
        Err(BundleError::FormatVersion { found: 99, .. })
    ));
    // Dangling string.
    let mut bb = B::default();
    bb.route("r", "h", PathKind::Any, "", vec![], vec![]);
    bb.b.routes[0].id_str = 999;
    bb.b.format_version = bundle::FORMAT_VERSION;
    assert_eq!(
        Engine::from_bytes(&bb.b.to_bytes()).unwrap_err(),
        BundleError::DanglingString(999)
    );
    // Self-referencing node.
    let mut bb = B::default();
    let n = bb.node(NodeKind::And, vec![0], vec![], "and");
    bb.route("r", "h", PathKind::Any, "", vec![n], vec![]);
    bb.b.format_version = bundle::FORMAT_VERSION;
    assert_eq!(
        Engine::from_bytes(&bb.b.to_bytes()).unwrap_err(),
        BundleError::BadNodeRef(0)
    );
    // Node shared by two terms.
    let mut bb = B::default();
    let n = bb.node(NodeKind::Accept, vec![], vec![], "accept");
    bb.route("r", "h", PathKind::Any, "", vec![n, n], vec![]);
    bb.b.format_version = bundle::FORMAT_VERSION;
    assert!(Engine::from_bytes(&bb.b.to_bytes()).is_err());
    // Bad regex.
    let mut bb = B::default();
    bb.route("r", "h", PathKind::Regex, "(", vec![], vec![]);
    bb.b.format_version = bundle::FORMAT_VERSION;
    assert!(matches!(
        Engine::from_bytes(&bb.b.to_bytes()),
        Err(BundleError::BadRegex { .. })
    ));
    // Dangling route in host index.
    let mut bb = B::default();
    bb.route("r", "h", PathKind::Any, "", vec![], vec![]);
    bb.b.hosts[0].routes.push(7);
    bb.b.format_version = bundle::FORMAT_VERSION;
    assert_eq!(
        Engine::from_bytes(&bb.b.to_bytes()).unwrap_err(),
        BundleError::BadRouteRef(7)
    );
}

#[test]
fn too_deep_nesting_is_rejected() {
    let mut bb = B::default();
    let mut n = bb.node(NodeKind::Accept, vec![], vec![], "accept");
    for _ in 0..40 {
        n = bb.node(NodeKind::Not, vec![n], vec![], "not");
    }
    bb.route("r", "h", PathKind::Any, "", vec![n], vec![]);
    bb.b.format_version = bundle::FORMAT_VERSION;
    assert!(Engine::from_bytes(&bb.b.to_bytes()).is_err());
}

#[test]
fn merge_matches_pomerium() {
    let t = |r| Outcome::new(true, r);
    let f = |r| Outcome::new(false, r);
    let u = Reason::UserUnauthenticated;
    let m = Reason::HttpMethodUnauthorized;
    // and: false with reasons of the false ones.
    let o = merge(OpKind::And, [t(Reason::Accept), f(u), f(m)].into_iter());
    assert!(!o.pass && o.reasons.has(u) && o.reasons.has(m) && !o.reasons.has(Reason::Accept));
    // or: true with only the true ones' reasons.
    let o = merge(OpKind::Or, [t(Reason::Accept), f(u)].into_iter());
    assert!(o.pass && !o.reasons.has(u));
    // not: all false → true keeping every reason (user-unauthenticated survives).
    let o = merge(OpKind::Not, [f(u)].into_iter());
    assert!(o.pass && o.reasons.has(u));
    // nor: some false → true with the false ones' reasons.
    let o = merge(OpKind::Nor, [t(Reason::Accept), f(m)].into_iter());
    assert!(o.pass && o.reasons.has(m) && !o.reasons.has(Reason::Accept));
    let o = merge(OpKind::Nor, [t(Reason::Accept)].into_iter());
    assert!(!o.pass && o.reasons.has(Reason::Accept));
    assert_eq!(
        decide(Outcome::default(), Outcome::default()),
        Decision::Deny(DenyReason::NotAllowed)
    );
}

#[test]
fn subject_domain_is_pomerium_split() {
    assert_eq!(subject("a@b.com").domain(), Some("b.com"));
    assert_eq!(subject("a@b@c").domain(), Some("b"));
    assert_eq!(subject("nodomain").domain(), None);
    assert_eq!(subject("a@").domain(), Some(""));
}

#[test]
fn claims_lookup_and_last_wins() {
    let c = Claims::from_flat([
        ("b".to_string(), vec![ClaimValue::Str("1".into())]),
        ("a".to_string(), vec![ClaimValue::Bool(true)]),
        ("b".to_string(), vec![ClaimValue::Str("2".into())]),
    ]);
    assert_eq!(c.get("b"), &[ClaimValue::Str("2".into())]);
    assert_eq!(c.get("a"), &[ClaimValue::Bool(true)]);
    assert!(c.get("zzz").is_empty());
    assert_eq!(c.len(), 2);
}
