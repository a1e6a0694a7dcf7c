//! The databroker: versioned records (sessions, users) with a change stream.
//!
//! [`Store`] is the backend contract, implemented in memory ([`memory::MemoryStore`], the
//! default) and on Redis ([`redis::RedisStore`]). Backends store opaque bytes: callers
//! encrypt record bodies with [`crypto::RecordCipher`] first, so a backend (and whoever
//! reads its disk) never sees a token or a claim. Only ids, the owner (the session service
//! passes a keyed hash of the user id, never the `sub` itself), versions and timestamps
//! are plaintext.
//!
//! Every change (put or delete) gets the next value of one monotonically increasing
//! version counter, committed atomically with the record and its change-log entry.
//! [`Store::changes_since`] reads the log; [`Store::subscribe`] wakes waiters when the
//! version moves (memory: immediately; Redis: within the poll interval, ≤ 100 ms).

pub mod crypto;
pub mod memory;
pub mod redis;

use crate::idp::BoxFuture;
use tokio::sync::watch;

/// Record types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A login session.
    Session,
    /// A user (newest user info, email, name).
    User,
}

impl Kind {
    /// Stable name, used in keys and the change log.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Session => "session",
            Kind::User => "user",
        }
    }

    /// Inverse of [`Kind::as_str`].
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "session" => Some(Kind::Session),
            "user" => Some(Kind::User),
            _ => None,
        }
    }
}

/// A record as the backend holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Record type.
    pub kind: Kind,
    /// Record id.
    pub id: String,
    /// Version of the last change to this record.
    pub version: u64,
    /// Owner (sessions: a keyed hash of the user id; users: empty). Plaintext, for
    /// per-user lookups.
    pub owner: String,
    /// Unix seconds after which the record is gone (TTL); `None` = never.
    pub expires_at: Option<i64>,
    /// Unix seconds the identity manager next has to look at the record; `None` = never.
    pub due_at: Option<i64>,
    /// The encrypted body.
    pub data: Vec<u8>,
}

/// Precondition of a write (optimistic concurrency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Write unconditionally.
    Any,
    /// Only if the record does not exist (create).
    Absent,
    /// Only if the record exists with exactly this version (read-modify-write). A record
    /// deleted meanwhile (e.g. signed out) is therefore never resurrected.
    Version(u64),
}

/// A write.
#[derive(Debug, Clone)]
pub struct Put {
    /// Record type.
    pub kind: Kind,
    /// Record id.
    pub id: String,
    /// Owning user id (may be empty).
    pub owner: String,
    /// Encrypted body.
    pub data: Vec<u8>,
    /// TTL as an absolute unix time (seconds).
    pub expires_at: Option<i64>,
    /// Next time the identity manager should look at it (unix seconds).
    pub due_at: Option<i64>,
    /// Precondition.
    pub expect: Expect,
}

/// One entry of the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The version this change got.
    pub version: u64,
    /// Record type.
    pub kind: Kind,
    /// Record id.
    pub id: String,
    /// True if the record was deleted (signed out, terminated, expired).
    pub deleted: bool,
}

/// Answer of [`Store::changes_since`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// The newest version included; the next cursor.
    pub version: u64,
    /// Changes after `since`, oldest first.
    pub changes: Vec<Change>,
    /// `since` is outside the retained history (too old, or from before a restart of a
    /// memory store): the reader must drop everything it cached.
    pub reset: bool,
    /// Identity of the version sequence: random per memory store lifetime, and for Redis
    /// a persisted random key (a flushed Redis gets a new one). Versions of different
    /// epochs are unrelated: a reader that sees the epoch change must drop everything
    /// (even when its cursor happens to look valid).
    pub epoch: String,
}

/// A backend failure (Redis down, corrupt entry). Never contains record contents.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or answered an error.
    #[error("databroker backend error: {0}")]
    Backend(String),
    /// A stored value could not be decoded or decrypted.
    #[error("databroker record `{0}` is corrupt or was encrypted with another key")]
    Corrupt(String),
    /// Invalid backend settings.
    #[error("invalid databroker settings: {0}")]
    Config(String),
}

/// Result type of the databroker.
pub type StoreResult<T> = Result<T, StoreError>;

/// How many change-log entries a backend keeps. Readers further behind get `reset`.
pub const CHANGE_LOG_LEN: u64 = 10_000;

/// A databroker backend. Dyn-compatible; shared as `Arc<dyn Store>`.
pub trait Store: Send + Sync {
    /// Backend name for logs and metrics (`memory`, `redis`).
    fn backend(&self) -> &'static str;

    /// One record; `None` if absent or expired.
    fn get<'a>(
        &'a self,
        kind: Kind,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<StoredRecord>>>;

    /// Write a record. `Ok(Some(version))` on success, `Ok(None)` if the precondition
    /// failed (nothing written, no version used).
    fn put(&self, put: Put) -> BoxFuture<'_, StoreResult<Option<u64>>>;

    /// Delete a record. `Ok(Some(version))` if it existed (and matched `expect`),
    /// `Ok(None)` otherwise.
    fn delete<'a>(
        &'a self,
        kind: Kind,
        id: &'a str,
        expect: Expect,
    ) -> BoxFuture<'a, StoreResult<Option<u64>>>;

    /// Every live record of `kind` owned by `owner`.
    fn list_owned<'a>(
        &'a self,
        kind: Kind,
        owner: &'a str,
    ) -> BoxFuture<'a, StoreResult<Vec<StoredRecord>>>;

    /// Ids of live records of `kind` whose `due_at` ≤ `now`, most overdue first, at most `limit`.
    fn due(&self, kind: Kind, now: i64, limit: usize) -> BoxFuture<'_, StoreResult<Vec<String>>>;

    /// Number of live records of `kind`.
    fn count(&self, kind: Kind) -> BoxFuture<'_, StoreResult<u64>>;

    /// Delete records whose TTL passed, logging a deletion for each (so followers learn
    /// of it). Returns how many. Safe to run on every replica concurrently.
    fn expire(&self, now: i64) -> BoxFuture<'_, StoreResult<usize>>;

    /// The change log after `since`.
    fn changes_since(&self, since: u64) -> BoxFuture<'_, StoreResult<Changes>>;

    /// The newest version this process has seen; changes whenever the store changes
    /// (also through other replicas, for shared backends).
    fn subscribe(&self) -> watch::Receiver<u64>;

    /// Milliseconds between the newest change's commit and this process noticing it
    /// (0 for in-process backends).
    fn change_lag_ms(&self) -> i64 {
        0
    }

    /// Take (or extend) the named lease for `holder` if free or already ours.
    fn try_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
        ttl_ms: u64,
    ) -> BoxFuture<'a, StoreResult<bool>>;

    /// Give up a lease if `holder` still holds it.
    fn release_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
    ) -> BoxFuture<'a, StoreResult<()>>;

    /// Is the backend reachable (for `/readyz`)?
    fn ping(&self) -> BoxFuture<'_, StoreResult<()>>;
}

/// A fresh random epoch: 16 random bytes, hex (falls back to the clock if the OS has no
/// randomness, which only weakens uniqueness, never safety: any change still resets).
pub fn new_epoch() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = t.to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Current unix time in seconds.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Current unix time in milliseconds.
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How long [`open`] keeps trying to reach Redis at startup (it may start alongside us).
pub const STARTUP_CONNECT_WINDOW: std::time::Duration = std::time::Duration::from_secs(30);

/// Open the configured backend. Redis is retried for [`STARTUP_CONNECT_WINDOW`] (with
/// backoff) before giving up; a bad connection string fails at once.
pub async fn open(
    settings: &crate::settings::StorageSettings,
) -> StoreResult<std::sync::Arc<dyn Store>> {
    use crate::settings::StorageSettings;
    match settings {
        StorageSettings::Memory => Ok(std::sync::Arc::new(memory::MemoryStore::new())),
        StorageSettings::Redis {
            connection_string,
            key_prefix,
        } => {
            let deadline = tokio::time::Instant::now() + STARTUP_CONNECT_WINDOW;
            let mut delay = std::time::Duration::from_millis(250);
            loop {
                match redis::RedisStore::connect(connection_string, key_prefix).await {
                    Ok(store) => return Ok(std::sync::Arc::new(store)),
                    Err(e @ StoreError::Config(_)) => return Err(e),
                    Err(e) if tokio::time::Instant::now() + delay >= deadline => return Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "redis not reachable yet; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(std::time::Duration::from_secs(5));
                    }
                }
            }
        }
    }
}
