//! The one place that turns a refusal into an HTTP answer: deny (403), sign-in (302/401),
//! unavailable (503), not found (404). Never fails open; never echoes claim values.

use crate::host::Host;

/// Why the filter itself (not the policy) refused a request.
pub mod reason {
    /// No bundle route matches the request (or the Envoy route is not in the bundle).
    pub const NO_ROUTE: &str = "no-route";
    /// The internal API is not reachable from outside.
    pub const INTERNAL_PATH: &str = "internal-path";
    /// The sidecar could not be asked and nothing usable is cached.
    pub const SIDECAR_UNAVAILABLE: &str = "sidecar-unavailable";
    /// No policy bundle loaded yet.
    pub const POLICY_NOT_LOADED: &str = "policy-not-loaded";
    /// The path is not in normal form (dot segments, `//`, an escaped `.`, `/` or backslash): what
    /// the policy would judge could differ from what the upstream serves.
    pub const NON_NORMAL_PATH: &str = "non-normal-path";
}

/// Whether a request is a browser navigation (gets a redirect rather than a 401).
pub fn is_navigation(method: &str, accept: Option<&str>) -> bool {
    (method == "GET" || method == "HEAD")
        && accept.is_none_or(|a| a.trim().is_empty() || a.contains("text/html") || a == "*/*")
}

/// Whether the client prefers JSON over HTML.
pub fn wants_json(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/json") && !a.contains("text/html"))
}

/// The request id for a page: `x-request-id` restricted to a safe alphabet and length,
/// so it can be embedded in HTML and JSON without escaping.
fn safe_request_id(id: Option<&str>) -> &str {
    match id {
        Some(id)
            if !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) =>
        {
            id
        }
        _ => "-",
    }
}

const NO_STORE: (&str, &str) = ("cache-control", "no-store");

/// Answer a refusal (`status` 400, 403, 404 or 503) with a small page naming the request id and
/// the reason code.
pub fn refuse(
    host: &mut dyn Host,
    status: u32,
    reason: &str,
    request_id: Option<&str>,
    accept: Option<&str>,
) {
    let rid = safe_request_id(request_id);
    let title = match status {
        400 => "bad request",
        403 => "access denied",
        404 => "not found",
        _ => "service unavailable",
    };
    if wants_json(accept) {
        let body = format!(
            r#"{{"error":"{}","reason":"{reason}","request_id":"{rid}"}}"#,
            title.replace(' ', "_")
        );
        host.send_response(
            status,
            &[("content-type", "application/json"), NO_STORE],
            body.as_bytes(),
        );
    } else {
        let body = format!(
            "<!doctype html><meta charset=utf-8><title>{status} {title}</title>\
             <h1>{status} — {title}</h1><p>reason: <code>{reason}</code></p>\
             <p>request id: <code>{rid}</code></p>\n"
        );
        host.send_response(
            status,
            &[("content-type", "text/html; charset=utf-8"), NO_STORE],
            body.as_bytes(),
        );
    }
}

/// Send the user to sign in: 302 for navigations, else 401 with JSON naming the URL.
pub fn sign_in(host: &mut dyn Host, sign_in_url: &str, navigation: bool) {
    if navigation {
        host.send_response(302, &[("location", sign_in_url), NO_STORE], b"");
    } else {
        let mut body = String::with_capacity(sign_in_url.len() + 48);
        body.push_str(r#"{"error":"unauthenticated","sign_in_url":""#);
        json_escape_into(sign_in_url, &mut body);
        body.push_str("\"}");
        host.send_response(
            401,
            &[("content-type", "application/json"), NO_STORE],
            body.as_bytes(),
        );
    }
}

fn json_escape_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn navigation_detection() {
        assert!(is_navigation("GET", None));
        assert!(is_navigation(
            "GET",
            Some("text/html,application/xhtml+xml")
        ));
        assert!(is_navigation("HEAD", Some("*/*")));
        assert!(!is_navigation("GET", Some("application/json")));
        assert!(!is_navigation("POST", Some("text/html")));
    }

    #[test]
    fn request_ids_are_sanitised() {
        assert_eq!(safe_request_id(Some("abc-123")), "abc-123");
        assert_eq!(safe_request_id(Some("<script>")), "-");
        assert_eq!(safe_request_id(Some(&"a".repeat(65))), "-");
        assert_eq!(safe_request_id(None), "-");
    }

    #[test]
    fn json_escaping() {
        let mut s = String::new();
        json_escape_into("a\"b\\c\n", &mut s);
        assert_eq!(s, "a\\\"b\\\\c\\u000a");
    }
}
