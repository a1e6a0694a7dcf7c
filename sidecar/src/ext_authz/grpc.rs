//! Envoy `ext_authz` over gRPC: `envoy.service.auth.v3.Authorization/Check` on the same
//! listener (HTTP/2 without TLS, "h2c", which axum serves next to HTTP/1.1).
//!
//! gRPC framing by hand (one unary method does not need a gRPC stack): the request body is
//! one length-prefixed message (1 byte compressed flag = 0, 4 bytes big-endian length,
//! the protobuf); the answer is `200`, `content-type: application/grpc`, one
//! length-prefixed `CheckResponse` and the trailer `grpc-status: 0`. Protocol errors
//! (malformed, compressed, oversized) are "trailers-only" answers with a non-zero
//! `grpc-status`.
//!
//! Every decision — refusals and sign-in included — is a `CheckResponse` (a denial with a
//! `DeniedHttpResponse`), never a gRPC error: Envoy turns gRPC errors into
//! `status_on_error` or, under `failure_mode_allow`, into "allow".

use super::decide::{Outcome, Quirks, Request, reason};
use super::proto::{
    CheckRequest, CheckResponse, DeniedHttpResponse, HeaderValueOption, HttpStatus, OkHttpResponse,
    Status, check_response::HttpResponse, code,
};
use super::{Authorizer, log_bad_caller};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Largest `CheckRequest` accepted (Envoy sends headers only, unless `with_request_body`).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// The `Check` method.
pub(super) async fn check(
    State(authz): State<Arc<Authorizer>>,
    req: axum::extract::Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let is_grpc = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if !is_grpc {
        // The gRPC spec's answer; and never a 200, which an Envoy HTTP-service check
        // misrouted here (no `path_prefix`) would read as "allow".
        return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_MESSAGE_BYTES + 5).await else {
        return trailers_only(code::RESOURCE_EXHAUSTED, "request too large");
    };
    let msg = match unframe(&bytes) {
        Ok(m) => m,
        Err((c, why)) => return trailers_only(c, why),
    };
    let Ok(check) = CheckRequest::decode(msg) else {
        return trailers_only(code::INVALID_ARGUMENT, "malformed CheckRequest");
    };
    let Some(http) = check
        .attributes
        .and_then(|a| a.request)
        .and_then(|r| r.http)
    else {
        return trailers_only(
            code::INVALID_ARGUMENT,
            "CheckRequest without an HTTP request",
        );
    };
    // Envoy sends `headers` (merged per name) or, with `encode_raw_headers`, `header_map`.
    // No header is dropped: a raw value that is not UTF-8 is decoded lossily (its name
    // still counts for removal) and, for `Cookie`, makes `decide` remove the whole header.
    let mut cookie_undecodable = false;
    let mut owned: Vec<(String, String)> = match http.header_map {
        Some(map) if !map.headers.is_empty() => map
            .headers
            .into_iter()
            .map(|h| {
                let key = h.key.to_ascii_lowercase();
                let v = if h.raw_value.is_empty() {
                    h.value
                } else {
                    String::from_utf8(h.raw_value).unwrap_or_else(|e| {
                        cookie_undecodable |= key == "cookie";
                        String::from_utf8_lossy(e.as_bytes()).into_owned()
                    })
                };
                (key, v)
            })
            .collect(),
        _ => http.headers.into_iter().collect(),
    };
    if !http.id.is_empty() && !owned.iter().any(|(k, _)| k == "x-request-id") {
        owned.push(("x-request-id".to_owned(), http.id.clone()));
    }
    let headers: Vec<(&str, &str)> = owned
        .iter()
        .filter(|(k, _)| !k.starts_with(':'))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let request = Request {
        authority: &http.host,
        path: &http.path,
        method: &http.method,
        scheme: Some(http.scheme.as_str()).filter(|s| !s.is_empty()),
        headers: &headers,
        quirks: Quirks {
            strict_path: false,
            cookie_undecodable,
            // Several `Cookie` headers merged with `,` (HTTP/1.1): a separator for finding
            // and removing ours, while the other cookies go upstream exactly as sent.
            cookie_commas: true,
        },
    };
    let outcome = if authz.caller_ok(&parts.headers) {
        authz.decide(&request).await
    } else {
        log_bad_caller("envoy-grpc");
        Outcome::Refuse {
            status: 403,
            reason: reason::CALLER_UNAUTHENTICATED,
        }
    };
    unary(&check_response(&outcome, &request))
}

/// The `CheckResponse` for an outcome.
pub fn check_response(outcome: &Outcome, request: &Request<'_>) -> CheckResponse {
    match outcome {
        Outcome::Allow { set, remove } => CheckResponse {
            status: Some(Status {
                code: code::OK,
                message: String::new(),
            }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: set
                    .iter()
                    .map(|(k, v)| HeaderValueOption::set(k, v))
                    .collect(),
                headers_to_remove: remove.clone(),
                response_headers_to_add: Vec::new(),
            })),
        },
        other => {
            let (grpc_code, message) = match other {
                Outcome::SignIn { .. } => (code::UNAUTHENTICATED, "sign-in required"),
                Outcome::Refuse {
                    status: 503,
                    reason,
                } => (code::UNAVAILABLE, *reason),
                Outcome::Refuse { reason, .. } => (code::PERMISSION_DENIED, *reason),
                Outcome::Allow { .. } => (code::PERMISSION_DENIED, "unreachable"),
            };
            let reply = other.reply(request);
            CheckResponse {
                status: Some(Status {
                    code: grpc_code,
                    message: message.to_owned(),
                }),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus {
                        code: reply.as_ref().map_or(403, |r| i32::from(r.status)),
                    }),
                    headers: reply
                        .as_ref()
                        .map(|r| {
                            r.headers
                                .iter()
                                .map(|(k, v)| HeaderValueOption::set(k, v))
                                .collect()
                        })
                        .unwrap_or_default(),
                    body: reply.map(|r| r.body).unwrap_or_default(),
                })),
            }
        }
    }
}

/// The message of a length-prefixed gRPC frame holding exactly one message.
pub fn unframe(body: &[u8]) -> Result<&[u8], (i32, &'static str)> {
    let (Some(&flag), Some(len), Some(msg)) = (
        body.first(),
        body.get(1..5).and_then(|b| <[u8; 4]>::try_from(b).ok()),
        body.get(5..),
    ) else {
        return Err((code::INVALID_ARGUMENT, "truncated gRPC frame"));
    };
    if flag != 0 {
        return Err((code::UNIMPLEMENTED, "compressed messages are not supported"));
    }
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len > MAX_MESSAGE_BYTES {
        return Err((code::RESOURCE_EXHAUSTED, "message too large"));
    }
    if msg.len() != len {
        return Err((code::INVALID_ARGUMENT, "expected exactly one gRPC message"));
    }
    Ok(msg)
}

/// `msg` as one length-prefixed gRPC frame.
pub fn frame(msg: &impl Message) -> Vec<u8> {
    let len = msg.encoded_len();
    let mut out = Vec::with_capacity(len + 5);
    out.push(0);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    msg.encode_raw(&mut out);
    out
}

/// A successful unary answer: one message, then `grpc-status: 0` as a trailer.
fn unary(msg: &CheckResponse) -> Response {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let mut resp = Response::new(Body::new(Unary {
        data: Some(Bytes::from(frame(msg))),
        trailers: Some(trailers),
    }));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    resp
}

/// A gRPC error without a message ("trailers-only": the status in the headers).
fn trailers_only(grpc_code: i32, message: &'static str) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    if let Ok(v) = HeaderValue::from_str(&grpc_code.to_string()) {
        h.insert("grpc-status", v);
    }
    h.insert("grpc-message", HeaderValue::from_static(message));
    resp
}

/// A body of one data frame followed by trailers.
struct Unary {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for Unary {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(d))));
        }
        Poll::Ready(
            self.trailers
                .take()
                .map(|t| Ok(http_body::Frame::trailers(t))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::super::proto;
    use super::*;

    #[test]
    fn frames_round_trip() {
        let msg = proto::Status {
            code: 7,
            message: "x".into(),
        };
        let f = frame(&msg);
        assert_eq!(f[0], 0);
        assert_eq!(
            u32::from_be_bytes(f[1..5].try_into().unwrap()) as usize,
            f.len() - 5
        );
        assert_eq!(proto::Status::decode(unframe(&f).unwrap()).unwrap(), msg);
        assert!(unframe(&f[..f.len() - 1]).is_err());
        assert!(unframe(&[1, 0, 0, 0, 0]).is_err_and(|e| e.0 == code::UNIMPLEMENTED));
        assert!(unframe(&[0, 0, 0]).is_err());
        let mut two = f.clone();
        two.extend_from_slice(&f);
        assert!(unframe(&two).is_err());
    }
}
