//! The identity manager: keeps every session's tokens fresh and its claims true.
//!
//! For each session it (1) refreshes the OAuth token shortly before the access token or
//! the ID token expires, and (2) re-reads user info every
//! `identity_user_info_refresh_interval` (and right after every token refresh). After
//! either, the session's claims are recomputed from scratch: the newest ID token's
//! claims overridden by the newest user-info response ([`crate::session::derive_claims`]).
//! Nothing from older responses survives — a group the IdP stopped returning is gone.
//! This is exactly where Pomerium goes wrong (its user-info refresh updates the user
//! record but never the session's claims, and policy reads the user record).
//!
//! A user-info response updates every session of that user issued by the same OAuth
//! client: each session gets the new user info over *its own* ID-token claims. If the
//! response changed the user's info, the user's sessions of *other* OAuth clients are
//! marked due at once (`user_info_at = 0`) and re-read user info with their own client
//! (their scopes, hence claims, may differ: one client's response is never copied into
//! another client's session). A response is applied to a session only if its fetch
//! started after that of the session's stored response (compare-and-swap), so an older,
//! concurrent response never overwrites a newer one.
//!
//! `invalid_grant`, or user info answering 401/403 (disabled user), terminates the
//! session. Network errors and 5xx keep the session and retry with exponential backoff
//! (persisted in the record, so every replica respects it): an IdP outage never signs
//! anybody out. Work is jittered, bounded by a semaphore, and guarded by a per-session
//! lease in the databroker so one replica at a time refreshes a given session. Writes
//! are compare-and-swap: a session signed out meanwhile is never resurrected, and
//! rotated refresh tokens are never lost to a concurrent update.

use crate::databroker::crypto::short;
use crate::databroker::{Kind, now_unix};
use crate::idp::{IdpError, TokenSet};
use crate::session::{Session, SessionError};
use crate::settings::IdentitySettings;
use crate::state::AppState;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// How long a replica holds a session's refresh lease (longer than any IdP call).
pub const LEASE_TTL_MS: u64 = 30_000;
/// Compare-and-swap attempts before giving up on a write (retried next tick).
const CAS_ATTEMPTS: usize = 5;
/// Minimum seconds between two token refreshes of one session.
const MIN_TOKEN_REFRESH_SPACING: i64 = 5;
/// How many due sessions one tick picks up at most.
const BATCH: usize = 256;

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Deterministic per-session jitter in `0..=interval/10` seconds: spreads user-info
/// refreshes of sessions created together, always earlier, never later.
pub fn jitter(session_id: &str, interval_secs: i64) -> i64 {
    // FNV-1a: cheap and stable across processes (every replica computes the same due time).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in session_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let span = u64::try_from(interval_secs / 10).unwrap_or(0);
    i64::try_from(h % (span + 1)).unwrap_or(0)
}

/// When a token that expires at `exp` is refreshed: `lead` before, but never earlier
/// than halfway through its life (short-lived tokens are not refreshed in a loop).
fn refresh_point(exp: i64, issued: i64, lead: i64) -> i64 {
    let half_life = (exp - issued).max(0) / 2;
    exp - lead.min(half_life)
}

/// The times at which a session needs work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Refresh the OAuth token at (access or ID token nearing expiry).
    pub token_at: Option<i64>,
    /// Re-read user info at.
    pub user_info_at: i64,
}

/// Work out when `session` next needs a token refresh and a user-info refresh.
pub fn schedule(session: &Session, settings: &IdentitySettings) -> Schedule {
    let lead = secs(settings.token_refresh_lead);
    let interval = secs(settings.user_info_refresh_interval).max(1);
    let issued = session.refresh.token_refreshed_at;
    let can_refresh = session.oauth_token.refresh_token.is_some();
    let mut token_at: Option<i64> = None;
    if let Some(exp) = session.oauth_token.expires_at {
        // Without a refresh token the session can only last until the access token
        // expires (user info cannot be re-read after that): that is when it is checked.
        token_at = Some(if can_refresh {
            refresh_point(exp, issued, lead)
        } else {
            exp
        });
    }
    // The ID token only drives a refresh if we have not refreshed since it entered its
    // refresh window (IdPs that never reissue ID tokens would otherwise loop).
    let id_exp = session.id_token.expires_at;
    if can_refresh && issued < id_exp - lead {
        let id_at = refresh_point(id_exp, issued, lead);
        token_at = Some(token_at.map_or(id_at, |t| t.min(id_at)));
    }
    // Never more often than every few seconds, whatever lifetimes the IdP hands out.
    let token_at = token_at.map(|t| t.max(issued + MIN_TOKEN_REFRESH_SPACING));
    Schedule {
        token_at,
        user_info_at: session.refresh.user_info_at + interval - jitter(&session.id, interval),
    }
}

/// The next time the identity manager has to look at `session` (its `due_at` index).
pub fn next_due(session: &Session, settings: &IdentitySettings) -> i64 {
    let s = schedule(session, settings);
    let due = s.token_at.map_or(s.user_info_at, |t| t.min(s.user_info_at));
    due.max(session.refresh.retry_at).min(session.expires_at)
}

/// What [`process_session`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The session does not exist (any more).
    NotFound,
    /// Another replica holds the lease.
    Busy,
    /// Nothing was due.
    NotDue,
    /// Refreshed: whether the token was refreshed, and how many sessions got new user info.
    Refreshed {
        /// The OAuth token was refreshed.
        token: bool,
        /// Sessions (this one and the user's others) updated with the new user info.
        sessions_updated: usize,
    },
    /// The session was terminated (the reason is safe to log).
    Terminated(String),
    /// The IdP failed transiently; the session is kept and retried at `retry_at`.
    Backoff {
        /// Unix seconds of the next attempt.
        retry_at: i64,
    },
}

/// Run the identity manager until the process ends.
pub async fn run(state: AppState) {
    let settings = state.settings.identity.clone();
    let sem = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut tick = tokio::time::interval(settings.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = now_unix();
        let ids = match state.store.due(Kind::Session, now, BATCH).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "identity manager: listing due sessions failed");
                continue;
            }
        };
        for id in ids {
            {
                let mut f = in_flight.lock().unwrap_or_else(|p| p.into_inner());
                if !f.insert(id.clone()) {
                    continue;
                }
            }
            let Ok(permit) = sem.clone().acquire_owned().await else {
                return;
            };
            let state = state.clone();
            let in_flight = in_flight.clone();
            tokio::spawn(async move {
                match process_session(&state, &id, now_unix()).await {
                    Ok(outcome) => {
                        tracing::debug!(session = short(&id), ?outcome, "identity manager")
                    }
                    Err(e) => {
                        tracing::warn!(session = short(&id), error = %e, "identity manager: session update failed")
                    }
                }
                in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                drop(permit);
            });
        }
    }
}

/// Process every session due at `now` once, sequentially (tests, and a manual sweep).
pub async fn run_due_once(
    state: &AppState,
    now: i64,
) -> Result<Vec<(String, Outcome)>, SessionError> {
    let ids = state.store.due(Kind::Session, now, BATCH).await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let o = process_session(state, &id, now).await?;
        out.push((id, o));
    }
    Ok(out)
}

/// Refresh one session if anything is due at `now`, under its lease.
pub async fn process_session(
    state: &AppState,
    id: &str,
    now: i64,
) -> Result<Outcome, SessionError> {
    let lease = format!("identity:session:{id}");
    if !state
        .store
        .try_lease(&lease, &state.replica_id, LEASE_TTL_MS)
        .await?
    {
        return Ok(Outcome::Busy);
    }
    let result = process_locked(state, id, now).await;
    if let Err(e) = state.store.release_lease(&lease, &state.replica_id).await {
        // It expires on its own.
        tracing::debug!(error = %e, "releasing a refresh lease failed");
    }
    result
}

async fn process_locked(state: &AppState, id: &str, now: i64) -> Result<Outcome, SessionError> {
    let settings = &state.settings.identity;
    let Some(session) = state.sessions.get(id).await? else {
        return Ok(Outcome::NotFound);
    };
    if now < session.refresh.retry_at {
        return Ok(Outcome::NotDue);
    }
    let sched = schedule(&session, settings);
    let token_due = sched.token_at.is_some_and(|t| t <= now);
    let user_info_due = sched.user_info_at <= now;
    if !token_due && !user_info_due {
        // The index was stale (e.g. written by an older version): fix it.
        let _ = rewrite(state, id, |_| {}).await?;
        return Ok(Outcome::NotDue);
    }
    let Some(idp) = state.idps.get(&session.client_id) else {
        tracing::error!(session = short(id), client_id = %session.client_id, "no identity provider configured for the session's client; retrying later");
        return backoff(state, id, now, None).await;
    };

    // 1. Token refresh.
    let mut tokens: Option<TokenSet> = None;
    if token_due {
        match &session.oauth_token.refresh_token {
            None => {
                let access_expired = session.oauth_token.expires_at.is_some_and(|e| e <= now);
                if access_expired {
                    return terminate(
                        state,
                        &session,
                        "access token expired and there is no refresh token",
                    )
                    .await;
                }
                // Only the ID token is near expiry and it cannot be renewed: keep going
                // (user info below still verifies the user).
            }
            Some(rt) => match idp.refresh(rt).await {
                Ok(ts) => {
                    if let Some(idt) = &ts.id_token
                        && idt.claims.get("sub").and_then(Value::as_str)
                            != Some(session.user_id.as_str())
                    {
                        state.metrics.token_refresh_failures.inc();
                        return terminate(
                            state,
                            &session,
                            "refreshed ID token names another subject",
                        )
                        .await;
                    }
                    state.metrics.token_refreshes.inc();
                    tokens = Some(ts);
                }
                Err(IdpError::InvalidGrant(_) | IdpError::UserDisabled(_)) => {
                    state.metrics.token_refresh_failures.inc();
                    return terminate(
                        state,
                        &session,
                        "the identity provider rejected the refresh token",
                    )
                    .await;
                }
                Err(e) => {
                    state.metrics.token_refresh_failures.inc();
                    log_idp_error(id, "token refresh", &e);
                    return backoff(state, id, now, None).await;
                }
            },
        }
    }

    // 2. User info, with the (possibly new) access token: after every token refresh, so
    // the ID token and the user info are both the newest.
    let access = tokens
        .as_ref()
        .map(|t| t.access_token.clone())
        .unwrap_or_else(|| session.oauth_token.access_token.clone());
    // When this fetch started (wall clock, ms): the response reflects the IdP at or after
    // this instant, and is only applied over user info whose fetch started earlier.
    let fetch_ms = crate::session::fetch_stamp_ms();
    let info = match idp.user_info(&access).await {
        Ok(info) => {
            if info
                .get("sub")
                .and_then(Value::as_str)
                .is_some_and(|s| s != session.user_id)
            {
                state.metrics.user_info_refresh_failures.inc();
                tracing::error!(
                    session = short(id),
                    "user info names another subject; ignoring it"
                );
                return backoff(state, id, now, tokens).await;
            }
            state.metrics.user_info_refreshes.inc();
            info
        }
        Err(IdpError::UserDisabled(_) | IdpError::InvalidGrant(_)) => {
            state.metrics.user_info_refresh_failures.inc();
            let out = terminate(
                state,
                &session,
                "the identity provider refused the user (user info 401/403)",
            )
            .await?;
            recheck_siblings(state, &session).await;
            return Ok(out);
        }
        Err(e) => {
            state.metrics.user_info_refresh_failures.inc();
            log_idp_error(id, "user info", &e);
            return backoff(state, id, now, tokens).await;
        }
    };

    // 3. Commit: this session gets the tokens and the user info; its siblings of the same
    // OAuth client the user info; siblings of other clients are re-read at once with
    // their own client. User info is applied only over an older fetch (never
    // last-writer-wins: a concurrent, older response must not bring back a removed group).
    let token_refreshed = tokens.is_some();
    let info_changed = info != session.user_info;
    let written = rewrite(state, id, |s| {
        if let Some(ts) = &tokens {
            apply_tokens(s, ts, now);
        }
        apply_user_info(s, &info, fetch_ms);
        // Even if a newer response was stored meanwhile, the stored one is at least as
        // fresh as ours: not due again before the next interval.
        s.refresh.user_info_at = now;
        s.refresh.failures = 0;
        s.refresh.retry_at = 0;
    })
    .await?;
    let Some(updated) = written else {
        return Ok(Outcome::NotFound);
    };
    let mut sessions_updated = 1;
    for sibling in state.sessions.list_for_user(&updated.user_id).await? {
        if sibling.id == updated.id || sibling.refresh.user_info_fetched_ms >= fetch_ms {
            // Itself, or a sibling whose user info is already newer than ours.
            continue;
        }
        let r = if sibling.client_id == updated.client_id {
            rewrite_if(state, &sibling.id, |s| {
                apply_user_info(s, &info, fetch_ms).then(|| s.refresh.user_info_at = now)
            })
            .await
        } else if info_changed && sibling.user_info != info && sibling.refresh.user_info_at != 0 {
            // Another OAuth client: its scopes (hence claims) may differ, so our response
            // is never copied into it. The user changed, though: make it re-read user
            // info with its own client now instead of at its next interval. Only on a
            // change not already visible in the sibling, so two clients' sessions never
            // keep rescheduling each other.
            rewrite_if(state, &sibling.id, |s| {
                (s.refresh.user_info_fetched_ms < fetch_ms && s.refresh.user_info_at != 0)
                    .then(|| s.refresh.user_info_at = 0)
            })
            .await
            .map(|marked| {
                if marked.is_some() {
                    tracing::debug!(
                        session = short(&sibling.id),
                        "user changed: another client's session re-reads user info now"
                    );
                }
                // Rescheduled, not updated: not counted.
                None
            })
        } else {
            Ok(None)
        };
        match r {
            Ok(Some(_)) => sessions_updated += 1,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(session = short(&sibling.id), error = %e, "updating a sibling session failed")
            }
        }
    }
    if let Err(e) = state.sessions.put_user(&updated).await {
        tracing::warn!(error = %e, "updating the user record failed");
    }
    Ok(Outcome::Refreshed {
        token: token_refreshed,
        sessions_updated,
    })
}

/// Store `info` (fetched starting at `fetch_ms`) unless the session already holds a
/// response whose fetch started later. Returns whether it was applied.
fn apply_user_info(s: &mut Session, info: &UserInfo, fetch_ms: i64) -> bool {
    if fetch_ms <= s.refresh.user_info_fetched_ms {
        return false;
    }
    s.user_info = info.clone();
    s.refresh.user_info_fetched_ms = fetch_ms;
    true
}

fn apply_tokens(s: &mut Session, ts: &TokenSet, now: i64) {
    s.oauth_token.access_token = ts.access_token.clone();
    if let Some(rt) = &ts.refresh_token {
        s.oauth_token.refresh_token = Some(rt.clone());
    }
    s.oauth_token.expires_at = ts.access_token_expires_at;
    if let Some(idt) = &ts.id_token {
        // Replace, never merge: the new ID token's claims are the claims.
        s.id_token = idt.clone();
    }
    s.refresh.token_refreshed_at = now;
}

fn log_idp_error(id: &str, what: &str, e: &IdpError) {
    match e {
        IdpError::Protocol(_) => {
            tracing::error!(session = short(id), error = %e, "{what} failed; keeping the session, retrying with backoff")
        }
        _ => {
            tracing::warn!(session = short(id), error = %e, "{what} failed; keeping the session, retrying with backoff")
        }
    }
}

/// Re-read, modify and compare-and-swap a session until it sticks. `Ok(None)` if the
/// session is gone (never resurrected).
async fn rewrite(
    state: &AppState,
    id: &str,
    f: impl Fn(&mut Session),
) -> Result<Option<Session>, SessionError> {
    for _ in 0..CAS_ATTEMPTS {
        let Some(mut s) = state.sessions.get(id).await? else {
            return Ok(None);
        };
        f(&mut s);
        if state.sessions.update(&mut s).await? {
            return Ok(Some(s));
        }
    }
    Err(SessionError::Conflict(short(id).to_owned()))
}

/// Like [`rewrite`], but `f` decides (on the freshly read copy) whether to write at all:
/// `Ok(None)` if the session is gone or `f` declined.
async fn rewrite_if(
    state: &AppState,
    id: &str,
    f: impl Fn(&mut Session) -> Option<()>,
) -> Result<Option<Session>, SessionError> {
    for _ in 0..CAS_ATTEMPTS {
        let Some(mut s) = state.sessions.get(id).await? else {
            return Ok(None);
        };
        if f(&mut s).is_none() {
            return Ok(None);
        }
        if state.sessions.update(&mut s).await? {
            return Ok(Some(s));
        }
    }
    Err(SessionError::Conflict(short(id).to_owned()))
}

async fn terminate(
    state: &AppState,
    session: &Session,
    reason: &str,
) -> Result<Outcome, SessionError> {
    state.sessions.delete(&session.id).await?;
    state.metrics.sessions_terminated.inc();
    tracing::info!(session = short(&session.id), user = %session.user_id, reason, "session terminated");
    Ok(Outcome::Terminated(reason.to_owned()))
}

/// The IdP refused the user through one session: make the user's other sessions check
/// their own standing at once instead of at their next interval.
async fn recheck_siblings(state: &AppState, session: &Session) {
    let Ok(siblings) = state.sessions.list_for_user(&session.user_id).await else {
        return;
    };
    for s in siblings.iter().filter(|s| s.id != session.id) {
        let r = rewrite(state, &s.id, |s| {
            s.refresh.user_info_at = 0;
            s.refresh.retry_at = 0;
        })
        .await;
        if let Err(e) = r {
            tracing::warn!(session = short(&s.id), error = %e, "scheduling a sibling re-check failed");
        }
    }
}

/// Keep the session, count a failure, schedule the retry (and keep any new tokens: a
/// rotated refresh token must not be lost).
async fn backoff(
    state: &AppState,
    id: &str,
    now: i64,
    tokens: Option<TokenSet>,
) -> Result<Outcome, SessionError> {
    let settings = &state.settings.identity;
    let written = rewrite(state, id, |s| {
        if let Some(ts) = &tokens {
            apply_tokens(s, ts, now);
        }
        s.refresh.failures = s.refresh.failures.saturating_add(1);
        let delay = backoff_delay(settings, s.refresh.failures, &s.id);
        s.refresh.retry_at = now + delay;
    })
    .await?;
    match written {
        Some(s) => Ok(Outcome::Backoff {
            retry_at: s.refresh.retry_at,
        }),
        None => Ok(Outcome::NotFound),
    }
}

/// `initial · 2^(failures-1)`, capped at `max`, minus up to 20 % jitter; at least 1 s.
pub fn backoff_delay(settings: &IdentitySettings, failures: u32, session_id: &str) -> i64 {
    let initial = secs(settings.backoff_initial).max(1);
    let max = secs(settings.backoff_max).max(initial);
    let exp = failures.saturating_sub(1).min(30);
    let raw = initial.saturating_mul(1i64 << exp).min(max);
    let j = jitter(session_id, raw * 2); // ≤ 20 % of raw
    (raw - j).max(1)
}

/// User info as a claims map (re-exported for tests and the login flow).
pub type UserInfo = Map<String, Value>;
