//! The Redis backend (`databroker_storage_type: redis`).
//! (Being implemented; see the crate README.)

use super::{Changes, Expect, Kind, Put, Store, StoreError, StoreResult, StoredRecord};
use crate::idp::BoxFuture;
use tokio::sync::watch;

/// Redis-backed storage shared by several sidecar replicas.
pub struct RedisStore {
    tx: watch::Sender<u64>,
}

impl RedisStore {
    /// Connect to `connection_string`, keys under `key_prefix`.
    pub async fn connect(_connection_string: &str, _key_prefix: &str) -> StoreResult<Self> {
        Err(StoreError::Config(
            "the redis backend is not implemented yet".to_owned(),
        ))
    }
}

fn unimplemented<T: Send + 'static>() -> BoxFuture<'static, StoreResult<T>> {
    Box::pin(async { Err(StoreError::Backend("not implemented".to_owned())) })
}

impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }
    fn get<'a>(&'a self, _: Kind, _: &'a str) -> BoxFuture<'a, StoreResult<Option<StoredRecord>>> {
        unimplemented()
    }
    fn put(&self, _: Put) -> BoxFuture<'_, StoreResult<Option<u64>>> {
        unimplemented()
    }
    fn delete<'a>(
        &'a self,
        _: Kind,
        _: &'a str,
        _: Expect,
    ) -> BoxFuture<'a, StoreResult<Option<u64>>> {
        unimplemented()
    }
    fn list_owned<'a>(
        &'a self,
        _: Kind,
        _: &'a str,
    ) -> BoxFuture<'a, StoreResult<Vec<StoredRecord>>> {
        unimplemented()
    }
    fn due(&self, _: Kind, _: i64, _: usize) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        unimplemented()
    }
    fn count(&self, _: Kind) -> BoxFuture<'_, StoreResult<u64>> {
        unimplemented()
    }
    fn expire(&self, _: i64) -> BoxFuture<'_, StoreResult<usize>> {
        unimplemented()
    }
    fn changes_since(&self, _: u64) -> BoxFuture<'_, StoreResult<Changes>> {
        unimplemented()
    }
    fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
    fn try_lease<'a>(&'a self, _: &'a str, _: &'a str, _: u64) -> BoxFuture<'a, StoreResult<bool>> {
        unimplemented()
    }
    fn release_lease<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        unimplemented()
    }
    fn ping(&self) -> BoxFuture<'_, StoreResult<()>> {
        unimplemented()
    }
}
