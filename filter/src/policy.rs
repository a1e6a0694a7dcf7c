//! What the filter needs from a compiled policy bundle.
//!
//! The worker is generic over this trait so the request logic unit-tests with a tiny fake
//! policy; the wasm build plugs in the real evaluator (`policy_compiler::eval::Engine`,
//! see [`crate::engine`]).

use portcullis_common::api::SessionView;

/// Facts about one route the filter acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMeta<'a> {
    /// `allow_public_unauthenticated_access` (still evaluated: a public route may have
    /// deny rules, and the implicit deny of invalid client certificates).
    pub public: bool,
    /// `pass_identity_headers` (resolved against the global default).
    pub pass_identity_headers: bool,
    /// Whether any criterion looks at the user; if not, evaluating without the session
    /// gives the same answer, so the filter need not look it up.
    pub uses_identity: bool,
    /// The OAuth client a session must come from (empty: any).
    pub idp_client_id: &'a str,
}

/// The request facts policy evaluation reads.
#[derive(Debug, Clone, Copy)]
pub struct EvalRequest<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:path` as received (with query).
    pub path: &'a str,
    /// `origin` header.
    pub origin: Option<&'a str>,
    /// `access-control-request-method` header.
    pub access_control_request_method: Option<&'a str>,
    /// Current time, unix seconds.
    pub now_unix: i64,
}

/// The outcome of evaluating a route's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let the request through.
    Allow,
    /// Refuse it; the code names the reason (never a claim value).
    Deny(&'static str),
    /// The user must sign in (no session, or the policy needs an identity it lacks).
    Login,
}

/// A decoded, immutable policy bundle.
pub trait Policy: Sized {
    /// A cheap handle of one route.
    type Route: Copy;
    /// A session's identity, as the evaluator wants it (built once per cache fill).
    type Subject;

    /// Decode and validate a bundle. A corrupt bundle is an error, never a partial engine.
    fn decode(bytes: &[u8]) -> Result<Self, String>;
    /// The bundle's version (content hash).
    fn version(&self) -> &str;
    /// `cookie_name` of the bundle's settings.
    fn cookie_name(&self) -> &str;
    /// `authenticate_service_url` (scheme + authority).
    fn authenticate_service_url(&self) -> &str;
    /// Header names of `jwt_claims_headers` (to strip from client requests).
    fn claim_header_names(&self) -> Vec<String>;
    /// The route with this id (Envoy route name).
    fn route_by_id(&self, id: &str) -> Option<Self::Route>;
    /// The first route matching `authority` + raw `:path` (Envoy normalisation).
    fn find_route(&self, authority: &str, path: &str) -> Option<Self::Route>;
    /// Facts about a route.
    fn route_meta(&self, route: Self::Route) -> RouteMeta<'_>;
    /// Build the evaluator's subject from a session's policy view.
    fn subject(&self, view: &SessionView) -> Self::Subject;
    /// Decide one request.
    fn evaluate(
        &self,
        route: Self::Route,
        request: &EvalRequest<'_>,
        subject: Option<&Self::Subject>,
    ) -> Verdict;
}
