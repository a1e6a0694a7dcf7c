//! The subset of Envoy's external authorization API (v3) the sidecar speaks, written by hand
//! with `prost` derives (field numbers and types as in Envoy's protos; fields we never read
//! are left out, which protobuf decoding skips):
//!
//! - `envoy/service/auth/v3/external_auth.proto`: `CheckRequest`, `CheckResponse`,
//!   `OkHttpResponse`, `DeniedHttpResponse`;
//! - `envoy/service/auth/v3/attribute_context.proto`: `AttributeContext`, `.Request`,
//!   `.HttpRequest`;
//! - `envoy/config/core/v3/base.proto`: `HeaderValue`, `HeaderValueOption`, `HeaderMap`;
//! - `envoy/type/v3/http_status.proto`: `HttpStatus` (the `StatusCode` enum as its number);
//! - `google/rpc/status.proto`: `Status`; `google/protobuf/wrappers.proto`: `BoolValue`.
//!
//! Public so tests and the benchmark can build check requests and read answers.

use std::collections::BTreeMap;

/// `envoy.service.auth.v3.CheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckRequest {
    /// `attributes = 1`.
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<AttributeContext>,
}

/// `envoy.service.auth.v3.AttributeContext` (source = 1, destination = 2, metadata, TLS
/// session: not read).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeContext {
    /// `request = 4`.
    #[prost(message, optional, tag = "4")]
    pub request: Option<attribute_context::Request>,
    /// `context_extensions = 10` (per-route `check_settings.context_extensions`).
    #[prost(btree_map = "string, string", tag = "10")]
    pub context_extensions: BTreeMap<String, String>,
}

/// Nested messages of [`AttributeContext`].
pub mod attribute_context {
    use std::collections::BTreeMap;

    /// `AttributeContext.Request` (`time = 1` not read).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        /// `http = 2`.
        #[prost(message, optional, tag = "2")]
        pub http: Option<HttpRequest>,
    }

    /// `AttributeContext.HttpRequest` (`size`, `protocol`, `body`, `raw_body` not read).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HttpRequest {
        /// `id = 1` (x-request-id).
        #[prost(string, tag = "1")]
        pub id: String,
        /// `method = 2`.
        #[prost(string, tag = "2")]
        pub method: String,
        /// `headers = 3`: lower-case names; repeated headers merged by Envoy.
        #[prost(btree_map = "string, string", tag = "3")]
        pub headers: BTreeMap<String, String>,
        /// `path = 4`: the request target, query included, not decoded.
        #[prost(string, tag = "4")]
        pub path: String,
        /// `host = 5`: `Host` / `:authority`.
        #[prost(string, tag = "5")]
        pub host: String,
        /// `scheme = 6`.
        #[prost(string, tag = "6")]
        pub scheme: String,
        /// `header_map = 13`: used instead of `headers` with `encode_raw_headers: true`.
        #[prost(message, optional, tag = "13")]
        pub header_map: Option<super::HeaderMap>,
    }
}

/// `envoy.config.core.v3.HeaderValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValue {
    /// `key = 1`.
    #[prost(string, tag = "1")]
    pub key: String,
    /// `value = 2`.
    #[prost(string, tag = "2")]
    pub value: String,
    /// `raw_value = 3` (set instead of `value` with `encode_raw_headers`).
    #[prost(bytes = "vec", tag = "3")]
    pub raw_value: Vec<u8>,
}

/// `envoy.config.core.v3.HeaderMap`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderMap {
    /// `headers = 1`.
    #[prost(message, repeated, tag = "1")]
    pub headers: Vec<HeaderValue>,
}

/// `google.protobuf.BoolValue`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct BoolValue {
    /// `value = 1`.
    #[prost(bool, tag = "1")]
    pub value: bool,
}

/// `envoy.config.core.v3.HeaderValueOption`. We set the (deprecated) `append = 2` to
/// `false`, which every Envoy since v3 reads as "overwrite or add"; `append_action = 3`
/// stays at its default (setting both is refused).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValueOption {
    /// `header = 1`.
    #[prost(message, optional, tag = "1")]
    pub header: Option<HeaderValue>,
    /// `append = 2`.
    #[prost(message, optional, tag = "2")]
    pub append: Option<BoolValue>,
    /// `append_action = 3` (`HeaderAppendAction`; 2 = `OVERWRITE_IF_EXISTS_OR_ADD`).
    #[prost(int32, tag = "3")]
    pub append_action: i32,
}

impl HeaderValueOption {
    /// Set (overwrite or add) `key: value`.
    pub fn set(key: &str, value: &str) -> Self {
        HeaderValueOption {
            header: Some(HeaderValue {
                key: key.to_owned(),
                value: value.to_owned(),
                raw_value: Vec::new(),
            }),
            append: Some(BoolValue { value: false }),
            append_action: 0,
        }
    }
}

/// `envoy.type.v3.HttpStatus`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct HttpStatus {
    /// `code = 1` (`StatusCode` enum; its numbers are the HTTP statuses).
    #[prost(int32, tag = "1")]
    pub code: i32,
}

/// `google.rpc.Status` (`details = 3` not used).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    /// `code = 1`: a gRPC status code (0 = OK).
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// `message = 2`.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// `envoy.service.auth.v3.DeniedHttpResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeniedHttpResponse {
    /// `status = 1`.
    #[prost(message, optional, tag = "1")]
    pub status: Option<HttpStatus>,
    /// `headers = 2`: response headers to the client.
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<HeaderValueOption>,
    /// `body = 3`.
    #[prost(string, tag = "3")]
    pub body: String,
}

/// `envoy.service.auth.v3.OkHttpResponse` (`dynamic_metadata = 3`, query parameters: not
/// used).
#[derive(Clone, PartialEq, prost::Message)]
pub struct OkHttpResponse {
    /// `headers = 2`: upstream request headers to set.
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<HeaderValueOption>,
    /// `headers_to_remove = 5`: upstream request headers to remove.
    #[prost(string, repeated, tag = "5")]
    pub headers_to_remove: Vec<String>,
    /// `response_headers_to_add = 6`.
    #[prost(message, repeated, tag = "6")]
    pub response_headers_to_add: Vec<HeaderValueOption>,
}

/// `envoy.service.auth.v3.CheckResponse` (`dynamic_metadata = 4` not used).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckResponse {
    /// `status = 1`: OK allows; anything else denies.
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    /// `oneof http_response`.
    #[prost(oneof = "check_response::HttpResponse", tags = "2, 3")]
    pub http_response: Option<check_response::HttpResponse>,
}

/// The oneof of [`CheckResponse`].
pub mod check_response {
    /// `oneof http_response`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum HttpResponse {
        /// `denied_response = 2`.
        #[prost(message, tag = "2")]
        DeniedResponse(super::DeniedHttpResponse),
        /// `ok_response = 3`.
        #[prost(message, tag = "3")]
        OkResponse(super::OkHttpResponse),
    }
}

/// gRPC status codes we answer with.
pub mod code {
    /// Allowed.
    pub const OK: i32 = 0;
    /// Malformed request.
    pub const INVALID_ARGUMENT: i32 = 3;
    /// Denied (403, 404, caller not authenticated).
    pub const PERMISSION_DENIED: i32 = 7;
    /// Too large a request.
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    /// Compressed messages (we never advertise compression).
    pub const UNIMPLEMENTED: i32 = 12;
    /// The store is unavailable (still a denial with a 503 to the client).
    pub const UNAVAILABLE: i32 = 14;
    /// Sign-in needed.
    pub const UNAUTHENTICATED: i32 = 16;
}
