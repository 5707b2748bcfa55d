//! An issuer's JWKS document → verification keys by `kid`. Pure.
//!
//! Keys that cannot be used are skipped, not fatal: an IdP may publish encryption keys or new
//! key types next to the signing keys we need. Skipped: `use` other than `sig`, no `kid`,
//! symmetric keys, RSA moduli under 2048 bits, and anything jsonwebtoken cannot load.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use sha2::Digest;

use super::token::algorithms_for;

pub struct VerifyKey {
    pub kid: String,
    /// SHA-256 of the JWK as published: a key replaced under the same `kid` is a new key.
    pub fingerprint: [u8; 32],
    pub key: DecodingKey,
    /// What this key may verify: its type's family, narrowed by its `alg` if it names one.
    pub algorithms: Vec<Algorithm>,
}

pub type Keys = HashMap<String, Arc<VerifyKey>>;

/// Parses a JWKS document. Errors only when the document itself is unusable.
pub fn parse(body: &[u8]) -> Result<Keys, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let list = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("JWKS has no \"keys\" array")?;
    let mut keys = Keys::new();
    for k in list {
        let s = |name: &str| k.get(name).and_then(Value::as_str);
        if s("use").is_some_and(|u| u != "sig") {
            continue;
        }
        let Some(kid) = s("kid").filter(|k| !k.is_empty()) else {
            continue;
        };
        let algorithms = algorithms_for(s("kty").unwrap_or(""), s("crv"), s("alg"));
        let weak_rsa = s("kty") == Some("RSA")
            && s("n")
                .and_then(|n| B64.decode(n).ok())
                .is_none_or(|n| n.iter().skip_while(|b| **b == 0).count() * 8 < 2048);
        if algorithms.is_empty() || weak_rsa {
            continue;
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(k.clone()) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        keys.insert(
            kid.to_owned(),
            Arc::new(VerifyKey {
                fingerprint: sha2::Sha256::digest(k.to_string().as_bytes()).into(),
                kid: kid.to_owned(),
                key,
                algorithms,
            }),
        );
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EC: &str = r#"{"kty":"EC","crv":"P-256","kid":"e1","use":"sig",
        "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

    #[test]
    fn keeps_signing_keys_and_skips_the_rest() {
        let doc = format!(
            r#"{{"keys":[{EC},
            {{"kty":"EC","crv":"P-256","use":"enc","kid":"enc1","x":"a","y":"b"}},
            {{"kty":"oct","k":"c2VjcmV0","kid":"hmac"}},
            {{"kty":"RSA","kid":"tiny","n":"AQAB","e":"AQAB"}},
            {{"kty":"EC","crv":"P-256","x":"a","y":"b"}}]}}"#
        );
        let keys = parse(doc.as_bytes()).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["e1"]);
        assert_eq!(keys["e1"].algorithms, vec![Algorithm::ES256]);
    }

    #[test]
    fn a_keys_own_alg_narrows_it_and_a_contradiction_drops_it() {
        let with = |alg: &str| EC.replace(r#""use":"sig""#, &format!(r#""alg":"{alg}""#));
        let ok = parse(format!(r#"{{"keys":[{}]}}"#, with("ES256")).as_bytes()).unwrap();
        assert_eq!(ok.len(), 1);
        let bad = parse(format!(r#"{{"keys":[{}]}}"#, with("RS256")).as_bytes()).unwrap();
        assert!(bad.is_empty());
    }

    #[test]
    fn a_document_without_keys_is_an_error() {
        assert!(parse(b"{}").is_err());
        assert!(parse(b"<html>").is_err());
    }
}
