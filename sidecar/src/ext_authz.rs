//! External authorization: Portcullis for proxies that cannot load the wasm filter.
//!
//! One listener (`ext_authz_address`) answers three protocols with the filter's decision
//! logic, the same policy bundle ([`policy_compiler::eval::Engine`], routes found by host +
//! path with [`Engine::find_route`](policy_compiler::eval::Engine::find_route)), the same
//! cookie codec, session store, identity JWTs and claim headers:
//!
//! | protocol | path | caller |
//! |---|---|---|
//! | Envoy `ext_authz` HTTP service | [`HTTP_PATH_PREFIX`] + original path | Envoy, `http_service.path_prefix` |
//! | Envoy `ext_authz` gRPC (`envoy.service.auth.v3.Authorization/Check`, h2c) | [`GRPC_CHECK_PATH`] | Envoy, `grpc_service` |
//! | nginx `auth_request` | [`NGINX_PATH`] | nginx subrequest |
//!
//! Every caller must send [`TOKEN_HEADER`] with the internal API token (derived from
//! `shared_secret`): the listener trusts the host, path and headers it is told about, so it
//! must only ever hear them from the proxy. A caller without it is denied (never an error
//! a `failure_mode_allow` proxy would turn into "allow").
//!
//! Sessions are served from an in-process cache of policy views ([`cache`]), invalidated
//! by the databroker's change stream, so a hit costs no store read, no decryption and no
//! JSON — like the filter's per-worker cache. See `docs/ext_authz.md`.

mod cache;
mod decide;
mod envoy_http;
mod grpc;
mod nginx;
pub mod proto;

pub use decide::{Outcome, Request};
pub use grpc::{frame as grpc_frame, unframe as grpc_unframe};

use crate::state::AppState;
use axum::Router;
use axum::http::HeaderMap;
use axum::routing::{any, post};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Prefix of Envoy HTTP-service check requests: configure `http_service.path_prefix` with
/// it; the rest of the path is the original request's `:path`.
pub const HTTP_PATH_PREFIX: &str = "/ext_authz";
/// The gRPC method Envoy calls (`envoy.service.auth.v3.Authorization/Check`).
pub const GRPC_CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";
/// nginx `auth_request` endpoint (original request in `X-Original-*` headers).
pub const NGINX_PATH: &str = "/nginx/auth";
/// Header carrying the caller's token: the internal API token, derived from `shared_secret`
/// (`sidecar --config … --print-ext-authz-token` prints it).
pub const TOKEN_HEADER: &str = "x-portcullis-ext-authz-token";

/// The external-authorization router (serve it on `ext_authz_address`). Starts the cache's
/// change-stream follower on the current Tokio runtime (or on the first request); the
/// follower ends when the router is dropped.
pub fn router(state: AppState) -> Router {
    let authz = Arc::new(Authorizer::new(state));
    if tokio::runtime::Handle::try_current().is_ok() {
        authz.ensure_follower();
    }
    Router::new()
        .route(GRPC_CHECK_PATH, post(grpc::check))
        .route(NGINX_PATH, any(nginx::check))
        .fallback(envoy_http::check)
        .with_state(authz)
}

/// What the three front ends share: app state, the compiled bundle, the session cache.
pub(crate) struct Authorizer {
    state: AppState,
    engine: decide::EngineHolder,
    cache: Arc<cache::SessionCache>,
    cookie_key: portcullis_common::cookie::CookieKey,
    redirect_key: portcullis_common::signed_url::RedirectKey,
    follower: AtomicBool,
}

impl Authorizer {
    fn new(state: AppState) -> Self {
        Authorizer {
            cookie_key: portcullis_common::cookie::CookieKey::new(&state.settings.cookie_secret),
            redirect_key: portcullis_common::signed_url::RedirectKey::new(
                &state.settings.shared_secret,
            ),
            engine: decide::EngineHolder::default(),
            cache: Arc::new(cache::SessionCache::new()),
            follower: AtomicBool::new(false),
            state,
        }
    }

    /// Start following the change stream once (must run inside a Tokio runtime).
    fn ensure_follower(&self) {
        if self.follower.load(Ordering::Acquire) || self.follower.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(cache::follow(
            Arc::downgrade(&self.cache),
            self.state.store.clone(),
        ));
    }

    /// Whether the caller presented the token (constant-time compare).
    fn caller_ok(&self, headers: &HeaderMap) -> bool {
        headers
            .get(TOKEN_HEADER)
            .is_some_and(|v| caller_token_ok(v.as_bytes(), &self.state.api_token))
    }
}

/// Constant-time check of a presented caller token.
fn caller_token_ok(presented: &[u8], expected: &str) -> bool {
    portcullis_common::keys::ct_eq(presented, expected.as_bytes())
}

/// Log a refused caller (never the token it sent), at most once per 10 s: a misconfigured
/// proxy would otherwise log once per request.
fn log_bad_caller(protocol: &'static str) {
    use std::sync::atomic::AtomicI64;
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = crate::databroker::now_unix();
    let last = LAST.load(Ordering::Relaxed);
    if now - last >= 10
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            protocol,
            "ext_authz caller without a valid `{TOKEN_HEADER}`: denied (logged at most every 10 s)"
        );
    }
}
