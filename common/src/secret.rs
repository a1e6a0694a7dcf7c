//! Secret values whose `Debug` never prints them.

use core::fmt;

/// A 32-byte secret (Pomerium's `shared_secret` / `cookie_secret`: base64 of 32 random bytes).
///
/// `Debug` prints `***`, so a secret never reaches a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; 32]);

/// Why a configured secret was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretError {
    /// Not valid standard or URL-safe base64.
    NotBase64,
    /// Decoded to a length other than 32 bytes.
    WrongLength(usize),
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::NotBase64 => f.write_str("secret is not valid base64"),
            SecretError::WrongLength(n) => {
                write!(f, "secret must decode to 32 bytes, got {n}")
            }
        }
    }
}

impl core::error::Error for SecretError {}

impl Secret {
    /// Wrap raw key bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Secret(bytes)
    }

    /// Parse Pomerium's format: base64 (standard or URL-safe, padded or not) of 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, SecretError> {
        use base64::Engine as _;
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        let text = text.trim();
        let decoded = STANDARD
            .decode(text)
            .or_else(|_| STANDARD_NO_PAD.decode(text))
            .or_else(|_| URL_SAFE.decode(text))
            .or_else(|_| URL_SAFE_NO_PAD.decode(text))
            .map_err(|_| SecretError::NotBase64)?;
        let bytes: [u8; 32] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| SecretError::WrongLength(decoded.len()))?;
        Ok(Secret(bytes))
    }

    /// The raw key bytes. Only key derivation should need this.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A string secret (client secret, token, connection string, PEM key) whose `Debug` and
/// `Display` print `***`, so it never reaches a log by accident.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct SecretString(String);

impl SecretString {
    /// Wrap a secret.
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    /// The secret itself: only for code that hands it to its owner (an IdP, Redis, a key
    /// parser). Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        SecretString(value)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(***)")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pomerium_secrets_and_hides_them() {
        // The cookie_secret from the issue report's config.
        let s = Secret::from_base64("KDBIqKTq8aJ4OuU07np7qBtT6jX37I2H5DCczzExvP8=").unwrap();
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(
            Secret::from_base64("c2hvcnQ="),
            Err(SecretError::WrongLength(5))
        );
        assert_eq!(
            Secret::from_base64("not base64!"),
            Err(SecretError::NotBase64)
        );
    }

    #[test]
    fn secret_strings_never_print() {
        let s = SecretString::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "SecretString(***) ***");
        assert_eq!(s.expose(), "hunter2");
    }
}
