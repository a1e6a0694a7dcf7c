//! Contracts shared by the Portcullis filter (wasm, inside Envoy) and the sidecar.
//!
//! Everything that crosses the filter ↔ sidecar boundary lives here, once:
//! - [`keys`]: purpose-bound keys derived from `shared_secret` / `cookie_secret`;
//! - [`cookie`]: the session cookie codec (the sidecar seals, the filter opens);
//! - [`signed_url`]: the signed return URL the filter puts in a sign-in redirect;
//! - [`api`]: the internal API (paths, authentication, protobuf messages).
//!
//! The crate is `no_std`-friendly in spirit: no I/O, no clock, no randomness. Callers
//! pass the current time and fresh nonces in, so the filter can link it without WASI
//! randomness and tests are deterministic.

pub mod api;
pub mod cookie;
pub mod keys;
pub mod secret;
pub mod signed_url;

pub use secret::{Secret, SecretError, SecretString};
