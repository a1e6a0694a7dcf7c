use super::*;
use crate::idp::{SecretString, VerifiedIdToken};
use crate::session::{OAuthToken, RefreshState};

fn session(claims: Value) -> Session {
    let Value::Object(claims) = claims else {
        panic!("object")
    };
    Session {
        id: "sessionid-0123456789abcdefghijklmnopqrstuvw".into(),
        user_id: "alice".into(),
        issued_at: 1,
        expires_at: 2,
        id_token: VerifiedIdToken {
            raw: SecretString::new("x.y.z"),
            claims: claims.clone(),
            expires_at: 2,
        },
        oauth_token: OAuthToken {
            access_token: SecretString::new("at"),
            refresh_token: None,
            expires_at: None,
        },
        user_info: Map::new(),
        client_id: "c".into(),
        claims,
        refresh: RefreshState::default(),
        version: 1,
    }
}

fn decode_part(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Verify a compact JWS against the signer's published JWKS, independently of the signer.
fn verify(jwt: &str, jwks: &Value) -> Value {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header = decode_part(parts[0]);
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("kid published");
    let signed = format!("{}.{}", parts[0], parts[1]);
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    match header["alg"].as_str().unwrap() {
        "ES256" => {
            use p256::ecdsa::signature::Verifier as _;
            let x = URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap();
            let y = URL_SAFE_NO_PAD.decode(key["y"].as_str().unwrap()).unwrap();
            let mut sec1 = vec![4u8];
            sec1.extend(x);
            sec1.extend(y);
            let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).unwrap();
            let sig = p256::ecdsa::Signature::from_slice(&sig).unwrap();
            vk.verify(signed.as_bytes(), &sig).unwrap();
        }
        "RS256" => {
            use rsa::signature::Verifier as _;
            let n = URL_SAFE_NO_PAD.decode(key["n"].as_str().unwrap()).unwrap();
            let e = URL_SAFE_NO_PAD.decode(key["e"].as_str().unwrap()).unwrap();
            let pk = rsa::RsaPublicKey::new(
                rsa::BigUint::from_bytes_be(&n),
                rsa::BigUint::from_bytes_be(&e),
            )
            .unwrap();
            let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(pk);
            let sig = rsa::pkcs1v15::Signature::try_from(sig.as_slice()).unwrap();
            vk.verify(signed.as_bytes(), &sig).unwrap();
        }
        other => panic!("unexpected alg {other}"),
    }
    decode_part(parts[1])
}

#[test]
fn generated_key_signs_es256_with_session_claims() {
    let signer = JwtSigner::new(
        None,
        "authenticate.example.com",
        &[("x-pomerium-claim-department".into(), "department".into())],
    )
    .unwrap();
    assert_eq!(signer.alg(), "ES256");
    let s = session(json!({
        "sub": "alice", "email": "alice@example.com", "name": "Alice",
        "groups": ["admins", "staff"], "department": "eng", "secret_internal": "nope"
    }));
    let (jwt, exp) = signer.sign(&s, "app.example.com").unwrap();
    let claims = verify(&jwt, &signer.jwks());
    assert_eq!(claims["iss"], "authenticate.example.com");
    assert_eq!(claims["aud"], "app.example.com");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["user"], "alice");
    assert_eq!(claims["sid"], s.id.as_str());
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["name"], "Alice");
    assert_eq!(claims["groups"], json!(["admins", "staff"]));
    assert_eq!(claims["department"], "eng");
    // Only configured claims are copied.
    assert!(claims.get("secret_internal").is_none());
    assert_eq!(claims["exp"], exp);
    assert_eq!(exp - claims["iat"].as_i64().unwrap(), JWT_LIFETIME_SECS);
    // A fresh jti per token.
    let (jwt2, _) = signer.sign(&s, "app.example.com").unwrap();
    assert_ne!(verify(&jwt2, &signer.jwks())["jti"], claims["jti"]);
}

#[test]
fn claims_follow_the_session_not_anything_else() {
    let signer = JwtSigner::new(None, "auth", &[]).unwrap();
    let mut s = session(json!({"sub": "alice", "groups": ["admins", "staff"]}));
    let with = verify(&signer.sign(&s, "a").unwrap().0, &signer.jwks());
    assert_eq!(with["groups"], json!(["admins", "staff"]));
    s.claims.insert("groups".into(), json!(["staff"]));
    let without = verify(&signer.sign(&s, "a").unwrap().0, &signer.jwks());
    assert_eq!(without["groups"], json!(["staff"]));
    // Standard claims cannot be overridden by a configured claim of the same name.
    let signer = JwtSigner::new(None, "auth", &[("x-aud".into(), "aud".into())]).unwrap();
    s.claims.insert("aud".into(), json!("idp-client"));
    assert_eq!(
        verify(&signer.sign(&s, "route").unwrap().0, &signer.jwks())["aud"],
        "route"
    );
}

#[test]
fn parses_p256_pems_in_every_pomerium_form() {
    use p256::pkcs8::EncodePrivateKey as _;
    let sk = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
    let sec1 = sk
        .to_sec1_pem(p256::pkcs8::LineEnding::LF)
        .unwrap()
        .to_string();
    let pkcs8 = sk
        .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
        .unwrap()
        .to_string();
    let b64 = STANDARD.encode(&sec1);
    let kids: Vec<String> = [sec1.as_str(), pkcs8.as_str(), b64.as_str()]
        .iter()
        .map(|pem| {
            let s = JwtSigner::new(Some(pem), "auth", &[]).unwrap();
            assert_eq!(s.alg(), "ES256");
            let (jwt, _) = s.sign(&session(json!({"sub": "alice"})), "a").unwrap();
            verify(&jwt, &s.jwks());
            s.kid().to_owned()
        })
        .collect();
    // One key, one kid, whatever the encoding.
    assert!(kids.iter().all(|k| k == &kids[0]));
}

#[test]
fn parses_rsa_and_signs_rs256() {
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    use rsa::pkcs8::EncodePrivateKey as _;
    let mut rng = rsa::rand_core::OsRng;
    let k = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let pkcs1 = k
        .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap()
        .to_string();
    let pkcs8 = k
        .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap()
        .to_string();
    for pem in [pkcs1, STANDARD.encode(&pkcs8)] {
        let s = JwtSigner::new(Some(&pem), "auth", &[]).unwrap();
        assert_eq!(s.alg(), "RS256");
        let (jwt, _) = s
            .sign(&session(json!({"sub": "alice", "email": "a@b"})), "a")
            .unwrap();
        assert_eq!(verify(&jwt, &s.jwks())["email"], "a@b");
        assert_eq!(s.jwks()["keys"][0]["kty"], "RSA");
    }
}

#[test]
fn refuses_bad_keys_clearly() {
    const P384: &str = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDA6v6RTGlupreTmnwoz
a5khVGmuq2A4xbxRFAnKaS1GZFw+2pDRLeo3FdM7wPMIOdGhZANiAARgGn0oVsOp
dxg1QP1BljQJ316u7QSfE6YLHmF2j8APTX5WohaAuintrMQT3hno51PcP6w604HH
LDLj7Kxoi6l8pQDCcmicHRik03oRmQQuLaWv0jZy7+9mVvUlcW3Qcns=
-----END PRIVATE KEY-----";
    assert!(matches!(
        JwtSigner::new(Some(P384), "a", &[]),
        Err(KeyError::Invalid(_))
    ));
    assert!(matches!(
        JwtSigner::new(Some("hello"), "a", &[]),
        Err(KeyError::NotPem)
    ));
    assert!(matches!(
        JwtSigner::new(
            Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"),
            "a",
            &[]
        ),
        Err(KeyError::Unsupported(_))
    ));
    assert!(matches!(
        JwtSigner::new(
            Some("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----"),
            "a",
            &[]
        ),
        Err(KeyError::Invalid(_))
    ));
    // The key never shows in Debug.
    let s = JwtSigner::new(None, "a", &[]).unwrap();
    assert!(format!("{s:?}").ends_with(", .. }"));
}
