//! The one evaluator: decode a bundle into an immutable [`Engine`], find routes, decide requests.
//!
//! Used natively (CLI, sidecar, tests) and inside the wasm filter, so this module has no
//! std-only dependency beyond `alloc` types and no YAML. The hot path ([`Engine::evaluate`])
//! allocates nothing for common rules: reasons are a bit set, claims are looked up by binary
//! search on the pre-sorted [`Claims`], and the path given to `http_path` is only copied when it
//! actually needs decoding or normalising.
//!
//! Semantics follow Pomerium (see `docs/policy.md`): each criterion yields pass/fail plus
//! reasons; operators merge them like Pomerium's `merge_with_and` / `merge_with_or`; the
//! allow terms and the deny terms are each OR-ed; then **any** `user-unauthenticated` reason in
//! either result means sign-in, else deny ⇒ 403, allow ⇒ allow, else 403.

mod decode;
mod index;
pub mod path;
#[cfg(test)]
mod tests;

use core::cell::OnceCell;
use std::borrow::Cow;

pub use decode::{BundleError, MAX_DEPTH, compile_route_regex};
use index::Index;

// ---------------------------------------------------------------------------------------------
// Public input types

/// A handle to one route of an [`Engine`] (an index; only valid for the engine that made it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteRef(u32);

impl RouteRef {
    /// Position of the route in definition order.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A client certificate's details as the `client_certificate` criterion needs them.
#[derive(Clone, Copy, Debug, Default)]
pub struct CertInfo<'a> {
    /// SHA-256 of the DER certificate, lower-case hex without separators (64 chars); Envoy's
    /// `connection.sha256_peer_certificate_digest`.
    pub fingerprint_sha256: &'a str,
    /// Base64 (standard, padded) SHA-256 of the SubjectPublicKeyInfo, when known.
    pub spki_hash: Option<&'a str>,
    /// Email subject-alternative names.
    pub san_email: &'a [&'a str],
    /// DNS subject-alternative names.
    pub san_dns: &'a [&'a str],
    /// URI subject-alternative names.
    pub san_uri: &'a [&'a str],
}

/// The downstream TLS client certificate.
#[derive(Clone, Copy, Debug, Default)]
pub enum ClientCertificate<'a> {
    /// None presented, and none required (Portcullis has no downstream client CA setting, so
    /// like Pomerium without `client_ca` this counts as valid for `invalid_client_certificate`).
    #[default]
    None,
    /// Presented and verified.
    Valid(CertInfo<'a>),
    /// Presented but failed verification.
    Invalid,
}

/// What the policy sees of one HTTP request. Borrowed: building one costs nothing.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// `:method`, as sent (case-sensitive).
    pub method: &'a str,
    /// Raw `:path`, query included (the evaluator strips, normalises and decodes it).
    pub path: &'a str,
    /// `Origin` header, if present (an empty value counts as absent for `cors_preflight`).
    pub origin: Option<&'a str>,
    /// `Access-Control-Request-Method` header, if present (empty counts as absent).
    pub access_control_request_method: Option<&'a str>,
    /// The downstream client certificate.
    pub client_certificate: ClientCertificate<'a>,
    /// Current time, unix seconds (for `date`, `day_of_week`, `time_of_day`).
    pub now_unix: i64,
}

impl<'a> Request<'a> {
    /// A plain request: no CORS headers, no client certificate.
    pub fn new(method: &'a str, path: &'a str, now_unix: i64) -> Request<'a> {
        Request {
            method,
            path,
            origin: None,
            access_control_request_method: None,
            client_certificate: ClientCertificate::None,
            now_unix,
        }
    }
}

/// One claim value. JSON numbers are `f64` as in Pomerium (Go `float64`).
#[derive(Clone, Debug, PartialEq)]
pub enum ClaimValue {
    /// A string.
    Str(String),
    /// A number.
    Number(f64),
    /// A boolean.
    Bool(bool),
    /// `null`, an object or a nested list inside a claim list: it counts as an element (list
    /// `is` needs exactly one) but never equals a policy constant.
    Other,
}

/// A session's claims, flattened as Pomerium's policy sees them: nested objects joined with
/// dots, every value a list. Sorted by name for allocation-free lookups.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Claims {
    entries: Vec<(String, Vec<ClaimValue>)>,
}

impl Claims {
    /// From already-flattened entries. A repeated name keeps its last entry.
    pub fn from_flat(entries: impl IntoIterator<Item = (String, Vec<ClaimValue>)>) -> Claims {
        let mut entries: Vec<(String, Vec<ClaimValue>)> = entries.into_iter().collect();
        // Stable sort keeps input order within a name; keep the last one of each run.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(String, Vec<ClaimValue>)> = Vec::with_capacity(entries.len());
        for e in entries {
            match out.last_mut() {
                Some(last) if last.0 == e.0 => *last = e,
                _ => out.push(e),
            }
        }
        Claims { entries: out }
    }

    /// The values of one flattened claim; a missing claim is the empty list.
    pub fn get(&self, name: &str) -> &[ClaimValue] {
        match self.entries.binary_search_by(|e| e.0.as_str().cmp(name)) {
            Ok(i) => self.entries.get(i).map(|e| e.1.as_slice()).unwrap_or(&[]),
            Err(_) => &[],
        }
    }

    /// All claims, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[ClaimValue])> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Number of flattened claims.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No claims at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(feature = "frontend")]
impl Claims {
    /// Flattens a JSON claims object exactly like Pomerium's `identity.Claims.Flatten`: objects
    /// recurse with `parent.child` names, arrays become the list as is, any other value becomes
    /// a one-element list. This is the one implementation (the sidecar uses it too).
    pub fn from_json(obj: &serde_json::Map<String, serde_json::Value>) -> Claims {
        let mut out = Vec::new();
        flatten_into(&mut out, None, obj);
        Claims::from_flat(out)
    }
}

#[cfg(feature = "frontend")]
fn flatten_into(
    out: &mut Vec<(String, Vec<ClaimValue>)>,
    prefix: Option<&str>,
    obj: &serde_json::Map<String, serde_json::Value>,
) {
    use serde_json::Value as J;
    fn scalar(v: &J) -> ClaimValue {
        match v {
            J::String(s) => ClaimValue::Str(s.clone()),
            J::Number(n) => n.as_f64().map_or(ClaimValue::Other, ClaimValue::Number),
            J::Bool(b) => ClaimValue::Bool(*b),
            J::Null | J::Array(_) | J::Object(_) => ClaimValue::Other,
        }
    }
    for (k, v) in obj {
        let name = match prefix {
            Some(p) => format!("{p}.{k}"),
            None => k.clone(),
        };
        match v {
            J::Object(inner) => flatten_into(out, Some(&name), inner),
            J::Array(items) => out.push((name, items.iter().map(scalar).collect())),
            other => out.push((name, vec![scalar(other)])),
        }
    }
}

/// One session's policy input. Built once per session; evaluation only borrows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Subject {
    user_id: String,
    email: String,
    /// Byte range of the email's domain as Pomerium computes it: `split(email, "@")[1]`.
    domain: Option<(usize, usize)>,
    claims: Claims,
}

impl Subject {
    /// A signed-in user.
    pub fn new(user_id: String, email: String, claims: Claims) -> Subject {
        let domain = email.find('@').map(|at| {
            let start = at + 1;
            let end = email
                .get(start..)
                .and_then(|rest| rest.find('@'))
                .map_or(email.len(), |i| start + i);
            (start, end)
        });
        Subject {
            user_id,
            email,
            domain,
            claims,
        }
    }

    /// User id (`user` criterion).
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// Email as the IdP gave it (never lower-cased).
    pub fn email(&self) -> &str {
        &self.email
    }

    /// The email's domain (`domain` criterion); `None` without an `@`.
    pub fn domain(&self) -> Option<&str> {
        self.domain.and_then(|(s, e)| self.email.get(s..e))
    }

    /// Flattened claims.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }
}

// ---------------------------------------------------------------------------------------------
// Outputs

/// Why a request is denied. `Copy`, and never carries user data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// No route matches the request.
    NoRoute,
    /// A `deny` rule matched.
    PolicyDenied,
    /// The presented client certificate is invalid (the implicit deny rule).
    InvalidClientCertificate,
    /// No `allow` rule matched.
    NotAllowed,
}

impl DenyReason {
    /// Stable machine code, e.g. for the 403 page and logs.
    pub fn code(self) -> &'static str {
        match self {
            DenyReason::NoRoute => "no-route",
            DenyReason::PolicyDenied => "policy-denied",
            DenyReason::InvalidClientCertificate => "invalid-client-certificate",
            DenyReason::NotAllowed => "not-allowed",
        }
    }
}

/// The outcome for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Let it through.
    Allow,
    /// 403.
    Deny(DenyReason),
    /// Sign-in needed (302 to the authenticate service for browsers, 401 otherwise).
    Login,
}

impl Decision {
    /// `allow`, `deny` or `login`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny(_) => "deny",
            Decision::Login => "login",
        }
    }
}

/// Non-secret global settings the filter needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `authenticate_service_url`.
    pub authenticate_service_url: String,
    /// `cookie_name`.
    pub cookie_name: String,
    /// `jwt_claims_headers`: (claim, header) pairs, sorted by claim.
    pub jwt_claims_headers: Vec<(String, String)>,
    /// Global default of `pass_identity_headers` (already applied to each [`RouteInfo`]).
    pub pass_identity_headers: bool,
}

/// A route's static facts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteInfo<'a> {
    /// Its handle.
    pub route: RouteRef,
    /// Route id (== Envoy route name).
    pub id: &'a str,
    /// `name`, else the id.
    pub name: &'a str,
    /// The `from` URL as written.
    pub from: &'a str,
    /// The host key it is indexed under (lower-case, `:port` only when not the default).
    pub host: &'a str,
    /// The host has a `*` wildcard: Pomerium routes it only from the catch-all virtual host
    /// (matching `:authority` against the pattern, each `*` = any characters), never from a
    /// concrete host's virtual host; see [`wildcard_host_matches`].
    pub wildcard: bool,
    /// `allow_public_unauthenticated_access`. Not a licence to skip evaluation: a public route
    /// still has Pomerium's implicit deny of invalid client certificates and may have `deny`
    /// rules, some on the user (`uses_identity`; e.g. a `deny` on `email` sends signed-out
    /// users to sign-in, as Pomerium does).
    pub public: bool,
    /// `pass_identity_headers`, resolved against the global default.
    pub pass_identity_headers: bool,
    /// Whether any criterion of the route looks at the user; when false, evaluating with no
    /// subject gives the same answer as with one (the filter may skip the session lookup but
    /// must still call `evaluate`), except for an explicit `pomerium_routes` criterion on
    /// `/.pomerium/jwt` and `/.pomerium/webauthn` paths.
    pub uses_identity: bool,
    /// The OAuth client a session must come from to use this route (per-route
    /// `idp_client_id`, else the global one; empty when none is configured). A session
    /// signed in through another client must sign in again for this route, or per-route
    /// clients would not restrict anything.
    pub idp_client_id: &'a str,
}

/// Which side of the policy a trace line belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// An `allow` rule.
    Allow,
    /// A `deny` rule.
    Deny,
}

/// One evaluated node, in pre-order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceLine {
    /// Allow or deny side.
    pub action: Action,
    /// Where the rule came from (`file:line:column` or `legacy route options`).
    pub origin: String,
    /// Nesting depth (0 = the rule's operator).
    pub depth: usize,
    /// The operator or criterion as written (e.g. `and`, `claim/groups`).
    pub label: String,
    /// Its result.
    pub pass: bool,
    /// Its Pomerium reasons.
    pub reasons: Vec<&'static str>,
}

/// A decision with the evidence (allocating; for `explain` and debugging a 403).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The decision (identical to [`Engine::evaluate`]'s).
    pub decision: Decision,
    /// The merged allow result.
    pub allow: bool,
    /// The merged deny result.
    pub deny: bool,
    /// Reasons of the merged allow result.
    pub allow_reasons: Vec<&'static str>,
    /// Reasons of the merged deny result.
    pub deny_reasons: Vec<&'static str>,
    /// The reasons behind the decision (Pomerium names), sorted.
    pub reasons: Vec<&'static str>,
    /// Human-readable: which rule(s) and criteria decided.
    pub decided_by: Vec<String>,
    /// Every node evaluated.
    pub trace: Vec<TraceLine>,
}

// ---------------------------------------------------------------------------------------------
// Reasons: a bit set of Pomerium reason names.

macro_rules! reasons {
    ($($v:ident = $s:literal,)*) => {
        /// Pomerium's reason names (plus Portcullis' date/time ones).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u8)]
        pub enum Reason { $( #[doc = $s] $v, )* }
        impl Reason {
            /// Every reason, in bit order.
            pub const ALL: &'static [Reason] = &[$(Reason::$v,)*];
            /// The Pomerium name.
            pub fn name(self) -> &'static str { match self { $(Reason::$v => $s,)* } }
        }
    };
}

reasons! {
    Accept = "accept",
    ClaimOk = "claim-ok",
    ClaimUnauthorized = "claim-unauthorized",
    ClientCertificateOk = "client-certificate-ok",
    ClientCertificateUnauthorized = "client-certificate-unauthorized",
    ClientCertificateRequired = "client-certificate-required",
    CorsRequest = "cors-request",
    NonCorsRequest = "non-cors-request",
    DomainOk = "domain-ok",
    DomainUnauthorized = "domain-unauthorized",
    EmailOk = "email-ok",
    EmailUnauthorized = "email-unauthorized",
    GroupsOk = "groups-ok",
    GroupsUnauthorized = "groups-unauthorized",
    HttpMethodOk = "http-method-ok",
    HttpMethodUnauthorized = "http-method-unauthorized",
    HttpPathOk = "http-path-ok",
    HttpPathUnauthorized = "http-path-unauthorized",
    InvalidClientCertificate = "invalid-client-certificate",
    NonPomeriumRoute = "non-pomerium-route",
    PomeriumRoute = "pomerium-route",
    Reject = "reject",
    UserOk = "user-ok",
    UserUnauthenticated = "user-unauthenticated",
    UserUnauthorized = "user-unauthorized",
    ValidClientCertificate = "valid-client-certificate",
    DateOk = "date-ok",
    DateUnauthorized = "date-unauthorized",
    DayOfWeekOk = "day-of-week-ok",
    DayOfWeekUnauthorized = "day-of-week-unauthorized",
    TimeOfDayOk = "time-of-day-ok",
    TimeOfDayUnauthorized = "time-of-day-unauthorized",
}

/// A set of [`Reason`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reasons(u64);

impl Reasons {
    /// The empty set.
    pub const EMPTY: Reasons = Reasons(0);

    /// A one-element set.
    pub fn of(r: Reason) -> Reasons {
        Reasons(1u64 << (r as u8))
    }

    /// Membership.
    pub fn has(self, r: Reason) -> bool {
        self.0 & (1u64 << (r as u8)) != 0
    }

    /// Union.
    pub fn union(self, other: Reasons) -> Reasons {
        Reasons(self.0 | other.0)
    }

    /// Names, sorted (Pomerium sorts its reason lists).
    pub fn names(self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = Reason::ALL
            .iter()
            .filter(|r| self.has(**r))
            .map(|r| r.name())
            .collect();
        v.sort_unstable();
        v
    }
}

/// A criterion or operator result: pass/fail plus reasons.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Pass.
    pub pass: bool,
    /// Reasons.
    pub reasons: Reasons,
}

impl Outcome {
    fn new(pass: bool, r: Reason) -> Outcome {
        Outcome {
            pass,
            reasons: Reasons::of(r),
        }
    }
}

/// Pomerium's operator merges over child outcomes (`merge_with_and` / `merge_with_or` with
/// `invert_criterion_result` for `not` / `nor`).
pub fn merge(op: OpKind, children: impl Iterator<Item = Outcome>) -> Outcome {
    // Gather: union of reasons of passing children, of failing children, and counts.
    let (mut r_pass, mut r_fail, mut n_pass, mut n_fail) =
        (Reasons::EMPTY, Reasons::EMPTY, 0u32, 0u32);
    for c in children {
        if c.pass {
            r_pass = r_pass.union(c.reasons);
            n_pass += 1;
        } else {
            r_fail = r_fail.union(c.reasons);
            n_fail += 1;
        }
    }
    let all = r_pass.union(r_fail);
    match op {
        // all true → true with all reasons; else false with reasons of the false ones.
        OpKind::And if n_fail == 0 => Outcome {
            pass: true,
            reasons: all,
        },
        OpKind::And => Outcome {
            pass: false,
            reasons: r_fail,
        },
        // any true → true with reasons of the true ones; else false with all reasons.
        OpKind::Or if n_pass > 0 => Outcome {
            pass: true,
            reasons: r_pass,
        },
        OpKind::Or => Outcome {
            pass: false,
            reasons: all,
        },
        // inverted and: all originals false → true with all; else false with reasons of the
        // originally-true ones.
        OpKind::Not if n_pass == 0 => Outcome {
            pass: true,
            reasons: all,
        },
        OpKind::Not => Outcome {
            pass: false,
            reasons: r_pass,
        },
        // inverted or: any original false → true with reasons of the originally-false ones;
        // else false with all.
        OpKind::Nor if n_fail > 0 => Outcome {
            pass: true,
            reasons: r_fail,
        },
        OpKind::Nor => Outcome {
            pass: false,
            reasons: all,
        },
    }
}

/// The four operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// All.
    And,
    /// Any.
    Or,
    /// None.
    Not,
    /// Not all.
    Nor,
}

impl OpKind {
    /// As written in PPL.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::And => "and",
            OpKind::Or => "or",
            OpKind::Not => "not",
            OpKind::Nor => "nor",
        }
    }
}

/// The final step: an invalid client certificate is refused first; then sign-in if any
/// `user-unauthenticated`; then deny; then allow; else 403.
pub fn decide(allow: Outcome, deny: Outcome) -> Decision {
    // Pomerium (`authorize/check_response.go`) refuses a bad client certificate before it
    // considers sign-in: no redirect to authenticate for such a client.
    if deny.reasons.has(Reason::InvalidClientCertificate)
        || deny.reasons.has(Reason::ClientCertificateRequired)
    {
        Decision::Deny(DenyReason::InvalidClientCertificate)
    } else if allow
        .reasons
        .union(deny.reasons)
        .has(Reason::UserUnauthenticated)
    {
        Decision::Login
    } else if deny.pass {
        Decision::Deny(DenyReason::PolicyDenied)
    } else if allow.pass {
        Decision::Allow
    } else {
        Decision::Deny(DenyReason::NotAllowed)
    }
}

// ---------------------------------------------------------------------------------------------
// The engine's checked, decoded form.

/// A policy constant.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum K {
    Str(Box<str>),
    Num(f64),
    Bool(bool),
}

impl K {
    fn eq_str(&self, s: &str) -> bool {
        matches!(self, K::Str(k) if &**k == s)
    }

    fn eq_claim(&self, v: &ClaimValue) -> bool {
        match (self, v) {
            (K::Str(a), ClaimValue::Str(b)) => **a == **b,
            (K::Num(a), ClaimValue::Number(b)) => a == b,
            (K::Bool(a), ClaimValue::Bool(b)) => a == b,
            _ => false,
        }
    }
}

/// String matcher condition (on one string value).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum SCond {
    Is(K),
    Not(K),
    Contains(Box<str>),
    StartsWith(Box<str>),
    EndsWith(Box<str>),
    In(Box<[K]>),
    NotIn(Box<[K]>),
}

impl SCond {
    fn matches(&self, s: &str) -> bool {
        match self {
            SCond::Is(k) => k.eq_str(s),
            SCond::Not(k) => !k.eq_str(s),
            SCond::Contains(k) => s.contains(&**k),
            SCond::StartsWith(k) => s.starts_with(&**k),
            SCond::EndsWith(k) => s.ends_with(&**k),
            SCond::In(ks) => ks.iter().any(|k| k.eq_str(s)),
            SCond::NotIn(ks) => !ks.iter().any(|k| k.eq_str(s)),
        }
    }
}

/// List matcher condition (on a claim list).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum LCond {
    Has(K),
    Is(K),
    Exclude(K),
}

impl LCond {
    fn matches(&self, vs: &[ClaimValue]) -> bool {
        match self {
            LCond::Has(k) => vs.iter().any(|v| k.eq_claim(v)),
            LCond::Is(k) => vs.len() == 1 && vs.iter().any(|v| k.eq_claim(v)),
            LCond::Exclude(k) => !vs.iter().any(|v| k.eq_claim(v)),
        }
    }
}

/// Client-certificate condition.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum CertCond {
    Fingerprint(Box<[Box<str>]>),
    Spki(Box<[Box<str>]>),
    SanEmail(SCond),
    SanDns(SCond),
    SanUri(SCond),
}

impl CertCond {
    fn matches(&self, c: &CertInfo<'_>) -> bool {
        match self {
            CertCond::Fingerprint(fs) => fs.iter().any(|f| **f == *c.fingerprint_sha256),
            CertCond::Spki(hs) => c.spki_hash.is_some_and(|h| hs.iter().any(|x| **x == *h)),
            // Each condition may be met by a different SAN, as Pomerium's `cert.X[_]`.
            CertCond::SanEmail(s) => c.san_email.iter().any(|v| s.matches(v)),
            CertCond::SanDns(s) => c.san_dns.iter().any(|v| s.matches(v)),
            CertCond::SanUri(s) => c.san_uri.iter().any(|v| s.matches(v)),
        }
    }
}

/// A checked policy node (a tree; the bundle's flat array becomes owned children).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    Op(OpKind, Box<[CNode]>),
    Accept,
    Reject,
    AuthenticatedUser,
    Claim(Box<str>, Box<[LCond]>),
    Groups(Box<[LCond]>),
    Domain(Box<[SCond]>),
    Email(Box<[SCond]>),
    User(Box<[SCond]>),
    HttpMethod(Box<[SCond]>),
    HttpPath(Box<[SCond]>),
    CorsPreflight,
    ClientCertificate(Box<[CertCond]>),
    InvalidClientCertificate,
    PomeriumRoutes,
    Date {
        after: Option<i64>,
        before: Option<i64>,
    },
    DayOfWeek {
        mask: u8,
        zone: usize,
    },
    TimeOfDay {
        after: Option<i64>,
        before: Option<i64>,
        zone: usize,
    },
}

/// A node and its label (for explanations).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CNode {
    pub(crate) node: Node,
    pub(crate) label: Box<str>,
}

#[derive(Clone, Debug)]
pub(crate) struct TermData {
    pub(crate) node: CNode,
    pub(crate) origin: Box<str>,
}

#[derive(Clone, Debug)]
pub(crate) enum PathMatch {
    Any,
    Prefix(Box<str>),
    Exact(Box<str>),
    Regex(regex_lite::Regex),
}

impl PathMatch {
    fn matches(&self, path_with_query: &str, path: &str) -> bool {
        match self {
            PathMatch::Any => true,
            // Envoy: `prefix` matches the beginning of `:path` (query included).
            PathMatch::Prefix(p) => path_with_query.starts_with(&**p),
            PathMatch::Exact(p) => **p == *path,
            PathMatch::Regex(re) => re.is_match(path),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct RouteData {
    pub(crate) id: Box<str>,
    pub(crate) name: Box<str>,
    pub(crate) from: Box<str>,
    pub(crate) host: Box<str>,
    /// `443` for `https` routes, `80` for `http` ones.
    pub(crate) default_port: &'static str,
    /// The host has a `*` (then only the catch-all virtual host routes it).
    pub(crate) wildcard: bool,
    pub(crate) path: PathMatch,
    pub(crate) public: bool,
    pub(crate) pass_identity_headers: bool,
    pub(crate) uses_identity: bool,
    pub(crate) idp_client_id: Box<str>,
    pub(crate) allow: Box<[TermData]>,
    pub(crate) deny: Box<[TermData]>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ZoneTable {
    pub(crate) name: Box<str>,
    pub(crate) at: Box<[i64]>,
    pub(crate) offsets: Box<[i32]>,
}

impl ZoneTable {
    /// UTC offset (seconds) in force at `t`.
    pub(crate) fn offset_at(&self, t: i64) -> i64 {
        let idx = self.at.partition_point(|&a| a <= t);
        self.offsets.get(idx).copied().unwrap_or(0) as i64
    }
}

/// A decoded, validated bundle. Immutable; share it with `Rc`/`Arc`.
#[derive(Clone, Debug)]
pub struct Engine {
    version: Box<str>,
    settings: Settings,
    routes: Box<[RouteData]>,
    /// Route id → first route with that id.
    by_id: Index<u32>,
    /// Exact host key → its routes, in definition order.
    hosts: Index<Box<[u32]>>,
    wildcard: Box<[u32]>,
    zones: Box<[ZoneTable]>,
}

const MAX_HOST: usize = 256;

/// Lower-cases `s` into `buf` (no allocation); `None` when it does not fit.
fn lower_into<'b>(s: &str, buf: &'b mut [u8; MAX_HOST]) -> Option<&'b str> {
    let dst = buf.get_mut(..s.len())?;
    dst.copy_from_slice(s.as_bytes());
    dst.make_ascii_lowercase();
    core::str::from_utf8(dst).ok()
}

/// Splits `host:port` (IPv6 literals in brackets keep their colons).
fn split_port(authority: &str) -> (&str, Option<&str>) {
    match authority.rfind(':') {
        Some(i) if !authority.get(i..).is_some_and(|t| t.contains(']')) => (
            authority.get(..i).unwrap_or(authority),
            authority.get(i + 1..),
        ),
        _ => (authority, None),
    }
}

/// Does `host` match a route host pattern with `*` wildcards? Pomerium's `WildcardToRegex`
/// semantics without a regex: each `*` matches any run of characters (possibly empty, dots and
/// colons included), everything else literally, and the whole host must match. No allocation;
/// the greedy backtracking walk is O(pattern × host) at worst.
pub fn wildcard_host_matches(pattern: &str, host: &str) -> bool {
    let (p, h) = (pattern.as_bytes(), host.as_bytes());
    let (mut pi, mut hi) = (0usize, 0usize);
    // After the last `*` seen: (pattern index after it, host index it is retried from).
    let mut star: Option<(usize, usize)> = None;
    while let Some(&c) = h.get(hi) {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi + 1, hi));
                pi += 1;
            }
            Some(&x) if x == c => {
                pi += 1;
                hi += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character and retry.
                Some((sp, sh)) => {
                    pi = sp;
                    hi = sh + 1;
                    star = Some((sp, sh + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&b| b == b'*'))
}

/// Does a route host key (`host[:port]`, port only when not the scheme default) with its
/// scheme's default port accept `authority`? As Pomerium's virtual-host domains: the host, and
/// `host:<default port of the route's scheme>` when the route names no port.
fn domain_matches(key: &str, default_port: &str, authority: &str, wildcard: bool) -> bool {
    let eq = |k: &str, a: &str| {
        if wildcard {
            wildcard_host_matches(k, a)
        } else {
            k == a
        }
    };
    if eq(key, authority) {
        return true;
    }
    split_port(key).1.is_none()
        && authority
            .strip_suffix(default_port)
            .and_then(|a| a.strip_suffix(':'))
            .is_some_and(|bare| eq(key, bare))
}

impl Engine {
    /// Decodes and validates a bundle. Never panics on hostile bytes.
    pub fn from_bytes(bundle: &[u8]) -> Result<Engine, BundleError> {
        decode::from_bytes(bundle)
    }

    /// Validates an in-memory bundle (what `from_bytes` does after protobuf decoding).
    pub fn from_bundle(bundle: crate::bundle::Bundle) -> Result<Engine, BundleError> {
        decode::from_bundle(bundle)
    }

    /// The bundle's content hash.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Global settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Number of routes.
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// All routes in definition order.
    pub fn routes(&self) -> impl Iterator<Item = RouteInfo<'_>> {
        (0..self.routes.len() as u32).map(|i| self.route(RouteRef(i)))
    }

    /// The route with this id (Envoy's `xds.route_name`).
    pub fn route_by_id(&self, id: &str) -> Option<RouteRef> {
        self.by_id.get(id).map(|&i| RouteRef(i))
    }

    /// Route lookup by `Host` (may carry `:port`) and raw `:path`, as Pomerium's Envoy
    /// configuration routes: every concrete host has its own virtual host holding only the
    /// routes whose `from` names exactly that host (domains: the host, and `host:<scheme
    /// default port>` when `from` names no port); wildcard routes live only in the catch-all
    /// virtual host. So when some exact-host route accepts the authority, only those routes
    /// are consulted (no fall-through to wildcards, even when no path matches); otherwise the
    /// wildcard routes are, in definition order. The host is lower-cased (a trailing dot is
    /// not removed: such a host matches no exact route); the path is normalised as Envoy's
    /// (merge slashes, remove dot segments). First match wins.
    pub fn find_route(&self, authority: &str, path: &str) -> Option<RouteRef> {
        let mut buf = [0u8; MAX_HOST];
        let host = lower_into(authority, &mut buf)?;
        let (bare, port) = split_port(host);
        let direct: &[u32] = self.hosts.get(host).map_or(&[], |v| v);
        // Routes indexed under the bare host also own `host:<their scheme's default port>`.
        let by_default_port: &[u32] = match port {
            Some(_) => self.hosts.get(bare).map_or(&[], |v| v),
            None => &[],
        };
        let default_port_ok = |i: u32| {
            self.routes
                .get(i as usize)
                .is_some_and(|r| port == Some(r.default_port))
        };
        let exact = !direct.is_empty() || by_default_port.iter().any(|&i| default_port_ok(i));

        let norm = path::normalise(path::strip_query(path));
        let query = path.find('?').and_then(|i| path.get(i..)).unwrap_or("");
        let with_query: Cow<'_, str> = if query.is_empty() {
            Cow::Borrowed(&*norm)
        } else if let Cow::Borrowed(_) = norm {
            Cow::Borrowed(path)
        } else {
            Cow::Owned(format!("{norm}{query}"))
        };
        let path_ok = |i: u32| {
            self.routes
                .get(i as usize)
                .is_some_and(|r| r.path.matches(&with_query, &norm))
        };

        if exact {
            // Merge the two (sorted) exact lists in definition order.
            let (mut a, mut b) = (0usize, 0usize);
            loop {
                let x = direct.get(a).copied();
                let y = by_default_port.get(b).copied();
                let idx = match (x, y) {
                    (None, None) => return None,
                    (Some(x), Some(y)) if x <= y => {
                        a += 1;
                        x
                    }
                    (Some(x), None) => {
                        a += 1;
                        x
                    }
                    (_, Some(y)) => {
                        b += 1;
                        if !default_port_ok(y) {
                            continue;
                        }
                        y
                    }
                };
                if path_ok(idx) {
                    return Some(RouteRef(idx));
                }
            }
        }
        self.wildcard
            .iter()
            .copied()
            .find(|&i| {
                self.routes.get(i as usize).is_some_and(|r| {
                    domain_matches(&r.host, r.default_port, host, true) && path_ok(i)
                })
            })
            .map(RouteRef)
    }

    /// A route's static facts. A foreign/out-of-range handle gives an empty placeholder.
    pub fn route(&self, r: RouteRef) -> RouteInfo<'_> {
        match self.routes.get(r.index()) {
            Some(d) => RouteInfo {
                route: r,
                id: &d.id,
                name: &d.name,
                from: &d.from,
                host: &d.host,
                wildcard: d.wildcard,
                public: d.public,
                pass_identity_headers: d.pass_identity_headers,
                uses_identity: d.uses_identity,
                idp_client_id: &d.idp_client_id,
            },
            None => RouteInfo {
                route: r,
                id: "",
                name: "",
                from: "",
                host: "",
                wildcard: false,
                public: false,
                pass_identity_headers: false,
                uses_identity: false,
                idp_client_id: "",
            },
        }
    }

    /// The decision for one request. Allocation-free except when `http_path` must decode or
    /// normalise the path.
    pub fn evaluate(&self, r: RouteRef, req: &Request<'_>, subject: Option<&Subject>) -> Decision {
        let Some(route) = self.routes.get(r.index()) else {
            return Decision::Deny(DenyReason::NoRoute);
        };
        let cx = Cx::new(self, req, subject);
        let allow = merge(
            OpKind::Or,
            route.allow.iter().map(|t| cx.eval(&t.node, None)),
        );
        let deny = merge(
            OpKind::Or,
            route.deny.iter().map(|t| cx.eval(&t.node, None)),
        );
        decide(allow, deny)
    }

    /// Like [`Engine::evaluate`], with the evidence.
    pub fn explain(
        &self,
        r: RouteRef,
        req: &Request<'_>,
        subject: Option<&Subject>,
    ) -> Explanation {
        let Some(route) = self.routes.get(r.index()) else {
            return Explanation {
                decision: Decision::Deny(DenyReason::NoRoute),
                allow: false,
                deny: false,
                allow_reasons: Vec::new(),
                deny_reasons: Vec::new(),
                reasons: vec!["no-route"],
                decided_by: vec!["no route matches the request".to_string()],
                trace: Vec::new(),
            };
        };
        let cx = Cx::new(self, req, subject);
        let mut trace = Vec::new();
        fn side<'t>(
            cx: &Cx<'_, '_>,
            action: Action,
            terms: &'t [TermData],
            trace: &mut Vec<TraceLine>,
        ) -> Vec<(&'t TermData, Outcome)> {
            let mut results = Vec::new();
            for t in terms {
                let mut lines = Vec::new();
                let o = cx.eval(&t.node, Some(&mut lines));
                for (depth, label, out) in lines {
                    trace.push(TraceLine {
                        action,
                        origin: t.origin.to_string(),
                        depth,
                        label,
                        pass: out.pass,
                        reasons: out.reasons.names(),
                    });
                }
                results.push((t, o));
            }
            results
        }
        let allow_r = side(&cx, Action::Allow, &route.allow, &mut trace);
        let deny_r = side(&cx, Action::Deny, &route.deny, &mut trace);
        let allow = merge(OpKind::Or, allow_r.iter().map(|x| x.1));
        let deny = merge(OpKind::Or, deny_r.iter().map(|x| x.1));
        let decision = decide(allow, deny);
        let describe = |action: &str, (t, o): &(&TermData, Outcome)| {
            format!(
                "{action} rule at {} (`{}`) {}: {}",
                t.origin,
                t.node.label,
                if o.pass { "matched" } else { "did not match" },
                o.reasons.names().join(", ")
            )
        };
        let unauth = |o: &Outcome| o.reasons.has(Reason::UserUnauthenticated);
        let mut decided_by = Vec::new();
        let reasons = match decision {
            Decision::Login => {
                for x in allow_r.iter().filter(|x| unauth(&x.1)) {
                    decided_by.push(describe("allow", x));
                }
                for x in deny_r.iter().filter(|x| unauth(&x.1)) {
                    decided_by.push(describe("deny", x));
                }
                decided_by.push("no signed-in user, and a rule needs one: sign-in".to_string());
                allow.reasons.union(deny.reasons).names()
            }
            Decision::Deny(DenyReason::PolicyDenied | DenyReason::InvalidClientCertificate) => {
                for x in deny_r.iter().filter(|x| x.1.pass) {
                    decided_by.push(describe("deny", x));
                }
                deny.reasons.names()
            }
            Decision::Allow => {
                for x in allow_r.iter().filter(|x| x.1.pass) {
                    decided_by.push(describe("allow", x));
                }
                allow.reasons.names()
            }
            Decision::Deny(_) => {
                for x in &allow_r {
                    decided_by.push(describe("allow", x));
                }
                if allow_r.is_empty() {
                    decided_by.push("the route has no allow rule".to_string());
                }
                allow.reasons.names()
            }
        };
        Explanation {
            decision,
            allow: allow.pass,
            deny: deny.pass,
            allow_reasons: allow.reasons.names(),
            deny_reasons: deny.reasons.names(),
            reasons,
            decided_by,
            trace,
        }
    }

    pub(crate) fn parts(
        version: Box<str>,
        settings: Settings,
        routes: Box<[RouteData]>,
        hosts: Index<Box<[u32]>>,
        wildcard: Box<[u32]>,
        zones: Box<[ZoneTable]>,
    ) -> Engine {
        let by_id = routes
            .iter()
            .enumerate()
            .rev() // the first route with a given id wins
            .map(|(i, r)| (r.id.clone(), i as u32))
            .collect();
        Engine {
            version,
            settings,
            routes,
            by_id,
            hosts,
            wildcard,
            zones,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation

type Lines = Vec<(usize, String, Outcome)>;

struct Cx<'e, 'r> {
    engine: &'e Engine,
    req: &'r Request<'r>,
    subject: Option<&'r Subject>,
    path: OnceCell<Cow<'r, str>>,
}

impl<'e, 'r> Cx<'e, 'r> {
    fn new(engine: &'e Engine, req: &'r Request<'r>, subject: Option<&'r Subject>) -> Self {
        Cx {
            engine,
            req,
            subject,
            path: OnceCell::new(),
        }
    }

    fn zone_offset(&self, zone: usize) -> i64 {
        self.engine
            .zones
            .get(zone)
            .map_or(0, |z| z.offset_at(self.req.now_unix))
    }

    /// Pomerium's session rule: the body is tried first (on an empty session when signed
    /// out); failing that, a session gives the fail reason, no session `user-unauthenticated`.
    fn session_rule(&self, pass: bool, ok: Reason, fail: Reason) -> Outcome {
        if pass {
            Outcome::new(true, ok)
        } else if self.subject.is_some() {
            Outcome::new(false, fail)
        } else {
            Outcome::new(false, Reason::UserUnauthenticated)
        }
    }

    fn plain(pass: bool, ok: Reason, fail: Reason) -> Outcome {
        Outcome::new(pass, if pass { ok } else { fail })
    }

    fn eval(&self, n: &CNode, lines: Option<&mut Lines>) -> Outcome {
        self.eval_at(n, lines, 0)
    }

    fn eval_at(&self, n: &CNode, mut lines: Option<&mut Lines>, depth: usize) -> Outcome {
        let slot = lines.as_deref_mut().map(|l| {
            l.push((depth, n.label.to_string(), Outcome::default()));
            l.len() - 1
        });
        let out = self.eval_node(n, lines.as_deref_mut(), depth);
        if let (Some(l), Some(i)) = (lines, slot)
            && let Some(e) = l.get_mut(i)
        {
            e.2 = out;
        }
        out
    }

    fn eval_node(&self, n: &CNode, mut lines: Option<&mut Lines>, depth: usize) -> Outcome {
        let subj = self.subject;
        let all = |conds: &[SCond], s: Option<&str>| match s {
            Some(s) => conds.iter().all(|c| c.matches(s)),
            None => false,
        };
        match &n.node {
            // Every child is evaluated (no short-circuit): the reasons of all of them
            // matter. Streamed into the merge, so any number of children costs no allocation.
            Node::Op(op, children) => merge(
                *op,
                children
                    .iter()
                    .map(|c| self.eval_at(c, lines.as_deref_mut(), depth + 1)),
            ),
            Node::Accept => Outcome::new(true, Reason::Accept),
            Node::Reject => Outcome::new(false, Reason::Reject),
            Node::AuthenticatedUser => self.session_rule(
                subj.is_some_and(|s| !s.user_id.is_empty()),
                Reason::UserOk,
                Reason::UserUnauthorized,
            ),
            Node::Claim(name, conds) => {
                let vs = subj.map_or(&[][..], |s| s.claims.get(name));
                self.session_rule(
                    conds.iter().all(|c| c.matches(vs)),
                    Reason::ClaimOk,
                    Reason::ClaimUnauthorized,
                )
            }
            // Pomerium reads a directory record that Portcullis never has: its lookup yields
            // no value, so the body fails whatever the matcher (even `exclude`).
            Node::Groups(_) => {
                self.session_rule(false, Reason::GroupsOk, Reason::GroupsUnauthorized)
            }
            // Signed out: Pomerium's email is "" and its domain is undefined (no `@`).
            Node::Domain(c) => self.session_rule(
                all(c, subj.and_then(Subject::domain)),
                Reason::DomainOk,
                Reason::DomainUnauthorized,
            ),
            Node::Email(c) => self.session_rule(
                all(c, Some(subj.map_or("", |s| s.email.as_str()))),
                Reason::EmailOk,
                Reason::EmailUnauthorized,
            ),
            // Signed out: `session.user_id` is undefined, so the body fails.
            Node::User(c) => self.session_rule(
                all(c, subj.map(|s| s.user_id.as_str())),
                Reason::UserOk,
                Reason::UserUnauthorized,
            ),
            Node::HttpMethod(c) => Self::plain(
                all(c, Some(self.req.method)),
                Reason::HttpMethodOk,
                Reason::HttpMethodUnauthorized,
            ),
            Node::HttpPath(c) => {
                let p = self.path.get_or_init(|| path::policy_path(self.req.path));
                Self::plain(
                    all(c, Some(p)),
                    Reason::HttpPathOk,
                    Reason::HttpPathUnauthorized,
                )
            }
            Node::CorsPreflight => Self::plain(
                // Pomerium: `count(header) > 0`, so an empty header is no header.
                self.req.method == "OPTIONS"
                    && self
                        .req
                        .access_control_request_method
                        .is_some_and(|v| !v.is_empty())
                    && self.req.origin.is_some_and(|v| !v.is_empty()),
                Reason::CorsRequest,
                Reason::NonCorsRequest,
            ),
            Node::ClientCertificate(conds) => Self::plain(
                match &self.req.client_certificate {
                    ClientCertificate::Valid(c) => conds.iter().all(|x| x.matches(c)),
                    // Pomerium parses `input.http.client_certificate.leaf` whatever its
                    // validity; an invalid one is denied by the implicit deny rule anyway.
                    ClientCertificate::None | ClientCertificate::Invalid => false,
                },
                Reason::ClientCertificateOk,
                Reason::ClientCertificateUnauthorized,
            ),
            Node::InvalidClientCertificate => match self.req.client_certificate {
                ClientCertificate::None | ClientCertificate::Valid(_) => {
                    Outcome::new(false, Reason::ValidClientCertificate)
                }
                ClientCertificate::Invalid => Outcome::new(true, Reason::InvalidClientCertificate),
            },
            // Portcullis extension (Pomerium's own criterion looks for `/.pomerium/` anywhere
            // in the URL, query included): only a path, query removed and normalised as Envoy
            // routes it, that starts with `/.pomerium/`.
            Node::PomeriumRoutes => {
                let p = path::normalise(path::strip_query(self.req.path));
                if !p.starts_with("/.pomerium/") {
                    Outcome::new(false, Reason::NonPomeriumRoute)
                } else if subj.is_some()
                    || !(p.starts_with("/.pomerium/jwt") || p.starts_with("/.pomerium/webauthn"))
                {
                    Outcome::new(true, Reason::PomeriumRoute)
                } else {
                    Outcome::new(false, Reason::UserUnauthenticated)
                }
            }
            Node::Date { after, before } => {
                let now = self.req.now_unix;
                Self::plain(
                    after.is_none_or(|a| now > a) && before.is_none_or(|b| now < b),
                    Reason::DateOk,
                    Reason::DateUnauthorized,
                )
            }
            Node::DayOfWeek { mask, zone } => {
                let local = self.req.now_unix.saturating_add(self.zone_offset(*zone));
                // 1970-01-01 was a Thursday (bit 0 = Sunday).
                let dow = (local.div_euclid(86_400) + 4).rem_euclid(7);
                Self::plain(
                    mask & (1u8 << dow) != 0,
                    Reason::DayOfWeekOk,
                    Reason::DayOfWeekUnauthorized,
                )
            }
            Node::TimeOfDay {
                after,
                before,
                zone,
            } => {
                let local = self.req.now_unix.saturating_add(self.zone_offset(*zone));
                let t = local.rem_euclid(86_400);
                let pass = match (after, before) {
                    (Some(a), Some(b)) if a <= b => t >= *a && t < *b,
                    // Spans midnight (`after: 22:00`, `before: 06:00`).
                    (Some(a), Some(b)) => t >= *a || t < *b,
                    (Some(a), None) => t >= *a,
                    (None, Some(b)) => t < *b,
                    (None, None) => true,
                };
                Self::plain(pass, Reason::TimeOfDayOk, Reason::TimeOfDayUnauthorized)
            }
        }
    }
}
