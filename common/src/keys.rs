//! Purpose-bound keys derived from the configured secrets (HKDF-SHA256).
//!
//! One configured secret never keys two mechanisms: a leak of, say, the internal API
//! token does not let anyone forge cookies or redirects.

use crate::secret::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What a derived key is for; the label is the HKDF `info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// AEAD key of the session cookie (from `cookie_secret`).
    Cookie,
    /// HMAC key of signed sign-in return URLs (from `shared_secret`).
    Redirect,
    /// Bearer token of the internal filter → sidecar API (from `shared_secret`).
    InternalApi,
    /// AEAD key of databroker records at rest (from `shared_secret`).
    Databroker,
    /// AEAD key of the authenticate-host → route-host session hand-off (from `shared_secret`).
    Handoff,
    /// HMAC key of CSRF tokens (sign-out, login `state`) (from `cookie_secret`).
    Csrf,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Cookie => b"portcullis/cookie/v1",
            Purpose::Redirect => b"portcullis/redirect/v1",
            Purpose::InternalApi => b"portcullis/internal-api/v1",
            Purpose::Databroker => b"portcullis/databroker/v1",
            Purpose::Handoff => b"portcullis/handoff/v1",
            Purpose::Csrf => b"portcullis/csrf/v1",
        }
    }
}

/// HKDF-SHA256 (RFC 5869) with an empty salt, one output block: `T(1)`.
pub fn derive(secret: &Secret, purpose: Purpose) -> Secret {
    // Extract: PRK = HMAC(salt = zeros, IKM).
    let prk = hmac_sha256(&[0u8; 32], &[secret.expose()]);
    // Expand: T(1) = HMAC(PRK, info || 0x01).
    Secret::from_bytes(hmac_sha256(&prk, &[purpose.label(), &[1u8]]))
}

/// HMAC-SHA256 over the concatenation of `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail; fall back to an
    // all-zero tag rather than panic if that ever changed (it would then never verify).
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        return [0u8; 32];
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Constant-time comparison of two MACs or tokens.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_give_distinct_stable_keys() {
        let s = Secret::from_bytes([7u8; 32]);
        let all = [
            Purpose::Cookie,
            Purpose::Redirect,
            Purpose::InternalApi,
            Purpose::Databroker,
            Purpose::Handoff,
            Purpose::Csrf,
        ];
        for (i, a) in all.iter().enumerate() {
            assert_eq!(derive(&s, *a), derive(&s, *a));
            for b in all.iter().skip(i + 1) {
                assert_ne!(derive(&s, *a), derive(&s, *b), "{a:?} vs {b:?}");
            }
        }
        assert_ne!(
            derive(&s, Purpose::Cookie),
            derive(&Secret::from_bytes([8u8; 32]), Purpose::Cookie)
        );
    }

    #[test]
    fn hkdf_matches_rfc5869_structure() {
        // Independent computation of the same two HMAC steps.
        let s = Secret::from_bytes([1u8; 32]);
        let prk = hmac_sha256(&[0u8; 32], &[&[1u8; 32]]);
        let okm = hmac_sha256(&prk, &[b"portcullis/cookie/v1\x01"]);
        assert_eq!(derive(&s, Purpose::Cookie).expose(), &okm);
    }

    #[test]
    fn ct_eq_checks_length_and_content() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }
}
