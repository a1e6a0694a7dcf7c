//! Per-worker session caches and the shared-data record format.
//!
//! Three tiers, cheapest first: this worker's [`SessionCache`] (a hash map hit: no host
//! call), Envoy shared data (one host call + protobuf decode, shared by every worker of
//! the process), and the sidecar (one HTTP call). [`NegativeCache`] remembers session ids
//! the sidecar does not know, so a replayed or signed-out cookie costs one lookup per TTL.

use portcullis_common::api::{Header, SessionView};
use portcullis_common::cookie::SessionId;
use std::collections::HashMap;
use std::rc::Rc;

/// A session id as a hash-map key (hashes its text; `SessionId` itself is not `Hash`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key(pub SessionId);

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.as_str().hash(state);
    }
}

/// At most this many audiences' identity JWTs are kept per session.
pub const MAX_AUDIENCES: usize = 8;
/// A JWT this close to expiry is refetched rather than forwarded.
pub const JWT_REFRESH_MARGIN_SECS: i64 = 30;

/// One audience's identity JWT.
#[derive(Debug, Clone)]
pub struct Jwt {
    /// Audience (route host).
    pub aud: Box<str>,
    /// The signed token.
    pub token: Box<str>,
    /// Unix seconds it expires.
    pub expires_at: i64,
}

/// A cached session: everything an allowed request needs, ready to use.
#[derive(Debug)]
pub struct Entry<S> {
    /// The evaluator's subject, built once.
    pub subject: Rc<S>,
    /// Precomputed `jwt_claims_headers` for this session.
    pub claim_headers: Box<[Header]>,
    /// The OAuth client the session was created with.
    pub client_id: Box<str>,
    /// Identity JWTs per audience.
    pub jwts: Vec<Jwt>,
    /// Databroker version of the session record.
    pub version: u64,
    /// Unix seconds the session expires.
    pub session_expires_at: i64,
    /// When the sidecar was asked (unix ms): freshness is measured from here.
    pub fetched_at_ms: u64,
}

impl<S> Entry<S> {
    /// The JWT for `aud`, if present and not about to expire.
    pub fn jwt(&self, aud: &str, now_unix: i64) -> Option<&str> {
        self.jwts
            .iter()
            .find(|j| &*j.aud == aud)
            .filter(|j| j.expires_at - JWT_REFRESH_MARGIN_SECS > now_unix)
            .map(|j| &*j.token)
    }
}

impl<S> Entry<S> {
    /// The JWT for `aud` while it has not expired (what may still be forwarded when it
    /// cannot be renewed).
    pub fn jwt_valid(&self, aud: &str, now_unix: i64) -> Option<&str> {
        self.jwts
            .iter()
            .find(|j| &*j.aud == aud)
            .filter(|j| j.expires_at > now_unix)
            .map(|j| &*j.token)
    }
}

/// This worker's sessions, bounded.
#[derive(Debug)]
pub struct SessionCache<S> {
    map: HashMap<Key, Entry<S>>,
    cap: usize,
}

impl<S> SessionCache<S> {
    /// An empty cache holding at most `cap` sessions.
    pub fn new(cap: usize) -> Self {
        SessionCache {
            map: HashMap::new(),
            cap,
        }
    }

    /// The entry of `id`.
    pub fn get(&self, id: &SessionId) -> Option<&Entry<S>> {
        self.map.get(&Key(*id))
    }

    /// Insert or replace; when full, expired sessions go first, then the oldest fetch.
    pub fn insert(&mut self, id: SessionId, entry: Entry<S>, now_unix: i64) {
        let id = Key(id);
        if self.map.len() >= self.cap && !self.map.contains_key(&id) {
            self.map.retain(|_, e| e.session_expires_at > now_unix);
            if self.map.len() >= self.cap {
                let oldest = self
                    .map
                    .iter()
                    .min_by_key(|(_, e)| e.fetched_at_ms)
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    self.map.remove(&k);
                }
            }
        }
        self.map.insert(id, entry);
    }

    /// Drop one session.
    pub fn remove(&mut self, id: &SessionId) -> Option<Entry<S>> {
        self.map.remove(&Key(*id))
    }

    /// Drop everything (change-stream reset).
    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// Number of cached sessions.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drop sessions that expired.
    pub fn purge_expired(&mut self, now_unix: i64) {
        self.map.retain(|_, e| e.session_expires_at > now_unix);
    }
}

/// Session ids the sidecar said it does not know, each until a deadline. Bounded.
#[derive(Debug)]
pub struct NegativeCache {
    map: HashMap<Key, u64>,
    cap: usize,
    ttl_ms: u64,
}

impl NegativeCache {
    /// An empty negative cache.
    pub fn new(cap: usize, ttl_ms: u64) -> Self {
        NegativeCache {
            map: HashMap::new(),
            cap,
            ttl_ms,
        }
    }

    /// Whether `id` is known-unknown at `now_ms`.
    pub fn contains(&self, id: &SessionId, now_ms: u64) -> bool {
        self.map.get(&Key(*id)).is_some_and(|until| *until > now_ms)
    }

    /// Remember `id` as unknown for the TTL.
    pub fn insert(&mut self, id: SessionId, now_ms: u64) {
        let id = Key(id);
        if self.map.len() >= self.cap && !self.map.contains_key(&id) {
            self.map.retain(|_, until| *until > now_ms);
            if self.map.len() >= self.cap {
                // Still full of live entries: forget the one closest to its deadline.
                let first = self.map.iter().min_by_key(|(_, u)| **u).map(|(k, _)| *k);
                if let Some(k) = first {
                    self.map.remove(&k);
                }
            }
        }
        self.map.insert(id, now_ms.saturating_add(self.ttl_ms));
    }

    /// Forget `id` (it changed: it may exist now).
    pub fn remove(&mut self, id: &SessionId) {
        self.map.remove(&Key(*id));
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// Number of entries (live or not yet purged).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drop entries past their deadline.
    pub fn purge(&mut self, now_ms: u64) {
        self.map.retain(|_, until| *until > now_ms);
    }
}

/// Shared-data key of a session.
pub fn shared_key(id: &SessionId) -> String {
    let mut k = String::with_capacity(SHARED_PREFIX.len() + id.as_str().len());
    k.push_str(SHARED_PREFIX);
    k.push_str(id.as_str());
    k
}

/// Prefix of session keys in Envoy shared data.
pub const SHARED_PREFIX: &str = "portcullis/session/";
/// Shared-data key of the cache generation (bumped when the change stream resets).
pub const SHARED_GENERATION: &str = "portcullis/generation";

/// A session as stored in Envoy shared data (protobuf), for the other workers.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SharedSession {
    /// Cache generation it was written under; other generations are ignored.
    #[prost(uint64, tag = "1")]
    pub generation: u64,
    /// When the sidecar was asked (unix ms).
    #[prost(uint64, tag = "2")]
    pub fetched_at_ms: u64,
    /// The policy view.
    #[prost(message, optional, tag = "3")]
    pub view: Option<SessionView>,
    /// Identity JWTs per audience.
    #[prost(message, repeated, tag = "4")]
    pub jwts: Vec<SharedJwt>,
    /// Tombstone: the session changed or was deleted at `fetched_at_ms`.
    #[prost(bool, tag = "5")]
    pub evicted: bool,
}

/// One audience's JWT in [`SharedSession`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct SharedJwt {
    /// Audience.
    #[prost(string, tag = "1")]
    pub aud: String,
    /// Token.
    #[prost(string, tag = "2")]
    pub token: String,
    /// Unix seconds.
    #[prost(int64, tag = "3")]
    pub expires_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(n: u32) -> SessionId {
        SessionId::parse(&format!("session-id-{n:08}")).unwrap()
    }

    fn entry(expires: i64, fetched: u64) -> Entry<()> {
        Entry {
            subject: Rc::new(()),
            claim_headers: Box::new([]),
            client_id: "".into(),
            jwts: vec![Jwt {
                aud: "a.example.com".into(),
                token: "t".into(),
                expires_at: 1_000,
            }],
            version: 1,
            session_expires_at: expires,
            fetched_at_ms: fetched,
        }
    }

    #[test]
    fn session_cache_is_bounded_and_prefers_evicting_expired_then_oldest() {
        let mut c = SessionCache::new(2);
        c.insert(sid(1), entry(50, 1), 0);
        c.insert(sid(2), entry(500, 2), 0);
        c.insert(sid(3), entry(500, 3), 100); // sid(1) expired at 100
        assert!(c.get(&sid(1)).is_none());
        c.insert(sid(4), entry(500, 4), 100); // full of live ones: oldest (2) goes
        assert_eq!(c.len(), 2);
        assert!(c.get(&sid(2)).is_none());
        assert!(c.get(&sid(3)).is_some() && c.get(&sid(4)).is_some());
    }

    #[test]
    fn jwt_lookup_respects_audience_and_margin() {
        let e = entry(500, 1);
        assert_eq!(e.jwt("a.example.com", 900), Some("t"));
        assert_eq!(
            e.jwt("a.example.com", 1_000 - JWT_REFRESH_MARGIN_SECS),
            None
        );
        assert_eq!(e.jwt("b.example.com", 0), None);
    }

    #[test]
    fn negative_cache_expires_and_is_bounded() {
        let mut n = NegativeCache::new(2, 1_000);
        n.insert(sid(1), 0);
        assert!(n.contains(&sid(1), 999));
        assert!(!n.contains(&sid(1), 1_000));
        n.insert(sid(2), 10);
        n.insert(sid(3), 20);
        n.insert(sid(4), 30);
        assert!(n.len() <= 2);
        assert!(n.contains(&sid(4), 30));
        n.remove(&sid(4));
        assert!(!n.contains(&sid(4), 30));
    }
}
