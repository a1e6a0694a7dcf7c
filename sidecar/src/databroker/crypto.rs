//! Encryption of record bodies at rest: XChaCha20-Poly1305 with a key derived from
//! `shared_secret` (`Purpose::Databroker`), a fresh random 192-bit nonce per write, and
//! the record's kind and id as associated data (a body cannot be moved to another record).
//!
//! Format: `0x01 ‖ nonce[24] ‖ ciphertext+tag`.

use super::{Kind, StoreError};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use portcullis_common::Secret;
use portcullis_common::keys::{self, Purpose};

const FORMAT: u8 = 1;
const NONCE_LEN: usize = 24;

/// The databroker's record cipher.
#[derive(Clone)]
pub struct RecordCipher(XChaCha20Poly1305);

impl std::fmt::Debug for RecordCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordCipher(***)")
    }
}

fn aad(kind: Kind, id: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(16 + id.len());
    a.extend_from_slice(b"portcullis/record/");
    a.extend_from_slice(kind.as_str().as_bytes());
    a.push(b'/');
    a.extend_from_slice(id.as_bytes());
    a
}

impl RecordCipher {
    /// Derive the record key from `shared_secret`.
    pub fn new(shared_secret: &Secret) -> Self {
        let key = keys::derive(shared_secret, Purpose::Databroker);
        RecordCipher(XChaCha20Poly1305::new(key.expose().into()))
    }

    /// Encrypt a record body.
    pub fn seal(&self, kind: Kind, id: &str, plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)
            .map_err(|e| StoreError::Backend(format!("no randomness for a nonce: {e}")))?;
        let ct = self
            .0
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad(kind, id),
                },
            )
            .map_err(|_| StoreError::Backend("record encryption failed".to_owned()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(FORMAT);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypt a record body sealed by [`RecordCipher::seal`] for the same kind and id.
    pub fn open(&self, kind: Kind, id: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let corrupt = || StoreError::Corrupt(format!("{}/{}", kind.as_str(), short(id)));
        let (format, rest) = sealed.split_first().ok_or_else(corrupt)?;
        if *format != FORMAT || rest.len() < NONCE_LEN {
            return Err(corrupt());
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        self.0
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: &aad(kind, id),
                },
            )
            .map_err(|_| corrupt())
    }
}

/// A log-safe prefix of an id (session ids are credentials once in a cookie).
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let c = RecordCipher::new(&Secret::from_bytes([3; 32]));
        let sealed = c.seal(Kind::Session, "abc", b"secret token").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            c.open(Kind::Session, "abc", &sealed).unwrap(),
            b"secret token"
        );
        // Bound to kind and id.
        assert!(c.open(Kind::Session, "abd", &sealed).is_err());
        assert!(c.open(Kind::User, "abc", &sealed).is_err());
        // Another key.
        let other = RecordCipher::new(&Secret::from_bytes([4; 32]));
        assert!(other.open(Kind::Session, "abc", &sealed).is_err());
        // Tampering and truncation.
        let mut t = sealed.clone();
        if let Some(b) = t.last_mut() {
            *b ^= 1;
        }
        assert!(c.open(Kind::Session, "abc", &t).is_err());
        assert!(c.open(Kind::Session, "abc", &[]).is_err());
        assert!(c.open(Kind::Session, "abc", &[1, 2, 3]).is_err());
        // Fresh nonce every time.
        assert_ne!(
            c.seal(Kind::Session, "abc", b"x").unwrap(),
            c.seal(Kind::Session, "abc", b"x").unwrap()
        );
    }
}
