//! The decision the three front ends share — the filter's request path (see
//! `filter/src/worker.rs`, `docs/architecture.md` "Request flow") on the sidecar's side:
//! strip client identity headers, route by host + path, open the session cookie, look the
//! session up (cache, then store), evaluate, then allow (cookie stripped, identity JWT and
//! claim headers added), deny, or send to sign-in with the same signed URL.

use super::Authorizer;
use super::cache::{Entry, Jwt, Lookup, MAX_AUDIENCES};
use crate::databroker::now_unix;
use crate::error::AppError;
use policy_compiler::eval::{self, ClaimValue, Claims, ClientCertificate, Decision, Subject};
use portcullis_common::api::{SessionView, claim_value::Kind};
use portcullis_common::cookie::{self, SessionId};
use portcullis_common::signed_url;
use std::borrow::Cow;
use std::sync::{Arc, RwLock};

/// The identity JWT header (Pomerium's).
pub const HEADER_JWT: &str = "x-pomerium-jwt-assertion";
/// Prefix of Pomerium's claim headers (always stripped from clients).
pub const CLAIM_PREFIX: &str = "x-pomerium-claim-";

/// Why Portcullis itself (not the policy) refused a request; the filter's codes.
pub mod reason {
    /// No bundle route matches the request.
    pub const NO_ROUTE: &str = "no-route";
    /// The internal API is not reachable from outside.
    pub const INTERNAL_PATH: &str = "internal-path";
    /// The session store could not be read.
    pub const SIDECAR_UNAVAILABLE: &str = "sidecar-unavailable";
    /// The policy bundle in service does not decode.
    pub const POLICY_NOT_LOADED: &str = "policy-not-loaded";
    /// The caller (proxy) did not authenticate.
    pub const CALLER_UNAUTHENTICATED: &str = "ext-authz-caller-unauthenticated";
    /// The path is not in normal form (dot segments, `//`, encoded `.` `/` `\`, …): the
    /// proxy or the upstream may read it as another path than the one we would judge.
    pub const NON_NORMAL_PATH: &str = "non-normal-path";
}

/// The original request, as a front end read it from its protocol.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `:authority` / `Host`.
    pub authority: &'a str,
    /// `:path` as received, query included.
    pub path: &'a str,
    /// `:method`.
    pub method: &'a str,
    /// `:scheme` (or `x-forwarded-proto`); only `http` is taken as plain HTTP.
    pub scheme: Option<&'a str>,
    /// Every other header, names lower-case (`cookie` may repeat).
    pub headers: &'a [(&'a str, &'a str)],
    /// The front end's rules for the path and the `Cookie` header.
    pub quirks: Quirks,
}

/// What differs between the front ends' requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quirks {
    /// Refuse any percent-escape of an unreserved character too (`%61dmin`): nginx decodes
    /// every escape before it picks a location, and the upstream gets the raw path, so a
    /// path must be judged exactly as written. (Envoy's `normalize_path` decodes those
    /// itself; without it Envoy routes on the raw path, as we judge it.)
    pub strict_path: bool,
    /// Some `Cookie` header was not UTF-8 (decoded lossily for the session lookup): on
    /// allow the whole header is removed upstream, since ours cannot be cut out of bytes
    /// we could not read exactly.
    pub cookie_undecodable: bool,
    /// `,` separates cookies too (Envoy's gRPC `headers` join repeated headers with `,`);
    /// only for finding and removing ours: other cookies go upstream unchanged.
    pub cookie_commas: bool,
}

impl<'a> Request<'a> {
    fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }

    /// The `Cookie` header; several are joined with `; ` (as HTTP/2 does).
    fn cookie(&self) -> Option<Cow<'a, str>> {
        let mut it = self.headers.iter().filter(|(k, _)| *k == "cookie");
        let (_, first) = it.next()?;
        let mut joined: Option<String> = None;
        for (_, v) in it {
            let s = joined.get_or_insert_with(|| (*first).to_owned());
            s.push_str("; ");
            s.push_str(v);
        }
        Some(joined.map_or(Cow::Borrowed(*first), Cow::Owned))
    }

    /// `x-request-id`, for the refusal page.
    pub fn request_id(&self) -> Option<&'a str> {
        self.header("x-request-id")
    }

    /// `accept`.
    pub fn accept(&self) -> Option<&'a str> {
        self.header("accept")
    }
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Let it through with these upstream request header changes.
    Allow {
        /// Headers to set (overwrite) on the upstream request.
        set: Vec<(String, String)>,
        /// Headers to remove from the upstream request (never one of `set`).
        remove: Vec<String>,
    },
    /// Refuse with `status` (400, 403, 404 or 503) and a reason code.
    Refuse {
        /// HTTP status.
        status: u16,
        /// Reason code (never a claim value).
        reason: &'static str,
    },
    /// Send the user to sign in.
    SignIn {
        /// `{authenticate_service_url}/.pomerium/sign_in?…`, signed as the filter signs it.
        url: String,
    },
}

/// A local answer to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: String,
}

impl Outcome {
    /// The answer to the client for a refusal or sign-in (the filter's pages: 302 for
    /// navigations else 401 JSON; 403/404/503 page in HTML or JSON by `accept`). `None`
    /// for [`Outcome::Allow`].
    pub fn reply(&self, req: &Request<'_>) -> Option<Reply> {
        let accept = req.accept();
        match self {
            Outcome::Allow { .. } => None,
            Outcome::Refuse { status, reason } => Some(refusal(
                *status,
                reason,
                safe_request_id(req.request_id()),
                accept,
            )),
            Outcome::SignIn { url } => Some(if is_navigation(req.method, accept) {
                Reply {
                    status: 302,
                    headers: vec![("location", url.clone()), no_store()],
                    body: String::new(),
                }
            } else {
                let mut body = String::with_capacity(url.len() + 48);
                body.push_str(r#"{"error":"unauthenticated","sign_in_url":""#);
                json_escape_into(url, &mut body);
                body.push_str("\"}");
                Reply {
                    status: 401,
                    headers: vec![("content-type", "application/json".to_owned()), no_store()],
                    body,
                }
            }),
        }
    }
}

fn no_store() -> (&'static str, String) {
    ("cache-control", "no-store".to_owned())
}

fn refusal(status: u16, reason: &str, rid: &str, accept: Option<&str>) -> Reply {
    let title = match status {
        400 => "bad request",
        403 => "access denied",
        404 => "not found",
        _ => "service unavailable",
    };
    if wants_json(accept) {
        Reply {
            status,
            headers: vec![("content-type", "application/json".to_owned()), no_store()],
            body: format!(
                r#"{{"error":"{}","reason":"{reason}","request_id":"{rid}"}}"#,
                title.replace(' ', "_")
            ),
        }
    } else {
        Reply {
            status,
            headers: vec![
                ("content-type", "text/html; charset=utf-8".to_owned()),
                no_store(),
            ],
            body: format!(
                "<!doctype html><meta charset=utf-8><title>{status} {title}</title>\
                 <h1>{status} — {title}</h1><p>reason: <code>{reason}</code></p>\
                 <p>request id: <code>{rid}</code></p>\n"
            ),
        }
    }
}

/// A browser navigation (gets a redirect rather than a 401), as the filter decides.
pub fn is_navigation(method: &str, accept: Option<&str>) -> bool {
    (method == "GET" || method == "HEAD")
        && accept.is_none_or(|a| a.trim().is_empty() || a.contains("text/html") || a == "*/*")
}

fn wants_json(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/json") && !a.contains("text/html"))
}

/// `x-request-id` restricted to a safe alphabet and length (embedded unescaped).
fn safe_request_id(id: Option<&str>) -> &str {
    match id {
        Some(id)
            if !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) =>
        {
            id
        }
        _ => "-",
    }
}

fn json_escape_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
}

// ---- the compiled bundle ----------------------------------------------------------------

/// The bundle in service, decoded, with what is derived from it.
pub(super) struct Active {
    version: String,
    /// `None`: the bundle in service does not decode (refuse with 503 until it changes).
    engine: Option<eval::Engine>,
    cookie_name: String,
    auth_base: String,
    auth_host: String,
    /// `jwt_claims_headers` header names, lower-case (stripped from clients).
    claim_headers: Vec<String>,
}

/// The decoded bundle, re-decoded when the sidecar's bundle version changes.
#[derive(Default)]
pub(super) struct EngineHolder(RwLock<Option<Arc<Active>>>);

impl EngineHolder {
    fn get(&self, authz: &Authorizer) -> Arc<Active> {
        let current = authz.state.bundle.current();
        if let Some(a) = self.0.read().unwrap_or_else(|p| p.into_inner()).as_ref()
            && a.version == current.version
        {
            return a.clone();
        }
        let active = Arc::new(match eval::Engine::from_bytes(&current.bytes) {
            Ok(engine) => {
                let s = engine.settings();
                let cookie_name = if s.cookie_name.is_empty() {
                    authz.state.settings.cookie_name.clone()
                } else {
                    s.cookie_name.clone()
                };
                let auth_base = s.authenticate_service_url.trim_end_matches('/').to_owned();
                let auth_host = host_of(authority_of_url(&auth_base)).to_ascii_lowercase();
                let claim_headers = s
                    .jwt_claims_headers
                    .iter()
                    .map(|(_, h)| h.to_ascii_lowercase())
                    .collect();
                Active {
                    version: current.version.clone(),
                    engine: Some(engine),
                    cookie_name,
                    auth_base,
                    auth_host,
                    claim_headers,
                }
            }
            Err(e) => {
                tracing::error!(bundle_version = %current.version, error = %e, "ext_authz: the policy bundle in service does not decode; refusing requests");
                Active {
                    version: current.version.clone(),
                    engine: None,
                    cookie_name: String::new(),
                    auth_base: String::new(),
                    auth_host: String::new(),
                    claim_headers: Vec::new(),
                }
            }
        });
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(active.clone());
        active
    }
}

// ---- the decision -------------------------------------------------------------------------

impl Authorizer {
    /// Decide one request, exactly as the filter would.
    pub(crate) async fn decide(&self, req: &Request<'_>) -> Outcome {
        let outcome = self.decide_inner(req).await;
        if tracing::enabled!(tracing::Level::DEBUG) {
            // The path without its query (may carry secrets); never a claim value.
            let path = req.path.split('?').next().unwrap_or("");
            match &outcome {
                Outcome::Allow { .. } => {
                    tracing::debug!(host = req.authority, path, "ext_authz: allow")
                }
                Outcome::Refuse { status, reason } => {
                    tracing::debug!(
                        host = req.authority,
                        path,
                        status,
                        reason,
                        "ext_authz: refuse"
                    )
                }
                Outcome::SignIn { .. } => {
                    tracing::debug!(host = req.authority, path, "ext_authz: sign in")
                }
            }
        }
        outcome
    }

    async fn decide_inner(&self, req: &Request<'_>) -> Outcome {
        self.ensure_follower();
        let active = self.engine.get(self);

        // Client identity headers never reach the upstream, whatever the outcome: remove
        // every one the client sent, and always the JWT and configured claim headers (the
        // proxy may not have forwarded them to us).
        let mut remove: Vec<String> = Vec::new();
        let mut push_remove = |name: &str| {
            if !remove.iter().any(|r| r == name) {
                remove.push(name.to_owned());
            }
        };
        push_remove(HEADER_JWT);
        for h in &active.claim_headers {
            push_remove(h);
        }
        for (name, _) in req.headers {
            if name.starts_with(CLAIM_PREFIX) {
                push_remove(name);
            }
        }

        let Some(engine) = active.engine.as_ref() else {
            return refuse(503, reason::POLICY_NOT_LOADED);
        };
        // A path the proxy or the upstream could read as another one is refused, never
        // judged: `/.pomerium/../secret` must not pass as a sidecar path (nginx routes on
        // the decoded, normalised `$uri`, the upstream resolves the dots itself).
        if !eval::path::is_normal(req.path, req.quirks.strict_path) {
            return refuse(400, reason::NON_NORMAL_PATH);
        }
        // Already normal but for the query; the prefixes are tested on the normalised path
        // anyway, so that no later change to the check above can reopen the exemption.
        let norm = eval::path::normalise(eval::path::strip_query(req.path));
        if norm.starts_with("/.portcullis/") {
            return refuse(404, reason::INTERNAL_PATH);
        }
        // The sidecar's own endpoints (callback, sign-out, JWKS, user info) pass untouched
        // but for the stripped headers, as in the filter without a route name.
        if norm.starts_with("/.pomerium/")
            || norm == "/.pomerium"
            || norm.starts_with("/.well-known/pomerium/")
            || (!active.auth_host.is_empty()
                && host_of(req.authority).eq_ignore_ascii_case(&active.auth_host))
        {
            return Outcome::Allow {
                set: Vec::new(),
                remove,
            };
        }
        let Some(route) = engine.find_route(req.authority, req.path) else {
            return refuse(404, reason::NO_ROUTE);
        };
        let info = engine.route(route);
        let needs_session =
            info.uses_identity || info.pass_identity_headers || norm.starts_with("/.pomerium/");

        let now = now_unix();
        let now_u = u64::try_from(now).unwrap_or(0);
        let cookie_header = req.cookie();
        // What to parse: with `cookie_commas`, `,` separates pairs too.
        let cookie_parse: Option<Cow<'_, str>> = match cookie_header.as_deref() {
            Some(h) if req.quirks.cookie_commas && h.contains(',') => {
                Some(Cow::Owned(h.replace(',', ";")))
            }
            Some(h) => Some(Cow::Borrowed(h)),
            None => None,
        };
        // The first cookie value that opens wins (a planted one cannot shadow it).
        let sid = cookie_parse
            .as_deref()
            .filter(|_| needs_session)
            .and_then(|h| {
                cookie::cookie_values(h, &active.cookie_name).find_map(|v| {
                    cookie::open(&self.cookie_key, &active.cookie_name, v, now_u)
                        .ok()
                        .map(|o| o.session_id)
                })
            });
        let aud = audience(req.authority);
        let entry = match sid {
            None => None,
            Some(sid) => match self
                .session(sid, &aud, info.pass_identity_headers, now)
                .await
            {
                Ok(e) => e,
                // A public route never fails because the store is away: decided anonymously.
                Err(_) if info.public => None,
                Err(e) => {
                    tracing::warn!(error = %e, "ext_authz: session lookup failed");
                    return refuse(503, reason::SIDECAR_UNAVAILABLE);
                }
            },
        };
        // A session of another OAuth client than the route's is no session here.
        let entry =
            entry.filter(|e| info.idp_client_id.is_empty() || e.client_id == info.idp_client_id);

        let eval_req = eval::Request {
            method: req.method,
            path: req.path,
            origin: req.header("origin"),
            access_control_request_method: req.header("access-control-request-method"),
            // Client certificates are not read (as in the filter, see docs/filter.md).
            client_certificate: ClientCertificate::None,
            now_unix: now,
        };
        match engine.evaluate(route, &eval_req, entry.as_deref().map(|e| &e.subject)) {
            Decision::Allow => {
                let mut set: Vec<(String, String)> = Vec::new();
                if req.quirks.cookie_undecodable {
                    // Fail closed: ours may be in there.
                    remove.push("cookie".to_owned());
                } else if let (Some(h), Some(p)) =
                    (cookie_header.as_deref(), cookie_parse.as_deref())
                    && cookie::cookie_values(p, &active.cookie_name)
                        .next()
                        .is_some()
                {
                    let rest = if req.quirks.cookie_commas {
                        strip_cookie_commas(h, &active.cookie_name)
                    } else {
                        cookie::strip_cookie(h, &active.cookie_name)
                    };
                    match rest {
                        Some(rest) => set.push(("cookie".to_owned(), rest)),
                        None => remove.push("cookie".to_owned()),
                    }
                }
                if info.pass_identity_headers
                    && let Some(e) = entry.as_deref()
                {
                    if let Some(jwt) = e.jwt(&aud, now) {
                        set.push((HEADER_JWT.to_owned(), jwt.to_owned()));
                    }
                    for h in &e.claim_headers {
                        set.push((h.name.clone(), h.value.clone()));
                    }
                }
                // A value no proxy can send (a control character in a claim) is not set —
                // and its name stays on the remove list, so the client's own header of that
                // name never passes in its place.
                set.retain(|(name, value)| {
                    let ok = header_value_ok(value);
                    if !ok {
                        tracing::debug!(
                            header = %name,
                            "ext_authz: not a valid header value (not logged); header removed instead"
                        );
                        if !remove.iter().any(|r| r == name) {
                            remove.push(name.clone());
                        }
                    }
                    ok
                });
                remove.retain(|r| !set.iter().any(|(n, _)| n == r));
                Outcome::Allow { set, remove }
            }
            Decision::Deny(r) => refuse(403, r.code()),
            Decision::Login => {
                let scheme = req.scheme.filter(|s| *s == "http").unwrap_or("https");
                let back = format!("{scheme}://{}{}", req.authority, req.path);
                Outcome::SignIn {
                    url: signed_url::sign_in_url(
                        &self.redirect_key,
                        &active.auth_base,
                        &back,
                        now_u,
                    ),
                }
            }
        }
    }

    /// A live session for `sid`: the cache when it holds a usable entry (and a JWT for
    /// `aud` if `needs_jwt`), else the store through the internal API's own lookup.
    async fn session(
        &self,
        sid: SessionId,
        aud: &str,
        needs_jwt: bool,
        now: i64,
    ) -> Result<Option<Arc<Entry>>, AppError> {
        let cached = |lookup: Lookup| match lookup {
            Lookup::Absent => Ok(None),
            Lookup::Hit(e) if e.expires_at <= now => Ok(None),
            Lookup::Hit(e) if !needs_jwt || e.jwt(aud, now).is_some() => Ok(Some(e)),
            Lookup::Hit(_) | Lookup::Miss => Err(true),
            Lookup::Stale => Err(false),
        };
        if let Ok(found) = cached(self.cache.lookup(sid.as_str())) {
            return Ok(found);
        }
        // Concurrent misses for one session + audience share one store read: the first
        // reads, the others wait for it and find its answer in the cache.
        let gate = self.cache.gate(sid.as_str(), aud);
        let _turn = gate.lock().await;
        let ticket = match cached(self.cache.lookup(sid.as_str())) {
            Ok(found) => return Ok(found),
            Err(true) => self.cache.ticket(),
            Err(false) => None,
        };
        let old = self.cache.peek(sid.as_str());
        let resp = crate::internal_api::session_response(&self.state, sid.as_str(), aud).await?;
        let view = match resp.view {
            Some(view) if resp.found && view.session_id == sid.as_str() => view,
            _ => {
                self.cache.insert(sid.as_str(), None, ticket);
                return Ok(None);
            }
        };
        // Keep other audiences' JWTs while the record is unchanged.
        let mut jwts: Vec<Jwt> = match old {
            Some(o) if o.version == view.version => {
                o.jwts.iter().filter(|j| j.aud != aud).cloned().collect()
            }
            _ => Vec::new(),
        };
        if !resp.identity_jwt.is_empty() {
            jwts.truncate(MAX_AUDIENCES - 1);
            jwts.push(Jwt {
                aud: aud.to_owned(),
                token: resp.identity_jwt,
                expires_at: resp.jwt_expires_at,
            });
        }
        let entry = Arc::new(Entry {
            subject: subject(&view),
            client_id: view.client_id,
            claim_headers: view.claim_headers,
            expires_at: view.expires_at,
            version: view.version,
            jwts,
        });
        self.cache.insert(sid.as_str(), Some(entry.clone()), ticket);
        Ok(Some(entry))
    }
}

fn refuse(status: u16, reason: &'static str) -> Outcome {
    Outcome::Refuse { status, reason }
}

/// Whether `value` can be sent as a header value: no control character but tab (bytes
/// ≥ 0x80 are obs-text, which proxies pass on).
pub(super) fn header_value_ok(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// [`cookie::strip_cookie`] for a header in which `,` may separate cookies too: Envoy
/// joins repeated `Cookie` headers with `,` in its check requests (HTTP service and gRPC,
/// seen with Envoy 1.40). A comma-separated part with a `=` starts a cookie, one without
/// belongs to the value before it (`prefs=a,b` is one cookie). Ours are removed, the
/// others kept as written and joined with `; `.
fn strip_cookie_commas(header: &str, name: &str) -> Option<String> {
    let is_ours = |pair: &str| pair.split_once('=').map_or(pair, |(k, _)| k).trim() == name;
    let mut cookies: Vec<String> = Vec::new();
    for piece in header.split(';') {
        // The cookie the next `=`-less part belongs to; `ours` when it is ours (dropped).
        let mut current: Option<usize> = None;
        let mut ours = false;
        for (i, part) in piece.split(',').enumerate() {
            let p = part.trim();
            if i == 0 || p.contains('=') {
                current = None;
                ours = !p.is_empty() && is_ours(p);
                if !p.is_empty() && !ours {
                    cookies.push(p.to_owned());
                    current = Some(cookies.len() - 1);
                }
            } else if let Some(c) = current.and_then(|c| cookies.get_mut(c)) {
                c.push(',');
                c.push_str(part.trim_end());
            } else if !ours && !p.is_empty() {
                cookies.push(p.to_owned());
                current = Some(cookies.len() - 1);
            }
        }
    }
    (!cookies.is_empty()).then(|| cookies.join("; "))
}

/// The evaluator's subject for a policy view (as the filter builds it).
fn subject(view: &SessionView) -> Subject {
    let claims = Claims::from_flat(view.claims.iter().map(|c| {
        let values = c
            .values
            .iter()
            .map(|v| match &v.kind {
                Some(Kind::Str(s)) => ClaimValue::Str(s.clone()),
                Some(Kind::Number(n)) => ClaimValue::Number(*n),
                Some(Kind::Bool(b)) => ClaimValue::Bool(*b),
                None => ClaimValue::Other,
            })
            .collect();
        (c.key.clone(), values)
    }));
    Subject::new(view.user_id.clone(), view.email.clone(), claims)
}

/// The JWT audience of a request: its host, without port, lower-cased.
fn audience(authority: &str) -> String {
    host_of(authority).to_ascii_lowercase()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_audiences() {
        assert_eq!(audience("App.Example.com:8443"), "app.example.com");
        assert_eq!(host_of("[::1]:80"), "::1");
        assert_eq!(
            authority_of_url("https://auth.example.com:8443/x"),
            "auth.example.com:8443"
        );
    }

    #[test]
    fn cookies_are_joined() {
        let headers = [("cookie", "a=1"), ("x", "y"), ("cookie", "b=2")];
        let r = Request {
            authority: "h",
            path: "/",
            method: "GET",
            scheme: None,
            headers: &headers,
            quirks: Quirks::default(),
        };
        assert_eq!(r.cookie().as_deref(), Some("a=1; b=2"));
        let one = [("cookie", "a=1")];
        let r = Request { headers: &one, ..r };
        assert!(matches!(r.cookie(), Some(Cow::Borrowed("a=1"))));
    }

    #[test]
    fn cookies_split_on_commas_only_around_ours() {
        assert_eq!(
            strip_cookie_commas("prefs=a,b; _p=x", "_p").as_deref(),
            Some("prefs=a,b")
        );
        assert_eq!(
            strip_cookie_commas("_p=x,z=9; a=1", "_p").as_deref(),
            Some("z=9; a=1")
        );
        assert_eq!(strip_cookie_commas("_p=x, _p=y", "_p"), None);
        assert_eq!(
            strip_cookie_commas("x=1,_p=X,prefs=a,b", "_p").as_deref(),
            Some("x=1; prefs=a,b")
        );
        assert_eq!(
            strip_cookie_commas("a=1, b; _p=X,c", "_p").as_deref(),
            Some("a=1, b")
        );
        assert!(!header_value_ok("a\u{1}b"));
        assert!(!header_value_ok("a\r\nb"));
        assert!(!header_value_ok("a\u{7f}"));
        assert!(header_value_ok("José\tx"));
    }

    #[test]
    fn request_ids_are_sanitised() {
        assert_eq!(safe_request_id(Some("abc-123")), "abc-123");
        assert_eq!(safe_request_id(Some("<script>")), "-");
        assert_eq!(safe_request_id(None), "-");
    }
}
