//! Plugin configuration: the JSON Envoy passes to `on_configure` (documented in
//! docs/filter.md), parsed once into checked types.
//!
//! [`RawConfig`] mirrors the JSON 1:1 (`deny_unknown_fields`, so a typo is an error, not a
//! silently ignored option); [`Config::parse`] turns it into [`Config`], whose fields cannot
//! be wrong. Every error names the offending field, because Envoy only shows the log line.

use base64::Engine as _;
use portcullis_common::Secret;
use portcullis_common::cookie::CookieKey;
use portcullis_common::signed_url::RedirectKey;
use serde::Deserialize;

/// Default `staleness_bound_secs`: how long cached sessions are trusted without news
/// from the sidecar's change stream.
pub const DEFAULT_STALENESS_SECS: u64 = 300;
/// Default `tick_period_ms`.
pub const DEFAULT_TICK_MS: u64 = 500;
/// Default `long_poll_ms`.
pub const DEFAULT_LONG_POLL_MS: u64 = 25_000;
/// Default `session_timeout_ms`.
pub const DEFAULT_SESSION_TIMEOUT_MS: u64 = 2_000;
/// Default `session_cache_size`.
pub const DEFAULT_SESSION_CACHE_SIZE: usize = 10_000;
/// Default `negative_cache_size`.
pub const DEFAULT_NEGATIVE_CACHE_SIZE: usize = 4_096;
/// Default `negative_cache_ttl_secs`.
pub const DEFAULT_NEGATIVE_TTL_SECS: u64 = 10;
/// Default `sidecar_route_name`.
pub const DEFAULT_SIDECAR_ROUTE: &str = "portcullis-sidecar";

/// The JSON exactly as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    sidecar_cluster: String,
    sidecar_authority: Option<String>,
    shared_secret: String,
    cookie_secret: String,
    cookie_name: Option<String>,
    bundle: Option<String>,
    staleness_bound_secs: Option<u64>,
    tick_period_ms: Option<u64>,
    long_poll_ms: Option<u64>,
    session_timeout_ms: Option<u64>,
    session_cache_size: Option<usize>,
    negative_cache_size: Option<usize>,
    negative_cache_ttl_secs: Option<u64>,
    sidecar_route_name: Option<String>,
    #[serde(default)]
    strip_headers: Vec<String>,
}

/// A refused configuration: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid plugin configuration: `{field}`: {message}")]
pub struct ConfigError {
    /// The JSON field at fault (`$` for the document itself).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Envoy cluster of the sidecar's internal API.
    pub sidecar_cluster: String,
    /// `:authority` of internal API calls.
    pub sidecar_authority: String,
    /// `authorization` header value of internal API calls (`Bearer <token>`).
    pub api_authorization: String,
    /// Opens session cookies.
    pub cookie_key: CookieKey,
    /// Signs sign-in return URLs.
    pub redirect_key: RedirectKey,
    /// Overrides the bundle's `cookie_name`.
    pub cookie_name: Option<String>,
    /// The inline bundle, decoded from base64 (`None`: fetch it from the sidecar).
    pub bundle: Option<Vec<u8>>,
    /// How long cached sessions stay usable without news from the sidecar.
    pub staleness_ms: u64,
    /// Tick period.
    pub tick_ms: u64,
    /// `wait_ms` of change-stream long polls.
    pub long_poll_ms: u64,
    /// Timeout of a session lookup.
    pub session_timeout_ms: u64,
    /// Per-worker session cache bound.
    pub session_cache_size: usize,
    /// Per-worker negative cache bound.
    pub negative_cache_size: usize,
    /// How long an unknown session id stays negatively cached.
    pub negative_ttl_ms: u64,
    /// Envoy route name whose requests go to the sidecar untouched.
    pub sidecar_route_name: String,
    /// Extra client headers always removed (lower-case).
    pub strip_headers: Vec<String>,
}

impl Config {
    /// Parse and check the plugin configuration.
    pub fn parse(json: &[u8]) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_json::from_slice(json).map_err(|e| ConfigError {
            field: field_of(&e.to_string()),
            message: e.to_string(),
        })?;
        Config::try_from(raw)
    }
}

/// serde_json names an unknown or missing field first, in backticks: point at it.
fn field_of(message: &str) -> String {
    message
        .split('`')
        .nth(1)
        .filter(|f| f.len() < 64)
        .map_or_else(|| "$".to_owned(), str::to_owned)
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Config, ConfigError> {
        if raw.sidecar_cluster.trim().is_empty() {
            return Err(err("sidecar_cluster", "must not be empty"));
        }
        let shared = Secret::from_base64(&raw.shared_secret)
            .map_err(|e| err("shared_secret", e.to_string()))?;
        let cookie = Secret::from_base64(&raw.cookie_secret)
            .map_err(|e| err("cookie_secret", e.to_string()))?;
        if let Some(name) = &raw.cookie_name
            && !is_token(name)
        {
            return Err(err("cookie_name", "must be a non-empty cookie name token"));
        }
        let bundle = match raw.bundle.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(b64) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| err("bundle", format!("not base64: {e}")))?,
            ),
        };
        let positive = |field: &'static str, v: Option<u64>, default: u64, max: u64| match v {
            None => Ok(default),
            Some(0) => Err(err(field, "must be greater than 0")),
            Some(v) if v > max => Err(err(field, format!("must be at most {max}"))),
            Some(v) => Ok(v),
        };
        let staleness = positive(
            "staleness_bound_secs",
            raw.staleness_bound_secs,
            DEFAULT_STALENESS_SECS,
            86_400,
        )?;
        let tick_ms = positive(
            "tick_period_ms",
            raw.tick_period_ms,
            DEFAULT_TICK_MS,
            60_000,
        )?;
        let long_poll_ms = positive(
            "long_poll_ms",
            raw.long_poll_ms,
            DEFAULT_LONG_POLL_MS,
            portcullis_common::api::MAX_WAIT_MS,
        )?;
        let session_timeout_ms = positive(
            "session_timeout_ms",
            raw.session_timeout_ms,
            DEFAULT_SESSION_TIMEOUT_MS,
            60_000,
        )?;
        let size = |field: &'static str, v: Option<usize>, default: usize| match v {
            None => Ok(default),
            Some(0) => Err(err(field, "must be greater than 0")),
            Some(v) if v > 1_000_000 => Err(err(field, "must be at most 1000000")),
            Some(v) => Ok(v),
        };
        let negative_ttl = positive(
            "negative_cache_ttl_secs",
            raw.negative_cache_ttl_secs,
            DEFAULT_NEGATIVE_TTL_SECS,
            3_600,
        )?;
        let mut strip_headers = Vec::with_capacity(raw.strip_headers.len());
        for h in raw.strip_headers {
            if !is_token(&h) {
                return Err(err("strip_headers", format!("`{h}` is not a header name")));
            }
            strip_headers.push(h.to_ascii_lowercase());
        }
        Ok(Config {
            sidecar_authority: raw
                .sidecar_authority
                .filter(|a| !a.trim().is_empty())
                .unwrap_or_else(|| raw.sidecar_cluster.clone()),
            sidecar_cluster: raw.sidecar_cluster,
            api_authorization: format!("Bearer {}", portcullis_common::api::api_token(&shared)),
            cookie_key: CookieKey::new(&cookie),
            redirect_key: RedirectKey::new(&shared),
            cookie_name: raw.cookie_name,
            bundle,
            staleness_ms: staleness.saturating_mul(1000),
            tick_ms,
            long_poll_ms,
            session_timeout_ms,
            session_cache_size: size(
                "session_cache_size",
                raw.session_cache_size,
                DEFAULT_SESSION_CACHE_SIZE,
            )?,
            negative_cache_size: size(
                "negative_cache_size",
                raw.negative_cache_size,
                DEFAULT_NEGATIVE_CACHE_SIZE,
            )?,
            negative_ttl_ms: negative_ttl.saturating_mul(1000),
            sidecar_route_name: raw
                .sidecar_route_name
                .unwrap_or_else(|| DEFAULT_SIDECAR_ROUTE.to_owned()),
            strip_headers,
        })
    }
}

/// An RFC 7230 token (cookie and header names).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "KDBIqKTq8aJ4OuU07np7qBtT6jX37I2H5DCczzExvP8=";

    fn parse(json: &str) -> Result<Config, ConfigError> {
        Config::parse(json.as_bytes())
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = parse(&format!(
            r#"{{"sidecar_cluster":"side","shared_secret":"{S}","cookie_secret":"{S}"}}"#
        ))
        .unwrap();
        assert_eq!(c.sidecar_authority, "side");
        assert_eq!(c.staleness_ms, 300_000);
        assert!(c.bundle.is_none());
        assert!(c.api_authorization.starts_with("Bearer "));
        assert_eq!(c.sidecar_route_name, "portcullis-sidecar");
        // Secrets never reach Debug output.
        let dbg = format!("{c:?}");
        assert!(!dbg.contains(S), "{dbg}");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"sidecar_cluster":"x","cookie_secret":"S"}"#.replace('S', S), "shared_secret"),
            (
                r#"{"sidecar_cluster":"x","shared_secret":"short","cookie_secret":"S"}"#.replace('S', S),
                "shared_secret",
            ),
            (
                r#"{"sidecar_cluster":"x","shared_secret":"S","cookie_secret":"S","bundel":"x"}"#
                    .replace('S', S),
                "bundel",
            ),
            (
                r#"{"sidecar_cluster":"x","shared_secret":"S","cookie_secret":"S","bundle":"!!"}"#
                    .replace('S', S),
                "bundle",
            ),
            (
                r#"{"sidecar_cluster":"x","shared_secret":"S","cookie_secret":"S","tick_period_ms":0}"#
                    .replace('S', S),
                "tick_period_ms",
            ),
            (
                r#"{"sidecar_cluster":"","shared_secret":"S","cookie_secret":"S"}"#.replace('S', S),
                "sidecar_cluster",
            ),
            (
                r#"{"sidecar_cluster":"x","shared_secret":"S","cookie_secret":"S","cookie_name":"a b"}"#
                    .replace('S', S),
                "cookie_name",
            ),
            ("not json".to_owned(), "$"),
        ];
        for (json, field) in cases {
            let e = parse(&json).unwrap_err();
            assert_eq!(e.field, field, "{json}: {e}");
            assert!(!e.to_string().contains(S));
        }
    }
}
