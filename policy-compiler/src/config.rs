//! The Pomerium-compatible configuration: loading, precedence, and checked types.
//!
//! [`load_file`] / [`load_str`] read a Pomerium `config.yaml` (or JSON), apply Pomerium's
//! precedence (an environment variable named like the upper-cased option overrides the
//! file, which overrides the defaults), and check every option into a typed [`Config`].
//! Every error comes with a position, and all of them are reported at once.
//!
//! Downstream code (compiler, sidecar, envoy-config) never sees a raw string where a type
//! fits: URLs are [`url::Url`], durations [`std::time::Duration`], secrets
//! [`portcullis_common::Secret`] / [`SecretString`], choices are enums. The only raw tree
//! passed on is a route's `policy` (PPL), which the `ppl` module parses itself.
//!
//! Options Pomerium knows but Portcullis does not implement load with one warning each;
//! keys Pomerium does not know are errors. See `docs/configuration.md`.

mod load;
mod names;
mod read;
mod route;

use crate::diag::Diagnostics;
use crate::value::{Span, Spanned, Value};
use portcullis_common::Secret;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

pub use load::{load_file, load_str, load_str_in};

/// A loaded configuration and the warnings it produced (ignored options, generated
/// secrets, …). Errors never produce a `Loaded`.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The checked configuration.
    pub config: Config,
    /// Warnings only (no errors).
    pub warnings: Diagnostics,
}

/// A string secret (client secret, connection string, PEM key) whose `Debug` and
/// `Display` print `***`: the one shared type, so the sidecar stores what the loader read.
pub use portcullis_common::SecretString;

/// A 32-byte secret and whether it was generated because the config did not set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySetting {
    /// The key.
    pub secret: Secret,
    /// `true` when the option was absent and a random key was generated at load time
    /// (Pomerium's behaviour). Processes that must agree on the key (sidecar and filter)
    /// cannot use a generated one: they must refuse or share it explicitly.
    pub generated: bool,
}

/// The identity provider kind (`idp_provider`), with Pomerium's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdpProvider {
    /// `oidc`: generic OpenID Connect.
    Oidc,
    /// `apple`
    Apple,
    /// `auth0`
    Auth0,
    /// `azure`
    Azure,
    /// `cognito`
    Cognito,
    /// `github`
    Github,
    /// `gitlab`
    Gitlab,
    /// `google`
    Google,
    /// `okta`
    Okta,
    /// `onelogin`
    OneLogin,
    /// `ping`
    Ping,
}

impl IdpProvider {
    /// Every provider, with its configuration name.
    pub const ALL: &'static [(&'static str, IdpProvider)] = &[
        ("oidc", IdpProvider::Oidc),
        ("apple", IdpProvider::Apple),
        ("auth0", IdpProvider::Auth0),
        ("azure", IdpProvider::Azure),
        ("cognito", IdpProvider::Cognito),
        ("github", IdpProvider::Github),
        ("gitlab", IdpProvider::Gitlab),
        ("google", IdpProvider::Google),
        ("okta", IdpProvider::Okta),
        ("onelogin", IdpProvider::OneLogin),
        ("ping", IdpProvider::Ping),
    ];

    /// The configuration name (`oidc`, `azure`, …).
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("oidc", |(n, _)| n)
    }
}

/// `databroker_storage_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StorageType {
    /// `memory` (default): sessions live in the sidecar's memory.
    #[default]
    Memory,
    /// `redis`: sessions live in Redis (`databroker_storage_connection_string`).
    Redis,
}

/// `log_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum LogLevel {
    /// `trace`
    Trace,
    /// `debug`
    Debug,
    /// `info` (default)
    #[default]
    Info,
    /// `warn`
    Warn,
    /// `error`
    Error,
}

impl LogLevel {
    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// `cookie_same_site`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SameSite {
    /// `strict`
    Strict,
    /// `lax`
    Lax,
    /// `none`
    None,
}

/// A listen address such as `:443`, `0.0.0.0:8443`, `localhost:9090`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BindAddress {
    /// Host or IP to bind; `None` = all interfaces (`:443`).
    pub host: Option<String>,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for BindAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Some(h) if h.contains(':') => write!(f, "[{h}]:{}", self.port),
            Some(h) => write!(f, "{h}:{}", self.port),
            None => write!(f, ":{}", self.port),
        }
    }
}

/// Where PEM data (a certificate, a key, a CA) comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemSource {
    /// A file path (checked to exist and be readable at load time).
    File(PathBuf),
    /// Inline PEM (Pomerium's base64 options, decoded). Secret: keys go here too.
    Inline(SecretString),
}

/// One TLS certificate and its key (`certificate_file`/`certificate_key_file`,
/// `certificate`/`certificate_key`, or an entry of `certificates`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePair {
    /// Certificate chain (PEM).
    pub cert: PemSource,
    /// Private key (PEM).
    pub key: PemSource,
}

/// One `jwt_claims_headers` entry: send claim `claim` in header `header`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClaimHeader {
    /// Header name (as configured).
    pub header: String,
    /// Claim name.
    pub claim: String,
}

/// The whole checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was loaded from (as given), for diagnostics.
    pub file: String,
    /// Routes, in definition order (Pomerium's `policy` list first, then `routes`).
    /// TCP/UDP/SSH routes and redirect/response routes are not included (warned about).
    pub routes: Vec<Route>,

    /// `authenticate_service_url`: the public URL of the sign-in service.
    pub authenticate_service_url: Option<Url>,
    /// `authenticate_callback_path` (default `/oauth2/callback`).
    pub authenticate_callback_path: String,
    /// `signout_redirect_url`.
    pub signout_redirect_url: Option<Url>,

    /// `idp_provider`.
    pub idp_provider: Option<IdpProvider>,
    /// `idp_provider_url`.
    pub idp_provider_url: Option<Url>,
    /// `idp_client_id`.
    pub idp_client_id: Option<String>,
    /// `idp_client_secret` / `idp_client_secret_file`.
    pub idp_client_secret: Option<SecretString>,
    /// `idp_scopes` (default `openid profile email offline_access`).
    pub idp_scopes: Vec<String>,
    /// `idp_request_params`: extra sign-in request parameters.
    pub idp_request_params: BTreeMap<String, String>,

    /// `cookie_name` (default `_pomerium`).
    pub cookie_name: String,
    /// `cookie_secret` / `cookie_secret_file` (generated with a warning when absent).
    pub cookie_secret: KeySetting,
    /// `cookie_domain`.
    pub cookie_domain: Option<String>,
    /// `cookie_expire` (default 14h).
    pub cookie_expire: Duration,
    /// `cookie_secure` (default true).
    pub cookie_secure: bool,
    /// `cookie_http_only` (default true).
    pub cookie_http_only: bool,
    /// `cookie_same_site` (default: unset = browser default / Pomerium's `lax`).
    pub cookie_same_site: Option<SameSite>,

    /// `shared_secret` / `shared_secret_file` (generated with a warning when absent).
    pub shared_secret: KeySetting,
    /// `signing_key` (base64 PEM) / `signing_key_file`: PEM of the JWT signing key.
    pub signing_key: Option<SecretString>,

    /// `address` (default `:443`).
    pub address: BindAddress,
    /// `insecure_server` (default false).
    pub insecure_server: bool,
    /// TLS certificates from `certificate_file`/`certificate_key_file`,
    /// `certificate`/`certificate_key` and `certificates`.
    pub certificates: Vec<CertificatePair>,

    /// `jwt_claims_headers`: claims sent as headers to upstreams.
    pub jwt_claims_headers: Vec<ClaimHeader>,
    /// `pass_identity_headers` (global; `None` = Pomerium's default, false).
    pub pass_identity_headers: Option<bool>,
    /// `set_response_headers` (`None` = Pomerium's default security headers).
    pub set_response_headers: Option<BTreeMap<String, String>>,
    /// `default_upstream_timeout` (default 30s): a route's `timeout` when unset.
    pub default_upstream_timeout: Duration,
    /// `programmatic_redirect_domain_whitelist` (default `[localhost]`).
    pub programmatic_redirect_domain_whitelist: Vec<String>,

    /// `databroker_storage_type` (default memory).
    pub databroker_storage_type: StorageType,
    /// `databroker_storage_connection_string` / `_file` (required for redis).
    pub databroker_storage_connection_string: Option<SecretString>,

    /// `log_level` (default info).
    pub log_level: LogLevel,
    /// `metrics_address`: where the sidecar serves Prometheus metrics (unset = off).
    pub metrics_address: Option<BindAddress>,

    /// Portcullis: `identity_user_info_refresh_interval` (default 10m): how often the
    /// identity manager refreshes a session's user info and claims.
    pub identity_user_info_refresh_interval: Duration,
    /// Portcullis: `sidecar_address` (default `127.0.0.1:5080`): where the sidecar listens.
    pub sidecar_address: BindAddress,
    /// Portcullis: `policy_bundle_file`: a prebuilt bundle the sidecar serves instead of
    /// compiling `routes` itself.
    pub policy_bundle_file: Option<PathBuf>,
    /// Portcullis: `ext_authz_address`: where the sidecar serves external authorization
    /// (Envoy `ext_authz` HTTP + gRPC, nginx `auth_request`); unset = off.
    pub ext_authz_address: Option<BindAddress>,
}

/// How a route matches the request path (Pomerium's `prefix` / `path` / `regex`; at most
/// one per route). No matcher = every path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathMatch {
    /// `prefix`: the path starts with this string (byte-wise, as Envoy).
    Prefix(String),
    /// `path`: the path is exactly this.
    Path(String),
    /// `regex`: the whole path matches this RE2 pattern (validated; as written in the
    /// config, not anchored — Envoy's `safe_regex` is a full match).
    Regex(String),
}

/// One upstream of `to`, with its optional load-balancing weight (`http://a:80,3`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WeightedUrl {
    /// Upstream URL (`http`, `https` or `h2c`).
    pub url: Url,
    /// `None` = no weight given (all or none of a route's upstreams have one).
    pub weight: Option<u32>,
}

/// `regex_rewrite_pattern` + `regex_rewrite_substitution`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegexRewrite {
    /// RE2 pattern (validated).
    pub pattern: String,
    /// Substitution (`\1` style groups).
    pub substitution: String,
}

/// How the upstream request's `Host` header is set (Pomerium's precedence:
/// `preserve_host_header`, `host_rewrite`, `host_rewrite_header`,
/// `host_path_regex_rewrite_*`, else the `to` host).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum HostRewrite {
    /// Default: the upstream (`to`) host.
    #[default]
    Auto,
    /// `preserve_host_header: true`: keep the client's Host.
    Preserve,
    /// `host_rewrite`: this literal host.
    Literal(String),
    /// `host_rewrite_header`: the value of this request header.
    Header(String),
    /// `host_path_regex_rewrite_pattern` / `_substitution`: rewrite the path into a host.
    PathRegex(RegexRewrite),
}

/// One `rewrite_response_headers` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RewriteHeader {
    /// Header to rewrite.
    pub header: String,
    /// Only values starting with this prefix (replaced by `value`); `None` = whole value.
    pub prefix: Option<String>,
    /// Replacement.
    pub value: String,
}

/// Upstream TLS settings of a route.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTls {
    /// `tls_skip_verify`.
    pub skip_verify: bool,
    /// `tls_upstream_server_name` (or its older name `tls_server_name`): SNI / name to
    /// verify instead of the `to` host.
    pub server_name: Option<String>,
    /// `tls_custom_ca` (base64 PEM) / `tls_custom_ca_file`.
    pub custom_ca: Option<PemSource>,
}

/// One checked route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Where the route's map starts.
    pub span: Span,
    /// Source of the route (the config file, or `env ROUTES` / `env POLICY`): the file
    /// name to use in diagnostics about this route.
    pub file: String,
    /// 0-based index among the loaded routes (definition order = match order).
    pub index: usize,
    /// `id` (unique when set).
    pub id: Option<Spanned<String>>,
    /// `name`.
    pub name: Option<String>,
    /// `description`.
    pub description: Option<String>,

    /// `from`: scheme + host (+ port); no path. Host may be a wildcard (`*.example.com`).
    pub from: Spanned<Url>,
    /// `to`: one or more upstreams.
    pub to: Vec<WeightedUrl>,
    /// `prefix` / `path` / `regex` (at most one).
    pub path_match: Option<Spanned<PathMatch>>,

    /// `prefix_rewrite`.
    pub prefix_rewrite: Option<String>,
    /// `regex_rewrite_pattern` + `regex_rewrite_substitution`.
    pub regex_rewrite: Option<RegexRewrite>,
    /// Host header handling.
    pub host_rewrite: HostRewrite,

    /// `timeout` (`None` = `default_upstream_timeout`; zero = no timeout).
    pub timeout: Option<Duration>,
    /// `idle_timeout` (`None` = Envoy's default; zero = disabled).
    pub idle_timeout: Option<Duration>,
    /// `allow_websockets`.
    pub allow_websockets: bool,

    /// `allow_public_unauthenticated_access` (span = the key, or the route when absent).
    pub allow_public_unauthenticated_access: Spanned<bool>,
    /// `allow_any_authenticated_user`.
    pub allow_any_authenticated_user: Spanned<bool>,
    /// `cors_allow_preflight`.
    pub cors_allow_preflight: Spanned<bool>,
    /// `allowed_users` (each with its position).
    pub allowed_users: Vec<Spanned<String>>,
    /// `allowed_domains`.
    pub allowed_domains: Vec<Spanned<String>>,
    /// `allowed_idp_claims`: claim name (nested maps flattened with dots) → accepted
    /// values (scalars; a single value becomes a one-element list).
    pub allowed_idp_claims: Vec<(Spanned<String>, Vec<Spanned<Value>>)>,
    /// `policy`: the raw PPL tree (parsed by the `ppl` module).
    pub policy: Option<Spanned<Value>>,

    /// `pass_identity_headers` (`None` = the global setting).
    pub pass_identity_headers: Option<bool>,
    /// `set_request_headers`.
    pub set_request_headers: BTreeMap<String, String>,
    /// `remove_request_headers`.
    pub remove_request_headers: Vec<String>,
    /// `set_response_headers` (merged over the global ones by the consumer).
    pub set_response_headers: BTreeMap<String, String>,
    /// `rewrite_response_headers`.
    pub rewrite_response_headers: Vec<RewriteHeader>,

    /// `idp_client_id` (per-route IdP client).
    pub idp_client_id: Option<String>,
    /// `idp_client_secret`.
    pub idp_client_secret: Option<SecretString>,

    /// Upstream TLS settings.
    pub upstream_tls: UpstreamTls,
}

impl Route {
    /// The route's display name: `name`, else `id`, else its index.
    pub fn display_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        if let Some(id) = &self.id {
            return id.value.clone();
        }
        self.index.to_string()
    }

    /// Does this route grant access from its legacy fields alone (or have a `policy`)?
    /// Pomerium denies everything on a route with no allow rule at all.
    pub fn has_any_rule(&self) -> bool {
        self.allow_public_unauthenticated_access.value
            || self.allow_any_authenticated_user.value
            || self.cors_allow_preflight.value
            || !self.allowed_users.is_empty()
            || !self.allowed_domains.is_empty()
            || !self.allowed_idp_claims.is_empty()
            || self.policy.is_some()
    }
}

impl Config {
    /// The route-level `pass_identity_headers`, else the global one, else false
    /// (Pomerium's `GetPassIdentityHeaders`).
    pub fn pass_identity_headers_for(&self, route: &Route) -> bool {
        route
            .pass_identity_headers
            .or(self.pass_identity_headers)
            .unwrap_or(false)
    }

    /// A route's upstream timeout (`timeout`, else `default_upstream_timeout`).
    pub fn timeout_for(&self, route: &Route) -> Duration {
        route.timeout.unwrap_or(self.default_upstream_timeout)
    }

    /// The directory relative `*_file` paths were resolved against, if any.
    pub fn base_dir(&self) -> Option<&Path> {
        Path::new(&self.file).parent()
    }
}

/// Defaults (Pomerium's where Pomerium has the option).
pub mod defaults {
    use std::time::Duration;

    /// `cookie_name`.
    pub const COOKIE_NAME: &str = "_pomerium";
    /// `cookie_expire`.
    pub const COOKIE_EXPIRE: Duration = Duration::from_secs(14 * 3600);
    /// `idp_scopes`.
    pub const IDP_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access"];
    /// `programmatic_redirect_domain_whitelist`.
    pub const PROGRAMMATIC_REDIRECT_DOMAIN_WHITELIST: &[&str] = &["localhost"];
    /// `address`.
    pub const ADDRESS: &str = ":443";
    /// `default_upstream_timeout`.
    pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
    /// `authenticate_callback_path`.
    pub const AUTHENTICATE_CALLBACK_PATH: &str = "/oauth2/callback";
    /// `identity_user_info_refresh_interval` (Portcullis).
    pub const IDENTITY_USER_INFO_REFRESH_INTERVAL: Duration = Duration::from_secs(600);
    /// `sidecar_address` (Portcullis).
    pub const SIDECAR_ADDRESS: &str = "127.0.0.1:5080";
}

#[cfg(test)]
mod tests;
