//! The session cookie: an opaque session id, encrypted and authenticated with a key
//! derived from `cookie_secret` (XChaCha20-Poly1305), bound to the cookie name.
//!
//! Wire format (value of the cookie):
//! `base64url_nopad( 0x01 ‖ nonce[24] ‖ AEAD( expires_at:u64be ‖ session_id ) )`
//! with the cookie name as associated data.
//!
//! The sidecar seals (with a fresh random nonce it supplies); the filter opens on every
//! request, so [`open`] allocates nothing: it decodes and decrypts in a stack buffer.

use crate::keys::{self, Purpose};
use crate::secret::Secret;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const EXPIRY_LEN: usize = 8;
/// Longest session id we issue or accept.
pub const MAX_SESSION_ID_LEN: usize = 64;
/// Shortest session id we accept (the sidecar issues 43 characters).
pub const MIN_SESSION_ID_LEN: usize = 16;
const MAX_RAW_LEN: usize = 1 + NONCE_LEN + EXPIRY_LEN + MAX_SESSION_ID_LEN + TAG_LEN;
/// Longest cookie value we even try to decode; anything longer is "unauthenticated".
pub const MAX_COOKIE_VALUE_LEN: usize = MAX_RAW_LEN.div_ceil(3) * 4;

/// Why a cookie value was not accepted. All of them mean "unauthenticated" to the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieError {
    /// Longer than any cookie we issue.
    Oversized,
    /// Not base64url, wrong version byte, or too short.
    Malformed,
    /// Authentication failed: tampered, or sealed with another key or cookie name.
    Forged,
    /// Authentic but past its expiry.
    Expired,
}

/// The AEAD key for session cookies, derived once from `cookie_secret`.
#[derive(Clone)]
pub struct CookieKey(XChaCha20Poly1305);

impl CookieKey {
    /// Derive the cookie key from the configured `cookie_secret`.
    pub fn new(cookie_secret: &Secret) -> Self {
        let key = keys::derive(cookie_secret, Purpose::Cookie);
        CookieKey(XChaCha20Poly1305::new(key.expose().into()))
    }
}

impl core::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CookieKey(***)")
    }
}

/// A session id held inline (no heap), as opened from a cookie.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SessionId {
    len: u8,
    bytes: [u8; MAX_SESSION_ID_LEN],
}

impl SessionId {
    /// Validate a session id: 16..=64 characters of `[A-Za-z0-9_-]`.
    pub fn parse(id: &str) -> Option<SessionId> {
        let raw = id.as_bytes();
        if !is_valid_session_id(raw) {
            return None;
        }
        let mut bytes = [0u8; MAX_SESSION_ID_LEN];
        bytes.get_mut(..raw.len())?.copy_from_slice(raw);
        Some(SessionId {
            len: u8::try_from(raw.len()).ok()?,
            bytes,
        })
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        let raw = self.bytes.get(..usize::from(self.len)).unwrap_or(&[]);
        // INVARIANT: only constructed from validated ASCII.
        core::str::from_utf8(raw).unwrap_or("")
    }
}

impl core::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Session ids are bearer credentials once in a cookie: log only a prefix.
        let s = self.as_str();
        write!(f, "SessionId({}…)", s.get(..6).unwrap_or(s))
    }
}

fn is_valid_session_id(raw: &[u8]) -> bool {
    (MIN_SESSION_ID_LEN..=MAX_SESSION_ID_LEN).contains(&raw.len())
        && raw
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

/// An opened cookie: which session, and until when the cookie itself is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenedCookie {
    /// The session id the cookie names.
    pub session_id: SessionId,
    /// Unix seconds after which the cookie is no longer accepted.
    pub expires_at: u64,
}

/// Seal a session id into a cookie value. `nonce` must be fresh random bytes.
/// Returns `None` if `session_id` is not a valid session id.
pub fn seal(
    key: &CookieKey,
    cookie_name: &str,
    session_id: &str,
    expires_at: u64,
    nonce: [u8; NONCE_LEN],
) -> Option<String> {
    if !is_valid_session_id(session_id.as_bytes()) {
        return None;
    }
    let mut buf = Vec::with_capacity(MAX_RAW_LEN);
    buf.push(VERSION);
    buf.extend_from_slice(&nonce);
    let body_start = buf.len();
    buf.extend_from_slice(&expires_at.to_be_bytes());
    buf.extend_from_slice(session_id.as_bytes());
    let body = buf.get_mut(body_start..)?;
    let tag = key
        .0
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), cookie_name.as_bytes(), body)
        .ok()?;
    buf.extend_from_slice(&tag);
    Some(URL_SAFE_NO_PAD.encode(&buf))
}

/// Open a cookie value sealed by [`seal`]. Never allocates, never panics.
pub fn open(
    key: &CookieKey,
    cookie_name: &str,
    value: &str,
    now_unix: u64,
) -> Result<OpenedCookie, CookieError> {
    if value.len() > MAX_COOKIE_VALUE_LEN {
        return Err(CookieError::Oversized);
    }
    let mut buf = [0u8; MAX_RAW_LEN + 3];
    let n = URL_SAFE_NO_PAD
        .decode_slice(value.as_bytes(), &mut buf)
        .map_err(|_| CookieError::Malformed)?;
    let raw = buf.get_mut(..n).ok_or(CookieError::Malformed)?;
    if raw.len() < 1 + NONCE_LEN + EXPIRY_LEN + MIN_SESSION_ID_LEN + TAG_LEN {
        return Err(CookieError::Malformed);
    }
    let (version, rest) = raw.split_first_mut().ok_or(CookieError::Malformed)?;
    if *version != VERSION {
        return Err(CookieError::Malformed);
    }
    let (nonce, rest) = rest.split_at_mut(NONCE_LEN);
    let body_len = rest.len() - TAG_LEN;
    let (body, tag) = rest.split_at_mut(body_len);
    key.0
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            cookie_name.as_bytes(),
            body,
            Tag::from_slice(tag),
        )
        .map_err(|_| CookieError::Forged)?;
    let (expiry, id) = body.split_at(EXPIRY_LEN);
    let expires_at = u64::from_be_bytes(expiry.try_into().map_err(|_| CookieError::Malformed)?);
    let id = core::str::from_utf8(id).map_err(|_| CookieError::Malformed)?;
    let session_id = SessionId::parse(id).ok_or(CookieError::Malformed)?;
    if now_unix >= expires_at {
        return Err(CookieError::Expired);
    }
    Ok(OpenedCookie {
        session_id,
        expires_at,
    })
}

/// Every value of the cookie `name` in a `Cookie` request header, in order.
///
/// Browsers may send several cookies with one name (different paths or domains); callers
/// try each and use the first that opens, so a planted cookie cannot shadow the real one.
pub fn cookie_values<'a>(header: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    header.split(';').filter_map(move |pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

/// The `Cookie` header with every cookie named `name` removed, keeping the others in
/// order. `None` when nothing else remains (drop the header then).
pub fn strip_cookie(header: &str, name: &str) -> Option<String> {
    let mut out = String::with_capacity(header.len());
    for pair in header.split(';') {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k).trim();
        if key == name || pair.trim().is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(pair.trim());
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SID: &str = "Jx3kR0xu0Gm5P1l7c3V7Zz8yq1a2b3c4d5e6f7g8h9i";

    fn key(b: u8) -> CookieKey {
        CookieKey::new(&Secret::from_bytes([b; 32]))
    }

    #[test]
    fn round_trip() {
        let v = seal(&key(1), "_pomerium", SID, 2_000, [9; 24]).unwrap();
        assert!(v.len() <= MAX_COOKIE_VALUE_LEN);
        let o = open(&key(1), "_pomerium", &v, 1_000).unwrap();
        assert_eq!(o.session_id.as_str(), SID);
        assert_eq!(o.expires_at, 2_000);
    }

    #[test]
    fn rejects_wrong_key_name_expiry_and_tampering() {
        let v = seal(&key(1), "_pomerium", SID, 2_000, [9; 24]).unwrap();
        assert_eq!(
            open(&key(2), "_pomerium", &v, 1_000),
            Err(CookieError::Forged)
        );
        assert_eq!(open(&key(1), "_other", &v, 1_000), Err(CookieError::Forged));
        assert_eq!(
            open(&key(1), "_pomerium", &v, 2_000),
            Err(CookieError::Expired)
        );
        let mut bytes = v.clone().into_bytes();
        let mid = bytes.len() / 2;
        bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(
            open(&key(1), "_pomerium", &tampered, 1_000),
            Err(CookieError::Forged)
        );
        assert_eq!(
            open(&key(1), "_pomerium", "", 0),
            Err(CookieError::Malformed)
        );
        assert_eq!(
            open(&key(1), "_pomerium", "!!!", 0),
            Err(CookieError::Malformed)
        );
        let huge = "A".repeat(MAX_COOKIE_VALUE_LEN + 1);
        assert_eq!(
            open(&key(1), "_pomerium", &huge, 0),
            Err(CookieError::Oversized)
        );
    }

    #[test]
    fn refuses_to_seal_invalid_ids() {
        assert!(seal(&key(1), "c", "short", 1, [0; 24]).is_none());
        assert!(seal(&key(1), "c", "has space in it....", 1, [0; 24]).is_none());
        assert!(seal(&key(1), "c", &"a".repeat(65), 1, [0; 24]).is_none());
    }

    #[test]
    fn cookie_header_helpers() {
        let h = "a=1; _pomerium=xyz; b=2;_pomerium=\"second\"";
        assert_eq!(
            cookie_values(h, "_pomerium").collect::<Vec<_>>(),
            ["xyz", "second"]
        );
        assert_eq!(strip_cookie(h, "_pomerium").as_deref(), Some("a=1; b=2"));
        assert_eq!(strip_cookie("_pomerium=1", "_pomerium"), None);
        // A cookie whose name merely starts with ours is kept.
        assert_eq!(
            strip_cookie("_pomerium_csrf=1", "_pomerium").as_deref(),
            Some("_pomerium_csrf=1")
        );
    }

    proptest! {
        #[test]
        fn open_never_panics(s in ".{0,300}") {
            let _ = open(&key(1), "_pomerium", &s, 0);
        }

        #[test]
        fn open_never_panics_on_base64(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let s = URL_SAFE_NO_PAD.encode(&bytes);
            prop_assert!(open(&key(1), "_pomerium", &s, 0).is_err());
        }
    }
}
