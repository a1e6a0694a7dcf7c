//! The embedded in-memory backend (the default). Nothing survives a restart: after one,
//! every user signs in again, and followers get `reset` on their next change poll.

use super::{
    CHANGE_LOG_LEN, Change, Changes, Expect, Kind, Put, Store, StoreResult, StoredRecord, now_unix,
};
use crate::idp::BoxFuture;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Default)]
struct Inner {
    version: u64,
    records: HashMap<(Kind, String), StoredRecord>,
    log: VecDeque<Change>,
    /// Versions ≤ `floor` were dropped from `log`.
    floor: u64,
    leases: HashMap<String, (String, Instant)>,
    /// Lease-map size at which the next insert first purges expired leases (amortised:
    /// twice the live count after the last purge, at least [`LEASE_SWEEP_MIN`]).
    lease_sweep_at: usize,
}

/// Below this many leases inserts never sweep (a sweep is O(n); `expire` sweeps anyway).
const LEASE_SWEEP_MIN: usize = 1024;

impl Inner {
    /// Drop leases whose time is up. Every hand-off takes a fresh `handoff:<id>` lease, so
    /// without this the map would grow with every login until restart (a memory DoS).
    fn purge_leases(&mut self, now: Instant) {
        self.leases.retain(|_, (_, until)| *until > now);
        self.lease_sweep_at = (self.leases.len() * 2).max(LEASE_SWEEP_MIN);
    }

    fn bump(&mut self, kind: Kind, id: &str, deleted: bool) -> u64 {
        self.version += 1;
        self.log.push_back(Change {
            version: self.version,
            kind,
            id: id.to_owned(),
            deleted,
        });
        while self.log.len() as u64 > CHANGE_LOG_LEN {
            if let Some(c) = self.log.pop_front() {
                self.floor = c.version;
            }
        }
        self.version
    }

    fn live(&self, kind: Kind, id: &str, now: i64) -> Option<&StoredRecord> {
        self.records
            .get(&(kind, id.to_owned()))
            .filter(|r| r.expires_at.is_none_or(|e| e > now))
    }

    fn matches(&self, kind: Kind, id: &str, expect: Expect, now: i64) -> bool {
        let current = self.live(kind, id, now).map(|r| r.version);
        match expect {
            Expect::Any => true,
            Expect::Absent => current.is_none(),
            Expect::Version(v) => current == Some(v),
        }
    }
}

/// In-process storage.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    tx: watch::Sender<u64>,
    /// Random per store lifetime: a restarted sidecar has a new one, so followers reset
    /// even if the new store's version already climbed past their cursor.
    epoch: String,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store at version 0.
    pub fn new() -> Self {
        MemoryStore {
            inner: Mutex::new(Inner::default()),
            tx: watch::Sender::new(0),
            epoch: super::new_epoch(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // A poisoned lock only means another thread panicked mid-update; the data is
        // still a consistent map (every mutation is a single insert/remove).
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let before = guard.version;
        let out = f(&mut guard);
        let after = guard.version;
        drop(guard);
        if after != before {
            self.tx.send_replace(after);
        }
        out
    }
}

impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn get<'a>(
        &'a self,
        kind: Kind,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<StoredRecord>>> {
        let now = now_unix();
        let r = self.with(|i| i.live(kind, id, now).cloned());
        Box::pin(async move { Ok(r) })
    }

    fn put(&self, put: Put) -> BoxFuture<'_, StoreResult<Option<u64>>> {
        let now = now_unix();
        let r = self.with(|i| {
            if !i.matches(put.kind, &put.id, put.expect, now) {
                return None;
            }
            let v = i.bump(put.kind, &put.id, false);
            i.records.insert(
                (put.kind, put.id.clone()),
                StoredRecord {
                    kind: put.kind,
                    id: put.id,
                    version: v,
                    owner: put.owner,
                    expires_at: put.expires_at,
                    due_at: put.due_at,
                    data: put.data,
                },
            );
            Some(v)
        });
        Box::pin(async move { Ok(r) })
    }

    fn delete<'a>(
        &'a self,
        kind: Kind,
        id: &'a str,
        expect: Expect,
    ) -> BoxFuture<'a, StoreResult<Option<u64>>> {
        let now = now_unix();
        let r = self.with(|i| {
            if i.live(kind, id, now).is_none() || !i.matches(kind, id, expect, now) {
                return None;
            }
            i.records.remove(&(kind, id.to_owned()));
            Some(i.bump(kind, id, true))
        });
        Box::pin(async move { Ok(r) })
    }

    fn list_owned<'a>(
        &'a self,
        kind: Kind,
        owner: &'a str,
    ) -> BoxFuture<'a, StoreResult<Vec<StoredRecord>>> {
        let now = now_unix();
        let mut r = self.with(|i| {
            i.records
                .values()
                .filter(|r| {
                    r.kind == kind && r.owner == owner && r.expires_at.is_none_or(|e| e > now)
                })
                .cloned()
                .collect::<Vec<_>>()
        });
        r.sort_by(|a, b| a.id.cmp(&b.id));
        Box::pin(async move { Ok(r) })
    }

    fn due(&self, kind: Kind, now: i64, limit: usize) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        let mut r = self.with(|i| {
            i.records
                .values()
                .filter(|r| r.kind == kind && r.expires_at.is_none_or(|e| e > now))
                .filter_map(|r| r.due_at.filter(|d| *d <= now).map(|d| (d, r.id.clone())))
                .collect::<Vec<_>>()
        });
        r.sort();
        let ids = r.into_iter().take(limit).map(|(_, id)| id).collect();
        Box::pin(async move { Ok(ids) })
    }

    fn count(&self, kind: Kind) -> BoxFuture<'_, StoreResult<u64>> {
        let now = now_unix();
        let n = self.with(|i| {
            i.records
                .values()
                .filter(|r| r.kind == kind && r.expires_at.is_none_or(|e| e > now))
                .count() as u64
        });
        Box::pin(async move { Ok(n) })
    }

    fn expire(&self, now: i64) -> BoxFuture<'_, StoreResult<usize>> {
        let n = self.with(|i| {
            let gone: Vec<(Kind, String)> = i
                .records
                .iter()
                .filter(|(_, r)| r.expires_at.is_some_and(|e| e <= now))
                .map(|(k, _)| k.clone())
                .collect();
            for (kind, id) in &gone {
                i.records.remove(&(*kind, id.clone()));
                i.bump(*kind, id, true);
            }
            i.purge_leases(Instant::now());
            gone.len()
        });
        Box::pin(async move { Ok(n) })
    }

    fn changes_since(&self, since: u64) -> BoxFuture<'_, StoreResult<Changes>> {
        let r = self.with(|i| {
            if since > i.version || since < i.floor {
                return Changes {
                    version: i.version,
                    changes: Vec::new(),
                    reset: true,
                    epoch: self.epoch.clone(),
                };
            }
            Changes {
                version: i.version,
                changes: i
                    .log
                    .iter()
                    .filter(|c| c.version > since)
                    .cloned()
                    .collect(),
                reset: false,
                epoch: self.epoch.clone(),
            }
        });
        Box::pin(async move { Ok(r) })
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }

    fn try_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
        ttl_ms: u64,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        let now = Instant::now();
        let ok = self.with(|i| {
            let free = match i.leases.get(name) {
                None => true,
                Some((h, until)) => h == holder || *until <= now,
            };
            if free {
                if i.leases.len() >= i.lease_sweep_at.max(LEASE_SWEEP_MIN) {
                    i.purge_leases(now);
                }
                i.leases.insert(
                    name.to_owned(),
                    (holder.to_owned(), now + Duration::from_millis(ttl_ms)),
                );
            }
            free
        });
        Box::pin(async move { Ok(ok) })
    }

    fn release_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.with(|i| {
            if i.leases.get(name).is_some_and(|(h, _)| h == holder) {
                i.leases.remove(name);
            }
        });
        Box::pin(async move { Ok(()) })
    }

    fn ping(&self) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move { Ok(()) })
    }
}

impl MemoryStore {
    /// Number of leases held in memory, expired or not (tests: memory stays bounded).
    pub fn lease_entries(&self) -> usize {
        self.with(|i| i.leases.len())
    }
}
