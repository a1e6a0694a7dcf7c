//! Test fixtures shared by the wasm-host and Envoy tests: real bundles compiled from a
//! Pomerium config, sealed cookies, sidecar answers, plugin configurations.

use anyhow::{Result, anyhow};
use base64::Engine as _;
use portcullis_common::Secret;
use portcullis_common::api::{
    ChangesResponse, Claim, ClaimValue, Header, SessionResponse, SessionView, claim_value,
};
use portcullis_common::cookie::{self, CookieKey};
use prost::Message as _;

/// `shared_secret` of the fixtures.
pub const SHARED_SECRET: &str = "9Tq3Yq0tC0f0x5yJ3m8k1cVv2cR3H0pQm8a4ZrJ6W1E=";
/// `cookie_secret` of the fixtures.
pub const COOKIE_SECRET: &str = "7m0Q0H6mY7sY1Yy8d0b3x9S6s8T0e1j3L2f4A6x8c0k=";
/// The session cookie name.
pub const COOKIE: &str = "_pomerium";
/// The authenticate service of the fixture config.
pub const AUTHENTICATE: &str = "https://authenticate.example.com";

/// The fixture Pomerium config: `app` (any signed-in user, identity headers), `admin`
/// (group `admins`), `public`. `extra_app_rule` is appended to app's allow list (to make a
/// second, different bundle for hot-reload tests).
pub fn config_yaml(lock_app_to: Option<&str>) -> String {
    let app_policy = match lock_app_to {
        None => "    allow_any_authenticated_user: true\n".to_owned(),
        Some(email) => format!(
            "    policy:\n      - allow:\n          and:\n            - email:\n                is: {email}\n"
        ),
    };
    format!(
        r#"authenticate_service_url: {AUTHENTICATE}
shared_secret: {SHARED_SECRET}
cookie_secret: {COOKIE_SECRET}
jwt_claims_headers:
  X-Pomerium-Claim-Email: email
routes:
  - from: https://app.example.com
    to: http://127.0.0.1:9
    id: app
    pass_identity_headers: true
{app_policy}  - from: https://admin.example.com
    to: http://127.0.0.1:9
    id: admin
    policy:
      - allow:
          and:
            - claim/groups:
                has: admins
  - from: https://public.example.com
    to: http://127.0.0.1:9
    id: public
    allow_public_unauthenticated_access: true
"#
    )
}

/// Compile a Pomerium config with the real compiler; returns (bundle bytes, version).
pub fn bundle(yaml: &str) -> Result<(Vec<u8>, String)> {
    use policy_compiler::{compile, config};
    let loaded =
        config::load_str("config.yaml", yaml, &|_| None).map_err(|d| anyhow!("config: {d:?}"))?;
    let b = compile::compile(&loaded.config).map_err(|d| anyhow!("compile: {d:?}"))?;
    let version = b.version.clone();
    Ok((b.to_bytes(), version))
}

/// The plugin configuration JSON; `bundle` inline when given; `extra` is appended inside
/// the object (e.g. `,"staleness_bound_secs":5`).
pub fn plugin_config(cluster: &str, bundle: Option<&[u8]>, extra: &str) -> String {
    let bundle = bundle
        .map(|b| {
            format!(
                r#","bundle":"{}""#,
                base64::engine::general_purpose::STANDARD.encode(b)
            )
        })
        .unwrap_or_default();
    format!(
        r#"{{"sidecar_cluster":"{cluster}","shared_secret":"{SHARED_SECRET}","cookie_secret":"{COOKIE_SECRET}"{bundle}{extra}}}"#
    )
}

/// A session id for test number `n` (valid format).
pub fn session_id(n: u32) -> String {
    format!("test-session-{n:032}")
}

/// A `Cookie` header value holding a sealed session cookie for `sid`, valid an hour past `now_s`.
pub fn cookie_header(sid: &str, now_s: u64) -> Result<String> {
    let key = CookieKey::new(&Secret::from_base64(COOKIE_SECRET).map_err(|e| anyhow!("{e}"))?);
    let v = cookie::seal(&key, COOKIE, sid, now_s + 3600, [3; 24])
        .ok_or_else(|| anyhow!("bad session id"))?;
    Ok(format!("{COOKIE}={v}"))
}

/// The bearer token the sidecar expects.
pub fn api_token() -> Result<String> {
    Ok(portcullis_common::api::api_token(
        &Secret::from_base64(SHARED_SECRET).map_err(|e| anyhow!("{e}"))?,
    ))
}

/// A user for sidecar answers.
#[derive(Debug, Clone)]
pub struct User {
    /// `sub`.
    pub user_id: String,
    /// Email.
    pub email: String,
    /// `groups` claim.
    pub groups: Vec<String>,
}

impl User {
    /// A user in `groups`.
    pub fn new(email: &str, groups: &[&str]) -> User {
        User {
            user_id: format!("sub-{email}"),
            email: email.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }
}

/// The sidecar's answer to a session lookup; `None` = unknown session.
pub fn session_answer(
    sid: &str,
    user: Option<&User>,
    aud: &str,
    version: u64,
    now_s: i64,
) -> Vec<u8> {
    let Some(u) = user else {
        return SessionResponse::default().encode_to_vec();
    };
    let str_value = |s: &str| ClaimValue {
        kind: Some(claim_value::Kind::Str(s.to_owned())),
    };
    SessionResponse {
        found: true,
        view: Some(SessionView {
            session_id: sid.to_owned(),
            user_id: u.user_id.clone(),
            email: u.email.clone(),
            claims: vec![
                Claim {
                    key: "email".into(),
                    values: vec![str_value(&u.email)],
                },
                Claim {
                    key: "groups".into(),
                    values: u.groups.iter().map(|g| str_value(g)).collect(),
                },
            ],
            issued_at: now_s,
            expires_at: now_s + 3600,
            version,
            claim_headers: vec![Header {
                name: "x-pomerium-claim-email".into(),
                value: u.email.clone(),
            }],
            client_id: String::new(),
        }),
        identity_jwt: format!("jwt.{aud}.{}", u.user_id),
        jwt_expires_at: now_s + 300,
    }
    .encode_to_vec()
}

/// A change-stream answer.
pub fn changes_answer(
    version: u64,
    changed: &[&str],
    deleted: &[&str],
    bundle_version: &str,
) -> Vec<u8> {
    ChangesResponse {
        version,
        changed: changed.iter().map(|s| (*s).to_owned()).collect(),
        deleted: deleted.iter().map(|s| (*s).to_owned()).collect(),
        bundle_version: bundle_version.to_owned(),
        reset: false,
        epoch: "fixture-epoch".to_owned(),
    }
    .encode_to_vec()
}

/// Value of query parameter `name` in a path.
pub fn query_param<'a>(path: &'a str, name: &str) -> Option<&'a str> {
    path.split_once('?')?
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}
