//! Login, callback, hand-off, sign-out, user info and JWKS routes (Pomerium's URLs).
//!
//! ```text
//! route host ──filter──► authenticate host /.pomerium/sign_in?pomerium_redirect_uri&issued&signature
//!      (signed return URL checked; host must be a configured route)
//!   ├─ the browser already has a session on the authenticate host ─► hand-off (no IdP trip)
//!   └─ otherwise ─► IdP authorize (PKCE S256, state, nonce) + CSRF cookie
//! IdP ──► authenticate host /oauth2/callback?code&state
//!      (state MAC + CSRF cookie, code exchange, ID token verified, user info) → session
//!   ─► route host /.pomerium/callback?pomerium_handoff=… (sealed, ≤ 60 s, single use)
//!      → session cookie for the route host ─► the original URL
//! ```
//! With `cookie_domain` covering both hosts the cookie set on the authenticate host
//! already applies and the hand-off is skipped.
//!
//! Contract with the core (`lib.rs`, `main.rs`): [`routes`] is merged into the sidecar's
//! router; [`setup`] runs once at startup (no network: OIDC discovery is lazy) and
//! returns the IdP clients, the identity JWT signer and [`LoginState`].
//!
//! Every failure is a styled error page with a 4xx/5xx status ([`LoginError`]); details
//! that could help an attacker or leak a token are only logged.

pub mod tokens;
pub mod urls;

use crate::databroker::now_unix;
use crate::error::StartupError;
use crate::idp::{IdentityProvider, IdentitySigner, IdpError, IdpRegistry};
use crate::jwt::JwtSigner;
use crate::oidc::{OidcClient, OidcProvider};
use crate::pages;
use crate::session::{NewSession, Session};
use crate::settings::Settings;
use crate::state::AppState;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use portcullis_common::cookie::{self, CookieKey};
use portcullis_common::signed_url::{
    PARAM_ISSUED, PARAM_REDIRECT_URI, PARAM_SIGNATURE, RedirectKey, SIGN_IN_PATH,
};
use std::collections::HashMap;
use std::sync::Arc;
use tokens::{FlowKeys, HANDOFF_TTL_SECS, Handoff, LOGIN_STATE_TTL_SECS, TokenError};
use url::Url;

/// The OAuth redirect path on the authenticate host (Pomerium's default
/// `authenticate_callback_path`).
pub const CALLBACK_PATH: &str = "/oauth2/callback";
/// The hand-off path on route hosts.
pub const HANDOFF_PATH: &str = "/.pomerium/callback";
/// Query parameter carrying the hand-off token.
pub const PARAM_HANDOFF: &str = "pomerium_handoff";
/// Query parameter marking a programmatic sign-in (value: the route host).
pub const PARAM_PROGRAMMATIC: &str = "pomerium_programmatic";
/// Query parameter the CLI receives its token in (Pomerium's name).
pub const PARAM_JWT: &str = "pomerium_jwt";
/// Form field / query parameter of the sign-out CSRF token.
pub const PARAM_CSRF: &str = "pomerium_csrf";
/// The JWKS path.
pub const JWKS_PATH: &str = "/.well-known/pomerium/jwks.json";

/// One route as the login flow sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTarget {
    /// `http` or `https` (the route's `from`).
    pub scheme: String,
    /// Normalised authority (`host[:port]`, default port dropped).
    pub host: String,
    /// The OAuth client this route logs in with.
    pub client_id: String,
}

/// How session cookies are written.
#[derive(Debug, Clone)]
pub struct CookieSettings {
    /// `cookie_name`.
    pub name: String,
    /// `cookie_domain`, if any.
    pub domain: Option<String>,
    /// `Secure` attribute.
    pub secure: bool,
    /// `HttpOnly` attribute.
    pub http_only: bool,
    /// `cookie_expire` in seconds.
    pub expire_secs: i64,
}

/// What the login flow needs at request time.
pub struct LoginState {
    /// `authenticate_service_url` (scheme + authority).
    authenticate: Option<Url>,
    /// Its normalised authority.
    authenticate_host: String,
    provider: Option<Arc<OidcProvider>>,
    clients: HashMap<String, Arc<OidcClient>>,
    /// Swapped whole when the configuration reloads ([`LoginState::reload_routes`]).
    routes: std::sync::RwLock<Arc<Vec<RouteTarget>>>,
    /// The client of routes without their own `idp_client_id` (for reloads).
    default_client_id: String,
    redirect_key: RedirectKey,
    flow: FlowKeys,
    cookie_key: CookieKey,
    cookie: CookieSettings,
    whitelist: Vec<String>,
    signout_redirect_url: Option<Url>,
}

impl std::fmt::Debug for LoginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginState")
            .field("authenticate", &self.authenticate.as_ref().map(Url::as_str))
            .field("clients", &self.clients.keys().collect::<Vec<_>>())
            .field("routes", &self.routes_now())
            .finish_non_exhaustive()
    }
}

/// What [`setup`] produces.
pub struct Setup {
    /// IdP clients by client id.
    pub idps: IdpRegistry,
    /// Identity JWT signer.
    pub signer: Arc<dyn IdentitySigner>,
    /// Login flow state.
    pub login: Arc<LoginState>,
}

fn setting_error(option: &'static str, reason: impl std::fmt::Display) -> StartupError {
    StartupError::Setting {
        option,
        reason: reason.to_string(),
    }
}

/// Build the IdP clients, the signer and the login state. No network: discovery happens
/// on first use, so the sidecar starts while the IdP is down.
pub async fn setup(settings: &Settings) -> Result<Setup, StartupError> {
    let authenticate = match &settings.authenticate_service_url {
        Some(u) => {
            let url = Url::parse(u).map_err(|e| setting_error("authenticate_service_url", e))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(setting_error(
                    "authenticate_service_url",
                    "must be an http(s) URL with a host",
                ));
            }
            Some(url)
        }
        None => None,
    };
    let authenticate_host = authenticate
        .as_ref()
        .and_then(urls::url_authority)
        .unwrap_or_default();
    if settings.signing_key.is_none()
        && matches!(
            settings.storage,
            crate::settings::StorageSettings::Redis { .. }
        )
    {
        tracing::warn!(
            "no signing_key: each sidecar replica generates its own identity JWT key, so the JWKS differs between replicas; set signing_key when running several"
        );
    }
    let signer = JwtSigner::new(
        settings.signing_key.as_ref().map(|k| k.expose()),
        authenticate_host.clone(),
        &settings.jwt_claims_headers,
    )
    .map_err(|e| setting_error("signing_key", e))?;

    let default_client_id = settings
        .idp_client
        .as_ref()
        .map(|c| c.client_id.clone())
        .unwrap_or_default();
    let mut idps = IdpRegistry::new(default_client_id.clone());
    let mut clients = HashMap::new();
    let provider = match &settings.idp_provider_url {
        Some(issuer) => {
            let Some(auth) = &authenticate else {
                return Err(setting_error(
                    "authenticate_service_url",
                    "required when idp_provider_url is set (the OAuth redirect URL is derived from it)",
                ));
            };
            let provider = Arc::new(
                OidcProvider::new(issuer).map_err(|e| setting_error("idp_provider_url", e))?,
            );
            let redirect = auth
                .join(CALLBACK_PATH)
                .map_err(|e| setting_error("authenticate_service_url", e))?;
            for c in settings
                .idp_client
                .iter()
                .chain(settings.route_idp_clients.iter())
            {
                if clients.contains_key(&c.client_id) {
                    continue;
                }
                let client = Arc::new(
                    OidcClient::new(
                        provider.clone(),
                        &c.client_id,
                        &c.client_secret,
                        redirect.as_str(),
                        &settings.idp_scopes,
                        settings.idp_request_params.clone(),
                    )
                    .map_err(|e| setting_error("idp_client_id", e))?,
                );
                idps.insert(
                    c.client_id.clone(),
                    client.clone() as Arc<dyn IdentityProvider>,
                );
                clients.insert(c.client_id.clone(), client);
            }
            Some(provider)
        }
        None => None,
    };

    let routes = route_targets(settings, &default_client_id);
    let signout_redirect_url = match &settings.signout_redirect_url {
        Some(u) => Some(Url::parse(u).map_err(|e| setting_error("signout_redirect_url", e))?),
        None => None,
    };
    let login = LoginState {
        authenticate,
        authenticate_host,
        provider,
        clients,
        routes: std::sync::RwLock::new(Arc::new(routes)),
        default_client_id: default_client_id.clone(),
        redirect_key: RedirectKey::new(&settings.shared_secret),
        flow: FlowKeys::new(&settings.cookie_secret, &settings.shared_secret),
        cookie_key: CookieKey::new(&settings.cookie_secret),
        cookie: CookieSettings {
            name: settings.cookie_name.clone(),
            domain: settings
                .cookie_domain
                .as_ref()
                .map(|d| d.trim().trim_start_matches('.').to_ascii_lowercase())
                .filter(|d| !d.is_empty()),
            secure: settings.cookie_secure && !settings.insecure_server,
            http_only: settings.cookie_http_only,
            expire_secs: i64::try_from(settings.cookie_expire.as_secs()).unwrap_or(i64::MAX),
        },
        whitelist: settings.programmatic_redirect_domain_whitelist.clone(),
        signout_redirect_url,
    };
    Ok(Setup {
        idps,
        signer: Arc::new(signer),
        login: Arc::new(login),
    })
}

/// Re-read the routes from the configuration file whenever the policy bundle changes
/// (hot reload), so hosts added or changed by a reload can sign in without a restart.
/// Runs until the process ends; a file that fails to load keeps the routes in service.
pub async fn watch_routes(state: AppState) {
    let (Some(login), Some(path)) = (state.login.clone(), state.settings.config_file.clone())
    else {
        return;
    };
    let mut bundles = state.bundle.subscribe();
    while bundles.changed().await.is_ok() {
        match reload_routes_from_file(&login, &path) {
            Ok(n) => tracing::info!(routes = n, "login routes reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "reloading the login routes failed; keeping the current ones")
            }
        }
    }
}

/// Load `path` (the shared configuration loader) and put its routes in service.
pub fn reload_routes_from_file(
    login: &LoginState,
    path: &std::path::Path,
) -> Result<usize, String> {
    let loaded =
        policy_compiler::config::load_file(path).map_err(|d| crate::bundle::diagnostics(&d))?;
    let settings = Settings::from_config(&loaded.config, None).map_err(|e| e.to_string())?;
    Ok(login.reload_routes(&settings))
}

/// Routes from `login_routes`, or (when the settings only list hosts) from `route_hosts`
/// with the default client and the scheme implied by `insecure_server`.
fn route_targets(settings: &Settings, default_client_id: &str) -> Vec<RouteTarget> {
    let mut out: Vec<RouteTarget> = Vec::new();
    for r in &settings.login_routes {
        let Some(url) = Url::parse(&r.from).ok() else {
            continue;
        };
        let Some(host) = urls::url_authority(&url) else {
            continue;
        };
        if out.iter().any(|t| t.host == host) {
            // First route of a host wins (Pomerium matches routes in order).
            continue;
        }
        out.push(RouteTarget {
            scheme: url.scheme().to_owned(),
            host,
            client_id: r
                .idp_client_id
                .clone()
                .unwrap_or_else(|| default_client_id.to_owned()),
        });
    }
    let scheme = if settings.insecure_server {
        "http"
    } else {
        "https"
    };
    for h in &settings.route_hosts {
        let host = urls::normalize_authority(h, scheme);
        if !out.iter().any(|t| t.host == host) {
            out.push(RouteTarget {
                scheme: scheme.to_owned(),
                host,
                client_id: default_client_id.to_owned(),
            });
        }
    }
    out
}

/// Browser-facing routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(SIGN_IN_PATH, get(sign_in))
        .route(CALLBACK_PATH, get(oauth_callback))
        .route(HANDOFF_PATH, get(handoff))
        .route("/.pomerium/callback/", get(handoff))
        .route("/.pomerium", get(user_info))
        .route("/.pomerium/", get(user_info))
        .route("/.pomerium/user", get(user_json))
        .route("/.pomerium/sign_out", get(sign_out_get).post(sign_out_post))
        .route("/.pomerium/signed_out", get(signed_out))
        .route("/.pomerium/api/v1/login", get(programmatic_login))
        .route(JWKS_PATH, get(jwks))
}

// ---- errors ------------------------------------------------------------------------------

/// A failed login-flow request, rendered as a styled page.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Bad or tampered input (the message is shown).
    #[error("{0}")]
    BadRequest(&'static str),
    /// Not signed in / session gone (the message is shown).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The IdP refused the user.
    #[error("{0}")]
    Forbidden(String),
    /// The IdP could not be reached or misbehaved.
    #[error("identity provider: {0}")]
    Idp(IdpError),
    /// The databroker failed.
    #[error("session store: {0}")]
    Store(String),
    /// Login is not configured.
    #[error("{0}")]
    NotConfigured(&'static str),
    /// Our fault.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<crate::session::SessionError> for LoginError {
    fn from(e: crate::session::SessionError) -> Self {
        LoginError::Store(e.to_string())
    }
}

impl From<crate::databroker::StoreError> for LoginError {
    fn from(e: crate::databroker::StoreError) -> Self {
        LoginError::Store(e.to_string())
    }
}

impl IntoResponse for LoginError {
    fn into_response(self) -> Response {
        let (status, heading, message, hint) = match &self {
            LoginError::BadRequest(m) => (
                StatusCode::BAD_REQUEST,
                "This sign-in link cannot be used",
                m.to_string(),
                "Go back to the application and try again; a fresh link will be created.",
            ),
            LoginError::Unauthorized(m) => (
                StatusCode::UNAUTHORIZED,
                "You are not signed in",
                m.to_string(),
                "Open the application again to sign in.",
            ),
            LoginError::Forbidden(_) => (
                StatusCode::FORBIDDEN,
                "Sign-in refused",
                "The identity provider did not accept this account.".to_owned(),
                "Contact your administrator if you think this is wrong.",
            ),
            LoginError::Idp(_) => (
                StatusCode::BAD_GATEWAY,
                "The identity provider is not answering",
                "Signing in failed because the identity provider could not be reached or gave an unexpected answer.".to_owned(),
                "Try again in a moment.",
            ),
            LoginError::Store(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Sessions are temporarily unavailable",
                "The session store could not be reached.".to_owned(),
                "Try again in a moment.",
            ),
            LoginError::NotConfigured(m) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in is not configured",
                m.to_string(),
                "Ask your administrator to configure an identity provider.",
            ),
            LoginError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "An internal error occurred.".to_owned(),
                "Try again in a moment.",
            ),
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "login flow request failed");
        } else {
            tracing::info!(error = %self, "login flow request rejected");
        }
        pages::error_page(status, heading, &message, hint)
    }
}

type LoginResult = Result<Response, LoginError>;

// ---- helpers -----------------------------------------------------------------------------

fn login_state(state: &AppState) -> Result<&Arc<LoginState>, LoginError> {
    state.login.as_ref().ok_or(LoginError::NotConfigured(
        "This sidecar was started without a login flow.",
    ))
}

fn query(uri: &Uri) -> HashMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// The request's host: `Host`, or the URI authority (HTTP/2).
fn request_host(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty() && !h.contains(['/', '\\', '@', ' ']))
}

fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (
            StatusCode::FOUND,
            [
                (header::LOCATION, v),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
        )
            .into_response(),
        Err(_) => LoginError::Internal("unencodable redirect".into()).into_response(),
    }
}

fn with_cookies(mut response: Response, cookies: &[String]) -> Response {
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

/// Every value of cookie `name` in the request (several `Cookie` headers are possible).
fn cookie_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|h| {
            cookie::cookie_values(h, name)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn http_date(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .unwrap_or_default()
}

fn now_u64() -> u64 {
    u64::try_from(now_unix()).unwrap_or(0)
}

impl LoginState {
    /// The route configured for `authority` (normalised with the route's scheme), with
    /// Pomerium's host semantics: an exact host wins; otherwise the first route whose
    /// host has `*` wildcards matching it (each `*` any run of characters, as
    /// [`policy_compiler::eval::wildcard_host_matches`]). The answer's `host` is always
    /// the concrete authority (never the pattern): hand-offs and cookies are bound to
    /// the host the browser is on.
    pub fn route(&self, authority: &str) -> Option<RouteTarget> {
        let routes = self.routes_now();
        if let Some(r) = routes
            .iter()
            .find(|r| r.host == urls::normalize_authority(authority, &r.scheme))
        {
            return Some(r.clone());
        }
        routes.iter().find_map(|r| {
            let host = urls::normalize_authority(authority, &r.scheme);
            (r.host.contains('*')
                && !host.is_empty()
                && !host.contains('*')
                && policy_compiler::eval::wildcard_host_matches(&r.host, &host))
            .then(|| RouteTarget {
                scheme: r.scheme.clone(),
                host,
                client_id: r.client_id.clone(),
            })
        })
    }

    /// The routes in service.
    pub fn routes_now(&self) -> Arc<Vec<RouteTarget>> {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Put the routes of reloaded `settings` in service (routes added by a policy hot
    /// reload can sign in without a restart). OAuth clients are not reloaded: a route
    /// naming a client unknown at startup gets a clear "not configured" page.
    pub fn reload_routes(&self, settings: &Settings) -> usize {
        let routes = route_targets(settings, &self.default_client_id);
        let n = routes.len();
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(routes);
        n
    }

    fn is_authenticate_host(&self, authority: &str) -> bool {
        self.authenticate.as_ref().is_some_and(|u| {
            !self.authenticate_host.is_empty()
                && self.authenticate_host == urls::normalize_authority(authority, u.scheme())
        })
    }

    fn client(&self, client_id: &str) -> Result<&Arc<OidcClient>, LoginError> {
        self.clients.get(client_id).ok_or(LoginError::NotConfigured(
            "No identity provider client is configured for this route.",
        ))
    }

    fn authenticate_url(&self, path: &str) -> Result<Url, LoginError> {
        self.authenticate
            .as_ref()
            .ok_or(LoginError::NotConfigured(
                "authenticate_service_url is not set.",
            ))?
            .join(path)
            .map_err(|e| LoginError::Internal(e.to_string()))
    }

    /// Does `cookie_domain` cover `host`?
    fn domain_covers(&self, host: &str) -> bool {
        self.cookie
            .domain
            .as_deref()
            .is_some_and(|d| urls::host_under_domain(host, d))
    }

    /// A `Set-Cookie` value for `host`.
    fn set_cookie(&self, name: &str, value: &str, max_age: i64, host: &str) -> String {
        let mut c = format!("{name}={value}; Path=/; Max-Age={max_age}");
        if max_age > 0 {
            c.push_str("; Expires=");
            c.push_str(&http_date(now_unix().saturating_add(max_age)));
        } else {
            c.push_str("; Expires=Thu, 01 Jan 1970 00:00:00 GMT");
        }
        if let Some(d) = &self.cookie.domain
            && urls::host_under_domain(host, d)
        {
            c.push_str("; Domain=");
            c.push_str(d);
        }
        if self.cookie.secure {
            c.push_str("; Secure");
        }
        if self.cookie.http_only {
            c.push_str("; HttpOnly");
        }
        c.push_str("; SameSite=Lax");
        c
    }

    /// The session cookie for `session` on `host`: sealed value and `Set-Cookie` header.
    fn session_cookie(
        &self,
        session: &Session,
        host: &str,
    ) -> Result<(String, String), LoginError> {
        let now = now_unix();
        let expires_at = session
            .expires_at
            .min(now.saturating_add(self.cookie.expire_secs));
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|e| LoginError::Internal(e.to_string()))?;
        let value = cookie::seal(
            &self.cookie_key,
            &self.cookie.name,
            &session.id,
            u64::try_from(expires_at).unwrap_or(0),
            nonce,
        )
        .ok_or_else(|| LoginError::Internal("session id not sealable".into()))?;
        let header = self.set_cookie(
            &self.cookie.name,
            &value,
            expires_at.saturating_sub(now).max(1),
            host,
        );
        Ok((value, header))
    }

    fn clear_cookie(&self, name: &str, host: &str) -> String {
        self.set_cookie(name, "", 0, host)
    }

    fn csrf_cookie_name(&self, login_nonce: &str) -> String {
        format!(
            "{}_csrf_{}",
            self.cookie.name,
            login_nonce.get(..8).unwrap_or(login_nonce)
        )
    }
}

/// The live session the request's cookie names, if any (first cookie that opens wins).
async fn current_session(
    state: &AppState,
    login: &LoginState,
    headers: &HeaderMap,
) -> Result<Option<Session>, LoginError> {
    let now = now_u64();
    for value in cookie_values(headers, &login.cookie.name) {
        let Ok(opened) = cookie::open(&login.cookie_key, &login.cookie.name, &value, now) else {
            continue;
        };
        if let Some(s) = state.sessions.get(opened.session_id.as_str()).await? {
            return Ok(Some(s));
        }
    }
    Ok(None)
}

/// Validate a return URL: parseable, http(s), and on a configured route host.
fn checked_return_url(login: &LoginState, raw: &str) -> Result<(Url, RouteTarget), LoginError> {
    let url = urls::parse_redirect_target(raw).ok_or(LoginError::BadRequest(
        "The return address is not a valid web address.",
    ))?;
    let host = urls::url_authority(&url)
        .ok_or(LoginError::BadRequest("The return address has no host."))?;
    // Any scheme the route's host is reached with (TLS may end before Envoy); the host
    // is what must be ours.
    let route = login.route(&host).ok_or(LoginError::BadRequest(
        "The return address is not one of the configured applications.",
    ))?;
    Ok((url, route))
}

// ---- sign in -----------------------------------------------------------------------------

async fn sign_in(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    sign_in_inner(&state, &headers, &uri)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn sign_in_inner(state: &AppState, headers: &HeaderMap, uri: &Uri) -> LoginResult {
    let login = login_state(state)?;
    // `/.pomerium/*` reaches us on route hosts too: a login must run on the authenticate
    // host (its CSRF cookie and session live there), so move it there unchanged.
    if let Some(host) = request_host(headers, uri)
        && login.authenticate.is_some()
        && !login.is_authenticate_host(&host)
    {
        let mut target = login.authenticate_url(SIGN_IN_PATH)?;
        target.set_query(uri.query());
        return Ok(redirect(target.as_str()));
    }
    let q = query(uri);
    let raw = q.get(PARAM_REDIRECT_URI).ok_or(LoginError::BadRequest(
        "The sign-in link has no return address.",
    ))?;
    let issued: u64 = q
        .get(PARAM_ISSUED)
        .and_then(|s| s.parse().ok())
        .ok_or(LoginError::BadRequest("The sign-in link is incomplete."))?;
    let signature = q
        .get(PARAM_SIGNATURE)
        .ok_or(LoginError::BadRequest("The sign-in link is not signed."))?;
    let now = now_u64();

    let (return_url, route, programmatic) = match q.get(PARAM_PROGRAMMATIC) {
        Some(host) => {
            if !login
                .flow
                .check_programmatic(host, raw, issued, signature, now)
            {
                return Err(LoginError::BadRequest(
                    "The sign-in link is invalid or has expired.",
                ));
            }
            let route = login
                .route(host)
                .ok_or(LoginError::BadRequest("The application is not configured."))?;
            let url = urls::parse_redirect_target(raw)
                .filter(|u| urls::programmatic_allowed(u, &login.whitelist))
                .ok_or(LoginError::BadRequest(
                    "The return address is not allowed for programmatic login.",
                ))?;
            (url, route, true)
        }
        None => {
            if !login.redirect_key.verify(raw, issued, signature, now) {
                return Err(LoginError::BadRequest(
                    "The sign-in link is invalid or has expired.",
                ));
            }
            let (url, route) = checked_return_url(login, raw)?;
            (url, route, false)
        }
    };

    // Already signed in on the authenticate host with this route's client: hand off
    // without another trip to the IdP (single sign-on across route hosts).
    if !programmatic
        && let Some(host) = request_host(headers, uri)
        && login.is_authenticate_host(&host)
        && let Some(session) = current_session(state, login, headers).await?
        && session.client_id == route.client_id
    {
        return finish_login(
            login,
            &session,
            &host,
            &route,
            &return_url,
            false,
            Vec::new(),
        );
    }

    let client = login.client(&route.client_id)?;
    let login_nonce = tokens::random_b64(16).map_err(|e| LoginError::Internal(e.to_string()))?;
    let st = tokens::LoginState {
        nonce: login_nonce.clone(),
        return_url: return_url.to_string(),
        host: route.host.clone(),
        client_id: route.client_id.clone(),
        programmatic,
        expires_at: now_unix().saturating_add(LOGIN_STATE_TTL_SECS),
    };
    let sealed = login
        .flow
        .seal_state(&st)
        .map_err(|e| LoginError::Internal(e.to_string()))?;
    let authorize = client
        .authorize_url(
            &sealed,
            &login.flow.oidc_nonce(&sealed),
            &login.flow.pkce_verifier(&sealed),
        )
        .await
        .map_err(LoginError::Idp)?;
    let csrf_name = login.csrf_cookie_name(&login_nonce);
    let auth_host = login.authenticate_host.clone();
    // The CSRF cookie is host-only on the authenticate host (never Domain=), short-lived.
    let mut csrf = format!(
        "{csrf_name}={}; Path=/; Max-Age={LOGIN_STATE_TTL_SECS}; SameSite=Lax; HttpOnly",
        login.flow.csrf_cookie_value(&sealed)
    );
    if login.cookie.secure {
        csrf.push_str("; Secure");
    }
    tracing::debug!(route = %auth_host, client = %route.client_id, "login started");
    Ok(with_cookies(redirect(authorize.as_str()), &[csrf]))
}

/// After a session exists: set the authenticate-host cookie (if given), then go to the
/// CLI (programmatic), straight to the return URL (shared `cookie_domain`), or hand off.
fn finish_login(
    login: &LoginState,
    session: &Session,
    request_host: &str,
    route: &RouteTarget,
    return_url: &Url,
    programmatic: bool,
    mut cookies: Vec<String>,
) -> LoginResult {
    let (value, auth_cookie) = login.session_cookie(session, request_host)?;
    cookies.push(auth_cookie);
    if programmatic {
        let target = urls::with_query(return_url.clone(), PARAM_JWT, &value);
        return Ok(with_cookies(redirect(target.as_str()), &cookies));
    }
    if login.domain_covers(&route.host) && login.domain_covers(request_host) {
        return Ok(with_cookies(redirect(return_url.as_str()), &cookies));
    }
    let token = login
        .flow
        .seal_handoff(&Handoff {
            id: tokens::random_b64(16).map_err(|e| LoginError::Internal(e.to_string()))?,
            session_id: session.id.clone(),
            host: route.host.clone(),
            return_url: return_url.to_string(),
            expires_at: now_unix().saturating_add(HANDOFF_TTL_SECS),
        })
        .map_err(|e| LoginError::Internal(e.to_string()))?;
    // The hand-off goes to the origin the browser came from (the validated return URL).
    let mut target = return_url.clone();
    target.set_path(HANDOFF_PATH);
    target.set_fragment(None);
    target.set_query(None);
    target.query_pairs_mut().append_pair(PARAM_HANDOFF, &token);
    Ok(with_cookies(redirect(target.as_str()), &cookies))
}

// ---- OAuth callback ----------------------------------------------------------------------

async fn oauth_callback(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    match callback_inner(&state, &headers, &uri).await {
        Ok(r) => r,
        Err(e) => {
            state.metrics.login_failures.inc();
            e.into_response()
        }
    }
}

async fn callback_inner(state: &AppState, headers: &HeaderMap, uri: &Uri) -> LoginResult {
    let login = login_state(state)?;
    let q = query(uri);
    if let Some(error) = q.get("error") {
        tracing::info!(idp_error = ?error, "the identity provider returned an error to the callback");
        return Err(LoginError::Forbidden(error.clone()));
    }
    let raw_state = q
        .get("state")
        .ok_or(LoginError::BadRequest("The sign-in response has no state."))?;
    let code = q
        .get("code")
        .ok_or(LoginError::BadRequest("The sign-in response has no code."))?;
    let st = match login.flow.open_state(raw_state, now_unix()) {
        Ok(s) => s,
        Err(TokenError::Expired) => {
            return Err(LoginError::BadRequest(
                "The sign-in took too long and has expired.",
            ));
        }
        Err(_) => {
            return Err(LoginError::BadRequest(
                "The sign-in state is invalid or was tampered with.",
            ));
        }
    };
    let csrf_name = login.csrf_cookie_name(&st.nonce);
    if !cookie_values(headers, &csrf_name)
        .iter()
        .any(|v| login.flow.check_csrf_cookie(raw_state, v))
    {
        return Err(LoginError::BadRequest(
            "This sign-in was not started in this browser (missing or wrong CSRF cookie).",
        ));
    }
    let route = login
        .route(&st.host)
        // The route's client changed since sign-in started: a session of the old client
        // would not be accepted there (nor went through the new client's app assignment).
        .filter(|r| r.client_id == st.client_id)
        .ok_or(LoginError::BadRequest(
            "The application is no longer configured.",
        ))?;
    let return_url = urls::parse_redirect_target(&st.return_url)
        .ok_or(LoginError::BadRequest("Invalid return address."))?;
    let client = login.client(&st.client_id)?;
    let verifier = login.flow.pkce_verifier(raw_state);
    let nonce = login.flow.oidc_nonce(raw_state);
    let tokens = client
        .exchange_code(code, &verifier, &nonce)
        .await
        .map_err(idp_login_error)?;
    let sub = tokens
        .id_token
        .claims
        .get("sub")
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| LoginError::Idp(IdpError::Protocol("ID token without sub".into())))?
        .to_owned();
    let user_info = client
        .user_info(&tokens.tokens.access_token)
        .await
        .map_err(idp_login_error)?;
    // OIDC Core 5.3.2: the user-info `sub` must be the ID token's, or the response is
    // not about this user.
    if let Some(ui_sub) = user_info.get("sub")
        && ui_sub.as_str() != Some(sub.as_str())
    {
        return Err(LoginError::Idp(IdpError::Protocol(
            "user info sub differs from the ID token".into(),
        )));
    }
    let session = state
        .sessions
        .create_session(NewSession {
            user_id: sub,
            id_token: tokens.id_token,
            tokens: tokens.tokens,
            user_info,
            client_id: st.client_id.clone(),
            lifetime: std::time::Duration::from_secs(
                u64::try_from(login.cookie.expire_secs).unwrap_or(0),
            ),
        })
        .await?;
    state.metrics.logins.inc();
    tracing::info!(session = %short(&session.id), user = %session.user_id, "signed in");
    let host = request_host(headers, uri).unwrap_or_else(|| login.authenticate_host.clone());
    let clear_csrf = login.clear_cookie(&csrf_name, "");
    finish_login(
        login,
        &session,
        &host,
        &route,
        &return_url,
        st.programmatic,
        vec![clear_csrf],
    )
}

fn idp_login_error(e: IdpError) -> LoginError {
    match e {
        IdpError::InvalidGrant(m) | IdpError::UserDisabled(m) => LoginError::Forbidden(m),
        other => LoginError::Idp(other),
    }
}

fn short(id: &str) -> &str {
    id.get(..6).unwrap_or(id)
}

// ---- hand-off on the route host ----------------------------------------------------------

async fn handoff(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    handoff_inner(&state, &headers, &uri)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn handoff_inner(state: &AppState, headers: &HeaderMap, uri: &Uri) -> LoginResult {
    let login = login_state(state)?;
    let q = query(uri);
    let raw = q
        .get(PARAM_HANDOFF)
        .ok_or(LoginError::BadRequest("The sign-in hand-off is missing."))?;
    let h = match login.flow.open_handoff(raw, now_unix()) {
        Ok(h) => h,
        Err(TokenError::Expired) => {
            return Err(LoginError::BadRequest("The sign-in hand-off has expired."));
        }
        Err(_) => {
            return Err(LoginError::BadRequest(
                "The sign-in hand-off is invalid or was tampered with.",
            ));
        }
    };
    let host =
        request_host(headers, uri).ok_or(LoginError::BadRequest("The request has no host."))?;
    let route = login
        .route(&host)
        .filter(|r| r.host == h.host)
        .ok_or(LoginError::BadRequest(
            "The sign-in hand-off is for another application.",
        ))?;
    let (return_url, _) = checked_return_url(login, &h.return_url)?;
    if urls::url_authority(&return_url).as_deref() != Some(route.host.as_str()) {
        return Err(LoginError::BadRequest(
            "The sign-in hand-off is for another application.",
        ));
    }
    // Single use, across replicas: the first redeemer takes a lease named after the token
    // id until the token expires; a replay finds it taken.
    let holder = tokens::random_b64(12).map_err(|e| LoginError::Internal(e.to_string()))?;
    let ttl_ms = u64::try_from(h.expires_at.saturating_sub(now_unix()).saturating_add(5))
        .unwrap_or(1)
        * 1000;
    if !state
        .store
        .try_lease(&format!("handoff:{}", h.id), &holder, ttl_ms)
        .await?
    {
        return Err(LoginError::BadRequest(
            "The sign-in hand-off was already used.",
        ));
    }
    let session = state
        .sessions
        .get(&h.session_id)
        .await?
        .ok_or(LoginError::Unauthorized(
            "The session ended before it reached the application.",
        ))?;
    if session.client_id != route.client_id {
        // Defence in depth: a route with its own OAuth client only gets sessions of that
        // client (sign-in never mints such a hand-off; a config change could).
        return Err(LoginError::BadRequest(
            "The sign-in hand-off is for another application.",
        ));
    }
    let (_, set_cookie) = login.session_cookie(&session, &route.host)?;
    Ok(with_cookies(redirect(return_url.as_str()), &[set_cookie]))
}

// ---- user info ---------------------------------------------------------------------------

async fn user_info(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    user_info_inner(&state, &headers, &uri)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn user_info_inner(state: &AppState, headers: &HeaderMap, uri: &Uri) -> LoginResult {
    let login = login_state(state)?;
    let host = request_host(headers, uri).unwrap_or_default();
    let session = current_session(state, login, headers)
        .await?
        .ok_or(LoginError::Unauthorized(
            "There is no active session for this site.",
        ))?;
    Ok(pages::user_info_page(
        &session,
        &host,
        &login.flow.sign_out_token(&session.id),
    ))
}

/// `/.pomerium/user`: the session's claims as JSON (exactly the stored claims).
async fn user_json(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let result: LoginResult = async {
        let login = login_state(&state)?;
        let session =
            current_session(&state, login, &headers)
                .await?
                .ok_or(LoginError::Unauthorized(
                    "There is no active session for this site.",
                ))?;
        Ok((
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            axum::Json(serde_json::Value::Object(session.claims)),
        )
            .into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

// ---- sign out ----------------------------------------------------------------------------

async fn sign_out_get(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let token = query(&uri).remove(PARAM_CSRF);
    sign_out(&state, &headers, &uri, token)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn sign_out_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let token = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == PARAM_CSRF)
        .map(|(_, v)| v.into_owned())
        .or_else(|| query(&uri).remove(PARAM_CSRF));
    sign_out(&state, &headers, &uri, token)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn sign_out(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    token: Option<String>,
) -> LoginResult {
    let login = login_state(state)?;
    let host = request_host(headers, uri).unwrap_or_default();
    let clear = login.clear_cookie(&login.cookie.name, &host);
    let Some(session) = current_session(state, login, headers).await? else {
        // Nothing to end: just drop whatever cookie is there.
        return Ok(with_cookies(redirect(&signed_out_target(login)?), &[clear]));
    };
    if !token.is_some_and(|t| login.flow.check_sign_out_token(&session.id, &t)) {
        return Err(LoginError::BadRequest(
            "The sign-out request is missing its security token. Use the sign-out button on the user info page.",
        ));
    }
    state.sessions.delete(&session.id).await?;
    state.metrics.sign_outs.inc();
    tracing::info!(session = %short(&session.id), user = %session.user_id, "signed out");
    let target = match &login.provider {
        Some(p) => match p.end_session_endpoint().await {
            Some(mut end) => {
                let post_logout = login.authenticate_url("/.pomerium/signed_out")?;
                end.query_pairs_mut()
                    .append_pair("id_token_hint", session.id_token.raw.expose())
                    .append_pair("post_logout_redirect_uri", post_logout.as_str())
                    .append_pair("client_id", &session.client_id);
                end.to_string()
            }
            None => signed_out_target(login)?,
        },
        None => signed_out_target(login)?,
    };
    Ok(with_cookies(redirect(&target), &[clear]))
}

fn signed_out_target(login: &LoginState) -> Result<String, LoginError> {
    Ok(login.authenticate_url("/.pomerium/signed_out")?.to_string())
}

/// The end of sign-out: `signout_redirect_url` if configured, else our page.
async fn signed_out(State(state): State<AppState>) -> Response {
    match state
        .login
        .as_ref()
        .and_then(|l| l.signout_redirect_url.as_ref())
    {
        Some(url) => redirect(url.as_str()),
        None => pages::signed_out_page(),
    }
}

// ---- programmatic login ------------------------------------------------------------------

async fn programmatic_login(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    programmatic_inner(&state, &headers, &uri)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn programmatic_inner(state: &AppState, headers: &HeaderMap, uri: &Uri) -> LoginResult {
    let login = login_state(state)?;
    let q = query(uri);
    let raw = q
        .get(PARAM_REDIRECT_URI)
        .ok_or(LoginError::BadRequest("pomerium_redirect_uri is required."))?;
    let target = urls::parse_redirect_target(raw).ok_or(LoginError::BadRequest(
        "pomerium_redirect_uri is not a valid URL.",
    ))?;
    if !urls::programmatic_allowed(&target, &login.whitelist) {
        return Err(LoginError::BadRequest(
            "pomerium_redirect_uri is not in programmatic_redirect_domain_whitelist.",
        ));
    }
    let host =
        request_host(headers, uri).ok_or(LoginError::BadRequest("The request has no host."))?;
    let route = login.route(&host).ok_or(LoginError::BadRequest(
        "This host is not a configured application.",
    ))?;
    let issued = now_u64();
    let signature = login
        .flow
        .programmatic_signature(&route.host, target.as_str(), issued);
    let mut url = login.authenticate_url(SIGN_IN_PATH)?;
    url.query_pairs_mut()
        .append_pair(PARAM_REDIRECT_URI, target.as_str())
        .append_pair(PARAM_ISSUED, &issued.to_string())
        .append_pair(PARAM_PROGRAMMATIC, &route.host)
        .append_pair(PARAM_SIGNATURE, &signature);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        url.to_string(),
    )
        .into_response())
}

// ---- JWKS --------------------------------------------------------------------------------

async fn jwks(State(state): State<AppState>) -> Response {
    (
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        )],
        axum::Json(state.signer.jwks()),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
