//! Tests of the sidecar core: databroker (memory and a real Redis), sessions, the
//! identity manager with a fake IdP, the internal API and the bundle reloader.
//! One test binary (several modules) keeps link time down.

// Test helpers outside `#[test]` functions may fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "core/support.rs"]
mod support;

#[path = "core/storage.rs"]
mod storage;

#[path = "core/identity.rs"]
mod identity;

#[path = "core/api.rs"]
mod api;

#[path = "core/binary.rs"]
mod binary;

#[path = "core/config.rs"]
mod config;
