//! Login-flow tests without an IdP (the IdP address is a closed loopback port): every
//! rejection path, the hand-off, cookies, user info, sign-out. The full flow against the
//! real `oidc-provider` is in `sidecar/tests/login_*.rs`.

use super::*;
use crate::bundle::{Bundle, BundleHolder};
use crate::databroker::memory::MemoryStore;
use crate::idp::{SecretString, TokenSet, VerifiedIdToken};
use crate::settings::{IdpClientSettings, LoginRoute};
use axum::body::Body;
use axum::http::Request;
use portcullis_common::Secret;
use portcullis_common::signed_url::sign_in_url;
use serde_json::json;
use tower::ServiceExt as _;

const AUTH: &str = "http://auth.test:8000";
const APP: &str = "http://app.test:8000";

fn settings() -> Settings {
    let mut s = Settings::new(Secret::from_bytes([1; 32]), Secret::from_bytes([2; 32]));
    s.authenticate_service_url = Some(AUTH.into());
    // Nothing listens on the discard port: every IdP call fails like a down IdP.
    s.idp_provider_url = Some("http://127.0.0.1:9".into());
    s.idp_client = Some(IdpClientSettings {
        client_id: "default".into(),
        client_secret: SecretString::new("secret"),
    });
    s.route_idp_clients = vec![IdpClientSettings {
        client_id: "route-b".into(),
        client_secret: SecretString::new("secret-b"),
    }];
    s.login_routes = vec![
        LoginRoute {
            from: APP.into(),
            idp_client_id: None,
        },
        LoginRoute {
            from: "https://secure.test".into(),
            idp_client_id: Some("route-b".into()),
        },
    ];
    s.insecure_server = true;
    s
}

async fn app_with(settings: Settings) -> (AppState, axum::Router) {
    let setup = setup(&settings).await.unwrap();
    let state = AppState::new(crate::AppParts {
        settings,
        store: Arc::new(MemoryStore::new()),
        idps: setup.idps,
        signer: setup.signer,
        bundle: BundleHolder::new(Bundle::new(Vec::new())),
        login: Some(setup.login),
    });
    let router = crate::router(state.clone());
    (state, router)
}

async fn app() -> (AppState, axum::Router) {
    app_with(settings()).await
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
    /// A clear, styled page — never an empty body or a bare string.
    fn assert_page(&self, status: StatusCode, needle: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert!(self.body.contains("<!DOCTYPE html>"), "{}", self.body);
        assert!(
            self.body.contains(needle),
            "expected {needle:?} in {}",
            self.body
        );
    }
}

async fn call(
    router: &axum::Router,
    method: &str,
    url: &str,
    cookie: Option<&str>,
    body: Option<&str>,
) -> Reply {
    let u = Url::parse(url).unwrap();
    let mut req = Request::builder()
        .method(method)
        .uri(&url[u.origin().ascii_serialization().len()..])
        .header(header::HOST, urls::url_authority(&u).unwrap());
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(b.to_owned())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn signed(return_url: &str) -> String {
    let key = RedirectKey::new(&Secret::from_bytes([1; 32]));
    sign_in_url(&key, AUTH, return_url, now_u64())
}

async fn make_session(state: &AppState, groups: &[&str]) -> Session {
    let claims = json!({"sub": "alice", "email": "alice@example.com", "name": "Alice <b>", "groups": groups});
    let serde_json::Value::Object(claims) = claims else {
        unreachable!()
    };
    state
        .sessions
        .create_session(NewSession {
            user_id: "alice".into(),
            id_token: VerifiedIdToken {
                raw: SecretString::new("h.p.s"),
                claims,
                expires_at: now_unix() + 60,
            },
            tokens: TokenSet {
                access_token: SecretString::new("at"),
                refresh_token: Some(SecretString::new("rt")),
                access_token_expires_at: Some(now_unix() + 60),
                id_token: None,
            },
            user_info: serde_json::Map::new(),
            client_id: "default".into(),
            lifetime: std::time::Duration::from_secs(3600),
        })
        .await
        .unwrap()
}

fn cookie_for(state: &AppState, session: &Session) -> String {
    let login = state.login.as_ref().unwrap();
    let (value, _) = login.session_cookie(session, "app.test:8000").unwrap();
    format!("_pomerium={value}")
}

fn handoff_token(state: &AppState, session_id: &str, host: &str, ret: &str, ttl: i64) -> String {
    state
        .login
        .as_ref()
        .unwrap()
        .flow
        .seal_handoff(&Handoff {
            id: tokens::random_b64(16).unwrap(),
            session_id: session_id.into(),
            host: host.into(),
            return_url: ret.into(),
            expires_at: now_unix() + ttl,
        })
        .unwrap()
}

#[test]
fn state_tokens_detect_tampering_and_expiry() {
    let k = FlowKeys::new(&Secret::from_bytes([1; 32]), &Secret::from_bytes([2; 32]));
    let st = tokens::LoginState {
        nonce: "n0nce-n0nce".into(),
        return_url: "http://app.test/x".into(),
        host: "app.test".into(),
        client_id: "c".into(),
        programmatic: false,
        expires_at: 1_000,
    };
    let sealed = k.seal_state(&st).unwrap();
    assert_eq!(k.open_state(&sealed, 999).unwrap(), st);
    assert_eq!(k.open_state(&sealed, 1_000), Err(TokenError::Expired));
    // Flip one character of the body: the MAC no longer matches.
    let mut bytes = sealed.clone().into_bytes();
    bytes[3] = if bytes[3] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        k.open_state(&String::from_utf8(bytes).unwrap(), 0),
        Err(TokenError::Invalid)
    );
    assert_eq!(k.open_state("garbage", 0), Err(TokenError::Invalid));
    assert_eq!(
        k.open_state(&"a.".repeat(10_000), 0),
        Err(TokenError::Invalid)
    );
    // Another cookie_secret does not accept it.
    let other = FlowKeys::new(&Secret::from_bytes([9; 32]), &Secret::from_bytes([2; 32]));
    assert_eq!(other.open_state(&sealed, 0), Err(TokenError::Invalid));
    // PKCE verifier and nonce are derived, distinct, and valid PKCE verifiers.
    let v = k.pkce_verifier(&sealed);
    assert_eq!(v.len(), 43);
    assert_ne!(v, k.oidc_nonce(&sealed));
    assert!(k.check_csrf_cookie(&sealed, &k.csrf_cookie_value(&sealed)));
    assert!(!k.check_csrf_cookie(&sealed, &other.csrf_cookie_value(&sealed)));
    assert!(k.check_sign_out_token("sid", &k.sign_out_token("sid")));
    assert!(!k.check_sign_out_token("sid2", &k.sign_out_token("sid")));
}

#[test]
fn handoff_tokens_detect_tampering_and_expiry() {
    let k = FlowKeys::new(&Secret::from_bytes([1; 32]), &Secret::from_bytes([2; 32]));
    let h = Handoff {
        id: "id".into(),
        session_id: "sid".into(),
        host: "app.test".into(),
        return_url: "http://app.test/".into(),
        expires_at: 100,
    };
    let t = k.seal_handoff(&h).unwrap();
    assert_eq!(k.open_handoff(&t, 99).unwrap(), h);
    assert_eq!(k.open_handoff(&t, 100), Err(TokenError::Expired));
    let mut bytes = t.into_bytes();
    let mid = bytes.len() / 2;
    bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        k.open_handoff(&String::from_utf8(bytes).unwrap(), 0),
        Err(TokenError::Invalid)
    );
    assert_eq!(k.open_handoff("", 0), Err(TokenError::Invalid));
    // The hand-off key comes from shared_secret: another one cannot open it.
    let t = k.seal_handoff(&h).unwrap();
    let other = FlowKeys::new(&Secret::from_bytes([1; 32]), &Secret::from_bytes([3; 32]));
    assert_eq!(other.open_handoff(&t, 0), Err(TokenError::Invalid));
}

#[test]
fn hostile_return_urls_are_rejected() {
    for bad in [
        "javascript:alert(1)",
        "data:text/html,hi",
        "//evil.test/",
        "/relative",
        "http:evil.test",
        "http:/evil.test",
        "http://app.test@evil.test/",
        "http://user:pw@app.test/",
        "http://evil.test\\@app.test/",
        "http://app.test\\evil",
        "http://app.test/\nSet-Cookie:x",
        " http://app.test/",
        "",
    ] {
        assert!(
            urls::parse_redirect_target(bad).is_none(),
            "{bad:?} accepted"
        );
    }
    let ok = urls::parse_redirect_target("HTTP://App.Test:80/p?q=1#f").unwrap();
    assert_eq!(urls::url_authority(&ok).unwrap(), "app.test");
    assert!(urls::host_under_domain(
        "a.b.example.com:8443",
        ".example.com"
    ));
    assert!(urls::host_under_domain("example.com", "example.com"));
    assert!(!urls::host_under_domain("badexample.com", "example.com"));
    assert!(!urls::host_under_domain("example.com.evil", "example.com"));
    let wl = vec!["localhost".to_owned()];
    assert!(urls::programmatic_allowed(
        &Url::parse("http://localhost:1234/cb").unwrap(),
        &wl
    ));
    assert!(!urls::programmatic_allowed(
        &Url::parse("http://localhost.evil.test/cb").unwrap(),
        &wl
    ));
    assert!(!urls::programmatic_allowed(
        &Url::parse("http://evil.test/localhost").unwrap(),
        &wl
    ));
}

#[tokio::test]
async fn sign_in_rejects_forged_and_foreign_return_urls() {
    let (_, app) = app().await;
    let forged =
        signed(&format!("{APP}/a")).replace("pomerium_signature=", "pomerium_signature=AAAA");
    call(&app, "GET", &forged, None, None)
        .await
        .assert_page(StatusCode::BAD_REQUEST, "invalid or has expired");
    // Correctly signed (a filter signed it), but not a configured route.
    for target in [
        "http://evil.test/".to_owned(),
        format!("{APP}@evil.test/"),
        "http://app.test:8001/".to_owned(), // another port is another host
        "http://app.test.evil.test:8000/".to_owned(),
        "javascript:alert(1)//http://app.test:8000/".to_owned(),
        "http://evil.test\\@app.test:8000/".to_owned(),
    ] {
        let r = call(&app, "GET", &signed(&target), None, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{target}: {}", r.body);
        assert!(r.body.contains("<!DOCTYPE html>"));
        assert!(r.location().is_empty());
    }
    // On a route host, the same link is moved to the authenticate host unchanged.
    let link = signed(&format!("{APP}/a"));
    let on_route = link.replace(AUTH, APP);
    let r = call(&app, "GET", &on_route, None, None).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.location(), link);
    // Missing parameters.
    call(
        &app,
        "GET",
        &format!("{AUTH}/.pomerium/sign_in"),
        None,
        None,
    )
    .await
    .assert_page(StatusCode::BAD_REQUEST, "no return address");
    // Valid link, IdP down: a clear 502 page, not a 500.
    call(&app, "GET", &signed(&format!("{APP}/a")), None, None)
        .await
        .assert_page(StatusCode::BAD_GATEWAY, "identity provider");
}

#[tokio::test]
async fn callback_rejects_tampered_state_and_missing_csrf_cookie() {
    let (state, app) = app().await;
    let login = state.login.as_ref().unwrap();
    let st = tokens::LoginState {
        nonce: "abcdefghijkl".into(),
        return_url: format!("{APP}/"),
        host: "app.test:8000".into(),
        client_id: "default".into(),
        programmatic: false,
        expires_at: now_unix() + 60,
    };
    let sealed = login.flow.seal_state(&st).unwrap();
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    // Tampered state.
    let tampered = sealed.replacen('e', "f", 1);
    call(
        &app,
        "GET",
        &format!("{AUTH}/oauth2/callback?code=c&state={}", enc(&tampered)),
        None,
        None,
    )
    .await
    .assert_page(StatusCode::BAD_REQUEST, "tampered");
    // Authentic state without the browser's CSRF cookie (login CSRF).
    call(
        &app,
        "GET",
        &format!("{AUTH}/oauth2/callback?code=c&state={}", enc(&sealed)),
        None,
        None,
    )
    .await
    .assert_page(StatusCode::BAD_REQUEST, "not started in this browser");
    // A CSRF cookie for another state does not help.
    let other = login.flow.csrf_cookie_value("other-state");
    let cookie = format!("{}={other}", login.csrf_cookie_name(&st.nonce));
    call(
        &app,
        "GET",
        &format!("{AUTH}/oauth2/callback?code=c&state={}", enc(&sealed)),
        Some(&cookie),
        None,
    )
    .await
    .assert_page(StatusCode::BAD_REQUEST, "not started in this browser");
    // The right cookie gets past CSRF to the (down) IdP: 502, not 400.
    let cookie = format!(
        "{}={}",
        login.csrf_cookie_name(&st.nonce),
        login.flow.csrf_cookie_value(&sealed)
    );
    call(
        &app,
        "GET",
        &format!("{AUTH}/oauth2/callback?code=c&state={}", enc(&sealed)),
        Some(&cookie),
        None,
    )
    .await
    .assert_page(StatusCode::BAD_GATEWAY, "identity provider");
    // An IdP error response.
    call(
        &app,
        "GET",
        &format!("{AUTH}/oauth2/callback?error=access_denied&state=x"),
        None,
        None,
    )
    .await
    .assert_page(StatusCode::FORBIDDEN, "Sign-in refused");
    assert!(state.metrics.login_failures.get() >= 4);
}

#[tokio::test]
async fn handoff_sets_the_cookie_once_and_only_on_its_host() {
    let (state, app) = app().await;
    let session = make_session(&state, &["admins"]).await;
    let ret = format!("{APP}/deep/path?x=1");
    let token = handoff_token(&state, &session.id, "app.test:8000", &ret, 60);
    // Wrong host.
    call(
        &app,
        "GET",
        &format!("https://secure.test/.pomerium/callback?pomerium_handoff={token}"),
        None,
        None,
    )
    .await
    .assert_page(StatusCode::BAD_REQUEST, "another application");
    // Right host: cookie + redirect.
    let r = call(
        &app,
        "GET",
        &format!("{APP}/.pomerium/callback?pomerium_handoff={token}"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
    assert_eq!(r.location(), ret);
    let cookies = r.set_cookies();
    assert_eq!(cookies.len(), 1);
    let c = &cookies[0];
    assert!(c.starts_with("_pomerium="), "{c}");
    assert!(
        c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Path=/"),
        "{c}"
    );
    assert!(!c.contains("Secure"), "insecure_server: no Secure: {c}");
    assert!(!c.contains("Domain="), "{c}");
    let max_age: i64 = c
        .split("Max-Age=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3590..=3600).contains(&max_age), "{max_age}");
    // The cookie names the session.
    let value = c
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("_pomerium=");
    let key = CookieKey::new(&Secret::from_bytes([2; 32]));
    let opened = cookie::open(&key, "_pomerium", value, now_u64()).unwrap();
    assert_eq!(opened.session_id.as_str(), session.id);
    // Replay.
    call(
        &app,
        "GET",
        &format!("{APP}/.pomerium/callback?pomerium_handoff={token}"),
        None,
        None,
    )
    .await
    .assert_page(StatusCode::BAD_REQUEST, "already used");
    // Tampered / expired / for a deleted session.
    let t = handoff_token(&state, &session.id, "app.test:8000", &ret, 60);
    let tampered = format!("{}A{}", &t[..10], &t[11..]);
    call(
        &app,
        "GET",
        &format!("{APP}/.pomerium/callback?pomerium_handoff={tampered}"),
        None,
        None,
    )
    .await
    .assert_page(StatusCode::BAD_REQUEST, "tampered");
    let t = handoff_token(&state, &session.id, "app.test:8000", &ret, -1);
    call(
        &app,
        "GET",
        &format!("{APP}/.pomerium/callback?pomerium_handoff={t}"),
        None,
        None,
    )
    .await
    .assert_page(StatusCode::BAD_REQUEST, "expired");
    // A hand-off whose return URL points elsewhere is refused even though it is authentic.
    let t = handoff_token(
        &state,
        &session.id,
        "app.test:8000",
        "http://evil.test/",
        60,
    );
    call(
        &app,
        "GET",
        &format!("{APP}/.pomerium/callback?pomerium_handoff={t}"),
        None,
        None,
    )
    .await
    .assert_page(
        StatusCode::BAD_REQUEST,
        "not one of the configured applications",
    );
    state.sessions.delete(&session.id).await.unwrap();
    let t = handoff_token(&state, &session.id, "app.test:8000", &ret, 60);
    call(
        &app,
        "GET",
        &format!("{APP}/.pomerium/callback?pomerium_handoff={t}"),
        None,
        None,
    )
    .await
    .assert_page(StatusCode::UNAUTHORIZED, "session ended");
}

#[tokio::test]
async fn cookie_attributes_follow_settings() {
    let mut s = settings();
    s.insecure_server = false;
    s.cookie_domain = Some(".test".into());
    s.cookie_name = "_portcullis".into();
    s.cookie_expire = std::time::Duration::from_secs(600);
    s.cookie_http_only = false;
    let (state, app) = app_with(s).await;
    let session = make_session(&state, &[]).await;
    let token = handoff_token(&state, &session.id, "app.test:8000", &format!("{APP}/"), 60);
    let r = call(
        &app,
        "GET",
        &format!("{APP}/.pomerium/callback?pomerium_handoff={token}"),
        None,
        None,
    )
    .await;
    let c = &r.set_cookies()[0];
    assert!(c.starts_with("_portcullis="), "{c}");
    assert!(
        c.contains("; Domain=test") && c.contains("; Secure") && !c.contains("HttpOnly"),
        "{c}"
    );
    let max_age: i64 = c
        .split("Max-Age=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (590..=600).contains(&max_age),
        "cookie_expire caps the cookie: {max_age}"
    );
}

#[tokio::test]
async fn user_info_page_shows_exactly_the_session_claims() {
    let (state, app) = app().await;
    let session = make_session(&state, &["admins", "<script>x</script>"]).await;
    let cookie = cookie_for(&state, &session);
    let r = call(
        &app,
        "GET",
        &format!("{APP}/.pomerium/"),
        Some(&cookie),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("alice@example.com"));
    assert!(r.body.contains("<li>admins</li>"));
    // Escaped, never raw.
    assert!(!r.body.contains("<script>x</script>"));
    assert!(r.body.contains("&lt;script&gt;x&lt;/script&gt;"));
    assert!(r.body.contains("Alice &lt;b&gt;"));
    assert!(r.body.contains(&login_csrf(&state, &session)));
    assert_eq!(
        r.headers
            .get(header::CONTENT_SECURITY_POLICY)
            .unwrap()
            .to_str()
            .unwrap()
            .split(';')
            .next(),
        Some("default-src 'none'")
    );
    // JSON view = stored claims.
    let r = call(
        &app,
        "GET",
        &format!("{APP}/.pomerium/user"),
        Some(&cookie),
        None,
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v, serde_json::Value::Object(session.claims.clone()));
    // Tampered / missing cookie: a clear 401 page.
    let tampered = format!(
        "{}x",
        cookie.trim_end_matches(|c: char| c != '=').to_owned() + "AAAA"
    );
    call(
        &app,
        "GET",
        &format!("{APP}/.pomerium/"),
        Some(&tampered),
        None,
    )
    .await
    .assert_page(StatusCode::UNAUTHORIZED, "no active session");
    call(&app, "GET", &format!("{APP}/.pomerium/"), None, None)
        .await
        .assert_page(StatusCode::UNAUTHORIZED, "no active session");
    // A planted bad cookie before the real one does not shadow it.
    let both = format!("_pomerium=garbage; {cookie}");
    assert_eq!(
        call(&app, "GET", &format!("{APP}/.pomerium/"), Some(&both), None)
            .await
            .status,
        StatusCode::OK
    );
}

fn login_csrf(state: &AppState, session: &Session) -> String {
    state
        .login
        .as_ref()
        .unwrap()
        .flow
        .sign_out_token(&session.id)
}

#[tokio::test]
async fn sign_out_requires_the_csrf_token_and_deletes_the_session() {
    let (state, app) = app().await;
    let session = make_session(&state, &[]).await;
    let cookie = cookie_for(&state, &session);
    let mut changes = state.store.subscribe();
    changes.borrow_and_update();
    // No token / wrong token: refused, session kept.
    call(
        &app,
        "POST",
        &format!("{APP}/.pomerium/sign_out"),
        Some(&cookie),
        Some(""),
    )
    .await
    .assert_page(StatusCode::BAD_REQUEST, "security token");
    call(
        &app,
        "POST",
        &format!("{APP}/.pomerium/sign_out"),
        Some(&cookie),
        Some("pomerium_csrf=nope"),
    )
    .await
    .assert_page(StatusCode::BAD_REQUEST, "security token");
    call(
        &app,
        "GET",
        &format!("{APP}/.pomerium/sign_out"),
        Some(&cookie),
        None,
    )
    .await
    .assert_page(StatusCode::BAD_REQUEST, "security token");
    assert!(state.sessions.get(&session.id).await.unwrap().is_some());
    // With the page's token: deleted (a change the filters see), cookie cleared, and on to
    // the signed-out page (the IdP is down, so no end_session_endpoint is known).
    let body = format!("pomerium_csrf={}", login_csrf(&state, &session));
    let r = call(
        &app,
        "POST",
        &format!("{APP}/.pomerium/sign_out"),
        Some(&cookie),
        Some(&body),
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
    assert_eq!(r.location(), format!("{AUTH}/.pomerium/signed_out"));
    assert!(
        r.set_cookies()[0].starts_with("_pomerium=; Path=/; Max-Age=0"),
        "{:?}",
        r.set_cookies()
    );
    assert!(state.sessions.get(&session.id).await.unwrap().is_none());
    assert!(changes.has_changed().unwrap());
    let ch = state.store.changes_since(0).await.unwrap();
    assert!(ch.changes.iter().any(|c| c.id == session.id && c.deleted));
    // GET with the token works too (Pomerium's link form).
    let session = make_session(&state, &[]).await;
    let cookie = cookie_for(&state, &session);
    let url = format!(
        "{APP}/.pomerium/sign_out?pomerium_csrf={}",
        login_csrf(&state, &session)
    );
    assert_eq!(
        call(&app, "GET", &url, Some(&cookie), None).await.status,
        StatusCode::FOUND
    );
    assert!(state.sessions.get(&session.id).await.unwrap().is_none());
    assert_eq!(
        call(
            &app,
            "GET",
            &format!("{AUTH}/.pomerium/signed_out"),
            None,
            None
        )
        .await
        .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn programmatic_login_is_restricted_to_the_whitelist() {
    let (_, app) = app().await;
    let r = call(
        &app,
        "GET",
        &format!(
            "{APP}/.pomerium/api/v1/login?pomerium_redirect_uri=http%3A%2F%2Flocalhost%3A9999%2Fcb"
        ),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.starts_with(&format!(
        "{AUTH}/.pomerium/sign_in?pomerium_redirect_uri=http%3A%2F%2Flocalhost%3A9999%2Fcb"
    )));
    assert!(r.body.contains("pomerium_programmatic=app.test%3A8000"));
    // The sign-in URL it returns is accepted (and goes on to the IdP, which is down here).
    call(&app, "GET", &r.body, None, None)
        .await
        .assert_page(StatusCode::BAD_GATEWAY, "identity provider");
    // ...but not with another CLI URL spliced in.
    let spliced = r.body.replace("localhost%3A9999", "localhost%3A1111");
    call(&app, "GET", &spliced, None, None)
        .await
        .assert_page(StatusCode::BAD_REQUEST, "invalid or has expired");
    for bad in [
        "http%3A%2F%2Fevil.test%2Fcb",
        "http%3A%2F%2Flocalhost.evil.test%2F",
        "javascript%3Aalert(1)",
    ] {
        call(
            &app,
            "GET",
            &format!("{APP}/.pomerium/api/v1/login?pomerium_redirect_uri={bad}"),
            None,
            None,
        )
        .await
        .assert_page(StatusCode::BAD_REQUEST, "pomerium_redirect_uri");
    }
    call(
        &app,
        "GET",
        "http://unknown.test/.pomerium/api/v1/login?pomerium_redirect_uri=http%3A%2F%2Flocalhost%2F",
        None,
        None,
    )
    .await
    .assert_page(StatusCode::BAD_REQUEST, "not a configured application");
}

#[tokio::test]
async fn jwks_publishes_the_signing_key() {
    let (state, app) = app().await;
    let r = call(&app, "GET", &format!("{AUTH}{JWKS_PATH}"), None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v, state.signer.jwks());
    assert_eq!(v["keys"][0]["alg"], "ES256");
}

#[tokio::test]
async fn setup_refuses_bad_settings() {
    let mut s = settings();
    s.idp_provider_url = Some("http://idp.example.com".into());
    assert!(matches!(
        setup(&s).await,
        Err(StartupError::Setting {
            option: "idp_provider_url",
            ..
        })
    ));
    let mut s = settings();
    s.authenticate_service_url = None;
    assert!(matches!(
        setup(&s).await,
        Err(StartupError::Setting {
            option: "authenticate_service_url",
            ..
        })
    ));
    let mut s = settings();
    s.signing_key = Some(SecretString::new("not a key"));
    assert!(matches!(
        setup(&s).await,
        Err(StartupError::Setting {
            option: "signing_key",
            ..
        })
    ));
    // Without an IdP the sidecar still starts; sign-in says it is not configured.
    let mut s = settings();
    s.idp_provider_url = None;
    let (_, app) = app_with(s).await;
    call(&app, "GET", &signed(&format!("{APP}/")), None, None)
        .await
        .assert_page(StatusCode::SERVICE_UNAVAILABLE, "not configured");
}

#[tokio::test]
async fn signed_out_page_or_configured_redirect() {
    let (_, app) = app().await;
    let r = call(
        &app,
        "GET",
        &format!("{AUTH}/.pomerium/signed_out"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("You are signed out"));
    let mut s = settings();
    s.signout_redirect_url = Some("https://intranet.test/bye".into());
    let (_, app) = app_with(s).await;
    let r = call(
        &app,
        "GET",
        &format!("{AUTH}/.pomerium/signed_out"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.location(), "https://intranet.test/bye");
}

#[tokio::test]
async fn a_session_of_one_client_never_reaches_a_route_of_another_client() {
    let (state, app) = app().await;
    // A session of the default client, signed in on the authenticate host.
    let session = make_session(&state, &["admins"]).await;
    let login = state.login.as_ref().unwrap();
    let (value, _) = login.session_cookie(&session, "auth.test:8000").unwrap();
    let auth_cookie = format!("_pomerium={value}");
    // Sign-in for the default client's route: single sign-on, straight to a hand-off.
    let r = call(
        &app,
        "GET",
        &signed(&format!("{APP}/a")),
        Some(&auth_cookie),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
    assert!(r.location().starts_with(APP), "{}", r.location());
    // Sign-in for route B (its own client): no reuse, a full login with client B (the
    // IdP is down here, so that login fails with 502 instead of handing off A's session).
    call(
        &app,
        "GET",
        &signed("https://secure.test/x"),
        Some(&auth_cookie),
        None,
    )
    .await
    .assert_page(StatusCode::BAD_GATEWAY, "identity provider");
    // A hand-off of the default client's session to route B is refused.
    let t = handoff_token(
        &state,
        &session.id,
        "secure.test",
        "https://secure.test/x",
        60,
    );
    call(
        &app,
        "GET",
        &format!("https://secure.test/.pomerium/callback?pomerium_handoff={t}"),
        None,
        None,
    )
    .await
    .assert_page(StatusCode::BAD_REQUEST, "another application");
}

fn wildcard_settings() -> Settings {
    let mut s = settings();
    s.login_routes.push(LoginRoute {
        from: "http://*.wild.test:8000".into(),
        idp_client_id: None,
    });
    s.login_routes.push(LoginRoute {
        from: "http://exact.wild.test:8000".into(),
        idp_client_id: Some("route-b".into()),
    });
    s
}

#[tokio::test]
async fn wildcard_route_hosts_can_sign_in() {
    let (state, app) = app_with(wildcard_settings()).await;
    let login = state.login.as_ref().unwrap();
    // `*` is any run of characters; the answer names the concrete host, never the pattern.
    let r = login.route("a.wild.test:8000").unwrap();
    assert_eq!(
        (r.host.as_str(), r.client_id.as_str()),
        ("a.wild.test:8000", "default")
    );
    assert_eq!(
        login.route("x.y.wild.test:8000").unwrap().host,
        "x.y.wild.test:8000"
    );
    // An exact host wins over the wildcard (Pomerium's virtual hosts).
    assert_eq!(
        login.route("exact.wild.test:8000").unwrap().client_id,
        "route-b"
    );
    for other in [
        "wild.test:8000",
        "a.wild.test:8001",
        "a.wild.test.evil:8000",
        "evil.test",
    ] {
        assert!(login.route(other).is_none(), "{other}");
    }
    // Sign-in is no longer refused with 400: it goes to the IdP (down here: 502).
    call(
        &app,
        "GET",
        &signed("http://a.wild.test:8000/x"),
        None,
        None,
    )
    .await
    .assert_page(StatusCode::BAD_GATEWAY, "identity provider");
    call(
        &app,
        "GET",
        &signed("http://a.wild.test.evil:8000/x"),
        None,
        None,
    )
    .await
    .assert_page(StatusCode::BAD_REQUEST, "configured applications");
    // The hand-off works on the concrete host and only there.
    let session = make_session(&state, &[]).await;
    let ret = "http://a.wild.test:8000/x";
    let t = handoff_token(&state, &session.id, "a.wild.test:8000", ret, 60);
    let wrong = call(
        &app,
        "GET",
        &format!("http://b.wild.test:8000/.pomerium/callback?pomerium_handoff={t}"),
        None,
        None,
    )
    .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    let r = call(
        &app,
        "GET",
        &format!("http://a.wild.test:8000/.pomerium/callback?pomerium_handoff={t}"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.body);
    assert_eq!(r.location(), ret);
}

#[tokio::test]
async fn login_routes_follow_a_config_reload() {
    use base64::Engine as _;
    let dir = std::env::temp_dir().join(format!(
        "portcullis-login-reload-{}-{}",
        std::process::id(),
        tokens::random_b64(6).unwrap()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    let b64 = |b: [u8; 32]| base64::engine::general_purpose::STANDARD.encode(b);
    let yaml = format!(
        "shared_secret: {}\ncookie_secret: {}\nauthenticate_service_url: http://auth.test:8000\n\
         idp_provider_url: http://127.0.0.1:9\nidp_client_id: default\nidp_client_secret: s\n\
         insecure_server: true\nroutes:\n  - from: http://new.test:8000\n    to: http://127.0.0.1:9\n    allow_public_unauthenticated_access: true\n",
        b64([1; 32]),
        b64([2; 32])
    );
    std::fs::write(&path, yaml).unwrap();
    let mut s = settings();
    s.config_file = Some(path.clone());
    let (state, app) = app_with(s).await;
    let login = state.login.clone().unwrap();
    assert!(login.route("new.test:8000").is_none());
    call(&app, "GET", &signed("http://new.test:8000/"), None, None)
        .await
        .assert_page(StatusCode::BAD_REQUEST, "configured applications");
    // A policy reload (the bundle changes) refreshes the login routes.
    let watcher = tokio::spawn(watch_routes(state.clone()));
    tokio::task::yield_now().await;
    state
        .bundle
        .replace(Bundle::unchecked(b"reloaded".to_vec(), "v-reloaded"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while login.route("new.test:8000").is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    watcher.abort();
    let r = login.route("new.test:8000").expect("reloaded route");
    assert_eq!(r.client_id, "default");
    assert!(
        login.route("app.test:8000").is_none(),
        "removed routes are gone"
    );
    call(&app, "GET", &signed("http://new.test:8000/"), None, None)
        .await
        .assert_page(StatusCode::BAD_GATEWAY, "identity provider");
    // A broken file keeps the routes in service.
    std::fs::write(&path, "routes: [").unwrap();
    assert!(reload_routes_from_file(&login, &path).is_err());
    assert!(login.route("new.test:8000").is_some());
    let _ = std::fs::remove_dir_all(&dir);
}
