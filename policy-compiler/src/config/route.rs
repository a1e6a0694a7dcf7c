//! One route (`routes:` / `policy:` entry) → checked [`Route`].

use super::names::{IGNORED_ROUTE, REMOVED_ROUTE, UNSUPPORTED_ROUTE_ACTIONS};
use super::read::{Reader, parse_url};
use super::{
    HostRewrite, PathMatch, PemSource, RegexRewrite, RewriteHeader, Route, SecretString,
    UpstreamTls, WeightedUrl,
};
use crate::value::{Span, Spanned, Value};
use std::collections::HashMap;
use std::path::Path;

/// Route options Portcullis implements.
pub(crate) const ROUTE_KEYS: &[&str] = &[
    "from",
    "to",
    "prefix",
    "path",
    "regex",
    "prefix_rewrite",
    "regex_rewrite_pattern",
    "regex_rewrite_substitution",
    "host_rewrite",
    "host_rewrite_header",
    "host_path_regex_rewrite_pattern",
    "host_path_regex_rewrite_substitution",
    "preserve_host_header",
    "timeout",
    "idle_timeout",
    "allow_websockets",
    "cors_allow_preflight",
    "allow_public_unauthenticated_access",
    "allow_any_authenticated_user",
    "allowed_users",
    "allowed_domains",
    "allowed_idp_claims",
    "policy",
    "pass_identity_headers",
    "set_request_headers",
    "remove_request_headers",
    "set_response_headers",
    "rewrite_response_headers",
    "idp_client_id",
    "idp_client_secret",
    "name",
    "id",
    "description",
    "tls_skip_verify",
    "tls_server_name",
    "tls_upstream_server_name",
    "tls_custom_ca",
    "tls_custom_ca_file",
];

/// What became of one route entry.
pub(crate) enum Outcome {
    /// A checked route.
    Route(Box<Route>),
    /// A valid Pomerium route Portcullis does not serve (TCP, UDP, SSH): warned.
    Dropped,
    /// Errors were reported.
    Invalid,
}

pub(crate) fn parse_route(
    r: &mut Reader,
    v: &Spanned<Value>,
    index: usize,
    base_dir: Option<&Path>,
) -> Outcome {
    let Some(entries) = v.value.as_map() else {
        r.err(
            v.span,
            format!(
                "route must be a map of route options, found {}",
                v.value.kind()
            ),
        );
        return Outcome::Invalid;
    };
    let errors_before = r.diags.errors().count();
    let mut f: HashMap<&str, (&Spanned<String>, &Spanned<Value>)> = HashMap::new();
    // `redirect` / `response` routes need no `to` in Pomerium: no second error for them.
    let mut unsupported_action = false;
    for (k, val) in entries {
        let key = k.value.as_str();
        if ROUTE_KEYS.contains(&key) {
            // Null = unset, as Go's decoder sees it.
            if !matches!(val.value, Value::Null) {
                f.insert(key, (k, val));
            }
        } else if let Some((_, why)) = REMOVED_ROUTE.iter().find(|(n, _)| *n == key) {
            r.err(k.span, *why);
        } else if UNSUPPORTED_ROUTE_ACTIONS.contains(&key) {
            // Dropping the route would silently hand its requests to the next matching route
            // (e.g. a `response: 403` guarding `/admin` in front of a public catch-all).
            let what = if key == "redirect" {
                "redirect"
            } else {
                "direct-response"
            };
            r.err(
                k.span,
                format!("`{key}` routes are not supported by Portcullis (Pomerium's {what} routes); serve it from an upstream instead"),
            );
            unsupported_action = true;
        } else if IGNORED_ROUTE.contains(&key) {
            r.warn(
                k.span,
                format!("route option `{key}` is not implemented by portcullis; ignored"),
            );
        } else {
            r.err(k.span, unknown_field(key, "route", ROUTE_KEYS));
        }
    }

    // from
    let from = match f.get("from") {
        None => {
            r.err(v.span, "route is missing `from`");
            None
        }
        Some((_, fv)) => match r.non_empty("from", fv) {
            None => None,
            Some(s) => {
                let lower = s.trim().to_ascii_lowercase();
                if lower.starts_with("tcp+")
                    || lower.starts_with("udp+")
                    || lower.starts_with("ssh://")
                {
                    r.warn(
                        fv.span,
                        format!(
                            "route `from` `{s}` is a tcp/udp/ssh route, which portcullis does not implement; route ignored"
                        ),
                    );
                    return Outcome::Dropped;
                }
                check_from(r, fv.span, &s)
            }
        },
    };

    // to
    let to = match f.get("to") {
        None => {
            if !unsupported_action {
                r.err(v.span, "route is missing `to`");
            }
            Vec::new()
        }
        Some((_, tv)) => parse_to(r, tv),
    };

    // path matching: Pomerium accepts several and its `mkRouteMatch` gives Envoy one, in the
    // precedence `regex`, `path`, `prefix`; the others are ignored (warned).
    let mut path_match: Option<Spanned<PathMatch>> = None;
    for key in ["regex", "path", "prefix"] {
        let Some((k, pv)) = f.get(key) else { continue };
        let Some(s) = r.string(key, pv) else { continue };
        if s.is_empty() {
            continue; // Pomerium: empty = unset
        }
        if let Some(prev) = &path_match {
            let prev_name = match prev.value {
                PathMatch::Prefix(_) => "prefix",
                PathMatch::Path(_) => "path",
                PathMatch::Regex(_) => "regex",
            };
            r.warn(
                k.span,
                format!("route sets both `{prev_name}` and `{key}`: `{key}` is ignored (pomerium's precedence: `regex`, then `path`, then `prefix`)"),
            );
            continue;
        }
        let m = match key {
            "prefix" | "path" => {
                if !s.starts_with('/') {
                    r.warn(
                        pv.span,
                        format!("route `{key}` `{s}` does not start with `/`, so it never matches"),
                    );
                }
                if key == "prefix" {
                    PathMatch::Prefix(s)
                } else {
                    PathMatch::Path(s)
                }
            }
            _ => {
                if !check_regex(r, "regex", pv.span, &s) {
                    continue;
                }
                PathMatch::Regex(s)
            }
        };
        path_match = Some(Spanned::new(k.span, m));
    }

    // rewrites
    let prefix_rewrite = f
        .get("prefix_rewrite")
        .and_then(|(_, pv)| r.string("prefix_rewrite", pv))
        .filter(|s| !s.is_empty());
    let regex_rewrite = regex_pair(r, &f, "regex_rewrite_pattern", "regex_rewrite_substitution");
    if prefix_rewrite.is_some()
        && regex_rewrite.is_some()
        && let Some((k, _)) = f.get("regex_rewrite_pattern")
    {
        r.err(
            k.span,
            "route sets both `prefix_rewrite` and `regex_rewrite_pattern`; use only one",
        );
    }
    let host_rewrite = host_rewrite(r, &f);

    let timeout = f
        .get("timeout")
        .and_then(|(_, tv)| r.duration("timeout", tv));
    let idle_timeout = f
        .get("idle_timeout")
        .and_then(|(_, tv)| r.duration("idle_timeout", tv));
    let allow_websockets = flag(r, &f, "allow_websockets", v.span).value;

    let public = flag(r, &f, "allow_public_unauthenticated_access", v.span);
    let any_user = flag(r, &f, "allow_any_authenticated_user", v.span);
    let cors = flag(r, &f, "cors_allow_preflight", v.span);
    let allowed_users = f
        .get("allowed_users")
        .and_then(|(_, lv)| r.string_list("allowed_users", lv))
        .unwrap_or_default();
    let allowed_domains = f
        .get("allowed_domains")
        .and_then(|(_, lv)| r.string_list("allowed_domains", lv))
        .unwrap_or_default();
    // Pomerium's conflicts look at presence (a non-nil list), not emptiness.
    for other in [
        "allow_any_authenticated_user",
        "allowed_domains",
        "allowed_users",
    ] {
        if !public.value {
            break;
        }
        let present = match other {
            "allow_any_authenticated_user" => any_user.value,
            _ => f.contains_key(other),
        };
        if present && let Some((k, _)) = f.get(other) {
            r.err(
                k.span,
                format!(
                    "route sets `allow_public_unauthenticated_access` together with `{other}`; a public route cannot also restrict who may access it"
                ),
            );
        }
    }
    if any_user.value {
        for other in ["allowed_domains", "allowed_users"] {
            if let Some((k, _)) = f.get(other) {
                r.err(
                    k.span,
                    format!(
                        "route sets `allow_any_authenticated_user` together with `{other}`; use only one"
                    ),
                );
            }
        }
    }
    let allowed_idp_claims = f
        .get("allowed_idp_claims")
        .map(|(_, cv)| idp_claims(r, cv))
        .unwrap_or_default();
    let policy = f.get("policy").map(|(_, pv)| (*pv).clone());

    let pass_identity_headers = f
        .get("pass_identity_headers")
        .and_then(|(_, bv)| r.bool("pass_identity_headers", bv));
    let set_request_headers = header_map(r, &f, "set_request_headers");
    let set_response_headers = header_map(r, &f, "set_response_headers");
    let remove_request_headers: Vec<String> = f
        .get("remove_request_headers")
        .and_then(|(_, lv)| r.string_list("remove_request_headers", lv))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|h| {
            if is_token(&h.value) {
                Some(h.value)
            } else {
                r.err(
                    h.span,
                    format!(
                        "invalid header name `{}` in `remove_request_headers`",
                        h.value
                    ),
                );
                None
            }
        })
        .collect();
    let rewrite_response_headers = f
        .get("rewrite_response_headers")
        .map(|(_, lv)| rewrite_headers(r, lv))
        .unwrap_or_default();

    let idp_client_id = f
        .get("idp_client_id")
        .and_then(|(_, sv)| r.non_empty("idp_client_id", sv));
    let idp_client_secret = f
        .get("idp_client_secret")
        .and_then(|(_, sv)| r.non_empty("idp_client_secret", sv))
        .map(SecretString::new);
    let id = f
        .get("id")
        .and_then(|(_, sv)| r.non_empty("id", sv).map(|s| Spanned::new(sv.span, s)));
    let name = f.get("name").and_then(|(_, sv)| r.string("name", sv));
    let description = f
        .get("description")
        .and_then(|(_, sv)| r.string("description", sv));

    let upstream_tls = upstream_tls(r, &f, base_dir);

    let Some(from) = from else {
        return Outcome::Invalid;
    };
    if r.diags.errors().count() > errors_before {
        return Outcome::Invalid;
    }
    Outcome::Route(Box::new(Route {
        span: v.span,
        file: r.file.clone(),
        index,
        id,
        name,
        description,
        from,
        to,
        path_match,
        prefix_rewrite,
        regex_rewrite,
        host_rewrite,
        timeout,
        idle_timeout,
        allow_websockets,
        allow_public_unauthenticated_access: public,
        allow_any_authenticated_user: any_user,
        cors_allow_preflight: cors,
        allowed_users,
        allowed_domains,
        allowed_idp_claims,
        policy,
        pass_identity_headers,
        set_request_headers,
        remove_request_headers,
        set_response_headers,
        rewrite_response_headers,
        idp_client_id,
        idp_client_secret,
        upstream_tls,
    }))
}

type Fields<'a> = HashMap<&'a str, (&'a Spanned<String>, &'a Spanned<Value>)>;

fn flag(r: &mut Reader, f: &Fields<'_>, key: &str, route_span: Span) -> Spanned<bool> {
    match f.get(key) {
        Some((k, bv)) => Spanned::new(k.span, r.bool(key, bv).unwrap_or(false)),
        None => Spanned::new(route_span, false),
    }
}

/// Check a `from` URL: http(s), a host, no path/query/fragment/credentials.
fn check_from(r: &mut Reader, span: Span, s: &str) -> Option<Spanned<url::Url>> {
    let u = match parse_url(s) {
        Ok(u) => u,
        Err(why) => {
            r.err(span, format!("invalid route `from` URL `{s}`: {why}"));
            return None;
        }
    };
    if !matches!(u.scheme(), "http" | "https") {
        r.err(
            span,
            format!("route `from` URL `{s}` must use `http` or `https`"),
        );
        return None;
    }
    let mut ok = true;
    if u.path() != "/" && !u.path().is_empty() {
        r.err(
            span,
            format!(
                "route `from` URL must not contain a path (`{}`); use `prefix` instead",
                u.path()
            ),
        );
        ok = false;
    }
    if u.query().is_some() || u.fragment().is_some() {
        r.err(
            span,
            format!("route `from` URL `{s}` must not contain a query or fragment"),
        );
        ok = false;
    }
    if !u.username().is_empty() || u.password().is_some() {
        r.err(
            span,
            format!("route `from` URL `{s}` must not contain credentials"),
        );
        ok = false;
    }
    ok.then(|| Spanned::new(span, u))
}

fn parse_to(r: &mut Reader, tv: &Spanned<Value>) -> Vec<WeightedUrl> {
    let items: Vec<Spanned<String>> = match &tv.value {
        Value::Seq(items) => items
            .iter()
            .filter_map(|i| r.string("to", i).map(|s| Spanned::new(i.span, s)))
            .collect(),
        _ => match r.string("to", tv) {
            Some(s) => vec![Spanned::new(tv.span, s)],
            None => return Vec::new(),
        },
    };
    if items.is_empty() {
        r.err(tv.span, "route `to` must name at least one upstream URL");
        return Vec::new();
    }
    let mut out = Vec::with_capacity(items.len());
    for item in &items {
        let raw = item.value.trim();
        // Pomerium: the text after the last comma, if any, is the weight.
        let (url_text, weight) = match raw.rsplit_once(',') {
            Some((u, w)) => match w.trim().parse::<u32>() {
                Ok(0) => {
                    r.err(
                        item.span,
                        format!("invalid weight `{w}` in route `to` `{raw}`: must be at least 1"),
                    );
                    continue;
                }
                Ok(n) => (u, Some(n)),
                Err(_) => {
                    r.err(
                        item.span,
                        format!("invalid weight `{w}` in route `to` `{raw}`: expected an integer"),
                    );
                    continue;
                }
            },
            None => (raw, None),
        };
        match parse_url(url_text) {
            Ok(u) if matches!(u.scheme(), "http" | "https" | "h2c") => {
                out.push(WeightedUrl { url: u, weight });
            }
            Ok(u) => r.err(
                item.span,
                format!(
                    "route `to` URL `{url_text}` must use `http`, `https` or `h2c`, not `{}`",
                    u.scheme()
                ),
            ),
            Err(why) => r.err(
                item.span,
                format!("invalid route `to` URL `{url_text}`: {why}"),
            ),
        }
    }
    let weighted = out.iter().filter(|w| w.weight.is_some()).count();
    if weighted != 0 && weighted != out.len() {
        r.err(
            tv.span,
            "route `to` gives weights to some upstreams but not all; give every upstream a weight or none",
        );
    }
    out
}

/// Validate a path regex the way it will run: the evaluator uses `regex-lite`, whose
/// syntax is RE2's (no look-around, no backreferences) minus Unicode classes.
fn check_regex(r: &mut Reader, key: &str, span: Span, pattern: &str) -> bool {
    match regex_lite::Regex::new(pattern) {
        Ok(_) => true,
        Err(e) => {
            let why = e.to_string();
            let why = why.lines().last().unwrap_or("invalid regex").trim();
            let why = why.strip_prefix("error: ").unwrap_or(why);
            if uses_re2_only_syntax(pattern) {
                r.err(
                    span,
                    format!(
                        "route `{key}` `{pattern}` uses RE2 syntax Portcullis does not support (a Portcullis limitation: its regex engine has no Unicode classes `\\pL`/`\\p{{…}}`, no `\\Q…\\E`, no `\\C`; spell them out with explicit characters or escapes): {why}"
                    ),
                );
            } else {
                r.err(span, format!("invalid route `{key}` `{pattern}`: {why}"));
            }
            false
        }
    }
}

/// Escapes RE2 accepts but `regex-lite` (the evaluator's engine) does not: `\p`/`\P`
/// (Unicode classes), `\Q…\E` (quoted literal), `\C` (any byte).
fn uses_re2_only_syntax(pattern: &str) -> bool {
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == '\\' && matches!(chars.next(), Some('p' | 'P' | 'Q' | 'C')) {
            return true;
        }
    }
    false
}

fn regex_pair(r: &mut Reader, f: &Fields<'_>, pat: &str, sub: &str) -> Option<RegexRewrite> {
    let pattern = f
        .get(pat)
        .and_then(|(_, pv)| r.string(pat, pv).map(|s| (pv.span, s)))
        .filter(|(_, s)| !s.is_empty());
    let substitution = f
        .get(sub)
        .and_then(|(_, sv)| r.string(sub, sv).map(|s| (sv.span, s)));
    match (pattern, substitution) {
        (Some((span, p)), s) => check_regex(r, pat, span, &p).then(|| RegexRewrite {
            pattern: p,
            substitution: s.map(|(_, s)| s).unwrap_or_default(),
        }),
        (None, Some((span, s))) if !s.is_empty() => {
            r.err(span, format!("route sets `{sub}` without `{pat}`"));
            None
        }
        (None, _) => None,
    }
}

fn host_rewrite(r: &mut Reader, f: &Fields<'_>) -> HostRewrite {
    let mut chosen: Option<(&'static str, HostRewrite)> = None;
    let mut choose = |r: &mut Reader, key: &'static str, span: Span, h: HostRewrite| {
        if let Some((winner, _)) = &chosen {
            r.warn(
                span,
                format!("route `{key}` is ignored because `{winner}` is also set (pomerium's precedence)"),
            );
        } else {
            chosen = Some((key, h));
        }
    };
    if let Some((k, bv)) = f.get("preserve_host_header")
        && r.bool("preserve_host_header", bv) == Some(true)
    {
        choose(r, "preserve_host_header", k.span, HostRewrite::Preserve);
    }
    if let Some((k, sv)) = f.get("host_rewrite")
        && let Some(s) = r.string("host_rewrite", sv).filter(|s| !s.is_empty())
    {
        choose(r, "host_rewrite", k.span, HostRewrite::Literal(s));
    }
    if let Some((k, sv)) = f.get("host_rewrite_header")
        && let Some(s) = r
            .string("host_rewrite_header", sv)
            .filter(|s| !s.is_empty())
    {
        choose(r, "host_rewrite_header", k.span, HostRewrite::Header(s));
    }
    if let Some(rw) = regex_pair(
        r,
        f,
        "host_path_regex_rewrite_pattern",
        "host_path_regex_rewrite_substitution",
    ) {
        let span = f
            .get("host_path_regex_rewrite_pattern")
            .map_or(Span::NONE, |(k, _)| k.span);
        choose(
            r,
            "host_path_regex_rewrite_pattern",
            span,
            HostRewrite::PathRegex(rw),
        );
    }
    chosen.map(|(_, h)| h).unwrap_or_default()
}

/// `allowed_idp_claims`: claim → values; nested maps are flattened with dots, as
/// Pomerium's `FlattenedClaims`.
fn idp_claims(r: &mut Reader, v: &Spanned<Value>) -> Vec<(Spanned<String>, Vec<Spanned<Value>>)> {
    let mut out = Vec::new();
    let Some(entries) = r.map("allowed_idp_claims", v) else {
        return out;
    };
    // Explicit stack (prefix, entries) instead of recursion.
    type Entries<'a> = &'a [(Spanned<String>, Spanned<Value>)];
    let mut todo: Vec<(String, Entries<'_>)> = vec![(String::new(), entries)];
    while let Some((prefix, entries)) = todo.pop() {
        for (k, val) in entries {
            let name = format!("{prefix}{}", k.value);
            match &val.value {
                Value::Map(m) => todo.push((format!("{name}."), m)),
                Value::Seq(items) => {
                    let mut vals = Vec::with_capacity(items.len());
                    for item in items {
                        match item.value {
                            Value::Seq(_) | Value::Map(_) => r.err(
                                item.span,
                                format!(
                                    "values of `allowed_idp_claims` claim `{name}` must be scalars, found {}",
                                    item.value.kind()
                                ),
                            ),
                            _ => vals.push(item.clone()),
                        }
                    }
                    out.push((Spanned::new(k.span, name), vals));
                }
                Value::Null => out.push((Spanned::new(k.span, name), Vec::new())),
                _ => out.push((Spanned::new(k.span, name), vec![val.clone()])),
            }
        }
    }
    // Keep a deterministic order (the flattening stack reverses nesting order).
    out.sort_by_key(|(k, _)| k.span);
    out
}

fn header_map(
    r: &mut Reader,
    f: &Fields<'_>,
    key: &str,
) -> std::collections::BTreeMap<String, String> {
    let Some((_, mv)) = f.get(key) else {
        return Default::default();
    };
    let map = r.string_map(key, mv).unwrap_or_default();
    check_header_names(r, key, mv, &map);
    map
}

pub(crate) fn check_header_names(
    r: &mut Reader,
    key: &str,
    mv: &Spanned<Value>,
    map: &std::collections::BTreeMap<String, String>,
) {
    for name in map.keys() {
        if !is_token(name) {
            let span = mv
                .value
                .as_map()
                .and_then(|m| m.iter().find(|(k, _)| &k.value == name))
                .map_or(mv.span, |(k, _)| k.span);
            r.err(span, format!("invalid header name `{name}` in `{key}`"));
        }
    }
}

fn rewrite_headers(r: &mut Reader, lv: &Spanned<Value>) -> Vec<RewriteHeader> {
    let mut out = Vec::new();
    let Some(items) = r.seq("rewrite_response_headers", lv) else {
        return out;
    };
    for item in items {
        let Some(entries) = r.map("rewrite_response_headers", item) else {
            continue;
        };
        let (mut header, mut prefix, mut value) = (None, None, None);
        for (k, v) in entries {
            match k.value.as_str() {
                "header" => header = r.non_empty("header", v),
                "prefix" => prefix = r.string("prefix", v),
                "value" => value = r.string("value", v),
                other => r.err(
                    k.span,
                    unknown_field(
                        other,
                        "`rewrite_response_headers` entry",
                        &["header", "prefix", "value"],
                    ),
                ),
            }
        }
        match header {
            Some(h) => out.push(RewriteHeader {
                header: h,
                prefix: prefix.filter(|p| !p.is_empty()),
                value: value.unwrap_or_default(),
            }),
            None => r.err(
                item.span,
                "`rewrite_response_headers` entry is missing `header`",
            ),
        }
    }
    out
}

fn upstream_tls(r: &mut Reader, f: &Fields<'_>, base_dir: Option<&Path>) -> UpstreamTls {
    let skip_verify = f
        .get("tls_skip_verify")
        .and_then(|(_, bv)| r.bool("tls_skip_verify", bv))
        .unwrap_or(false);
    let server_name = ["tls_upstream_server_name", "tls_server_name"]
        .iter()
        .find_map(|k| f.get(k).and_then(|(_, sv)| r.string(k, sv)))
        .filter(|s| !s.is_empty());
    let custom_ca = if let Some((_, cv)) = f.get("tls_custom_ca") {
        super::load::inline_pem(r, "tls_custom_ca", cv).map(PemSource::Inline)
    } else if let Some((_, cv)) = f.get("tls_custom_ca_file") {
        super::load::pem_file(r, "tls_custom_ca_file", cv, base_dir).map(PemSource::File)
    } else {
        None
    };
    UpstreamTls {
        skip_verify,
        server_name,
        custom_ca,
    }
}

/// An HTTP header name (RFC 9110 token).
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// "unknown field `frmo` in route (did you mean `from`?)".
pub(crate) fn unknown_field(key: &str, what: &str, known: &[&str]) -> String {
    match closest(key, known) {
        Some(s) => format!("unknown field `{key}` in {what} (did you mean `{s}`?)"),
        None => format!("unknown field `{key}` in {what}"),
    }
}

fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (levenshtein(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) && *d < key.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}
