//! End-to-end harness for Portcullis: real Envoy, the real `filter.wasm`, the real sidecar
//! binary, the real `oidc-provider` (tests/idp), real Redis and Chromium, all on loopback.
//!
//! - [`env`]: where the binaries are (`PORTCULLIS_BIN_DIR`, `PORTCULLIS_WASM`,
//!   `PORTCULLIS_ENVOY`, `PORTCULLIS_IDP_DIR`, `CHROMIUM`) and where logs go
//!   (`tests/output/<test>/`);
//! - [`process`]: child processes killed on drop, logs saved, readiness waits;
//! - [`services`]: the IdP, Redis, sidecar and Envoy starters;
//! - [`upstream`]: an in-process upstream app that echoes what it received and verifies
//!   `X-Pomerium-Jwt-Assertion` against the published JWKS ([`jwt`]);
//! - [`client`]: a browser-like HTTP session (cookie jar, manual redirects, IdP login form);
//! - [`stack`]: the whole deployment for one test (or `make demo`).

pub mod client;
pub mod env;
pub mod jwt;
pub mod process;
pub mod services;
pub mod stack;
pub mod upstream;
