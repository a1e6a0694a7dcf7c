//! The test oracle: a plain tree-walking interpreter over the checked PPL model
//! ([`crate::ppl::RoutePolicy`]), written independently of the compiled evaluator — reason
//! *sets of names*, direct Rego-style merges, time zones straight from `chrono-tz` instead of
//! the bundle's tables, its own path decoding. Differential tests check that the compiled
//! [`crate::eval::Engine`] agrees with it.

use std::collections::BTreeSet;

use chrono::{Datelike as _, TimeZone as _, Timelike as _};

use crate::eval::{ClaimValue, ClientCertificate, Decision, DenyReason, OpKind, Request, Subject};
use crate::ppl::{CertCond, Const, Criterion, CriterionKind, ListCond, RoutePolicy, StrCond};

/// A criterion result as Pomerium's Rego produces it: `[bool, {reasons}]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Res {
    /// Pass.
    pub ok: bool,
    /// Reason names.
    pub reasons: BTreeSet<&'static str>,
}

fn res(ok: bool, reason: &'static str) -> Res {
    Res {
        ok,
        reasons: BTreeSet::from([reason]),
    }
}

fn union<'a>(rs: impl Iterator<Item = &'a Res>) -> BTreeSet<&'static str> {
    rs.flat_map(|r| r.reasons.iter().copied()).collect()
}

/// `merge_with_and` / `merge_with_or`, applied to `results` (already inverted for not/nor).
fn merge_and(results: &[Res]) -> Res {
    if results.iter().all(|r| r.ok) {
        Res {
            ok: true,
            reasons: union(results.iter()),
        }
    } else {
        Res {
            ok: false,
            reasons: union(results.iter().filter(|r| !r.ok)),
        }
    }
}

fn merge_or(results: &[Res]) -> Res {
    if results.iter().any(|r| r.ok) {
        Res {
            ok: true,
            reasons: union(results.iter().filter(|r| r.ok)),
        }
    } else {
        Res {
            ok: false,
            reasons: union(results.iter().filter(|r| !r.ok)),
        }
    }
}

fn invert(r: Res) -> Res {
    Res {
        ok: !r.ok,
        reasons: r.reasons,
    }
}

fn apply(op: OpKind, results: Vec<Res>) -> Res {
    match op {
        OpKind::And => merge_and(&results),
        OpKind::Or => merge_or(&results),
        OpKind::Not => merge_and(&results.into_iter().map(invert).collect::<Vec<_>>()),
        OpKind::Nor => merge_or(&results.into_iter().map(invert).collect::<Vec<_>>()),
    }
}

/// The merged allow and deny results.
pub fn results(p: &RoutePolicy, req: &Request<'_>, s: Option<&Subject>) -> (Res, Res) {
    let side = |terms: &[crate::ppl::Term]| {
        let rs: Vec<Res> = terms
            .iter()
            .map(|t| {
                apply(
                    t.op,
                    t.criteria.iter().map(|c| criterion(c, req, s)).collect(),
                )
            })
            .collect();
        if rs.is_empty() {
            Res::default()
        } else {
            merge_or(&rs)
        }
    };
    (side(&p.allow), side(&p.deny))
}

/// The decision, by Pomerium's final step.
pub fn evaluate(p: &RoutePolicy, req: &Request<'_>, s: Option<&Subject>) -> Decision {
    let (allow, deny) = results(p, req, s);
    // authorize/check_response.go: invalid client certificates first, then sign-in.
    if deny.reasons.contains("invalid-client-certificate")
        || deny.reasons.contains("client-certificate-required")
    {
        Decision::Deny(DenyReason::InvalidClientCertificate)
    } else if allow.reasons.contains("user-unauthenticated")
        || deny.reasons.contains("user-unauthenticated")
    {
        Decision::Login
    } else if deny.ok {
        Decision::Deny(DenyReason::PolicyDenied)
    } else if allow.ok {
        Decision::Allow
    } else {
        Decision::Deny(DenyReason::NotAllowed)
    }
}

fn konst_eq_str(k: &Const, s: &str) -> bool {
    matches!(k, Const::Str(x) if x == s)
}

fn konst_eq_claim(k: &Const, v: &ClaimValue) -> bool {
    match (k, v) {
        (Const::Str(a), ClaimValue::Str(b)) => a == b,
        (Const::Num(a), ClaimValue::Number(b)) => a == b,
        (Const::Bool(a), ClaimValue::Bool(b)) => a == b,
        _ => false,
    }
}

fn str_cond(c: &StrCond, s: &str) -> bool {
    match c {
        StrCond::Is(k) => konst_eq_str(k, s),
        StrCond::Not(k) => !konst_eq_str(k, s),
        StrCond::Contains(x) => s.contains(x.as_str()),
        StrCond::StartsWith(x) => s.starts_with(x.as_str()),
        StrCond::EndsWith(x) => s.ends_with(x.as_str()),
        StrCond::In(ks) => ks.iter().any(|k| konst_eq_str(k, s)),
        StrCond::NotIn(ks) => ks.iter().all(|k| !konst_eq_str(k, s)),
    }
}

fn list_cond(c: &ListCond, vs: &[ClaimValue]) -> bool {
    match c {
        ListCond::Has(k) => vs.iter().any(|v| konst_eq_claim(k, v)),
        ListCond::Is(k) => vs.len() == 1 && vs.iter().all(|v| konst_eq_claim(k, v)),
        ListCond::Exclude(k) => vs.iter().all(|v| !konst_eq_claim(k, v)),
    }
}

/// Pomerium's session-rule shape: body, else fail reason with a session, else sign-in.
fn session(ok: bool, s: Option<&Subject>, pass: &'static str, fail: &'static str) -> Res {
    match (ok, s) {
        (true, _) => res(true, pass),
        (false, Some(_)) => res(false, fail),
        (false, None) => res(false, "user-unauthenticated"),
    }
}

fn plain(ok: bool, pass: &'static str, fail: &'static str) -> Res {
    if ok {
        res(true, pass)
    } else {
        res(false, fail)
    }
}

/// The path Envoy routes on: query removed, slashes merged, dot segments removed.
pub fn normalised_path(raw: &str) -> String {
    let no_query = raw.split('?').next().unwrap_or("");
    let mut out: Vec<&str> = Vec::new();
    for seg in no_query.split('/').filter(|s| !s.is_empty()) {
        match seg {
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let trailing = no_query.ends_with('/')
        || no_query.ends_with("/.")
        || no_query.ends_with("/..")
        || out.is_empty();
    let mut p = String::new();
    for s in &out {
        p.push('/');
        p.push_str(s);
    }
    if trailing {
        p.push('/');
    }
    p
}

/// What `http_path` sees, computed the slow obvious way.
pub fn request_path(raw: &str) -> String {
    let p = normalised_path(raw);
    // Percent-decode byte-wise.
    let b = p.as_bytes();
    let mut bytes = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let h = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
        if b.get(i) == Some(&b'%') {
            // Go's `url.PathUnescape` error → Pomerium's path is "".
            let (Some(x), Some(y)) = (h(i + 1), h(i + 2)) else {
                return String::new();
            };
            bytes.push((x * 16 + y) as u8);
            i += 3;
            continue;
        }
        bytes.extend(b.get(i));
        i += 1;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn local(zone: &str, now: i64) -> Option<chrono::NaiveDateTime> {
    let tz: chrono_tz::Tz = zone.parse().ok()?;
    let utc = chrono::DateTime::from_timestamp(now, 0)?;
    Some(tz.from_utc_datetime(&utc.naive_utc()).naive_local())
}

/// One criterion.
pub fn criterion(c: &Criterion, req: &Request<'_>, s: Option<&Subject>) -> Res {
    match &c.kind {
        CriterionKind::Op(op, inner) => {
            apply(*op, inner.iter().map(|x| criterion(x, req, s)).collect())
        }
        CriterionKind::Accept => res(true, "accept"),
        CriterionKind::Reject => res(false, "reject"),
        CriterionKind::AuthenticatedUser => session(
            s.is_some_and(|s| !s.user_id().is_empty()),
            s,
            "user-ok",
            "user-unauthorized",
        ),
        CriterionKind::Claim(name, conds) => {
            let vs: &[ClaimValue] = s.map_or(&[], |s| s.claims().get(name));
            session(
                conds.iter().all(|c| list_cond(c, vs)),
                s,
                "claim-ok",
                "claim-unauthorized",
            )
        }
        // No directory record, ever: `object.get(null, ...)` is undefined in Rego.
        CriterionKind::Groups(_) => session(false, s, "groups-ok", "groups-unauthorized"),
        CriterionKind::Domain(conds) => {
            // split(email, "@")[1]
            let email = s.map_or("", |s| s.email());
            let dom = email.split('@').nth(1);
            let ok = dom.is_some_and(|d| conds.iter().all(|c| str_cond(c, d)));
            session(ok, s, "domain-ok", "domain-unauthorized")
        }
        CriterionKind::Email(conds) => {
            let email = s.map_or("", |s| s.email());
            session(
                conds.iter().all(|c| str_cond(c, email)),
                s,
                "email-ok",
                "email-unauthorized",
            )
        }
        CriterionKind::User(conds) => {
            let ok = s.is_some_and(|s| conds.iter().all(|c| str_cond(c, s.user_id())));
            session(ok, s, "user-ok", "user-unauthorized")
        }
        CriterionKind::HttpMethod(conds) => plain(
            conds.iter().all(|c| str_cond(c, req.method)),
            "http-method-ok",
            "http-method-unauthorized",
        ),
        CriterionKind::HttpPath(conds) => {
            let p = request_path(req.path);
            plain(
                conds.iter().all(|c| str_cond(c, &p)),
                "http-path-ok",
                "http-path-unauthorized",
            )
        }
        CriterionKind::CorsPreflight => plain(
            req.method == "OPTIONS"
                && req
                    .access_control_request_method
                    .is_some_and(|v| !v.is_empty())
                && req.origin.is_some_and(|v| !v.is_empty()),
            "cors-request",
            "non-cors-request",
        ),
        CriterionKind::ClientCertificate(conds) => {
            let ok = match &req.client_certificate {
                ClientCertificate::Valid(cert) => conds.iter().all(|c| match c {
                    CertCond::Fingerprint(fs) => fs.iter().any(|f| f == cert.fingerprint_sha256),
                    CertCond::SpkiHash(hs) => {
                        cert.spki_hash.is_some_and(|h| hs.iter().any(|x| x == h))
                    }
                    CertCond::SanEmail(sc) => cert.san_email.iter().any(|v| str_cond(sc, v)),
                    CertCond::SanDns(sc) => cert.san_dns.iter().any(|v| str_cond(sc, v)),
                    CertCond::SanUri(sc) => cert.san_uri.iter().any(|v| str_cond(sc, v)),
                }),
                _ => false,
            };
            plain(
                ok,
                "client-certificate-ok",
                "client-certificate-unauthorized",
            )
        }
        CriterionKind::InvalidClientCertificate => match req.client_certificate {
            ClientCertificate::Invalid => res(true, "invalid-client-certificate"),
            _ => res(false, "valid-client-certificate"),
        },
        CriterionKind::PomeriumRoutes => {
            let p = normalised_path(req.path);
            if !p.starts_with("/.pomerium/") {
                res(false, "non-pomerium-route")
            } else if s.is_some()
                || (!p.starts_with("/.pomerium/jwt") && !p.starts_with("/.pomerium/webauthn"))
            {
                res(true, "pomerium-route")
            } else {
                res(false, "user-unauthenticated")
            }
        }
        CriterionKind::Date { after, before } => {
            let now = req.now_unix;
            let ok = after.is_none_or(|a| now > a) && before.is_none_or(|b| now < b);
            plain(ok, "date-ok", "date-unauthorized")
        }
        CriterionKind::DayOfWeek { mask, zone } => {
            let ok = local(zone, req.now_unix)
                .is_some_and(|t| mask & (1 << t.weekday().num_days_from_sunday()) != 0);
            plain(ok, "day-of-week-ok", "day-of-week-unauthorized")
        }
        CriterionKind::TimeOfDay {
            after,
            before,
            zone,
        } => {
            let ok = local(zone, req.now_unix).is_some_and(|t| {
                let secs = t.num_seconds_from_midnight();
                match (after, before) {
                    (Some(a), Some(b)) if a <= b => secs >= *a && secs < *b,
                    (Some(a), Some(b)) => secs >= *a || secs < *b,
                    (Some(a), None) => secs >= *a,
                    (None, Some(b)) => secs < *b,
                    (None, None) => true,
                }
            });
            plain(ok, "time-of-day-ok", "time-of-day-unauthorized")
        }
    }
}
