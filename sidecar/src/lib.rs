//! The Portcullis sidecar: the stateful half of Portcullis.
//!
//! - [`auth`], [`oidc`], [`jwt`], [`pages`]: OIDC login, hand-off, sign-out, user info
//!   page, identity JWT signing and JWKS;
//! - [`session`] + [`databroker`]: sessions and users, encrypted at rest, in memory or
//!   Redis, versioned with a change stream;
//! - [`identity`]: the identity manager that keeps every session's claims true (token
//!   refresh, user-info refresh, termination);
//! - [`internal_api`]: what the filter calls (session views, change stream, bundle);
//! - [`ext_authz`]: external authorization for proxies without the filter (Envoy
//!   `ext_authz` HTTP + gRPC, nginx `auth_request`), same decisions;
//! - [`bundle`]: the policy bundle in service, reloaded on change;
//! - [`metrics`], [`settings`], [`state`], [`error`]: plumbing.

pub mod auth;
pub mod bundle;
pub mod databroker;
pub mod error;
pub mod ext_authz;
pub mod identity;
pub mod idp;
pub mod internal_api;
pub mod jwt;
pub mod metrics;
pub mod oidc;
pub mod pages;
pub mod session;
pub mod settings;
pub mod state;

pub use error::AppError;
pub use state::{AppParts, AppState};

use std::time::Duration;

/// The sidecar's HTTP router: the internal API, health checks and the login routes.
pub fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .merge(internal_api::routes())
        .merge(auth::routes())
        .with_state(state)
}

/// The router of the separate metrics listener.
pub fn metrics_router(state: AppState) -> axum::Router {
    internal_api::metrics_routes().with_state(state)
}

/// How often the policy source's mtime is checked. A `stat` is cheap, and replicas
/// watching one file disagree for at most this long after an edit.
pub const BUNDLE_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How often expired sessions are swept and gauges sampled.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(5);

/// Start the background tasks: identity manager, expiry sweep + gauges, change-stream
/// metrics, bundle reloader (if `bundle_source` can change), login-route reloader.
pub fn spawn_background(
    state: &AppState,
    bundle_source: bundle::BundleSource,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(identity::run(state.clone())),
        tokio::spawn(maintenance(state.clone())),
        tokio::spawn(auth::watch_routes(state.clone())),
        tokio::spawn(bundle::watch_source(
            state.bundle.clone(),
            bundle_source,
            state.metrics.clone(),
            BUNDLE_POLL_INTERVAL,
        )),
    ]
}

async fn maintenance(state: AppState) {
    let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = databroker::now_unix();
        match state.store.expire(now).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(expired = n, "expired sessions removed"),
            Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
        }
        match state.store.count(databroker::Kind::Session).await {
            Ok(n) => state
                .metrics
                .sessions
                .set(i64::try_from(n).unwrap_or(i64::MAX)),
            Err(e) => tracing::warn!(error = %e, "counting sessions failed"),
        }
        state
            .metrics
            .change_stream_lag_ms
            .set(state.store.change_lag_ms());
        let v = *state.store.subscribe().borrow();
        state
            .metrics
            .databroker_version
            .set(i64::try_from(v).unwrap_or(i64::MAX));
    }
}
