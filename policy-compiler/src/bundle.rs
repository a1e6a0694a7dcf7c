//! The policy bundle: what the compiler writes and the evaluator reads.
//!
//! Hand-written `prost` messages (no protoc in the build); the schema is documented in
//! `src/bundle/bundle.proto`, which must be kept in step with this file. Design:
//! - `format_version` is checked first: a decoder never guesses at a format it does not know;
//! - every user string (ids, hosts, prefixes, claim names, matcher values) is interned once in
//!   `strings` and referenced by index;
//! - each route's `from` is pre-split (lower-cased host[:port], wildcard flag) and routes are
//!   indexed by host, so a lookup never scans every route;
//! - policies are a flat array of nodes; a node refers to its children by index and children
//!   always come **before** their parent (so a valid bundle has no cycles);
//! - time zones used by `day_of_week` / `time_of_day` are UTC-offset transition tables, so the
//!   evaluator (wasm) needs no tz database.
//!
//! Decoding and validation live in [`crate::eval::Engine::from_bytes`].

use prost::Message as _;

/// The only bundle layout this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// A whole compiled configuration.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Bundle {
    /// Must equal [`FORMAT_VERSION`].
    #[prost(uint32, tag = "1")]
    pub format_version: u32,
    /// Content hash of the bundle (computed with this field empty), hex.
    #[prost(string, tag = "2")]
    pub version: String,
    /// Interned strings; every `*_str` field below is an index into this list.
    #[prost(string, repeated, tag = "3")]
    pub strings: Vec<String>,
    /// Non-secret global settings the filter needs.
    #[prost(message, optional, tag = "4")]
    pub settings: Option<Settings>,
    /// Routes in definition order (first match wins).
    #[prost(message, repeated, tag = "5")]
    pub routes: Vec<Route>,
    /// Policy nodes of every route; children precede parents.
    #[prost(message, repeated, tag = "6")]
    pub nodes: Vec<Node>,
    /// Exact-host index, sorted by host string: host → its routes in definition order.
    #[prost(message, repeated, tag = "7")]
    pub hosts: Vec<HostRoutes>,
    /// Routes whose host has a wildcard (`*.example.com`), in definition order.
    #[prost(uint32, repeated, tag = "8")]
    pub wildcard_routes: Vec<u32>,
    /// Time zones referenced by nodes (`Node.zone`).
    #[prost(message, repeated, tag = "9")]
    pub zones: Vec<Zone>,
}

/// Global, non-secret settings.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Settings {
    /// `authenticate_service_url` (where sign-in redirects go).
    #[prost(string, tag = "1")]
    pub authenticate_service_url: String,
    /// `cookie_name` (default `_pomerium`).
    #[prost(string, tag = "2")]
    pub cookie_name: String,
    /// `jwt_claims_headers`, sorted by claim: (claim, header name).
    #[prost(message, repeated, tag = "3")]
    pub jwt_claims_headers: Vec<ClaimHeader>,
    /// Global default of `pass_identity_headers`.
    #[prost(bool, tag = "4")]
    pub pass_identity_headers: bool,
}

/// One `jwt_claims_headers` entry.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ClaimHeader {
    /// Claim name.
    #[prost(string, tag = "1")]
    pub claim: String,
    /// HTTP header that carries it.
    #[prost(string, tag = "2")]
    pub header: String,
}

/// How a route matches the request path (Envoy semantics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PathKind {
    /// Any path.
    Any = 0,
    /// `prefix`: plain string prefix of `:path`.
    Prefix = 1,
    /// `path`: the path without query equals the value.
    Exact = 2,
    /// `regex`: the whole path without query matches.
    Regex = 3,
}

/// One route.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Route {
    /// Route id (Envoy route name), string index.
    #[prost(uint32, tag = "1")]
    pub id_str: u32,
    /// Display name (`name`, else the id), string index.
    #[prost(uint32, tag = "2")]
    pub name_str: u32,
    /// The `from` URL as written, string index.
    #[prost(uint32, tag = "3")]
    pub from_str: u32,
    /// Lower-cased host with `:port` when the port is not the scheme default; may start with `*.`.
    #[prost(uint32, tag = "4")]
    pub host_str: u32,
    /// Path matcher kind.
    #[prost(enumeration = "PathKind", tag = "5")]
    pub path_kind: i32,
    /// Prefix / exact path / regex pattern, string index (unused for `Any`).
    #[prost(uint32, tag = "6")]
    pub path_str: u32,
    /// `allow_public_unauthenticated_access`.
    #[prost(bool, tag = "7")]
    pub public: bool,
    /// `pass_identity_headers`, resolved against the global default.
    #[prost(bool, tag = "8")]
    pub pass_identity_headers: bool,
    /// Allow terms (OR-ed).
    #[prost(message, repeated, tag = "9")]
    pub allow: Vec<Term>,
    /// Deny terms (OR-ed).
    #[prost(message, repeated, tag = "10")]
    pub deny: Vec<Term>,
    /// Whether any criterion looks at the user (else the filter may skip the session).
    #[prost(bool, tag = "11")]
    pub uses_identity: bool,
    /// OAuth client id a session must have been signed in with to use this route (the
    /// route's `idp_client_id`, else the global one; empty when none is configured).
    #[prost(uint32, tag = "12")]
    pub idp_client_id_str: u32,
}

/// One operator of one rule (`allow: {and: [...]}` gives one term).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Term {
    /// Root node index.
    #[prost(uint32, tag = "1")]
    pub node: u32,
    /// Where it came from, e.g. `config.yaml:12:7` or `legacy route options`; string index.
    #[prost(uint32, tag = "2")]
    pub origin_str: u32,
}

/// Node kinds: operators and criteria.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum NodeKind {
    /// Invalid (protobuf default).
    Unspecified = 0,
    /// All children.
    And = 1,
    /// Any child.
    Or = 2,
    /// No child.
    Not = 3,
    /// Not all children.
    Nor = 4,
    /// Always passes.
    Accept = 10,
    /// Never passes.
    Reject = 11,
    /// A signed-in user.
    AuthenticatedUser = 12,
    /// `claim/<name>` list matcher.
    Claim = 13,
    /// Email domain string matcher.
    Domain = 14,
    /// Email string matcher.
    Email = 15,
    /// User id string matcher.
    User = 16,
    /// HTTP method string matcher.
    HttpMethod = 17,
    /// HTTP path string matcher.
    HttpPath = 18,
    /// CORS preflight request.
    CorsPreflight = 19,
    /// Client certificate matcher.
    ClientCertificate = 20,
    /// Presented certificate is invalid.
    InvalidClientCertificate = 21,
    /// Pomerium's own `/.pomerium/` endpoints.
    PomeriumRoutes = 22,
    /// Directory groups (no directory in Portcullis: always the empty list).
    Groups = 23,
    /// `date` after/before (Portcullis extension).
    Date = 30,
    /// `day_of_week` (Portcullis extension).
    DayOfWeek = 31,
    /// `time_of_day` (Portcullis extension).
    TimeOfDay = 32,
}

/// One policy node.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Node {
    /// What this node is.
    #[prost(enumeration = "NodeKind", tag = "1")]
    pub kind: i32,
    /// Operators: child node indices (each smaller than this node's index).
    #[prost(uint32, repeated, tag = "2")]
    pub children: Vec<u32>,
    /// Matcher conditions (AND-ed) for matcher criteria.
    #[prost(message, repeated, tag = "3")]
    pub conds: Vec<Cond>,
    /// `claim/<name>`: the claim name, string index.
    #[prost(uint32, tag = "4")]
    pub name_str: u32,
    /// Date: `after` (unix s, inclusive bound exclusive: now > after). Time of day: `after`
    /// seconds since local midnight. Day of week: bit mask (bit 0 = Sunday).
    #[prost(int64, optional, tag = "5")]
    pub lo: Option<i64>,
    /// Date: `before` (now < before). Time of day: `before` seconds since local midnight.
    #[prost(int64, optional, tag = "6")]
    pub hi: Option<i64>,
    /// Day of week / time of day: index into `Bundle.zones`.
    #[prost(uint32, tag = "7")]
    pub zone: u32,
    /// The criterion as written (e.g. `claim/groups`), for explanations; string index.
    #[prost(uint32, tag = "8")]
    pub label_str: u32,
}

/// Matcher operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum CondOp {
    /// Invalid (protobuf default).
    Unspecified = 0,
    /// String `is` (equality, type-sensitive).
    Is = 1,
    /// String `not`.
    Not = 2,
    /// String `contains`.
    Contains = 3,
    /// String `starts_with`.
    StartsWith = 4,
    /// String `ends_with`.
    EndsWith = 5,
    /// String `in` (`values`).
    In = 6,
    /// String `not_in` (`values`).
    NotIn = 7,
    /// List `has`.
    Has = 8,
    /// List `is`: exactly one element, equal.
    ListIs = 9,
    /// List `exclude`.
    Exclude = 10,
}

/// Which value of the request a condition looks at (client certificates only; default = the
/// criterion's own subject value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum CondTarget {
    /// The criterion's value (email, path, claim list, ...).
    Subject = 0,
    /// Certificate SHA-256 fingerprint (lower hex), with `In`.
    Fingerprint = 1,
    /// Certificate SPKI SHA-256 hash (base64), with `In`.
    SpkiHash = 2,
    /// Any email SAN.
    SanEmail = 3,
    /// Any DNS SAN.
    SanDns = 4,
    /// Any URI SAN.
    SanUri = 5,
}

/// One matcher condition.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Cond {
    /// Operation.
    #[prost(enumeration = "CondOp", tag = "1")]
    pub op: i32,
    /// Single operand.
    #[prost(message, optional, tag = "2")]
    pub value: Option<Const>,
    /// List operand (`in` / `not_in`).
    #[prost(message, repeated, tag = "3")]
    pub values: Vec<Const>,
    /// What is matched.
    #[prost(enumeration = "CondTarget", tag = "4")]
    pub target: i32,
}

/// A constant from the policy: string, number or boolean (comparisons are type-sensitive).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Const {
    /// The value.
    #[prost(oneof = "ConstKind", tags = "1, 2, 3")]
    pub kind: Option<ConstKind>,
}

/// The variants of [`Const`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ConstKind {
    /// String, index into `Bundle.strings`.
    #[prost(uint32, tag = "1")]
    Str(u32),
    /// Number (YAML ints and floats alike, as JSON/Rego numbers).
    #[prost(double, tag = "2")]
    Number(f64),
    /// Boolean.
    #[prost(bool, tag = "3")]
    Bool(bool),
}

/// Host → routes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HostRoutes {
    /// Host key (as `Route.host_str`), string index.
    #[prost(uint32, tag = "1")]
    pub host_str: u32,
    /// Route indices in definition order.
    #[prost(uint32, repeated, tag = "2")]
    pub routes: Vec<u32>,
}

/// A time zone as UTC-offset transitions (precomputed from the tz database at compile time).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Zone {
    /// IANA name (e.g. `Europe/Paris`).
    #[prost(string, tag = "1")]
    pub name: String,
    /// Transition instants (unix seconds), strictly increasing.
    #[prost(sint64, repeated, tag = "2")]
    pub at: Vec<i64>,
    /// UTC offsets in seconds: `offsets[0]` before `at[0]`, `offsets[i+1]` from `at[i]` on;
    /// so `offsets.len() == at.len() + 1`.
    #[prost(sint32, repeated, tag = "3")]
    pub offsets: Vec<i32>,
}

impl Bundle {
    /// Protobuf encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Protobuf decoding only (no validation; use [`crate::eval::Engine::from_bytes`]).
    pub fn decode_bytes(bytes: &[u8]) -> Result<Bundle, prost::DecodeError> {
        Bundle::decode(bytes)
    }
}
