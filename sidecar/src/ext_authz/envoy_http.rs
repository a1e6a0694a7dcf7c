//! Envoy `ext_authz` with an `http_service`: the check request is the original request's
//! method, `HTTP_PATH_PREFIX` + original `:path`, `:authority`/`Host`, and the headers the
//! filter's `allowed_headers` let through (Envoy always adds `authorization`, `:method`,
//! `:path`, `:authority`; we need `cookie`, and use `x-forwarded-proto`, `accept`,
//! `x-request-id`, `origin`, `access-control-request-method` and `x-pomerium-*`), plus
//! `headers_to_add` (our [`TOKEN_HEADER`](super::TOKEN_HEADER)). Body-less.
//!
//! Allowed: `200` whose headers Envoy copies onto the upstream request when they match
//! `authorization_response.allowed_upstream_headers` (`cookie`, `x-pomerium-*` and the
//! claim headers), and `x-envoy-auth-headers-to-remove` naming what Envoy must remove
//! (our cookie when it was the only one, spoofed identity headers). Any other status is a
//! denial Envoy sends to the client as is (status, body, and the headers matching
//! `allowed_client_headers`, all of them when unset): our 302 to sign in, 401, 403, 404.

use super::decide::{Outcome, Quirks, Request, reason};
use super::{Authorizer, HTTP_PATH_PREFIX, log_bad_caller};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The header Envoy reads for headers to remove from the upstream request.
pub const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// Every request that is not gRPC or nginx: an Envoy HTTP-service check.
pub(super) async fn check(
    State(authz): State<Arc<Authorizer>>,
    req: axum::extract::Request,
) -> Response {
    let (parts, _body) = req.into_parts();
    let (owned, cookie_undecodable) = decode_headers(&parts.headers);
    let headers: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, &**v)).collect();
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    // `:authority` is the Host header over HTTP/1.1, part of the URI over HTTP/2.
    let authority = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    let scheme = parts
        .headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok());
    let request = Request {
        authority,
        path: path
            .strip_prefix(HTTP_PATH_PREFIX)
            .filter(|p| p.starts_with('/'))
            .unwrap_or(""),
        method: parts.method.as_str(),
        scheme,
        headers: &headers,
        quirks: Quirks {
            strict_path: false,
            cookie_undecodable,
            // Envoy joins repeated `Cookie` headers with `,` in the check request.
            cookie_commas: true,
        },
    };
    let outcome = if !authz.caller_ok(&parts.headers) {
        log_bad_caller("envoy-http");
        Outcome::Refuse {
            status: 403,
            reason: reason::CALLER_UNAUTHENTICATED,
        }
    } else if request.path.is_empty() {
        // Not under the prefix (or an `OPTIONS *`): nothing we can route.
        Outcome::Refuse {
            status: 404,
            reason: reason::NO_ROUTE,
        }
    } else {
        authz.decide(&request).await
    };
    respond(&outcome, &request)
}

/// Every header with its value as text, so that none is lost: `to_str` refuses anything
/// but visible ASCII, and a `Cookie` or `x-pomerium-claim-*` header dropped here would be
/// neither stripped nor removed upstream. Values that are not UTF-8 are decoded lossily
/// (their names still count); `true` if some `Cookie` header was one of them.
pub(super) fn decode_headers(
    headers: &axum::http::HeaderMap,
) -> (Vec<(&str, std::borrow::Cow<'_, str>)>, bool) {
    let mut cookie_undecodable = false;
    let out = headers
        .iter()
        .map(|(k, v)| {
            let v = match std::str::from_utf8(v.as_bytes()) {
                Ok(s) => std::borrow::Cow::Borrowed(s),
                Err(_) => {
                    cookie_undecodable |= *k == header::COOKIE;
                    String::from_utf8_lossy(v.as_bytes())
                }
            };
            (k.as_str(), v)
        })
        .collect();
    (out, cookie_undecodable)
}

/// The check response for an outcome.
///
/// Our 503 (store unreadable, bundle undecodable) is an ext_authz *error* to Envoy: it
/// answers `status_on_error` (configure 503) — and would allow the request under
/// `failure_mode_allow`, which must therefore stay off (docs/ext_authz.md).
fn respond(outcome: &Outcome, request: &Request<'_>) -> Response {
    match outcome {
        Outcome::Allow { set, remove } => {
            let mut resp = StatusCode::OK.into_response();
            let h = resp.headers_mut();
            let mut remove = remove.clone();
            for (name, value) in set {
                // `from_bytes`: UTF-8 beyond ASCII (a cookie, a claim) is valid obs-text.
                match (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_bytes(value.as_bytes()),
                ) {
                    (Ok(n), Ok(v)) => {
                        h.append(n, v);
                    }
                    // Not sent: then removed, never left as the client sent it.
                    _ => remove.push(name.clone()),
                }
            }
            if !remove.is_empty()
                && let Ok(v) = HeaderValue::from_str(&remove.join(", "))
            {
                h.insert(HeaderName::from_static(HEADERS_TO_REMOVE), v);
            }
            resp
        }
        other => match other.reply(request) {
            Some(reply) => {
                let mut resp = Response::new(Body::from(reply.body));
                *resp.status_mut() =
                    StatusCode::from_u16(reply.status).unwrap_or(StatusCode::FORBIDDEN);
                for (name, value) in reply.headers {
                    if let Ok(v) = HeaderValue::from_str(&value) {
                        resp.headers_mut().insert(name, v);
                    }
                }
                resp
            }
            None => StatusCode::FORBIDDEN.into_response(),
        },
    }
}
