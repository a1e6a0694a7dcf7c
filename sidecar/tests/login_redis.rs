//! The login flow with the Redis databroker (a real `redis-server` child) and the real
//! `oidc-provider`: login, hand-off (single use through Redis leases), group removal
//! reaching the policy view, sign-out.
//!
//! Needs node 20 + `make deps-node` and redis-server. Run:
//! `cargo test -p sidecar --test login_redis`.

// Helpers outside #[test] fns panic on a broken environment, like the tests themselves.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "login/support.rs"]
mod support;

use serde_json::json;
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_refresh_and_sign_out_with_redis() {
    let redis = Redis::start().await;
    let d = Deployment::start(Options {
        redis: Some(redis.url.clone()),
        user_info_interval: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    assert_eq!(d.state.store.backend(), "redis");
    let b = d.browser();
    let ret = d.app_url(APP_HOST, "/r");
    let hops = b.login(&d, &ret, "alice", "alice-pw").await;
    let sid = b.session_id(&ret).expect("cookie");
    let aud = format!("{APP_HOST}:{}", d.port);
    let v = d.internal_session(&sid, &aud).await;
    assert!(v.found);
    assert_eq!(
        view_claim(&v, "groups").unwrap(),
        vec![json!("admins"), json!("staff")]
    );

    // The hand-off is single-use through the shared store.
    let handoff = hops
        .iter()
        .find(|h| h.url.contains("/.pomerium/callback?pomerium_handoff="))
        .unwrap()
        .url
        .clone();
    let replay = b.get(&handoff).await;
    assert_eq!(replay.status, 400);
    assert!(replay.body.contains("already used"));

    d.idp
        .admin("DELETE", "/users/alice/groups/admins", None)
        .await;
    d.eventually(
        "group removal reaches the view",
        Duration::from_secs(20),
        || async {
            view_claim(&d.internal_session(&sid, &aud).await, "groups")
                == Some(vec![json!("staff")])
        },
    )
    .await;

    let page = b.get(&d.app_url(APP_HOST, "/.pomerium/")).await;
    assert!(!page.body.contains("<li>admins</li>"));
    let csrf = attr_after(
        &page.body,
        "<input type=\"hidden\" name=\"pomerium_csrf\"",
        "value",
    )
    .unwrap();
    let out = b
        .post_form(
            &d.app_url(APP_HOST, "/.pomerium/sign_out"),
            &[("pomerium_csrf", &csrf)],
        )
        .await;
    assert_eq!(out.status, 302);
    assert!(!d.internal_session(&sid, &aud).await.found);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_hops_between_two_replicas_on_one_redis() {
    let redis = Redis::start().await;
    let d = Deployment::start(Options {
        redis: Some(redis.url.clone()),
        replicas: 2,
        user_info_interval: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    let b = d.browser();
    let ret = d.app_url(APP_HOST, "/r");
    // Every request alternates replica: sign_in, callback and hand-off land on different
    // ones. Nothing of a login is kept in a replica's memory, so this just works.
    let hops = b.login(&d, &ret, "alice", "alice-pw").await;
    let hits = d.replica_hits();
    assert!(
        hits.iter().all(|&h| h >= 1),
        "both replicas served the login: {hits:?}"
    );
    let sid = b.session_id(&ret).expect("cookie");
    let aud = format!("{APP_HOST}:{}", d.port);
    for replica in &d.replicas {
        let s = replica.sessions.get(&sid).await.unwrap();
        assert!(s.is_some(), "every replica sees the session");
    }
    // A replayed hand-off is refused by the other replica too (the lease is in Redis).
    let handoff = hops
        .iter()
        .find(|h| h.url.contains("/.pomerium/callback?pomerium_handoff="))
        .unwrap()
        .url
        .clone();
    for _ in 0..2 {
        let replay = b.get(&handoff).await;
        assert_eq!(replay.status, 400);
        assert!(replay.body.contains("already used"));
    }
    // Same JWKS from both replicas (a shared signing_key), and the JWT verifies with it.
    let j1 = b
        .get(&d.app_url(APP_HOST, "/.well-known/pomerium/jwks.json"))
        .await
        .body;
    let j2 = b
        .get(&d.app_url(APP_HOST, "/.well-known/pomerium/jwks.json"))
        .await
        .body;
    assert_eq!(j1, j2);
    // The identity managers of both replicas share the work; the change arrives.
    d.idp
        .admin("DELETE", "/users/alice/groups/admins", None)
        .await;
    d.eventually(
        "group removal reaches the view",
        Duration::from_secs(20),
        || async {
            view_claim(&d.internal_session(&sid, &aud).await, "groups")
                == Some(vec![json!("staff")])
        },
    )
    .await;
    // Sign-out on one replica ends the session for both.
    let page = b.get(&d.app_url(APP_HOST, "/.pomerium/")).await;
    let csrf = attr_after(
        &page.body,
        "<input type=\"hidden\" name=\"pomerium_csrf\"",
        "value",
    )
    .unwrap();
    let out = b
        .post_form(
            &d.app_url(APP_HOST, "/.pomerium/sign_out"),
            &[("pomerium_csrf", &csrf)],
        )
        .await;
    assert_eq!(out.status, 302);
    for replica in &d.replicas {
        assert!(replica.sessions.get(&sid).await.unwrap().is_none());
    }
}
