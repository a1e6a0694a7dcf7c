//! Hosts and return URLs: what the login flow accepts to redirect a browser to.
//!
//! Every redirect target is re-serialised from a parsed [`Url`] after these checks, so a
//! browser and we agree on where it goes. Hostile inputs rejected here: other hosts,
//! non-http(s) schemes (`javascript:`, `data:`), scheme-relative `//evil`, user-info tricks
//! (`https://app@evil`), backslashes and control characters (parsers disagree on them),
//! over-long URLs.

use url::Url;

/// Longest return URL accepted.
pub const MAX_URL_LEN: usize = 4096;

/// A host as routes are matched: lower-case `host[:port]`, default ports dropped.
pub fn normalize_authority(authority: &str, scheme: &str) -> String {
    let a = authority.trim().trim_end_matches('.').to_ascii_lowercase();
    let default = match scheme {
        "https" => ":443",
        "http" => ":80",
        _ => "",
    };
    match a.strip_suffix(default) {
        Some(stripped) if !default.is_empty() => stripped.to_owned(),
        _ => a,
    }
}

/// The authority (`host[:port]`, default port omitted) of a parsed URL.
pub fn url_authority(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    })
    .map(|a| normalize_authority(&a, url.scheme()))
}

/// Parse an absolute http(s) URL that will be used as a redirect target.
///
/// `None` for anything suspicious; the caller turns that into a clear 400 page.
pub fn parse_redirect_target(raw: &str) -> Option<Url> {
    if raw.is_empty()
        || raw.len() > MAX_URL_LEN
        || raw.contains('\\')
        || raw.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return None;
    }
    // Scheme-relative and relative inputs fail here (no base): `//evil.com`, `/path`.
    let url = Url::parse(raw).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    // The raw text must literally start with the scheme and `://`: rejects `https:evil.com`
    // forms that the URL parser would repair.
    let prefix = format!("{}://", url.scheme());
    if !raw
        .get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(&prefix))
    {
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    url.host_str()?;
    Some(url)
}

/// Is `host` (an authority) equal to `domain` or a subdomain of it? Ports are ignored.
pub fn host_under_domain(host: &str, domain: &str) -> bool {
    let host = host_only(host);
    let domain = domain.trim().trim_start_matches('.').to_ascii_lowercase();
    if domain.is_empty() {
        return false;
    }
    host == domain
        || host
            .strip_suffix(&domain)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// The host part of an authority (no port), lower-case. IPv6 brackets kept.
pub fn host_only(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    if a.starts_with('[') {
        return a.split_once(']').map(|(h, _)| format!("{h}]")).unwrap_or(a);
    }
    match a.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h.to_owned(),
        _ => a,
    }
}

/// Programmatic login: is the CLI's redirect host in
/// `programmatic_redirect_domain_whitelist`? Exact host match, as Pomerium.
pub fn programmatic_allowed(url: &Url, whitelist: &[String]) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    whitelist
        .iter()
        .any(|d| !d.is_empty() && d.trim().eq_ignore_ascii_case(host))
}

/// `url` with one more query parameter.
pub fn with_query(mut url: Url, key: &str, value: &str) -> Url {
    url.query_pairs_mut().append_pair(key, value);
    url
}
