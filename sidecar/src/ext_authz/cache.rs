//! The ext_authz session cache: policy views (as evaluator subjects), identity JWTs and
//! claim headers by session id, so a request for a known session costs no store read, no
//! decryption and no JSON — what the filter's per-worker cache does for the filter.
//!
//! Freshness: [`follow`] reads the databroker's change log (the same one behind the
//! internal API's change stream), woken by [`Store::subscribe`](crate::databroker::Store::subscribe)
//! and at least every [`POLL`]; every changed or deleted session is evicted, a `reset` or a
//! new epoch clears everything. The cache is used only while the follower has synced
//! within [`FRESH_FOR`]; otherwise every request reads the store. So a revoked session
//! (sign-out, group removal) is refused as soon as its change is read: at once with the
//! memory store, within Redis' ≤ 100 ms notification, and never later than [`POLL`].
//!
//! An answer read from the store while the session changed is not cached (the eviction
//! sequence number moved past the read's [`Ticket`]), so an old view can never be cached
//! after its eviction. Bounded: [`CAPACITY`] sessions (expired ones dropped first, then
//! everything).

use crate::databroker::{Kind, Store, now_unix};
use portcullis_common::api::Header;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Most identity JWTs (audiences) kept per session.
pub(super) const MAX_AUDIENCES: usize = 4;
/// Most sessions held.
pub const CAPACITY: usize = 100_000;
/// The change log is read at least this often, even without a notification.
pub const POLL: Duration = Duration::from_millis(250);
/// The cache is trusted only if the change log was read this recently.
pub const FRESH_FOR: Duration = Duration::from_secs(1);
/// A cached JWT is handed out only while it is valid for at least this long.
const JWT_MARGIN_SECS: i64 = 10;
/// How long an eviction is remembered (to refuse answers read before it).
const EVICTION_MEMORY: Duration = Duration::from_secs(60);
/// How often expired entries and old evictions are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Longest wait between failed change-log reads.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// One cached session.
#[derive(Debug)]
pub(super) struct Entry {
    /// What the evaluator sees.
    pub subject: policy_compiler::eval::Subject,
    /// The OAuth client the session signed in with.
    pub client_id: String,
    /// `jwt_claims_headers` for this session.
    pub claim_headers: Vec<Header>,
    /// Unix seconds the session ends.
    pub expires_at: i64,
    /// Databroker version of the record this was built from.
    pub version: u64,
    /// Identity JWTs by audience.
    pub jwts: Vec<Jwt>,
}

/// One identity JWT.
#[derive(Debug, Clone)]
pub(super) struct Jwt {
    /// Audience (route host).
    pub aud: String,
    /// The signed token.
    pub token: String,
    /// Unix seconds it expires.
    pub expires_at: i64,
}

impl Entry {
    /// A JWT for `aud` still valid for a while.
    pub fn jwt(&self, aud: &str, now: i64) -> Option<&str> {
        self.jwts
            .iter()
            .find(|j| j.aud == aud && j.expires_at - JWT_MARGIN_SECS > now)
            .map(|j| j.token.as_str())
    }
}

/// What the cache says about a session id.
pub(super) enum Lookup {
    /// Cached and fresh.
    Hit(Arc<Entry>),
    /// Known not to exist (fresh).
    Absent,
    /// Not cached.
    Miss,
    /// The cache is not trusted now (change log not read recently): ask the store.
    Stale,
}

/// Taken before a store read; an insert with it is refused if the session was evicted
/// (or the cache reset) since.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ticket(u64);

#[derive(Default)]
struct Inner {
    /// `None` = known absent.
    map: HashMap<String, Option<Arc<Entry>>>,
    /// Bumped by every eviction batch and reset.
    seq: u64,
    /// `seq` of the last reset.
    reset_seq: u64,
    /// Recently evicted ids → (`seq` of the eviction, when).
    evicted: HashMap<String, (u64, Instant)>,
}

impl Inner {
    /// Forget evictions older than [`EVICTION_MEMORY`]. A read whose ticket predates a
    /// forgotten eviction could otherwise cache a view from before it, so the floor
    /// (`reset_seq`) rises to the newest forgotten one: such tickets are refused.
    fn forget_evictions(&mut self, now: Instant) {
        let mut forgotten = 0;
        self.evicted.retain(|_, (seq, at)| {
            let keep = now.duration_since(*at) < EVICTION_MEMORY;
            if !keep {
                forgotten = forgotten.max(*seq);
            }
            keep
        });
        self.reset_seq = self.reset_seq.max(forgotten);
    }
}

/// One store read in flight per (session id, audience); see [`SessionCache::gate`].
type Gates = HashMap<(String, String), Weak<tokio::sync::Mutex<()>>>;

/// The cache (shared by every request of one router).
pub(super) struct SessionCache {
    inner: Mutex<Inner>,
    gates: Mutex<Gates>,
    started: Instant,
    /// Milliseconds after `started` of the last successful change-log read + 1 (0 = never).
    synced_ms: AtomicU64,
}

impl SessionCache {
    pub(super) fn new() -> Self {
        SessionCache {
            inner: Mutex::new(Inner::default()),
            gates: Mutex::new(HashMap::new()),
            started: Instant::now(),
            synced_ms: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn fresh(&self) -> bool {
        let s = self.synced_ms.load(Ordering::Acquire);
        s != 0
            && self.now_ms().saturating_sub(s - 1)
                <= u64::try_from(FRESH_FOR.as_millis()).unwrap_or(u64::MAX)
    }

    fn mark_synced(&self) {
        self.synced_ms.store(self.now_ms() + 1, Ordering::Release);
    }

    /// Look a session up.
    pub(super) fn lookup(&self, sid: &str) -> Lookup {
        if !self.fresh() {
            return Lookup::Stale;
        }
        match self.lock().map.get(sid) {
            Some(Some(e)) => Lookup::Hit(e.clone()),
            Some(None) => Lookup::Absent,
            None => Lookup::Miss,
        }
    }

    /// The lock that serialises store reads for (`sid`, `aud`): held while reading, so
    /// concurrent misses wait for the first and then find its answer cached. Dropped with
    /// its last holder (the map keeps only weak references, pruned as it grows).
    pub(super) fn gate(&self, sid: &str, aud: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        let key = (sid.to_owned(), aud.to_owned());
        if let Some(g) = gates.get(&key).and_then(Weak::upgrade) {
            return g;
        }
        if gates.len() >= 1024 {
            gates.retain(|_, g| g.strong_count() > 0);
        }
        let g = Arc::new(tokio::sync::Mutex::new(()));
        gates.insert(key, Arc::downgrade(&g));
        g
    }

    /// The cached entry whatever the freshness (to keep JWTs of an unchanged version).
    pub(super) fn peek(&self, sid: &str) -> Option<Arc<Entry>> {
        self.lock().map.get(sid).cloned().flatten()
    }

    /// A ticket for a store read, or `None` when the cache is not trusted (then the answer
    /// is not cached: the follower may not have seen changes the read predates).
    pub(super) fn ticket(&self) -> Option<Ticket> {
        if !self.fresh() {
            return None;
        }
        Some(Ticket(self.lock().seq))
    }

    /// Cache what a read with `ticket` found (`None` = no such session).
    pub(super) fn insert(&self, sid: &str, slot: Option<Arc<Entry>>, ticket: Option<Ticket>) {
        let Some(Ticket(t)) = ticket else {
            return;
        };
        let mut inner = self.lock();
        if inner.reset_seq > t || inner.evicted.get(sid).is_some_and(|(s, _)| *s > t) {
            return;
        }
        if inner.map.len() >= CAPACITY && !inner.map.contains_key(sid) {
            let now = now_unix();
            inner
                .map
                .retain(|_, e| e.as_ref().is_some_and(|e| e.expires_at > now));
            if inner.map.len() >= CAPACITY {
                inner.map.clear();
            }
        }
        inner.map.insert(sid.to_owned(), slot);
    }

    /// Drop changed or deleted sessions.
    fn evict<'a>(&self, ids: impl Iterator<Item = &'a str>) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.seq += 1;
        let seq = inner.seq;
        for id in ids {
            inner.map.remove(id);
            if inner.evicted.len() >= CAPACITY {
                inner.forget_evictions(now);
                if inner.evicted.len() >= CAPACITY {
                    // Forgetting evictions is safe only if every read in flight is refused.
                    inner.evicted.clear();
                    inner.reset_seq = seq;
                }
            }
            inner.evicted.insert(id.to_owned(), (seq, now));
        }
    }

    /// Drop everything (change-log reset, new epoch).
    fn reset(&self) {
        let mut inner = self.lock();
        inner.seq += 1;
        inner.reset_seq = inner.seq;
        inner.map.clear();
        inner.evicted.clear();
    }

    fn sweep(&self) {
        let now = now_unix();
        let at = Instant::now();
        let mut inner = self.lock();
        inner
            .map
            .retain(|_, e| e.as_ref().is_none_or(|e| e.expires_at > now));
        inner.forget_evictions(at);
    }

    /// Number of cached ids (sessions and known-absent ids).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().map.len()
    }
}

/// Follow the databroker's change log and evict what changed, until `cache` is dropped.
pub(super) async fn follow(cache: Weak<SessionCache>, store: Arc<dyn Store>) {
    let mut versions = store.subscribe();
    let mut cursor: Option<u64> = None;
    let mut epoch: Option<String> = None;
    let mut failures: u32 = 0;
    let mut last_sweep = Instant::now();
    loop {
        let Some(c) = cache.upgrade() else {
            return;
        };
        // Mark the current version seen before reading, so a change during the read wakes
        // the next wait at once.
        let now_version = *versions.borrow_and_update();
        // The first read starts at the current version: the cache is empty, and inserts
        // are refused until this read succeeded (the cache is not fresh before).
        let since = *cursor.get_or_insert(now_version);
        match store.changes_since(since).await {
            Ok(ch) => {
                if ch.reset || epoch.as_deref().is_some_and(|e| e != ch.epoch) {
                    c.reset();
                }
                epoch = Some(ch.epoch);
                c.evict(
                    ch.changes
                        .iter()
                        .filter(|x| x.kind == Kind::Session)
                        .map(|x| x.id.as_str()),
                );
                cursor = Some(ch.version);
                c.mark_synced();
                if failures > 0 {
                    tracing::info!("ext_authz: change log readable again");
                }
                failures = 0;
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(error = %e, "ext_authz: cannot read the change log; sessions are read from the store until it is back");
                }
                failures = failures.saturating_add(1);
            }
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = Instant::now();
            c.sweep();
        }
        drop(c);
        let wait = if failures == 0 {
            POLL
        } else {
            POLL.saturating_mul(1 << failures.min(4)).min(MAX_BACKOFF)
        };
        tokio::select! {
            r = versions.changed() => {
                if r.is_err() {
                    tokio::time::sleep(wait).await;
                }
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy_compiler::eval::{Claims, Subject};

    fn entry(expires_at: i64) -> Arc<Entry> {
        Arc::new(Entry {
            subject: Subject::new("u".into(), "e".into(), Claims::default()),
            client_id: String::new(),
            claim_headers: Vec::new(),
            expires_at,
            version: 1,
            jwts: vec![Jwt {
                aud: "a".into(),
                token: "t".into(),
                expires_at: now_unix() + 100,
            }],
        })
    }

    #[test]
    fn unsynced_cache_is_not_used_nor_filled() {
        let c = SessionCache::new();
        assert!(matches!(c.lookup("s"), Lookup::Stale));
        assert!(c.ticket().is_none());
        c.insert("s", Some(entry(i64::MAX)), c.ticket());
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn an_answer_read_before_an_eviction_is_not_cached() {
        let c = SessionCache::new();
        c.mark_synced();
        let t = c.ticket();
        c.evict(["s"].into_iter());
        c.insert("s", Some(entry(i64::MAX)), t);
        assert!(matches!(c.lookup("s"), Lookup::Miss));
        // Read after the eviction: cached.
        let t = c.ticket();
        c.insert("s", Some(entry(i64::MAX)), t);
        assert!(matches!(c.lookup("s"), Lookup::Hit(_)));
        c.insert("gone", None, c.ticket());
        assert!(matches!(c.lookup("gone"), Lookup::Absent));
        // A reset refuses every read in flight.
        let t = c.ticket();
        c.reset();
        c.insert("x", Some(entry(i64::MAX)), t);
        assert!(matches!(c.lookup("x"), Lookup::Miss));
        assert!(matches!(c.lookup("s"), Lookup::Miss));
    }

    #[test]
    fn forgotten_evictions_still_refuse_older_reads() {
        let c = SessionCache::new();
        c.mark_synced();
        let t = c.ticket();
        c.evict(["s"].into_iter());
        // Later, the sweep forgets the eviction...
        let long_ago = Instant::now()
            .checked_sub(EVICTION_MEMORY + Duration::from_secs(1))
            .unwrap();
        for (_, at) in c.lock().evicted.values_mut() {
            *at = long_ago;
        }
        c.sweep();
        assert!(c.lock().evicted.is_empty());
        // ...but a read that started before it is still not cached.
        c.insert("s", Some(entry(i64::MAX)), t);
        assert!(matches!(c.lookup("s"), Lookup::Miss));
        // A read after it is.
        c.insert("s", Some(entry(i64::MAX)), c.ticket());
        assert!(matches!(c.lookup("s"), Lookup::Hit(_)));
    }

    #[test]
    fn jwts_near_expiry_are_not_handed_out() {
        let e = entry(i64::MAX);
        let now = now_unix();
        assert_eq!(e.jwt("a", now), Some("t"));
        assert_eq!(e.jwt("a", now + 95), None);
        assert_eq!(e.jwt("b", now), None);
    }

    #[test]
    fn sweep_drops_expired_sessions() {
        let c = SessionCache::new();
        c.mark_synced();
        c.insert("old", Some(entry(now_unix() - 1)), c.ticket());
        c.insert("new", Some(entry(i64::MAX)), c.ticket());
        c.sweep();
        assert!(matches!(c.lookup("old"), Lookup::Miss));
        assert!(matches!(c.lookup("new"), Lookup::Hit(_)));
    }
}
