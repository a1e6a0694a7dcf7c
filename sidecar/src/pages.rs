//! HTML pages: the user info page (`/.pomerium/`), the signed-out page and the error page.
//!
//! Templates live in `src/templates/` (compiled in); placeholders `{{name}}` are filled
//! with text that is HTML-escaped here, never by the templates. Every page is sent with a
//! strict `Content-Security-Policy` (no scripts at all), `no-store` and `nosniff`.

use crate::session::Session;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

const LAYOUT: &str = include_str!("templates/layout.html");
const ERROR: &str = include_str!("templates/error.html");
const USER_INFO: &str = include_str!("templates/user_info.html");
const SIGNED_OUT: &str = include_str!("templates/signed_out.html");

/// Escape text for HTML element content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Fill `{{key}}` placeholders with already-escaped HTML, in one pass (a value containing
/// `{{x}}` is never expanded again).
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(rest.get(..start).unwrap_or_default());
        let after = rest.get(start + 2..).unwrap_or_default();
        match after.find("}}") {
            Some(end) => {
                let key = after.get(..end).unwrap_or_default();
                if let Some((_, v)) = values.iter().find(|(k, _)| *k == key) {
                    out.push_str(v);
                }
                rest = after.get(end + 2..).unwrap_or_default();
            }
            None => {
                out.push_str(rest.get(start..).unwrap_or_default());
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// A full HTML response.
pub fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = fill(LAYOUT, &[("title", &escape(title)), ("body", body)]);
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            // No `form-action`: browsers apply it to the redirects after a submit too, and
            // sign-out redirects to the IdP's end_session_endpoint (another origin).
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
                ),
            ),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        ],
        page,
    )
        .into_response()
}

/// The error page: status, a heading, what happened, what to do. All plain text.
pub fn error_page(status: StatusCode, heading: &str, message: &str, hint: &str) -> Response {
    let status_text = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let body = fill(
        ERROR,
        &[
            ("status", &escape(&status_text)),
            ("heading", &escape(heading)),
            ("message", &escape(message)),
            ("hint", &escape(hint)),
        ],
    );
    html(status, heading, &body)
}

/// The signed-out page.
pub fn signed_out_page() -> Response {
    html(StatusCode::OK, "Signed out", SIGNED_OUT)
}

/// Unix seconds as `2026-11-23 13:24:31 UTC`.
pub fn format_time(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| unix.to_string())
}

/// A claim value as text: strings bare, everything else as compact JSON.
pub fn claim_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The user info page of `session`, seen on `host`. `csrf` is its sign-out token.
///
/// The claims table is `session.claims` (the one stored record the policy view and the
/// identity JWT also come from), every key, sorted.
pub fn user_info_page(session: &Session, host: &str, csrf: &str) -> Response {
    let name = session
        .claim_str("name")
        .or_else(|| session.email())
        .unwrap_or(&session.user_id);
    let groups = session.groups();
    let groups_html = if groups.is_empty() {
        "<p class=\"muted\">No groups.</p>".to_owned()
    } else {
        let mut s = String::from("<ul class=\"chips\" id=\"groups\">");
        for g in &groups {
            s.push_str("<li>");
            s.push_str(&escape(g));
            s.push_str("</li>");
        }
        s.push_str("</ul>");
        s
    };
    let mut keys: Vec<&String> = session.claims.keys().collect();
    keys.sort();
    let mut claims_html = String::new();
    for k in keys {
        let v = session.claims.get(k).map(claim_text).unwrap_or_default();
        claims_html.push_str("<tr><th scope=\"row\">");
        claims_html.push_str(&escape(k));
        claims_html.push_str("</th><td><code>");
        claims_html.push_str(&escape(&v));
        claims_html.push_str("</code></td></tr>\n");
    }
    let refreshed = session
        .refresh
        .user_info_at
        .max(session.refresh.token_refreshed_at);
    let body = fill(
        USER_INFO,
        &[
            ("name", &escape(name)),
            ("host", &escape(host)),
            ("user", &escape(&session.user_id)),
            ("email", &escape(session.email().unwrap_or("—"))),
            ("issued_at", &escape(&format_time(session.issued_at))),
            ("expires_at", &escape(&format_time(session.expires_at))),
            ("refreshed_at", &escape(&format_time(refreshed))),
            ("groups", &groups_html),
            ("claims", &claims_html),
            ("csrf", &escape(csrf)),
        ],
    );
    html(StatusCode::OK, "User info", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_fill_are_single_pass() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(
            fill("a {{x}} b {{y}} {{z", &[("x", "{{y}}"), ("y", "2")]),
            "a {{y}} b 2 {{z"
        );
        assert_eq!(fill("{{missing}}!", &[]), "!");
    }

    #[test]
    fn times_are_readable() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(1_795_000_000), "2026-11-18 11:06:40 UTC");
    }
}
