//! The sidecar's checked settings.
//!
//! The config file is parsed once, by the shared loader in `policy_compiler::config`
//! (Pomerium option names, environment overrides); this module only turns the checked
//! `Config` into what the sidecar runs with, so defaults live in one place and tests can
//! build `Settings` directly.

use portcullis_common::Secret;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the databroker keeps its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageSettings {
    /// Embedded, in this process (default). Sessions are lost on restart.
    Memory,
    /// Redis (`databroker_storage_type: redis`).
    Redis {
        /// `databroker_storage_connection_string`, e.g. `redis://127.0.0.1:6379/0`.
        /// May carry a password: never logged.
        connection_string: String,
        /// Key prefix, so several deployments can share one Redis.
        key_prefix: String,
    },
}

/// Log output format (`log_format` / `LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// One OAuth client at the IdP (the default one or a route's `idp_client_id`).
#[derive(Debug, Clone)]
pub struct IdpClientSettings {
    /// `idp_client_id`.
    pub client_id: String,
    /// `idp_client_secret`.
    pub client_secret: crate::idp::SecretString,
}

/// One route for the login flow (from the route's `from` and `idp_client_id`; its
/// `idp_client_secret` goes into [`Settings::route_idp_clients`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRoute {
    /// The route's `from` URL, e.g. `https://app.example.com`.
    pub from: String,
    /// The route's own `idp_client_id`, if any.
    pub idp_client_id: Option<String>,
}

/// Identity manager tuning.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// `identity_user_info_refresh_interval` (default 10m): how often each session's user
    /// info is re-read from the IdP.
    pub user_info_refresh_interval: Duration,
    /// How long before the access token / ID token expires the token is refreshed.
    pub token_refresh_lead: Duration,
    /// How many sessions are refreshed concurrently.
    pub concurrency: usize,
    /// First retry delay after an IdP error; doubled per consecutive failure.
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// How often the manager looks for due sessions.
    pub tick: Duration,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        IdentitySettings {
            user_info_refresh_interval: Duration::from_secs(600),
            token_refresh_lead: Duration::from_secs(60),
            concurrency: 8,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            tick: Duration::from_secs(1),
        }
    }
}

/// Everything the sidecar runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listener of the sidecar (browser routes via Envoy + internal API).
    pub address: SocketAddr,
    /// Separate Prometheus listener (`metrics_address`); none = no metrics endpoint.
    pub metrics_address: Option<SocketAddr>,
    /// `shared_secret`: internal API token, databroker encryption, hand-off key.
    pub shared_secret: Secret,
    /// `cookie_secret`: session cookie, CSRF.
    pub cookie_secret: Secret,
    /// `cookie_name` (default `_pomerium`).
    pub cookie_name: String,
    /// `cookie_expire` (default 14h): the session lifetime.
    pub cookie_expire: Duration,
    /// `cookie_domain`, if set.
    pub cookie_domain: Option<String>,
    /// `insecure_server`: cookies without `Secure`.
    pub insecure_server: bool,
    /// `authenticate_service_url`.
    pub authenticate_service_url: Option<String>,
    /// `idp_provider_url` (OIDC issuer).
    pub idp_provider_url: Option<String>,
    /// `idp_scopes` (default `openid profile email offline_access`).
    pub idp_scopes: Vec<String>,
    /// The default IdP client.
    pub idp_client: Option<IdpClientSettings>,
    /// Per-route IdP clients (`idp_client_id` / `idp_client_secret` on routes).
    pub route_idp_clients: Vec<IdpClientSettings>,
    /// Hosts of the configured routes (hand-off and return URL allow-list).
    pub route_hosts: Vec<String>,
    /// `programmatic_redirect_domain_whitelist` (default `localhost`).
    pub programmatic_redirect_domain_whitelist: Vec<String>,
    /// Routes as the login flow needs them (added by the login flow, H2b): each route's
    /// `from` and own `idp_client_id`. Return URLs and hand-offs are accepted only for
    /// these hosts (plus `route_hosts`, which get the default client).
    pub login_routes: Vec<LoginRoute>,
    /// `cookie_secure` (default true; `insecure_server` also drops `Secure`).
    pub cookie_secure: bool,
    /// `cookie_http_only` (default true).
    pub cookie_http_only: bool,
    /// `signout_redirect_url`: where `/.pomerium/signed_out` (the end of every sign-out,
    /// after the IdP's `end_session_endpoint` if it has one) sends the browser; our own
    /// signed-out page when unset.
    pub signout_redirect_url: Option<String>,
    /// `idp_request_params`: extra authorization request parameters.
    pub idp_request_params: Vec<(String, String)>,
    /// `signing_key` (PEM, base64 as Pomerium), if configured.
    pub signing_key: Option<crate::idp::SecretString>,
    /// `jwt_claims_headers`: header name → claim name.
    pub jwt_claims_headers: Vec<(String, String)>,
    /// Databroker backend.
    pub storage: StorageSettings,
    /// Identity manager tuning.
    pub identity: IdentitySettings,
    /// `policy_bundle_file`: serve this precompiled bundle instead of compiling the config.
    pub policy_bundle_file: Option<PathBuf>,
    /// The config file (watched for changes; the bundle is recompiled from it).
    pub config_file: Option<PathBuf>,
    /// `log_format`.
    pub log_format: LogFormat,
    /// `log_level` (a `tracing` env-filter directive; default `info`).
    pub log_level: String,
}

impl Settings {
    /// Settings for tests and embedding: the given secrets, memory storage, every other
    /// option at its Pomerium default.
    pub fn new(shared_secret: Secret, cookie_secret: Secret) -> Self {
        Settings {
            address: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            metrics_address: None,
            shared_secret,
            cookie_secret,
            cookie_name: "_pomerium".to_owned(),
            cookie_expire: Duration::from_secs(14 * 3600),
            cookie_domain: None,
            insecure_server: false,
            authenticate_service_url: None,
            idp_provider_url: None,
            idp_scopes: ["openid", "profile", "email", "offline_access"]
                .map(str::to_owned)
                .to_vec(),
            idp_client: None,
            route_idp_clients: Vec::new(),
            route_hosts: Vec::new(),
            programmatic_redirect_domain_whitelist: vec!["localhost".to_owned()],
            login_routes: Vec::new(),
            cookie_secure: true,
            cookie_http_only: true,
            signout_redirect_url: None,
            idp_request_params: Vec::new(),
            signing_key: None,
            jwt_claims_headers: Vec::new(),
            storage: StorageSettings::Memory,
            identity: IdentitySettings::default(),
            policy_bundle_file: None,
            config_file: None,
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
        }
    }

    /// The internal API bearer token (derived from `shared_secret`).
    pub fn api_token(&self) -> String {
        portcullis_common::api::api_token(&self.shared_secret)
    }
}

/// Default sidecar port (HTTP, loopback): `127.0.0.1:8081`.
pub const DEFAULT_PORT: u16 = 8081;
