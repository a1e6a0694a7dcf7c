//! External authorization (`sidecar::ext_authz`): every decision through the real router —
//! Envoy HTTP service (`oneshot`), Envoy gRPC through a real HTTP/2 (h2c) client, nginx
//! `auth_request` — with a compiled bundle, the memory store and the fake IdP.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "ext_authz/shared.rs"]
mod shared;
#[path = "core/support.rs"]
mod support;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use portcullis_common::Secret;
use portcullis_common::cookie::{self, CookieKey};
use portcullis_common::signed_url::{self, RedirectKey};
use prost::Message;
use serde_json::json;
use shared::{COOKIE, seal};
use sidecar::AppState;
use sidecar::bundle::Bundle;
use sidecar::ext_authz::proto::{self, CheckResponse, check_response::HttpResponse};
use sidecar::ext_authz::{self, HTTP_PATH_PREFIX, TOKEN_HEADER};
use sidecar::settings::Settings;
use std::time::{Duration, Instant};
use support::*;
use tower::ServiceExt;

fn config_text() -> String {
    shared::config_text(
        r#"    policy:
      deny:
        and:
          - http_method:
              is: DELETE
"#,
        &format!(
            r#"  - from: https://b.example.com
    to: http://127.0.0.1:9
    idp_client_id: {CLIENT_B}
    idp_client_secret: b-secret
    allow_any_authenticated_user: true
ext_authz_address: 127.0.0.1:5090
"#
        ),
    )
}

fn config() -> policy_compiler::config::Config {
    policy_compiler::config::load_str("config.yaml", &config_text(), &|_| None)
        .unwrap()
        .config
}

struct Fixture {
    state: AppState,
    idp: std::sync::Arc<FakeIdp>,
    router: Router,
}

/// App state with the compiled bundle, users alice (admins) and bob (no group), and the
/// ext_authz router whose change-log follower has synced.
async fn fixture() -> Fixture {
    fixture_on(memory_store()).await
}

async fn fixture_on(store: std::sync::Arc<dyn sidecar::databroker::Store>) -> Fixture {
    let config = config();
    let settings = Settings::from_config(&config, None).unwrap();
    let idp = FakeIdp::new();
    idp.add_user("alice", "alice@example.com", &["admins"]);
    idp.add_user("bob", "bob@example.com", &[]);
    let state = app(store, idp.clone(), settings);
    assert!(state.bundle.replace(Bundle::from_config(&config).unwrap()));
    let router = ext_authz::router(state.clone());
    // Let the follower read the change log once (the cache is used only after that).
    tokio::time::sleep(Duration::from_millis(100)).await;
    Fixture { state, idp, router }
}

fn token() -> String {
    portcullis_common::api::api_token(&Secret::from_bytes(SHARED))
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// `x-envoy-auth-headers-to-remove`, split.
    fn removed(&self) -> Vec<String> {
        self.header("x-envoy-auth-headers-to-remove")
            .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
            .unwrap_or_default()
    }
}

async fn send(router: &Router, req: Request<Body>) -> Answer {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// An Envoy HTTP-service check for `method https://host path` with `headers`.
async fn envoy(
    router: &Router,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{HTTP_PATH_PREFIX}{path}"))
        .header("host", host)
        .header(TOKEN_HEADER, token());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(router, req.body(Body::empty()).unwrap()).await
}

async fn get(router: &Router, host: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    envoy(router, "GET", host, path, headers).await
}

#[tokio::test]
async fn allowed_request_gets_identity_headers_and_loses_our_cookie() {
    let f = fixture().await;
    let s = login(&f.state, &f.idp, "alice", Default::default()).await;
    let cookie = format!("a=1; {COOKIE}={}; b=2", seal(&s));
    let a = get(
        &f.router,
        "app.example.com",
        "/x?y=1",
        &[
            ("cookie", &cookie),
            ("x-pomerium-claim-groups", "spoofed"),
            ("x-pomerium-jwt-assertion", "spoofed"),
            ("x-email", "spoofed@example.com"),
        ],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.header("cookie"), Some("a=1; b=2"));
    let jwt = a.header("x-pomerium-jwt-assertion").unwrap();
    let claims = jwt_payload(jwt);
    assert_eq!(claims["aud"], "app.example.com");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["sid"], s.id.as_str());
    assert_eq!(a.header("x-email"), Some("alice@example.com"));
    // Spoofed headers we do not set are removed; the ones we set are overwritten.
    let removed = a.removed();
    assert!(
        removed.contains(&"x-pomerium-claim-groups".to_owned()),
        "{removed:?}"
    );
    assert!(!removed.contains(&"x-pomerium-jwt-assertion".to_owned()));
    assert!(!removed.contains(&"x-email".to_owned()));
    assert!(!removed.contains(&"cookie".to_owned()));

    // Only our cookie: the header is removed rather than set empty.
    let a = get(
        &f.router,
        "app.example.com",
        "/",
        &[("cookie", &format!("{COOKIE}={}", seal(&s)))],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("cookie"), None);
    assert!(a.removed().contains(&"cookie".to_owned()));
    // Port in the authority: same route, audience without the port.
    let a = get(
        &f.router,
        "app.example.com:443",
        "/",
        &[("cookie", &format!("{COOKIE}={}", seal(&s)))],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        jwt_payload(a.header("x-pomerium-jwt-assertion").unwrap())["aud"],
        "app.example.com"
    );
}

#[tokio::test]
async fn denied_user_gets_the_403_page() {
    let f = fixture().await;
    let s = login(&f.state, &f.idp, "bob", Default::default()).await;
    let cookie = format!("{COOKIE}={}", seal(&s));
    let a = get(
        &f.router,
        "app.example.com",
        "/",
        &[("cookie", &cookie), ("x-request-id", "req-1")],
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.body.contains("not-allowed"), "{}", a.body);
    assert!(a.body.contains("req-1"));
    assert!(!a.body.contains("bob"), "no claim values in the page");
    assert_eq!(a.header("x-pomerium-jwt-assertion"), None);
    let a = get(
        &f.router,
        "app.example.com",
        "/",
        &[("cookie", &cookie), ("accept", "application/json")],
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(v["reason"], "not-allowed");
}

fn assert_signed_sign_in(url: &str, back: &str) {
    let rest = url
        .strip_prefix("https://auth.example.com/.pomerium/sign_in?")
        .unwrap_or_else(|| panic!("{url}"));
    let params: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(rest.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(params[signed_url::PARAM_REDIRECT_URI], back);
    let issued: u64 = params[signed_url::PARAM_ISSUED].parse().unwrap();
    let key = RedirectKey::new(&Secret::from_bytes(SHARED));
    assert!(key.verify(
        back,
        issued,
        &params[signed_url::PARAM_SIGNATURE],
        sidecar::databroker::now_unix() as u64
    ));
}

#[tokio::test]
async fn no_session_is_sent_to_sign_in_with_the_filters_signed_url() {
    let f = fixture().await;
    let a = get(&f.router, "app.example.com", "/some/page?q=1", &[]).await;
    assert_eq!(a.status, StatusCode::FOUND);
    assert_eq!(a.header("cache-control"), Some("no-store"));
    assert_signed_sign_in(
        a.header("location").unwrap(),
        "https://app.example.com/some/page?q=1",
    );
    // Plain HTTP (x-forwarded-proto) returns to http://.
    let a = get(
        &f.router,
        "app.example.com",
        "/",
        &[("x-forwarded-proto", "http")],
    )
    .await;
    assert_signed_sign_in(a.header("location").unwrap(), "http://app.example.com/");
    // Not a navigation: 401 JSON naming the URL.
    let a = envoy(
        &f.router,
        "POST",
        "app.example.com",
        "/api",
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_signed_sign_in(
        v["sign_in_url"].as_str().unwrap(),
        "https://app.example.com/api",
    );
}

#[tokio::test]
async fn tampered_and_foreign_cookies_are_no_session() {
    let f = fixture().await;
    let s = login(&f.state, &f.idp, "alice", Default::default()).await;
    let mut sealed = seal(&s).into_bytes();
    let last = sealed.len() - 3;
    sealed[last] = if sealed[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(sealed).unwrap();
    let a = get(
        &f.router,
        "app.example.com",
        "/",
        &[("cookie", &format!("{COOKIE}={tampered}"))],
    )
    .await;
    assert_eq!(a.status, StatusCode::FOUND);
    // Sealed with another cookie secret.
    let other = CookieKey::new(&Secret::from_bytes([99; 32]));
    let foreign = cookie::seal(&other, COOKIE, &s.id, u64::MAX / 2, [1; 24]).unwrap();
    let a = get(
        &f.router,
        "app.example.com",
        "/",
        &[("cookie", &format!("{COOKIE}={foreign}"))],
    )
    .await;
    assert_eq!(a.status, StatusCode::FOUND);
    // A planted cookie before the real one does not shadow it.
    let a = get(
        &f.router,
        "app.example.com",
        "/",
        &[(
            "cookie",
            &format!("{COOKIE}={foreign}; {COOKIE}={}", seal(&s)),
        )],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    // An id that does not exist (well-formed, sealed): sign in, and it is cached as absent.
    let ghost = cookie::seal(
        &CookieKey::new(&Secret::from_bytes([12; 32])),
        COOKIE,
        "gggggggggggggggggggggggggggggggggggggggggggg",
        u64::MAX / 2,
        [2; 24],
    )
    .unwrap();
    let before = f.state.metrics.session_lookups.get();
    for _ in 0..3 {
        let a = get(
            &f.router,
            "app.example.com",
            "/",
            &[("cookie", &format!("{COOKIE}={ghost}"))],
        )
        .await;
        assert_eq!(a.status, StatusCode::FOUND);
    }
    assert_eq!(f.state.metrics.session_lookups.get(), before + 1);
}

#[tokio::test]
async fn a_session_of_another_oauth_client_is_no_session_on_that_route() {
    let f = fixture().await;
    let s = login_with_client(&f.state, &f.idp, "alice", CLIENT).await;
    let cookie = format!("{COOKIE}={}", seal(&s));
    let a = get(&f.router, "b.example.com", "/", &[("cookie", &cookie)]).await;
    assert_eq!(a.status, StatusCode::FOUND);
    assert_signed_sign_in(a.header("location").unwrap(), "https://b.example.com/");
    let sb = login_with_client(&f.state, &f.idp, "alice", CLIENT_B).await;
    let a = get(
        &f.router,
        "b.example.com",
        "/",
        &[("cookie", &format!("{COOKIE}={}", seal(&sb)))],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    // And the other way round: a CLIENT_B session is no session on the default client's route.
    let a = get(
        &f.router,
        "app.example.com",
        "/",
        &[("cookie", &format!("{COOKIE}={}", seal(&sb)))],
    )
    .await;
    assert_eq!(a.status, StatusCode::FOUND);
}

#[tokio::test]
async fn public_routes_are_evaluated_and_stripped() {
    let f = fixture().await;
    let a = get(
        &f.router,
        "public.example.com",
        "/",
        &[
            ("x-pomerium-jwt-assertion", "spoofed"),
            ("x-pomerium-claim-email", "spoofed"),
        ],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let removed = a.removed();
    for h in [
        "x-pomerium-jwt-assertion",
        "x-pomerium-claim-email",
        "x-email",
    ] {
        assert!(removed.contains(&h.to_owned()), "{h} in {removed:?}");
    }
    // Its deny rule still applies.
    let a = envoy(&f.router, "DELETE", "public.example.com", "/", &[]).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.body.contains("policy-denied"), "{}", a.body);
    // A public route that needs no session does not read one (and keeps the cookie).
    let s = login(&f.state, &f.idp, "alice", Default::default()).await;
    let before = f.state.metrics.session_lookups.get();
    let a = get(
        &f.router,
        "public.example.com",
        "/",
        &[("cookie", &format!("{COOKIE}={}", seal(&s)))],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(f.state.metrics.session_lookups.get(), before);
}

#[tokio::test]
async fn unknown_routes_internal_paths_and_sidecar_paths() {
    let f = fixture().await;
    let a = get(&f.router, "unknown.example.com", "/", &[]).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.body.contains("no-route"));
    let a = get(&f.router, "app.example.com", "/.portcullis/v1/bundle", &[]).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.body.contains("internal-path"));
    // The sidecar's endpoints pass with the cookie (sign-out, user info need it).
    let s = login(&f.state, &f.idp, "alice", Default::default()).await;
    for (host, path) in [
        ("app.example.com", "/.pomerium/sign_out"),
        ("auth.example.com", "/oauth2/callback?code=x"),
    ] {
        let a = get(
            &f.router,
            host,
            path,
            &[
                ("cookie", &format!("{COOKIE}={}", seal(&s))),
                ("x-pomerium-jwt-assertion", "spoofed"),
            ],
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{host}{path}");
        assert!(!a.removed().contains(&"cookie".to_owned()));
        assert_eq!(a.header("cookie"), None);
        assert!(a.removed().contains(&"x-pomerium-jwt-assertion".to_owned()));
    }
    // A check outside the prefix routes nothing.
    let req = Request::get("/elsewhere")
        .header("host", "app.example.com")
        .header(TOKEN_HEADER, token())
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&f.router, req).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn callers_without_the_token_are_denied() {
    let f = fixture().await;
    let s = login(&f.state, &f.idp, "alice", Default::default()).await;
    let cookie = format!("{COOKIE}={}", seal(&s));
    let wrong = portcullis_common::api::api_token(&Secret::from_bytes([1; 32]));
    for tok in [
        None,
        Some("nope".to_owned()),
        Some(wrong),
        Some(format!("Bearer {}", token())),
    ] {
        let mut req = Request::get(format!("{HTTP_PATH_PREFIX}/"))
            .header("host", "app.example.com")
            .header("cookie", &cookie);
        if let Some(t) = &tok {
            req = req.header(TOKEN_HEADER, t);
        }
        let a = send(&f.router, req.body(Body::empty()).unwrap()).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{tok:?}");
        assert!(a.body.contains("ext-authz-caller-unauthenticated"));
        assert_eq!(a.header("x-pomerium-jwt-assertion"), None);
    }
}

#[tokio::test]
async fn hits_are_served_from_the_cache_and_revocations_apply_within_a_second() {
    revocation_through_the_cache(fixture().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_apply_within_a_second_with_redis() {
    let redis = RedisServer::start();
    revocation_through_the_cache(fixture_on(redis_store(&redis).await).await).await;
}

async fn revocation_through_the_cache(f: Fixture) {
    let s = login(&f.state, &f.idp, "alice", Default::default()).await;
    let cookie = format!("{COOKIE}={}", seal(&s));
    let h = [("cookie", cookie.as_str())];
    assert_eq!(
        get(&f.router, "app.example.com", "/", &h).await.status,
        StatusCode::OK
    );
    let reads = f.state.metrics.session_lookups.get();
    for _ in 0..20 {
        assert_eq!(
            get(&f.router, "app.example.com", "/", &h).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        f.state.metrics.session_lookups.get(),
        reads,
        "a cached session is not read from the store again"
    );

    // Group removal (what the identity manager writes after a user-info refresh).
    let mut stored = f.state.sessions.get(&s.id).await.unwrap().unwrap();
    stored.user_info.insert("groups".into(), json!([]));
    stored.rederive();
    assert!(f.state.sessions.update(&mut stored).await.unwrap());
    let t = Instant::now();
    loop {
        let a = get(&f.router, "app.example.com", "/", &h).await;
        if a.status == StatusCode::FORBIDDEN {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "group removal not applied in 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Sign-out (the session record deleted): sign in again.
    let s2 = login(&f.state, &f.idp, "alice", Default::default()).await;
    let cookie2 = format!("{COOKIE}={}", seal(&s2));
    let h2 = [("cookie", cookie2.as_str())];
    assert_eq!(
        get(&f.router, "app.example.com", "/", &h2).await.status,
        StatusCode::OK
    );
    assert!(f.state.sessions.delete(&s2.id).await.unwrap());
    let t = Instant::now();
    loop {
        let a = get(&f.router, "app.example.com", "/", &h2).await;
        if a.status == StatusCode::FOUND {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "sign-out not applied in 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_undecodable_bundle_refuses_with_503() {
    let f = fixture().await;
    f.state
        .bundle
        .replace(Bundle::unchecked(b"not a bundle".to_vec(), "broken"));
    let a = get(&f.router, "public.example.com", "/", &[]).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(a.body.contains("policy-not-loaded"));
    // A good bundle again: served at once.
    f.state
        .bundle
        .replace(Bundle::from_config(&config()).unwrap());
    assert_eq!(
        get(&f.router, "public.example.com", "/", &[]).await.status,
        StatusCode::OK
    );
}

#[test]
fn ext_authz_address_is_a_setting() {
    let s = Settings::from_config(&config(), None).unwrap();
    assert_eq!(s.ext_authz_address.unwrap().to_string(), "127.0.0.1:5090");
    let mut text = config_text();
    text = text.replace("ext_authz_address: 127.0.0.1:5090\n", "");
    let c = policy_compiler::config::load_str("c.yaml", &text, &|_| None)
        .unwrap()
        .config;
    assert!(
        Settings::from_config(&c, None)
            .unwrap()
            .ext_authz_address
            .is_none()
    );
}

// ---- nginx auth_request ----------------------------------------------------------------

async fn nginx(router: &Router, host: &str, uri: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = Request::get(ext_authz::NGINX_PATH)
        .header("host", "127.0.0.1:5090")
        .header("x-original-uri", uri)
        .header("x-original-method", "GET")
        .header("x-original-host", host)
        .header("x-forwarded-proto", "https")
        .header(TOKEN_HEADER, token());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(router, req.body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn nginx_auth_request_decisions() {
    let f = fixture().await;
    let alice = login(&f.state, &f.idp, "alice", Default::default()).await;
    let bob = login(&f.state, &f.idp, "bob", Default::default()).await;
    let a = nginx(
        &f.router,
        "app.example.com",
        "/x",
        &[("cookie", &format!("a=1; {COOKIE}={}", seal(&alice)))],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("x-portcullis-cookie"), Some("a=1"));
    assert_eq!(
        jwt_payload(a.header("x-pomerium-jwt-assertion").unwrap())["sub"],
        "alice"
    );
    assert_eq!(a.header("x-email"), Some("alice@example.com"));
    // Only our cookie: the upstream gets none.
    let a = nginx(
        &f.router,
        "app.example.com",
        "/x",
        &[("cookie", &format!("{COOKIE}={}", seal(&alice)))],
    )
    .await;
    assert_eq!(a.header("x-portcullis-cookie"), Some(""));
    // Public route, no cookie of ours: the client's cookies go on; no identity.
    let a = nginx(
        &f.router,
        "public.example.com",
        "/",
        &[("cookie", "c=3"), ("x-pomerium-jwt-assertion", "spoofed")],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("x-portcullis-cookie"), Some("c=3"));
    assert_eq!(a.header("x-pomerium-jwt-assertion"), Some(""));
    // Denied.
    let a = nginx(
        &f.router,
        "app.example.com",
        "/",
        &[("cookie", &format!("{COOKIE}={}", seal(&bob)))],
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.header("x-portcullis-reason"), Some("not-allowed"));
    // Unknown route: nginx only understands 401/403.
    let a = nginx(&f.router, "nope.example.com", "/", &[]).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.header("x-portcullis-reason"), Some("no-route"));
    // Sign-in: 401 with the URL for a navigation, without for an API call.
    let a = nginx(&f.router, "app.example.com", "/p?q=1", &[]).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_signed_sign_in(
        a.header("x-portcullis-sign-in-url").unwrap(),
        "https://app.example.com/p?q=1",
    );
    let a = nginx(
        &f.router,
        "app.example.com",
        "/p",
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.header("x-portcullis-sign-in-url"), None);
    // Without the token, or without the original request: denied.
    let req = Request::get(ext_authz::NGINX_PATH)
        .header("x-original-uri", "/")
        .header("x-original-method", "GET")
        .header("x-original-host", "public.example.com")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&f.router, req).await.status, StatusCode::FORBIDDEN);
    let req = Request::get(ext_authz::NGINX_PATH)
        .header(TOKEN_HEADER, token())
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&f.router, req).await.status, StatusCode::FORBIDDEN);
}

// ---- gRPC over a real HTTP/2 connection ------------------------------------------------

struct Grpc {
    sender: hyper::client::conn::http2::SendRequest<http_body_util::Full<axum::body::Bytes>>,
}

impl Grpc {
    async fn connect(router: Router) -> Grpc {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        Grpc { sender }
    }

    /// Call `Check` with a raw body; (grpc-status, message bytes).
    async fn call_raw(&mut self, body: Vec<u8>, token: Option<&str>) -> (String, Vec<u8>) {
        use http_body_util::BodyExt;
        let mut req = Request::post(format!("http://127.0.0.1{}", ext_authz::GRPC_CHECK_PATH))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(t) = token {
            req = req.header(TOKEN_HEADER, t);
        }
        let req = req
            .body(http_body_util::Full::new(axum::body::Bytes::from(body)))
            .unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        let head_status = resp
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_owned());
        let collected = resp.into_body().collect().await.unwrap();
        let trailer_status = collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .map(|v| v.to_str().unwrap().to_owned());
        let status = head_status.or(trailer_status).expect("grpc-status");
        (status, collected.to_bytes().to_vec())
    }

    async fn check(&mut self, req: &proto::CheckRequest, token: Option<&str>) -> CheckResponse {
        let (status, body) = self
            .call_raw(sidecar::ext_authz::grpc_frame(req), token)
            .await;
        assert_eq!(status, "0");
        CheckResponse::decode(sidecar::ext_authz::grpc_unframe(&body).unwrap()).unwrap()
    }
}

fn check_request(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> proto::CheckRequest {
    use proto::attribute_context::{HttpRequest, Request as AttrRequest};
    let mut h: std::collections::BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    h.insert(":authority".into(), host.into());
    h.insert(":path".into(), path.into());
    h.insert(":method".into(), method.into());
    proto::CheckRequest {
        attributes: Some(proto::AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    id: "rid-7".into(),
                    method: method.into(),
                    headers: h,
                    path: path.into(),
                    host: host.into(),
                    scheme: "https".into(),
                    header_map: None,
                }),
            }),
            context_extensions: Default::default(),
        }),
    }
}

fn header_of<'a>(opts: &'a [proto::HeaderValueOption], name: &str) -> Option<&'a str> {
    opts.iter()
        .filter_map(|o| o.header.as_ref())
        .find(|h| h.key == name)
        .map(|h| h.value.as_str())
}

#[tokio::test]
async fn grpc_check_over_http2() {
    let f = fixture().await;
    let alice = login(&f.state, &f.idp, "alice", Default::default()).await;
    let bob = login(&f.state, &f.idp, "bob", Default::default()).await;
    let mut g = Grpc::connect(f.router.clone()).await;
    let tok = token();

    // Allowed: headers to set (overwrite, not append) and to remove.
    let r = g
        .check(
            &check_request(
                "GET",
                "app.example.com",
                "/x",
                &[
                    ("cookie", &format!("a=1; {COOKIE}={}", seal(&alice))),
                    ("x-pomerium-claim-x", "spoofed"),
                ],
            ),
            Some(&tok),
        )
        .await;
    assert_eq!(r.status.as_ref().unwrap().code, 0);
    let Some(HttpResponse::OkResponse(ok)) = &r.http_response else {
        panic!("{r:?}")
    };
    assert_eq!(header_of(&ok.headers, "cookie"), Some("a=1"));
    assert_eq!(
        jwt_payload(header_of(&ok.headers, "x-pomerium-jwt-assertion").unwrap())["sub"],
        "alice"
    );
    assert!(
        ok.headers
            .iter()
            .all(|o| o.append == Some(proto::BoolValue { value: false }))
    );
    assert!(
        ok.headers_to_remove
            .contains(&"x-pomerium-claim-x".to_owned())
    );
    // Only our cookie, merged by Envoy from two HTTP/1.1 headers with a comma.
    let r = g
        .check(
            &check_request(
                "GET",
                "app.example.com",
                "/x",
                &[("cookie", &format!("{COOKIE}={},z=9", seal(&alice)))],
            ),
            Some(&tok),
        )
        .await;
    let Some(HttpResponse::OkResponse(ok)) = &r.http_response else {
        panic!("{r:?}")
    };
    assert_eq!(header_of(&ok.headers, "cookie"), Some("z=9"));

    // Sign-in: UNAUTHENTICATED + a denied 302 with the signed location.
    let r = g
        .check(
            &check_request("GET", "app.example.com", "/p", &[]),
            Some(&tok),
        )
        .await;
    assert_eq!(
        r.status.as_ref().unwrap().code,
        proto::code::UNAUTHENTICATED
    );
    let Some(HttpResponse::DeniedResponse(d)) = &r.http_response else {
        panic!("{r:?}")
    };
    assert_eq!(d.status.unwrap().code, 302);
    assert_signed_sign_in(
        header_of(&d.headers, "location").unwrap(),
        "https://app.example.com/p",
    );

    // Denied: 403 page with the request id Envoy passed in the attributes.
    let r = g
        .check(
            &check_request(
                "GET",
                "app.example.com",
                "/",
                &[("cookie", &format!("{COOKIE}={}", seal(&bob)))],
            ),
            Some(&tok),
        )
        .await;
    assert_eq!(
        r.status.as_ref().unwrap().code,
        proto::code::PERMISSION_DENIED
    );
    let Some(HttpResponse::DeniedResponse(d)) = &r.http_response else {
        panic!("{r:?}")
    };
    assert_eq!(d.status.unwrap().code, 403);
    assert!(
        d.body.contains("not-allowed") && d.body.contains("rid-7"),
        "{}",
        d.body
    );

    // Unknown route: 404.
    let r = g
        .check(
            &check_request("GET", "nope.example.com", "/", &[]),
            Some(&tok),
        )
        .await;
    let Some(HttpResponse::DeniedResponse(d)) = &r.http_response else {
        panic!("{r:?}")
    };
    assert_eq!(d.status.unwrap().code, 404);

    // `encode_raw_headers`: headers as a list with raw values.
    let mut raw = check_request("GET", "app.example.com", "/x", &[]);
    let http = raw
        .attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap();
    http.headers.clear();
    http.header_map = Some(proto::HeaderMap {
        headers: vec![proto::HeaderValue {
            key: "cookie".into(),
            value: String::new(),
            raw_value: format!("{COOKIE}={}", seal(&alice)).into_bytes(),
        }],
    });
    let r = g.check(&raw, Some(&tok)).await;
    assert_eq!(r.status.as_ref().unwrap().code, 0, "{r:?}");

    // Caller without the token: a denial (never a gRPC error Envoy could fail open on).
    let r = g
        .check(&check_request("GET", "public.example.com", "/", &[]), None)
        .await;
    assert_eq!(
        r.status.as_ref().unwrap().code,
        proto::code::PERMISSION_DENIED
    );
    let Some(HttpResponse::DeniedResponse(d)) = &r.http_response else {
        panic!("{r:?}")
    };
    assert_eq!(d.status.unwrap().code, 403);

    // Malformed frames and messages: gRPC errors.
    let (status, _) = g.call_raw(vec![0, 0, 0, 0, 9, 1], Some(&tok)).await;
    assert_eq!(status, proto::code::INVALID_ARGUMENT.to_string());
    let (status, _) = g.call_raw(vec![1, 0, 0, 0, 0], Some(&tok)).await;
    assert_eq!(status, proto::code::UNIMPLEMENTED.to_string());
    let (status, _) = g
        .call_raw(vec![0, 0, 0, 0, 2, 0xff, 0xff], Some(&tok))
        .await;
    assert_eq!(status, proto::code::INVALID_ARGUMENT.to_string());
    // Not gRPC at all (e.g. an HTTP-service check misrouted without `path_prefix`): never
    // a 200, which Envoy's HTTP service would take as "allow".
    let req = Request::post(ext_authz::GRPC_CHECK_PATH)
        .header(TOKEN_HEADER, token())
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(&f.router, req).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
}

// ---- the binary ------------------------------------------------------------------------

#[tokio::test]
async fn the_binary_prints_the_token_and_serves_ext_authz_address() {
    let dir = TempDir::new("ext-authz-bin");
    let cfg = dir.0.join("config.yaml");
    let (main, authz) = (free_port(), free_port());
    std::fs::write(
        &cfg,
        format!(
            "sidecar_address: 127.0.0.1:{main}\next_authz_address: 127.0.0.1:{authz}\n{}",
            config_yaml("admins")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sidecar"))
        .arg("--config")
        .arg(&cfg)
        .arg("--print-ext-authz-token")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), token());

    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _sidecar = Kill(
        std::process::Command::new(env!("CARGO_BIN_EXE_sidecar"))
            .arg("--config")
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let check = |tok: Option<String>| {
        let mut r = client
            .get(format!("http://127.0.0.1:{authz}{HTTP_PATH_PREFIX}/x"))
            .header("host", "app.example.com");
        if let Some(t) = tok {
            r = r.header(TOKEN_HEADER, t);
        }
        r.send()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        match check(Some(token())).await {
            Ok(r) => break r,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("ext_authz listener never came up: {e}"),
        }
    };
    assert_eq!(r.status(), 302);
    assert_signed_sign_in(
        r.headers()["location"].to_str().unwrap(),
        "https://app.example.com/x",
    );
    assert_eq!(check(None).await.unwrap().status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_for_one_session_share_one_store_read() {
    let redis = RedisServer::start();
    let f = fixture_on(redis_store(&redis).await).await;
    let s = login(&f.state, &f.idp, "alice", Default::default()).await;
    let cookie = format!("{COOKIE}={}", seal(&s));
    let before = f.state.metrics.session_lookups.get();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let router = f.router.clone();
            let cookie = cookie.clone();
            tokio::spawn(async move {
                get(&router, "app.example.com", "/", &[("cookie", &cookie)])
                    .await
                    .status
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(f.state.metrics.session_lookups.get(), before + 1);
}

// ---- regressions from the security review ----------------------------------------------

/// An Envoy HTTP-service check whose header values are raw bytes (obs-text, UTF-8, Latin-1).
async fn get_bytes(
    router: &Router,
    host: &str,
    path: &str,
    headers: &[(&str, &[u8])],
) -> (StatusCode, HeaderMap) {
    let mut req = Request::get(format!("{HTTP_PATH_PREFIX}{path}"))
        .header("host", host)
        .header(TOKEN_HEADER, token());
    for (k, v) in headers {
        req = req.header(*k, axum::http::HeaderValue::from_bytes(v).unwrap());
    }
    f_send(router, req.body(Body::empty()).unwrap()).await
}

/// As [`send`], but header values are kept as bytes (they may not be visible ASCII).
async fn f_send(router: &Router, req: Request<Body>) -> (StatusCode, HeaderMap) {
    let resp = router.clone().oneshot(req).await.unwrap();
    (resp.status(), resp.headers().clone())
}

fn removed_of(h: &HeaderMap) -> Vec<String> {
    h.get("x-envoy-auth-headers-to-remove")
        .map(|v| {
            v.to_str()
                .unwrap()
                .split(',')
                .map(|s| s.trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn unencodable_claim_value_still_strips_the_spoofed_header() {
    let f = fixture().await;
    f.idp.add_user("eve", "eve\u{1}@example.com", &["admins"]);
    let s = login(&f.state, &f.idp, "eve", Default::default()).await;
    let a = get(
        &f.router,
        "app.example.com",
        "/",
        &[
            ("cookie", &format!("{COOKIE}={}", seal(&s))),
            ("x-email", "ceo@example.com"),
        ],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.header("x-email").is_some() || a.removed().contains(&"x-email".to_owned()),
        "{a:?}"
    );
    // gRPC: the header is not set (Envoy would refuse the response) and is removed.
    let mut g = Grpc::connect(f.router.clone()).await;
    let r = g
        .check(
            &check_request(
                "GET",
                "app.example.com",
                "/",
                &[
                    ("cookie", &format!("{COOKIE}={}", seal(&s))),
                    ("x-email", "ceo@example.com"),
                ],
            ),
            Some(&token()),
        )
        .await;
    let Some(HttpResponse::OkResponse(ok)) = r.http_response else {
        panic!("{r:?}")
    };
    assert_eq!(header_of(&ok.headers, "x-email"), None);
    assert!(
        ok.headers_to_remove.contains(&"x-email".to_owned()),
        "{ok:?}"
    );
    // nginx: the header is sent empty (which drops the client's).
    let a = nginx(
        &f.router,
        "app.example.com",
        "/",
        &[("cookie", &format!("{COOKIE}={}", seal(&s)))],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("x-email").unwrap_or(""), "");
}

#[tokio::test]
async fn nginx_dot_segments_after_sidecar_prefixes_are_not_exempt() {
    let f = fixture().await;
    for uri in [
        "/.pomerium/../secret",
        "/.pomerium/%2e%2e/secret",
        "/.pomerium/%2E%2E/secret",
        "/.well-known/pomerium/../secret",
        "/.pomerium/./../secret",
        "/.pomerium/..;/secret",
        "/.pomerium/..%2fsecret",
        "/.pomerium/..%5Csecret",
        "/.pomerium/..\\secret",
        "//.pomerium/x",
        "/x//y",
        "/%2epomerium/x",
        // nginx decodes every escape before choosing a location; the upstream does too.
        "/%61dmin",
    ] {
        let a = nginx(&f.router, "public.example.com", uri, &[]).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{uri}");
        assert_eq!(
            a.header("x-portcullis-reason"),
            Some("non-normal-path"),
            "{uri}"
        );
    }
    // Normal paths (a query may hold anything) are judged as before.
    for uri in ["/", "/a/b/", "/a.b/..c/%20?x=../..//%2e"] {
        let a = nginx(&f.router, "public.example.com", uri, &[]).await;
        assert_eq!(a.status, StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn envoy_dot_segments_after_sidecar_prefixes_are_not_exempt() {
    let f = fixture().await;
    for path in [
        "/.pomerium/../secret",
        "/.pomerium/%2e%2e/secret",
        "/.well-known/pomerium/../secret",
        "/.pomerium/..%2Fsecret",
    ] {
        let a = get(&f.router, "app.example.com", path, &[]).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(a.body.contains("non-normal-path"), "{path}: {}", a.body);
        let mut g = Grpc::connect(f.router.clone()).await;
        let r = g
            .check(
                &check_request("GET", "app.example.com", path, &[]),
                Some(&token()),
            )
            .await;
        let Some(HttpResponse::DeniedResponse(d)) = &r.http_response else {
            panic!("{path}: {r:?}")
        };
        assert_eq!(d.status.unwrap().code, 400, "{path}");
    }
    // Envoy decodes unreserved escapes itself when it normalises: not refused here.
    assert_eq!(
        get(&f.router, "public.example.com", "/%7Euser", &[])
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn non_ascii_cookies_and_claim_headers_never_let_ours_or_a_spoofed_one_through() {
    let f = fixture().await;
    let s = login(&f.state, &f.idp, "alice", Default::default()).await;
    let ours = format!("{COOKIE}={}", seal(&s));
    // UTF-8 (obs-text to `to_str`): stripped like any other cookie header.
    let utf8 = format!("{ours}; lang=José");
    for host in ["public.example.com", "app.example.com"] {
        let (status, h) = get_bytes(
            &f.router,
            host,
            "/",
            &[
                ("cookie", utf8.as_bytes()),
                ("x-pomerium-claim-foo", "José".as_bytes()),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{host}");
        assert_eq!(
            h.get("cookie").map(|v| v.as_bytes()),
            Some("lang=José".as_bytes()),
            "{host}"
        );
        assert!(
            removed_of(&h).contains(&"x-pomerium-claim-foo".to_owned()),
            "{host}: {h:?}"
        );
    }
    // Not UTF-8 (Latin-1): the session still opens, the whole Cookie header is removed.
    let mut latin1 = format!("{ours}; lang=Jos").into_bytes();
    latin1.push(0xe9);
    let (status, h) = get_bytes(
        &f.router,
        "app.example.com",
        "/",
        &[("cookie", &latin1), ("x-pomerium-claim-foo", b"\xe9")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(h.get("cookie").is_none(), "{h:?}");
    let removed = removed_of(&h);
    assert!(removed.contains(&"cookie".to_owned()), "{removed:?}");
    assert!(
        removed.contains(&"x-pomerium-claim-foo".to_owned()),
        "{removed:?}"
    );
    let (status, h) = get_bytes(&f.router, "public.example.com", "/", &[("cookie", &latin1)]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(h.get("cookie").is_none(), "{h:?}");
    assert!(removed_of(&h).contains(&"cookie".to_owned()));

    // gRPC with `encode_raw_headers`: the same.
    let mut g = Grpc::connect(f.router.clone()).await;
    let mut raw = check_request("GET", "app.example.com", "/", &[]);
    let http = raw
        .attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap();
    http.headers.clear();
    http.header_map = Some(proto::HeaderMap {
        headers: vec![
            proto::HeaderValue {
                key: "cookie".into(),
                value: String::new(),
                raw_value: latin1.clone(),
            },
            proto::HeaderValue {
                key: "x-pomerium-claim-foo".into(),
                value: String::new(),
                raw_value: b"\xe9".to_vec(),
            },
        ],
    });
    let r = g.check(&raw, Some(&token())).await;
    let Some(HttpResponse::OkResponse(ok)) = r.http_response else {
        panic!("{r:?}")
    };
    assert_eq!(header_of(&ok.headers, "cookie"), None, "{ok:?}");
    assert!(
        ok.headers_to_remove.contains(&"cookie".to_owned()),
        "{ok:?}"
    );
    assert!(
        ok.headers_to_remove
            .contains(&"x-pomerium-claim-foo".to_owned()),
        "{ok:?}"
    );

    // nginx: the upstream gets no Cookie header; a UTF-8 one keeps its other cookies.
    let req = |cookie: &[u8]| {
        Request::get(ext_authz::NGINX_PATH)
            .header("x-original-uri", "/")
            .header("x-original-method", "GET")
            .header("x-original-host", "app.example.com")
            .header(TOKEN_HEADER, token())
            .header(
                "cookie",
                axum::http::HeaderValue::from_bytes(cookie).unwrap(),
            )
            .body(Body::empty())
            .unwrap()
    };
    let (status, h) = f_send(&f.router, req(&latin1)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        h.get("x-portcullis-cookie").map(|v| v.as_bytes()),
        Some(&b""[..])
    );
    let (status, h) = f_send(&f.router, req(utf8.as_bytes())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        h.get("x-portcullis-cookie").map(|v| v.as_bytes()),
        Some("lang=José".as_bytes())
    );
}

#[tokio::test]
async fn grpc_cookie_with_comma_is_forwarded_unchanged() {
    let f = fixture().await;
    let alice = login(&f.state, &f.idp, "alice", Default::default()).await;
    let mut g = Grpc::connect(f.router.clone()).await;
    let r = g
        .check(
            &check_request(
                "GET",
                "app.example.com",
                "/",
                &[("cookie", &format!("prefs=a,b; {COOKIE}={}", seal(&alice)))],
            ),
            Some(&token()),
        )
        .await;
    let Some(HttpResponse::OkResponse(ok)) = r.http_response else {
        panic!("{r:?}")
    };
    assert_eq!(header_of(&ok.headers, "cookie"), Some("prefs=a,b"));
    // Two headers merged with a comma: only our pair goes.
    let r = g
        .check(
            &check_request(
                "GET",
                "app.example.com",
                "/",
                &[(
                    "cookie",
                    &format!("x=1; {COOKIE}={},prefs=a,b", seal(&alice)),
                )],
            ),
            Some(&token()),
        )
        .await;
    let Some(HttpResponse::OkResponse(ok)) = r.http_response else {
        panic!("{r:?}")
    };
    assert_eq!(header_of(&ok.headers, "cookie"), Some("x=1; prefs=a,b"));
}

#[tokio::test]
async fn envoy_http_cookie_headers_joined_with_commas_lose_ours() {
    // Envoy's HTTP-service check carries repeated Cookie headers joined with `,`.
    let f = fixture().await;
    let alice = login(&f.state, &f.idp, "alice", Default::default()).await;
    for host in ["public.example.com", "app.example.com"] {
        let a = get(
            &f.router,
            host,
            "/",
            &[(
                "cookie",
                &format!("x=1,{COOKIE}={},prefs=a,b", seal(&alice)),
            )],
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{host}");
        assert_eq!(a.header("cookie"), Some("x=1; prefs=a,b"), "{host}");
    }
}
