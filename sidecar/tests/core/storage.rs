//! The same storage suite against the memory backend and a real Redis.

use crate::support::*;
use serde_json::json;
use sidecar::databroker::{Expect, Kind, Put, Store, now_unix};
use sidecar::session::SessionService;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn put(kind: Kind, id: &str, owner: &str, expect: Expect) -> Put {
    Put {
        kind,
        id: id.to_owned(),
        owner: owner.to_owned(),
        data: format!("body-of-{id}").into_bytes(),
        expires_at: Some(now_unix() + 3600),
        due_at: None,
        expect,
    }
}

async fn versions_are_monotonic_and_writes_conditional(store: Arc<dyn Store>) {
    let v1 = store
        .put(put(
            Kind::Session,
            "aaaaaaaaaaaaaaaa1",
            "u1",
            Expect::Absent,
        ))
        .await
        .unwrap()
        .unwrap();
    let v2 = store
        .put(put(Kind::Session, "aaaaaaaaaaaaaaaa2", "u1", Expect::Any))
        .await
        .unwrap()
        .unwrap();
    assert!(v2 > v1);
    // Create-only fails on an existing record and consumes no version.
    assert_eq!(
        store
            .put(put(
                Kind::Session,
                "aaaaaaaaaaaaaaaa1",
                "u1",
                Expect::Absent
            ))
            .await
            .unwrap(),
        None
    );
    // Compare-and-swap: wrong version refused, right version accepted.
    assert_eq!(
        store
            .put(put(
                Kind::Session,
                "aaaaaaaaaaaaaaaa1",
                "u1",
                Expect::Version(v2)
            ))
            .await
            .unwrap(),
        None
    );
    let v3 = store
        .put(put(
            Kind::Session,
            "aaaaaaaaaaaaaaaa1",
            "u1",
            Expect::Version(v1),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v3, v2 + 1, "refused writes must not use versions");
    let rec = store
        .get(Kind::Session, "aaaaaaaaaaaaaaaa1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.version, v3);
    assert_eq!(rec.owner, "u1");
    assert_eq!(rec.data, b"body-of-aaaaaaaaaaaaaaaa1");
    // Deleting: versioned, only once, and a CAS on a deleted record never resurrects it.
    let v4 = store
        .delete(Kind::Session, "aaaaaaaaaaaaaaaa1", Expect::Any)
        .await
        .unwrap()
        .unwrap();
    assert!(v4 > v3);
    assert_eq!(
        store
            .delete(Kind::Session, "aaaaaaaaaaaaaaaa1", Expect::Any)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .put(put(
                Kind::Session,
                "aaaaaaaaaaaaaaaa1",
                "u1",
                Expect::Version(v3)
            ))
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .get(Kind::Session, "aaaaaaaaaaaaaaaa1")
            .await
            .unwrap()
            .is_none()
    );
    // Delete with a stale version is refused.
    assert_eq!(
        store
            .delete(Kind::Session, "aaaaaaaaaaaaaaaa2", Expect::Version(v1))
            .await
            .unwrap(),
        None
    );
    // Kinds are separate namespaces.
    store
        .put(put(Kind::User, "aaaaaaaaaaaaaaaa2", "", Expect::Any))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .get(Kind::Session, "aaaaaaaaaaaaaaaa2")
            .await
            .unwrap()
            .unwrap()
            .owner,
        "u1"
    );
    assert_eq!(store.count(Kind::Session).await.unwrap(), 1);
    assert_eq!(store.count(Kind::User).await.unwrap(), 1);
}

async fn change_stream_reports_and_wakes(store: Arc<dyn Store>) {
    let start = store.changes_since(0).await.unwrap();
    let mut rx = store.subscribe();
    let since = start.version;
    let waiter = tokio::spawn(async move {
        let t = Instant::now();
        rx.wait_for(|v| *v > since).await.unwrap();
        t.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let v1 = store
        .put(put(Kind::Session, "bbbbbbbbbbbbbbbb1", "u", Expect::Any))
        .await
        .unwrap()
        .unwrap();
    let woke_after = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(
        woke_after < Duration::from_secs(1),
        "waiter woke after {woke_after:?}"
    );
    let v2 = store
        .put(put(Kind::Session, "bbbbbbbbbbbbbbbb1", "u", Expect::Any))
        .await
        .unwrap()
        .unwrap();
    let v3 = store
        .delete(Kind::Session, "bbbbbbbbbbbbbbbb1", Expect::Any)
        .await
        .unwrap()
        .unwrap();
    let ch = store.changes_since(since).await.unwrap();
    assert!(!ch.reset);
    assert_eq!(ch.version, v3);
    let seen: Vec<(u64, bool)> = ch.changes.iter().map(|c| (c.version, c.deleted)).collect();
    assert_eq!(seen, vec![(v1, false), (v2, false), (v3, true)]);
    assert!(
        ch.changes
            .iter()
            .all(|c| c.id == "bbbbbbbbbbbbbbbb1" && c.kind == Kind::Session)
    );
    // Partial window.
    let ch = store.changes_since(v2).await.unwrap();
    assert_eq!(ch.changes.len(), 1);
    assert!(ch.changes[0].deleted);
    // A cursor from the future (e.g. from before a restart of a memory store) resets.
    let ch = store.changes_since(v3 + 100).await.unwrap();
    assert!(ch.reset);
    assert_eq!(ch.version, v3);
}

async fn ttl_expiry(store: Arc<dyn Store>) {
    let now = now_unix();
    let mut p = put(Kind::Session, "cccccccccccccccc1", "u", Expect::Any);
    p.expires_at = Some(now + 1);
    let v = store.put(p).await.unwrap().unwrap();
    let mut keep = put(Kind::Session, "cccccccccccccccc2", "u", Expect::Any);
    keep.expires_at = Some(now + 3600);
    store.put(keep).await.unwrap().unwrap();
    assert!(
        store
            .get(Kind::Session, "cccccccccccccccc1")
            .await
            .unwrap()
            .is_some()
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        store
            .get(Kind::Session, "cccccccccccccccc1")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.list_owned(Kind::Session, "u").await.unwrap().len(), 1);
    assert_eq!(store.count(Kind::Session).await.unwrap(), 1);
    // The sweep logs the deletion so followers drop it.
    let n = store.expire(now_unix()).await.unwrap();
    assert_eq!(n, 1);
    let ch = store.changes_since(v).await.unwrap();
    assert!(
        ch.changes
            .iter()
            .any(|c| c.id == "cccccccccccccccc1" && c.deleted)
    );
    assert_eq!(
        store.expire(now_unix()).await.unwrap(),
        0,
        "sweeping twice logs once"
    );
    assert!(
        store
            .get(Kind::Session, "cccccccccccccccc2")
            .await
            .unwrap()
            .is_some()
    );
}

async fn owners_due_and_leases(store: Arc<dyn Store>) {
    let now = now_unix();
    for (id, owner, due) in [
        ("dddddddddddddddd1", "alice", Some(now - 10)),
        ("dddddddddddddddd2", "alice", Some(now + 100)),
        ("dddddddddddddddd3", "bob", Some(now - 20)),
        ("dddddddddddddddd4", "bob", None),
    ] {
        let mut p = put(Kind::Session, id, owner, Expect::Any);
        p.due_at = due;
        store.put(p).await.unwrap().unwrap();
    }
    let alice: Vec<String> = store
        .list_owned(Kind::Session, "alice")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(alice, vec!["dddddddddddddddd1", "dddddddddddddddd2"]);
    assert_eq!(
        store.due(Kind::Session, now, 10).await.unwrap(),
        vec!["dddddddddddddddd3", "dddddddddddddddd1"]
    );
    assert_eq!(store.due(Kind::Session, now, 1).await.unwrap().len(), 1);
    store
        .delete(Kind::Session, "dddddddddddddddd1", Expect::Any)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.due(Kind::Session, now, 10).await.unwrap(),
        vec!["dddddddddddddddd3"]
    );
    assert_eq!(
        store
            .list_owned(Kind::Session, "alice")
            .await
            .unwrap()
            .len(),
        1
    );

    assert!(store.try_lease("l1", "a", 300).await.unwrap());
    assert!(
        store.try_lease("l1", "a", 300).await.unwrap(),
        "re-entrant for the holder"
    );
    assert!(!store.try_lease("l1", "b", 300).await.unwrap());
    store.release_lease("l1", "b").await.unwrap(); // not b's: no effect
    assert!(!store.try_lease("l1", "b", 300).await.unwrap());
    store.release_lease("l1", "a").await.unwrap();
    assert!(store.try_lease("l1", "b", 200).await.unwrap());
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(
        store.try_lease("l1", "a", 200).await.unwrap(),
        "expired lease is free"
    );
    store.ping().await.unwrap();
}

/// Sessions through the encrypting service: nothing secret reaches the backend.
async fn encrypted_at_rest(store: Arc<dyn Store>) -> (Vec<Vec<u8>>, sidecar::AppState) {
    let idp = FakeIdp::new();
    idp.add_user(
        "sub-enc@example.org",
        "enc@example.com",
        &["secret-group-xyz"],
    );
    let state = app(store.clone(), idp.clone(), settings());
    let s = login(
        &state,
        &idp,
        "sub-enc@example.org",
        obj(json!({"department": "dept-confidential"})),
    )
    .await;
    let rec = store.get(Kind::Session, &s.id).await.unwrap().unwrap();
    // The user id is a keyed hash at rest (a `sub` may be an email address).
    assert!(
        store
            .get(Kind::User, "sub-enc@example.org")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .list_owned(Kind::Session, "sub-enc@example.org")
            .await
            .unwrap()
            .is_empty()
    );
    let key = state.sessions.user_key("sub-enc@example.org");
    assert_eq!(key.len(), 43);
    assert_eq!(rec.owner, key);
    let user = store.get(Kind::User, &key).await.unwrap().unwrap();
    (vec![rec.data, user.data], state)
}

fn assert_no_plaintext(blobs: &[Vec<u8>]) {
    for needle in [
        &b"access-token-"[..],
        b"refresh-token-",
        b"raw-id-token-",
        b"secret-group-xyz",
        b"dept-confidential",
        b"enc@example.com",
        b"sub-enc@example.org",
    ] {
        for b in blobs {
            assert!(
                !contains(b, needle),
                "plaintext {:?} found at rest",
                String::from_utf8_lossy(needle)
            );
        }
    }
}

async fn trimmed_history_resets_old_cursors(store: Arc<dyn Store>) {
    use sidecar::databroker::CHANGE_LOG_LEN;
    let start = store.changes_since(0).await.unwrap().version;
    let mut last = 0;
    for i in 0..CHANGE_LOG_LEN + 5 {
        let mut p = put(Kind::User, "gggggggggggggggg1", "", Expect::Any);
        p.data = i.to_be_bytes().to_vec();
        last = store.put(p).await.unwrap().unwrap();
    }
    // The oldest entries are gone: a cursor from before them must reset…
    let ch = store.changes_since(start).await.unwrap();
    assert!(ch.reset, "a cursor older than the history must reset");
    assert_eq!(ch.version, last);
    // …while a recent cursor still gets exact changes.
    let ch = store.changes_since(last - 3).await.unwrap();
    assert!(!ch.reset);
    assert_eq!(ch.changes.len(), 3);
    let ch = store
        .changes_since(last - CHANGE_LOG_LEN + 1)
        .await
        .unwrap();
    assert!(!ch.reset);
    assert_eq!(ch.changes.len() as u64, CHANGE_LOG_LEN - 1);
}

macro_rules! suite {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn memory() {
                $body(memory_store()).await;
            }
            #[tokio::test]
            async fn redis() {
                let server = RedisServer::start();
                $body(redis_store(&server).await).await;
            }
        }
    };
}

suite!(versions, versions_are_monotonic_and_writes_conditional);
suite!(change_stream, change_stream_reports_and_wakes);
suite!(ttl, ttl_expiry);
suite!(owners_due_leases, owners_due_and_leases);
suite!(trimmed_history, trimmed_history_resets_old_cursors);
suite!(epoch, epoch_is_stable_within_a_store);

async fn epoch_is_stable_within_a_store(store: Arc<dyn Store>) {
    let e = store.changes_since(0).await.unwrap().epoch;
    assert!(e.len() >= 16, "a random epoch: {e:?}");
    store
        .put(put(Kind::Session, "eeeeeeeeeeeeeeee1", "u", Expect::Any))
        .await
        .unwrap();
    let ch = store.changes_since(0).await.unwrap();
    assert_eq!(ch.epoch, e);
    assert_eq!(
        store.changes_since(99).await.unwrap().epoch,
        e,
        "also on reset"
    );
}

#[tokio::test]
async fn memory_stores_have_distinct_epochs() {
    let a = memory_store().changes_since(0).await.unwrap().epoch;
    let b = memory_store().changes_since(0).await.unwrap().epoch;
    assert_ne!(a, b);
}

#[tokio::test]
async fn redis_epoch_is_shared_and_a_flush_makes_a_new_one() {
    let server = RedisServer::start();
    let a = redis_store(&server).await;
    let b = redis_store(&server).await;
    let e = a.changes_since(0).await.unwrap().epoch;
    assert_eq!(b.changes_since(0).await.unwrap().epoch, e, "replicas agree");
    for i in 0..3 {
        a.put(put(
            Kind::Session,
            &format!("ffffffffffffffff{i}"),
            "u",
            Expect::Any,
        ))
        .await
        .unwrap();
    }
    let cursor = a.changes_since(0).await.unwrap().version;
    let mut raw = server.raw().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut raw).await.unwrap();
    // The flushed Redis climbs past the follower's cursor before it polls again.
    for i in 0..5 {
        b.put(put(
            Kind::Session,
            &format!("gggggggggggggggg{i}"),
            "u",
            Expect::Any,
        ))
        .await
        .unwrap();
    }
    let ch = a.changes_since(cursor).await.unwrap();
    assert!(ch.version > cursor);
    assert_ne!(ch.epoch, e, "a flush is a new epoch");
    assert_eq!(b.changes_since(cursor).await.unwrap().epoch, ch.epoch);
}

#[tokio::test]
async fn memory_encrypted_at_rest() {
    let (blobs, _) = encrypted_at_rest(memory_store()).await;
    assert_no_plaintext(&blobs);
}

#[tokio::test]
async fn redis_never_sees_a_plaintext_token_or_claim() {
    let server = RedisServer::start();
    let (blobs, state) = encrypted_at_rest(redis_store(&server).await).await;
    assert_no_plaintext(&blobs);
    // Scan every raw value Redis holds, not just the record bodies.
    let everything = server.dump_everything().await;
    assert!(everything.len() > 5, "the scan must see the records");
    assert_no_plaintext(&everything);
    // …while the sidecar reads them back fine.
    let ids: Vec<_> = state
        .sessions
        .list_for_user("sub-enc@example.org")
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0].groups(), vec!["secret-group-xyz"]);
    // A different shared_secret cannot read them.
    let other = SessionService::new(
        redis_store(&server).await,
        &portcullis_common::Secret::from_bytes([99; 32]),
        Default::default(),
    );
    assert!(other.get(&ids[0].id).await.is_err());
}

#[tokio::test]
async fn two_redis_stores_see_each_others_changes_within_a_second() {
    let server = RedisServer::start();
    let a = redis_store(&server).await;
    let b = redis_store(&server).await;
    for round in 0..3 {
        let since = *b.subscribe().borrow();
        let mut rx = b.subscribe();
        let t = Instant::now();
        let id = format!("eeeeeeeeeeeeeeee{round}");
        let v = a
            .put(put(Kind::Session, &id, "u", Expect::Any))
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|x| *x >= v))
            .await
            .expect("replica b did not see replica a's change within 1 s")
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(1));
        let ch = b.changes_since(since).await.unwrap();
        assert!(ch.changes.iter().any(|c| c.id == id && !c.deleted));
        assert_eq!(b.get(Kind::Session, &id).await.unwrap().unwrap().version, v);
        // And the other way round, with a delete.
        let mut rx = a.subscribe();
        let v = b
            .delete(Kind::Session, &id, Expect::Any)
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|x| *x >= v))
            .await
            .expect("replica a did not see replica b's delete within 1 s")
            .unwrap();
        assert!(a.get(Kind::Session, &id).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn redis_restart_and_sidecar_restart_lose_no_session() {
    let mut server = RedisServer::start_persistent();
    let idp = FakeIdp::new();
    idp.add_user("user-r", "r@example.com", &["g1"]);
    let state = app(redis_store(&server).await, idp.clone(), settings());
    let s1 = login(&state, &idp, "user-r", Default::default()).await;
    let s2 = login(&state, &idp, "user-r", Default::default()).await;
    let version_before = *state.store.subscribe().borrow();

    // Redis restarts under a running sidecar: the connection manager reconnects.
    server.restart();
    let mut got = None;
    for _ in 0..50 {
        match state.sessions.get(&s1.id).await {
            Ok(s) => {
                got = s;
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let got = got.expect("session lost across a Redis restart");
    assert_eq!(got.claims, s1.claims);
    assert_eq!(got.oauth_token, s1.oauth_token);
    // Versions keep growing after the restart (the counter is persisted too).
    let s3 = login(&state, &idp, "user-r", Default::default()).await;
    assert!(s3.version > version_before);

    // The sidecar restarts: a brand-new process state on the same Redis.
    drop(state);
    let state = app(redis_store(&server).await, idp.clone(), settings());
    for s in [&s1, &s2, &s3] {
        let again = state
            .sessions
            .get(&s.id)
            .await
            .unwrap()
            .expect("session lost across a sidecar restart");
        assert_eq!(again.user_id, "user-r");
        assert_eq!(again.id_token, s.id_token);
    }
    assert_eq!(
        state.sessions.list_for_user("user-r").await.unwrap().len(),
        3
    );
}

#[tokio::test]
async fn memory_store_loses_sessions_on_restart_and_followers_reset() {
    // Documented behaviour: the memory backend is per process.
    let idp = FakeIdp::new();
    idp.add_user("user-m", "m@example.com", &[]);
    let state = app(memory_store(), idp.clone(), settings());
    let s = login(&state, &idp, "user-m", Default::default()).await;
    let cursor = *state.store.subscribe().borrow();
    drop(state);
    let state = app(memory_store(), idp, settings());
    assert!(state.sessions.get(&s.id).await.unwrap().is_none());
    assert!(state.store.changes_since(cursor).await.unwrap().reset);
}

#[tokio::test]
async fn redis_down_is_an_error_not_a_panic() {
    let mut server = RedisServer::start();
    let store = redis_store(&server).await;
    server.kill();
    assert!(store.ping().await.is_err());
    assert!(store.get(Kind::Session, "ffffffffffffffff1").await.is_err());
    // Connecting to nothing fails cleanly.
    let port = server.port;
    assert!(
        sidecar::databroker::redis::RedisStore::connect(&format!("redis://127.0.0.1:{port}"), "p:")
            .await
            .is_err()
    );
    assert!(
        sidecar::databroker::redis::RedisStore::connect("not a url", "p:")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn startup_waits_for_a_redis_that_comes_up_late() {
    let port = free_port();
    let settings = sidecar::settings::StorageSettings::Redis {
        connection_string: format!("redis://127.0.0.1:{port}/0"),
        key_prefix: "portcullis:".into(),
    };
    let opening = tokio::spawn(async move { sidecar::databroker::open(&settings).await });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!opening.is_finished(), "gave up too early");
    let _server = RedisServer::start_on(port);
    let store = tokio::time::timeout(Duration::from_secs(10), opening)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    store.ping().await.unwrap();
    // A malformed connection string fails at once.
    let bad = sidecar::settings::StorageSettings::Redis {
        connection_string: "http://nope".into(),
        key_prefix: "p:".into(),
    };
    let t = Instant::now();
    assert!(sidecar::databroker::open(&bad).await.is_err());
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn memory_hand_off_leases_are_purged() {
    // Every hand-off takes a one-off `handoff:<id>` lease; expired ones must not pile up.
    let store = sidecar::databroker::memory::MemoryStore::new();
    for i in 0..3000 {
        assert!(
            store
                .try_lease(&format!("handoff:{i}"), "h", 1)
                .await
                .unwrap()
        );
        if i % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
    assert!(
        store.lease_entries() < 2100,
        "inserts purge expired leases (found {})",
        store.lease_entries()
    );
    tokio::time::sleep(Duration::from_millis(3)).await;
    assert!(store.try_lease("live", "h", 60_000).await.unwrap());
    store.expire(now_unix()).await.unwrap();
    assert_eq!(store.lease_entries(), 1, "expire() sweeps expired leases");
    assert!(
        !store.try_lease("live", "other", 60_000).await.unwrap(),
        "a live lease survives the sweep"
    );
}

#[tokio::test]
async fn redis_leases_carry_a_px_expiry() {
    let server = RedisServer::start();
    let store = redis_store(&server).await;
    assert!(store.try_lease("handoff:abc", "h", 5_000).await.unwrap());
    let mut raw = server.raw().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*lease:handoff:abc")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(
        pttl > 0 && pttl <= 5_000,
        "lease has a PX expiry (pttl {pttl})"
    );
}
