//! Login, callback, hand-off and sign-out routes. Owned by the login flow (H2b).
//!
//! Contract with the core (`lib.rs`, `main.rs`):
//! - [`routes`] is merged into the sidecar's router;
//! - [`setup`] runs once at startup and returns the IdP clients, the identity JWT
//!   signer and this module's own state ([`LoginState`], reachable as `state.login`).

use crate::error::StartupError;
use crate::idp::{IdentitySigner, IdpRegistry};
use crate::settings::Settings;
use crate::state::AppState;
use axum::Router;
use std::sync::Arc;

/// Whatever the login flow needs at request time (OIDC clients, keys...).
#[derive(Debug, Default)]
pub struct LoginState {}

/// What [`setup`] produces.
pub struct Setup {
    /// IdP clients by client id.
    pub idps: IdpRegistry,
    /// Identity JWT signer.
    pub signer: Arc<dyn IdentitySigner>,
    /// Login flow state.
    pub login: Arc<LoginState>,
}

/// Build the IdP clients (OIDC discovery), the signer and the login state.
pub async fn setup(_settings: &Settings) -> Result<Setup, StartupError> {
    Err(StartupError::Other(
        "the OIDC login flow is not implemented yet".to_owned(),
    ))
}

/// Browser-facing routes (`/oauth2/callback`, `/.pomerium/*`, JWKS).
pub fn routes() -> Router<AppState> {
    Router::new()
}
