//! The login flow against the real `oidc-provider` (memory databroker): login with PKCE
//! through the IdP's form, hand-off, user info, programmatic login, sign-out with
//! end_session, tampering, refresh, group removal reaching policy view / JWT / page,
//! independent sessions of one user, disabled users, IdP key rotation.
//!
//! Needs node 20 + `make deps-node`. Run: `cargo test -p sidecar --test login_flow`.

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

async fn logged_in(d: &Deployment, user: &str, password: &str) -> (Browser, String) {
    let b = d.browser();
    let ret = d.app_url(APP_HOST, "/private/page?x=1&y=%2F");
    b.login(d, &ret, user, password).await;
    let sid = b
        .session_id(&d.app_url(APP_HOST, "/"))
        .expect("session cookie on the route host");
    (b, sid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_login_hand_off_user_info_programmatic_and_sign_out() {
    let d = Deployment::start(Options::default()).await;
    let b = d.browser();
    let ret = d.app_url(APP_HOST, "/private/page?x=1&y=%2F");
    let hops = b.login(&d, &ret, "alice", "alice-pw").await;

    // The path a browser took: sign_in → IdP authorize (PKCE S256) → login form →
    // /oauth2/callback → route-host hand-off → the original URL.
    let authorize = hops
        .iter()
        .find(|h| h.url.starts_with(&d.idp.issuer))
        .expect("went to the IdP");
    assert!(
        authorize.url.contains("code_challenge_method=S256"),
        "{}",
        authorize.url
    );
    assert!(
        authorize
            .url
            .contains("scope=openid+profile+email+offline_access"),
        "{}",
        authorize.url
    );
    assert!(hops.iter().any(|h| {
        h.url
            .starts_with(&format!("{}/oauth2/callback?", d.auth_url()))
    }));
    let handoff = hops
        .iter()
        .find(|h| {
            h.url
                .starts_with(&d.app_url(APP_HOST, "/.pomerium/callback?pomerium_handoff="))
        })
        .expect("hand-off on the route host");
    assert_eq!(handoff.status, 302);

    // A session cookie for the route host naming a live session.
    let sid = b
        .session_id(&d.app_url(APP_HOST, "/"))
        .expect("route-host cookie");
    let view = d
        .internal_session(&sid, &format!("{APP_HOST}:{}", d.port))
        .await;
    assert!(view.found);
    assert_eq!(view.view.as_ref().unwrap().user_id, "alice");
    assert_eq!(view.view.as_ref().unwrap().email, "alice@example.com");
    assert_eq!(
        view_claim(&view, "groups").unwrap(),
        vec![json!("admins"), json!("staff")]
    );
    let jwt = jwt_claims(&view.identity_jwt);
    assert_eq!(jwt["aud"], format!("{APP_HOST}:{}", d.port));
    assert_eq!(jwt["iss"], format!("{AUTH_HOST}:{}", d.port));
    assert_eq!(jwt["sid"], sid.as_str());
    assert_eq!(jwt["groups"], json!(["admins", "staff"]));
    assert_eq!(jwt["name"], "Alice Example");

    // The user info page and its JSON: the same stored claims.
    let page = b.get(&d.app_url(APP_HOST, "/.pomerium/")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("alice@example.com") && page.body.contains("<li>admins</li>"));
    let claims: serde_json::Value =
        serde_json::from_str(&b.get(&d.app_url(APP_HOST, "/.pomerium/user")).await.body).unwrap();
    assert_eq!(claims["groups"], json!(["admins", "staff"]));
    assert_eq!(claims["sub"], "alice");

    // Single sign-on: another sign-in for the same route from this browser skips the
    // IdP (the authenticate host knows the session) and hands off directly.
    let again = b.follow(&d.sign_in_url(&ret), |l| l == ret).await;
    assert!(
        !again.iter().any(|h| h.url.starts_with(&d.idp.issuer)),
        "unexpected IdP trip"
    );
    assert_eq!(again.last().unwrap().url, ret);

    // A route with its own IdP client (per-route credentials) runs its own login with
    // that client; the IdP session makes it silent.
    let ret_b = d.app_url(B_HOST, "/");
    let hops_b = b.follow(&d.sign_in_url(&ret_b), |l| l == ret_b).await;
    let auth_b = hops_b
        .iter()
        .find(|h| h.url.starts_with(&d.idp.issuer))
        .expect("IdP trip for route-b");
    assert!(auth_b.url.contains("client_id=route-b"), "{}", auth_b.url);
    assert_eq!(
        hops_b.last().unwrap().url,
        ret_b,
        "{:?}",
        hops_b.last().unwrap().body
    );
    let sid_b = b.session_id(&ret_b).expect("cookie on route b");
    assert_ne!(sid_b, sid);

    // Programmatic login (CLI): a sign-in URL as text; at the end the CLI URL gets
    // `pomerium_jwt`, a token that names a live session.
    let cli = "http://localhost:4567/callback";
    let login_url = b
        .get(&d.app_url(
            APP_HOST,
            &format!(
                "/.pomerium/api/v1/login?pomerium_redirect_uri={}",
                urlenc(cli)
            ),
        ))
        .await;
    assert_eq!(login_url.status, 200, "{}", login_url.body);
    assert!(
        login_url
            .body
            .starts_with(&format!("{}/.pomerium/sign_in?", d.auth_url()))
    );
    let hops_cli = b.follow(&login_url.body, |l| l.starts_with(cli)).await;
    let end = url::Url::parse(&hops_cli.last().unwrap().url).unwrap();
    let token = end
        .query_pairs()
        .find(|(k, _)| k == "pomerium_jwt")
        .map(|(_, v)| v.into_owned())
        .expect("pomerium_jwt");
    let key =
        portcullis_common::cookie::CookieKey::new(&portcullis_common::Secret::from_bytes(COOKIE));
    let now = u64::try_from(crate_now()).unwrap();
    let opened = portcullis_common::cookie::open(&key, "_pomerium", &token, now)
        .expect("pomerium_jwt opens");
    assert!(
        d.internal_session(opened.session_id.as_str(), "x")
            .await
            .found
    );
    // Not for hosts outside programmatic_redirect_domain_whitelist.
    let bad = b
        .get(&d.app_url(
            APP_HOST,
            &format!(
                "/.pomerium/api/v1/login?pomerium_redirect_uri={}",
                urlenc("http://evil.test/cb")
            ),
        ))
        .await;
    assert_eq!(bad.status, 400);

    // Sign out: the page's CSRF token, session deleted everywhere, then the IdP's
    // end_session_endpoint with id_token_hint, back to our signed-out page.
    let csrf = attr_after(
        &page.body,
        "<input type=\"hidden\" name=\"pomerium_csrf\"",
        "value",
    )
    .expect("csrf field");
    let out = b
        .post_form(
            &d.app_url(APP_HOST, "/.pomerium/sign_out"),
            &[("pomerium_csrf", &csrf)],
        )
        .await;
    assert_eq!(out.status, 302, "{}", out.body);
    let end_session = out.location.clone().unwrap();
    assert!(
        end_session.starts_with(&format!("{}/session/end?", d.idp.issuer)),
        "{end_session}"
    );
    assert!(end_session.contains("id_token_hint="));
    assert!(
        !d.internal_session(&sid, "x").await.found,
        "session deleted"
    );
    assert!(
        b.session_id(&d.app_url(APP_HOST, "/")).is_none(),
        "cookie cleared"
    );
    let confirm = b.get(&end_session).await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    let action = attr_after(&confirm.body, "<form", "action").unwrap();
    let xsrf = attr_after(
        &confirm.body,
        "<input type=\"hidden\" name=\"xsrf\"",
        "value",
    )
    .unwrap();
    let action = url::Url::parse(&confirm.url)
        .unwrap()
        .join(&action)
        .unwrap();
    let back = b
        .post_form(action.as_str(), &[("xsrf", &xsrf), ("logout", "yes")])
        .await;
    assert_eq!(
        back.location.as_deref(),
        Some(format!("{}/.pomerium/signed_out", d.auth_url()).as_str())
    );
    let signed_out = b.get(back.location.as_deref().unwrap()).await;
    assert_eq!(signed_out.status, 200);
    assert!(signed_out.body.contains("You are signed out"));
    // The user info page now says so, clearly.
    let after = b.get(&d.app_url(APP_HOST, "/.pomerium/")).await;
    assert_eq!(after.status, 401);
    assert!(after.body.contains("You are not signed in"));
    assert!(d.state.metrics.logins.get() >= 3);
}

fn urlenc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_state_hand_off_and_cookie_are_rejected_with_clear_pages() {
    let d = Deployment::start(Options::default()).await;
    let b = d.browser();
    let ret = d.app_url(APP_HOST, "/x");
    let callback_prefix = format!("{}/oauth2/callback?", d.auth_url());
    let hops = b.follow(&d.sign_in_url(&ret), |_| false).await;
    let after = b
        .submit_login(hops.last().unwrap(), "alice", "alice-pw")
        .await;
    let hops = b
        .follow(after.location.as_deref().unwrap(), |l| {
            l.starts_with(&callback_prefix)
        })
        .await;
    let callback = url::Url::parse(&hops.last().unwrap().url).unwrap();
    let q: std::collections::HashMap<String, String> =
        callback.query_pairs().into_owned().collect();

    // Tampered state.
    let tampered = q["state"].replacen('A', "B", 1).replacen('e', "f", 1);
    let r = b
        .get(&format!(
            "{callback_prefix}code={}&state={}",
            urlenc(&q["code"]),
            urlenc(&tampered)
        ))
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("<!DOCTYPE html>") && r.body.contains("tampered"),
        "{}",
        r.body
    );
    // The right state in another browser (no CSRF cookie): login CSRF refused.
    let other = d.browser();
    let r = other.get(callback.as_str()).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("not started in this browser"), "{}", r.body);
    // The real callback in the right browser works and hands off.
    let r = b.get(callback.as_str()).await;
    assert_eq!(r.status, 302, "{}", r.body);
    let handoff = url::Url::parse(r.location.as_deref().unwrap()).unwrap();
    let token: String = handoff
        .query_pairs()
        .find(|(k, _)| k == "pomerium_handoff")
        .unwrap()
        .1
        .into_owned();
    // The code is single-use at the IdP: replaying the callback fails cleanly.
    let replay = b.get(callback.as_str()).await;
    assert!(
        replay.status >= 400 && replay.status < 600 && replay.status != 500,
        "{}",
        replay.status
    );
    assert!(replay.body.contains("<!DOCTYPE html>"));

    // Tampered hand-off.
    let mut bytes = token.clone().into_bytes();
    let mid = bytes.len() / 2;
    bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
    let bad = String::from_utf8(bytes).unwrap();
    let r = b
        .get(&d.app_url(
            APP_HOST,
            &format!("/.pomerium/callback?pomerium_handoff={bad}"),
        ))
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("tampered"), "{}", r.body);
    // The hand-off on another route host.
    let r = b
        .get(&d.app_url(
            B_HOST,
            &format!("/.pomerium/callback?pomerium_handoff={token}"),
        ))
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("another application"), "{}", r.body);
    // Real one, then its replay.
    let r = b.get(handoff.as_str()).await;
    assert_eq!(r.status, 302);
    assert_eq!(r.location.as_deref(), Some(ret.as_str()));
    let r = b.get(handoff.as_str()).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("already used"), "{}", r.body);

    // Tampered session cookie: not signed in (clear page), the real one still works.
    let sid = b.session_id(&ret).unwrap();
    assert!(d.internal_session(&sid, "x").await.found);
    let forged = d.browser();
    forged.jar.add_cookie_str(
        "_pomerium=AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        &url::Url::parse(&ret).unwrap(),
    );
    let r = forged.get(&d.app_url(APP_HOST, "/.pomerium/")).await;
    assert_eq!(r.status, 401);
    assert!(r.body.contains("You are not signed in"));
    assert_eq!(b.get(&d.app_url(APP_HOST, "/.pomerium/")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refreshed_before_they_expire() {
    // 8 s tokens, refreshed 2 s before expiry: several refreshes within the test.
    let d = Deployment::start(Options {
        token_ttl: 8,
        ..Options::default()
    })
    .await;
    let (_b, sid) = logged_in(&d, "alice", "alice-pw").await;
    let v0 = d.internal_session(&sid, "x").await.view.unwrap().version;
    // The IdP rotates refresh tokens on every use: two successful refreshes prove the
    // rotated token was stored and used.
    d.eventually(
        "two refresh_token grants at the IdP",
        Duration::from_secs(30),
        || async {
            d.idp.stats().await["grants"]["refresh_token"]
                .as_u64()
                .unwrap_or(0)
                >= 2
        },
    )
    .await;
    let after = d.internal_session(&sid, "x").await;
    assert!(after.found, "session kept across refreshes");
    assert!(after.view.unwrap().version > v0);
    let s = d.state.sessions.get(&sid).await.unwrap().unwrap();
    assert!(
        s.id_token.expires_at > crate_now(),
        "a fresh ID token is stored"
    );
}

fn crate_now() -> i64 {
    sidecar::databroker::now_unix()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_removed_at_the_idp_disappears_from_policy_jwt_and_page_of_every_session() {
    let d = Deployment::start(Options {
        user_info_interval: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    let (b1, sid1) = logged_in(&d, "alice", "alice-pw").await;
    let (b2, sid2) = logged_in(&d, "alice", "alice-pw").await;
    assert_ne!(sid1, sid2, "two browsers, two sessions");
    let aud = format!("{APP_HOST}:{}", d.port);
    for sid in [&sid1, &sid2] {
        let v = d.internal_session(sid, &aud).await;
        assert_eq!(
            view_claim(&v, "groups").unwrap(),
            vec![json!("admins"), json!("staff")]
        );
    }

    d.idp
        .admin("DELETE", "/users/alice/groups/admins", None)
        .await;

    for (b, sid) in [(&b1, &sid1), (&b2, &sid2)] {
        d.eventually(
            "the group is gone from the policy view",
            Duration::from_secs(20),
            || async {
                let v = d.internal_session(sid, &aud).await;
                v.found && view_claim(&v, "groups") == Some(vec![json!("staff")])
            },
        )
        .await;
        let v = d.internal_session(sid, &aud).await;
        let jwt = jwt_claims(&v.identity_jwt);
        assert_eq!(jwt["groups"], json!(["staff"]), "identity JWT follows");
        let page = b.get(&d.app_url(APP_HOST, "/.pomerium/")).await;
        assert_eq!(page.status, 200);
        assert!(
            !page.body.contains("<li>admins</li>"),
            "user info page follows"
        );
        assert!(page.body.contains("<li>staff</li>"));
        let claims: serde_json::Value =
            serde_json::from_str(&b.get(&d.app_url(APP_HOST, "/.pomerium/user")).await.body)
                .unwrap();
        assert_eq!(claims["groups"], json!(["staff"]));
    }
    // Adding it back is seen too (nothing is cached forever).
    d.idp
        .admin("POST", "/users/alice/groups/admins", None)
        .await;
    d.eventually("the group is back", Duration::from_secs(20), || async {
        let v = d.internal_session(&sid1, &aud).await;
        view_claim(&v, "groups") == Some(vec![json!("staff"), json!("admins")])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_of_one_user_keep_their_own_claims() {
    // No background refresh during this test: each session shows what its own login saw.
    let d = Deployment::start(Options::default()).await;
    d.idp
        .admin(
            "PATCH",
            "/users/alice",
            Some(json!({"claims": {"department": "eng"}})),
        )
        .await;
    let (b1, sid1) = logged_in(&d, "alice", "alice-pw").await;
    d.idp
        .admin(
            "PATCH",
            "/users/alice",
            Some(json!({"claims": {"department": "ops"}, "groups": ["staff"]})),
        )
        .await;
    let (b2, sid2) = logged_in(&d, "alice", "alice-pw").await;
    let aud = format!("{APP_HOST}:{}", d.port);
    let v1 = d.internal_session(&sid1, &aud).await;
    let v2 = d.internal_session(&sid2, &aud).await;
    assert_eq!(view_claim(&v1, "department").unwrap(), vec![json!("eng")]);
    assert_eq!(view_claim(&v2, "department").unwrap(), vec![json!("ops")]);
    assert_eq!(
        view_claim(&v1, "groups").unwrap(),
        vec![json!("admins"), json!("staff")]
    );
    assert_eq!(view_claim(&v2, "groups").unwrap(), vec![json!("staff")]);
    // The JWT claim header config (`department`) and the JWT itself agree per session.
    assert_eq!(jwt_claims(&v1.identity_jwt)["department"], "eng");
    assert_eq!(jwt_claims(&v2.identity_jwt)["department"], "ops");
    let h1 = &v1.view.as_ref().unwrap().claim_headers;
    assert!(
        h1.iter()
            .any(|h| h.name == "x-pomerium-claim-department" && h.value == "eng"),
        "{h1:?}"
    );
    assert!(
        b1.get(&d.app_url(APP_HOST, "/.pomerium/"))
            .await
            .body
            .contains("<li>admins</li>")
    );
    assert!(
        !b2.get(&d.app_url(APP_HOST, "/.pomerium/"))
            .await
            .body
            .contains("<li>admins</li>")
    );
    // Signing out one leaves the other.
    let page = b1.get(&d.app_url(APP_HOST, "/.pomerium/")).await;
    let csrf = attr_after(
        &page.body,
        "<input type=\"hidden\" name=\"pomerium_csrf\"",
        "value",
    )
    .unwrap();
    let out = b1
        .post_form(
            &d.app_url(APP_HOST, "/.pomerium/sign_out"),
            &[("pomerium_csrf", &csrf)],
        )
        .await;
    assert_eq!(out.status, 302);
    assert!(!d.internal_session(&sid1, &aud).await.found);
    assert!(d.internal_session(&sid2, &aud).await.found);
    assert_eq!(
        b2.get(&d.app_url(APP_HOST, "/.pomerium/")).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_the_user_at_the_idp_terminates_the_session() {
    let d = Deployment::start(Options {
        user_info_interval: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    let (b, sid) = logged_in(&d, "alice", "alice-pw").await;
    let (_bob, bob_sid) = logged_in(&d, "bob", "bob-pw").await;
    d.idp.admin("POST", "/users/alice/disable", None).await;
    d.eventually(
        "alice's session is terminated",
        Duration::from_secs(20),
        || async { !d.internal_session(&sid, "x").await.found },
    )
    .await;
    let page = b.get(&d.app_url(APP_HOST, "/.pomerium/")).await;
    assert_eq!(page.status, 401);
    // Bob is unaffected.
    assert!(d.internal_session(&bob_sid, "x").await.found);
    // A disabled user cannot log in again either.
    let fresh = d.browser();
    let hops = fresh
        .follow(&d.sign_in_url(&d.app_url(APP_HOST, "/")), |_| false)
        .await;
    let r = fresh
        .submit_login(hops.last().unwrap(), "alice", "alice-pw")
        .await;
    assert!(r.body.contains("Invalid username or password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_idp_signing_keys_are_fetched_on_refresh() {
    let d = Deployment::start(Options::default()).await;
    let (_b, sid) = logged_in(&d, "alice", "alice-pw").await;
    let session = d.state.sessions.get(&sid).await.unwrap().unwrap();
    let kids = d.idp.admin("POST", "/rotate-keys", None).await;
    assert_eq!(kids["kids"][0], "idp-key-2");
    let idp = d.state.idps.get("default").expect("default client");
    let rt = session
        .oauth_token
        .refresh_token
        .clone()
        .expect("refresh token issued");
    let tokens = idp
        .refresh(&rt)
        .await
        .expect("refresh verifies an ID token signed with the new key");
    let id_token = tokens.id_token.expect("new ID token");
    let header = id_token.raw.expose().split('.').next().unwrap().to_owned();
    let header: serde_json::Value = {
        use base64::Engine as _;
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(header)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(header["kid"], "idp-key-2");
    assert_eq!(id_token.claims["sub"], "alice");
    // Refresh with a refresh token the IdP already rotated away: invalid_grant.
    let err = idp.refresh(&rt).await.unwrap_err();
    assert!(
        matches!(err, sidecar::idp::IdpError::InvalidGrant(_)),
        "{err:?}"
    );
    // User info with a bogus token: the user is refused (401 → UserDisabled).
    let err = idp
        .user_info(&sidecar::idp::SecretString::new("bogus"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, sidecar::idp::IdpError::UserDisabled(_)),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_domain_shares_one_cookie_without_hand_off() {
    let d = Deployment::start(Options {
        cookie_domain: Some("portcullis.test".into()),
        ..Options::default()
    })
    .await;
    let b = d.browser();
    let ret = d.app_url(APP_HOST, "/shared");
    let hops = b.login(&d, &ret, "alice", "alice-pw").await;
    // The callback on the authenticate host sets a Domain=portcullis.test cookie and
    // goes straight back: no hand-off hop.
    assert!(
        !hops.iter().any(|h| h.url.contains("/.pomerium/callback?")),
        "unexpected hand-off"
    );
    let sid = b
        .session_id(&ret)
        .expect("shared cookie applies to the route host");
    assert_eq!(b.session_id(&d.auth_url()).as_deref(), Some(sid.as_str()));
    assert_eq!(
        b.session_id(&d.app_url(B_HOST, "/")).as_deref(),
        Some(sid.as_str())
    );
    assert!(d.internal_session(&sid, "x").await.found);
    assert_eq!(b.get(&d.app_url(APP_HOST, "/.pomerium/")).await.status, 200);
}
