//! Signed sign-in redirects.
//!
//! When the filter sends an unauthenticated browser to sign in, the return URL travels
//! through the browser. It is signed with a key derived from `shared_secret` and
//! timestamped, so the sidecar only ever sends users back to URLs a Portcullis filter
//! produced recently (no open redirect, no replay of old links).

use crate::keys::{self, Purpose};
use crate::secret::Secret;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Path of the sign-in endpoint on the authenticate host.
pub const SIGN_IN_PATH: &str = "/.pomerium/sign_in";
/// Query parameter carrying the URL to return to.
pub const PARAM_REDIRECT_URI: &str = "pomerium_redirect_uri";
/// Query parameter carrying the issue time (unix seconds).
pub const PARAM_ISSUED: &str = "pomerium_issued";
/// Query parameter carrying the signature.
pub const PARAM_SIGNATURE: &str = "pomerium_signature";
/// How long a signed sign-in link is accepted.
pub const MAX_AGE_SECS: u64 = 300;
/// Tolerated clock skew between filter and sidecar.
pub const MAX_SKEW_SECS: u64 = 60;

/// The key that signs return URLs.
#[derive(Clone)]
pub struct RedirectKey(Secret);

impl RedirectKey {
    /// Derive from `shared_secret`.
    pub fn new(shared_secret: &Secret) -> Self {
        RedirectKey(keys::derive(shared_secret, Purpose::Redirect))
    }

    fn mac(&self, redirect_uri: &str, issued: u64) -> [u8; 32] {
        keys::hmac_sha256(
            self.0.expose(),
            &[
                redirect_uri.as_bytes(),
                b"\n",
                issued.to_string().as_bytes(),
            ],
        )
    }

    /// The signature parameter for `redirect_uri` issued at `issued` (unix seconds).
    pub fn sign(&self, redirect_uri: &str, issued: u64) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(redirect_uri, issued))
    }

    /// Check a signature; fails if forged, older than [`MAX_AGE_SECS`], or from the future.
    pub fn verify(&self, redirect_uri: &str, issued: u64, signature: &str, now: u64) -> bool {
        if now.saturating_add(MAX_SKEW_SECS) < issued || now.saturating_sub(issued) > MAX_AGE_SECS {
            return false;
        }
        let mut sig = [0u8; 48];
        let Ok(n) = URL_SAFE_NO_PAD.decode_slice(signature.as_bytes(), &mut sig) else {
            return false;
        };
        let expected = self.mac(redirect_uri, issued);
        sig.get(..n).is_some_and(|s| keys::ct_eq(s, &expected))
    }
}

impl core::fmt::Debug for RedirectKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RedirectKey(***)")
    }
}

/// Build the full sign-in URL: `{authenticate_base}/.pomerium/sign_in?...`.
/// `authenticate_base` is scheme + authority, without a trailing slash.
pub fn sign_in_url(
    key: &RedirectKey,
    authenticate_base: &str,
    redirect_uri: &str,
    issued: u64,
) -> String {
    let sig = key.sign(redirect_uri, issued);
    let mut url = String::with_capacity(authenticate_base.len() + redirect_uri.len() * 3 + 128);
    url.push_str(authenticate_base.trim_end_matches('/'));
    url.push_str(SIGN_IN_PATH);
    url.push('?');
    url.push_str(PARAM_REDIRECT_URI);
    url.push('=');
    percent_encode_into(redirect_uri, &mut url);
    url.push('&');
    url.push_str(PARAM_ISSUED);
    url.push('=');
    url.push_str(&issued.to_string());
    url.push('&');
    url.push_str(PARAM_SIGNATURE);
    url.push('=');
    url.push_str(&sig);
    url
}

/// Percent-encode everything but RFC 3986 unreserved characters.
pub fn percent_encode_into(input: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in input.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(
                HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0'),
            ));
            out.push(char::from(
                HEX.get(usize::from(b & 15)).copied().unwrap_or(b'0'),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_expire() {
        let k = RedirectKey::new(&Secret::from_bytes([3; 32]));
        let uri = "https://app.example.com/a?b=c&d=é";
        let sig = k.sign(uri, 1000);
        assert!(k.verify(uri, 1000, &sig, 1000));
        assert!(k.verify(uri, 1000, &sig, 1000 + MAX_AGE_SECS));
        assert!(!k.verify(uri, 1000, &sig, 1001 + MAX_AGE_SECS));
        assert!(!k.verify(uri, 1000, &sig, 1000 - MAX_SKEW_SECS - 1));
        assert!(!k.verify("https://evil.example.com/", 1000, &sig, 1000));
        assert!(!k.verify(uri, 1001, &sig, 1001));
        assert!(!k.verify(uri, 1000, "garbage!", 1000));
        let other = RedirectKey::new(&Secret::from_bytes([4; 32]));
        assert!(!other.verify(uri, 1000, &sig, 1000));
    }

    #[test]
    fn url_shape() {
        let k = RedirectKey::new(&Secret::from_bytes([3; 32]));
        let u = sign_in_url(
            &k,
            "https://auth.example.com/",
            "https://a.example.com/x?y=1",
            7,
        );
        assert!(u.starts_with(
            "https://auth.example.com/.pomerium/sign_in?pomerium_redirect_uri=https%3A%2F%2Fa.example.com%2Fx%3Fy%3D1&pomerium_issued=7&pomerium_signature="
        ));
    }
}
