//! The internal API through the real router (`router(state).oneshot(req)`).

use crate::support::*;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use portcullis_common::api::{self, ChangesResponse, SessionResponse};
use prost::Message;
use serde_json::json;
use sidecar::bundle::{self, BundleSource};
use std::time::{Duration, Instant};
use tower::ServiceExt;

fn token() -> String {
    api::api_token(&portcullis_common::Secret::from_bytes(SHARED))
}

async fn get(
    state: &sidecar::AppState,
    uri: &str,
    auth: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::get(uri);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = sidecar::router(state.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap()
        .to_vec();
    (status, headers, body)
}

async fn authed(
    state: &sidecar::AppState,
    uri: &str,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    get(state, uri, Some(&format!("Bearer {}", token()))).await
}

#[tokio::test]
async fn every_internal_endpoint_requires_the_token() {
    let idp = FakeIdp::new();
    let state = app(memory_store(), idp, settings());
    let other = api::api_token(&portcullis_common::Secret::from_bytes([1; 32]));
    for uri in [
        "/.portcullis/v1/session?id=aaaaaaaaaaaaaaaaaaaa&aud=x",
        "/.portcullis/v1/changes?since=0",
        "/.portcullis/v1/bundle",
        "/.portcullis/v1/changes?since=notanumber",
    ] {
        for auth in [
            None,
            Some("Bearer nope".to_owned()),
            Some(format!("Bearer {other}")),
            Some(token()),
        ] {
            let (status, _, body) = get(&state, uri, auth.as_deref()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri} with {auth:?}");
            assert_eq!(body, b"unauthorized");
        }
    }
    // The shared secret itself is not the token either.
    let (status, _, _) = get(
        &state,
        "/.portcullis/v1/bundle",
        Some("Bearer CwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCws="),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn session_view_and_cached_identity_jwt() {
    let idp = FakeIdp::new();
    idp.add_user("u1", "U1@Example.com", &["admins", "users"]);
    let mut st = settings();
    st.jwt_claims_headers = vec![
        ("X-Groups".into(), "groups".into()),
        ("x-email".into(), "email".into()),
    ];
    let state = app(memory_store(), idp.clone(), st);
    let s = login(&state, &idp, "u1", obj(json!({"org": {"unit": "eng"}}))).await;

    let uri = format!("/.portcullis/v1/session?id={}&aud=app.example.com", s.id);
    let (status, headers, body) = authed(&state, &uri).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], api::CONTENT_TYPE_PROTOBUF);
    let r = SessionResponse::decode(body.as_slice()).unwrap();
    assert!(r.found);
    let view = r.view.unwrap();
    assert_eq!(view.session_id, s.id);
    assert_eq!(view.user_id, "u1");
    assert_eq!(
        view.email, "U1@Example.com",
        "email exactly as the IdP sent it"
    );
    assert_eq!(view.version, s.version);
    assert_eq!(
        view.client_id, CLIENT,
        "the view names the session's OAuth client (routes with their own client compare it)"
    );
    assert_eq!(
        view_strings(&view, "groups").unwrap(),
        vec!["admins", "users"]
    );
    assert_eq!(view_strings(&view, "org.unit").unwrap(), vec!["eng"]);
    let hdrs: Vec<(String, String)> = view
        .claim_headers
        .iter()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    assert_eq!(
        hdrs,
        vec![
            ("x-groups".into(), "admins,users".into()),
            ("x-email".into(), "U1@Example.com".into())
        ]
    );
    // No token ever leaves the sidecar.
    for needle in [&b"access-token-"[..], b"refresh-token-", b"raw-id-token-"] {
        assert!(!contains(&body, needle));
    }
    let claims = jwt_payload(&r.identity_jwt);
    assert_eq!(claims["aud"], "app.example.com");
    assert_eq!(claims["sid"], json!(s.id));
    assert!(r.jwt_expires_at > sidecar::databroker::now_unix());

    // Cached per (session, version, audience): no second signature…
    let (_, _, body2) = authed(&state, &uri).await;
    assert_eq!(
        SessionResponse::decode(body2.as_slice())
            .unwrap()
            .identity_jwt,
        r.identity_jwt
    );
    assert_eq!(state.metrics.jwt_signatures.get(), 1);
    // …another audience is another signature…
    authed(
        &state,
        &format!("/.portcullis/v1/session?id={}&aud=other.example.com", s.id),
    )
    .await;
    assert_eq!(state.metrics.jwt_signatures.get(), 2);
    // …and a changed session is never served its old JWT.
    idp.set_groups("u1", &["users"]);
    sidecar::identity::process_session(&state, &s.id, sidecar::databroker::now_unix() + 601)
        .await
        .unwrap();
    let (_, _, body3) = authed(&state, &uri).await;
    let r3 = SessionResponse::decode(body3.as_slice()).unwrap();
    assert_eq!(jwt_payload(&r3.identity_jwt)["groups"], json!(["users"]));
    assert_eq!(
        view_strings(r3.view.as_ref().unwrap(), "groups").unwrap(),
        vec!["users"]
    );
    assert_eq!(state.metrics.jwt_signatures.get(), 3);
}

#[tokio::test]
async fn unknown_malformed_and_deleted_sessions_are_not_found() {
    let idp = FakeIdp::new();
    idp.add_user("u2", "u2@example.com", &[]);
    let state = app(memory_store(), idp.clone(), settings());
    let s = login(&state, &idp, "u2", Default::default()).await;
    state.sessions.delete(&s.id).await.unwrap();
    for id in [
        s.id.as_str(),
        "unknownunknownunknown",
        "short",
        "../../etc/passwd",
        "%00%ff",
        "",
    ] {
        let (status, _, body) =
            authed(&state, &format!("/.portcullis/v1/session?id={id}&aud=a")).await;
        assert_eq!(status, StatusCode::OK, "{id}");
        let r = SessionResponse::decode(body.as_slice()).unwrap();
        assert!(!r.found);
        assert!(r.view.is_none() && r.identity_jwt.is_empty());
    }
    let (status, _, _) = authed(&state, &format!("/.portcullis/v1/session?id={}", s.id)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = authed(&state, "/.portcullis/v1/changes?since=-1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn changes_long_poll_wakes_on_a_change() {
    let idp = FakeIdp::new();
    idp.add_user("u3", "u3@example.com", &["g"]);
    let state = app(memory_store(), idp.clone(), settings());
    let s = login(&state, &idp, "u3", Default::default()).await;

    // Cursor 0 is a cursor like any other: the history since the start.
    let (_, _, body) = authed(&state, "/.portcullis/v1/changes?since=0&wait_ms=5000").await;
    let first = ChangesResponse::decode(body.as_slice()).unwrap();
    assert_eq!(first.version, s.version + 1, "session + user record");
    assert_eq!(first.changed, vec![s.id.clone()]);
    assert!(!first.reset);
    assert_eq!(first.bundle_version, state.bundle.current().version);

    // Nothing new: the poll waits for the full wait_ms.
    let t = Instant::now();
    let (_, _, body) = authed(
        &state,
        &format!(
            "/.portcullis/v1/changes?since={}&wait_ms=300",
            first.version
        ),
    )
    .await;
    assert!(t.elapsed() >= Duration::from_millis(290));
    let r = ChangesResponse::decode(body.as_slice()).unwrap();
    assert_eq!(r.version, first.version);
    assert!(r.changed.is_empty() && r.deleted.is_empty());

    // A sign-out during the poll answers it at once.
    let poll = {
        let state = state.clone();
        let uri = format!(
            "/.portcullis/v1/changes?since={}&wait_ms=10000",
            first.version
        );
        tokio::spawn(async move {
            let t = Instant::now();
            let (_, _, body) = authed(&state, &uri).await;
            (
                t.elapsed(),
                ChangesResponse::decode(body.as_slice()).unwrap(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    state.sessions.delete(&s.id).await.unwrap();
    let (elapsed, r) = tokio::time::timeout(Duration::from_secs(3), poll)
        .await
        .unwrap()
        .unwrap();
    assert!(
        elapsed < Duration::from_secs(2),
        "long-poll woke after {elapsed:?}"
    );
    assert_eq!(r.deleted, vec![s.id.clone()]);
    assert!(r.changed.is_empty());
    assert!(r.version > first.version);

    // A new session shows up as changed; user-record changes are not reported.
    let s2 = login(&state, &idp, "u3", Default::default()).await;
    let (_, _, body) = authed(
        &state,
        &format!("/.portcullis/v1/changes?since={}", r.version),
    )
    .await;
    let r2 = ChangesResponse::decode(body.as_slice()).unwrap();
    assert_eq!(r2.changed, vec![s2.id.clone()]);
    // A cursor from another life (memory store restarted) → reset.
    let (_, _, body) = authed(&state, "/.portcullis/v1/changes?since=999999").await;
    assert!(ChangesResponse::decode(body.as_slice()).unwrap().reset);
}

#[tokio::test]
async fn bundle_is_served_and_reloads_wake_the_change_stream() {
    let dir = TempDir::new("bundle");
    let path = dir.0.join("config.yaml");
    std::fs::write(&path, config_yaml("admins")).unwrap();
    let source = BundleSource::Config(path.clone());
    let idp = FakeIdp::new();
    let state = app(memory_store(), idp, settings());
    assert!(bundle::reload(&state.bundle, &source, &state.metrics));

    let (status, headers, body) = authed(&state, "/.portcullis/v1/bundle").await;
    assert_eq!(status, StatusCode::OK);
    let v1 = headers[api::HEADER_BUNDLE_VERSION]
        .to_str()
        .unwrap()
        .to_owned();
    // The served bytes are a valid bundle whose own version is the advertised one.
    let engine = policy_compiler::eval::Engine::from_bytes(&body).unwrap();
    assert_eq!(engine.version(), v1);
    assert_eq!(engine.route_count(), 1);
    assert_eq!(v1, state.bundle.current().version);

    // A long poll with nothing else happening is answered by a bundle change.
    let idp = FakeIdp::new();
    idp.add_user("u", "u@example.com", &[]);
    login(&state, &idp, "u", Default::default()).await;
    let cursor = *state.store.subscribe().borrow();
    let poll = {
        let state = state.clone();
        let uri = format!("/.portcullis/v1/changes?since={cursor}&wait_ms=10000&bundle={v1}");
        tokio::spawn(async move {
            let t = Instant::now();
            let r = authed(&state, &uri).await;
            (t.elapsed(), r)
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    std::fs::write(&path, config_yaml("operators")).unwrap();
    assert!(bundle::reload(&state.bundle, &source, &state.metrics));
    let (elapsed, (_, _, body)) = tokio::time::timeout(Duration::from_secs(3), poll)
        .await
        .unwrap()
        .unwrap();
    assert!(
        elapsed >= Duration::from_millis(140),
        "answered before the change"
    );
    let r = ChangesResponse::decode(body.as_slice()).unwrap();
    assert_ne!(r.bundle_version, v1);
    assert_eq!(r.bundle_version, state.bundle.current().version);
    assert_eq!(r.version, cursor);
    assert!(r.changed.is_empty() && !r.reset);
    // The caller's stale bundle version answers at once.
    let t = Instant::now();
    authed(
        &state,
        &format!("/.portcullis/v1/changes?since={cursor}&wait_ms=10000&bundle={v1}"),
    )
    .await;
    assert!(t.elapsed() < Duration::from_secs(1));
    let v2 = state.bundle.current().version.clone();

    // A broken config (bad PPL, bad YAML, missing file) keeps the bundle in service.
    for broken in [
        config_yaml("admins").replace("claim/groups", "no_such_criterion"),
        "routes: [".to_owned(),
    ] {
        std::fs::write(&path, broken).unwrap();
        assert!(!bundle::reload(&state.bundle, &source, &state.metrics));
        assert_eq!(state.bundle.current().version, v2);
    }
    std::fs::remove_file(&path).unwrap();
    assert!(!bundle::reload(&state.bundle, &source, &state.metrics));
    assert_eq!(state.metrics.bundle_reload_failures.get(), 3);
    let (_, headers, _) = authed(&state, "/.portcullis/v1/bundle").await;
    assert_eq!(headers[api::HEADER_BUNDLE_VERSION], v2.as_str());
}

#[tokio::test]
async fn policy_bundle_file_is_validated() {
    let dir = TempDir::new("bundlefile");
    let path = dir.0.join("bundle.pb");
    let loaded =
        policy_compiler::config::load_str("c.yaml", &config_yaml("admins"), &|_| None).unwrap();
    let bytes = policy_compiler::compile::compile(&loaded.config)
        .unwrap()
        .to_bytes();
    std::fs::write(&path, &bytes).unwrap();
    let source = BundleSource::File(path.clone());
    let b = bundle::load(&source).unwrap();
    assert_eq!(b.bytes.as_ref(), bytes.as_slice());
    let holder = bundle::BundleHolder::new(b.clone());
    for garbage in [&b""[..], b"\xff\xff\xff\xff", b"not a bundle at all"] {
        std::fs::write(&path, garbage).unwrap();
        assert!(bundle::load(&source).is_err());
        assert!(!bundle::reload(&holder, &source, &Default::default()));
        assert_eq!(*holder.current(), b);
    }
}

#[tokio::test]
async fn bundle_file_watcher_picks_up_changes() {
    let dir = TempDir::new("watch");
    let path = dir.0.join("config.yaml");
    std::fs::write(&path, config_yaml("one")).unwrap();
    let source = BundleSource::Config(path.clone());
    let holder = bundle::BundleHolder::new(bundle::load(&source).unwrap());
    let v1 = holder.current().version.clone();
    let task = tokio::spawn(bundle::watch_source(
        holder.clone(),
        source,
        Default::default(),
        Duration::from_millis(50),
    ));
    tokio::time::sleep(Duration::from_millis(1100)).await; // mtime granularity
    std::fs::write(&path, config_yaml("two")).unwrap();
    let mut rx = holder.subscribe();
    tokio::time::timeout(Duration::from_secs(3), rx.wait_for(|b| b.version != v1))
        .await
        .unwrap()
        .unwrap();
    task.abort();
}

#[tokio::test]
async fn health_and_metrics() {
    let server = RedisServer::start();
    let idp = FakeIdp::new();
    let mut state = app(redis_store(&server).await, idp.clone(), settings());
    let (status, _, body) = get(&state, "/healthz", None).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"ok"[..]));
    let (status, _, _) = get(&state, "/readyz", None).await;
    assert_eq!(status, StatusCode::OK);
    state.metrics.logins.inc();
    let resp = sidecar::metrics_router(state.clone())
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(
        axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(text.contains("portcullis_logins_total 1\n"), "{text}");
    // /metrics is not on the main listener.
    let (status, _, _) = get(&state, "/metrics", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Redis down → not ready (and no panic).
    drop(server);
    let (status, _, _) = get(&state, "/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    state = app(memory_store(), idp, settings());
    let (status, _, _) = get(&state, "/readyz", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_follower_at_cursor_zero_misses_nothing_and_does_not_spin() {
    let idp = FakeIdp::new();
    idp.add_user("u0", "u0@example.com", &["g"]);
    let state = app(memory_store(), idp.clone(), settings());
    // Empty store: a poll at 0 is held (no busy loop), then answers with cursor 0.
    let t = Instant::now();
    let (_, _, body) = authed(&state, "/.portcullis/v1/changes?since=0&wait_ms=300").await;
    assert!(t.elapsed() >= Duration::from_millis(290));
    let r = ChangesResponse::decode(body.as_slice()).unwrap();
    assert_eq!((r.version, r.reset), (0, false));
    // A session created and signed out before the follower's next poll: the deletion
    // must still reach it (it may have cached the session meanwhile).
    let s = login(&state, &idp, "u0", Default::default()).await;
    state.sessions.delete(&s.id).await.unwrap();
    let (_, _, body) = authed(&state, "/.portcullis/v1/changes?since=0&wait_ms=5000").await;
    let r = ChangesResponse::decode(body.as_slice()).unwrap();
    assert_eq!(r.deleted, vec![s.id.clone()]);
    assert!(r.changed.is_empty());
    // A poll at 0 also wakes on the first change.
    let state2 = app(memory_store(), idp.clone(), settings());
    let poll = {
        let state2 = state2.clone();
        tokio::spawn(async move {
            authed(&state2, "/.portcullis/v1/changes?since=0&wait_ms=10000").await
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let s2 = login(&state2, &idp, "u0", Default::default()).await;
    let (_, _, body) = tokio::time::timeout(Duration::from_secs(3), poll)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ChangesResponse::decode(body.as_slice()).unwrap().changed,
        vec![s2.id]
    );
}

#[tokio::test]
async fn a_restarted_store_is_detected_by_its_epoch_even_past_the_cursor() {
    let idp = FakeIdp::new();
    idp.add_user("ue", "ue@example.com", &[]);
    let before = app(memory_store(), idp.clone(), settings());
    login(&before, &idp, "ue", Default::default()).await;
    let (_, _, body) = authed(&before, "/.portcullis/v1/changes?since=0").await;
    let old = ChangesResponse::decode(body.as_slice()).unwrap();
    assert!(!old.epoch.is_empty());
    assert_eq!(old.version, 2, "the session and the user record");
    // Same store, same epoch.
    let (_, _, body) = authed(&before, "/.portcullis/v1/changes?since=2").await;
    assert_eq!(
        ChangesResponse::decode(body.as_slice()).unwrap().epoch,
        old.epoch
    );

    // "Restart": a new memory store that climbs past the follower's cursor before it polls.
    let after = app(memory_store(), idp.clone(), settings());
    for _ in 0..3 {
        login(&after, &idp, "ue", Default::default()).await;
    }
    let (_, _, body) = authed(&after, "/.portcullis/v1/changes?since=2").await;
    let r = ChangesResponse::decode(body.as_slice()).unwrap();
    assert!(!r.reset, "the cursor alone looks valid here…");
    assert_ne!(r.epoch, old.epoch, "…but the epoch tells the restart apart");
    // A caller that passes its epoch gets an explicit, immediate reset.
    let t = Instant::now();
    let uri = format!(
        "/.portcullis/v1/changes?since=2&wait_ms=5000&epoch={}",
        old.epoch
    );
    let (_, _, body) = authed(&after, &uri).await;
    let r = ChangesResponse::decode(body.as_slice()).unwrap();
    assert!(r.reset && r.changed.is_empty() && r.deleted.is_empty());
    assert!(t.elapsed() < Duration::from_secs(2), "answered at once");
    // The matching epoch is an ordinary poll.
    let uri = format!(
        "/.portcullis/v1/changes?since=2&wait_ms=0&epoch={}",
        r.epoch
    );
    let (_, _, body) = authed(&after, &uri).await;
    let r2 = ChangesResponse::decode(body.as_slice()).unwrap();
    assert!(!r2.reset);
    assert_eq!(r2.changed.len(), 2);
}
