//! The shared application state handed to every handler and background task.

use crate::bundle::BundleHolder;
use crate::databroker::Store;
use crate::idp::{IdentitySigner, IdpRegistry};
use crate::internal_api::JwtCache;
use crate::metrics::Metrics;
use crate::session::SessionService;
use crate::settings::Settings;
use std::sync::Arc;

/// Application state: cheap to clone (one `Arc`), immutable after startup except for
/// the interior-mutable pieces (store, bundle holder, caches, metrics).
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

/// The parts of [`AppState`].
pub struct AppInner {
    /// Checked settings.
    pub settings: Arc<Settings>,
    /// The databroker backend.
    pub store: Arc<dyn Store>,
    /// Sessions and users (encrypting on top of `store`).
    pub sessions: SessionService,
    /// IdP clients by client id.
    pub idps: IdpRegistry,
    /// Signs identity JWTs.
    pub signer: Arc<dyn IdentitySigner>,
    /// The policy bundle in service.
    pub bundle: BundleHolder,
    /// Metrics.
    pub metrics: Metrics,
    /// The internal API bearer token (derived from `shared_secret`).
    pub api_token: String,
    /// Signed identity JWTs by (session id, session version, audience).
    pub jwt_cache: JwtCache,
    /// Login flow state (owned by [`crate::auth`]); `None` when built without a login
    /// flow (core tests), in which case the login routes answer 503.
    pub login: Option<Arc<crate::auth::LoginState>>,
    /// This process's identity for leases (random per start).
    pub replica_id: String,
}

/// What [`AppState::new`] needs.
pub struct AppParts {
    /// Checked settings.
    pub settings: Settings,
    /// The databroker backend (see [`crate::databroker::open`]).
    pub store: Arc<dyn Store>,
    /// IdP clients.
    pub idps: IdpRegistry,
    /// Identity JWT signer.
    pub signer: Arc<dyn IdentitySigner>,
    /// Initial bundle holder.
    pub bundle: BundleHolder,
    /// Login flow state, if any.
    pub login: Option<Arc<crate::auth::LoginState>>,
}

impl AppState {
    /// Assemble the state.
    pub fn new(parts: AppParts) -> Self {
        let settings = Arc::new(parts.settings);
        let sessions = SessionService::new(
            parts.store.clone(),
            &settings.shared_secret,
            settings.identity.clone(),
        );
        let replica_id = crate::session::new_session_id()
            .map(|s| s.chars().take(16).collect())
            .unwrap_or_else(|_| format!("pid-{}", std::process::id()));
        AppState(Arc::new(AppInner {
            api_token: settings.api_token(),
            settings,
            store: parts.store,
            sessions,
            idps: parts.idps,
            signer: parts.signer,
            bundle: parts.bundle,
            metrics: Metrics::default(),
            jwt_cache: JwtCache::default(),
            login: parts.login,
            replica_id,
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}
