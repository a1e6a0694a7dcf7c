//! Pomerium-compatible configuration and policy, compiled to a compact bundle, and the
//! one evaluator that runs it — natively (CLI, sidecar) and inside the wasm filter.
//!
//! Layers (each only sees the one below it):
//! - `value` + `diag`: a spanned YAML/JSON value tree and positioned diagnostics;
//! - `config`: raw serde-like reading of Pomerium options → checked [`config::Config`];
//! - `ppl`: Pomerium Policy Language (and the legacy route fields) → checked policy AST;
//! - `compile`: checked config → [`bundle::Bundle`] (protobuf, deterministic);
//! - [`eval`]: decode a bundle into an immutable `Engine` and decide requests.
//!
//! Without the `frontend` feature only `bundle` and `eval` are built (the filter's view).

pub mod bundle;
pub mod eval;

#[cfg(feature = "frontend")]
pub mod compile;
#[cfg(feature = "frontend")]
pub mod config;
#[cfg(feature = "frontend")]
pub mod diag;
#[cfg(feature = "frontend")]
pub mod oracle;
#[cfg(feature = "frontend")]
pub mod ppl;
#[cfg(feature = "frontend")]
#[doc(hidden)]
pub mod testing;
#[cfg(feature = "frontend")]
pub mod value;
