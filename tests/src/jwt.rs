//! Verifying the identity JWT (`X-Pomerium-Jwt-Assertion`) the way an upstream would:
//! against the keys published at `/.well-known/pomerium/jwks.json`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

fn b64(s: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| format!("bad base64url: {e}"))
}

fn json_part(s: &str) -> Result<Value, String> {
    serde_json::from_slice(&b64(s)?).map_err(|e| format!("bad JSON: {e}"))
}

/// Verify `token`'s signature with `jwks` (a JWK Set) and its `exp` against `now`; when
/// `audience` is given, `aud` must name it. Returns the claims.
pub fn verify(
    token: &str,
    jwks: &Value,
    audience: Option<&str>,
    now: i64,
) -> Result<Value, String> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWS".into());
    };
    let header = json_part(h)?;
    let claims = json_part(p)?;
    let sig = b64(s)?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    let kid = header.get("kid").and_then(Value::as_str);
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("JWKS has no keys")?;
    let key = keys
        .iter()
        .find(|k| kid.is_none() || k.get("kid").and_then(Value::as_str) == kid)
        .ok_or_else(|| format!("no JWKS key with kid {kid:?}"))?;
    let signed = format!("{h}.{p}");
    match alg {
        "ES256" => verify_es256(key, signed.as_bytes(), &sig)?,
        "RS256" => verify_rs256(key, signed.as_bytes(), &sig)?,
        other => return Err(format!("unexpected alg `{other}`")),
    }
    let exp = claims.get("exp").and_then(Value::as_i64).ok_or("no exp")?;
    if exp <= now {
        return Err(format!("expired (exp {exp}, now {now})"));
    }
    let Some(audience) = audience else {
        return Ok(claims);
    };
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == audience,
        Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(audience)),
        _ => false,
    };
    if !aud_ok {
        return Err(format!("aud {:?} is not `{audience}`", claims.get("aud")));
    }
    Ok(claims)
}

fn field(key: &Value, name: &str) -> Result<Vec<u8>, String> {
    b64(key
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("JWK has no `{name}`"))?)
}

fn verify_es256(key: &Value, msg: &[u8], sig: &[u8]) -> Result<(), String> {
    use p256::ecdsa::signature::Verifier as _;
    let mut sec1 = vec![4u8];
    sec1.extend(field(key, "x")?);
    sec1.extend(field(key, "y")?);
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
        .map_err(|e| format!("bad EC key: {e}"))?;
    let sig = p256::ecdsa::Signature::from_slice(sig).map_err(|e| format!("bad signature: {e}"))?;
    vk.verify(msg, &sig)
        .map_err(|_| "ES256 signature does not verify".to_owned())
}

fn verify_rs256(key: &Value, msg: &[u8], sig: &[u8]) -> Result<(), String> {
    use rsa::signature::Verifier as _;
    let n = rsa::BigUint::from_bytes_be(&field(key, "n")?);
    let e = rsa::BigUint::from_bytes_be(&field(key, "e")?);
    let pk = rsa::RsaPublicKey::new(n, e).map_err(|e| format!("bad RSA key: {e}"))?;
    let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(pk);
    let sig = rsa::pkcs1v15::Signature::try_from(sig).map_err(|e| format!("bad signature: {e}"))?;
    vk.verify(msg, &sig)
        .map_err(|_| "RS256 signature does not verify".to_owned())
}
