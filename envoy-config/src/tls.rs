//! Listener certificates: reading the configured ones (and the names they serve, for SNI
//! filter chains) and generating the self-signed fallback.

use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

use crate::Error;
use crate::model::{Certificate, DataSource};

/// DNS names a PEM certificate chain's leaf serves: its subject alternative names, or its
/// common name when it has none (as TLS clients used to accept).
pub fn server_names(pem: &str) -> Result<Vec<String>, Error> {
    let mut pems = Pem::iter_from_buffer(pem.as_bytes());
    let leaf = match pems.next() {
        Some(Ok(p)) => p,
        Some(Err(e)) => return Err(Error::Certificate(format!("bad PEM: {e}"))),
        None => return Err(Error::Certificate("no certificate in PEM data".into())),
    };
    let cert = leaf
        .parse_x509()
        .map_err(|e| Error::Certificate(format!("bad X.509 certificate: {e}")))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_ascii_lowercase());
            }
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// A configured certificate: `chain`/`key` as Envoy should load them, `pem` the chain's
/// text (read now only to learn its names).
pub fn certificate(chain: DataSource, key: DataSource, pem: &str) -> Result<Certificate, Error> {
    Ok(Certificate {
        server_names: server_names(pem)?,
        chain,
        key,
    })
}

/// A fresh self-signed certificate (ECDSA P-256) for `names` (DNS names or IP literals),
/// inlined. Browsers will warn: it exists so that a TLS listener without a matching
/// certificate still answers, as Pomerium's does.
pub fn self_signed(names: &[String]) -> Result<Certificate, Error> {
    let mut names: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        names.push("localhost".into());
    }
    let ck = rcgen::generate_simple_self_signed(names).map_err(|e| {
        Error::Certificate(format!("cannot generate a self-signed certificate: {e}"))
    })?;
    Ok(Certificate {
        server_names: Vec::new(),
        chain: DataSource::Inline(ck.cert.pem()),
        key: DataSource::Inline(ck.key_pair.serialize_pem()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificate_names_its_hosts() {
        let c = self_signed(&[
            "App.Example.com".into(),
            "127.0.0.2".into(),
            "*.corp.test".into(),
        ])
        .unwrap();
        let DataSource::Inline(pem) = &c.chain else {
            panic!("inline expected")
        };
        // IP SANs are not DNS names: only the two names come back.
        assert_eq!(
            server_names(pem).unwrap(),
            vec!["*.corp.test", "app.example.com"]
        );
        assert!(matches!(&c.key, DataSource::Inline(k) if k.contains("PRIVATE KEY")));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(server_names("not a pem").is_err());
        assert!(
            server_names("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err()
        );
    }
}
