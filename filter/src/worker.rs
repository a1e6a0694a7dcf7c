//! One worker's filter state and logic: the per-request path, session lookups, the change
//! stream and bundle swaps. Talks to Envoy only through [`Host`].
//!
//! Envoy runs one VM per thread, so a [`Worker`] is single-threaded state shared by the
//! root context (ticks, change stream) and every stream of that thread.

use crate::cache::{
    self, Entry, Jwt, Key, MAX_AUDIENCES, NegativeCache, SessionCache, SharedJwt, SharedSession,
};
use crate::config::Config;
use crate::decision::{self, reason};
use crate::host::{HeaderPair, Host};
use crate::policy::{EvalRequest, Policy, Verdict};
use portcullis_common::api::{self, ChangesResponse, SessionResponse};
use portcullis_common::cookie::{self, SessionId};
use portcullis_common::signed_url;
use prost::Message as _;
use std::borrow::Cow;
use std::collections::HashMap;
use std::rc::Rc;

/// Identity headers a client may never send upstream.
pub const HEADER_JWT: &str = "x-pomerium-jwt-assertion";
/// Prefix of Pomerium's claim headers (always stripped from clients).
pub const CLAIM_PREFIX: &str = "x-pomerium-claim-";
/// How long a changed session id is remembered to reject answers fetched before the change.
const CHANGE_MEMORY_MS: u64 = 60_000;
/// Bound of that memory.
const CHANGE_MEMORY_CAP: usize = 100_000;
/// Longest back-off between failed change-stream polls or bundle fetches.
const MAX_BACKOFF_MS: u64 = 5_000;
/// A corrupt bundle version is not refetched for this long.
const BAD_BUNDLE_RETRY_MS: u64 = 60_000;

/// What to tell Envoy about a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Continue to the upstream (headers already adjusted).
    Continue,
    /// Paused waiting for the sidecar; resumed from a call response.
    Pause,
    /// Answered locally.
    Responded,
}

/// How a request is being handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// First look: may start a session lookup.
    Fresh,
    /// Re-run after this worker's lookup for the session ended with this outcome.
    After(Outcome),
}

/// How a session lookup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The sidecar answered with the session (now cached).
    Found,
    /// The sidecar does not know the id (now negatively cached).
    NotFound,
    /// No usable answer: call failed, timed out, bad status or body.
    Failed,
}

/// The loaded bundle with what is derived from it, swapped as one `Rc`.
pub struct Active<P> {
    /// The engine.
    pub engine: Rc<P>,
    cookie_name: String,
    auth_base: String,
    auth_host: String,
    claim_headers: Vec<String>,
}

impl<P: Policy> Active<P> {
    fn new(engine: P, cfg: &Config) -> Self {
        let cookie_name = cfg
            .cookie_name
            .clone()
            .unwrap_or_else(|| engine.cookie_name().to_owned());
        let auth_base = engine
            .authenticate_service_url()
            .trim_end_matches('/')
            .to_owned();
        let auth_host = host_of(authority_of_url(&auth_base)).to_ascii_lowercase();
        let claim_headers = engine
            .claim_header_names()
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        Active {
            engine: Rc::new(engine),
            cookie_name,
            auth_base,
            auth_host,
            claim_headers,
        }
    }
}

enum Call {
    Session {
        key: Key,
        aud: Box<str>,
        started_ms: u64,
    },
    Changes,
    Bundle {
        version: String,
    },
}

struct Pending {
    key: Key,
    aud: Box<str>,
    token: u32,
    started_ms: u64,
    waiters: Vec<u32>,
    /// The stream that made the call; `None` once it went away (Envoy may cancel a call
    /// with its stream), so the next tick asks again from the root context.
    owner: Option<u32>,
}

#[derive(Default)]
struct Stream {
    cursor: Option<u64>,
    in_flight: Option<u32>,
    next_at_ms: u64,
    failures: u32,
    last_sync_ms: u64,
    started_ms: u64,
    /// The sidecar's version-sequence identity; cursors mean nothing across epochs.
    epoch: Option<String>,
}

#[derive(Default)]
struct BundleState {
    in_flight: Option<u32>,
    next_at_ms: u64,
    failures: u32,
    bad: Option<(String, u64)>,
}

/// One worker's state.
pub struct Worker<P: Policy> {
    cfg: Rc<Config>,
    active: Option<Rc<Active<P>>>,
    sessions: SessionCache<P::Subject>,
    negative: NegativeCache,
    changed_at: HashMap<Key, u64>,
    pending: Vec<Pending>,
    calls: HashMap<u32, Call>,
    stream: Stream,
    bundle: BundleState,
    last_purge_ms: u64,
}

/// The parts of a request the filter reads, borrowed from the header list.
#[derive(Default)]
struct Req<'a> {
    authority: &'a str,
    path: &'a str,
    method: &'a str,
    scheme: Option<&'a str>,
    accept: Option<&'a str>,
    request_id: Option<&'a str>,
    origin: Option<&'a str>,
    acrm: Option<&'a str>,
    cookies: usize,
    cookie: Option<&'a str>,
}

enum Lookup {
    /// No session (no/invalid cookie, unknown id).
    Anonymous,
    /// Cached and usable.
    Cached(SessionId),
    /// Request paused on a sidecar call.
    Paused,
    /// Nothing usable and the sidecar cannot be asked.
    Unavailable,
}

impl<P: Policy> Worker<P> {
    /// A worker for `cfg`; decodes the inline bundle if there is one.
    pub fn new(cfg: Config) -> Result<Self, String> {
        let active = match &cfg.bundle {
            Some(bytes) => {
                let engine = P::decode(bytes).map_err(|e| format!("`bundle`: {e}"))?;
                Some(Rc::new(Active::new(engine, &cfg)))
            }
            None => None,
        };
        Ok(Worker {
            sessions: SessionCache::new(cfg.session_cache_size),
            negative: NegativeCache::new(cfg.negative_cache_size, cfg.negative_ttl_ms),
            cfg: Rc::new(cfg),
            active,
            changed_at: HashMap::new(),
            pending: Vec::new(),
            calls: HashMap::new(),
            stream: Stream::default(),
            bundle: BundleState::default(),
            last_purge_ms: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Version of the loaded bundle, if any.
    pub fn bundle_version(&self) -> Option<&str> {
        self.active.as_ref().map(|a| a.engine.version())
    }

    /// Number of sessions cached by this worker.
    pub fn cached_sessions(&self) -> usize {
        self.sessions.len()
    }

    // ---- the per-request path ------------------------------------------------------------

    /// Handle a request's headers (`headers` = all of them, fetched once).
    pub fn on_request_headers(
        &mut self,
        host: &mut dyn Host,
        context_id: u32,
        headers: &[HeaderPair],
        mode: Mode,
    ) -> Flow {
        let now_ms = host.now_ms();
        let now_s = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
        let active = self.active.clone();

        // Step 2 first, before any early return: client identity headers never pass.
        let mut req = Req::default();
        for (name, value) in headers {
            match name.as_str() {
                ":authority" => req.authority = value,
                ":path" => req.path = value,
                ":method" => req.method = value,
                ":scheme" => req.scheme = Some(value),
                "accept" => req.accept = Some(value),
                "x-request-id" => req.request_id = Some(value),
                "origin" => req.origin = Some(value),
                "access-control-request-method" => req.acrm = Some(value),
                "cookie" => {
                    req.cookies += 1;
                    req.cookie = Some(value);
                }
                n if is_identity_header(n, &self.cfg, active.as_deref()) => {
                    host.set_request_header(n, None);
                }
                _ => {}
            }
        }

        let Some(active) = active else {
            decision::refuse(
                host,
                503,
                reason::POLICY_NOT_LOADED,
                req.request_id,
                req.accept,
            );
            return Flow::Responded;
        };
        if req.path.starts_with("/.portcullis/") {
            decision::refuse(host, 404, reason::INTERNAL_PATH, req.request_id, req.accept);
            return Flow::Responded;
        }
        // Envoy normalises paths before routing when configured as envoy-config does
        // (`normalize_path`, `merge_slashes`, escaped slashes redirected), so this only
        // refuses on hand-written configs without it: there `/.pomerium/../app` would pass
        // as a sidecar path, or `/public/../admin` be judged as the public route, while the
        // upstream serves `/app` or `/admin`. The sidecar's ext_authz refuses the same paths.
        if !policy_compiler::eval::path::is_normal(req.path, false) {
            decision::refuse(
                host,
                400,
                reason::NON_NORMAL_PATH,
                req.request_id,
                req.accept,
            );
            return Flow::Responded;
        }
        // The sidecar's own endpoints (login callback, sign-out, JWKS, user info) pass,
        // untouched but for the stripped headers. With Envoy's route name (envoy-config
        // names every sidecar route so) that decides; without one (hand-written or Istio
        // config) the well-known paths and the authenticate host do.
        let engine = &active.engine;
        let route_name = host.route_name();
        let route = match route_name.as_deref() {
            // A route named as the sidecar's passes only if it really goes to the sidecar:
            // otherwise anyone who can name a route (an Istio VirtualService, say) could
            // switch the filter off for any upstream.
            Some(name) if name == self.cfg.sidecar_route_name => {
                if host.cluster_name().as_deref() == Some(self.cfg.sidecar_cluster.as_str()) {
                    return Flow::Continue;
                }
                log::warn!("route `{name}` is named as the sidecar's but goes elsewhere: refused");
                decision::refuse(host, 403, reason::NO_ROUTE, req.request_id, req.accept);
                return Flow::Responded;
            }
            Some(name) => engine.route_by_id(name),
            None => {
                if req.path.starts_with("/.pomerium/")
                    || req.path == "/.pomerium"
                    || req.path.starts_with("/.well-known/pomerium/")
                    || (!active.auth_host.is_empty()
                        && host_of(req.authority).eq_ignore_ascii_case(&active.auth_host))
                {
                    return Flow::Continue;
                }
                engine.find_route(req.authority, req.path)
            }
        };
        let Some(route) = route else {
            let status = if route_name.is_some() { 403 } else { 404 };
            decision::refuse(host, status, reason::NO_ROUTE, req.request_id, req.accept);
            return Flow::Responded;
        };
        let meta = engine.route_meta(route);
        // A policy that never looks at the user gets the same answer without the session:
        // skip the lookup, unless identity headers go upstream or it is one of Pomerium's
        // own paths (its implicit rule looks at the user on `/.pomerium/jwt`).
        let needs_session =
            meta.uses_identity || meta.pass_identity_headers || req.path.starts_with("/.pomerium/");

        // The session: first cookie value that opens wins (a planted one cannot shadow it).
        let joined;
        let cookie_header = if req.cookies > 1 {
            joined = join_cookies(headers);
            Some(joined.as_str())
        } else {
            req.cookie
        };
        let now_u = u64::try_from(now_s).unwrap_or(0);
        let sid = cookie_header.filter(|_| needs_session).and_then(|h| {
            cookie::cookie_values(h, &active.cookie_name).find_map(|v| {
                cookie::open(&self.cfg.cookie_key, &active.cookie_name, v, now_u)
                    .ok()
                    .map(|o| o.session_id)
            })
        });
        let aud = audience(req.authority);
        let lookup = match sid {
            None => Lookup::Anonymous,
            Some(sid) => self.lookup(
                host,
                context_id,
                sid,
                &aud,
                meta.pass_identity_headers,
                mode,
                now_ms,
            ),
        };
        let entry = match lookup {
            Lookup::Anonymous => None,
            // A session of another OAuth client than the route's is no session here: the
            // user signs in again through this route's client.
            Lookup::Cached(sid) => self
                .sessions
                .get(&sid)
                .filter(|e| meta.idp_client_id.is_empty() || *e.client_id == *meta.idp_client_id),
            Lookup::Paused => return Flow::Pause,
            // A public route never fails because the sidecar is away: decided anonymously.
            Lookup::Unavailable if meta.public => None,
            Lookup::Unavailable => {
                decision::refuse(
                    host,
                    503,
                    reason::SIDECAR_UNAVAILABLE,
                    req.request_id,
                    req.accept,
                );
                return Flow::Responded;
            }
        };

        let eval_req = EvalRequest {
            method: req.method,
            path: req.path,
            origin: req.origin,
            access_control_request_method: req.acrm,
            now_unix: now_s,
        };
        match engine.evaluate(route, &eval_req, entry.map(|e| &*e.subject)) {
            Verdict::Allow => {
                if let Some(h) = cookie_header
                    && cookie::cookie_values(h, &active.cookie_name)
                        .next()
                        .is_some()
                {
                    if has_other_cookies(h, &active.cookie_name) {
                        let stripped = cookie::strip_cookie(h, &active.cookie_name);
                        host.set_request_header("cookie", stripped.as_deref());
                    } else {
                        // Only ours: drop the header without building an empty copy.
                        host.set_request_header("cookie", None);
                    }
                }
                if meta.pass_identity_headers
                    && let Some(e) = entry
                {
                    if let Some(jwt) = e.jwt_valid(&aud, now_s) {
                        host.set_request_header(HEADER_JWT, Some(jwt));
                    }
                    for h in &e.claim_headers {
                        host.set_request_header(&h.name, Some(&h.value));
                    }
                }
                Flow::Continue
            }
            Verdict::Deny(code) => {
                decision::refuse(host, 403, code, req.request_id, req.accept);
                Flow::Responded
            }
            Verdict::Login => {
                let scheme = req.scheme.filter(|s| *s == "http").unwrap_or("https");
                let mut back =
                    String::with_capacity(scheme.len() + 3 + req.authority.len() + req.path.len());
                back.push_str(scheme);
                back.push_str("://");
                back.push_str(req.authority);
                back.push_str(req.path);
                let url = signed_url::sign_in_url(
                    &self.cfg.redirect_key,
                    &active.auth_base,
                    &back,
                    now_u,
                );
                decision::sign_in(host, &url, decision::is_navigation(req.method, req.accept));
                Flow::Responded
            }
        }
    }

    /// Find a usable session: this worker's cache, then shared data, then the sidecar.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; a struct would only rename them"
    )]
    fn lookup(
        &mut self,
        host: &mut dyn Host,
        context_id: u32,
        sid: SessionId,
        aud: &str,
        needs_jwt: bool,
        mode: Mode,
        now_ms: u64,
    ) -> Lookup {
        let now_s = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
        if self.negative.contains(&sid, now_ms) {
            return Lookup::Anonymous;
        }
        let ready = |w: &Self| {
            w.sessions.get(&sid).and_then(|e| {
                w.usable(e, now_ms, now_s)
                    .then(|| !needs_jwt || e.jwt(aud, now_s).is_some())
            })
        };
        if ready(self) == Some(true)
            || (self.load_shared(host, sid, now_ms) && ready(self) == Some(true))
        {
            return Lookup::Cached(sid);
        }
        match mode {
            Mode::Fresh => {}
            Mode::After(Outcome::NotFound) => return Lookup::Anonymous,
            Mode::After(Outcome::Found) => {
                // Found, but without a JWT for this audience: go on without the header
                // rather than loop; the upstream sees a request without identity.
                return if ready(self).is_some() {
                    Lookup::Cached(sid)
                } else {
                    Lookup::Unavailable
                };
            }
            Mode::After(Outcome::Failed) => {
                // The sidecar could not renew this session's JWT: a session still within
                // the staleness bound keeps working (its JWT is forwarded while it is valid).
                return if ready(self).is_some() {
                    Lookup::Cached(sid)
                } else {
                    Lookup::Unavailable
                };
            }
        }
        // Join a lookup in flight for this session + audience, or start one.
        let key = Key(sid);
        if let Some(p) = self
            .pending
            .iter_mut()
            .find(|p| p.key == key && &*p.aud == aud)
        {
            p.waiters.push(context_id);
            return Lookup::Paused;
        }
        match self.start_session_call(host, sid, aud, now_ms) {
            Some(token) => {
                self.pending.push(Pending {
                    key,
                    aud: aud.into(),
                    token,
                    started_ms: now_ms,
                    waiters: vec![context_id],
                    owner: Some(context_id),
                });
                Lookup::Paused
            }
            // Cannot even ask: as after a failed call.
            None if ready(self).is_some() => Lookup::Cached(sid),
            None => Lookup::Unavailable,
        }
    }

    /// Whether a cached entry may still be used: session not expired, and the sidecar has
    /// been heard from (fetch or change stream) within the staleness bound.
    fn usable(&self, e: &Entry<P::Subject>, now_ms: u64, now_s: i64) -> bool {
        let heard = e.fetched_at_ms.max(self.stream.last_sync_ms);
        (e.session_expires_at <= 0 || e.session_expires_at > now_s)
            && now_ms.saturating_sub(heard) <= self.cfg.staleness_ms
    }

    fn start_session_call(
        &mut self,
        host: &mut dyn Host,
        sid: SessionId,
        aud: &str,
        now_ms: u64,
    ) -> Option<u32> {
        let mut path = String::with_capacity(api::PATH_SESSION.len() + 96 + aud.len());
        path.push_str(api::PATH_SESSION);
        path.push_str("?id=");
        path.push_str(sid.as_str());
        path.push_str("&aud=");
        signed_url::percent_encode_into(aud, &mut path);
        let token = self.call_sidecar(host, &path, self.cfg.session_timeout_ms)?;
        self.calls.insert(
            token,
            Call::Session {
                key: Key(sid),
                aud: aud.into(),
                started_ms: now_ms,
            },
        );
        Some(token)
    }

    fn call_sidecar(&self, host: &mut dyn Host, path: &str, timeout_ms: u64) -> Option<u32> {
        let headers = [
            (":method", "GET"),
            (":path", path),
            (":authority", self.cfg.sidecar_authority.as_str()),
            ("authorization", self.cfg.api_authorization.as_str()),
            ("accept", api::CONTENT_TYPE_PROTOBUF),
        ];
        match host.dispatch(&self.cfg.sidecar_cluster, &headers, timeout_ms) {
            Ok(t) => Some(t),
            Err(_) => {
                log::warn!("cannot call sidecar cluster `{}`", self.cfg.sidecar_cluster);
                None
            }
        }
    }

    /// Copy a session from Envoy shared data into this worker's cache. True if it did.
    fn load_shared(&mut self, host: &mut dyn Host, sid: SessionId, now_ms: u64) -> bool {
        let Some(active) = self.active.clone() else {
            return false;
        };
        let (Some(bytes), _) = host.shared_get(&cache::shared_key(&sid)) else {
            return false;
        };
        let Ok(shared) = SharedSession::decode(bytes.as_slice()) else {
            return false;
        };
        let Some(view) = shared.view.as_ref() else {
            return false;
        };
        if shared.evicted
            || shared.generation != shared_generation(host).0
            || self.changed_since(&Key(sid), shared.fetched_at_ms)
            || view.session_id != sid.as_str()
        {
            return false;
        }
        let jwts = shared
            .jwts
            .iter()
            .take(MAX_AUDIENCES)
            .map(|j| Jwt {
                aud: j.aud.as_str().into(),
                token: j.token.as_str().into(),
                expires_at: j.expires_at,
            })
            .collect();
        let entry = Entry {
            subject: Rc::new(active.engine.subject(view)),
            claim_headers: view.claim_headers.clone().into_boxed_slice(),
            client_id: view.client_id.as_str().into(),
            jwts,
            version: view.version,
            session_expires_at: view.expires_at,
            fetched_at_ms: shared.fetched_at_ms,
        };
        self.sessions
            .insert(sid, entry, i64::try_from(now_ms / 1000).unwrap_or(i64::MAX));
        true
    }

    fn changed_since(&self, key: &Key, fetched_at_ms: u64) -> bool {
        self.changed_at
            .get(key)
            .is_some_and(|t| *t >= fetched_at_ms)
    }

    /// A stream went away: it no longer waits for anything.
    pub fn forget_context(&mut self, context_id: u32) {
        for p in &mut self.pending {
            p.waiters.retain(|w| *w != context_id);
            if p.owner == Some(context_id) {
                p.owner = None;
            }
        }
        // Nobody waits: drop the lookup (a late answer is ignored, as its token is gone).
        let calls = &mut self.calls;
        self.pending.retain(|p| {
            let keep = !p.waiters.is_empty();
            if !keep {
                calls.remove(&p.token);
            }
            keep
        });
    }

    /// Lookups whose stream went away while others still wait: ask again, from the root
    /// context (which lives as long as the worker).
    fn adopt_orphans(&mut self, host: &mut dyn Host, now_ms: u64) {
        let orphans: Vec<(Key, Box<str>, u32)> = self
            .pending
            .iter()
            .filter(|p| p.owner.is_none())
            .map(|p| (p.key, p.aud.clone(), p.token))
            .collect();
        for (key, aud, old) in orphans {
            self.calls.remove(&old);
            let token = self.start_session_call(host, key.0, &aud, now_ms);
            match token {
                Some(token) => {
                    if let Some(p) = self
                        .pending
                        .iter_mut()
                        .find(|p| p.key == key && p.aud == aud)
                    {
                        p.token = token;
                        p.owner = Some(0);
                        p.started_ms = now_ms;
                    }
                }
                None => self.finish_pending(host, key, &aud, Outcome::Failed),
            }
        }
    }

    // ---- call responses --------------------------------------------------------------------

    /// An answer to one of this worker's HTTP calls (`body_size` bytes of body).
    pub fn on_call_response(&mut self, host: &mut dyn Host, token: u32, body_size: usize) {
        let Some(call) = self.calls.remove(&token) else {
            return; // timed out and already answered
        };
        let now_ms = host.now_ms();
        let status = response_status(host);
        let body = if body_size > 0 {
            host.call_response_body(body_size).unwrap_or_default()
        } else {
            Vec::new()
        };
        match call {
            Call::Session {
                key,
                aud,
                started_ms,
            } => {
                let outcome =
                    self.session_answer(host, key, &aud, status, &body, started_ms, now_ms);
                self.finish_pending(host, key, &aud, outcome);
            }
            Call::Changes => self.changes_answer(host, status, &body, now_ms),
            Call::Bundle { version } => self.bundle_answer(host, status, &body, version, now_ms),
        }
    }

    #[expect(clippy::too_many_arguments, reason = "the parts of one call answer")]
    fn session_answer(
        &mut self,
        host: &mut dyn Host,
        key: Key,
        aud: &str,
        status: Option<u32>,
        body: &[u8],
        started_ms: u64,
        now_ms: u64,
    ) -> Outcome {
        if status != Some(200) {
            log::warn!("session lookup answered {status:?}");
            return Outcome::Failed;
        }
        let Ok(resp) = SessionResponse::decode(body) else {
            log::warn!("undecodable session answer");
            return Outcome::Failed;
        };
        let sid = key.0;
        let now_s = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
        let view = match resp.view {
            Some(view) if resp.found && view.session_id == sid.as_str() => view,
            _ => {
                self.negative.insert(sid, now_ms);
                self.sessions.remove(&sid);
                return Outcome::NotFound;
            }
        };
        if self.changed_since(&key, started_ms) {
            // Changed while we asked: this answer may predate the change. Not cached; the
            // waiting requests ask again.
            return Outcome::Failed;
        }
        let Some(active) = self.active.clone() else {
            return Outcome::Failed;
        };
        // Keep other audiences' JWTs when the record did not change.
        let mut jwts: Vec<Jwt> = match self.sessions.get(&sid) {
            Some(old) if old.version == view.version => old
                .jwts
                .iter()
                .filter(|j| &*j.aud != aud)
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        if !resp.identity_jwt.is_empty() {
            jwts.truncate(MAX_AUDIENCES - 1);
            jwts.push(Jwt {
                aud: aud.into(),
                token: resp.identity_jwt.as_str().into(),
                expires_at: resp.jwt_expires_at,
            });
        }
        let shared = SharedSession {
            generation: shared_generation(host).0,
            fetched_at_ms: started_ms,
            view: Some(view.clone()),
            jwts: jwts
                .iter()
                .map(|j| SharedJwt {
                    aud: j.aud.to_string(),
                    token: j.token.to_string(),
                    expires_at: j.expires_at,
                })
                .collect(),
            evicted: false,
        };
        let skey = cache::shared_key(&sid);
        let (_, cas) = host.shared_get(&skey);
        // A failed compare-and-set means another worker wrote meanwhile: theirs is as new.
        let _ = host.shared_set(&skey, &shared.encode_to_vec(), cas);
        let entry = Entry {
            subject: Rc::new(active.engine.subject(&view)),
            client_id: view.client_id.as_str().into(),
            claim_headers: view.claim_headers.into_boxed_slice(),
            jwts,
            version: view.version,
            session_expires_at: view.expires_at,
            fetched_at_ms: started_ms,
        };
        self.negative.remove(&sid);
        self.sessions.insert(sid, entry, now_s);
        Outcome::Found
    }

    /// Re-run every request waiting on the lookup of (`key`, `aud`).
    fn finish_pending(&mut self, host: &mut dyn Host, key: Key, aud: &str, outcome: Outcome) {
        let Some(i) = self
            .pending
            .iter()
            .position(|p| p.key == key && &*p.aud == aud)
        else {
            return;
        };
        let p = self.pending.swap_remove(i);
        let mode = if outcome == Outcome::Failed && self.changed_since(&key, p.started_ms) {
            // The answer was discarded because the session changed: ask again.
            Mode::Fresh
        } else {
            Mode::After(outcome)
        };
        for ctx in p.waiters {
            if !host.set_effective_context(ctx) {
                continue;
            }
            let headers = host.request_headers();
            if self.on_request_headers(host, ctx, &headers, mode) == Flow::Continue {
                host.resume_request();
            }
        }
    }

    fn changes_answer(
        &mut self,
        host: &mut dyn Host,
        status: Option<u32>,
        body: &[u8],
        now_ms: u64,
    ) {
        self.stream.in_flight = None;
        let resp = match (status, ChangesResponse::decode(body)) {
            (Some(200), Ok(resp)) => resp,
            (status, _) => {
                self.stream.failures = self.stream.failures.saturating_add(1);
                self.stream.next_at_ms = now_ms + backoff(self.cfg.tick_ms, self.stream.failures);
                log::warn!("change stream failed ({status:?})");
                return;
            }
        };
        // A new epoch (sidecar restarted with a memory store, Redis flushed) makes our
        // cursor meaningless: the same as a reset.
        let new_epoch = !resp.epoch.is_empty()
            && self
                .stream
                .epoch
                .as_deref()
                .is_some_and(|e| e != resp.epoch);
        if !resp.epoch.is_empty() {
            self.stream.epoch = Some(resp.epoch.clone());
        }
        if resp.reset || new_epoch {
            self.sessions.clear();
            self.negative.clear();
            bump_shared_generation(host);
        }
        for id in resp.changed.iter().chain(resp.deleted.iter()) {
            let Some(sid) = SessionId::parse(id) else {
                continue;
            };
            self.evict(host, sid, now_ms);
        }
        let news = resp.reset
            || new_epoch
            || !resp.changed.is_empty()
            || !resp.deleted.is_empty()
            || (!resp.bundle_version.is_empty()
                && self.bundle_version() != Some(resp.bundle_version.as_str()));
        // Poll again at once after news or a full long poll. An empty answer that came
        // back early (a cursor of 0, a sidecar that does not hold polls) waits for the
        // next tick, so a misbehaving sidecar is never hammered in a loop.
        let early = now_ms.saturating_sub(self.stream.started_ms) < self.cfg.long_poll_ms / 2;
        self.stream.next_at_ms = if news || !early {
            now_ms
        } else {
            now_ms + self.cfg.tick_ms
        };
        self.stream.cursor = Some(resp.version);
        self.stream.last_sync_ms = now_ms;
        self.stream.failures = 0;
        if !resp.bundle_version.is_empty() {
            self.maybe_fetch_bundle(host, &resp.bundle_version, now_ms);
        }
        self.poll_changes(host, now_ms);
    }

    /// Drop a changed/deleted session here and in shared data.
    fn evict(&mut self, host: &mut dyn Host, sid: SessionId, now_ms: u64) {
        let key = Key(sid);
        self.sessions.remove(&sid);
        self.negative.remove(&sid);
        if self.changed_at.len() >= CHANGE_MEMORY_CAP {
            self.changed_at
                .retain(|_, t| now_ms.saturating_sub(*t) < CHANGE_MEMORY_MS);
        }
        self.changed_at.insert(key, now_ms);
        let skey = cache::shared_key(&sid);
        if let (Some(bytes), cas) = host.shared_get(&skey)
            && !bytes.is_empty()
        {
            let tomb = SharedSession {
                fetched_at_ms: now_ms,
                evicted: true,
                ..Default::default()
            };
            let _ = host.shared_set(&skey, &tomb.encode_to_vec(), cas);
        }
    }

    fn maybe_fetch_bundle(&mut self, host: &mut dyn Host, version: &str, now_ms: u64) {
        if self.bundle_version() == Some(version) || self.bundle.in_flight.is_some() {
            return;
        }
        if let Some((bad, until)) = &self.bundle.bad
            && bad == version
            && now_ms < *until
        {
            return;
        }
        if now_ms < self.bundle.next_at_ms {
            return;
        }
        if let Some(token) =
            self.call_sidecar(host, api::PATH_BUNDLE, self.cfg.session_timeout_ms * 5)
        {
            self.bundle.in_flight = Some(token);
            self.calls.insert(
                token,
                Call::Bundle {
                    version: version.to_owned(),
                },
            );
        }
    }

    fn bundle_answer(
        &mut self,
        host: &mut dyn Host,
        status: Option<u32>,
        body: &[u8],
        wanted: String,
        now_ms: u64,
    ) {
        self.bundle.in_flight = None;
        if status != Some(200) {
            self.bundle.failures = self.bundle.failures.saturating_add(1);
            self.bundle.next_at_ms = now_ms + backoff(self.cfg.tick_ms, self.bundle.failures);
            log::warn!("bundle fetch answered {status:?}");
            return;
        }
        let header_version = host
            .call_response_headers()
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(api::HEADER_BUNDLE_VERSION))
            .map(|(_, v)| v);
        match P::decode(body) {
            Ok(engine) => {
                let version = engine.version().to_owned();
                log::info!("policy bundle {version} loaded");
                self.active = Some(Rc::new(Active::new(engine, &self.cfg)));
                self.bundle.failures = 0;
                self.bundle.bad = None;
            }
            Err(e) => {
                let v = header_version.unwrap_or(wanted);
                log::error!("bundle {v} refused, keeping the current one: {e}");
                self.bundle.bad = Some((v, now_ms + BAD_BUNDLE_RETRY_MS));
            }
        }
    }

    // ---- ticks ---------------------------------------------------------------------------

    /// Periodic work: follow the change stream, fetch a missing bundle, time out lookups.
    pub fn on_tick(&mut self, host: &mut dyn Host) {
        let now_ms = host.now_ms();
        if self.active.is_none()
            && self.bundle.in_flight.is_none()
            && now_ms >= self.bundle.next_at_ms
        {
            match self.call_sidecar(host, api::PATH_BUNDLE, self.cfg.session_timeout_ms * 5) {
                Some(token) => {
                    self.bundle.in_flight = Some(token);
                    self.calls.insert(
                        token,
                        Call::Bundle {
                            version: String::new(),
                        },
                    );
                }
                None => {
                    self.bundle.failures = self.bundle.failures.saturating_add(1);
                    self.bundle.next_at_ms =
                        now_ms + backoff(self.cfg.tick_ms, self.bundle.failures);
                }
            }
        }
        self.poll_changes(host, now_ms);
        self.adopt_orphans(host, now_ms);
        self.expire_pending(host, now_ms);
        if now_ms.saturating_sub(self.last_purge_ms) > 10_000 {
            self.last_purge_ms = now_ms;
            self.sessions
                .purge_expired(i64::try_from(now_ms / 1000).unwrap_or(i64::MAX));
            self.negative.purge(now_ms);
            self.changed_at
                .retain(|_, t| now_ms.saturating_sub(*t) < CHANGE_MEMORY_MS);
        }
    }

    fn poll_changes(&mut self, host: &mut dyn Host, now_ms: u64) {
        if self.stream.in_flight.is_some() || now_ms < self.stream.next_at_ms {
            return;
        }
        // The first poll only learns the cursor; later ones wait for news.
        let wait = if self.stream.cursor.is_some() {
            self.cfg.long_poll_ms
        } else {
            0
        };
        let mut path = format!(
            "{}?since={}&wait_ms={wait}",
            api::PATH_CHANGES,
            self.stream.cursor.unwrap_or(0)
        );
        if let Some(epoch) = &self.stream.epoch {
            // Lets the sidecar answer `reset` at once when its epoch moved on.
            path.push_str("&epoch=");
            signed_url::percent_encode_into(epoch, &mut path);
        }
        if let Some(active) = &self.active {
            // Lets the sidecar answer at once when the bundle changed between two polls
            // (a policy change must not wait out a whole long poll).
            path.push_str("&bundle=");
            signed_url::percent_encode_into(active.engine.version(), &mut path);
        }
        match self.call_sidecar(host, &path, wait + self.cfg.session_timeout_ms + 3_000) {
            Some(token) => {
                self.stream.in_flight = Some(token);
                self.stream.started_ms = now_ms;
                self.calls.insert(token, Call::Changes);
            }
            None => {
                self.stream.failures = self.stream.failures.saturating_add(1);
                self.stream.next_at_ms = now_ms + backoff(self.cfg.tick_ms, self.stream.failures);
            }
        }
    }

    /// Lookups whose answer never came (the owning stream went away, or Envoy lost the
    /// callback) fail after their timeout plus a margin, so no request waits forever.
    fn expire_pending(&mut self, host: &mut dyn Host, now_ms: u64) {
        let limit = self.cfg.session_timeout_ms + 1_000;
        let expired: Vec<(Key, Box<str>, u32)> = self
            .pending
            .iter()
            .filter(|p| now_ms.saturating_sub(p.started_ms) > limit)
            .map(|p| (p.key, p.aud.clone(), p.token))
            .collect();
        for (key, aud, token) in expired {
            self.calls.remove(&token);
            self.finish_pending(host, key, &aud, Outcome::Failed);
        }
    }
}

/// Whether a client header must be removed before anything else happens.
fn is_identity_header<P: Policy>(name: &str, cfg: &Config, active: Option<&Active<P>>) -> bool {
    name == HEADER_JWT
        || name.starts_with(CLAIM_PREFIX)
        || cfg.strip_headers.iter().any(|h| h == name)
        || active.is_some_and(|a| a.claim_headers.iter().any(|h| h == name))
}

fn response_status(host: &dyn Host) -> Option<u32> {
    host.call_response_headers()
        .into_iter()
        .find(|(k, _)| k == ":status")
        .and_then(|(_, v)| v.parse().ok())
}

fn shared_generation(host: &dyn Host) -> (u64, Option<u32>) {
    match host.shared_get(cache::SHARED_GENERATION) {
        (Some(b), cas) => (
            b.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(0),
            cas,
        ),
        (None, cas) => (0, cas),
    }
}

fn bump_shared_generation(host: &mut dyn Host) {
    for _ in 0..4 {
        let (g, cas) = shared_generation(host);
        if host
            .shared_set(cache::SHARED_GENERATION, &(g + 1).to_be_bytes(), cas)
            .is_ok()
        {
            return;
        }
    }
}

fn backoff(tick_ms: u64, failures: u32) -> u64 {
    tick_ms
        .saturating_mul(1u64 << failures.min(10))
        .min(MAX_BACKOFF_MS)
}

/// The JWT audience of a request: its host, without port, lower-cased.
fn audience(authority: &str) -> Cow<'_, str> {
    let h = host_of(authority);
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(h.to_ascii_lowercase())
    } else {
        Cow::Borrowed(h)
    }
}

/// `host[:port]` → host (IPv6 literals keep their brackets).
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .split_once(']')
            .map_or(authority, |(h, _)| h.get(1..).unwrap_or(h));
    }
    authority.split_once(':').map_or(authority, |(h, _)| h)
}

/// `scheme://authority/...` → authority.
fn authority_of_url(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

/// Whether the `Cookie` header carries any cookie not named `name`.
fn has_other_cookies(header: &str, name: &str) -> bool {
    header.split(';').any(|pair| {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k).trim();
        !key.is_empty() && key != name
    })
}

fn join_cookies(headers: &[HeaderPair]) -> String {
    let mut out = String::new();
    for (k, v) in headers {
        if k == "cookie" {
            if !out.is_empty() {
                out.push_str("; ");
            }
            out.push_str(v);
        }
    }
    out
}

#[cfg(test)]
mod tests;
