//! The upstream app: answers every request with a JSON description of what it received
//! (method, path, headers) and of the identity JWT, verified against the published JWKS.
//! Tests read it to see exactly what Envoy + the filter forwarded; the demo shows it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Response, Uri};
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;

use crate::jwt;

/// A running upstream (stops when the runtime does, or when dropped).
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct State {
    jwks_url: String,
    http: reqwest::Client,
    jwks: Mutex<Option<Value>>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl State {
    async fn fetch_jwks(&self) -> Result<Value, String> {
        let r = self
            .http
            .get(&self.jwks_url)
            .send()
            .await
            .map_err(|e| format!("fetching JWKS {}: {e}", self.jwks_url))?;
        if !r.status().is_success() {
            return Err(format!("fetching JWKS {}: {}", self.jwks_url, r.status()));
        }
        r.json().await.map_err(|e| format!("JWKS is not JSON: {e}"))
    }

    /// Verify with the cached JWKS; on failure refetch once (key rotation).
    async fn verify(&self, token: &str) -> Result<Value, String> {
        let cached = self.jwks.lock().await.clone();
        if let Some(jwks) = cached
            && let Ok(c) = jwt::verify(token, &jwks, None, now())
        {
            return Ok(c);
        }
        let jwks = self.fetch_jwks().await?;
        *self.jwks.lock().await = Some(jwks.clone());
        jwt::verify(token, &jwks, None, now())
    }
}

async fn handle(state: Arc<State>, method: Method, uri: Uri, headers: HeaderMap) -> Response<Body> {
    let mut hs = Map::new();
    for name in headers.keys() {
        let values: Vec<Value> = headers
            .get_all(name)
            .iter()
            .map(|v| json!(String::from_utf8_lossy(v.as_bytes())))
            .collect();
        hs.insert(name.as_str().to_owned(), Value::Array(values));
    }
    let assertion: Vec<&str> = headers
        .get_all("x-pomerium-jwt-assertion")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let jwt = match assertion.as_slice() {
        [] => json!({ "present": false }),
        [one] => match state.verify(one).await {
            Ok(claims) => json!({ "present": true, "verified": true, "claims": claims }),
            Err(e) => json!({ "present": true, "verified": false, "error": e }),
        },
        _ => json!({ "present": true, "verified": false, "error": "several assertion headers" }),
    };
    let body = json!({
        "method": method.as_str(),
        "path": uri.to_string(),
        "headers": hs,
        "jwt": jwt,
    });
    let text = serde_json::to_string_pretty(&body).unwrap_or_default();
    let mut resp = Response::new(Body::from(text));
    resp.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json"),
    );
    resp
}

impl Upstream {
    /// Listen on `127.0.0.1:port` (0 = any free port); verify identity JWTs with the JWKS
    /// at `jwks_url`.
    pub async fn start(port: u16, jwks_url: String) -> Result<Upstream> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            jwks_url,
            http: reqwest::Client::builder()
                // Loopback test servers: Envoy's self-signed fallback certificate.
                .danger_accept_invalid_certs(true)
                .timeout(Duration::from_secs(5))
                .build()?,
            jwks: Mutex::new(None),
        });
        let app =
            axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
                let state = state.clone();
                async move { handle(state, method, uri, headers).await }
            });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Upstream { addr, task })
    }
}
