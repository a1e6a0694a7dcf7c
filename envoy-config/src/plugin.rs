//! The filter's plugin configuration (JSON), as the filter parses it (`filter/src/config.rs`,
//! documented in docs/filter.md). The filter refuses unknown fields, so this mirrors it
//! exactly; optional tuning fields are left out unless set, so the filter's defaults apply.

use serde::Serialize;

/// The plugin configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PluginConfig {
    /// Envoy cluster of the sidecar's internal API.
    pub sidecar_cluster: String,
    /// `:authority` of internal API calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sidecar_authority: Option<String>,
    /// `shared_secret` (base64, as in the config).
    pub shared_secret: String,
    /// `cookie_secret` (base64, as in the config).
    pub cookie_secret: String,
    /// `cookie_name` (the bundle carries it too; set it only to override).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie_name: Option<String>,
    /// Inline bundle (base64 of `policy-compiler build` output). `None`: the filter
    /// fetches the bundle from the sidecar and follows its new versions (hot reload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    /// How long cached sessions stay usable without news from the sidecar.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub staleness_bound_secs: Option<u64>,
    /// Tick period of the change-stream follower.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tick_period_ms: Option<u64>,
    /// Envoy route name whose requests belong to the sidecar (envoy-config's sidecar routes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sidecar_route_name: Option<String>,
    /// Extra client headers always removed (the configured `jwt_claims_headers`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub strip_headers: Vec<String>,
}

impl PluginConfig {
    /// The JSON text Envoy passes to the filter.
    pub fn to_json(&self) -> String {
        // Serialising plain strings and numbers cannot fail; an empty object (which the
        // filter rejects loudly, and Envoy with it) is the safe fallback, not a panic.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}
