//! The pure-data description of what Envoy must do for one Portcullis deployment.
//!
//! Everything here is already checked and resolved (ids computed, certificates read,
//! defaults applied): the renderers in [`crate::bootstrap`] and [`crate::istio`] only
//! translate it, so they are deterministic and easy to snapshot. [`crate::from_config`]
//! builds it from the checked Pomerium configuration.

use std::time::Duration;

/// Name of the Envoy cluster (and of the Envoy routes) that lead to the sidecar. The
/// filter recognises requests on these routes and leaves them to the sidecar.
pub const SIDECAR_CLUSTER: &str = "portcullis-sidecar";

/// Name given to every Envoy route that sends browser endpoints to the sidecar.
pub const SIDECAR_ROUTE: &str = "portcullis-sidecar";

/// `host:port` pair of a socket (host is an IP literal or a DNS name, IPv6 without brackets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketAddress {
    /// IP literal or DNS name.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl SocketAddress {
    /// A socket address.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }

    /// True when `host` is an IP literal (Envoy `STATIC` clusters need one).
    pub fn is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

/// Where the bytes of a certificate or key come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    /// A file Envoy reads (and watches) itself.
    File(String),
    /// PEM text embedded in the bootstrap.
    Inline(String),
}

/// One server certificate and the TLS server names (SNI) it answers for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// DNS names from the certificate (`*.example.com` wildcards allowed). Empty = no SNI
    /// filter chain of its own (it only joins the default chain).
    pub server_names: Vec<String>,
    /// PEM certificate chain.
    pub chain: DataSource,
    /// PEM private key.
    pub key: DataSource,
}

/// How the listener speaks to browsers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenerTls {
    /// Plain HTTP (`insecure_server: true`).
    Plain,
    /// TLS: one filter chain per certificate (matched by SNI), and a default chain with the
    /// self-signed `fallback` for names no certificate covers.
    Tls {
        /// Configured certificates, in config order.
        certificates: Vec<Certificate>,
        /// Self-signed certificate used when no SNI matches.
        fallback: Certificate,
    },
}

/// The one HTTP listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// `address` option.
    pub address: SocketAddress,
    /// More addresses the same listener accepts on (e.g. extra loopback IPs in tests).
    pub additional_addresses: Vec<SocketAddress>,
    /// TLS or plain.
    pub tls: ListenerTls,
    /// `xff_num_trusted_hops` (Pomerium option, default 0).
    pub xff_num_trusted_hops: u32,
}

/// Scheme + host + optional explicit port of a `from` or `authenticate_service_url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalHost {
    /// `https` (true) or `http`.
    pub https: bool,
    /// Host name or IP literal, lower case (may be a `*.` wildcard).
    pub host: String,
    /// Port written in the URL, if any.
    pub port: Option<u16>,
}

impl ExternalHost {
    /// The port browsers use: the explicit one, or the scheme's default.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(if self.https { 443 } else { 80 })
    }

    /// Envoy virtual host `domains` for this host: `host:port`, plus the bare `host` when
    /// the port is the scheme's default (browsers omit it from `Host`).
    pub fn domains(&self) -> Vec<String> {
        let default = if self.https { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let port = self.effective_port();
        if port == default {
            vec![host.clone(), format!("{host}:{port}")]
        } else {
            vec![format!("{host}:{port}")]
        }
    }

    /// A `*` anywhere in the host (Pomerium wildcard: served from the catch-all virtual host).
    pub fn is_wildcard(&self) -> bool {
        self.host.contains('*')
    }

    /// Key grouping routes into one Envoy virtual host.
    pub fn vhost_key(&self) -> String {
        format!("{}:{}", self.host, self.effective_port())
    }
}

/// How a route matches the request path (Pomerium `prefix` / `path` / `regex`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    /// `prefix` (default `/`).
    Prefix(String),
    /// `path`: exact.
    Path(String),
    /// `regex`: RE2, matched against the whole path.
    Regex(String),
}

/// One upstream of a route's `to` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `https` upstream (TLS origination).
    pub https: bool,
    /// Upstream address.
    pub address: SocketAddress,
    /// Load-balancing weight (`,weight` suffix; 1 when absent).
    pub weight: u32,
}

/// TLS towards a route's upstreams (when its `to` URLs are `https`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTls {
    /// SNI to send (`tls_server_name`, else the upstream host when it is a name).
    pub sni: Option<String>,
    /// `tls_skip_verify`.
    pub skip_verify: bool,
    /// CA bundle to verify the upstream with.
    pub ca: DataSource,
}

/// What `Host` header the upstream sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostRewrite {
    /// Pomerium's default: the upstream's own host name.
    Auto,
    /// `preserve_host_header: true`: the browser's `Host`.
    Preserve,
    /// `host_rewrite`: a fixed value.
    Literal(String),
    /// `host_rewrite_header`: taken from a request header.
    Header(String),
    /// `host_path_regex_rewrite_pattern` / `_substitution`: the path rewritten into a host.
    PathRegex(String, String),
}

/// One `rewrite_response_headers` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHeaderRewrite {
    /// Header name.
    pub header: String,
    /// Replace only this prefix of the value (`None`: the whole value).
    pub prefix: Option<String>,
    /// Replacement.
    pub value: String,
}

/// One Pomerium route, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The bundle's route id: Envoy names the route with it (`xds.route_name`).
    pub id: String,
    /// `from`.
    pub from: ExternalHost,
    /// `prefix` / `path` / `regex`.
    pub path: PathMatch,
    /// `to` (non-empty).
    pub to: Vec<Target>,
    /// TLS to the upstreams.
    pub upstream_tls: Option<UpstreamTls>,
    /// `prefix_rewrite`.
    pub prefix_rewrite: Option<String>,
    /// `regex_rewrite_pattern` + `regex_rewrite_substitution`.
    pub regex_rewrite: Option<(String, String)>,
    /// Host header policy.
    pub host_rewrite: HostRewrite,
    /// Upstream timeout (`timeout`; `Some(0)` disables it).
    pub timeout: Option<Duration>,
    /// Stream idle timeout (`idle_timeout`).
    pub idle_timeout: Option<Duration>,
    /// `allow_websockets`.
    pub websockets: bool,
    /// `set_request_headers` (ordered).
    pub set_request_headers: Vec<(String, String)>,
    /// `remove_request_headers`.
    pub remove_request_headers: Vec<String>,
    /// `set_response_headers` (route + global).
    pub set_response_headers: Vec<(String, String)>,
    /// `rewrite_response_headers`.
    pub rewrite_response_headers: Vec<ResponseHeaderRewrite>,
}

/// The wasm filter as Envoy loads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wasm {
    /// Absolute path of `filter.wasm`.
    pub filename: String,
    /// `vm_id` (shared by every filter instance so they share a VM per thread).
    pub vm_id: String,
    /// Plugin configuration (JSON text, as documented in docs/filter.md).
    pub configuration: String,
}

/// Everything one Envoy bootstrap needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    /// Envoy admin interface (always loopback in what we generate).
    pub admin: SocketAddress,
    /// The browser-facing listener.
    pub listener: Listener,
    /// `authenticate_service_url`'s host: routed entirely to the sidecar.
    pub authenticate: ExternalHost,
    /// Sidecar replicas (from `sidecar_address`, or several given on the command line).
    pub sidecar: Vec<SocketAddress>,
    /// Routes in config order.
    pub routes: Vec<Route>,
    /// The filter.
    pub wasm: Wasm,
}
