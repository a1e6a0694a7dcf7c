//! The identity JWT (`X-Pomerium-Jwt-Assertion`) and the JWKS that verifies it.
//!
//! The key comes from `signing_key` (Pomerium: base64 of a PEM; a plain PEM is accepted
//! too) or `signing_key_file` (read into `signing_key` by the settings); the algorithm is
//! inferred from it: ES256 for a P-256 key, RS256 for an RSA key (Pomerium removed
//! `signing_key_algorithm`). Without a key a P-256 key is generated at start and the fact
//! is logged (never the key); such a key changes on every restart, so upstreams that pin
//! the JWKS must refetch it.
//!
//! Claims come from the session's own stored claims only ([`Session::claims`]), so the
//! JWT always agrees with the policy view and the user info page of the same session.

use crate::idp::{IdentitySigner, SignError};
use crate::session::Session;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};
use sha2::Digest as _;

/// How long an identity JWT is valid. The filter caches it until shortly before `exp`.
pub const JWT_LIFETIME_SECS: i64 = 300;

/// Why the configured signing key was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Neither PEM nor base64 of a PEM.
    #[error("`signing_key` is neither a PEM nor base64 of a PEM")]
    NotPem,
    /// A PEM of a kind we do not sign with.
    #[error("`signing_key` must be a P-256 (ES256) or RSA (RS256) private key, got PEM `{0}`")]
    Unsupported(String),
    /// The PEM did not decode as the key type its label names.
    #[error("`signing_key` could not be decoded: {0}")]
    Invalid(String),
    /// No randomness to generate a key.
    #[error("cannot generate a signing key: {0}")]
    Random(String),
}

enum Key {
    Es256(p256::ecdsa::SigningKey),
    Rs256(Box<rsa::pkcs1v15::SigningKey<sha2::Sha256>>),
}

/// Signs identity JWTs for every route; implements [`IdentitySigner`].
pub struct JwtSigner {
    key: Key,
    kid: String,
    /// The public key as a JWK (with `kid`, `alg`, `use`).
    public_jwk: Value,
    /// `iss`: the authenticate service host.
    issuer: String,
    /// Claim names from `jwt_claims_headers`, added to every JWT when the session has them.
    extra_claims: Vec<String>,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigner")
            .field("alg", &self.alg())
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl JwtSigner {
    /// A signer with the configured key (`signing_key`: PEM or base64 of a PEM), or a
    /// freshly generated P-256 key when none is configured.
    pub fn new(
        signing_key: Option<&str>,
        issuer: impl Into<String>,
        jwt_claims_headers: &[(String, String)],
    ) -> Result<Self, KeyError> {
        let key = match signing_key {
            Some(text) => parse_key(text)?,
            None => {
                tracing::info!(
                    "no signing_key configured: generated an ephemeral P-256 key for the identity JWT (it changes on restart)"
                );
                Key::Es256(generate_p256()?)
            }
        };
        let (public_jwk, kid) = public_jwk(&key);
        let mut extra_claims: Vec<String> = Vec::new();
        for (_, claim) in jwt_claims_headers {
            if !extra_claims.contains(claim) {
                extra_claims.push(claim.clone());
            }
        }
        Ok(JwtSigner {
            key,
            kid,
            public_jwk,
            issuer: issuer.into(),
            extra_claims,
        })
    }

    /// `ES256` or `RS256`.
    pub fn alg(&self) -> &'static str {
        match self.key {
            Key::Es256(_) => "ES256",
            Key::Rs256(_) => "RS256",
        }
    }

    /// The key id published in the JWKS and the JWT header (RFC 7638 thumbprint).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The payload of the identity JWT of `session` for `audience` at `now`.
    ///
    /// Pomerium's claims: `iss`, `aud`, `iat`, `exp`, `jti`, `sub`, `user`, `sid`, `email`,
    /// `groups`, `name`, plus every claim named in `jwt_claims_headers` the session has.
    pub fn claims(
        &self,
        session: &Session,
        audience: &str,
        now: i64,
        jti: &str,
    ) -> Map<String, Value> {
        let mut out = Map::new();
        // Configured extra claims first, so the standard ones below always win.
        for name in &self.extra_claims {
            if let Some(v) = session.claims.get(name) {
                out.insert(name.clone(), v.clone());
            }
        }
        out.insert("iss".into(), json!(self.issuer));
        out.insert("aud".into(), json!(audience));
        out.insert("iat".into(), json!(now));
        out.insert("exp".into(), json!(now.saturating_add(JWT_LIFETIME_SECS)));
        out.insert("jti".into(), json!(jti));
        out.insert("sub".into(), json!(session.user_id));
        out.insert("user".into(), json!(session.user_id));
        out.insert("sid".into(), json!(session.id));
        out.insert("email".into(), json!(session.email().unwrap_or_default()));
        out.insert("groups".into(), json!(session.groups()));
        if let Some(name) = session.claim_str("name") {
            out.insert("name".into(), json!(name));
        }
        out
    }

    /// Sign a payload into a compact JWS.
    pub fn sign_payload(&self, payload: &Map<String, Value>) -> Result<String, SignError> {
        let header = json!({"alg": self.alg(), "kid": self.kid, "typ": "JWT"});
        let header = serde_json::to_vec(&header).map_err(|e| SignError(e.to_string()))?;
        let payload = serde_json::to_vec(payload).map_err(|e| SignError(e.to_string()))?;
        let mut jws = String::with_capacity(header.len() * 2 + payload.len() * 2 + 400);
        URL_SAFE_NO_PAD.encode_string(&header, &mut jws);
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut jws);
        let signature = match &self.key {
            Key::Es256(k) => {
                use p256::ecdsa::signature::Signer as _;
                let sig: p256::ecdsa::Signature = k
                    .try_sign(jws.as_bytes())
                    .map_err(|e| SignError(e.to_string()))?;
                sig.to_vec()
            }
            Key::Rs256(k) => {
                use rsa::signature::{SignatureEncoding as _, Signer as _};
                k.try_sign(jws.as_bytes())
                    .map_err(|e| SignError(e.to_string()))?
                    .to_vec()
            }
        };
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut jws);
        Ok(jws)
    }
}

impl IdentitySigner for JwtSigner {
    fn sign(&self, session: &Session, audience: &str) -> Result<(String, i64), SignError> {
        let now = crate::databroker::now_unix();
        let jti = random_token().map_err(|e| SignError(e.to_string()))?;
        let claims = self.claims(session, audience, now, &jti);
        let jwt = self.sign_payload(&claims)?;
        Ok((jwt, now.saturating_add(JWT_LIFETIME_SECS)))
    }

    fn jwks(&self) -> Value {
        json!({ "keys": [self.public_jwk] })
    }
}

/// 16 random bytes, base64url (a `jti`).
fn random_token() -> Result<String, KeyError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

fn generate_p256() -> Result<p256::ecdsa::SigningKey, KeyError> {
    // A uniformly random 32-byte string is a valid scalar with overwhelming probability;
    // retry the (≈2⁻³²) rest rather than bias anything.
    for _ in 0..8 {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
        if let Ok(k) = p256::ecdsa::SigningKey::from_slice(&bytes) {
            return Ok(k);
        }
    }
    Err(KeyError::Random("no valid P-256 scalar drawn".into()))
}

/// Accept a PEM, or base64 of a PEM (Pomerium's `signing_key` format).
fn pem_text(text: &str) -> Result<String, KeyError> {
    let trimmed = text.trim();
    if trimmed.starts_with("-----BEGIN ") {
        return Ok(trimmed.to_owned());
    }
    let compact: String = trimmed.chars().filter(|c| !c.is_whitespace()).collect();
    let decoded = STANDARD
        .decode(&compact)
        .or_else(|_| URL_SAFE_NO_PAD.decode(&compact))
        .map_err(|_| KeyError::NotPem)?;
    let pem = String::from_utf8(decoded).map_err(|_| KeyError::NotPem)?;
    if pem.trim_start().starts_with("-----BEGIN ") {
        Ok(pem.trim().to_owned())
    } else {
        Err(KeyError::NotPem)
    }
}

fn parse_key(text: &str) -> Result<Key, KeyError> {
    let pem = pem_text(text)?;
    let label = pem
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("-----BEGIN "))
        .and_then(|l| l.strip_suffix("-----"))
        .unwrap_or_default()
        .to_owned();
    match label.as_str() {
        "EC PRIVATE KEY" => {
            let sk = p256::SecretKey::from_sec1_pem(&pem).map_err(|_| {
                KeyError::Invalid("not a P-256 SEC1 key (only P-256 is supported for EC)".into())
            })?;
            Ok(Key::Es256(p256::ecdsa::SigningKey::from(sk)))
        }
        "RSA PRIVATE KEY" => {
            use rsa::pkcs1::DecodeRsaPrivateKey as _;
            let k = rsa::RsaPrivateKey::from_pkcs1_pem(&pem)
                .map_err(|e| KeyError::Invalid(format!("RSA PKCS#1: {e}")))?;
            rsa_key(k)
        }
        "PRIVATE KEY" => {
            use p256::pkcs8::DecodePrivateKey as _;
            if let Ok(sk) = p256::SecretKey::from_pkcs8_pem(&pem) {
                return Ok(Key::Es256(p256::ecdsa::SigningKey::from(sk)));
            }
            use rsa::pkcs8::DecodePrivateKey as _;
            let k = rsa::RsaPrivateKey::from_pkcs8_pem(&pem)
                .map_err(|_| KeyError::Invalid("PKCS#8 key is neither P-256 nor RSA".into()))?;
            rsa_key(k)
        }
        other => Err(KeyError::Unsupported(other.to_owned())),
    }
}

fn rsa_key(k: rsa::RsaPrivateKey) -> Result<Key, KeyError> {
    use rsa::traits::PublicKeyParts as _;
    if k.size() < 256 {
        return Err(KeyError::Invalid(
            "RSA keys must have at least 2048 bits".into(),
        ));
    }
    Ok(Key::Rs256(Box::new(rsa::pkcs1v15::SigningKey::<
        sha2::Sha256,
    >::new(k))))
}

/// The public JWK and its RFC 7638 thumbprint (the `kid`).
fn public_jwk(key: &Key) -> (Value, String) {
    match key {
        Key::Es256(k) => {
            let point = k.verifying_key().to_sec1_point(false);
            let x = point
                .x()
                .map(|x| URL_SAFE_NO_PAD.encode(x))
                .unwrap_or_default();
            let y = point
                .y()
                .map(|y| URL_SAFE_NO_PAD.encode(y))
                .unwrap_or_default();
            // RFC 7638: required members only, lexicographic order, no whitespace.
            let kid = thumbprint(&format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#
            ));
            let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"});
            (jwk, kid)
        }
        Key::Rs256(k) => {
            use rsa::traits::PublicKeyParts as _;
            let public = k.as_ref().as_ref().to_public_key();
            let n = URL_SAFE_NO_PAD.encode(public.n().to_bytes_be());
            let e = URL_SAFE_NO_PAD.encode(public.e().to_bytes_be());
            let kid = thumbprint(&format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#));
            let jwk =
                json!({"kty": "RSA", "n": n, "e": e, "kid": kid, "alg": "RS256", "use": "sig"});
            (jwk, kid)
        }
    }
}

fn thumbprint(canonical: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests;
