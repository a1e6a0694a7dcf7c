//! [`Policy`] on the real evaluator, `policy_compiler::eval::Engine` (the same code
//! `policy-compiler eval` runs natively).

use crate::policy::{EvalRequest, Policy, RouteMeta, Verdict};
use policy_compiler::eval::{
    self, ClaimValue, Claims, ClientCertificate, Decision, RouteRef, Subject,
};
use portcullis_common::api::{SessionView, claim_value::Kind};

/// The compiled bundle the filter evaluates.
pub struct Engine(eval::Engine);

impl Policy for Engine {
    type Route = RouteRef;
    type Subject = Subject;

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        eval::Engine::from_bytes(bytes)
            .map(Engine)
            .map_err(|e| e.to_string())
    }

    fn version(&self) -> &str {
        self.0.version()
    }

    fn cookie_name(&self) -> &str {
        &self.0.settings().cookie_name
    }

    fn authenticate_service_url(&self) -> &str {
        &self.0.settings().authenticate_service_url
    }

    fn claim_header_names(&self) -> Vec<String> {
        self.0
            .settings()
            .jwt_claims_headers
            .iter()
            .map(|(_claim, header)| header.clone())
            .collect()
    }

    fn route_by_id(&self, id: &str) -> Option<RouteRef> {
        self.0.route_by_id(id)
    }

    fn find_route(&self, authority: &str, path: &str) -> Option<RouteRef> {
        self.0.find_route(authority, path)
    }

    fn route_meta(&self, route: RouteRef) -> RouteMeta<'_> {
        let info = self.0.route(route);
        RouteMeta {
            public: info.public,
            pass_identity_headers: info.pass_identity_headers,
            uses_identity: info.uses_identity,
            idp_client_id: info.idp_client_id,
        }
    }

    fn subject(&self, view: &SessionView) -> Subject {
        let claims = Claims::from_flat(view.claims.iter().map(|c| {
            let values = c
                .values
                .iter()
                .map(|v| match &v.kind {
                    Some(Kind::Str(s)) => ClaimValue::Str(s.clone()),
                    Some(Kind::Number(n)) => ClaimValue::Number(*n),
                    Some(Kind::Bool(b)) => ClaimValue::Bool(*b),
                    None => ClaimValue::Other,
                })
                .collect();
            (c.key.clone(), values)
        }));
        Subject::new(view.user_id.clone(), view.email.clone(), claims)
    }

    fn evaluate(
        &self,
        route: RouteRef,
        request: &EvalRequest<'_>,
        subject: Option<&Subject>,
    ) -> Verdict {
        let req = eval::Request {
            method: request.method,
            path: request.path,
            origin: request.origin,
            access_control_request_method: request.access_control_request_method,
            // Client certificates are not read yet (see docs/filter.md).
            client_certificate: ClientCertificate::None,
            now_unix: request.now_unix,
        };
        match self.0.evaluate(route, &req, subject) {
            Decision::Allow => Verdict::Allow,
            Decision::Deny(r) => Verdict::Deny(r.code()),
            Decision::Login => Verdict::Login,
        }
    }
}
