//! The ext_authz listener behind real nginx (`auth_request`; `nginx` on `PATH` or
//! `$PORTCULLIS_NGINX`), configured with the snippet docs/ext_authz.md shows: allow with the
//! identity JWT and claim header, our cookie stripped, a spoofed JWT dropped, the sign-in
//! redirect for browsers and 401 for API calls, denial; a request is judged by the host
//! nginx chose its `server` by (absolute-form request lines, unknown hosts) and by a path
//! nginx and the upstream read alike (dot segments, escapes).

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
use sidecar::settings::Settings;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// The `server` block docs/ext_authz.md shows (`{token}`, ports and `{app}` filled in).
const SERVER: &str = r#"
upstream portcullis_ext_authz {
    server 127.0.0.1:5090;
    keepalive 16;
}

server {
    listen 127.0.0.1:{listen};
    server_name app.example.com;

    location / {
        auth_request /.portcullis/auth;
        # Allowed: the upstream gets our Cookie header (ours removed), the identity JWT
        # and one header per jwt_claims_headers entry. An empty value drops the header,
        # so a client's own x-pomerium-jwt-assertion never passes.
        auth_request_set $portcullis_cookie $upstream_http_x_portcullis_cookie;
        auth_request_set $portcullis_jwt $upstream_http_x_pomerium_jwt_assertion;
        auth_request_set $portcullis_email $upstream_http_x_email;
        proxy_set_header Cookie $portcullis_cookie;
        proxy_set_header X-Pomerium-Jwt-Assertion $portcullis_jwt;
        proxy_set_header X-Email $portcullis_email;
        # Sign-in: browsers are redirected, API clients get the 401.
        auth_request_set $portcullis_sign_in $upstream_http_x_portcullis_sign_in_url;
        error_page 401 = @portcullis_sign_in;
        proxy_pass http://{app};
    }

    location = /.portcullis/auth {
        internal;
        proxy_pass http://portcullis_ext_authz/nginx/auth;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_set_header X-Original-URI $request_uri;
        proxy_set_header X-Original-Method $request_method;
        proxy_set_header X-Original-Host $host;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Portcullis-Ext-Authz-Token "{token}";
    }

    location @portcullis_sign_in {
        if ($portcullis_sign_in = "") {
            return 401;
        }
        return 302 $portcullis_sign_in;
    }
}

# Any other host: no answer (never judged as a host the client merely names).
server {
    listen 127.0.0.1:{listen} default_server;
    server_name _;
    return 444;
}
"#;

fn nginx_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PORTCULLIS_NGINX") {
        return Some(p.into());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin")])
            .map(|d| d.join("nginx"))
            .find(|p| p.is_file())
    })
}

/// nginx in the foreground as a child process, killed on drop.
struct Nginx {
    child: Child,
    dir: TempDir,
    addr: SocketAddr,
}

impl Nginx {
    async fn start(bin: &PathBuf, server: &str) -> Nginx {
        let dir = TempDir::new("nginx");
        let d = dir.0.display();
        let port = free_port();
        let conf = format!(
            r#"worker_processes 1;
daemon off;
# One process: killing the child stops nginx (a master's workers would outlive a SIGKILL).
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
{server}
}}
"#,
            server = server.replace("{listen}", &port.to_string()),
        );
        std::fs::write(dir.0.join("nginx.conf"), conf).unwrap();
        let child = Command::new(bin)
            .arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(dir.0.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut n = Nginx {
            child,
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(n.addr).await.is_err() {
            if let Some(status) = n.child.try_wait().unwrap() {
                panic!("nginx exited with {status}:\n{}", n.log());
            }
            assert!(Instant::now() < deadline, "nginx not up:\n{}", n.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request() {
    let Some(bin) = nginx_path() else {
        eprintln!("SKIPPED: no nginx on PATH (apt-get install nginx, or set PORTCULLIS_NGINX)");
        return;
    };
    let config = policy_compiler::config::load_str("config.yaml", &config_text("", ""), &|_| None)
        .unwrap()
        .config;
    let settings = Settings::from_config(&config, None).unwrap();
    let idp = FakeIdp::new();
    idp.add_user("alice", "alice@example.com", &["admins"]);
    idp.add_user("bob", "bob@example.com", &[]);
    let state = app(memory_store(), idp.clone(), settings);
    state.bundle.replace(Bundle::from_config(&config).unwrap());
    let alice = login(&state, &idp, "alice", Default::default()).await;
    let bob = login(&state, &idp, "bob", Default::default()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authz = listener.local_addr().unwrap();
    let router = sidecar::ext_authz::router(state);
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let upstream = echo_upstream().await;
    let token = portcullis_common::api::api_token(&Secret::from_bytes(SHARED));
    let server = SERVER
        .replace("127.0.0.1:5090", &authz.to_string())
        .replace("{token}", &token)
        .replace("{app}", &upstream.to_string());
    let nginx = Nginx::start(&bin, &server).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &'static str, headers: Vec<(&'static str, String)>| {
        let mut r = client
            .get(format!("http://{}{path}", nginx.addr))
            .header("host", "app.example.com");
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.send()
    };

    // Allowed: identity added, our cookie removed, the client's JWT replaced.
    let r = get(
        "/x?y=1",
        vec![
            ("cookie", format!("a=1; {COOKIE}={}", seal(&alice))),
            ("x-pomerium-jwt-assertion", "spoofed".into()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{}", nginx.log());
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["cookie"], "a=1", "{seen}");
    let jwt = seen["x-pomerium-jwt-assertion"].as_str().unwrap();
    assert_eq!(jwt_payload(jwt)["sub"], "alice");
    assert_eq!(seen["x-email"], "alice@example.com");
    assert!(seen.get("x-portcullis-ext-authz-token").is_none(), "{seen}");

    // Only our cookie: no Cookie header upstream.
    let r = get("/", vec![("cookie", format!("{COOKIE}={}", seal(&alice)))])
        .await
        .unwrap();
    let seen: Value = r.json().await.unwrap();
    assert!(seen.get("cookie").is_none(), "{seen}");

    // Sign-in: a browser is redirected to the signed URL, an API client gets 401.
    let r = get("/p?q=1", vec![]).await.unwrap();
    assert_eq!(r.status(), 302, "{}", nginx.log());
    let loc = r.headers()["location"].to_str().unwrap();
    assert!(
        loc.starts_with(
            "https://auth.example.com/.pomerium/sign_in?pomerium_redirect_uri=http%3A%2F%2Fapp.example.com%2Fp%3Fq%3D1&pomerium_issued="
        ),
        "{loc}"
    );
    let r = get("/api", vec![("accept", "application/json".into())])
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Denied.
    let r = get("/", vec![("cookie", format!("{COOKIE}={}", seal(&bob)))])
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // The host judged is the one nginx chose the server by: an absolute-form request line
    // wins over `Host` (which would otherwise name the authenticate host, exempt).
    let answer = raw_http(
        nginx.addr,
        "GET http://app.example.com/secret HTTP/1.1\r\nHost: auth.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 302 ")
            && answer.contains("pomerium_redirect_uri=http%3A%2F%2Fapp.example.com%2Fsecret"),
        "{answer}\n{}",
        nginx.log()
    );
    // A host no server block names gets no answer, even one a route allows publicly.
    for request in [
        "GET / HTTP/1.1\r\nHost: public.example.com\r\nConnection: close\r\n\r\n",
        "GET http://public.example.com/ HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
    ] {
        let answer = raw_http(nginx.addr, request).await;
        assert_eq!(answer, "", "{request}");
    }
    // Dot segments and escapes nginx resolves before choosing a location: refused, never
    // taken as the sidecar's paths (exempt) or judged as another route's path.
    for path in [
        "/.pomerium/../secret",
        "/.pomerium/%2e%2e/secret",
        "/.well-known/pomerium/../secret",
        "/x/..//secret",
        "/%73ecret",
    ] {
        let answer = raw_http(
            nginx.addr,
            format!("GET {path} HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 403 "), "{path}: {answer}");
    }
}
