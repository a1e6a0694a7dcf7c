//! Pomerium Policy Language: the raw value tree → a checked policy model, and the legacy route
//! options → the extra rules Pomerium generates for them (`config/policy_ppl.go`).
//!
//! Every problem is reported (not just the first) with the position of the offending node.
//! The checked model is what both the compiler (→ bundle) and the [`crate::oracle`] consume.
//!
//! Structure, as Pomerium: a policy is a rule or a list of rules; a rule maps actions
//! (`allow`, `deny`) to operators (`and`, `or`, `not`, `nor`), each a list of criteria; the
//! operators of one rule are OR-ed. Portcullis extensions (documented in docs/policy.md):
//! an operator nested as a criterion; the `date`, `day_of_week` and `time_of_day` criteria;
//! `pomerium_routes` in user policies (matches a request path, query removed, that starts with
//! `/.pomerium/`).

use crate::config::Route;
use crate::diag::Diagnostics;
use crate::eval::{Action, OpKind};
use crate::value::{Span, Spanned, Value};

/// Deepest operator nesting accepted (the bundle decoder enforces the same bound).
pub const MAX_NESTING: usize = 24;

/// A policy constant (comparisons are type-sensitive, as Rego's).
#[derive(Clone, Debug, PartialEq)]
pub enum Const {
    /// String.
    Str(String),
    /// Number (YAML integers and floats alike).
    Num(f64),
    /// Boolean.
    Bool(bool),
}

/// A string matcher condition; several on one criterion are AND-ed.
#[derive(Clone, Debug, PartialEq)]
pub enum StrCond {
    /// `is` (or a bare value).
    Is(Const),
    /// `not`.
    Not(Const),
    /// `contains`.
    Contains(String),
    /// `starts_with`.
    StartsWith(String),
    /// `ends_with`.
    EndsWith(String),
    /// `in`.
    In(Vec<Const>),
    /// `not_in`.
    NotIn(Vec<Const>),
}

/// A list matcher condition (claims); several are AND-ed.
#[derive(Clone, Debug, PartialEq)]
pub enum ListCond {
    /// `has` (or a bare value): some element equals.
    Has(Const),
    /// `is`: exactly one element, and it equals.
    Is(Const),
    /// `exclude`: no element equals.
    Exclude(Const),
}

/// A `client_certificate` condition; several are AND-ed.
#[derive(Clone, Debug, PartialEq)]
pub enum CertCond {
    /// `fingerprint`: SHA-256, canonical lower-case hex.
    Fingerprint(Vec<String>),
    /// `spki_hash`: base64 SHA-256 of the SubjectPublicKeyInfo.
    SpkiHash(Vec<String>),
    /// `san_email`.
    SanEmail(StrCond),
    /// `san_dns`.
    SanDns(StrCond),
    /// `san_uri`.
    SanUri(StrCond),
}

/// What a criterion tests.
#[derive(Clone, Debug, PartialEq)]
pub enum CriterionKind {
    /// An operator nested as a criterion (Portcullis extension).
    Op(OpKind, Vec<Criterion>),
    /// `accept`.
    Accept,
    /// `reject`.
    Reject,
    /// `authenticated_user`.
    AuthenticatedUser,
    /// `claim/<name>`.
    Claim(String, Vec<ListCond>),
    /// `groups` (directory groups; always empty in Portcullis).
    Groups(Vec<ListCond>),
    /// `domain`.
    Domain(Vec<StrCond>),
    /// `email`.
    Email(Vec<StrCond>),
    /// `user`.
    User(Vec<StrCond>),
    /// `http_method`.
    HttpMethod(Vec<StrCond>),
    /// `http_path`.
    HttpPath(Vec<StrCond>),
    /// `cors_preflight`.
    CorsPreflight,
    /// `client_certificate`.
    ClientCertificate(Vec<CertCond>),
    /// `invalid_client_certificate`.
    InvalidClientCertificate,
    /// `pomerium_routes`.
    PomeriumRoutes,
    /// `date` (unix seconds, exclusive bounds).
    Date {
        /// `after`.
        after: Option<i64>,
        /// `before`.
        before: Option<i64>,
    },
    /// `day_of_week` (bit 0 = Sunday).
    DayOfWeek {
        /// Accepted days.
        mask: u8,
        /// IANA zone name.
        zone: String,
    },
    /// `time_of_day` (seconds since local midnight; `after` inclusive, `before` exclusive).
    TimeOfDay {
        /// `after`.
        after: Option<u32>,
        /// `before`.
        before: Option<u32>,
        /// IANA zone name.
        zone: String,
    },
}

impl CriterionKind {
    /// Does this criterion (or a nested one) look at the user?
    pub fn uses_identity(&self) -> bool {
        match self {
            CriterionKind::Op(_, cs) => cs.iter().any(|c| c.kind.uses_identity()),
            CriterionKind::AuthenticatedUser
            | CriterionKind::Claim(..)
            | CriterionKind::Groups(_)
            | CriterionKind::Domain(_)
            | CriterionKind::Email(_)
            | CriterionKind::User(_) => true,
            _ => false,
        }
    }
}

/// One criterion.
#[derive(Clone, Debug, PartialEq)]
pub struct Criterion {
    /// Where it is written.
    pub span: Span,
    /// As written (`claim/groups`, `email`, `and`).
    pub label: String,
    /// What it tests.
    pub kind: CriterionKind,
}

/// One operator of one rule: the unit OR-ed into an action's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Term {
    /// `allow` or `deny`.
    pub action: Action,
    /// The operator.
    pub op: OpKind,
    /// `file:line:column` of the operator, or `legacy route options (…)`.
    pub origin: String,
    /// Its criteria (never empty: Pomerium skips empty operators).
    pub criteria: Vec<Criterion>,
}

/// A route's complete policy: the legacy rules Pomerium always generates plus `policy`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoutePolicy {
    /// Allow terms (OR-ed).
    pub allow: Vec<Term>,
    /// Deny terms (OR-ed).
    pub deny: Vec<Term>,
}

impl RoutePolicy {
    /// Does any criterion look at the user?
    pub fn uses_identity(&self) -> bool {
        self.allow
            .iter()
            .chain(&self.deny)
            .any(|t| t.criteria.iter().any(|c| c.kind.uses_identity()))
    }
}

// ---------------------------------------------------------------------------------------------

struct Cx<'a> {
    file: &'a str,
    diags: Diagnostics,
}

impl Cx<'_> {
    fn err(&mut self, span: Span, msg: impl Into<String>) {
        self.diags.error(self.file, span, msg);
    }
    fn warn(&mut self, span: Span, msg: impl Into<String>) {
        self.diags.warning(self.file, span, msg);
    }
}

/// Builds a route's policy: Pomerium's generated allow rule (the legacy options, as current
/// Pomerium's `config/policy_ppl.go`: no `pomerium_routes` criterion — `/.pomerium/` paths are
/// control-plane routes the sidecar serves, not policy), then the route's `policy`.
///
/// Pomerium adds `deny: invalid_client_certificate` only when downstream client-certificate
/// verification is configured (`AddDefaultClientCertificateRule`); Portcullis refuses those
/// options (`downstream_mtls`, `tls_downstream_client_ca`), so it never generates that rule.
/// Errors and warnings come back together; the policy is only meaningful without errors.
pub fn route_policy(route: &Route) -> (RoutePolicy, Diagnostics) {
    let file = route.file.as_str();
    let mut cx = Cx {
        file,
        diags: Diagnostics::new(),
    };
    let origin = format!(
        "legacy route options ({file}:{}:{})",
        route.span.line, route.span.column
    );
    let crit = |span: Span, label: &str, kind: CriterionKind| Criterion {
        span,
        label: label.to_string(),
        kind,
    };
    let mut allow = Vec::new();
    if route.allow_public_unauthenticated_access.value {
        let s = route.allow_public_unauthenticated_access.span;
        allow.push(crit(s, "accept", CriterionKind::Accept));
    }
    if route.cors_allow_preflight.value {
        let s = route.cors_allow_preflight.span;
        allow.push(crit(s, "cors_preflight", CriterionKind::CorsPreflight));
    }
    if route.allow_any_authenticated_user.value {
        let s = route.allow_any_authenticated_user.span;
        allow.push(crit(
            s,
            "authenticated_user",
            CriterionKind::AuthenticatedUser,
        ));
    }
    for d in &route.allowed_domains {
        let c = vec![StrCond::Is(Const::Str(d.value.clone()))];
        allow.push(crit(d.span, "domain", CriterionKind::Domain(c)));
    }
    // Pomerium sorts the claim names; values keep their order.
    let mut claims: Vec<&(Spanned<String>, Vec<Spanned<Value>>)> =
        route.allowed_idp_claims.iter().collect();
    claims.sort_by(|a, b| a.0.value.cmp(&b.0.value));
    for (name, values) in claims {
        for v in values {
            if let Some(k) = scalar(&mut cx, v, "allowed_idp_claims value") {
                let kind = CriterionKind::Claim(name.value.clone(), vec![ListCond::Has(k)]);
                allow.push(crit(v.span, &format!("claim/{}", name.value), kind));
            }
        }
    }
    for u in &route.allowed_users {
        let is = || vec![StrCond::Is(Const::Str(u.value.clone()))];
        allow.push(crit(u.span, "user", CriterionKind::User(is())));
        allow.push(crit(u.span, "email", CriterionKind::Email(is())));
    }
    let mut policy = RoutePolicy::default();
    // Pomerium skips an operator without criteria (a route with no legacy options).
    if !allow.is_empty() {
        policy.allow.push(Term {
            action: Action::Allow,
            op: OpKind::Or,
            origin,
            criteria: allow,
        });
    }
    if let Some(p) = &route.policy {
        for t in parse_with(&mut cx, p) {
            match t.action {
                Action::Allow => policy.allow.push(t),
                Action::Deny => policy.deny.push(t),
            }
        }
    }
    (policy, cx.diags)
}

/// Parses a PPL document (the value of `policy`) into terms, in rule order. Problems are
/// reported against `file`.
pub fn parse(file: &str, v: &Spanned<Value>) -> (Vec<Term>, Diagnostics) {
    let mut cx = Cx {
        file,
        diags: Diagnostics::new(),
    };
    let terms = parse_with(&mut cx, v);
    (terms, cx.diags)
}

fn parse_with(cx: &mut Cx<'_>, v: &Spanned<Value>) -> Vec<Term> {
    let mut terms = Vec::new();
    match &v.value {
        Value::Map(_) => rule(cx, v, &mut terms),
        Value::Seq(items) => {
            for item in items {
                if let Value::Map(_) = item.value {
                    rule(cx, item, &mut terms);
                } else {
                    cx.err(
                        item.span,
                        format!(
                            "policy rule must be a map of actions, found {}",
                            item.value.kind()
                        ),
                    );
                }
            }
        }
        other => cx.err(
            v.span,
            format!(
                "policy must be a rule or a list of rules, found {}",
                other.kind()
            ),
        ),
    }
    terms
}

fn rule(cx: &mut Cx<'_>, v: &Spanned<Value>, out: &mut Vec<Term>) {
    let Some(entries) = v.value.as_map() else {
        return;
    };
    // Pomerium orders one rule map's actions: allow before deny.
    let mut actions: Vec<(Action, &Spanned<Value>)> = Vec::new();
    for (k, body) in entries {
        let action = match k.value.as_str() {
            "allow" => Action::Allow,
            "deny" => Action::Deny,
            other => {
                cx.err(
                    k.span,
                    format!("unknown policy action `{other}` (expected `allow` or `deny`)"),
                );
                continue;
            }
        };
        actions.push((action, body));
    }
    actions.sort_by_key(|(a, _)| matches!(a, Action::Deny));
    for (action, body) in actions {
        let Some(ops) = body.value.as_map() else {
            cx.err(
                body.span,
                format!(
                    "policy action must be a map of operators (`and`, `or`, `not`, `nor`), found {}",
                    body.value.kind()
                ),
            );
            continue;
        };
        let mut found: Vec<(OpKind, Term)> = Vec::new();
        for (k, list) in ops {
            let op = match op_kind(&k.value) {
                Some(op) => op,
                // Pomerium tolerates an `action` key here.
                None if k.value == "action" => continue,
                None => {
                    cx.err(
                        k.span,
                        format!(
                            "unknown policy operator `{}` (expected `and`, `or`, `not` or `nor`)",
                            k.value
                        ),
                    );
                    continue;
                }
            };
            let criteria = criteria_list(cx, &k.value, list, 1);
            if !criteria.is_empty() {
                found.push((
                    op,
                    Term {
                        action,
                        op,
                        origin: format!("{}:{}:{}", cx.file, k.span.line, k.span.column),
                        criteria,
                    },
                ));
            }
        }
        // Pomerium generates and, or, not, nor in that order.
        found.sort_by_key(|(op, _)| *op as u8);
        out.extend(found.into_iter().map(|(_, t)| t));
    }
}

fn op_kind(s: &str) -> Option<OpKind> {
    match s {
        "and" => Some(OpKind::And),
        "or" => Some(OpKind::Or),
        "not" => Some(OpKind::Not),
        "nor" => Some(OpKind::Nor),
        _ => None,
    }
}

fn criteria_list(cx: &mut Cx<'_>, op: &str, v: &Spanned<Value>, depth: usize) -> Vec<Criterion> {
    let Some(items) = v.value.as_seq() else {
        cx.err(
            v.span,
            format!(
                "`{op}` must be a list of criteria, found {}",
                v.value.kind()
            ),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        let Some(entries) = item.value.as_map() else {
            cx.err(
                item.span,
                format!(
                    "a criterion must be a map with one key (e.g. `email: ...`), found {}",
                    item.value.kind()
                ),
            );
            continue;
        };
        let [(key, data)] = entries else {
            cx.err(
                item.span,
                format!(
                    "a criterion must have exactly one key, found {}",
                    entries.len()
                ),
            );
            continue;
        };
        if let Some(c) = criterion(cx, key, data, depth) {
            out.push(c);
        }
    }
    out
}

fn criterion(
    cx: &mut Cx<'_>,
    key: &Spanned<String>,
    data: &Spanned<Value>,
    depth: usize,
) -> Option<Criterion> {
    let (name, sub) = match key.value.split_once('/') {
        Some((n, s)) => (n, Some(s)),
        None => (key.value.as_str(), None),
    };
    if sub.is_some() && name != "claim" {
        cx.warn(
            key.span,
            format!("`{name}` takes no `/` sub-path; `{}` is ignored", key.value),
        );
    }
    let span = key.span;
    let label = key.value.clone();
    let kind = match name {
        "and" | "or" | "not" | "nor" if sub.is_none() => {
            let op = op_kind(name)?;
            if depth >= MAX_NESTING {
                cx.err(
                    span,
                    format!("policy operators nested deeper than {MAX_NESTING}"),
                );
                return None;
            }
            let inner = criteria_list(cx, name, data, depth + 1);
            if inner.is_empty() {
                if data.value.as_seq().is_none_or(|s| !s.is_empty()) {
                    // Not a list, or its criteria had errors: already reported.
                    return None;
                }
                cx.err(
                    span,
                    format!("nested `{name}` needs at least one criterion"),
                );
                return None;
            }
            CriterionKind::Op(op, inner)
        }
        "accept" => CriterionKind::Accept,
        "reject" => CriterionKind::Reject,
        "authenticated_user" => CriterionKind::AuthenticatedUser,
        "cors_preflight" => CriterionKind::CorsPreflight,
        "invalid_client_certificate" => CriterionKind::InvalidClientCertificate,
        "pomerium_routes" => CriterionKind::PomeriumRoutes,
        "claim" => {
            let claim = sub.unwrap_or("");
            let conds = list_matcher(cx, &label, data)?;
            if claim.is_empty() {
                // Pomerium accepts it; the rule never matches.
                cx.warn(
                    span,
                    "`claim` without a claim name never matches (pomerium accepts it); write `claim/<name>`",
                );
                CriterionKind::Claim(String::new(), never_list_conds())
            } else {
                CriterionKind::Claim(claim.to_string(), conds)
            }
        }
        "groups" => {
            cx.warn(
                span,
                "`groups` uses directory data, which Portcullis does not have: it never matches; \
                 use `claim/groups` for the identity provider's groups claim",
            );
            CriterionKind::Groups(list_matcher(cx, &label, data)?)
        }
        "domain" => CriterionKind::Domain(string_matcher(cx, &label, data)?),
        "email" => CriterionKind::Email(string_matcher(cx, &label, data)?),
        "user" => CriterionKind::User(string_matcher(cx, &label, data)?),
        "http_method" => CriterionKind::HttpMethod(string_matcher(cx, &label, data)?),
        "http_path" => CriterionKind::HttpPath(string_matcher(cx, &label, data)?),
        "client_certificate" => CriterionKind::ClientCertificate(cert_matcher(cx, data)?),
        "date" => date(cx, data)?,
        "day_of_week" => day_of_week(cx, data)?,
        "time_of_day" => time_of_day(cx, data)?,
        _ => {
            cx.err(span, format!("unknown policy criterion `{}`", key.value));
            return None;
        }
    };
    Some(Criterion { span, label, kind })
}

/// A scalar constant; lists, maps and null are errors (they can never match).
fn scalar(cx: &mut Cx<'_>, v: &Spanned<Value>, what: &str) -> Option<Const> {
    match &v.value {
        Value::String(s) => Some(Const::Str(s.clone())),
        Value::Int(i) => Some(Const::Num(*i as f64)),
        Value::Float(f) => Some(Const::Num(*f)),
        Value::Bool(b) => Some(Const::Bool(*b)),
        other => {
            cx.err(
                v.span,
                format!(
                    "{what} must be a string, number or boolean, found {}",
                    other.kind()
                ),
            );
            None
        }
    }
}

fn string(cx: &mut Cx<'_>, v: &Spanned<Value>, what: &str) -> Option<String> {
    match &v.value {
        Value::String(s) => Some(s.clone()),
        other => {
            cx.err(
                v.span,
                format!("{what} must be a string, found {}", other.kind()),
            );
            None
        }
    }
}

fn scalar_list(cx: &mut Cx<'_>, v: &Spanned<Value>, what: &str) -> Option<Vec<Const>> {
    let Some(items) = v.value.as_seq() else {
        cx.err(
            v.span,
            format!("{what} needs a list of values, found {}", v.value.kind()),
        );
        return None;
    };
    let mut ok = true;
    let mut out = Vec::new();
    for i in items {
        match scalar(cx, i, &format!("{what} element")) {
            Some(k) => out.push(k),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

const STRING_MATCHERS: &str = "`is`, `not`, `contains`, `starts_with`, `ends_with`, `in`, `not_in`";

/// What a list given where one value is expected compiles to: Pomerium accepts it, and it
/// never matches (Rego compares the whole list with one value).
fn never_matching_list(cx: &mut Cx<'_>, label: &str, v: &Spanned<Value>, hint: &str) {
    cx.warn(
        v.span,
        format!("`{label}` given a list: pomerium accepts it but it never matches ({hint})"),
    );
}

fn string_matcher(cx: &mut Cx<'_>, label: &str, v: &Spanned<Value>) -> Option<Vec<StrCond>> {
    if v.value.as_seq().is_some() {
        never_matching_list(cx, label, v, "for any of several values use `in: [...]`");
        // `in` an empty list: false for every string.
        return Some(vec![StrCond::In(Vec::new())]);
    }
    let Some(entries) = v.value.as_map() else {
        return Some(vec![StrCond::Is(scalar(cx, v, &format!("`{label}`"))?)]);
    };
    let mut ok = true;
    let mut out = Vec::new();
    for (k, val) in entries {
        match string_cond(cx, label, k, val) {
            Some(c) => out.push(c),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn string_cond(
    cx: &mut Cx<'_>,
    label: &str,
    k: &Spanned<String>,
    val: &Spanned<Value>,
) -> Option<StrCond> {
    let what = format!("`{label}` matcher `{}`", k.value);
    Some(match k.value.as_str() {
        "is" => StrCond::Is(scalar(cx, val, &what)?),
        "not" => StrCond::Not(scalar(cx, val, &what)?),
        "contains" => StrCond::Contains(string(cx, val, &what)?),
        "starts_with" => StrCond::StartsWith(string(cx, val, &what)?),
        "ends_with" => StrCond::EndsWith(string(cx, val, &what)?),
        "in" => StrCond::In(scalar_list(cx, val, &what)?),
        "not_in" => StrCond::NotIn(scalar_list(cx, val, &what)?),
        other => {
            cx.err(
                k.span,
                format!(
                    "unknown string matcher `{other}` in `{label}` (expected {STRING_MATCHERS})"
                ),
            );
            return None;
        }
    })
}

/// List conditions no claim list meets: `has x` and `exclude x` together.
fn never_list_conds() -> Vec<ListCond> {
    let k = Const::Bool(false);
    vec![ListCond::Has(k.clone()), ListCond::Exclude(k)]
}

fn list_matcher(cx: &mut Cx<'_>, label: &str, v: &Spanned<Value>) -> Option<Vec<ListCond>> {
    if v.value.as_seq().is_some() {
        never_matching_list(
            cx,
            label,
            v,
            "for any of several values use one criterion per value under `or`",
        );
        return Some(never_list_conds());
    }
    let Some(entries) = v.value.as_map() else {
        return Some(vec![ListCond::Has(scalar(cx, v, &format!("`{label}`"))?)]);
    };
    let mut ok = true;
    let mut out = Vec::new();
    for (k, val) in entries {
        let what = format!("`{label}` matcher `{}`", k.value);
        let c = match k.value.as_str() {
            "has" => scalar(cx, val, &what).map(ListCond::Has),
            "is" => scalar(cx, val, &what).map(ListCond::Is),
            "exclude" => scalar(cx, val, &what).map(ListCond::Exclude),
            other => {
                cx.err(
                    k.span,
                    format!(
                        "unknown list matcher `{other}` in `{label}` (expected `has`, `is`, `exclude`)"
                    ),
                );
                None
            }
        };
        match c {
            Some(c) => out.push(c),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn cert_matcher(cx: &mut Cx<'_>, v: &Spanned<Value>) -> Option<Vec<CertCond>> {
    let Some(entries) = v.value.as_map() else {
        cx.err(
            v.span,
            format!(
                "`client_certificate` needs a map (`fingerprint`, `spki_hash`, `san_email`, \
                 `san_dns`, `san_uri`), found {}",
                v.value.kind()
            ),
        );
        return None;
    };
    let mut ok = true;
    let mut out = Vec::new();
    for (k, val) in entries {
        let c = match k.value.as_str() {
            "fingerprint" => strings_or_one(cx, val, "certificate fingerprint").and_then(|fs| {
                let mut good = true;
                let mut canon = Vec::new();
                for (f, span) in fs {
                    match canonical_fingerprint(&f) {
                        Some(c) => canon.push(c),
                        None => {
                            cx.err(span, format!("unsupported certificate fingerprint format `{f}`"));
                            good = false;
                        }
                    }
                }
                good.then_some(CertCond::Fingerprint(canon))
            }),
            "spki_hash" => strings_or_one(cx, val, "certificate SPKI hash").and_then(|hs| {
                let mut good = true;
                for (h, span) in &hs {
                    if !is_sha256_base64(h) {
                        cx.err(
                            *span,
                            format!("certificate SPKI hash must be a base64-encoded SHA-256 hash (was `{h}`)"),
                        );
                        good = false;
                    }
                }
                good.then(|| CertCond::SpkiHash(hs.into_iter().map(|x| x.0).collect()))
            }),
            "san_email" | "san_dns" | "san_uri" => {
                let label = format!("client_certificate.{}", k.value);
                string_matcher(cx, &label, val).and_then(|conds| {
                    // Each condition may be met by a different SAN (as Pomerium's Rego).
                    let wrap = |c: StrCond| match k.value.as_str() {
                        "san_email" => CertCond::SanEmail(c),
                        "san_dns" => CertCond::SanDns(c),
                        _ => CertCond::SanUri(c),
                    };
                    let mut it = conds.into_iter().map(wrap);
                    let first = it.next();
                    out.extend(it);
                    first
                })
            }
            other => {
                cx.err(
                    k.span,
                    format!("unsupported certificate matcher condition `{other}`"),
                );
                None
            }
        };
        match c {
            Some(c) => out.push(c),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn strings_or_one(cx: &mut Cx<'_>, v: &Spanned<Value>, what: &str) -> Option<Vec<(String, Span)>> {
    match &v.value {
        Value::String(s) => Some(vec![(s.clone(), v.span)]),
        Value::Seq(items) => {
            let mut ok = true;
            let mut out = Vec::new();
            for i in items {
                match string(cx, i, what) {
                    Some(s) => out.push((s, i.span)),
                    None => ok = false,
                }
            }
            ok.then_some(out)
        }
        other => {
            cx.err(
                v.span,
                format!(
                    "{what} expects a string or a list of strings, found {}",
                    other.kind()
                ),
            );
            None
        }
    }
}

/// Pomerium accepts 64 lower-case hex digits, or 32 upper-case hex bytes joined by colons.
fn canonical_fingerprint(f: &str) -> Option<String> {
    let short = f.len() == 64
        && f.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if short {
        return Some(f.to_string());
    }
    let parts: Vec<&str> = f.split(':').collect();
    let long = parts.len() == 32
        && parts.iter().all(|p| {
            p.len() == 2
                && p.bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        });
    long.then(|| parts.concat().to_ascii_lowercase())
}

fn is_sha256_base64(h: &str) -> bool {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(h)
        .is_ok_and(|b| b.len() == 32)
}

// --- date / day_of_week / time_of_day (Portcullis extensions) -------------------------------

fn zone_of(cx: &mut Cx<'_>, m: &Spanned<Value>) -> Option<String> {
    match m.value.get("timezone") {
        None => Some("UTC".to_string()),
        Some(z) => {
            let name = string(cx, z, "`timezone`")?;
            if name.parse::<chrono_tz::Tz>().is_err() {
                cx.err(
                    z.span,
                    format!("unknown time zone `{name}` (use an IANA name like `Europe/Paris`)"),
                );
                return None;
            }
            Some(name)
        }
    }
}

fn check_keys(cx: &mut Cx<'_>, what: &str, m: &Spanned<Value>, allowed: &[&str]) -> bool {
    let mut ok = true;
    for (k, _) in m.value.as_map().unwrap_or(&[]) {
        if !allowed.contains(&k.value.as_str()) {
            let list: Vec<String> = allowed.iter().map(|a| format!("`{a}`")).collect();
            cx.err(
                k.span,
                format!(
                    "unknown `{what}` matcher `{}` (expected {})",
                    k.value,
                    list.join(", ")
                ),
            );
            ok = false;
        }
    }
    ok
}

fn date(cx: &mut Cx<'_>, v: &Spanned<Value>) -> Option<CriterionKind> {
    if v.value.as_map().is_none() {
        cx.err(
            v.span,
            format!(
                "`date` needs a map with `after` and/or `before`, found {}",
                v.value.kind()
            ),
        );
        return None;
    }
    if !check_keys(cx, "date", v, &["after", "before"]) {
        return None;
    }
    let mut bound = |key: &str| -> Result<Option<i64>, ()> {
        let Some(x) = v.value.get(key) else {
            return Ok(None);
        };
        let s = string(cx, x, &format!("`date` `{key}`")).ok_or(())?;
        match parse_instant(&s) {
            Some(t) => Ok(Some(t)),
            None => {
                cx.err(
                    x.span,
                    format!("`date` `{key}` must be an RFC 3339 time (`2025-01-31T09:00:00Z`) or a date (`2025-01-31`, midnight UTC), found `{s}`"),
                );
                Err(())
            }
        }
    };
    let after = bound("after");
    let before = bound("before");
    let (Ok(after), Ok(before)) = (after, before) else {
        return None;
    };
    if after.is_none() && before.is_none() {
        cx.err(v.span, "`date` needs `after` and/or `before`");
        return None;
    }
    Some(CriterionKind::Date { after, before })
}

fn parse_instant(s: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp());
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| dt.and_utc().timestamp())
}

const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const FULL_DAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

fn day_index(s: &str) -> Option<u8> {
    let l = s.trim().to_ascii_lowercase();
    (0u8..7).find(|&i| {
        DAYS.get(i as usize).is_some_and(|d| *d == l)
            || FULL_DAYS.get(i as usize).is_some_and(|d| *d == l)
    })
}

/// `mon`, `monday`, `mon-fri` (wrapping allowed: `fri-mon`), or a comma list of those.
fn day_mask(s: &str) -> Option<u8> {
    let mut mask = 0u8;
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day_index(a)?, day_index(b)?);
                let mut d = a;
                loop {
                    mask |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => mask |= 1 << day_index(part)?,
        }
    }
    Some(mask)
}

fn day_of_week(cx: &mut Cx<'_>, v: &Spanned<Value>) -> Option<CriterionKind> {
    let (days, zone): (Vec<&Spanned<Value>>, String) = match &v.value {
        Value::Map(_) => {
            if !check_keys(cx, "day_of_week", v, &["is", "in", "timezone"]) {
                return None;
            }
            let zone = zone_of(cx, v)?;
            let mut days = Vec::new();
            if let Some(is) = v.value.get("is") {
                days.push(is);
            }
            if let Some(list) = v.value.get("in") {
                match list.value.as_seq() {
                    Some(items) => days.extend(items.iter()),
                    None => {
                        cx.err(
                            list.span,
                            format!(
                                "`day_of_week` matcher `in` needs a list, found {}",
                                list.value.kind()
                            ),
                        );
                        return None;
                    }
                }
            }
            if days.is_empty() {
                cx.err(v.span, "`day_of_week` needs `is` or `in`");
                return None;
            }
            (days, zone)
        }
        Value::Seq(items) => (items.iter().collect(), "UTC".to_string()),
        _ => (vec![v], "UTC".to_string()),
    };
    let mut mask = 0u8;
    let mut ok = true;
    for d in days {
        let m = string(cx, d, "`day_of_week` day").and_then(|s| {
            let m = day_mask(&s);
            if m.is_none() {
                cx.err(d.span, format!("invalid day of week `{s}` (use `mon`…`sun`, `monday`, ranges like `mon-fri`)"));
            }
            m
        });
        match m {
            Some(m) => mask |= m,
            None => ok = false,
        }
    }
    ok.then_some(CriterionKind::DayOfWeek { mask, zone })
}

fn parse_clock(s: &str) -> Option<u32> {
    let parts: Vec<&str> = s.split(':').collect();
    let num = |p: Option<&&str>, max: u32| -> Option<u32> {
        let p = p?;
        if p.len() != 2 {
            return None;
        }
        p.parse::<u32>().ok().filter(|&n| n <= max)
    };
    let (h, m, sec) = match parts.len() {
        2 => (num(parts.first(), 24)?, num(parts.get(1), 59)?, 0),
        3 => (
            num(parts.first(), 24)?,
            num(parts.get(1), 59)?,
            num(parts.get(2), 59)?,
        ),
        _ => return None,
    };
    let t = h * 3600 + m * 60 + sec;
    (t <= 86_400).then_some(t)
}

fn time_of_day(cx: &mut Cx<'_>, v: &Spanned<Value>) -> Option<CriterionKind> {
    if v.value.as_map().is_none() {
        cx.err(v.span, format!("`time_of_day` needs a map with `after` and/or `before` (and optional `timezone`), found {}", v.value.kind()));
        return None;
    }
    if !check_keys(cx, "time_of_day", v, &["after", "before", "timezone"]) {
        return None;
    }
    let zone = zone_of(cx, v);
    let mut bound = |key: &str| -> Result<Option<u32>, ()> {
        let Some(x) = v.value.get(key) else {
            return Ok(None);
        };
        let s = string(cx, x, &format!("`time_of_day` `{key}`")).ok_or(())?;
        match parse_clock(&s) {
            Some(t) => Ok(Some(t)),
            None => {
                cx.err(
                    x.span,
                    format!("`time_of_day` `{key}` must be `HH:MM` or `HH:MM:SS`, found `{s}`"),
                );
                Err(())
            }
        }
    };
    let after = bound("after");
    let before = bound("before");
    let (Ok(after), Ok(before), Some(zone)) = (after, before, zone) else {
        return None;
    };
    if after.is_none() && before.is_none() {
        cx.err(v.span, "`time_of_day` needs `after` and/or `before`");
        return None;
    }
    Some(CriterionKind::TimeOfDay {
        after,
        before,
        zone,
    })
}

#[cfg(test)]
mod tests;
