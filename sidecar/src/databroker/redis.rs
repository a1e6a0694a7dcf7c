//! The Redis backend (`databroker_storage_type: redis`), shared by several replicas.
//!
//! Layout (all keys under the configured prefix, default `portcullis:`):
//! - `version` — the change counter (`INCR`); `version_ts` — commit time (ms) of the last change;
//! - `rec:{kind}:{id}` — a hash `{v, o, e, d, b}`: version, owner, expiry, due time, and
//!   the encrypted body; `EXPIREAT` = the record's TTL;
//! - `idx:{kind}` (zset id → expiry), `due:{kind}` (zset id → due time),
//!   `own:{kind}:{owner}` (set of ids);
//! - `log` — zset of `"{version}|{kind}|{p|d}|{id}"` scored by version, trimmed to
//!   [`CHANGE_LOG_LEN`]; `floor` — the highest trimmed version;
//! - `lease:{name}` — `SET NX PX` leases;
//! - `epoch` — random id of this version sequence, created with `SET NX` (at connect, and
//!   again by the first reader after a `FLUSHALL` removed it): followers that see it
//!   change reset, even if the new counter already climbed past their cursor.
//!
//! Every write is one Lua script, so version, record, indexes and log entry commit
//! atomically. Followers learn of changes by polling `version` every
//! [`POLL_INTERVAL`] (other replicas' changes arrive well within 1 s).

use super::{
    CHANGE_LOG_LEN, Change, Changes, Expect, Kind, Put, Store, StoreError, StoreResult,
    StoredRecord, now_unix, now_unix_ms,
};
use crate::idp::BoxFuture;
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// How often each process polls the version key for other replicas' changes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

const PUT_LUA: &str = r#"
local rec, mode, expect = KEYS[1], ARGV[7], ARGV[8]
local cur = redis.call('HGET', rec, 'v')
if mode == 'absent' and cur then return -1 end
if mode == 'version' and cur ~= expect then return -1 end
local p, kind, id, owner = ARGV[12], ARGV[1], ARGV[2], ARGV[3]
local v = redis.call('INCR', p .. 'version')
redis.call('DEL', rec)
redis.call('HSET', rec, 'v', v, 'o', owner, 'b', ARGV[4], 'e', ARGV[5], 'd', ARGV[6])
local exp = tonumber(ARGV[5])
if exp > 0 then
  redis.call('EXPIREAT', rec, exp)
  redis.call('ZADD', p .. 'idx:' .. kind, exp, id)
else
  redis.call('ZADD', p .. 'idx:' .. kind, '+inf', id)
end
if tonumber(ARGV[6]) >= 0 then
  redis.call('ZADD', p .. 'due:' .. kind, ARGV[6], id)
else
  redis.call('ZREM', p .. 'due:' .. kind, id)
end
if owner ~= '' then redis.call('SADD', p .. 'own:' .. kind .. ':' .. owner, id) end
redis.call('ZADD', p .. 'log', v, v .. '|' .. kind .. '|p|' .. id)
redis.call('SET', p .. 'version_ts', ARGV[10])
local n = redis.call('ZCARD', p .. 'log')
local keep = tonumber(ARGV[11])
if n > keep then
  local gone = redis.call('ZRANGE', p .. 'log', n - keep - 1, n - keep - 1, 'WITHSCORES')
  redis.call('SET', p .. 'floor', gone[2])
  redis.call('ZREMRANGEBYRANK', p .. 'log', 0, n - keep - 1)
end
return v
"#;

const DELETE_LUA: &str = r#"
local rec, mode, expect = KEYS[1], ARGV[3], ARGV[4]
local cur = redis.call('HGET', rec, 'v')
if not cur then return -1 end
if mode == 'absent' then return -1 end
if mode == 'version' and cur ~= expect then return -1 end
local p, kind, id = ARGV[7], ARGV[1], ARGV[2]
local owner = redis.call('HGET', rec, 'o')
redis.call('DEL', rec)
redis.call('ZREM', p .. 'idx:' .. kind, id)
redis.call('ZREM', p .. 'due:' .. kind, id)
if owner and owner ~= '' then redis.call('SREM', p .. 'own:' .. kind .. ':' .. owner, id) end
local v = redis.call('INCR', p .. 'version')
redis.call('ZADD', p .. 'log', v, v .. '|' .. kind .. '|d|' .. id)
redis.call('SET', p .. 'version_ts', ARGV[5])
local n = redis.call('ZCARD', p .. 'log')
local keep = tonumber(ARGV[6])
if n > keep then
  local gone = redis.call('ZRANGE', p .. 'log', n - keep - 1, n - keep - 1, 'WITHSCORES')
  redis.call('SET', p .. 'floor', gone[2])
  redis.call('ZREMRANGEBYRANK', p .. 'log', 0, n - keep - 1)
end
return v
"#;

/// Remove records whose TTL passed from the indexes and log their deletion. Redis has
/// already dropped (or is about to drop) the record keys themselves.
const EXPIRE_LUA: &str = r#"
local p, kind, now = ARGV[1], ARGV[2], ARGV[3]
local ids = redis.call('ZRANGEBYSCORE', p .. 'idx:' .. kind, '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(ids) do
  local rec = p .. 'rec:' .. kind .. ':' .. id
  local owner = redis.call('HGET', rec, 'o')
  redis.call('DEL', rec)
  redis.call('ZREM', p .. 'idx:' .. kind, id)
  redis.call('ZREM', p .. 'due:' .. kind, id)
  if owner and owner ~= '' then redis.call('SREM', p .. 'own:' .. kind .. ':' .. owner, id) end
  local v = redis.call('INCR', p .. 'version')
  redis.call('ZADD', p .. 'log', v, v .. '|' .. kind .. '|d|' .. id)
  redis.call('SET', p .. 'version_ts', ARGV[4])
end
local n = redis.call('ZCARD', p .. 'log')
local keep = tonumber(ARGV[5])
if n > keep then
  local gone = redis.call('ZRANGE', p .. 'log', n - keep - 1, n - keep - 1, 'WITHSCORES')
  redis.call('SET', p .. 'floor', gone[2])
  redis.call('ZREMRANGEBYRANK', p .. 'log', 0, n - keep - 1)
end
return #ids
"#;

const LEASE_LUA: &str = r#"
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"#;

struct Shared {
    tx: watch::Sender<u64>,
    lag_ms: AtomicI64,
}

/// Redis-backed storage.
pub struct RedisStore {
    con: ConnectionManager,
    prefix: String,
    shared: Arc<Shared>,
    put: redis::Script,
    delete: redis::Script,
    expire: redis::Script,
    lease: redis::Script,
    release: redis::Script,
    poller: tokio::task::JoinHandle<()>,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

fn backend(e: redis::RedisError) -> StoreError {
    // Redis errors can echo the connection string's host but never values: we only send
    // encrypted bodies and ids.
    StoreError::Backend(e.to_string())
}

fn kind_i(expect: Expect) -> (&'static str, u64) {
    match expect {
        Expect::Any => ("any", 0),
        Expect::Absent => ("absent", 0),
        Expect::Version(v) => ("version", v),
    }
}

impl RedisStore {
    /// Connect to `connection_string` (`redis://[:password@]host:port[/db]`), keys under
    /// `key_prefix`. Fails if Redis cannot be reached now; later outages are retried.
    pub async fn connect(connection_string: &str, key_prefix: &str) -> StoreResult<Self> {
        let client = redis::Client::open(connection_string)
            .map_err(|e| StoreError::Config(format!("bad redis connection string: {e}")))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(2)
            .set_max_delay(500);
        let mut con = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(backend)?;
        let v: Option<u64> = redis::cmd("GET")
            .arg(format!("{key_prefix}version"))
            .query_async(&mut con)
            .await
            .map_err(backend)?;
        let shared = Arc::new(Shared {
            tx: watch::Sender::new(v.unwrap_or(0)),
            lag_ms: AtomicI64::new(0),
        });
        ensure_epoch(&mut con, key_prefix).await?;
        let poller = tokio::spawn(poll_version(
            con.clone(),
            format!("{key_prefix}version"),
            format!("{key_prefix}version_ts"),
            Arc::downgrade(&shared),
        ));
        Ok(RedisStore {
            con,
            prefix: key_prefix.to_owned(),
            shared,
            put: redis::Script::new(PUT_LUA),
            delete: redis::Script::new(DELETE_LUA),
            expire: redis::Script::new(EXPIRE_LUA),
            lease: redis::Script::new(LEASE_LUA),
            release: redis::Script::new(RELEASE_LUA),
            poller,
        })
    }

    fn rec_key(&self, kind: Kind, id: &str) -> String {
        format!("{}rec:{}:{}", self.prefix, kind.as_str(), id)
    }

    /// Record a version this process itself produced (no need to wait for the poller).
    fn saw(&self, v: u64) {
        self.shared.tx.send_if_modified(|cur| {
            if v > *cur {
                *cur = v;
                true
            } else {
                false
            }
        });
    }

    async fn read_record(
        &self,
        con: &mut ConnectionManager,
        kind: Kind,
        id: &str,
    ) -> StoreResult<Option<StoredRecord>> {
        let h: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(self.rec_key(kind, id))
            .query_async(con)
            .await
            .map_err(backend)?;
        Ok(parse_record(kind, id, h, now_unix()))
    }
}

/// The epoch, creating a new random one if there is none (fresh or flushed Redis).
/// `SET NX` so concurrent replicas agree on one.
async fn ensure_epoch(con: &mut ConnectionManager, prefix: &str) -> StoreResult<String> {
    let key = format!("{prefix}epoch");
    let _: Option<String> = redis::cmd("SET")
        .arg(&key)
        .arg(super::new_epoch())
        .arg("NX")
        .query_async(con)
        .await
        .map_err(backend)?;
    let e: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(con)
        .await
        .map_err(backend)?;
    // Deleted again between the two commands (another FLUSHALL): an empty epoch differs
    // from any real one, so followers still reset.
    Ok(e.unwrap_or_default())
}

fn field<T: std::str::FromStr>(h: &HashMap<String, Vec<u8>>, name: &str) -> Option<T> {
    std::str::from_utf8(h.get(name)?).ok()?.parse().ok()
}

fn parse_record(
    kind: Kind,
    id: &str,
    mut h: HashMap<String, Vec<u8>>,
    now: i64,
) -> Option<StoredRecord> {
    let version: u64 = field(&h, "v")?;
    let expires: i64 = field(&h, "e").unwrap_or(0);
    let due: i64 = field(&h, "d").unwrap_or(-1);
    let owner = h
        .get("o")
        .and_then(|o| String::from_utf8(o.clone()).ok())
        .unwrap_or_default();
    let expires_at = (expires > 0).then_some(expires);
    if expires_at.is_some_and(|e| e <= now) {
        return None;
    }
    Some(StoredRecord {
        kind,
        id: id.to_owned(),
        version,
        owner,
        expires_at,
        due_at: (due >= 0).then_some(due),
        data: h.remove("b").unwrap_or_default(),
    })
}

async fn poll_version(
    mut con: ConnectionManager,
    version_key: String,
    ts_key: String,
    shared: Weak<Shared>,
) {
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let r: redis::RedisResult<(Option<u64>, Option<i64>)> = redis::cmd("MGET")
            .arg(&version_key)
            .arg(&ts_key)
            .query_async(&mut con)
            .await;
        match r {
            Ok((v, ts)) => {
                let v = v.unwrap_or(0);
                let changed = shared.tx.send_if_modified(|cur| {
                    // Also follow a *lower* version: Redis was flushed; followers get `reset`.
                    if v != *cur {
                        *cur = v;
                        true
                    } else {
                        false
                    }
                });
                if changed && let Some(ts) = ts {
                    shared
                        .lag_ms
                        .store((now_unix_ms() - ts).max(0), Ordering::Relaxed);
                }
            }
            Err(e) => tracing::debug!(error = %e, "redis version poll failed"),
        }
    }
}

fn parse_log_entry(member: &str) -> Option<Change> {
    let mut parts = member.splitn(4, '|');
    let version = parts.next()?.parse().ok()?;
    let kind = Kind::parse(parts.next()?)?;
    let deleted = match parts.next()? {
        "p" => false,
        "d" => true,
        _ => return None,
    };
    Some(Change {
        version,
        kind,
        id: parts.next()?.to_owned(),
        deleted,
    })
}

impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn get<'a>(
        &'a self,
        kind: Kind,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<StoredRecord>>> {
        Box::pin(async move {
            let mut con = self.con.clone();
            self.read_record(&mut con, kind, id).await
        })
    }

    fn put(&self, put: Put) -> BoxFuture<'_, StoreResult<Option<u64>>> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let (mode, expect) = kind_i(put.expect);
            let v: i64 = self
                .put
                .key(self.rec_key(put.kind, &put.id))
                .arg(put.kind.as_str())
                .arg(&put.id)
                .arg(&put.owner)
                .arg(&put.data)
                .arg(put.expires_at.unwrap_or(0))
                .arg(put.due_at.unwrap_or(-1))
                .arg(mode)
                .arg(expect.to_string())
                .arg(now_unix())
                .arg(now_unix_ms())
                .arg(CHANGE_LOG_LEN)
                .arg(&self.prefix)
                .invoke_async(&mut con)
                .await
                .map_err(backend)?;
            let v = u64::try_from(v).ok();
            if let Some(v) = v {
                self.saw(v);
            }
            Ok(v)
        })
    }

    fn delete<'a>(
        &'a self,
        kind: Kind,
        id: &'a str,
        expect: Expect,
    ) -> BoxFuture<'a, StoreResult<Option<u64>>> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let (mode, ev) = kind_i(expect);
            let v: i64 = self
                .delete
                .key(self.rec_key(kind, id))
                .arg(kind.as_str())
                .arg(id)
                .arg(mode)
                .arg(ev.to_string())
                .arg(now_unix_ms())
                .arg(CHANGE_LOG_LEN)
                .arg(&self.prefix)
                .invoke_async(&mut con)
                .await
                .map_err(backend)?;
            let v = u64::try_from(v).ok();
            if let Some(v) = v {
                self.saw(v);
            }
            Ok(v)
        })
    }

    fn list_owned<'a>(
        &'a self,
        kind: Kind,
        owner: &'a str,
    ) -> BoxFuture<'a, StoreResult<Vec<StoredRecord>>> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let own_key = format!("{}own:{}:{}", self.prefix, kind.as_str(), owner);
            let mut ids: Vec<String> = redis::cmd("SMEMBERS")
                .arg(&own_key)
                .query_async(&mut con)
                .await
                .map_err(backend)?;
            ids.sort();
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                match self.read_record(&mut con, kind, &id).await? {
                    Some(r) if r.owner == owner => out.push(r),
                    // Expired or re-owned: clean the index lazily.
                    _ => {
                        let _: redis::RedisResult<i64> = redis::cmd("SREM")
                            .arg(&own_key)
                            .arg(&id)
                            .query_async(&mut con)
                            .await;
                    }
                }
            }
            Ok(out)
        })
    }

    fn due(&self, kind: Kind, now: i64, limit: usize) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        Box::pin(async move {
            let mut con = self.con.clone();
            redis::cmd("ZRANGEBYSCORE")
                .arg(format!("{}due:{}", self.prefix, kind.as_str()))
                .arg("-inf")
                .arg(now)
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query_async(&mut con)
                .await
                .map_err(backend)
        })
    }

    fn count(&self, kind: Kind) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async move {
            let mut con = self.con.clone();
            redis::cmd("ZCOUNT")
                .arg(format!("{}idx:{}", self.prefix, kind.as_str()))
                .arg(format!("({}", now_unix()))
                .arg("+inf")
                .query_async(&mut con)
                .await
                .map_err(backend)
        })
    }

    fn expire(&self, now: i64) -> BoxFuture<'_, StoreResult<usize>> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let mut total = 0usize;
            for kind in [Kind::Session, Kind::User] {
                let n: usize = self
                    .expire
                    .arg(&self.prefix)
                    .arg(kind.as_str())
                    .arg(now)
                    .arg(now_unix_ms())
                    .arg(CHANGE_LOG_LEN)
                    .invoke_async(&mut con)
                    .await
                    .map_err(backend)?;
                total += n;
            }
            Ok(total)
        })
    }

    fn changes_since(&self, since: u64) -> BoxFuture<'_, StoreResult<Changes>> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let p = &self.prefix;
            type Read = (Option<u64>, Option<u64>, Vec<String>, Option<String>);
            let (version, floor, members, epoch): Read = redis::pipe()
                .atomic()
                .cmd("GET")
                .arg(format!("{p}version"))
                .cmd("GET")
                .arg(format!("{p}floor"))
                .cmd("ZRANGEBYSCORE")
                .arg(format!("{p}log"))
                .arg(format!("({since}"))
                .arg("+inf")
                .cmd("GET")
                .arg(format!("{p}epoch"))
                .query_async(&mut con)
                .await
                .map_err(backend)?;
            let epoch = match epoch {
                Some(e) => e,
                None => ensure_epoch(&mut con, p).await?,
            };
            let version = version.unwrap_or(0);
            self.saw(version);
            if since > version || since < floor.unwrap_or(0) {
                return Ok(Changes {
                    version,
                    changes: Vec::new(),
                    reset: true,
                    epoch,
                });
            }
            Ok(Changes {
                version,
                changes: members.iter().filter_map(|m| parse_log_entry(m)).collect(),
                reset: false,
                epoch,
            })
        })
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.tx.subscribe()
    }

    fn change_lag_ms(&self) -> i64 {
        self.shared.lag_ms.load(Ordering::Relaxed)
    }

    fn try_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
        ttl_ms: u64,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let r: i64 = self
                .lease
                .key(format!("{}lease:{}", self.prefix, name))
                .arg(holder)
                .arg(ttl_ms.max(1))
                .invoke_async(&mut con)
                .await
                .map_err(backend)?;
            Ok(r == 1)
        })
    }

    fn release_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
    ) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let _: i64 = self
                .release
                .key(format!("{}lease:{}", self.prefix, name))
                .arg(holder)
                .invoke_async(&mut con)
                .await
                .map_err(backend)?;
            Ok(())
        })
    }

    fn ping(&self) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let _: String = redis::cmd("PING")
                .query_async(&mut con)
                .await
                .map_err(backend)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_entries_parse() {
        assert_eq!(
            parse_log_entry("12|session|d|abc|def"),
            Some(Change {
                version: 12,
                kind: Kind::Session,
                id: "abc|def".into(),
                deleted: true
            })
        );
        assert_eq!(parse_log_entry("x|session|d|a"), None);
        assert_eq!(parse_log_entry("1|nope|d|a"), None);
        assert_eq!(parse_log_entry("1|user|q|a"), None);
    }
}
