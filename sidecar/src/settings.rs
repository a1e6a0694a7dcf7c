//! The sidecar's checked settings.
//!
//! The config file is parsed once, by the shared loader in `policy_compiler::config`
//! (Pomerium option names, environment overrides); this module only turns the checked
//! `Config` into what the sidecar runs with, so defaults live in one place and tests can
//! build `Settings` directly.

use crate::error::StartupError;
use crate::idp::SecretString;
use portcullis_common::Secret;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the databroker keeps its records.
#[derive(Clone, PartialEq, Eq)]
pub enum StorageSettings {
    /// Embedded, in this process (default). Sessions are lost on restart.
    Memory,
    /// Redis (`databroker_storage_type: redis`).
    Redis {
        /// `databroker_storage_connection_string`, e.g. `redis://127.0.0.1:6379/0`.
        /// May carry a password: never logged (`Debug` redacts it).
        connection_string: String,
        /// Key prefix, so several deployments can share one Redis.
        key_prefix: String,
    },
}

impl std::fmt::Debug for StorageSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageSettings::Memory => f.write_str("Memory"),
            // The connection string may carry a password.
            StorageSettings::Redis { key_prefix, .. } => f
                .debug_struct("Redis")
                .field("connection_string", &"***")
                .field("key_prefix", key_prefix)
                .finish(),
        }
    }
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
    /// External authorization listener (`ext_authz_address`, see [`crate::ext_authz`]);
    /// none = off.
    pub ext_authz_address: Option<SocketAddr>,
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
            ext_authz_address: None,
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

/// Default sidecar port (HTTP, loopback): `127.0.0.1:5080` (`sidecar_address`).
pub const DEFAULT_PORT: u16 = 5080;

/// Key prefix of the Redis databroker.
pub const REDIS_KEY_PREFIX: &str = "portcullis:";

fn bind(
    option: &'static str,
    a: &policy_compiler::config::BindAddress,
) -> Result<SocketAddr, StartupError> {
    use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
    let host = match a.host.as_deref() {
        None | Some("") => return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, a.port))),
        Some(h) => h.trim_start_matches('[').trim_end_matches(']'),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, a.port));
    }
    (host, a.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| StartupError::Setting {
            option,
            reason: format!("cannot resolve `{host}`"),
        })
}

fn url_host(u: &url::Url) -> Option<String> {
    let host = u.host_str()?.to_ascii_lowercase();
    Some(match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

impl Settings {
    /// The sidecar's settings from the shared, checked configuration
    /// (`policy_compiler::config::load_file`). `config_file` is watched for policy changes.
    ///
    /// Refuses generated secrets: the sidecar and every filter must share
    /// `shared_secret` and `cookie_secret`, so a random per-process one cannot work.
    pub fn from_config(
        config: &policy_compiler::config::Config,
        config_file: Option<PathBuf>,
    ) -> Result<Settings, StartupError> {
        use policy_compiler::config::StorageType;
        if config.shared_secret.generated {
            return Err(StartupError::Setting {
                option: "shared_secret",
                reason: "must be set (the sidecar and the filters must share it)".to_owned(),
            });
        }
        if config.cookie_secret.generated {
            return Err(StartupError::Setting {
                option: "cookie_secret",
                reason: "must be set (the sidecar and the filters must share it)".to_owned(),
            });
        }
        let secret = |s: &policy_compiler::config::SecretString| SecretString::new(s.expose());
        let idp_client = config.idp_client_id.as_ref().map(|id| IdpClientSettings {
            client_id: id.clone(),
            client_secret: config
                .idp_client_secret
                .as_ref()
                .map(secret)
                .unwrap_or_else(|| SecretString::new("")),
        });
        let mut route_idp_clients: Vec<IdpClientSettings> = Vec::new();
        let mut route_hosts: Vec<String> = Vec::new();
        let mut login_routes = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            if let Some(h) = url_host(&r.from.value)
                && !route_hosts.contains(&h)
            {
                route_hosts.push(h);
            }
            login_routes.push(LoginRoute {
                from: r.from.value.as_str().trim_end_matches('/').to_owned(),
                idp_client_id: r.idp_client_id.clone(),
            });
            if let Some(id) = &r.idp_client_id
                && !route_idp_clients.iter().any(|c| &c.client_id == id)
                && idp_client.as_ref().is_none_or(|c| &c.client_id != id)
            {
                route_idp_clients.push(IdpClientSettings {
                    client_id: id.clone(),
                    client_secret: r
                        .idp_client_secret
                        .as_ref()
                        .map(secret)
                        .unwrap_or_else(|| SecretString::new("")),
                });
            }
        }
        let storage = match config.databroker_storage_type {
            StorageType::Memory => StorageSettings::Memory,
            StorageType::Redis => StorageSettings::Redis {
                connection_string: config
                    .databroker_storage_connection_string
                    .as_ref()
                    .map(|s| s.expose().to_owned())
                    .ok_or(StartupError::Setting {
                        option: "databroker_storage_connection_string",
                        reason: "required with `databroker_storage_type: redis`".to_owned(),
                    })?,
                key_prefix: REDIS_KEY_PREFIX.to_owned(),
            },
        };
        let mut s = Settings::new(
            config.shared_secret.secret.clone(),
            config.cookie_secret.secret.clone(),
        );
        s.address = bind("sidecar_address", &config.sidecar_address)?;
        s.metrics_address = config
            .metrics_address
            .as_ref()
            .map(|a| bind("metrics_address", a))
            .transpose()?;
        s.ext_authz_address = config
            .ext_authz_address
            .as_ref()
            .map(|a| bind("ext_authz_address", a))
            .transpose()?;
        s.cookie_name = config.cookie_name.clone();
        s.cookie_expire = config.cookie_expire;
        s.cookie_domain = config.cookie_domain.clone();
        s.cookie_secure = config.cookie_secure;
        s.cookie_http_only = config.cookie_http_only;
        s.insecure_server = config.insecure_server;
        s.authenticate_service_url = config
            .authenticate_service_url
            .as_ref()
            .map(|u| u.to_string());
        s.signout_redirect_url = config.signout_redirect_url.as_ref().map(|u| u.to_string());
        s.idp_provider_url = config.idp_provider_url.as_ref().map(|u| u.to_string());
        s.idp_scopes = config.idp_scopes.clone();
        s.idp_request_params = config
            .idp_request_params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        s.idp_client = idp_client;
        s.route_idp_clients = route_idp_clients;
        s.route_hosts = route_hosts;
        s.login_routes = login_routes;
        s.programmatic_redirect_domain_whitelist =
            config.programmatic_redirect_domain_whitelist.clone();
        s.signing_key = config.signing_key.as_ref().map(secret);
        s.jwt_claims_headers = config
            .jwt_claims_headers
            .iter()
            .map(|h| (h.header.clone(), h.claim.clone()))
            .collect();
        s.storage = storage;
        s.identity.user_info_refresh_interval = config.identity_user_info_refresh_interval;
        s.policy_bundle_file = config.policy_bundle_file.clone();
        s.config_file = config_file;
        s.log_level = config.log_level.name().to_owned();
        Ok(s)
    }
}
