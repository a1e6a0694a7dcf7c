//! nginx `auth_request`: nginx sends a subrequest carrying the client's headers plus the
//! original request in headers its config sets (see docs/ext_authz.md):
//! [`ORIGINAL_URI`] (`$request_uri`), [`ORIGINAL_METHOD`] (`$request_method`),
//! [`ORIGINAL_HOST`] (`$host`: the host nginx chose the `server` by — the request line's
//! in absolute form, else `Host`; never `$http_host`, which the client picks freely),
//! `x-forwarded-proto` (`$scheme`), and the caller token.
//!
//! nginx chooses the location on the decoded, normalised `$uri` and passes the raw
//! `$request_uri` upstream, so a path not already in normal form (dot segments, `//`, any
//! escape of `.`, `/`, `\` or of an unreserved character) is refused (403
//! `non-normal-path`): no path is judged as one thing and served as another.
//!
//! nginx only understands 2xx (allow), 401 and 403 from an auth subrequest (anything else
//! becomes a 500 to the client), and takes nothing from our body. So:
//! - allow: `200` with the upstream headers to copy with `auth_request_set` +
//!   `proxy_set_header` — [`UPSTREAM_COOKIE`] (the `Cookie` header the upstream must get,
//!   ours removed; empty = none), `x-pomerium-jwt-assertion` and the claim headers (empty
//!   when not passed, which makes `proxy_set_header` drop a spoofed one);
//! - sign-in: `401` with [`SIGN_IN_URL`] for browser navigations (the config redirects to
//!   it), without it otherwise (the client gets a 401);
//! - deny / unknown route: `403` with [`REASON`]; store unavailable: `503` (nginx: 500).

use super::decide::{HEADER_JWT, Outcome, Quirks, Request, is_navigation, reason};
use super::{Authorizer, log_bad_caller};
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The original request URI (path + query), `$request_uri`.
pub const ORIGINAL_URI: &str = "x-original-uri";
/// The original method, `$request_method`.
pub const ORIGINAL_METHOD: &str = "x-original-method";
/// The original host, `$host` (lower-case, without port).
pub const ORIGINAL_HOST: &str = "x-original-host";
/// Allowed: the `Cookie` header the upstream must receive (empty = drop it).
pub const UPSTREAM_COOKIE: &str = "x-portcullis-cookie";
/// Sign-in needed: where to redirect a browser.
pub const SIGN_IN_URL: &str = "x-portcullis-sign-in-url";
/// Refused: the reason code.
pub const REASON: &str = "x-portcullis-reason";

/// The `auth_request` endpoint.
pub(super) async fn check(
    State(authz): State<Arc<Authorizer>>,
    req: axum::extract::Request,
) -> Response {
    let (parts, _body) = req.into_parts();
    let get = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
            .unwrap_or("")
    };
    let (owned, cookie_undecodable) = super::envoy_http::decode_headers(&parts.headers);
    let headers: Vec<(&str, &str)> = owned
        .iter()
        .filter(|(k, _)| !k.starts_with("x-original-"))
        .map(|(k, v)| (*k, &**v))
        .collect();
    let request = Request {
        authority: get(ORIGINAL_HOST),
        path: get(ORIGINAL_URI),
        method: get(ORIGINAL_METHOD),
        scheme: parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok()),
        headers: &headers,
        // nginx picks the location on the decoded, normalised `$uri` while we get the raw
        // `$request_uri` (which the upstream gets too): only a path both read alike passes.
        quirks: Quirks {
            strict_path: true,
            cookie_undecodable,
            cookie_commas: false,
        },
    };
    if !authz.caller_ok(&parts.headers) {
        log_bad_caller("nginx");
        return refused(403, reason::CALLER_UNAUTHENTICATED);
    }
    if !request.path.starts_with('/') || request.authority.is_empty() || request.method.is_empty() {
        // A config without the X-Original-* headers: refuse, loudly.
        tracing::warn!(
            "nginx auth_request without {ORIGINAL_URI} / {ORIGINAL_HOST} / {ORIGINAL_METHOD}: denied"
        );
        return refused(403, reason::NO_ROUTE);
    }
    match authz.decide(&request).await {
        Outcome::Allow { set, remove } => {
            let mut resp = StatusCode::OK.into_response();
            let h = resp.headers_mut();
            // Everything nginx must forward is named here, so `remove` needs no header of
            // its own: a header we do not set is sent empty, and `proxy_set_header` with an
            // empty value removes it.
            let mut cookie = String::new();
            let mut jwt = String::new();
            for (name, value) in &set {
                match name.as_str() {
                    "cookie" => cookie.clone_from(value),
                    HEADER_JWT => jwt.clone_from(value),
                    _ => {
                        if let (Ok(n), Ok(v)) = (
                            HeaderName::from_bytes(name.as_bytes()),
                            HeaderValue::from_bytes(value.as_bytes()),
                        ) {
                            h.insert(n, v);
                        }
                    }
                }
            }
            // `decide` sets `cookie` (others left) or removes it (ours was the only one);
            // neither: no cookie of ours, the client's header goes on unchanged.
            if !set.iter().any(|(n, _)| n == "cookie") && !remove.iter().any(|n| n == "cookie") {
                cookie = request
                    .headers
                    .iter()
                    .filter(|(k, _)| *k == "cookie")
                    .map(|(_, v)| *v)
                    .collect::<Vec<_>>()
                    .join("; ");
            }
            // Not encodable: not sent, and nginx then sends the upstream no Cookie at all.
            if let Ok(v) = HeaderValue::from_bytes(cookie.as_bytes()) {
                h.insert(UPSTREAM_COOKIE, v);
            }
            if let Ok(v) = HeaderValue::from_bytes(jwt.as_bytes()) {
                h.insert(HEADER_JWT, v);
            }
            resp
        }
        Outcome::SignIn { url } => {
            let mut resp = StatusCode::UNAUTHORIZED.into_response();
            if is_navigation(request.method, request.accept())
                && let Ok(v) = HeaderValue::from_str(&url)
            {
                resp.headers_mut().insert(SIGN_IN_URL, v);
            }
            resp
        }
        Outcome::Refuse {
            status: 503,
            reason,
        } => refused(503, reason),
        Outcome::Refuse { reason, .. } => refused(403, reason),
    }
}

fn refused(status: u16, reason: &'static str) -> Response {
    let mut resp = StatusCode::from_u16(status)
        .unwrap_or(StatusCode::FORBIDDEN)
        .into_response();
    resp.headers_mut()
        .insert(REASON, HeaderValue::from_static(reason));
    resp
}
