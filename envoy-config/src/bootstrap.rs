//! [`Deployment`] → Envoy v3 bootstrap (a JSON value; [`crate::to_yaml`] prints it).
//!
//! Shape, following what Pomerium generates for its own Envoy:
//! - one listener on `address`; the HTTP connection manager normalises paths (`normalize_path`,
//!   `merge_slashes`, escaped slashes unescaped and redirected) so the path the filter and
//!   Envoy's route table see is the path the upstream gets;
//! - one virtual host per `from` host: first the sidecar's browser endpoints
//!   (`/.pomerium/…`, `/.well-known/pomerium/…`), then that host's routes in config order,
//!   each named with the bundle's route id (the filter reads `xds.route_name`);
//! - the `authenticate_service_url` host routed entirely to the sidecar;
//! - one cluster per route for its `to` list, and the sidecar cluster;
//! - the filter (`envoy.filters.http.wasm`, V8, `FAIL_RELOAD`), then Lua (only for
//!   `rewrite_response_headers`), then the router.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::model::{
    Certificate, DataSource, Deployment, ExternalHost, HostRewrite, ListenerTls, PathMatch, Route,
    SIDECAR_CLUSTER, SIDECAR_ROUTE, SocketAddress, Target, UpstreamTls, Wasm,
};

const WASM_FILTER: &str = "envoy.filters.http.wasm";
const LUA_FILTER: &str = "envoy.filters.http.lua";
/// Pomerium's `default_upstream_timeout`.
const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// Render the complete bootstrap.
pub fn render(d: &Deployment) -> Value {
    json!({
        "node": { "id": "portcullis", "cluster": "portcullis" },
        "admin": {
            "address": socket_address(&d.admin),
        },
        "static_resources": {
            "listeners": [listener(d)],
            "clusters": clusters(d),
        },
    })
}

fn socket_address(a: &SocketAddress) -> Value {
    json!({ "socket_address": { "address": a.host, "port_value": a.port } })
}

fn duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        let frac = format!("{:09}", d.subsec_nanos());
        format!("{}.{}s", d.as_secs(), frac.trim_end_matches('0'))
    }
}

fn data_source(s: &DataSource) -> Value {
    match s {
        DataSource::File(f) => json!({ "filename": f }),
        DataSource::Inline(pem) => json!({ "inline_string": pem }),
    }
}

// ---- listener ---------------------------------------------------------------------------

fn listener(d: &Deployment) -> Value {
    let l = &d.listener;
    let mut out = Map::new();
    out.insert("name".into(), json!("portcullis-ingress"));
    out.insert("address".into(), socket_address(&l.address));
    if !l.additional_addresses.is_empty() {
        let extra: Vec<Value> = l
            .additional_addresses
            .iter()
            .map(|a| json!({ "address": socket_address(a) }))
            .collect();
        out.insert("additional_addresses".into(), Value::Array(extra));
    }
    match &l.tls {
        ListenerTls::Plain => {
            out.insert(
                "filter_chains".into(),
                json!([{ "filters": [http_connection_manager(d)] }]),
            );
        }
        ListenerTls::Tls {
            certificates,
            fallback,
        } => {
            // One chain per certificate that names its hosts; the default chain answers
            // every other SNI (or none) with the configured name-less certificates and the
            // self-signed fallback.
            let chains: Vec<Value> = certificates
                .iter()
                .filter(|c| !c.server_names.is_empty())
                .map(|c| {
                    json!({
                        "filter_chain_match": { "server_names": c.server_names },
                        "transport_socket": downstream_tls(std::slice::from_ref(c)),
                        "filters": [http_connection_manager(d)],
                    })
                })
                .collect();
            let mut default_certs: Vec<Certificate> = certificates
                .iter()
                .filter(|c| c.server_names.is_empty())
                .cloned()
                .collect();
            default_certs.push(fallback.clone());
            out.insert(
                "listener_filters".into(),
                json!([{
                    "name": "envoy.filters.listener.tls_inspector",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
                    }
                }]),
            );
            out.insert("filter_chains".into(), Value::Array(chains));
            out.insert(
                "default_filter_chain".into(),
                json!({
                    "transport_socket": downstream_tls(&default_certs),
                    "filters": [http_connection_manager(d)],
                }),
            );
        }
    }
    Value::Object(out)
}

fn downstream_tls(certs: &[Certificate]) -> Value {
    let certs: Vec<Value> = certs
        .iter()
        .map(|c| {
            json!({
                "certificate_chain": data_source(&c.chain),
                "private_key": data_source(&c.key),
            })
        })
        .collect();
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_params": { "tls_minimum_protocol_version": "TLSv1_2" },
                "tls_certificates": certs,
            }
        }
    })
}

fn http_connection_manager(d: &Deployment) -> Value {
    let mut filters = vec![wasm_filter(&d.wasm)];
    if d.routes
        .iter()
        .any(|r| !r.rewrite_response_headers.is_empty())
    {
        filters.push(json!({
            "name": LUA_FILTER,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
            }
        }));
    }
    filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
        }
    }));
    json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "portcullis",
            "codec_type": "AUTO",
            // Path normalisation exactly as Pomerium configures it: policy decisions are
            // made on the path the upstream receives.
            "normalize_path": true,
            "merge_slashes": true,
            "path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
            // `X_Email` and `x_pomerium_claim_email` would slip past header stripping and be
            // read as identity headers by CGI/WSGI-style upstreams: drop such headers.
            "common_http_protocol_options": { "headers_with_underscores_action": "DROP_HEADER" },
            "use_remote_address": true,
            "xff_num_trusted_hops": d.listener.xff_num_trusted_hops,
            "skip_xff_append": false,
            "generate_request_id": true,
            "preserve_external_request_id": false,
            "always_set_request_id_in_response": true,
            // Websockets are off unless a route enables them (`allow_websockets`).
            "upgrade_configs": [{ "upgrade_type": "websocket", "enabled": false }],
            "route_config": route_config(d),
            "http_filters": filters,
        }
    })
}

fn wasm_filter(w: &Wasm) -> Value {
    json!({
        "name": WASM_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "portcullis",
                "root_id": "portcullis",
                "vm_config": {
                    "vm_id": w.vm_id,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": { "local": { "filename": w.filename } },
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": w.configuration,
                },
                // A panicking VM answers 503 briefly and is reloaded; never skip the filter.
                "failure_policy": "FAIL_RELOAD",
            }
        }
    })
}

// ---- routes -----------------------------------------------------------------------------

/// One `from` host and its routes with their config index.
type HostRoutes<'a> = (ExternalHost, Vec<(usize, &'a Route)>);

fn route_config(d: &Deployment) -> Value {
    // Group routes by `from` host, keeping the order in which hosts first appear and the
    // config order of routes within a host (first match wins, as in Pomerium).
    let mut order: Vec<String> = Vec::new();
    let mut by_host: BTreeMap<String, HostRoutes<'_>> = BTreeMap::new();
    let mut wildcard: Vec<(usize, &Route)> = Vec::new();
    for (i, r) in d.routes.iter().enumerate() {
        if r.from.is_wildcard() {
            wildcard.push((i, r));
            continue;
        }
        let key = r.from.vhost_key();
        by_host
            .entry(key.clone())
            .or_insert_with(|| {
                order.push(key);
                (r.from.clone(), Vec::new())
            })
            .1
            .push((i, r));
    }
    let auth_key = d.authenticate.vhost_key();
    let mut vhosts = vec![json!({
        "name": format!("authenticate:{auth_key}"),
        "domains": d.authenticate.domains(),
        // The sidecar's internal API and health endpoints are for the filter and the
        // orchestrator, never for the outside: answer them here, before the catch-all.
        "routes": [
            blocked_route(json!({ "prefix": INTERNAL_API_PREFIX })),
            blocked_route(json!({ "path": "/healthz" })),
            blocked_route(json!({ "path": "/readyz" })),
            sidecar_route(json!({ "prefix": "/" })),
        ],
    })];
    for key in &order {
        let Some((host, routes)) = by_host.get(key) else {
            continue;
        };
        if *key == auth_key {
            // The authenticate host belongs to the sidecar; Pomerium does the same.
            continue;
        }
        let mut rs = vec![
            blocked_route(json!({ "prefix": INTERNAL_API_PREFIX })),
            sidecar_route(json!({ "prefix": "/.pomerium/" })),
            sidecar_route(json!({ "path": "/.pomerium" })),
            sidecar_route(json!({ "prefix": "/.well-known/pomerium/" })),
        ];
        rs.extend(routes.iter().map(|(i, r)| route(*i, r)));
        vhosts.push(json!({
            "name": format!("route:{key}"),
            "domains": host.domains(),
            "routes": rs,
        }));
    }
    if !wildcard.is_empty() {
        // Pomerium serves wildcard hosts (`*.example.com`, `app-*.example.com`) from one
        // catch-all virtual host, each route matching `:authority` against its pattern, in
        // config order; Envoy prefers every exact host's own virtual host (no fall-through
        // to wildcards) — the same order the filter's own route lookup uses.
        let mut rs = vec![
            blocked_route(json!({ "prefix": INTERNAL_API_PREFIX })),
            sidecar_route(json!({ "prefix": "/.pomerium/" })),
            sidecar_route(json!({ "path": "/.pomerium" })),
            sidecar_route(json!({ "prefix": "/.well-known/pomerium/" })),
        ];
        for (i, r) in &wildcard {
            let mut v = route(*i, r);
            if let Some(Value::Object(m)) = v.get_mut("match") {
                m.insert(
                    "headers".into(),
                    json!([{
                        "name": ":authority",
                        "string_match": { "safe_regex": { "regex": authority_regex(&r.from) } },
                    }]),
                );
            }
            rs.push(v);
        }
        vhosts.push(json!({ "name": "wildcard", "domains": ["*"], "routes": rs }));
    }
    json!({ "name": "portcullis", "virtual_hosts": vhosts })
}

/// RE2 for the `:authority` values a wildcard `from` host accepts: Pomerium's
/// `WildcardToRegex` (each `*` = any run of characters), case-insensitive, with
/// `:<default port>` optional when the URL names no port.
pub fn authority_regex(h: &ExternalHost) -> String {
    let mut re = String::from("^(?i)");
    for c in h.host.chars() {
        match c {
            '*' => re.push_str(".*"),
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => re.push(c),
            c => {
                re.push('\\');
                re.push(c);
            }
        }
    }
    match h.port {
        Some(p) => re.push_str(&format!(":{p}")),
        None => re.push_str(&format!("(:{})?", h.effective_port())),
    }
    re.push('$');
    re
}

/// Path prefix of the sidecar's internal API (`common::api`): reached by the filter's
/// `dispatch_http_call` straight to the sidecar cluster, never through a listener.
const INTERNAL_API_PREFIX: &str = "/.portcullis/";

/// A route that answers 404 itself: the internal API and the sidecar's health endpoints
/// must not be reachable from outside (defence in depth: the API also needs its token).
fn blocked_route(matcher: Value) -> Value {
    json!({
        "name": "portcullis-blocked",
        "match": matcher,
        "direct_response": { "status": 404, "body": { "inline_string": "not found" } },
        "typed_per_filter_config": {
            WASM_FILTER: {
                "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                "disabled": true,
            }
        }
    })
}

/// A route to the sidecar. The filter is disabled on it: these requests carry no policy
/// decision (the sidecar authenticates what it serves itself).
fn sidecar_route(matcher: Value) -> Value {
    json!({
        "name": SIDECAR_ROUTE,
        "match": matcher,
        "route": { "cluster": SIDECAR_CLUSTER, "timeout": "30s" },
        "typed_per_filter_config": {
            WASM_FILTER: {
                "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                "disabled": true,
            }
        }
    })
}

/// Envoy cluster name of route number `index` (ids may hold any character).
pub fn route_cluster_name(index: usize, r: &Route) -> String {
    let positional = format!("route-{index}");
    if r.id == positional {
        return positional;
    }
    let mut name = format!("{positional}-");
    name.extend(r.id.chars().take(48).map(|c| {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c
        } else {
            '_'
        }
    }));
    name
}

fn route(index: usize, r: &Route) -> Value {
    let matcher = match &r.path {
        PathMatch::Prefix(p) => json!({ "prefix": p }),
        PathMatch::Path(p) => json!({ "path": p }),
        PathMatch::Regex(re) => json!({ "safe_regex": { "regex": re } }),
    };
    let mut action = Map::new();
    action.insert("cluster".into(), json!(route_cluster_name(index, r)));
    let timeout = r.timeout.unwrap_or(if r.websockets {
        Duration::ZERO
    } else {
        DEFAULT_UPSTREAM_TIMEOUT
    });
    action.insert("timeout".into(), json!(duration(timeout)));
    if let Some(idle) = r.idle_timeout {
        action.insert("idle_timeout".into(), json!(duration(idle)));
    }
    if let Some(p) = &r.prefix_rewrite {
        action.insert("prefix_rewrite".into(), json!(p));
    }
    if let Some((pattern, substitution)) = &r.regex_rewrite {
        action.insert(
            "regex_rewrite".into(),
            json!({ "pattern": { "regex": pattern }, "substitution": substitution }),
        );
    }
    match &r.host_rewrite {
        HostRewrite::Auto => {
            action.insert("auto_host_rewrite".into(), json!(true));
        }
        HostRewrite::Preserve => {}
        HostRewrite::Literal(h) => {
            action.insert("host_rewrite_literal".into(), json!(h));
        }
        HostRewrite::Header(h) => {
            action.insert("host_rewrite_header".into(), json!(h));
        }
        HostRewrite::PathRegex(pattern, substitution) => {
            action.insert(
                "host_rewrite_path_regex".into(),
                json!({ "pattern": { "regex": pattern }, "substitution": substitution }),
            );
        }
    }
    if r.websockets {
        action.insert(
            "upgrade_configs".into(),
            json!([{ "upgrade_type": "websocket", "enabled": true }]),
        );
    }
    let mut out = Map::new();
    out.insert("name".into(), json!(r.id));
    out.insert("match".into(), matcher);
    out.insert("route".into(), Value::Object(action));
    if !r.set_request_headers.is_empty() {
        out.insert(
            "request_headers_to_add".into(),
            headers_to_add(&r.set_request_headers),
        );
    }
    if !r.remove_request_headers.is_empty() {
        out.insert(
            "request_headers_to_remove".into(),
            json!(r.remove_request_headers),
        );
    }
    if !r.set_response_headers.is_empty() {
        out.insert(
            "response_headers_to_add".into(),
            headers_to_add(&r.set_response_headers),
        );
    }
    if !r.rewrite_response_headers.is_empty() {
        out.insert(
            "typed_per_filter_config".into(),
            json!({
                LUA_FILTER: {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute",
                    "source_code": { "inline_string": rewrite_response_headers_lua(r) },
                }
            }),
        );
    }
    Value::Object(out)
}

fn headers_to_add(headers: &[(String, String)]) -> Value {
    Value::Array(
        headers
            .iter()
            .map(|(k, v)| {
                json!({
                    "header": { "key": k, "value": v },
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                })
            })
            .collect(),
    )
}

/// A Lua string literal that cannot break out of its quotes: every byte other than a few
/// safe ASCII characters is written as a decimal escape.
fn lua_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b" ./:_-".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\{b:03}");
        }
    }
    out.push('"');
    out
}

/// Pomerium's `rewrite_response_headers`: replace a header's value, or only a prefix of it.
fn rewrite_response_headers_lua(r: &Route) -> String {
    let mut rules = String::new();
    for rw in &r.rewrite_response_headers {
        let prefix = rw.prefix.as_deref().map_or("nil".to_owned(), lua_string);
        let _ = writeln!(
            rules,
            "  {{ {}, {}, {} }},",
            lua_string(&rw.header.to_ascii_lowercase()),
            prefix,
            lua_string(&rw.value)
        );
    }
    format!(
        "local rules = {{\n{rules}}}\n\
         function envoy_on_response(handle)\n\
         \x20 local headers = handle:headers()\n\
         \x20 for _, rule in ipairs(rules) do\n\
         \x20   local v = headers:get(rule[1])\n\
         \x20   if v ~= nil then\n\
         \x20     if rule[2] == nil then\n\
         \x20       headers:replace(rule[1], rule[3])\n\
         \x20     elseif string.sub(v, 1, #rule[2]) == rule[2] then\n\
         \x20       headers:replace(rule[1], rule[3] .. string.sub(v, #rule[2] + 1))\n\
         \x20     end\n\
         \x20   end\n\
         \x20 end\n\
         end\n"
    )
}

// ---- clusters ---------------------------------------------------------------------------

fn clusters(d: &Deployment) -> Vec<Value> {
    let mut out = vec![sidecar_cluster(&d.sidecar)];
    out.extend(
        d.routes
            .iter()
            .enumerate()
            .map(|(i, r)| route_cluster(i, r)),
    );
    out
}

fn sidecar_cluster(endpoints: &[SocketAddress]) -> Value {
    let lb: Vec<Value> = endpoints
        .iter()
        .map(|a| json!({ "endpoint": { "address": socket_address(a) } }))
        .collect();
    json!({
        "name": SIDECAR_CLUSTER,
        "type": cluster_type(endpoints.iter()),
        "connect_timeout": "5s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {
            "cluster_name": SIDECAR_CLUSTER,
            "endpoints": [{ "lb_endpoints": lb }],
        },
        // Long-polls of the change stream must not be cut by an idle timeout shorter
        // than the sidecar's longest wait.
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "common_http_protocol_options": { "idle_timeout": "60s" },
                "explicit_http_config": { "http_protocol_options": {} },
            }
        }
    })
}

fn cluster_type<'a>(mut addrs: impl Iterator<Item = &'a SocketAddress>) -> &'static str {
    if addrs.all(SocketAddress::is_ip) {
        "STATIC"
    } else {
        "STRICT_DNS"
    }
}

fn route_cluster(index: usize, r: &Route) -> Value {
    let name = route_cluster_name(index, r);
    let lb: Vec<Value> =
        r.to.iter()
            .map(|t: &Target| {
                json!({
                    "endpoint": { "address": socket_address(&t.address) },
                    "load_balancing_weight": t.weight.max(1),
                })
            })
            .collect();
    let mut out = Map::new();
    out.insert("name".into(), json!(name));
    out.insert(
        "type".into(),
        json!(cluster_type(r.to.iter().map(|t| &t.address))),
    );
    out.insert("connect_timeout".into(), json!("10s"));
    out.insert("lb_policy".into(), json!("ROUND_ROBIN"));
    out.insert("dns_lookup_family".into(), json!("V4_PREFERRED"));
    out.insert(
        "load_assignment".into(),
        json!({ "cluster_name": name, "endpoints": [{ "lb_endpoints": lb }] }),
    );
    if let Some(tls) = &r.upstream_tls {
        out.insert("transport_socket".into(), upstream_tls(tls));
    }
    Value::Object(out)
}

fn upstream_tls(t: &UpstreamTls) -> Value {
    let mut ctx = Map::new();
    if let Some(sni) = &t.sni {
        ctx.insert("sni".into(), json!(sni));
    }
    let validation = if t.skip_verify {
        json!({})
    } else {
        let mut v = Map::new();
        v.insert("trusted_ca".into(), data_source(&t.ca));
        if let Some(sni) = &t.sni {
            v.insert(
                "match_typed_subject_alt_names".into(),
                json!([{ "san_type": "DNS", "matcher": { "exact": sni } }]),
            );
        }
        Value::Object(v)
    };
    ctx.insert(
        "common_tls_context".into(),
        json!({ "validation_context": validation, "alpn_protocols": ["http/1.1"] }),
    );
    ctx.insert(
        "@type".into(),
        json!("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"),
    );
    json!({ "name": "envoy.transport_sockets.tls", "typed_config": Value::Object(ctx) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Certificate, DataSource, ListenerTls};
    use crate::sample;

    fn tls() -> ListenerTls {
        ListenerTls::Tls {
            certificates: vec![
                Certificate {
                    server_names: vec!["*.example.com".into(), "app.example.com".into()],
                    chain: DataSource::File("/etc/portcullis/example.pem".into()),
                    key: DataSource::File("/etc/portcullis/example-key.pem".into()),
                },
                Certificate {
                    server_names: vec![],
                    chain: DataSource::File("/etc/portcullis/nameless.pem".into()),
                    key: DataSource::File("/etc/portcullis/nameless-key.pem".into()),
                },
            ],
            fallback: Certificate {
                server_names: vec![],
                chain: DataSource::Inline("-----BEGIN CERTIFICATE-----\n...".into()),
                key: DataSource::Inline("-----BEGIN PRIVATE KEY-----\n...".into()),
            },
        }
    }

    #[test]
    fn golden_plain() {
        let d = sample::deployment("/opt/portcullis/filter.wasm", ListenerTls::Plain);
        insta::assert_snapshot!(crate::to_yaml(&render(&d)).unwrap());
    }

    #[test]
    fn golden_tls() {
        let d = sample::deployment("/opt/portcullis/filter.wasm", tls());
        insta::assert_snapshot!(crate::to_yaml(&render(&d)).unwrap());
    }

    fn vhosts(v: &Value) -> Vec<Value> {
        v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
            ["route_config"]["virtual_hosts"]
            .as_array()
            .unwrap()
            .clone()
    }

    #[test]
    fn routes_keep_config_order_and_bundle_ids_after_sidecar_endpoints() {
        let d = sample::deployment("/f.wasm", ListenerTls::Plain);
        let v = render(&d);
        let vh = vhosts(&v);
        // authenticate host first: the internal API and health endpoints answered 404 by
        // Envoy itself, everything else to the sidecar.
        assert_eq!(
            vh[0]["domains"],
            json!(["authenticate.example.com", "authenticate.example.com:443"])
        );
        assert_eq!(
            vh[0]["routes"][0]["match"],
            json!({"prefix": "/.portcullis/"})
        );
        assert_eq!(vh[0]["routes"][0]["direct_response"]["status"], json!(404));
        assert_eq!(vh[0]["routes"][1]["match"], json!({"path": "/healthz"}));
        assert_eq!(vh[0]["routes"][2]["match"], json!({"path": "/readyz"}));
        assert_eq!(vh[0]["routes"][3]["match"], json!({"prefix": "/"}));
        assert_eq!(
            vh[0]["routes"][3]["route"]["cluster"],
            json!(SIDECAR_CLUSTER)
        );
        // app.example.com: internal API blocked, sidecar endpoints, then `admin` before
        // `app` (config order).
        let app = &vh[1];
        let names: Vec<&str> = app["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "portcullis-blocked",
                "portcullis-sidecar",
                "portcullis-sidecar",
                "portcullis-sidecar",
                "admin",
                "app"
            ]
        );
        assert_eq!(
            app["routes"][0]["match"],
            json!({"prefix": "/.portcullis/"})
        );
        assert_eq!(app["routes"][1]["match"], json!({"prefix": "/.pomerium/"}));
        // the filter is off on sidecar routes only.
        assert_eq!(
            app["routes"][1]["typed_per_filter_config"][WASM_FILTER]["disabled"],
            json!(true)
        );
        assert!(
            app["routes"][4]["typed_per_filter_config"]
                .get(WASM_FILTER)
                .is_none()
        );
        // non-default port: only host:port.
        assert_eq!(vh[2]["domains"], json!(["api.example.com:8443"]));
        // Wildcard hosts: the catch-all virtual host, matching `:authority` per route.
        assert_eq!(vh[3]["domains"], json!(["*"]));
        assert_eq!(vh[3]["routes"][0]["name"], json!("portcullis-blocked"));
        assert_eq!(vh[3]["routes"][1]["name"], json!(SIDECAR_ROUTE));
        assert_eq!(vh[3]["routes"][4]["name"], json!("exact"));
        assert_eq!(
            vh[3]["routes"][4]["match"]["headers"][0]["string_match"]["safe_regex"]["regex"],
            json!("^(?i).*\\.corp\\.example\\.com(:443)?$")
        );
    }

    #[test]
    fn wildcard_authority_regex_follows_pomerium() {
        let h = |host: &str, port| ExternalHost {
            https: true,
            host: host.into(),
            port,
        };
        assert_eq!(
            authority_regex(&h("app-*.example.com", None)),
            "^(?i)app-.*\\.example\\.com(:443)?$"
        );
        assert_eq!(authority_regex(&h("*", Some(8443))), "^(?i).*:8443$");
        // Regex metacharacters in a host cannot widen the match.
        assert_eq!(
            authority_regex(&h("a+b.*", None)),
            "^(?i)a\\+b\\..*(:443)?$"
        );
    }

    #[test]
    fn route_options_reach_envoy() {
        let d = sample::deployment("/f.wasm", ListenerTls::Plain);
        let vh = vhosts(&render(&d));
        let admin = &vh[1]["routes"][4];
        assert_eq!(admin["route"]["prefix_rewrite"], json!("/"));
        assert_eq!(admin["route"]["timeout"], json!("1.5s"));
        assert_eq!(admin["route"]["idle_timeout"], json!("300s"));
        assert_eq!(admin["route"]["auto_host_rewrite"], json!(true));
        assert_eq!(admin["request_headers_to_remove"], json!(["x-debug"]));
        let app = &vh[1]["routes"][5];
        assert_eq!(
            app["route"]["timeout"],
            json!("0s"),
            "websocket routes have no upstream timeout"
        );
        assert_eq!(app["route"]["upgrade_configs"][0]["enabled"], json!(true));
        assert!(
            app["route"].get("auto_host_rewrite").is_none(),
            "preserve_host_header"
        );
        let lua = app["typed_per_filter_config"][LUA_FILTER]["source_code"]["inline_string"]
            .as_str()
            .unwrap();
        // The quote in the configured prefix cannot end the Lua string.
        assert!(lua.contains("\\034x"), "{lua}");
        assert!(!lua.contains("/\"x"));
        let api = &vh[2]["routes"][4];
        assert_eq!(api["match"]["safe_regex"]["regex"], json!("^/v[0-9]+/.*$"));
        assert_eq!(api["route"]["host_rewrite_literal"], json!("api.internal"));
    }

    #[test]
    fn wasm_filter_fails_reload_never_open() {
        let d = sample::deployment("/f.wasm", ListenerTls::Plain);
        let text = crate::to_yaml(&render(&d)).unwrap();
        assert!(text.contains("failure_policy: FAIL_RELOAD"));
        assert!(!text.contains(concat!("FAIL", "_OPEN")));
        assert!(text.contains("runtime: envoy.wasm.runtime.v8"));
    }

    #[test]
    fn weighted_upstreams_and_tls_origination() {
        let d = sample::deployment("/f.wasm", ListenerTls::Plain);
        let v = render(&d);
        let clusters = v["static_resources"]["clusters"].as_array().unwrap();
        assert_eq!(clusters[0]["name"], json!(SIDECAR_CLUSTER));
        let admin = &clusters[1];
        let eps = &admin["load_assignment"]["endpoints"][0]["lb_endpoints"];
        assert_eq!(eps[0]["load_balancing_weight"], json!(3));
        assert_eq!(eps[1]["load_balancing_weight"], json!(1));
        assert_eq!(admin["type"], json!("STATIC"));
        let api = &clusters[3];
        assert_eq!(api["type"], json!("STRICT_DNS"));
        assert_eq!(
            api["transport_socket"]["typed_config"]["sni"],
            json!("api.internal")
        );
    }

    #[test]
    fn tls_listener_has_sni_chains_and_a_fallback_default_chain() {
        let d = sample::deployment("/f.wasm", tls());
        let v = render(&d);
        let l = &v["static_resources"]["listeners"][0];
        let chains = l["filter_chains"].as_array().unwrap();
        assert_eq!(
            chains.len(),
            1,
            "only the certificate with names gets an SNI chain"
        );
        assert_eq!(
            chains[0]["filter_chain_match"]["server_names"],
            json!(["*.example.com", "app.example.com"])
        );
        let default_certs = &l["default_filter_chain"]["transport_socket"]["typed_config"]["common_tls_context"]
            ["tls_certificates"];
        assert_eq!(default_certs.as_array().unwrap().len(), 2);
        assert_eq!(
            default_certs[1]["certificate_chain"]["inline_string"],
            json!("-----BEGIN CERTIFICATE-----\n...")
        );
    }
}
