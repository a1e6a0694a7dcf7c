//! The internal API the filter calls (see `portcullis_common::api` for the contract),
//! plus `/healthz` and `/readyz`.
//!
//! Every internal API request must carry the bearer token derived from `shared_secret`
//! (constant-time check, 401 otherwise) — checked before anything else is looked at.

use crate::databroker::{Kind, now_unix};
use crate::error::AppError;
use crate::idp::IdentitySigner;
use crate::metrics::Metrics;
use crate::session::Session;
use crate::state::AppState;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use portcullis_common::api::{self, ChangesResponse, SessionResponse};
use prost::Message;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The internal API routes and health checks.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(api::PATH_SESSION, get(session))
        .route(api::PATH_CHANGES, get(changes))
        .route(api::PATH_BUNDLE, get(bundle))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The routes of the separate metrics listener (`metrics_address`).
pub fn metrics_routes() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    let ok = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| api::check_authorization(v, &state.api_token));
    if ok {
        Ok(())
    } else {
        Err(AppError::Unauthorized)
    }
}

fn protobuf(msg: &impl Message) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(api::CONTENT_TYPE_PROTOBUF),
        )],
        msg.encode_to_vec(),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct SessionQuery {
    #[serde(default)]
    id: String,
    #[serde(default)]
    aud: String,
}

/// How long before its `exp` a cached identity JWT is re-signed. The filter refetches
/// before `jwt_expires_at`, so what we hand out must still be valid for a while.
const JWT_REUSE_MARGIN_SECS: i64 = 60;
/// Entries beyond which the JWT cache drops expired entries (and, if still full, all).
const JWT_CACHE_CAP: usize = 50_000;

/// Signed identity JWTs, by session id, then (session version, audience). A new session
/// version (claims changed) can never be served an old signature.
///
/// Keyed by session first so that dropping a session's superseded signatures touches only
/// that session's entry: a whole-map sweep on every insert made each cache miss cost
/// O(cache size) (seen in `make bench` as miss cost growing round by round).
#[derive(Default)]
pub struct JwtCache(Mutex<HashMap<String, SessionJwts>>);

/// One session's signed JWTs: all of the same session version, one per audience.
struct SessionJwts {
    version: u64,
    /// (audience, JWT, exp); at most [`JWT_AUDIENCES_CAP`].
    by_audience: Vec<(String, String, i64)>,
}

/// Audiences remembered per session (a user rarely visits more apps within a JWT's life;
/// beyond this the oldest is dropped, which only costs a re-signature).
const JWT_AUDIENCES_CAP: usize = 16;

impl JwtCache {
    /// The cached JWT for `session` and `audience`, signing a new one if absent or near
    /// expiry.
    pub fn get_or_sign(
        &self,
        session: &Session,
        audience: &str,
        signer: &dyn IdentitySigner,
        metrics: &Metrics,
    ) -> Result<(String, i64), AppError> {
        let now = now_unix();
        {
            let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = map.get(&session.id)
                && s.version == session.version
                && let Some((_, jwt, exp)) = s.by_audience.iter().find(|(a, _, _)| a == audience)
                && *exp - JWT_REUSE_MARGIN_SECS > now
            {
                return Ok((jwt.clone(), *exp));
            }
        }
        let (jwt, exp) = signer.sign(session, audience)?;
        metrics.jwt_signatures.inc();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= JWT_CACHE_CAP && !map.contains_key(&session.id) {
            // Rare (once per JWT_CACHE_CAP new sessions at most): sweep, then give up.
            map.retain(|_, s| {
                s.by_audience
                    .retain(|(_, _, e)| *e - JWT_REUSE_MARGIN_SECS > now);
                !s.by_audience.is_empty()
            });
            if map.len() >= JWT_CACHE_CAP {
                map.clear();
            }
        }
        let entry = map
            .entry(session.id.clone())
            .or_insert_with(|| SessionJwts {
                version: session.version,
                by_audience: Vec::new(),
            });
        if entry.version < session.version {
            // Older versions of this session are dead weight now.
            entry.version = session.version;
            entry.by_audience.clear();
        }
        if entry.version == session.version {
            entry.by_audience.retain(|(a, _, _)| a != audience);
            if entry.by_audience.len() >= JWT_AUDIENCES_CAP {
                entry.by_audience.remove(0);
            }
            entry
                .by_audience
                .push((audience.to_owned(), jwt.clone(), exp));
        }
        // else: this caller read an older version than one already cached; its JWT is
        // handed out (it matches what it read) but never cached over the newer one.
        Ok((jwt, exp))
    }

    /// Number of cached JWTs (all sessions, all audiences).
    pub fn len(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|s| s.by_audience.len())
            .sum()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

async fn session(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<SessionQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    authorize(&state, &headers)?;
    let Query(q) = query.map_err(|_| AppError::BadRequest("malformed query"))?;
    if q.aud.is_empty() {
        return Err(AppError::BadRequest("missing `aud`"));
    }
    Ok(protobuf(&session_response(&state, &q.id, &q.aud).await?))
}

/// One session's policy view and identity JWT for `audience`, exactly as the filter
/// receives them from [`api::PATH_SESSION`]: `found=false` for an unknown, deleted or
/// expired id. Shared by the internal API and [`crate::ext_authz`], so both answer from
/// the same record with the same JWT cache.
pub async fn session_response(
    state: &AppState,
    id: &str,
    audience: &str,
) -> Result<SessionResponse, AppError> {
    state.metrics.session_lookups.inc();
    let Some(session) = state.sessions.get(id).await? else {
        return Ok(SessionResponse::default());
    };
    if session.expires_at <= now_unix() {
        return Ok(SessionResponse::default());
    }
    let view = session.view(&state.settings.jwt_claims_headers);
    let (jwt, exp) =
        state
            .jwt_cache
            .get_or_sign(&session, audience, state.signer.as_ref(), &state.metrics)?;
    Ok(SessionResponse {
        found: true,
        view: Some(view),
        identity_jwt: jwt,
        jwt_expires_at: exp.min(session.expires_at),
    })
}

#[derive(Debug, Deserialize)]
struct ChangesQuery {
    #[serde(default)]
    since: u64,
    #[serde(default)]
    wait_ms: u64,
    /// The bundle version the caller has; a different current version answers at once.
    #[serde(default)]
    bundle: Option<String>,
    /// The epoch of the caller's cursor; a different current epoch answers `reset` at once.
    #[serde(default)]
    epoch: Option<String>,
}

async fn changes(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ChangesQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    authorize(&state, &headers)?;
    let Query(q) = query.map_err(|_| AppError::BadRequest("malformed query"))?;
    let wait = Duration::from_millis(q.wait_ms.min(api::MAX_WAIT_MS));
    // Subscribe before reading, so a change between the read and the wait is not missed.
    let mut versions = state.store.subscribe();
    let mut bundles = state.bundle.subscribe();
    let bundle_at_start = state.bundle.current().version.clone();

    let caller_epoch = q.epoch.as_deref().filter(|e| !e.is_empty());
    let mut resp = read_changes(&state, q.since, caller_epoch).await?;
    let caller_bundle_stale = q.bundle.as_ref().is_some_and(|b| *b != resp.bundle_version);
    let has_news = resp.reset || !resp.changed.is_empty() || !resp.deleted.is_empty();
    if has_news || caller_bundle_stale || wait.is_zero() {
        return Ok(protobuf(&resp));
    }
    let since = q.since;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let timed_out = tokio::select! {
            r = versions.changed() => r.is_err(),
            r = bundles.changed() => r.is_err(),
            () = tokio::time::sleep_until(deadline) => true,
        };
        if timed_out && tokio::time::Instant::now() < deadline {
            // A watch sender went away (shutting down): just sit out the wait.
            tokio::time::sleep_until(deadline).await;
        }
        resp = read_changes(&state, since, caller_epoch).await?;
        let has_news = resp.reset
            || !resp.changed.is_empty()
            || !resp.deleted.is_empty()
            || resp.bundle_version != bundle_at_start;
        // Changes to other record kinds (users) wake us but are no news to the filter.
        if has_news || timed_out || tokio::time::Instant::now() >= deadline {
            return Ok(protobuf(&resp));
        }
    }
}

/// The filter-relevant changes after `since`: session ids, last operation wins.
async fn read_changes(
    state: &AppState,
    since: u64,
    caller_epoch: Option<&str>,
) -> Result<ChangesResponse, AppError> {
    let bundle_version = state.bundle.current().version.clone();
    let mut ch = state.store.changes_since(since).await?;
    if caller_epoch.is_some_and(|e| e != ch.epoch) {
        // The caller's cursor is from another version sequence (restart, flush): its
        // number may look valid here, but nothing after it is known.
        ch.reset = true;
        ch.changes.clear();
    }
    // No special case for `since=0`: 0 is a real cursor (an empty store), and a follower
    // at 0 must still learn of every session created *and deleted* before its next poll.
    let mut last: HashMap<&str, (u64, bool)> = HashMap::new();
    for c in ch.changes.iter().filter(|c| c.kind == Kind::Session) {
        last.insert(c.id.as_str(), (c.version, c.deleted));
    }
    let mut entries: Vec<(&str, (u64, bool))> = last.into_iter().collect();
    entries.sort_by_key(|(_, (v, _))| *v);
    let mut resp = ChangesResponse {
        version: ch.version,
        bundle_version,
        reset: ch.reset,
        epoch: ch.epoch,
        ..Default::default()
    };
    for (id, (_, deleted)) in entries {
        if deleted {
            resp.deleted.push(id.to_owned());
        } else {
            resp.changed.push(id.to_owned());
        }
    }
    Ok(resp)
}

async fn bundle(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    authorize(&state, &headers)?;
    let b = state.bundle.current();
    if b.bytes.is_empty() {
        return Ok((StatusCode::SERVICE_UNAVAILABLE, "no policy bundle loaded").into_response());
    }
    let version = HeaderValue::from_str(&b.version)
        .map_err(|_| AppError::Internal("bundle version is not a header value".to_owned()))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(api::CONTENT_TYPE_PROTOBUF),
            ),
            (
                header::HeaderName::from_static(api::HEADER_BUNDLE_VERSION),
                version,
            ),
        ],
        b.bytes.to_vec(),
    )
        .into_response())
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready").into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: databroker unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "databroker unreachable").into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "databroker timeout").into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        state.metrics.render(),
    )
        .into_response()
}
