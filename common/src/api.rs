//! The internal API between the filter (client) and the sidecar (server).
//!
//! HTTP/1.1 or HTTP/2 over the sidecar cluster; bodies are protobuf (these messages,
//! encoded with `prost`). Every request carries `authorization: Bearer <token>` where the
//! token is [`api_token`]; the sidecar answers 401 to anything else (constant-time compare).
//!
//! | method + path | query | answer |
//! |---|---|---|
//! | `GET` [`PATH_SESSION`] | `id=<session id>&aud=<route host>` | 200 [`SessionResponse`] (`found=false` for unknown/expired ids) |
//! | `GET` [`PATH_CHANGES`] | `since=<version>&wait_ms=<long-poll ms, ≤ 30000>[&epoch=<epoch>][&bundle=<version>]` | 200 [`ChangesResponse`] as soon as something changed after `since`, or when `wait_ms` runs out |
//! | `GET` [`PATH_BUNDLE`] | — | 200 the current policy bundle (`policy-compiler` output), header [`HEADER_BUNDLE_VERSION`] |
//!
//! Change-stream cursors: `since` is the `version` of the previous answer. `since=0` is
//! an ordinary cursor, not "from now": an empty store is at 0, so the answer carries the
//! whole retained history (or `reset` if it was trimmed) — a client starting at 0 never
//! misses a session created and deleted before its first answer. A version is only
//! meaningful within its [`ChangesResponse::epoch`]: **a client that sees a different
//! `epoch` than in its previous answer must treat the answer as `reset`** (drop every
//! cached session, then continue from the new `version`), because a restarted memory
//! sidecar or a flushed Redis can climb past the client's cursor before it polls, so
//! `since > version` alone cannot detect it. Passing the last seen epoch as `epoch=`
//! makes the sidecar answer at once with `reset=true` when it differs.
//!
//! The policy view is what the filter needs and nothing more: no access or refresh
//! tokens ever leave the sidecar.

use crate::keys::{self, Purpose};
use crate::secret::Secret;

/// Fetch one session's policy view (+ identity JWT for one audience).
pub const PATH_SESSION: &str = "/.portcullis/v1/session";
/// Long-poll change stream.
pub const PATH_CHANGES: &str = "/.portcullis/v1/changes";
/// Current policy bundle.
pub const PATH_BUNDLE: &str = "/.portcullis/v1/bundle";
/// Response header naming the bundle's version.
pub const HEADER_BUNDLE_VERSION: &str = "x-portcullis-bundle-version";
/// Content type of protobuf bodies.
pub const CONTENT_TYPE_PROTOBUF: &str = "application/x-protobuf";
/// Longest long-poll the sidecar honours.
pub const MAX_WAIT_MS: u64 = 30_000;

/// The bearer token of the internal API: hex of a key derived from `shared_secret`.
/// The raw shared secret itself never travels.
pub fn api_token(shared_secret: &Secret) -> String {
    let key = keys::derive(shared_secret, Purpose::InternalApi);
    let mut out = String::with_capacity(64);
    for b in key.expose() {
        out.push(char::from(
            HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0'),
        ));
        out.push(char::from(
            HEX.get(usize::from(b & 15)).copied().unwrap_or(b'0'),
        ));
    }
    out
}

const HEX: [u8; 16] = *b"0123456789abcdef";

/// Check an `authorization` header value against the expected token (constant time).
pub fn check_authorization(header_value: &str, expected_token: &str) -> bool {
    header_value
        .strip_prefix("Bearer ")
        .is_some_and(|t| keys::ct_eq(t.as_bytes(), expected_token.as_bytes()))
}

/// One claim of a session, flattened the way Pomerium's policy sees it: nested objects
/// joined with dots (`a.b.c`), every value a list (a scalar becomes a one-element list).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Claim {
    /// Flattened claim name.
    #[prost(string, tag = "1")]
    pub key: String,
    /// The values, in the IdP's order.
    #[prost(message, repeated, tag = "2")]
    pub values: Vec<ClaimValue>,
}

/// One JSON scalar. Claims keep their JSON type: Pomerium's matching is type-sensitive.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClaimValue {
    /// The value.
    #[prost(oneof = "claim_value::Kind", tags = "1, 2, 3")]
    pub kind: Option<claim_value::Kind>,
}

/// The cases of [`ClaimValue`].
pub mod claim_value {
    /// A JSON scalar.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        /// JSON string.
        #[prost(string, tag = "1")]
        Str(String),
        /// JSON number.
        #[prost(double, tag = "2")]
        Number(f64),
        /// JSON boolean.
        #[prost(bool, tag = "3")]
        Bool(bool),
    }
}

/// A header the filter adds to allowed requests (from `jwt_claims_headers`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Header {
    /// Lower-case header name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Header value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// What policy evaluation needs to know about one session — and nothing more.
///
/// INVARIANT: `claims` are exactly the claims the session's identity JWT and user info
/// page show (the sidecar derives all three from one stored record).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionView {
    /// Session id (as in the cookie).
    #[prost(string, tag = "1")]
    pub session_id: String,
    /// IdP subject (`sub`); the `user` criterion.
    #[prost(string, tag = "2")]
    pub user_id: String,
    /// Email claim, exactly as the IdP sent it (never lower-cased).
    #[prost(string, tag = "3")]
    pub email: String,
    /// Flattened claims.
    #[prost(message, repeated, tag = "4")]
    pub claims: Vec<Claim>,
    /// Unix seconds the session was created.
    #[prost(int64, tag = "5")]
    pub issued_at: i64,
    /// Unix seconds the session expires.
    #[prost(int64, tag = "6")]
    pub expires_at: i64,
    /// Databroker version of the session record this view was made from.
    #[prost(uint64, tag = "7")]
    pub version: u64,
    /// Precomputed `jwt_claims_headers` for this session.
    #[prost(message, repeated, tag = "8")]
    pub claim_headers: Vec<Header>,
    /// The OAuth client (`idp_client_id`) the session was created with (the default
    /// client's id for logins through routes without their own client). A route with its
    /// own `idp_client_id` must only accept sessions of that client: a session of another
    /// client never went through this client's IdP app assignment.
    #[prost(string, tag = "9")]
    pub client_id: String,
}

/// Answer to [`PATH_SESSION`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionResponse {
    /// False when the id is unknown, expired or revoked.
    #[prost(bool, tag = "1")]
    pub found: bool,
    /// The policy view (present when `found`).
    #[prost(message, optional, tag = "2")]
    pub view: Option<SessionView>,
    /// Signed identity JWT (`X-Pomerium-Jwt-Assertion`) for the requested audience.
    #[prost(string, tag = "3")]
    pub identity_jwt: String,
    /// Unix seconds the JWT expires; the filter refetches before then.
    #[prost(int64, tag = "4")]
    pub jwt_expires_at: i64,
}

/// Answer to [`PATH_CHANGES`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChangesResponse {
    /// The cursor to pass as `since` next time.
    #[prost(uint64, tag = "1")]
    pub version: u64,
    /// Sessions whose view changed after `since` (refetch on next use).
    #[prost(string, repeated, tag = "2")]
    pub changed: Vec<String>,
    /// Sessions deleted after `since` (signed out, expired, terminated).
    #[prost(string, repeated, tag = "3")]
    pub deleted: Vec<String>,
    /// Version of the current policy bundle; fetch [`PATH_BUNDLE`] when it differs.
    #[prost(string, tag = "4")]
    pub bundle_version: String,
    /// `since` is older than the sidecar's history (or newer than its version, or the
    /// request's `epoch=` differs): drop every cached session.
    #[prost(bool, tag = "5")]
    pub reset: bool,
    /// Identity of the version sequence (random per memory store lifetime; for Redis a
    /// persisted random key that a flush replaces). Cursors of one epoch mean nothing in
    /// another: a different epoch than last time must be treated as `reset`.
    #[prost(string, tag = "6")]
    pub epoch: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn token_is_derived_and_checked() {
        let s = Secret::from_bytes([5; 32]);
        let t = api_token(&s);
        assert_eq!(t.len(), 64);
        assert!(check_authorization(&format!("Bearer {t}"), &t));
        assert!(!check_authorization(&t, &t));
        assert!(!check_authorization("Bearer nope", &t));
        assert_ne!(api_token(&Secret::from_bytes([6; 32])), t);
    }

    #[test]
    fn messages_round_trip() {
        let v = SessionResponse {
            found: true,
            view: Some(SessionView {
                session_id: "s".into(),
                user_id: "u".into(),
                email: "e@x".into(),
                claims: vec![Claim {
                    key: "groups".into(),
                    values: vec![ClaimValue {
                        kind: Some(claim_value::Kind::Str("admins".into())),
                    }],
                }],
                version: 3,
                client_id: "client-a".into(),
                ..Default::default()
            }),
            identity_jwt: "a.b.c".into(),
            jwt_expires_at: 9,
        };
        let bytes = v.encode_to_vec();
        assert_eq!(SessionResponse::decode(bytes.as_slice()).unwrap(), v);
        assert!(SessionResponse::decode(&b"\xff\xff\xff"[..]).is_err());
    }
}
