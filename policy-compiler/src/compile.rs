//! Checked config → [`Bundle`]. Deterministic: the same config gives byte-identical bytes
//! (strings interned in first-use order of a fixed traversal, maps sorted, no hash-map
//! iteration), and the bundle's `version` is a SHA-256 of its own encoding.

use std::collections::BTreeMap;

use chrono::{Offset as _, TimeZone as _};
use sha2::Digest as _;

use crate::bundle::{
    self, Bundle, CondOp, CondTarget, Const as BConst, ConstKind, NodeKind, PathKind,
};
use crate::config::{Config, PathMatch, Route};
use crate::diag::Diagnostics;
use crate::eval::OpKind;
use crate::ppl::{self, CertCond, Const, Criterion, CriterionKind, ListCond, RoutePolicy, StrCond};

/// First and last year covered by the compiled time-zone tables; outside them the nearest
/// table entry's offset applies.
pub const ZONE_YEARS: (i32, i32) = (2000, 2100);

/// The bundle route id of a route: its `id`, else `route-<index>` (index in definition order).
/// envoy-config must name Envoy routes with exactly this.
pub fn route_id(route: &Route) -> String {
    match &route.id {
        Some(id) => id.value.clone(),
        None => format!("route-{}", route.index),
    }
}

/// Host key a route is indexed under: lower-case host, `:port` only when not the scheme's
/// default (the `url` crate already drops default ports).
pub fn host_key(route: &Route) -> String {
    let u = &route.from.value;
    let host = u.host_str().unwrap_or("").to_ascii_lowercase();
    match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    }
}

/// Whether a route's `from` host has a `*` wildcard (anywhere: `*.example.com`,
/// `app-*.example.com`, `*`). Pomerium serves such routes only from its catch-all virtual host,
/// matching `:authority` against the pattern (each `*` = any characters, see
/// [`crate::eval::wildcard_host_matches`]), after every exact host's own virtual host.
pub fn is_wildcard_host(route: &Route) -> bool {
    host_key(route).contains('*')
}

/// Compiles a checked configuration. Errors (PPL, regexes) all at once.
pub fn compile(config: &Config) -> Result<Bundle, Diagnostics> {
    compile_with_warnings(config).map(|(b, _)| b)
}

/// [`compile`], also returning warnings (e.g. `groups` criteria).
pub fn compile_with_warnings(config: &Config) -> Result<(Bundle, Diagnostics), Diagnostics> {
    let mut diags = Diagnostics::new();
    let mut policies = Vec::with_capacity(config.routes.len());
    for r in &config.routes {
        let (p, d) = ppl::route_policy(r);
        diags.extend(d);
        if let Some(pm) = &r.path_match
            && let PathMatch::Regex(re) = &pm.value
            && let Err(e) = crate::eval::compile_route_regex(re)
        {
            diags.error(&r.file, pm.span, format!("invalid route regex `{re}`: {e}"));
        }
        policies.push(p);
    }
    if diags.has_errors() {
        diags.sort();
        return Err(diags);
    }
    let bundle = lower(config, &policies);
    Ok((bundle, diags))
}

/// Compiles routes whose policies were already built (the oracle tests use this too).
pub fn lower(config: &Config, policies: &[RoutePolicy]) -> Bundle {
    let mut w = Writer::default();
    let mut b = Bundle {
        format_version: bundle::FORMAT_VERSION,
        ..Default::default()
    };
    let mut hosts: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (i, (r, p)) in config.routes.iter().zip(policies).enumerate() {
        let (path_kind, path) = match r.path_match.as_ref().map(|m| &m.value) {
            None => (PathKind::Any, ""),
            Some(PathMatch::Prefix(s)) => (PathKind::Prefix, s.as_str()),
            Some(PathMatch::Path(s)) => (PathKind::Exact, s.as_str()),
            Some(PathMatch::Regex(s)) => (PathKind::Regex, s.as_str()),
        };
        let host = host_key(r);
        let terms = |ts: &[ppl::Term], w: &mut Writer| -> Vec<bundle::Term> {
            ts.iter()
                .map(|t| {
                    let children: Vec<u32> = t.criteria.iter().map(|c| w.criterion(c)).collect();
                    let label = w.s(t.op.name());
                    let node = w.push(bundle::Node {
                        kind: op_node(t.op) as i32,
                        children,
                        label_str: label,
                        ..Default::default()
                    });
                    bundle::Term {
                        node,
                        origin_str: w.s(&t.origin),
                    }
                })
                .collect()
        };
        let allow = terms(&p.allow, &mut w);
        let deny = terms(&p.deny, &mut w);
        let route = bundle::Route {
            id_str: w.s(&route_id(r)),
            name_str: w.s(&r.display_name()),
            from_str: w.s(r.from.value.as_str()),
            host_str: w.s(&host),
            path_kind: path_kind as i32,
            path_str: w.s(path),
            public: r.allow_public_unauthenticated_access.value,
            pass_identity_headers: config.pass_identity_headers_for(r),
            allow,
            deny,
            uses_identity: p.uses_identity(),
            idp_client_id_str: w.s(r
                .idp_client_id
                .as_deref()
                .or(config.idp_client_id.as_deref())
                .unwrap_or("")),
        };
        b.routes.push(route);
        if host.contains('*') {
            b.wildcard_routes.push(i as u32);
        } else {
            hosts.entry(host).or_default().push(i as u32);
        }
    }
    for (h, routes) in hosts {
        let host_str = w.s(&h);
        b.hosts.push(bundle::HostRoutes { host_str, routes });
    }
    let mut jwt: Vec<bundle::ClaimHeader> = config
        .jwt_claims_headers
        .iter()
        .map(|h| bundle::ClaimHeader {
            claim: h.claim.clone(),
            header: h.header.clone(),
        })
        .collect();
    jwt.sort_by(|a, b| (&a.claim, &a.header).cmp(&(&b.claim, &b.header)));
    b.settings = Some(bundle::Settings {
        authenticate_service_url: config
            .authenticate_service_url
            .as_ref()
            .map(|u| u.as_str().trim_end_matches('/').to_string())
            .unwrap_or_default(),
        cookie_name: config.cookie_name.clone(),
        jwt_claims_headers: jwt,
        pass_identity_headers: config.pass_identity_headers.unwrap_or(false),
    });
    b.zones = w.zones.iter().map(|z| cached_zone_table(z)).collect();
    b.nodes = w.nodes;
    b.strings = w.strings;
    b.version = content_hash(&b);
    b
}

/// SHA-256 (first 16 bytes, hex) of the encoding with an empty `version`.
pub fn content_hash(b: &Bundle) -> String {
    let mut c = b.clone();
    c.version.clear();
    let digest = sha2::Sha256::digest(c.to_bytes());
    digest.iter().take(16).map(|x| format!("{x:02x}")).collect()
}

fn op_node(op: OpKind) -> NodeKind {
    match op {
        OpKind::And => NodeKind::And,
        OpKind::Or => NodeKind::Or,
        OpKind::Not => NodeKind::Not,
        OpKind::Nor => NodeKind::Nor,
    }
}

#[derive(Default)]
struct Writer {
    strings: Vec<String>,
    index: BTreeMap<String, u32>,
    nodes: Vec<bundle::Node>,
    zones: Vec<String>,
}

impl Writer {
    fn s(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.strings.len() as u32;
        self.strings.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }

    fn zone(&mut self, name: &str) -> u32 {
        match self.zones.iter().position(|z| z == name) {
            Some(i) => i as u32,
            None => {
                self.zones.push(name.to_string());
                (self.zones.len() - 1) as u32
            }
        }
    }

    fn push(&mut self, n: bundle::Node) -> u32 {
        self.nodes.push(n);
        (self.nodes.len() - 1) as u32
    }

    fn konst(&mut self, c: &Const) -> BConst {
        BConst {
            kind: Some(match c {
                Const::Str(s) => ConstKind::Str(self.s(s)),
                Const::Num(n) => ConstKind::Number(*n),
                Const::Bool(b) => ConstKind::Bool(*b),
            }),
        }
    }

    fn str_cond(&mut self, c: &StrCond, target: CondTarget) -> bundle::Cond {
        let one = |w: &mut Writer, op: CondOp, k: &Const| bundle::Cond {
            op: op as i32,
            value: Some(w.konst(k)),
            values: Vec::new(),
            target: target as i32,
        };
        let many = |w: &mut Writer, op: CondOp, ks: &[Const]| bundle::Cond {
            op: op as i32,
            value: None,
            values: ks.iter().map(|k| w.konst(k)).collect(),
            target: target as i32,
        };
        match c {
            StrCond::Is(k) => one(self, CondOp::Is, k),
            StrCond::Not(k) => one(self, CondOp::Not, k),
            StrCond::Contains(s) => one(self, CondOp::Contains, &Const::Str(s.clone())),
            StrCond::StartsWith(s) => one(self, CondOp::StartsWith, &Const::Str(s.clone())),
            StrCond::EndsWith(s) => one(self, CondOp::EndsWith, &Const::Str(s.clone())),
            StrCond::In(ks) => many(self, CondOp::In, ks),
            StrCond::NotIn(ks) => many(self, CondOp::NotIn, ks),
        }
    }

    fn list_cond(&mut self, c: &ListCond) -> bundle::Cond {
        let (op, k) = match c {
            ListCond::Has(k) => (CondOp::Has, k),
            ListCond::Is(k) => (CondOp::ListIs, k),
            ListCond::Exclude(k) => (CondOp::Exclude, k),
        };
        bundle::Cond {
            op: op as i32,
            value: Some(self.konst(k)),
            values: Vec::new(),
            target: CondTarget::Subject as i32,
        }
    }

    fn cert_cond(&mut self, c: &CertCond) -> bundle::Cond {
        let strs = |w: &mut Writer, target: CondTarget, xs: &[String]| bundle::Cond {
            op: CondOp::In as i32,
            value: None,
            values: xs.iter().map(|x| w.konst(&Const::Str(x.clone()))).collect(),
            target: target as i32,
        };
        match c {
            CertCond::Fingerprint(fs) => strs(self, CondTarget::Fingerprint, fs),
            CertCond::SpkiHash(hs) => strs(self, CondTarget::SpkiHash, hs),
            CertCond::SanEmail(s) => self.str_cond(s, CondTarget::SanEmail),
            CertCond::SanDns(s) => self.str_cond(s, CondTarget::SanDns),
            CertCond::SanUri(s) => self.str_cond(s, CondTarget::SanUri),
        }
    }

    /// Emits a criterion (children first) and returns its node index.
    fn criterion(&mut self, c: &Criterion) -> u32 {
        let mut n = bundle::Node::default();
        let kind = match &c.kind {
            CriterionKind::Op(op, inner) => {
                n.children = inner.iter().map(|x| self.criterion(x)).collect();
                op_node(*op)
            }
            CriterionKind::Accept => NodeKind::Accept,
            CriterionKind::Reject => NodeKind::Reject,
            CriterionKind::AuthenticatedUser => NodeKind::AuthenticatedUser,
            CriterionKind::Claim(name, conds) => {
                n.name_str = self.s(name);
                n.conds = conds.iter().map(|x| self.list_cond(x)).collect();
                NodeKind::Claim
            }
            CriterionKind::Groups(conds) => {
                n.conds = conds.iter().map(|x| self.list_cond(x)).collect();
                NodeKind::Groups
            }
            CriterionKind::Domain(cs) => self.strs(&mut n, cs, NodeKind::Domain),
            CriterionKind::Email(cs) => self.strs(&mut n, cs, NodeKind::Email),
            CriterionKind::User(cs) => self.strs(&mut n, cs, NodeKind::User),
            CriterionKind::HttpMethod(cs) => self.strs(&mut n, cs, NodeKind::HttpMethod),
            CriterionKind::HttpPath(cs) => self.strs(&mut n, cs, NodeKind::HttpPath),
            CriterionKind::CorsPreflight => NodeKind::CorsPreflight,
            CriterionKind::ClientCertificate(cs) => {
                n.conds = cs.iter().map(|x| self.cert_cond(x)).collect();
                NodeKind::ClientCertificate
            }
            CriterionKind::InvalidClientCertificate => NodeKind::InvalidClientCertificate,
            CriterionKind::PomeriumRoutes => NodeKind::PomeriumRoutes,
            CriterionKind::Date { after, before } => {
                n.lo = *after;
                n.hi = *before;
                NodeKind::Date
            }
            CriterionKind::DayOfWeek { mask, zone } => {
                n.lo = Some(i64::from(*mask));
                n.zone = self.zone(zone);
                NodeKind::DayOfWeek
            }
            CriterionKind::TimeOfDay {
                after,
                before,
                zone,
            } => {
                n.lo = after.map(i64::from);
                n.hi = before.map(i64::from);
                n.zone = self.zone(zone);
                NodeKind::TimeOfDay
            }
        };
        n.kind = kind as i32;
        n.label_str = self.s(&c.label);
        self.push(n)
    }

    fn strs(&mut self, n: &mut bundle::Node, cs: &[StrCond], kind: NodeKind) -> NodeKind {
        n.conds = cs
            .iter()
            .map(|x| self.str_cond(x, CondTarget::Subject))
            .collect();
        kind
    }
}

/// [`zone_table`], memoised per process (building one scans a century).
fn cached_zone_table(name: &str) -> bundle::Zone {
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<BTreeMap<String, bundle::Zone>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(BTreeMap::new()));
    if let Ok(c) = cache.lock()
        && let Some(z) = c.get(name)
    {
        return z.clone();
    }
    let z = zone_table(name);
    if let Ok(mut c) = cache.lock() {
        c.insert(name.to_string(), z.clone());
    }
    z
}

/// The zone's UTC offsets over [`ZONE_YEARS`] as transitions: scan day by day, bisect each
/// change to the second.
pub fn zone_table(name: &str) -> bundle::Zone {
    let mut z = bundle::Zone {
        name: name.to_string(),
        at: Vec::new(),
        offsets: Vec::new(),
    };
    let Ok(tz) = name.parse::<chrono_tz::Tz>() else {
        z.offsets.push(0);
        return z;
    };
    let off = |t: i64| -> i32 {
        chrono::DateTime::from_timestamp(t, 0)
            .map(|d| {
                tz.offset_from_utc_datetime(&d.naive_utc())
                    .fix()
                    .local_minus_utc()
            })
            .unwrap_or(0)
    };
    let start = chrono::NaiveDate::from_ymd_opt(ZONE_YEARS.0, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(946_684_800, |d| d.and_utc().timestamp());
    let end = chrono::NaiveDate::from_ymd_opt(ZONE_YEARS.1, 12, 31)
        .and_then(|d| d.and_hms_opt(23, 59, 59))
        .map_or(4_133_980_799, |d| d.and_utc().timestamp());
    let mut t = start;
    let mut cur = off(t);
    z.offsets.push(cur);
    const STEP: i64 = 6 * 3600;
    while t < end {
        let next = t + STEP;
        let o = off(next);
        if o != cur {
            // First second in (t, next] with the new offset.
            let (mut lo, mut hi) = (t, next);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if off(mid) == cur { lo = mid } else { hi = mid }
            }
            z.at.push(hi);
            z.offsets.push(o);
            cur = o;
        }
        t = next;
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paris_dst_transitions_are_exact() {
        let z = zone_table("Europe/Paris");
        // 2024-03-31 01:00:00 UTC: CET (+1h) → CEST (+2h).
        let spring = 1_711_846_800;
        let i =
            z.at.iter()
                .position(|&a| a == spring)
                .expect("spring transition");
        assert_eq!(z.offsets[i], 3600);
        assert_eq!(z.offsets[i + 1], 7200);
        // 2024-10-27 01:00:00 UTC: back to +1h.
        assert!(z.at.contains(&1_729_990_800));
        assert_eq!(z.offsets.len(), z.at.len() + 1);
    }

    #[test]
    fn utc_has_no_transitions() {
        let z = zone_table("UTC");
        assert!(z.at.is_empty());
        assert_eq!(z.offsets, vec![0]);
    }
}
