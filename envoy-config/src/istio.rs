//! [`Deployment`] → Istio manifests.
//!
//! - `Secret` holding the Pomerium `config.yaml` (it carries secrets: not a ConfigMap);
//! - `Deployment` + `Service` for the sidecar (listening on all interfaces of its pod);
//! - `WasmPlugin` loading the filter into the selected gateway (or workloads) from an OCI
//!   image or an HTTP(S) URL. Istio has no `FAIL_RELOAD`: we use `failStrategy: FAIL_CLOSE`
//!   (a broken VM answers errors until the pod restarts; never fail open);
//! - `VirtualService`s sending the authenticate host and every route host's
//!   `/.pomerium/…` and `/.well-known/pomerium/…` to the sidecar Service.
//!
//! The sidecar is an ordinary in-mesh `Service`, so Istio already creates its outbound
//! cluster (`outbound|<port>||<svc>.<ns>.svc.cluster.local`); the plugin configuration names
//! that cluster, and no `EnvoyFilter` is needed. A `ServiceEntry` is only emitted when the
//! sidecar runs outside the mesh (`external_sidecar`).

use serde_json::{Value, json};

use crate::Error;
use crate::model::{Deployment, SIDECAR_ROUTE, SocketAddress};

/// Istio-specific choices (command-line flags of `envoy-config istio`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IstioOptions {
    /// Namespace of everything we create.
    pub namespace: String,
    /// Filter module: `oci://…`, `https://…`, or `file://…`.
    pub wasm_url: String,
    /// Sidecar container image.
    pub sidecar_image: String,
    /// Sidecar replicas (use Redis as the databroker for more than one).
    pub replicas: u32,
    /// `WasmPlugin.spec.selector.matchLabels` (e.g. `istio=ingressgateway`).
    pub selector: Vec<(String, String)>,
    /// Gateways the `VirtualService`s bind to (`namespace/name`).
    pub gateways: Vec<String>,
    /// Sidecar reachable outside the mesh at this address (emits a `ServiceEntry`).
    pub external_sidecar: Option<SocketAddress>,
    /// The `config.yaml` text to put in the Secret.
    pub config_yaml: String,
    /// Plugin configuration (JSON object text) with the sidecar cluster left to us.
    pub plugin_config: String,
}

/// Port the sidecar listens on inside its pod.
pub const SIDECAR_PORT: u16 = 5080;
const NAME: &str = "portcullis-sidecar";

/// Host name of the sidecar inside the mesh.
pub fn sidecar_host(o: &IstioOptions) -> String {
    match &o.external_sidecar {
        Some(a) => a.host.clone(),
        None => format!("{NAME}.{}.svc.cluster.local", o.namespace),
    }
}

/// Port of the sidecar inside the mesh.
pub fn sidecar_port(o: &IstioOptions) -> u16 {
    o.external_sidecar.as_ref().map_or(SIDECAR_PORT, |a| a.port)
}

/// Istio's name for the outbound cluster of the sidecar.
pub fn sidecar_cluster(o: &IstioOptions) -> String {
    format!("outbound|{}||{}", sidecar_port(o), sidecar_host(o))
}

/// Render every manifest, in apply order, as `(file name, object)`.
pub fn render(d: &Deployment, o: &IstioOptions) -> Result<Vec<(String, Value)>, Error> {
    let labels =
        json!({ "app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "portcullis" });
    let mut out = Vec::new();
    let mut plugin: Value = serde_json::from_str(&o.plugin_config)
        .map_err(|e| Error::Unsupported(format!("plugin configuration is not JSON: {e}")))?;
    let Some(obj) = plugin.as_object_mut() else {
        return Err(Error::Unsupported(
            "plugin configuration is not a JSON object".into(),
        ));
    };
    obj.insert("sidecar_cluster".into(), json!(sidecar_cluster(o)));
    obj.insert(
        "sidecar_authority".into(),
        json!(format!("{}:{}", sidecar_host(o), sidecar_port(o))),
    );

    if o.external_sidecar.is_none() {
        out.push((
            "10-secret.yaml".to_owned(),
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": { "name": "portcullis-config", "namespace": o.namespace, "labels": labels },
                "type": "Opaque",
                "stringData": { "config.yaml": o.config_yaml },
            }),
        ));
        out.push(("20-deployment.yaml".to_owned(), deployment(o, &labels)));
        out.push((
            "30-service.yaml".to_owned(),
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": { "name": NAME, "namespace": o.namespace, "labels": labels },
                "spec": {
                    "selector": { "app.kubernetes.io/name": NAME },
                    "ports": [{ "name": "http", "port": SIDECAR_PORT, "targetPort": "http", "appProtocol": "http" }],
                }
            }),
        ));
    } else if let Some(ext) = &o.external_sidecar {
        let resolution = if ext.is_ip() { "STATIC" } else { "DNS" };
        let mut spec = json!({
            "hosts": [ext.host],
            "location": "MESH_EXTERNAL",
            "resolution": resolution,
            "ports": [{ "number": ext.port, "name": "http", "protocol": "HTTP" }],
        });
        if ext.is_ip() {
            // STATIC resolution needs endpoints; the "host" is then only a name.
            spec = json!({
                "hosts": [format!("{NAME}.portcullis.internal")],
                "addresses": [ext.host],
                "location": "MESH_EXTERNAL",
                "resolution": resolution,
                "endpoints": [{ "address": ext.host }],
                "ports": [{ "number": ext.port, "name": "http", "protocol": "HTTP" }],
            });
        }
        out.push((
            "30-serviceentry.yaml".to_owned(),
            json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "ServiceEntry",
                "metadata": { "name": NAME, "namespace": o.namespace, "labels": labels },
                "spec": spec,
            }),
        ));
    }

    let selector: serde_json::Map<String, Value> = o
        .selector
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    out.push((
        "40-wasmplugin.yaml".to_owned(),
        json!({
            "apiVersion": "extensions.istio.io/v1alpha1",
            "kind": "WasmPlugin",
            "metadata": { "name": "portcullis", "namespace": o.namespace, "labels": labels },
            "spec": {
                "selector": { "matchLabels": selector },
                "url": o.wasm_url,
                "imagePullPolicy": "IfNotPresent",
                // Authenticate before Istio's own authorization filters.
                "phase": "AUTHN",
                // Istio has no FAIL_RELOAD; FAIL_CLOSE is the safe one.
                "failStrategy": "FAIL_CLOSE",
                "type": "HTTP",
                "vmConfig": { "env": [] },
                "pluginConfig": plugin,
            }
        }),
    ));

    let dest = json!([{ "destination": { "host": sidecar_host(o), "port": { "number": sidecar_port(o) } } }]);
    out.push((
        "50-virtualservice-authenticate.yaml".to_owned(),
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": { "name": "portcullis-authenticate", "namespace": o.namespace, "labels": labels },
            "spec": {
                "hosts": [d.authenticate.host],
                "gateways": o.gateways,
                // Istio names the Envoy route after this: the filter passes `portcullis-sidecar`
                // routes to the sidecar untouched.
                "http": [{ "name": SIDECAR_ROUTE, "route": dest }],
            }
        }),
    ));
    let mut hosts: Vec<String> = d
        .routes
        .iter()
        .map(|r| r.from.host.clone())
        .filter(|h| *h != d.authenticate.host)
        .collect();
    hosts.sort();
    hosts.dedup();
    if !hosts.is_empty() {
        out.push((
            "60-virtualservice-endpoints.yaml".to_owned(),
            json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": { "name": "portcullis-endpoints", "namespace": o.namespace, "labels": labels },
                "spec": {
                    "hosts": hosts,
                    "gateways": o.gateways,
                    "http": [{
                        "name": SIDECAR_ROUTE,
                        "match": [
                            { "uri": { "prefix": "/.pomerium/" } },
                            { "uri": { "exact": "/.pomerium" } },
                            { "uri": { "prefix": "/.well-known/pomerium/" } },
                        ],
                        "route": dest,
                    }],
                }
            }),
        ));
    }
    Ok(out)
}

fn deployment(o: &IstioOptions, labels: &Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": NAME, "namespace": o.namespace, "labels": labels },
        "spec": {
            "replicas": o.replicas,
            "selector": { "matchLabels": { "app.kubernetes.io/name": NAME } },
            "template": {
                "metadata": { "labels": labels },
                "spec": {
                    "containers": [{
                        "name": "sidecar",
                        "image": o.sidecar_image,
                        "args": ["--config", "/etc/portcullis/config.yaml"],
                        // Pomerium-style override: listen on the pod's interfaces.
                        "env": [{ "name": "SIDECAR_ADDRESS", "value": format!("0.0.0.0:{SIDECAR_PORT}") }],
                        "ports": [{ "name": "http", "containerPort": SIDECAR_PORT }],
                        "readinessProbe": { "httpGet": { "path": "/readyz", "port": "http" } },
                        "livenessProbe": { "httpGet": { "path": "/healthz", "port": "http" } },
                        "volumeMounts": [{ "name": "config", "mountPath": "/etc/portcullis", "readOnly": true }],
                        "securityContext": {
                            "runAsNonRoot": true,
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                        },
                    }],
                    "volumes": [{ "name": "config", "secret": { "secretName": "portcullis-config" } }],
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ListenerTls;
    use crate::sample;

    fn options(external: Option<SocketAddress>) -> IstioOptions {
        IstioOptions {
            namespace: "portcullis".into(),
            wasm_url: "oci://registry.example.com/portcullis/filter:0.1.0".into(),
            sidecar_image: "registry.example.com/portcullis/sidecar:0.1.0".into(),
            replicas: 2,
            selector: vec![("istio".into(), "ingressgateway".into())],
            gateways: vec!["istio-system/ingressgateway".into()],
            external_sidecar: external,
            config_yaml: "authenticate_service_url: https://authenticate.example.com\n".into(),
            plugin_config: sample::deployment("/f.wasm", ListenerTls::Plain)
                .wasm
                .configuration,
        }
    }

    fn all_yaml(docs: &[(String, Value)]) -> String {
        docs.iter()
            .map(|(name, v)| format!("# {name}\n{}", crate::to_yaml(v).unwrap()))
            .collect::<Vec<_>>()
            .join("---\n")
    }

    #[test]
    fn golden_in_mesh_sidecar() {
        let d = sample::deployment("/f.wasm", ListenerTls::Plain);
        insta::assert_snapshot!(all_yaml(&render(&d, &options(None)).unwrap()));
    }

    #[test]
    fn golden_external_sidecar() {
        let d = sample::deployment("/f.wasm", ListenerTls::Plain);
        let docs = render(&d, &options(Some(SocketAddress::new("10.1.2.3", 5080)))).unwrap();
        insta::assert_snapshot!(all_yaml(&docs));
    }

    #[test]
    fn wasm_plugin_names_istio_cluster_and_fails_closed() {
        let d = sample::deployment("/f.wasm", ListenerTls::Plain);
        let docs = render(&d, &options(None)).unwrap();
        let (_, plugin) = docs.iter().find(|(n, _)| n.contains("wasmplugin")).unwrap();
        assert_eq!(plugin["spec"]["failStrategy"], "FAIL_CLOSE");
        assert_eq!(
            plugin["spec"]["pluginConfig"]["sidecar_cluster"],
            "outbound|5080||portcullis-sidecar.portcullis.svc.cluster.local"
        );
        assert_eq!(
            plugin["spec"]["pluginConfig"]["sidecar_route_name"],
            "portcullis-sidecar"
        );
        for (_, vs) in docs.iter().filter(|(n, _)| n.contains("virtualservice")) {
            assert_eq!(vs["spec"]["http"][0]["name"], "portcullis-sidecar", "{vs}");
        }
        let kinds: Vec<&str> = docs
            .iter()
            .map(|(_, v)| v["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "Secret",
                "Deployment",
                "Service",
                "WasmPlugin",
                "VirtualService",
                "VirtualService"
            ]
        );
        let text = all_yaml(&docs);
        assert!(!text.contains(concat!("FAIL", "_OPEN")));
    }

    #[test]
    fn bad_plugin_config_is_an_error() {
        let d = sample::deployment("/f.wasm", ListenerTls::Plain);
        let mut o = options(None);
        o.plugin_config = "[1]".into();
        assert!(render(&d, &o).is_err());
        o.plugin_config = "{".into();
        assert!(render(&d, &o).is_err());
    }
}
