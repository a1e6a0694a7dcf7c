//! The identity manager against a fake IdP: claims stay true, per session.

use crate::support::*;
use serde_json::json;
use sidecar::databroker::{Kind, now_unix};
use sidecar::identity::{Outcome, process_session, run_due_once};
use std::sync::Arc;
use std::time::Duration;

const HOUR: i64 = 3600;
/// A time at which the user-info refresh (default 10 min) is due but tokens are not.
fn after_user_info_interval() -> i64 {
    now_unix() + 601
}

async fn signed_groups(state: &sidecar::AppState, id: &str) -> Vec<String> {
    let s = state.sessions.get(id).await.unwrap().unwrap();
    let (jwt, _) = state
        .jwt_cache
        .get_or_sign(&s, "app.example.com", state.signer.as_ref(), &state.metrics)
        .unwrap();
    serde_json::from_value(jwt_payload(&jwt)["groups"].clone()).unwrap()
}

#[tokio::test]
async fn removed_group_disappears_after_user_info_refresh() {
    let idp = FakeIdp::new();
    idp.add_user("u1", "u1@example.com", &["admins", "users"]);
    let state = app(memory_store(), idp.clone(), settings());
    let s = login(&state, &idp, "u1", Default::default()).await;
    let view = s.view(&[]);
    assert_eq!(
        view_strings(&view, "groups").unwrap(),
        vec!["admins", "users"]
    );

    // The admin removes u1 from `admins` at the IdP.
    idp.set_groups("u1", &["users"]);
    let out = process_session(&state, &s.id, after_user_info_interval())
        .await
        .unwrap();
    assert_eq!(
        out,
        Outcome::Refreshed {
            token: false,
            sessions_updated: 1
        }
    );

    let s2 = state.sessions.get(&s.id).await.unwrap().unwrap();
    // The stored ID token still lists `admins` (it is the old one) — user info overrides it.
    assert_eq!(s2.id_token.claims["groups"], json!(["admins", "users"]));
    assert_eq!(s2.claims["groups"], json!(["users"]));
    assert_eq!(
        view_strings(&s2.view(&[]), "groups").unwrap(),
        vec!["users"]
    );
    assert!(s2.version > s.version);
    assert_eq!(signed_groups(&state, &s.id).await, vec!["users"]);
}

#[tokio::test]
async fn new_id_token_replaces_claims_no_additive_merge() {
    // User info without groups: the groups come from the ID token only; after a token
    // refresh the new ID token's groups replace the old ones entirely.
    let idp = FakeIdp::new();
    idp.state.lock().unwrap().user_info_has_groups = false;
    idp.add_user("u2", "u2@example.com", &["a", "b"]);
    let state = app(memory_store(), idp.clone(), settings());
    let s = login(&state, &idp, "u2", obj(json!({"login_only": "x"}))).await;
    assert_eq!(s.claims["groups"], json!(["a", "b"]));
    idp.set_groups("u2", &["c"]);
    // Access token expires in an hour: refresh is due an hour later.
    let out = process_session(&state, &s.id, now_unix() + HOUR)
        .await
        .unwrap();
    assert_eq!(
        out,
        Outcome::Refreshed {
            token: true,
            sessions_updated: 1
        }
    );
    let s2 = state.sessions.get(&s.id).await.unwrap().unwrap();
    assert_eq!(s2.claims["groups"], json!(["c"]));
    // A claim only the old ID token had is gone too.
    assert!(s2.claims.get("login_only").is_none());
    assert_ne!(s2.oauth_token, s.oauth_token);
    assert_eq!(
        idp.refresh_calls.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn two_sessions_of_one_user_stay_independent_and_both_get_the_change() {
    let idp = FakeIdp::new();
    idp.add_user("u3", "u3@example.com", &["admins", "users"]);
    let state = app(memory_store(), idp.clone(), settings());
    // Each session has its own ID-token-only claim (e.g. the device it logged in from).
    let a = login(&state, &idp, "u3", obj(json!({"device": "laptop"}))).await;
    let b = login(&state, &idp, "u3", obj(json!({"device": "phone"}))).await;

    idp.set_groups("u3", &["users"]);
    // Only session A is refreshed; the user info reaches B too.
    let out = process_session(&state, &a.id, after_user_info_interval())
        .await
        .unwrap();
    assert_eq!(
        out,
        Outcome::Refreshed {
            token: false,
            sessions_updated: 2
        }
    );

    let a2 = state.sessions.get(&a.id).await.unwrap().unwrap();
    let b2 = state.sessions.get(&b.id).await.unwrap().unwrap();
    assert_eq!(a2.claims["groups"], json!(["users"]));
    assert_eq!(b2.claims["groups"], json!(["users"]));
    // …each over its own ID token: they never read each other's claims.
    assert_eq!(a2.claims["device"], json!("laptop"));
    assert_eq!(b2.claims["device"], json!("phone"));
    assert_eq!(
        view_strings(&a2.view(&[]), "device").unwrap(),
        vec!["laptop"]
    );
    assert_eq!(
        view_strings(&b2.view(&[]), "device").unwrap(),
        vec!["phone"]
    );
    // B's tokens are its own (not A's).
    assert_ne!(a2.oauth_token.access_token, b2.oauth_token.access_token);
    assert_eq!(b2.oauth_token, b.oauth_token);
    assert_eq!(signed_groups(&state, &a.id).await, vec!["users"]);
    assert_eq!(signed_groups(&state, &b.id).await, vec!["users"]);
    // B's user info is fresh now, so B is not due again at that time.
    let due = state
        .store
        .due(Kind::Session, after_user_info_interval(), 10)
        .await
        .unwrap();
    assert!(due.is_empty(), "{due:?}");
}

#[tokio::test]
async fn invalid_grant_terminates_the_session() {
    let idp = FakeIdp::new();
    idp.add_user("u4", "u4@example.com", &["g"]);
    let state = app(memory_store(), idp.clone(), settings());
    let s = login(&state, &idp, "u4", Default::default()).await;
    let cursor = *state.store.subscribe().borrow();
    idp.revoke_all();
    let out = process_session(&state, &s.id, now_unix() + HOUR)
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Terminated(_)), "{out:?}");
    assert!(state.sessions.get(&s.id).await.unwrap().is_none());
    let ch = state.store.changes_since(cursor).await.unwrap();
    assert!(ch.changes.iter().any(|c| c.id == s.id && c.deleted));
    assert_eq!(state.metrics.sessions_terminated.get(), 1);
}

#[tokio::test]
async fn disabled_user_is_terminated_everywhere() {
    let idp = FakeIdp::new();
    idp.add_user("u5", "u5@example.com", &["g"]);
    let state = app(memory_store(), idp.clone(), settings());
    let a = login(&state, &idp, "u5", Default::default()).await;
    let b = login(&state, &idp, "u5", Default::default()).await;
    idp.disable("u5");
    let out = process_session(&state, &a.id, after_user_info_interval())
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Terminated(_)), "{out:?}");
    // B is re-checked at once (not at its next interval) and terminated with its own token.
    let results = run_due_once(&state, now_unix()).await.unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].0, b.id);
    assert!(matches!(results[0].1, Outcome::Terminated(_)));
    assert!(state.sessions.list_for_user("u5").await.unwrap().is_empty());
}

#[tokio::test]
async fn idp_outage_keeps_sessions_with_exponential_backoff() {
    let idp = FakeIdp::new();
    idp.add_user("u6", "u6@example.com", &["g"]);
    let mut settings = settings();
    settings.identity.backoff_initial = Duration::from_secs(10);
    settings.identity.backoff_max = Duration::from_secs(40);
    let state = app(memory_store(), idp.clone(), settings);
    let s = login(&state, &idp, "u6", Default::default()).await;
    idp.set_down(true);

    let mut t = now_unix() + HOUR; // token refresh due
    let mut delays = Vec::new();
    for _ in 0..4 {
        let out = process_session(&state, &s.id, t).await.unwrap();
        let Outcome::Backoff { retry_at } = out else {
            panic!("{out:?}")
        };
        delays.push(retry_at - t);
        // Not retried before the backoff ends.
        assert_eq!(
            process_session(&state, &s.id, retry_at - 1).await.unwrap(),
            Outcome::NotDue
        );
        let due = state
            .store
            .due(Kind::Session, retry_at - 1, 10)
            .await
            .unwrap();
        assert!(due.is_empty());
        t = retry_at;
    }
    // 10, 20, 40, 40 seconds, each minus at most 20 % jitter.
    for (d, base) in delays.iter().zip([10, 20, 40, 40]) {
        assert!(*d <= base && *d >= base * 8 / 10, "delays {delays:?}");
    }
    let kept = state
        .sessions
        .get(&s.id)
        .await
        .unwrap()
        .expect("an IdP outage must not delete sessions");
    assert_eq!(kept.refresh.failures, 4);
    assert_eq!(kept.claims, s.claims);

    // The IdP comes back: the next attempt succeeds and the backoff resets.
    idp.set_down(false);
    idp.set_groups("u6", &[]);
    let out = process_session(&state, &s.id, t).await.unwrap();
    assert_eq!(
        out,
        Outcome::Refreshed {
            token: true,
            sessions_updated: 1
        }
    );
    let s2 = state.sessions.get(&s.id).await.unwrap().unwrap();
    assert_eq!(s2.refresh.failures, 0);
    assert_eq!(s2.claims["groups"], json!([]));
    assert_eq!(state.metrics.token_refresh_failures.get(), 4);
}

#[tokio::test]
async fn rotated_refresh_token_survives_a_user_info_failure() {
    let idp = FakeIdp::new();
    idp.add_user("u7", "u7@example.com", &["g"]);
    let state = app(memory_store(), idp.clone(), settings());
    let s = login(&state, &idp, "u7", Default::default()).await;
    // Refresh works, then user info fails.
    *idp.during_user_info.lock().unwrap() = Some(Arc::new({
        let idp = Arc::downgrade(&idp);
        move || {
            if let Some(idp) = idp.upgrade() {
                idp.state.lock().unwrap().down = true;
            }
        }
    }));
    let out = process_session(&state, &s.id, now_unix() + HOUR)
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Backoff { .. }), "{out:?}");
    let s2 = state.sessions.get(&s.id).await.unwrap().unwrap();
    // The old refresh token was rotated away at the IdP; the new one must be stored.
    assert_ne!(s2.oauth_token.refresh_token, s.oauth_token.refresh_token);
    *idp.during_user_info.lock().unwrap() = None;
    idp.set_down(false);
    let out = process_session(&state, &s.id, s2.refresh.retry_at + HOUR)
        .await
        .unwrap();
    assert_eq!(
        out,
        Outcome::Refreshed {
            token: true,
            sessions_updated: 1
        }
    );
}

#[tokio::test]
async fn sign_out_during_a_refresh_is_not_undone() {
    let idp = FakeIdp::new();
    idp.add_user("u8", "u8@example.com", &["g"]);
    let state = app(memory_store(), idp.clone(), settings());
    let s = login(&state, &idp, "u8", Default::default()).await;
    // The user signs out while the identity manager waits for the IdP.
    let sessions = state.sessions.clone();
    let id = s.id.clone();
    let rt = tokio::runtime::Handle::current();
    *idp.during_user_info.lock().unwrap() = Some(Arc::new(move || {
        let sessions = sessions.clone();
        let id = id.clone();
        // The hook is sync; the store's delete resolves immediately for memory.
        let _ = std::thread::spawn({
            let rt = rt.clone();
            move || rt.block_on(sessions.delete(&id)).unwrap()
        })
        .join();
    }));
    let out = process_session(&state, &s.id, after_user_info_interval())
        .await
        .unwrap();
    assert_eq!(out, Outcome::NotFound);
    assert!(
        state.sessions.get(&s.id).await.unwrap().is_none(),
        "a signed-out session was resurrected"
    );
}

#[tokio::test]
async fn lease_keeps_two_replicas_from_refreshing_one_session() {
    let idp = FakeIdp::new();
    idp.add_user("u9", "u9@example.com", &["g"]);
    let state = app(memory_store(), idp.clone(), settings());
    let s = login(&state, &idp, "u9", Default::default()).await;
    let lease = format!("identity:session:{}", s.id);
    assert!(
        state
            .store
            .try_lease(&lease, "other-replica", 10_000)
            .await
            .unwrap()
    );
    assert_eq!(
        process_session(&state, &s.id, after_user_info_interval())
            .await
            .unwrap(),
        Outcome::Busy
    );
    assert_eq!(
        idp.user_info_calls
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    state
        .store
        .release_lease(&lease, "other-replica")
        .await
        .unwrap();
    assert!(matches!(
        process_session(&state, &s.id, after_user_info_interval())
            .await
            .unwrap(),
        Outcome::Refreshed { .. }
    ));
}

#[tokio::test]
async fn background_manager_refreshes_on_its_own_across_redis_replicas() {
    // Two sidecar replicas on one Redis, both running the identity manager with a 1 s
    // user-info interval: the group removal shows up in both replicas' views.
    let server = RedisServer::start();
    let idp = FakeIdp::new();
    idp.add_user("u10", "u10@example.com", &["admins", "users"]);
    let mut st = settings();
    st.identity.user_info_refresh_interval = Duration::from_secs(1);
    st.identity.tick = Duration::from_millis(100);
    let a = app(redis_store(&server).await, idp.clone(), st.clone());
    let b = app(redis_store(&server).await, idp.clone(), st);
    let s = login(&a, &idp, "u10", Default::default()).await;
    let ta = tokio::spawn(sidecar::identity::run(a.clone()));
    let tb = tokio::spawn(sidecar::identity::run(b.clone()));
    idp.set_groups("u10", &["users"]);
    let mut ok = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sb = b.sessions.get(&s.id).await.unwrap().unwrap();
        if sb.claims["groups"] == json!(["users"]) {
            ok = true;
            break;
        }
    }
    ta.abort();
    tb.abort();
    assert!(
        ok,
        "the background identity manager did not apply the change"
    );
    assert_eq!(signed_groups(&a, &s.id).await, vec!["users"]);
}

#[test]
fn schedule_refreshes_before_expiry_and_spreads_user_info() {
    use sidecar::identity::{jitter, next_due, schedule};
    let st = sidecar::settings::IdentitySettings::default();
    let now = 1_000_000;
    let mut s = sidecar::session::Session {
        id: "x".repeat(43),
        user_id: "u".into(),
        issued_at: now,
        expires_at: now + 14 * HOUR,
        id_token: sidecar::idp::VerifiedIdToken {
            raw: sidecar::idp::SecretString::new("r"),
            claims: Default::default(),
            expires_at: now + 300,
        },
        oauth_token: sidecar::session::OAuthToken {
            access_token: sidecar::idp::SecretString::new("a"),
            refresh_token: Some(sidecar::idp::SecretString::new("r")),
            expires_at: Some(now + HOUR),
        },
        user_info: Default::default(),
        client_id: "c".into(),
        claims: Default::default(),
        refresh: sidecar::session::RefreshState {
            token_refreshed_at: now,
            user_info_at: now,
            failures: 0,
            retry_at: 0,
            ..Default::default()
        },
        version: 0,
    };
    // ID token expires first (5 min): refreshed 60 s before.
    assert_eq!(schedule(&s, &st).token_at, Some(now + 240));
    assert_eq!(next_due(&s, &st), now + 240);
    // After a refresh that brought no new ID token, only the access token drives it.
    s.refresh.token_refreshed_at = now + 250;
    assert_eq!(schedule(&s, &st).token_at, Some(now + HOUR - 60));
    // User info: every 10 minutes, up to 10 % early (deterministic per session).
    let j = jitter(&s.id, 600);
    assert!((0..=60).contains(&j));
    assert_eq!(schedule(&s, &st).user_info_at, now + 600 - j);
    // No refresh token: checked when the access token expires.
    s.oauth_token.refresh_token = None;
    assert_eq!(schedule(&s, &st).token_at, Some(now + HOUR));
    // Backoff postpones everything; the session end caps it.
    s.refresh.retry_at = now + 2 * HOUR;
    assert_eq!(next_due(&s, &st), now + 2 * HOUR);
    s.expires_at = now + 100;
    assert_eq!(next_due(&s, &st), now + 100);
}

#[tokio::test]
async fn a_user_info_change_reaches_sessions_of_other_clients_through_their_own_client() {
    // One user at the IdP, two OAuth clients (two routes with their own idp_client_id).
    let idp = FakeIdp::new();
    let idp_b = FakeIdp::new();
    idp.add_user("u9", "u9@example.com", &["admins", "users"]);
    idp_b.add_user("u9", "u9@example.com", &["admins", "users"]);
    let state = app_two_clients(memory_store(), idp.clone(), idp_b.clone());
    let a = login_with_client(&state, &idp, "u9", CLIENT).await;
    let b = login_with_client(&state, &idp_b, "u9", CLIENT_B).await;

    // The admin removes `admins`; client A's session is refreshed first.
    idp.set_groups("u9", &["users"]);
    idp_b.set_groups("u9", &["users"]);
    let out = process_session(&state, &a.id, after_user_info_interval())
        .await
        .unwrap();
    assert_eq!(
        out,
        Outcome::Refreshed {
            token: false,
            sessions_updated: 1
        }
    );
    // Client A's response is never copied into client B's session…
    let b1 = state.sessions.get(&b.id).await.unwrap().unwrap();
    assert_eq!(b1.user_info, b.user_info);
    assert_eq!(b1.claims["groups"], json!(["admins", "users"]));
    // …but B is due right now, not at its next interval.
    let now = now_unix();
    let due = state.store.due(Kind::Session, now, 10).await.unwrap();
    assert_eq!(due, vec![b.id.clone()]);
    let calls_b = idp_b
        .user_info_calls
        .load(std::sync::atomic::Ordering::SeqCst);
    let out = run_due_once(&state, now).await.unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(
        idp_b
            .user_info_calls
            .load(std::sync::atomic::Ordering::SeqCst),
        calls_b + 1,
        "B re-read user info with its own client"
    );
    let b2 = state.sessions.get(&b.id).await.unwrap().unwrap();
    assert_eq!(b2.claims["groups"], json!(["users"]));
    assert_eq!(signed_groups(&state, &b.id).await, vec!["users"]);
    assert_eq!(b2.oauth_token.access_token, b.oauth_token.access_token);
    // No ping-pong: A already has this user info, so nothing else is due.
    let due = state
        .store
        .due(Kind::Session, now_unix(), 10)
        .await
        .unwrap();
    assert!(due.is_empty(), "{due:?}");
}

#[tokio::test]
async fn an_older_concurrent_user_info_response_never_overwrites_a_newer_one() {
    // Sessions A and B of one user and client are refreshed concurrently. A's fetch starts
    // first but its (older) response commits last: it must not bring `admins` back.
    let idp = FakeIdp::new();
    idp.add_user("u10", "u10@example.com", &["admins", "users"]);
    let state = app(memory_store(), idp.clone(), settings());
    let a = login(&state, &idp, "u10", Default::default()).await;
    let b = login(&state, &idp, "u10", Default::default()).await;
    let at = after_user_info_interval();

    let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (state, idp2, b_id, fired) = (state.clone(), idp.clone(), b.id.clone(), fired.clone());
        *idp.during_user_info.lock().unwrap() = Some(Arc::new(move || {
            if fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return; // only inside A's fetch
            }
            // While A's request is in flight: the group is removed, B is refreshed and
            // commits the new user info (to B and, as a sibling, to A)…
            idp2.set_groups("u10", &["users"]);
            let (state, b_id) = (state.clone(), b_id.clone());
            let out = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(process_session(&state, &b_id, at))
                    .unwrap()
            })
            .join()
            .unwrap();
            assert_eq!(
                out,
                Outcome::Refreshed {
                    token: false,
                    sessions_updated: 2
                }
            );
            // …and A's answer is the one the IdP produced before the change.
            idp2.set_groups("u10", &["admins", "users"]);
        }));
    }
    let out = process_session(&state, &a.id, at).await.unwrap();
    assert!(fired.load(std::sync::atomic::Ordering::SeqCst));
    assert!(matches!(out, Outcome::Refreshed { .. }), "{out:?}");
    for id in [&a.id, &b.id] {
        let s = state.sessions.get(id).await.unwrap().unwrap();
        assert_eq!(
            s.claims["groups"],
            json!(["users"]),
            "the older response was not applied"
        );
        assert_eq!(signed_groups(&state, id).await, vec!["users"]);
    }
    // A's refresh still counts as done (its stored info is newer than its own fetch).
    let due = state.store.due(Kind::Session, at, 10).await.unwrap();
    assert!(due.is_empty(), "{due:?}");
}

#[tokio::test]
async fn jwt_cache_keeps_one_signature_per_version_and_audience() {
    let idp = FakeIdp::new();
    idp.add_user("u1", "u1@example.com", &["admins"]);
    let state = app(memory_store(), idp.clone(), settings());
    let signer = FakeSigner {
        signatures: Default::default(),
    };
    let sign = |s: &sidecar::session::Session, aud: &str| {
        state
            .jwt_cache
            .get_or_sign(s, aud, &signer, &state.metrics)
            .unwrap()
            .0
    };
    let count = || signer.signatures.load(std::sync::atomic::Ordering::SeqCst);
    let old = login(&state, &idp, "u1", Default::default()).await;
    let a = sign(&old, "a.example.com");
    assert_eq!(sign(&old, "a.example.com"), a, "served from the cache");
    sign(&old, "b.example.com");
    assert_eq!((count(), state.jwt_cache.len()), (2, 2));

    // A newer version replaces every signature of the older one.
    let mut new = old.clone();
    new.version += 1;
    idp.set_groups("u1", &[]);
    sign(&new, "a.example.com");
    assert_eq!((count(), state.jwt_cache.len()), (3, 1));
    // A caller still holding the old version gets a fresh signature, never cached over
    // the newer one.
    sign(&old, "a.example.com");
    sign(&new, "a.example.com");
    assert_eq!((count(), state.jwt_cache.len()), (4, 1));

    // Other sessions are independent.
    let other = login(&state, &idp, "u1", Default::default()).await;
    sign(&other, "a.example.com");
    assert_eq!((count(), state.jwt_cache.len()), (5, 2));
}
