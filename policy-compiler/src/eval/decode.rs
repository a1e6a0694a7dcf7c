//! Bundle bytes → validated [`Engine`]. Everything is checked before use, so evaluation never
//! meets a dangling index: format version, string/node/route/zone indices, node kinds and
//! their operands, tree shape (children before parents, each node used once, bounded depth),
//! zone tables and route regexes (compiled here with `regex-lite`).

use prost::Message as _;

use super::index::Index;
use super::{
    CNode, CertCond, Engine, K, LCond, Node, OpKind, PathMatch, RouteData, SCond, Settings,
    TermData, ZoneTable,
};
use crate::bundle::{self, CondOp, CondTarget, ConstKind, NodeKind, PathKind};

/// Deepest operator nesting a bundle may have (the evaluator recurses this deep).
pub const MAX_DEPTH: usize = 32;

/// Why a bundle was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    /// Not a protobuf `Bundle`.
    #[error("bundle is not valid protobuf: {0}")]
    Decode(String),
    /// Written by another format version.
    #[error("unsupported bundle format version {found} (this build reads {expected})")]
    FormatVersion {
        /// In the bundle.
        found: u32,
        /// What we read.
        expected: u32,
    },
    /// A string index past the string table.
    #[error("dangling string index {0}")]
    DanglingString(u32),
    /// A node index that does not exist, points forward, or is used twice.
    #[error("invalid node reference {0}")]
    BadNodeRef(u32),
    /// A route index that does not exist or is out of order.
    #[error("invalid route reference {0}")]
    BadRouteRef(u32),
    /// A route's regex does not compile.
    #[error("route {route}: invalid regex: {message}")]
    BadRegex {
        /// Route index.
        route: usize,
        /// From regex-lite.
        message: String,
    },
    /// Anything else structurally wrong.
    #[error("invalid bundle: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> BundleError {
    BundleError::Invalid(msg.into())
}

struct Strings<'a>(&'a [String]);

impl Strings<'_> {
    fn get(&self, i: u32) -> Result<Box<str>, BundleError> {
        self.0
            .get(i as usize)
            .map(|s| s.as_str().into())
            .ok_or(BundleError::DanglingString(i))
    }
}

pub(super) fn from_bytes(bytes: &[u8]) -> Result<Engine, BundleError> {
    let b = bundle::Bundle::decode(bytes).map_err(|e| BundleError::Decode(e.to_string()))?;
    from_bundle(b)
}

pub(super) fn from_bundle(b: bundle::Bundle) -> Result<Engine, BundleError> {
    if b.format_version != bundle::FORMAT_VERSION {
        return Err(BundleError::FormatVersion {
            found: b.format_version,
            expected: bundle::FORMAT_VERSION,
        });
    }
    let st = Strings(&b.strings);
    let settings = b.settings.map_or_else(Settings::default, |s| Settings {
        authenticate_service_url: s.authenticate_service_url,
        cookie_name: s.cookie_name,
        jwt_claims_headers: s
            .jwt_claims_headers
            .into_iter()
            .map(|h| (h.claim, h.header))
            .collect(),
        pass_identity_headers: s.pass_identity_headers,
    });

    let zones = b
        .zones
        .iter()
        .map(|z| {
            if z.offsets.len() != z.at.len() + 1 {
                return Err(invalid(format!(
                    "zone {}: offsets/transitions mismatch",
                    z.name
                )));
            }
            if z.at.windows(2).any(|w| matches!(w, [a, b] if a >= b)) {
                return Err(invalid(format!(
                    "zone {}: transitions not increasing",
                    z.name
                )));
            }
            if z.offsets.iter().any(|o| o.unsigned_abs() > 86_400) {
                return Err(invalid(format!("zone {}: offset out of range", z.name)));
            }
            Ok(ZoneTable {
                name: z.name.as_str().into(),
                at: z.at.clone().into_boxed_slice(),
                offsets: z.offsets.clone().into_boxed_slice(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?
        .into_boxed_slice();

    // Nodes: children strictly before parents, each taken (used) once.
    let mut built: Vec<Option<(CNode, usize)>> = Vec::with_capacity(b.nodes.len());
    for (i, n) in b.nodes.iter().enumerate() {
        let node = node_from(i, n, &st, &mut built, zones.len())?;
        built.push(Some(node));
    }

    let mut take_root = |i: u32| -> Result<CNode, BundleError> {
        built
            .get_mut(i as usize)
            .and_then(Option::take)
            .map(|(n, _)| n)
            .ok_or(BundleError::BadNodeRef(i))
    };

    let mut routes = Vec::with_capacity(b.routes.len());
    for (ri, r) in b.routes.iter().enumerate() {
        let path_str = st.get(r.path_str);
        let path = match PathKind::try_from(r.path_kind) {
            Ok(PathKind::Any) => PathMatch::Any,
            Ok(PathKind::Prefix) => PathMatch::Prefix(path_str?),
            Ok(PathKind::Exact) => PathMatch::Exact(path_str?),
            Ok(PathKind::Regex) => PathMatch::Regex(
                compile_route_regex(&path_str?)
                    .map_err(|message| BundleError::BadRegex { route: ri, message })?,
            ),
            Err(_) => return Err(invalid(format!("route {ri}: unknown path kind"))),
        };
        let mut terms = |ts: &[bundle::Term]| -> Result<Box<[TermData]>, BundleError> {
            ts.iter()
                .map(|t| {
                    Ok(TermData {
                        node: take_root(t.node)?,
                        origin: st.get(t.origin_str)?,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Vec::into_boxed_slice)
        };
        let allow = terms(&r.allow)?;
        let deny = terms(&r.deny)?;
        let from = st.get(r.from_str)?;
        let host = st.get(r.host_str)?;
        let is_http = from
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
        routes.push(RouteData {
            id: st.get(r.id_str)?,
            name: st.get(r.name_str)?,
            default_port: if is_http { "80" } else { "443" },
            wildcard: host.contains('*'),
            from,
            host,
            path,
            public: r.public,
            pass_identity_headers: r.pass_identity_headers,
            uses_identity: r.uses_identity,
            idp_client_id: st.get(r.idp_client_id_str)?,
            allow,
            deny,
        });
    }

    let check_routes = |list: &[u32]| -> Result<Box<[u32]>, BundleError> {
        let mut prev: Option<u32> = None;
        for &i in list {
            if i as usize >= routes.len() || prev.is_some_and(|p| p >= i) {
                return Err(BundleError::BadRouteRef(i));
            }
            prev = Some(i);
        }
        Ok(list.into())
    };
    let mut hosts = Index::default();
    for h in &b.hosts {
        let key = st.get(h.host_str)?;
        let list = check_routes(&h.routes)?;
        if hosts.insert(key, list).is_some() {
            return Err(invalid("duplicate host in index"));
        }
    }
    let wildcard = check_routes(&b.wildcard_routes)?;

    Ok(Engine::parts(
        b.version.into(),
        settings,
        routes.into_boxed_slice(),
        hosts,
        wildcard,
        zones,
    ))
}

/// Envoy `safe_regex` semantics: the whole path must match. Shared with the compiler, which
/// validates with exactly this function.
pub fn compile_route_regex(pattern: &str) -> Result<regex_lite::Regex, String> {
    regex_lite::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .nest_limit(64)
        .build()
        .map_err(|e| e.to_string())
}

fn konst(c: Option<&bundle::Const>, st: &Strings<'_>) -> Result<K, BundleError> {
    match c.and_then(|c| c.kind.as_ref()) {
        Some(ConstKind::Str(i)) => Ok(K::Str(st.get(*i)?)),
        Some(ConstKind::Number(n)) => Ok(K::Num(*n)),
        Some(ConstKind::Bool(b)) => Ok(K::Bool(*b)),
        None => Err(invalid("matcher without a value")),
    }
}

fn konst_str(c: Option<&bundle::Const>, st: &Strings<'_>) -> Result<Box<str>, BundleError> {
    match konst(c, st)? {
        K::Str(s) => Ok(s),
        _ => Err(invalid("matcher needs a string")),
    }
}

fn scond(c: &bundle::Cond, st: &Strings<'_>) -> Result<SCond, BundleError> {
    let v = c.value.as_ref();
    let list = || {
        c.values
            .iter()
            .map(|x| konst(Some(x), st))
            .collect::<Result<Vec<_>, _>>()
            .map(Vec::into_boxed_slice)
    };
    Ok(match CondOp::try_from(c.op) {
        Ok(CondOp::Is) => SCond::Is(konst(v, st)?),
        Ok(CondOp::Not) => SCond::Not(konst(v, st)?),
        Ok(CondOp::Contains) => SCond::Contains(konst_str(v, st)?),
        Ok(CondOp::StartsWith) => SCond::StartsWith(konst_str(v, st)?),
        Ok(CondOp::EndsWith) => SCond::EndsWith(konst_str(v, st)?),
        Ok(CondOp::In) => SCond::In(list()?),
        Ok(CondOp::NotIn) => SCond::NotIn(list()?),
        _ => return Err(invalid("not a string matcher")),
    })
}

fn lcond(c: &bundle::Cond, st: &Strings<'_>) -> Result<LCond, BundleError> {
    let v = c.value.as_ref();
    Ok(match CondOp::try_from(c.op) {
        Ok(CondOp::Has) => LCond::Has(konst(v, st)?),
        Ok(CondOp::ListIs) => LCond::Is(konst(v, st)?),
        Ok(CondOp::Exclude) => LCond::Exclude(konst(v, st)?),
        _ => return Err(invalid("not a list matcher")),
    })
}

fn certcond(c: &bundle::Cond, st: &Strings<'_>) -> Result<CertCond, BundleError> {
    let strs = || {
        c.values
            .iter()
            .map(|x| konst_str(Some(x), st))
            .collect::<Result<Vec<_>, _>>()
            .map(Vec::into_boxed_slice)
    };
    Ok(match CondTarget::try_from(c.target) {
        Ok(CondTarget::Fingerprint) => CertCond::Fingerprint(strs()?),
        Ok(CondTarget::SpkiHash) => CertCond::Spki(strs()?),
        Ok(CondTarget::SanEmail) => CertCond::SanEmail(scond(c, st)?),
        Ok(CondTarget::SanDns) => CertCond::SanDns(scond(c, st)?),
        Ok(CondTarget::SanUri) => CertCond::SanUri(scond(c, st)?),
        _ => return Err(invalid("bad certificate matcher")),
    })
}

fn subject_only(c: &bundle::Cond) -> Result<(), BundleError> {
    if c.target == CondTarget::Subject as i32 {
        Ok(())
    } else {
        Err(invalid("certificate target outside client_certificate"))
    }
}

fn node_from(
    i: usize,
    n: &bundle::Node,
    st: &Strings<'_>,
    built: &mut [Option<(CNode, usize)>],
    zone_count: usize,
) -> Result<(CNode, usize), BundleError> {
    let label = st.get(n.label_str)?;
    let kind =
        NodeKind::try_from(n.kind).map_err(|_| invalid(format!("node {i}: unknown kind")))?;
    let scs = || {
        n.conds
            .iter()
            .map(|c| subject_only(c).and_then(|()| scond(c, st)))
            .collect::<Result<Vec<_>, _>>()
            .map(Vec::into_boxed_slice)
    };
    let lcs = || {
        n.conds
            .iter()
            .map(|c| subject_only(c).and_then(|()| lcond(c, st)))
            .collect::<Result<Vec<_>, _>>()
            .map(Vec::into_boxed_slice)
    };
    let zone = || -> Result<usize, BundleError> {
        let z = n.zone as usize;
        if z < zone_count {
            Ok(z)
        } else {
            Err(invalid(format!("node {i}: dangling zone {z}")))
        }
    };
    let op = match kind {
        NodeKind::And => Some(OpKind::And),
        NodeKind::Or => Some(OpKind::Or),
        NodeKind::Not => Some(OpKind::Not),
        NodeKind::Nor => Some(OpKind::Nor),
        _ => None,
    };
    if let Some(op) = op {
        let mut children = Vec::with_capacity(n.children.len());
        let mut depth = 0;
        for &c in &n.children {
            if c as usize >= i {
                return Err(BundleError::BadNodeRef(c));
            }
            let (child, d) = built
                .get_mut(c as usize)
                .and_then(Option::take)
                .ok_or(BundleError::BadNodeRef(c))?;
            depth = depth.max(d);
            children.push(child);
        }
        if depth + 1 > MAX_DEPTH {
            return Err(invalid(format!("node {i}: nested deeper than {MAX_DEPTH}")));
        }
        let node = Node::Op(op, children.into_boxed_slice());
        return Ok((CNode { node, label }, depth + 1));
    }
    if !n.children.is_empty() {
        return Err(invalid(format!("node {i}: criterion with children")));
    }
    let node = match kind {
        NodeKind::Accept => Node::Accept,
        NodeKind::Reject => Node::Reject,
        NodeKind::AuthenticatedUser => Node::AuthenticatedUser,
        NodeKind::Claim => Node::Claim(st.get(n.name_str)?, lcs()?),
        NodeKind::Groups => Node::Groups(lcs()?),
        NodeKind::Domain => Node::Domain(scs()?),
        NodeKind::Email => Node::Email(scs()?),
        NodeKind::User => Node::User(scs()?),
        NodeKind::HttpMethod => Node::HttpMethod(scs()?),
        NodeKind::HttpPath => Node::HttpPath(scs()?),
        NodeKind::CorsPreflight => Node::CorsPreflight,
        NodeKind::ClientCertificate => Node::ClientCertificate(
            n.conds
                .iter()
                .map(|c| certcond(c, st))
                .collect::<Result<Vec<_>, _>>()?
                .into_boxed_slice(),
        ),
        NodeKind::InvalidClientCertificate => Node::InvalidClientCertificate,
        NodeKind::PomeriumRoutes => Node::PomeriumRoutes,
        NodeKind::Date => Node::Date {
            after: n.lo,
            before: n.hi,
        },
        NodeKind::DayOfWeek => {
            let mask = n.lo.unwrap_or(0);
            if !(0..=0x7f).contains(&mask) {
                return Err(invalid(format!("node {i}: bad day mask")));
            }
            Node::DayOfWeek {
                mask: mask as u8,
                zone: zone()?,
            }
        }
        NodeKind::TimeOfDay => {
            let ok = |v: Option<i64>| v.is_none_or(|s| (0..=86_400).contains(&s));
            if !ok(n.lo) || !ok(n.hi) {
                return Err(invalid(format!("node {i}: bad time of day")));
            }
            Node::TimeOfDay {
                after: n.lo,
                before: n.hi,
                zone: zone()?,
            }
        }
        NodeKind::Unspecified | NodeKind::And | NodeKind::Or | NodeKind::Not | NodeKind::Nor => {
            return Err(invalid(format!("node {i}: unknown kind")));
        }
    };
    Ok((CNode { node, label }, 0))
}
