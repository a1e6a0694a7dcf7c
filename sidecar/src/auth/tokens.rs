//! The small cryptographic tokens of the login flow.
//!
//! - **Login state** (`state` parameter): what the callback needs to finish a login
//!   (return URL, target host, OAuth client, programmatic or not, expiry, a random
//!   nonce), as JSON, MAC'ed with the CSRF key (from `cookie_secret`). Nothing secret is in
//!   it: the PKCE verifier and the OIDC `nonce` are *derived* from it with the same key,
//!   so they never travel and no server-side storage is needed (any replica can finish
//!   any login).
//! - **CSRF cookie**: a MAC of the state, set on the authenticate host when the flow
//!   starts, required at the callback: the state is bound to the browser that started it.
//! - **Hand-off** (`pomerium_handoff`): authenticate host → route host, sealed with
//!   XChaCha20-Poly1305 (key from `shared_secret`, purpose `Handoff`), ≤ 60 s, single-use,
//!   bound to the route host.
//! - **Sign-out CSRF token**: a MAC of the session id.
//! - **Programmatic sign-in signature**: a MAC over the route host, the CLI URL and the
//!   issue time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use portcullis_common::Secret;
use portcullis_common::keys::{self, Purpose};
use serde::{Deserialize, Serialize};

/// How long a started login may take (IdP login page included).
pub const LOGIN_STATE_TTL_SECS: i64 = 600;
/// How long a hand-off token is valid.
pub const HANDOFF_TTL_SECS: i64 = 60;
/// Longest `state` we look at.
const MAX_STATE_LEN: usize = 8 * 1024;

/// Keys of the login flow, derived once.
#[derive(Clone)]
pub struct FlowKeys {
    csrf: Secret,
    handoff: XChaCha20Poly1305,
}

impl std::fmt::Debug for FlowKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FlowKeys(***)")
    }
}

/// What the `state` parameter carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    /// Random, per login (also names the CSRF cookie).
    #[serde(rename = "n")]
    pub nonce: String,
    /// Where the browser (or CLI) goes at the end.
    #[serde(rename = "r")]
    pub return_url: String,
    /// The route host the session cookie is for.
    #[serde(rename = "h")]
    pub host: String,
    /// The OAuth client running this login.
    #[serde(rename = "c")]
    pub client_id: String,
    /// Programmatic (CLI) login: answer with `pomerium_jwt` instead of a cookie.
    #[serde(rename = "p", default)]
    pub programmatic: bool,
    /// Unix seconds after which the state is refused.
    #[serde(rename = "e")]
    pub expires_at: i64,
}

/// What a hand-off token carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// Token id (single use).
    #[serde(rename = "j")]
    pub id: String,
    /// The session.
    #[serde(rename = "s")]
    pub session_id: String,
    /// The route host it may be redeemed on.
    #[serde(rename = "h")]
    pub host: String,
    /// Where to go after setting the cookie.
    #[serde(rename = "r")]
    pub return_url: String,
    /// Unix seconds.
    #[serde(rename = "e")]
    pub expires_at: i64,
}

/// Why a token was refused. Each maps to a clear error page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not produced by us, or tampered with.
    #[error("invalid or tampered token")]
    Invalid,
    /// Authentic but too old.
    #[error("expired token")]
    Expired,
    /// No randomness available.
    #[error("no randomness")]
    Random,
}

/// `n` random bytes, base64url.
pub fn random_b64(n: usize) -> Result<String, TokenError> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|_| TokenError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

impl FlowKeys {
    /// Derive from the configured secrets.
    pub fn new(cookie_secret: &Secret, shared_secret: &Secret) -> Self {
        let handoff = keys::derive(shared_secret, Purpose::Handoff);
        FlowKeys {
            csrf: keys::derive(cookie_secret, Purpose::Csrf),
            handoff: XChaCha20Poly1305::new(handoff.expose().into()),
        }
    }

    /// HMAC with the CSRF key over a labelled message (labels keep the uses apart).
    fn mac(&self, label: &str, parts: &[&[u8]]) -> [u8; 32] {
        let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() * 2 + 2);
        all.push(label.as_bytes());
        for p in parts {
            all.push(b"\n");
            all.push(p);
        }
        keys::hmac_sha256(self.csrf.expose(), &all)
    }

    /// Encode and MAC a login state into the `state` parameter.
    pub fn seal_state(&self, state: &LoginState) -> Result<String, TokenError> {
        let json = serde_json::to_vec(state).map_err(|_| TokenError::Invalid)?;
        let body = URL_SAFE_NO_PAD.encode(json);
        let mac = URL_SAFE_NO_PAD.encode(self.mac("state", &[body.as_bytes()]));
        Ok(format!("{body}.{mac}"))
    }

    /// Check and decode a `state` parameter.
    pub fn open_state(&self, raw: &str, now: i64) -> Result<LoginState, TokenError> {
        if raw.len() > MAX_STATE_LEN {
            return Err(TokenError::Invalid);
        }
        let (body, mac) = raw.split_once('.').ok_or(TokenError::Invalid)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| TokenError::Invalid)?;
        if !keys::ct_eq(&mac, &self.mac("state", &[body.as_bytes()])) {
            return Err(TokenError::Invalid);
        }
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Invalid)?;
        let state: LoginState = serde_json::from_slice(&json).map_err(|_| TokenError::Invalid)?;
        if now >= state.expires_at {
            return Err(TokenError::Expired);
        }
        Ok(state)
    }

    /// The PKCE verifier of a login (43 characters, never sent to the browser).
    pub fn pkce_verifier(&self, state: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac("pkce", &[state.as_bytes()]))
    }

    /// The OIDC `nonce` of a login.
    pub fn oidc_nonce(&self, state: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac("nonce", &[state.as_bytes()]))
    }

    /// The CSRF cookie value binding `state` to the browser.
    pub fn csrf_cookie_value(&self, state: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac("csrf-cookie", &[state.as_bytes()]))
    }

    /// Does a CSRF cookie value match `state`? (constant time)
    pub fn check_csrf_cookie(&self, state: &str, value: &str) -> bool {
        keys::ct_eq(value.as_bytes(), self.csrf_cookie_value(state).as_bytes())
    }

    /// The sign-out CSRF token of a session (form field / query parameter).
    pub fn sign_out_token(&self, session_id: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac("sign-out", &[session_id.as_bytes()]))
    }

    /// Check a sign-out CSRF token (constant time).
    pub fn check_sign_out_token(&self, session_id: &str, token: &str) -> bool {
        keys::ct_eq(token.as_bytes(), self.sign_out_token(session_id).as_bytes())
    }

    /// Signature of a programmatic sign-in URL.
    pub fn programmatic_signature(&self, host: &str, redirect_uri: &str, issued: u64) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(
            "programmatic",
            &[
                host.as_bytes(),
                redirect_uri.as_bytes(),
                issued.to_string().as_bytes(),
            ],
        ))
    }

    /// Check a programmatic sign-in signature and its age.
    pub fn check_programmatic(
        &self,
        host: &str,
        redirect_uri: &str,
        issued: u64,
        signature: &str,
        now: u64,
    ) -> bool {
        use portcullis_common::signed_url::{MAX_AGE_SECS, MAX_SKEW_SECS};
        if now.saturating_add(MAX_SKEW_SECS) < issued || now.saturating_sub(issued) > MAX_AGE_SECS {
            return false;
        }
        keys::ct_eq(
            signature.as_bytes(),
            self.programmatic_signature(host, redirect_uri, issued)
                .as_bytes(),
        )
    }

    /// Seal a hand-off token.
    pub fn seal_handoff(&self, handoff: &Handoff) -> Result<String, TokenError> {
        let json = serde_json::to_vec(handoff).map_err(|_| TokenError::Invalid)?;
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|_| TokenError::Random)?;
        let ct = self
            .handoff
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &json,
                    aad: b"portcullis-handoff-v1",
                },
            )
            .map_err(|_| TokenError::Invalid)?;
        let mut out = Vec::with_capacity(24 + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// Open a hand-off token (authenticity and expiry; single use is checked by the caller).
    pub fn open_handoff(&self, raw: &str, now: i64) -> Result<Handoff, TokenError> {
        if raw.len() > MAX_STATE_LEN {
            return Err(TokenError::Invalid);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(raw)
            .map_err(|_| TokenError::Invalid)?;
        if bytes.len() < 24 + 16 {
            return Err(TokenError::Invalid);
        }
        let (nonce, ct) = bytes.split_at(24);
        let json = self
            .handoff
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: b"portcullis-handoff-v1",
                },
            )
            .map_err(|_| TokenError::Invalid)?;
        let h: Handoff = serde_json::from_slice(&json).map_err(|_| TokenError::Invalid)?;
        if now >= h.expires_at {
            return Err(TokenError::Expired);
        }
        Ok(h)
    }
}
