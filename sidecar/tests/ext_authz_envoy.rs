//! The ext_authz listener behind real Envoy (`$PORTCULLIS_ENVOY`, default
//! `.venv/bin/envoy`): `envoy.filters.http.ext_authz` in HTTP-service mode and in gRPC mode,
//! in front of an echo upstream that reports the headers it received. Checks allow (JWT and
//! claim header added, our cookie stripped, spoofed identity headers removed), the sign-in
//! redirect, denial and an unknown route. The Envoy snippets are the ones
//! docs/ext_authz.md shows.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "ext_authz/shared.rs"]
mod shared;
#[path = "core/support.rs"]
mod support;

use portcullis_common::Secret;
use serde_json::Value;
use shared::*;
use sidecar::bundle::Bundle;
use sidecar::session::Session;
use sidecar::settings::Settings;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

fn envoy_path() -> PathBuf {
    match std::env::var_os("PORTCULLIS_ENVOY") {
        Some(p) => p.into(),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/envoy"),
    }
}

/// The ext_authz HTTP filter exactly as docs/ext_authz.md shows it (`{token}` filled in).
const HTTP_FILTER: &str = r#"          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              status_on_error: { code: 503 }
              # What the check request may carry (Envoy always adds :method, :path,
              # :authority and authorization).
              allowed_headers:
                patterns:
                  - exact: cookie
                  - exact: accept
                  - exact: x-forwarded-proto
                  - exact: x-request-id
                  - exact: origin
                  - exact: access-control-request-method
                  - prefix: x-pomerium-
              http_service:
                server_uri:
                  uri: http://127.0.0.1:5090
                  cluster: portcullis-ext-authz
                  timeout: 1s
                path_prefix: /ext_authz
                authorization_request:
                  headers_to_add:
                    - key: x-portcullis-ext-authz-token
                      value: "{token}"
                authorization_response:
                  # Copied onto the upstream request on allow (our JWT, claim headers, the
                  # Cookie header without our cookie).
                  allowed_upstream_headers:
                    patterns:
                      - exact: cookie
                      - prefix: x-pomerium-
                      - exact: x-email
"#;

/// The ext_authz gRPC filter exactly as docs/ext_authz.md shows it.
const GRPC_FILTER: &str = r#"          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              status_on_error: { code: 503 }
              grpc_service:
                envoy_grpc:
                  cluster_name: portcullis-ext-authz-grpc
                timeout: 1s
                initial_metadata:
                  - key: x-portcullis-ext-authz-token
                    value: "{token}"
"#;

/// The clusters of the ext_authz listener (HTTP/1.1 for the HTTP service, HTTP/2 for gRPC).
const CLUSTERS: &str = r#"    - name: portcullis-ext-authz
      type: STATIC
      connect_timeout: 0.25s
      load_assignment:
        cluster_name: portcullis-ext-authz
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: { address: 127.0.0.1, port_value: {port} }
    - name: portcullis-ext-authz-grpc
      type: STATIC
      connect_timeout: 0.25s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {}
      load_assignment:
        cluster_name: portcullis-ext-authz-grpc
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: { address: 127.0.0.1, port_value: {port} }
"#;

fn bootstrap(filter: &str, authz: SocketAddr, upstream: SocketAddr, token: &str) -> String {
    let filter = filter
        .replace("{token}", token)
        .replace("127.0.0.1:5090", &authz.to_string());
    let clusters = CLUSTERS.replace("{port}", &authz.port().to_string());
    format!(
        r#"admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: 0 }}
static_resources:
  listeners:
    - name: main
      address:
        socket_address: {{ address: 127.0.0.1, port_value: 0 }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: {{ prefix: "/" }}
                          route: {{ cluster: upstream }}
                http_filters:
{filter_indented}                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: upstream
      type: STATIC
      connect_timeout: 0.25s
      load_assignment:
        cluster_name: upstream
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: 127.0.0.1, port_value: {up} }}
{clusters}"#,
        // The snippets are indented for a plain listener; nest them under this one.
        filter_indented = filter
            .lines()
            .map(|l| format!("        {l}\n"))
            .collect::<String>(),
        up = upstream.port(),
    )
}

/// Envoy as a child process, killed on drop.
struct Envoy {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Envoy {
    async fn start(bootstrap: &str) -> Envoy {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-ext-authz-envoy-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("envoy.yaml"), bootstrap).unwrap();
        let child = Command::new(envoy_path())
            .arg("-c")
            .arg(dir.join("envoy.yaml"))
            .args(["--concurrency", "1", "--disable-hot-restart"])
            .args(["--log-level", "info", "--file-flush-interval-msec", "50"])
            .arg("--admin-address-path")
            .arg(dir.join("admin"))
            .arg("--log-path")
            .arg(dir.join("envoy.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut e = Envoy {
            child,
            dir,
            addr: "127.0.0.1:0".parse().unwrap(),
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = e.child.try_wait().unwrap() {
                panic!("envoy exited with {status}:\n{}", e.log());
            }
            assert!(Instant::now() < deadline, "envoy not ready:\n{}", e.log());
            if let Ok(a) = std::fs::read_to_string(e.dir.join("admin"))
                && let Ok(admin) = a.trim().parse::<SocketAddr>()
                && let Ok(r) = client.get(format!("http://{admin}/ready")).send().await
                && r.status() == 200
            {
                let listeners = client
                    .get(format!("http://{admin}/listeners"))
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                e.addr = listeners
                    .lines()
                    .find_map(|l| l.strip_prefix("main::"))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                return e;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The sidecar's ext_authz listener with users alice (admins), bob, and eve (admins, an
/// email no header can carry).
async fn ext_authz() -> (SocketAddr, Session, Session, Session) {
    let config = policy_compiler::config::load_str("config.yaml", &config_text("", ""), &|_| None)
        .unwrap()
        .config;
    let settings = Settings::from_config(&config, None).unwrap();
    let idp = FakeIdp::new();
    idp.add_user("alice", "alice@example.com", &["admins"]);
    idp.add_user("bob", "bob@example.com", &[]);
    idp.add_user("eve", "eve\u{1}@example.com", &["admins"]);
    let state = app(memory_store(), idp.clone(), settings);
    state.bundle.replace(Bundle::from_config(&config).unwrap());
    let alice = login(&state, &idp, "alice", Default::default()).await;
    let bob = login(&state, &idp, "bob", Default::default()).await;
    let eve = login(&state, &idp, "eve", Default::default()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = sidecar::ext_authz::router(state);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, alice, bob, eve)
}

async fn run(mode: &str, filter: &str) {
    if !envoy_path().exists() {
        eprintln!(
            "SKIPPED: no Envoy at {} (set PORTCULLIS_ENVOY or run `make deps`)",
            envoy_path().display()
        );
        return;
    }
    let (authz, alice, bob, eve) = ext_authz().await;
    let upstream = echo_upstream().await;
    let token = portcullis_common::api::api_token(&Secret::from_bytes(SHARED));
    let envoy = Envoy::start(&bootstrap(filter, authz, upstream, &token)).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |host: &'static str, path: &'static str, headers: Vec<(&'static str, String)>| {
        let mut r = client
            .get(format!("http://{}{path}", envoy.addr))
            .header("host", host);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.send()
    };

    // Allowed: identity added, our cookie gone, spoofed identity headers gone.
    let r = get(
        "app.example.com",
        "/x?y=1",
        vec![
            ("cookie", format!("a=1; {COOKIE}={}", seal(&alice))),
            ("x-pomerium-claim-groups", "spoofed".into()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{mode}: {}", envoy.log());
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["cookie"], "a=1", "{mode}: {seen}");
    let jwt = seen["x-pomerium-jwt-assertion"]
        .as_str()
        .unwrap_or_else(|| panic!("{mode}: {seen}"));
    assert_eq!(jwt_payload(jwt)["sub"], "alice");
    assert_eq!(jwt_payload(jwt)["aud"], "app.example.com");
    assert_eq!(seen["x-email"], "alice@example.com", "{mode}: {seen}");
    assert!(
        seen.get("x-pomerium-claim-groups").is_none(),
        "{mode}: {seen}"
    );
    assert!(
        seen.get("x-portcullis-ext-authz-token").is_none(),
        "{mode}: {seen}"
    );

    // Only our cookie: the upstream gets no Cookie header at all; a spoofed JWT is replaced.
    let r = get(
        "app.example.com",
        "/",
        vec![
            ("cookie", format!("{COOKIE}={}", seal(&alice))),
            ("x-pomerium-jwt-assertion", "spoofed".into()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{mode}");
    let seen: Value = r.json().await.unwrap();
    assert!(seen.get("cookie").is_none(), "{mode}: {seen}");
    assert_ne!(
        seen["x-pomerium-jwt-assertion"], "spoofed",
        "{mode}: {seen}"
    );

    // No session: 302 to sign in (Envoy saw plain HTTP, so the return URL is http://).
    let r = get("app.example.com", "/p?q=1", vec![]).await.unwrap();
    assert_eq!(r.status(), 302, "{mode}");
    let loc = r.headers()["location"].to_str().unwrap();
    assert!(
        loc.starts_with(
            "https://auth.example.com/.pomerium/sign_in?pomerium_redirect_uri=http%3A%2F%2Fapp.example.com%2Fp%3Fq%3D1&pomerium_issued="
        ),
        "{mode}: {loc}"
    );

    // Denied: 403 page from the sidecar.
    let r = get(
        "app.example.com",
        "/",
        vec![("cookie", format!("{COOKIE}={}", seal(&bob)))],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403, "{mode}");
    assert!(r.text().await.unwrap().contains("not-allowed"), "{mode}");

    // Unknown route.
    let r = get("nope.example.com", "/", vec![]).await.unwrap();
    assert_eq!(r.status(), 404, "{mode}");

    // A cookie header that is not visible ASCII (UTF-8 here) still loses our cookie, and
    // a spoofed claim header with such a value is still removed, public route included.
    for host in ["public.example.com", "app.example.com"] {
        let r = client
            .get(format!("http://{}/", envoy.addr))
            .header("host", host)
            .header(
                "cookie",
                reqwest::header::HeaderValue::from_bytes(
                    format!("{COOKIE}={}; lang=José", seal(&alice)).as_bytes(),
                )
                .unwrap(),
            )
            .header(
                "x-pomerium-claim-foo",
                reqwest::header::HeaderValue::from_bytes("José".as_bytes()).unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{mode} {host}");
        let seen: Value = r.json().await.unwrap();
        assert_eq!(seen["cookie"], "lang=José", "{mode} {host}: {seen}");
        assert!(
            seen.get("x-pomerium-claim-foo").is_none(),
            "{mode} {host}: {seen}"
        );
    }
    // Several Cookie headers (HTTP/1.1; HTTP/2 crumbs alike): ours goes, the others stay
    // exactly as sent (`prefs=a,b` is one cookie).
    let r = client
        .get(format!("http://{}/", envoy.addr))
        .header("host", "app.example.com")
        .header("cookie", "x=1")
        .header("cookie", format!("{COOKIE}={}", seal(&alice)))
        .header("cookie", "prefs=a,b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{mode}: {}", envoy.log());
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["cookie"], "x=1; prefs=a,b", "{mode}: {seen}");
    // The same on a public route (no session read): ours still never goes upstream.
    let r = client
        .get(format!("http://{}/", envoy.addr))
        .header("host", "public.example.com")
        .header("cookie", "x=1")
        .header("cookie", format!("{COOKIE}={}", seal(&alice)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{mode}");
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["cookie"], "x=1", "{mode}: {seen}");

    // Not UTF-8 at all (Latin-1): never our cookie upstream.
    let mut latin1 = format!("{COOKIE}={}; lang=Jos", seal(&alice)).into_bytes();
    latin1.push(0xe9);
    let r = client
        .get(format!("http://{}/", envoy.addr))
        .header("host", "public.example.com")
        .header(
            "cookie",
            reqwest::header::HeaderValue::from_bytes(&latin1).unwrap(),
        )
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    eprintln!("{mode}: latin-1 cookie: {status} {body}");
    assert!(!body.contains(COOKIE), "{mode}: {status} {body}");

    // A claim value no header can carry: not set, and the client's header of that name
    // removed all the same.
    let r = get(
        "app.example.com",
        "/",
        vec![
            ("cookie", format!("{COOKIE}={}", seal(&eve))),
            ("x-email", "ceo@example.com".into()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{mode}");
    let seen: Value = r.json().await.unwrap();
    assert!(seen.get("x-email").is_none(), "{mode}: {seen}");
    assert_eq!(
        jwt_payload(seen["x-pomerium-jwt-assertion"].as_str().unwrap())["sub"],
        "eve"
    );

    // Dot segments after a sidecar prefix (Envoy here does not normalise paths): never
    // exempt, refused.
    for path in [
        "/.pomerium/../secret",
        "/.pomerium/%2e%2e/secret",
        "/.well-known/pomerium/../secret",
    ] {
        let answer = raw_http(
            envoy.addr,
            format!("GET {path} HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 400 ") && answer.contains("non-normal-path"),
            "{mode} {path}: {answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_ext_authz_http_service() {
    run("http", HTTP_FILTER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_ext_authz_grpc_service() {
    run("grpc", GRPC_FILTER).await;
}
