//! Checked Pomerium [`Config`] → [`Deployment`]: resolve every option into the pure data
//! the renderers translate.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use policy_compiler::config::{self as pc, Config, PemSource};

use crate::Error;
use crate::model::{
    Certificate, DataSource, Deployment, ExternalHost, HostRewrite, Listener, ListenerTls,
    PathMatch, ResponseHeaderRewrite, Route, SIDECAR_CLUSTER, SIDECAR_ROUTE, SocketAddress, Target,
    UpstreamTls, Wasm,
};
use crate::plugin::PluginConfig;
use crate::tls;

/// Choices that are not in `config.yaml` (command-line flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Absolute path of `filter.wasm`.
    pub wasm: String,
    /// Envoy admin address (loopback).
    pub admin: SocketAddress,
    /// Extra listener addresses.
    pub additional_addresses: Vec<SocketAddress>,
    /// Sidecar replicas; empty = `sidecar_address`.
    pub sidecar_endpoints: Vec<SocketAddress>,
    /// CA bundle used to verify `https` upstreams without `tls_custom_ca`.
    pub ca_bundle: String,
    /// Embed this bundle (base64) in the plugin configuration instead of fetching it.
    pub inline_bundle: Option<String>,
    /// `staleness_bound_secs` for the filter (`None`: the filter's default).
    pub staleness_bound_secs: Option<u64>,
    /// `tick_period_ms` for the filter (`None`: the filter's default).
    pub tick_period_ms: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            wasm: "filter.wasm".into(),
            admin: SocketAddress::new("127.0.0.1", 9901),
            additional_addresses: Vec::new(),
            sidecar_endpoints: Vec::new(),
            ca_bundle: "/etc/ssl/certs/ca-certificates.crt".into(),
            inline_bundle: None,
            staleness_bound_secs: None,
            tick_period_ms: None,
        }
    }
}

/// Pomerium's default `set_response_headers` (when the option is absent).
fn default_response_headers(insecure: bool) -> BTreeMap<String, String> {
    let mut h = BTreeMap::new();
    h.insert("X-Frame-Options".to_owned(), "SAMEORIGIN".to_owned());
    h.insert("X-XSS-Protection".to_owned(), "1; mode=block".to_owned());
    if !insecure {
        h.insert(
            "Strict-Transport-Security".to_owned(),
            "max-age=31536000; includeSubDomains; preload".to_owned(),
        );
    }
    h
}

/// Build the deployment. `route_ids` are the bundle's route ids, one per `config.routes`
/// entry in order (from the compiled bundle, so Envoy's route names are exactly what the
/// filter looks up).
pub fn deployment(c: &Config, route_ids: &[String], o: &Options) -> Result<Deployment, Error> {
    if route_ids.len() != c.routes.len() {
        return Err(Error::Unsupported(format!(
            "{} route ids for {} routes",
            route_ids.len(),
            c.routes.len()
        )));
    }
    if c.shared_secret.generated || c.cookie_secret.generated {
        return Err(Error::Config(
            "`shared_secret` and `cookie_secret` must be set: Envoy's filter and the sidecar \
             must share them, so a generated one cannot work"
                .into(),
        ));
    }
    let Some(auth_url) = &c.authenticate_service_url else {
        return Err(Error::Config(
            "`authenticate_service_url` is required".into(),
        ));
    };
    let authenticate = external_host(auth_url)?;

    let mut routes = Vec::with_capacity(c.routes.len());
    for (r, id) in c.routes.iter().zip(route_ids) {
        routes.push(route(c, r, id, o)?);
    }

    let tls = if c.insecure_server {
        ListenerTls::Plain
    } else {
        let mut certificates = Vec::new();
        for pair in &c.certificates {
            certificates.push(certificate(pair)?);
        }
        let mut names: Vec<String> = routes.iter().map(|r| r.from.host.clone()).collect();
        names.push(authenticate.host.clone());
        ListenerTls::Tls {
            certificates,
            fallback: tls::self_signed(&names)?,
        }
    };

    let sidecar = if o.sidecar_endpoints.is_empty() {
        // A sidecar listening on all interfaces is reached on loopback.
        let host = match c.sidecar_address.host.as_deref() {
            None | Some("0.0.0.0") | Some("") => "127.0.0.1".to_owned(),
            Some("::") => "::1".to_owned(),
            Some("localhost") => "127.0.0.1".to_owned(),
            Some(h) => h.to_owned(),
        };
        vec![SocketAddress::new(host, c.sidecar_address.port)]
    } else {
        o.sidecar_endpoints.clone()
    };
    let sidecar_authority = sidecar
        .first()
        .map(|a| authority(&a.host, a.port))
        .unwrap_or_default();

    let plugin = PluginConfig {
        sidecar_cluster: SIDECAR_CLUSTER.to_owned(),
        sidecar_authority: Some(sidecar_authority),
        shared_secret: b64(c.shared_secret.secret.expose()),
        cookie_secret: b64(c.cookie_secret.secret.expose()),
        cookie_name: None,
        bundle: o.inline_bundle.clone(),
        staleness_bound_secs: o.staleness_bound_secs,
        tick_period_ms: o.tick_period_ms,
        sidecar_route_name: Some(SIDECAR_ROUTE.to_owned()),
        strip_headers: c
            .jwt_claims_headers
            .iter()
            .map(|h| h.header.to_ascii_lowercase())
            .collect(),
    };

    Ok(Deployment {
        admin: o.admin.clone(),
        listener: Listener {
            address: listen_address(&c.address)?,
            additional_addresses: o.additional_addresses.clone(),
            tls,
            xff_num_trusted_hops: 0,
        },
        authenticate,
        sidecar,
        routes,
        wasm: Wasm {
            filename: o.wasm.clone(),
            vm_id: "portcullis".to_owned(),
            configuration: plugin.to_json(),
        },
    })
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn listen_address(a: &pc::BindAddress) -> Result<SocketAddress, Error> {
    let host = match a.host.as_deref() {
        None | Some("") => "0.0.0.0".to_owned(),
        Some("localhost") => "127.0.0.1".to_owned(),
        Some(h) => {
            if h.parse::<IpAddr>().is_err() {
                return Err(Error::Unsupported(format!(
                    "`address` host `{h}` must be an IP address for Envoy"
                )));
            }
            h.to_owned()
        }
    };
    Ok(SocketAddress::new(host, a.port))
}

fn pem_source(s: &PemSource) -> Result<(DataSource, String), Error> {
    match s {
        PemSource::File(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| Error::Read {
                path: p.display().to_string(),
                source: e,
            })?;
            Ok((DataSource::File(p.display().to_string()), text))
        }
        PemSource::Inline(pem) => Ok((
            DataSource::Inline(pem.expose().to_owned()),
            pem.expose().to_owned(),
        )),
    }
}

fn certificate(pair: &pc::CertificatePair) -> Result<Certificate, Error> {
    let (chain, pem) = pem_source(&pair.cert)?;
    let (key, _) = pem_source(&pair.key)?;
    tls::certificate(chain, key, &pem)
}

fn external_host(u: &url::Url) -> Result<ExternalHost, Error> {
    let https = match u.scheme() {
        "https" => true,
        "http" => false,
        other => {
            return Err(Error::Unsupported(format!(
                "`{u}`: scheme `{other}` is not served by the HTTP listener"
            )));
        }
    };
    let Some(host) = u.host_str() else {
        return Err(Error::Unsupported(format!("`{u}` has no host")));
    };
    Ok(ExternalHost {
        https,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase(),
        port: u.port(),
    })
}

fn target(u: &pc::WeightedUrl) -> Result<Target, Error> {
    let https = match u.url.scheme() {
        "https" => true,
        "http" => false,
        other => {
            return Err(Error::Unsupported(format!(
                "`to: {}`: scheme `{other}` is not supported by envoy-config",
                u.url
            )));
        }
    };
    let (Some(host), Some(port)) = (u.url.host_str(), u.url.port_or_known_default()) else {
        return Err(Error::Unsupported(format!("`to: {}` has no host", u.url)));
    };
    Ok(Target {
        https,
        address: SocketAddress::new(host.trim_start_matches('[').trim_end_matches(']'), port),
        weight: u.weight.unwrap_or(1),
    })
}

fn route(c: &Config, r: &pc::Route, id: &str, o: &Options) -> Result<Route, Error> {
    let from = external_host(&r.from.value)?;
    let name = r.display_name();
    let mut to = Vec::with_capacity(r.to.len());
    for u in &r.to {
        to.push(target(u)?);
    }
    let Some(first) = to.first() else {
        return Err(Error::Unsupported(format!("route `{name}` has no `to`")));
    };
    let https = first.https;
    if to.iter().any(|t| t.https != https) {
        return Err(Error::Unsupported(format!(
            "route `{name}`: `to` mixes http and https upstreams"
        )));
    }
    let path = match r.path_match.as_ref().map(|p| &p.value) {
        None => PathMatch::Prefix("/".to_owned()),
        Some(pc::PathMatch::Prefix(p)) => PathMatch::Prefix(p.clone()),
        Some(pc::PathMatch::Path(p)) => PathMatch::Path(p.clone()),
        Some(pc::PathMatch::Regex(p)) => PathMatch::Regex(p.clone()),
    };
    // Pomerium: a path in the `to` URL replaces the matched prefix, unless a rewrite is set.
    let mut prefix_rewrite = r.prefix_rewrite.clone();
    if prefix_rewrite.is_none()
        && r.regex_rewrite.is_none()
        && let Some(u) = r.to.first()
        && !matches!(u.url.path(), "" | "/")
    {
        if matches!(path, PathMatch::Regex(_)) {
            return Err(Error::Unsupported(format!(
                "route `{name}`: a path in `to` cannot be combined with `regex`"
            )));
        }
        prefix_rewrite = Some(u.url.path().to_owned());
    }
    let upstream_tls = if https {
        let sni = r
            .upstream_tls
            .server_name
            .clone()
            .or_else(|| (!first.address.is_ip()).then(|| first.address.host.clone()));
        let ca = match &r.upstream_tls.custom_ca {
            Some(s) => pem_source(s)?.0,
            None => DataSource::File(o.ca_bundle.clone()),
        };
        Some(UpstreamTls {
            sni,
            skip_verify: r.upstream_tls.skip_verify,
            ca,
        })
    } else {
        None
    };
    let host_rewrite = match &r.host_rewrite {
        pc::HostRewrite::Auto => HostRewrite::Auto,
        pc::HostRewrite::Preserve => HostRewrite::Preserve,
        pc::HostRewrite::Literal(h) => HostRewrite::Literal(h.clone()),
        pc::HostRewrite::Header(h) => HostRewrite::Header(h.clone()),
        pc::HostRewrite::PathRegex(rw) => {
            HostRewrite::PathRegex(rw.pattern.clone(), rw.substitution.clone())
        }
    };
    // Pomerium disables the upstream timeout of websocket routes unless one is set.
    let timeout = match r.timeout {
        Some(t) => t,
        None if r.allow_websockets => Duration::ZERO,
        None => c.default_upstream_timeout,
    };
    let mut response_headers = c
        .set_response_headers
        .clone()
        .unwrap_or_else(|| default_response_headers(c.insecure_server));
    response_headers.extend(r.set_response_headers.clone());
    Ok(Route {
        id: id.to_owned(),
        from,
        path,
        to,
        upstream_tls,
        prefix_rewrite,
        regex_rewrite: r
            .regex_rewrite
            .as_ref()
            .map(|rw| (rw.pattern.clone(), rw.substitution.clone())),
        host_rewrite,
        timeout: Some(timeout),
        idle_timeout: r.idle_timeout,
        websockets: r.allow_websockets,
        set_request_headers: r.set_request_headers.clone().into_iter().collect(),
        remove_request_headers: r.remove_request_headers.clone(),
        set_response_headers: response_headers
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect(),
        rewrite_response_headers: r
            .rewrite_response_headers
            .iter()
            .map(|h| ResponseHeaderRewrite {
                header: h.header.clone(),
                prefix: h.prefix.clone(),
                value: h.value.clone(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{bootstrap, envoy_validate, to_yaml};
    use std::path::{Path, PathBuf};

    fn fixture(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
    }

    fn load(path: &Path) -> Config {
        policy_compiler::config::load_str_in(
            &path.display().to_string(),
            &std::fs::read_to_string(path).unwrap(),
            &|_| None,
            path.parent(),
        )
        .unwrap_or_else(|d| panic!("{d:?}"))
        .config
    }

    /// The YAML with generated (random) PEM material and machine paths replaced.
    fn redacted(yaml: &str) -> String {
        let root = fixture("").display().to_string();
        let mut out = Vec::new();
        let mut skipping = false;
        for line in yaml.lines() {
            if skipping {
                if line.trim_start().starts_with("-----END") {
                    skipping = false;
                }
                continue;
            }
            if line.contains("inline_string: |") && !line.contains("envoy_on_response") {
                out.push(line.replace("inline_string: |", "inline_string: '[generated PEM]'"));
                skipping = true;
                continue;
            }
            out.push(line.replace(&root, "<crate>/"));
        }
        out.join("\n")
    }

    fn deployment_for(path: &Path) -> Deployment {
        let c = load(path);
        let ids = crate::tests_support::route_ids(&c);
        let o = Options {
            wasm: envoy_validate::wasm(),
            ..Options::default()
        };
        deployment(&c, &ids, &o).unwrap()
    }

    #[test]
    fn all_options_golden_and_valid() {
        let d = deployment_for(&fixture("tests/fixtures/all-options.yaml"));
        let yaml = to_yaml(&bootstrap::render(&d)).unwrap();
        envoy_validate::validate("all-options", &yaml);
        let mut d = d;
        d.wasm.filename = "/opt/portcullis/filter.wasm".into();
        insta::assert_snapshot!(redacted(&to_yaml(&bootstrap::render(&d)).unwrap()));
    }

    #[test]
    fn all_options_are_translated() {
        let d = deployment_for(&fixture("tests/fixtures/all-options.yaml"));
        let ids: Vec<&str> = d.routes.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["app-admin", "app", "route-2", "route-3"]);
        let [admin, app, api, stat] = &d.routes[..] else {
            panic!()
        };
        assert_eq!(
            admin.to.iter().map(|t| t.weight).collect::<Vec<_>>(),
            [3, 1]
        );
        assert_eq!(admin.timeout, Some(Duration::from_secs(5)));
        assert_eq!(admin.idle_timeout, Some(Duration::from_secs(120)));
        assert_eq!(
            admin.set_request_headers,
            [("X-Team".to_owned(), "ops".to_owned())]
        );
        // Global set_response_headers replace Pomerium's defaults; route headers add on top.
        assert_eq!(
            admin.set_response_headers,
            [("X-Frame-Options".to_owned(), "DENY".to_owned())]
        );
        assert!(app.set_response_headers.contains(&(
            "Strict-Transport-Security".to_owned(),
            "max-age=60".to_owned()
        )));
        assert!(app.websockets);
        assert_eq!(
            app.timeout,
            Some(Duration::ZERO),
            "websocket routes: no upstream timeout"
        );
        assert_eq!(app.host_rewrite, HostRewrite::Preserve);
        assert_eq!(app.rewrite_response_headers.len(), 1);
        assert_eq!(api.path, PathMatch::Regex("^/v[0-9]+/.*$".into()));
        assert_eq!(
            api.host_rewrite,
            HostRewrite::Literal("api.internal".into())
        );
        let tls = api.upstream_tls.as_ref().unwrap();
        assert!(tls.skip_verify);
        assert_eq!(tls.sni.as_deref(), Some("api.internal"));
        assert_eq!(api.to[0].address, SocketAddress::new("api.internal", 443));
        // A path in `to` becomes the prefix rewrite (Pomerium).
        assert_eq!(stat.prefix_rewrite.as_deref(), Some("/assets/"));
        assert_eq!(
            stat.host_rewrite,
            HostRewrite::Header("X-Upstream-Host".into())
        );
        // Listener TLS: the configured certificate answers for its names.
        let ListenerTls::Tls { certificates, .. } = &d.listener.tls else {
            panic!()
        };
        assert_eq!(
            certificates[0].server_names,
            ["*.example.com", "example.com"]
        );
        assert_eq!(d.sidecar, [SocketAddress::new("127.0.0.1", 5081)]);
        let plugin: serde_json::Value = serde_json::from_str(&d.wasm.configuration).unwrap();
        assert_eq!(
            plugin["strip_headers"],
            serde_json::json!(["x-pomerium-claim-email"])
        );
        assert_eq!(plugin["sidecar_authority"], "127.0.0.1:5081");
    }

    /// The real-world config from the "claims not refreshed" report.
    #[test]
    fn issue_report_config_golden_and_valid() {
        let d = deployment_for(&fixture(
            "../policy-compiler/tests/fixtures/issue-claims-not-refreshed.yaml",
        ));
        let yaml = to_yaml(&bootstrap::render(&d)).unwrap();
        envoy_validate::validate("issue", &yaml);
        let mut d = d;
        d.wasm.filename = "/opt/portcullis/filter.wasm".into();
        insta::assert_snapshot!(redacted(&to_yaml(&bootstrap::render(&d)).unwrap()));
    }

    #[test]
    fn generated_secrets_are_refused() {
        let text = "authenticate_service_url: https://a.example.com\nroutes:\n  - from: https://b.example.com\n    to: http://c\n    allow_public_unauthenticated_access: true\n";
        let c = policy_compiler::config::load_str("x.yaml", text, &|_| None)
            .unwrap()
            .config;
        let err = deployment(&c, &["r".into()], &Options::default()).unwrap_err();
        assert!(err.to_string().contains("shared_secret"), "{err}");
    }

    #[test]
    fn mixed_upstream_schemes_are_refused() {
        let text = "authenticate_service_url: https://a.example.com\nshared_secret: c2hhcmVkLXNlY3JldC1mb3ItdGVzdHMtMDEyMzQ1Njc=\ncookie_secret: Y29va2llLXNlY3JldC1mb3ItdGVzdHMtMDEyMzQ1Njc=\nroutes:\n  - from: https://b.example.com\n    to: [http://c, https://d]\n    allow_public_unauthenticated_access: true\n";
        let c = policy_compiler::config::load_str("x.yaml", text, &|_| None)
            .unwrap()
            .config;
        let err = deployment(&c, &["r".into()], &Options::default()).unwrap_err();
        assert!(err.to_string().contains("mixes http and https"), "{err}");
    }
}
