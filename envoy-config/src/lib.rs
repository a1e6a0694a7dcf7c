//! Envoy bootstrap and Istio manifests for Portcullis, from the same Pomerium `config.yaml`.
//!
//! - [`model`]: the pure data a deployment needs (routes with their bundle ids, listener,
//!   certificates, sidecar endpoints, filter); built from the checked config by
//!   [`from_config`];
//! - [`bootstrap`]: that data → an Envoy v3 bootstrap;
//! - [`istio`]: that data → `WasmPlugin`, sidecar `Deployment`/`Service`/`Secret`, and the
//!   `ServiceEntry`/`VirtualService` pieces Istio needs;
//! - [`to_yaml`]: print any of them.
//!
//! Rendering is deterministic (same input ⇒ same bytes) except for the self-signed
//! fallback certificate, which is generated fresh by [`tls::self_signed`].

pub mod bootstrap;
pub mod from_config;
pub mod istio;
pub mod model;
pub mod plugin;
pub mod tls;

/// What can go wrong turning a config into Envoy/Istio configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Pomerium config is invalid (the loader's diagnostics, one per line).
    #[error("invalid config:\n{0}")]
    Config(String),
    /// A value the config loader accepted but Envoy cannot express.
    #[error("{0}")]
    Unsupported(String),
    /// A certificate or key could not be read or generated.
    #[error("certificate: {0}")]
    Certificate(String),
    /// A file named in the config could not be read.
    #[error("cannot read `{path}`: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Serialising the output failed.
    #[error("cannot print YAML: {0}")]
    Yaml(String),
}

/// Print a rendered configuration as YAML.
pub fn to_yaml(v: &serde_json::Value) -> Result<String, Error> {
    serde_yaml_ng::to_string(v).map_err(|e| Error::Yaml(e.to_string()))
}

#[cfg(test)]
mod envoy_validate;
#[cfg(test)]
pub(crate) mod sample;
#[cfg(test)]
pub(crate) mod tests_support;
