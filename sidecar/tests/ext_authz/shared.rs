//! What the ext_authz tests share (handlers, real Envoy, real nginx): the config, the
//! session cookie, an echo upstream and a raw HTTP/1.1 exchange. Included with `#[path]`
//! by each test binary, next to `core/support.rs`; each uses a part of it.

#![allow(dead_code)]

use crate::support::{CLIENT, SHARED};
use axum::http::HeaderMap;
use base64::Engine as _;
use portcullis_common::Secret;
use portcullis_common::cookie::{self, CookieKey};
use serde_json::Value;
use sidecar::session::Session;
use std::net::SocketAddr;
use std::time::Duration;

/// The session cookie's name (Pomerium's default).
pub const COOKIE: &str = "_pomerium";

/// The cookie secret of [`config_text`].
const COOKIE_SECRET: [u8; 32] = [12; 32];

/// The test config: `app` (group `admins`, identity headers) and `public` routes;
/// `public_policy` is inserted under the public route, `extra` after the routes.
pub fn config_text(public_policy: &str, extra: &str) -> String {
    let b64 = |b: [u8; 32]| base64::engine::general_purpose::STANDARD.encode(b);
    format!(
        r#"shared_secret: {shared}
cookie_secret: {cookie}
authenticate_service_url: https://auth.example.com
idp_provider_url: https://idp.example.com
idp_client_id: {CLIENT}
idp_client_secret: client-secret
jwt_claims_headers:
  X-Email: email
routes:
  - from: https://app.example.com
    to: http://127.0.0.1:9
    pass_identity_headers: true
    policy:
      allow:
        and:
          - claim/groups: admins
  - from: https://public.example.com
    to: http://127.0.0.1:9
    allow_public_unauthenticated_access: true
{public_policy}{extra}"#,
        shared = b64(SHARED),
        cookie = b64(COOKIE_SECRET),
    )
}

/// The session's cookie value, sealed as the login callback does.
pub fn seal(session: &Session) -> String {
    let key = CookieKey::new(&Secret::from_bytes(COOKIE_SECRET));
    cookie::seal(&key, COOKIE, &session.id, u64::MAX / 2, [7; 24]).unwrap()
}

/// An upstream answering every request with the headers it received, as JSON.
pub async fn echo_upstream() -> SocketAddr {
    async fn echo(headers: HeaderMap) -> axum::Json<Value> {
        let mut m = serde_json::Map::new();
        for (k, v) in &headers {
            m.insert(
                k.as_str().to_owned(),
                // Lossy, so that a non-ASCII value still shows (and a leak is seen).
                Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            );
        }
        axum::Json(Value::Object(m))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().fallback(echo))
            .await
            .unwrap()
    });
    addr
}

/// One raw HTTP/1.1 exchange (the path exactly as written, as `curl --path-as-is`);
/// the whole answer, or what came before the connection closed.
pub async fn raw_http(addr: SocketAddr, request: impl AsRef<[u8]>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_ref()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
