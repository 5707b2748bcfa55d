//! The identity assertion sent upstream: a short-lived ES256 JWT, signed with a gateway-held key,
//! telling the model server who is calling. Its public keys (current and previous, for rotation)
//! are served as a JWKS on the admin listener, so model servers can verify it like any token.
//!
//! Rotation: generate a new key (`modelgate identity keygen`), make it `key_file`, move the old
//! one to `previous_key_files`, SIGHUP; drop the old one after `ttl` has passed.

use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use base64::Engine;
use serde_json::json;

use super::config::AssertionSection;
use super::Identity;
use crate::config::KeyError;

pub struct Signer {
    key: EcdsaKeyPair,
    kid: String,
    /// Public JWKs of the current and previous keys, as served.
    jwks: String,
    issuer: String,
    pub ttl_secs: u64,
    rng: SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish()
    }
}

impl Signer {
    /// Loads the configured keys, or generates an ephemeral one when none is configured.
    pub fn load(s: &AssertionSection, base: &Path) -> Result<Signer, KeyError> {
        let read = |p: &PathBuf, key: &str| -> Result<EcdsaKeyPair, KeyError> {
            let path = base.join(p);
            let pem = std::fs::read_to_string(&path).map_err(|e| {
                KeyError::new(
                    key,
                    &format!("cannot read {}: {e}", path.display()),
                    "create one with `modelgate identity keygen --out FILE` (mode 0600)",
                )
            })?;
            key_from_pem(&pem).ok_or_else(|| {
                KeyError::new(
                    key,
                    &format!("{} is not a PKCS#8 P-256 private key", path.display()),
                    "create one with `modelgate identity keygen --out FILE`",
                )
            })
        };
        let key = match &s.key_file {
            Some(p) => read(p, "identity.upstream_assertion.key_file")?,
            None => {
                let doc = generate_pkcs8().map_err(|m| {
                    KeyError::new("identity.upstream_assertion.key_file", &m, "set key_file")
                })?;
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &doc)
                    .map_err(|_| KeyError::new("identity", "key generation failed", "retry"))?
            }
        };
        let mut keys = vec![public_jwk(&key)];
        for (i, p) in s.previous_key_files.iter().enumerate() {
            let k = read(
                p,
                &format!("identity.upstream_assertion.previous_key_files[{i}]"),
            )?;
            keys.push(public_jwk(&k));
        }
        let kid = keys[0]["kid"].as_str().unwrap_or_default().to_owned();
        Ok(Signer {
            key,
            kid,
            jwks: json!({ "keys": keys }).to_string(),
            issuer: s.issuer.clone(),
            ttl_secs: s.ttl.0.as_secs().max(1),
            rng: SystemRandom::new(),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWKS document for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    /// Signs an assertion of `who` for the upstream group `audience`; returns it and its `exp`.
    pub fn sign(&self, who: &Identity, audience: &str) -> Option<(String, u64)> {
        let now = crate::clock::unix_secs();
        let exp = now + self.ttl_secs;
        let header = json!({ "alg": "ES256", "typ": "JWT", "kid": self.kid });
        let claims = json!({
            "iss": self.issuer,
            "aud": audience,
            "sub": who.subject,
            "idp": who.issuer,
            "groups": who.groups,
            "scope": who.scopes.join(" "),
            "client_id": who.client_id,
            "iat": now,
            "exp": exp,
        });
        let mut jwt = B64.encode(header.to_string());
        jwt.push('.');
        jwt.push_str(&B64.encode(claims.to_string()));
        let sig = self.key.sign(&self.rng, jwt.as_bytes()).ok()?;
        jwt.push('.');
        jwt.push_str(&B64.encode(sig.as_ref()));
        Some((jwt, exp))
    }
}

/// A fresh P-256 key as PKCS#8 DER.
fn generate_pkcs8() -> Result<Vec<u8>, String> {
    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .map(|d| d.as_ref().to_vec())
        .map_err(|_| "cannot generate a P-256 key".to_owned())
}

/// A fresh P-256 key as a PKCS#8 PEM document, for `modelgate identity keygen`.
pub fn generate_pem() -> Result<String, String> {
    let der = generate_pkcs8()?;
    let b64 = STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(pem)
}

fn key_from_pem(pem: &str) -> Option<EcdsaKeyPair> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN PRIVATE KEY-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = STANDARD.decode(body.trim()).ok()?;
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).ok()
}

/// The public JWK of `key`, with its RFC 7638 thumbprint as `kid`.
fn public_jwk(key: &EcdsaKeyPair) -> serde_json::Value {
    // Uncompressed point: 0x04 ‖ x (32 bytes) ‖ y (32 bytes).
    let point = key.public_key().as_ref();
    let (x, y) = (B64.encode(&point[1..33]), B64.encode(&point[33..65]));
    // RFC 7638: the required members in lexicographic order, no whitespace.
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = B64.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        canonical.as_bytes(),
    ));
    json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, jwk::Jwk, DecodingKey, Validation};

    fn signer(pem: Option<&str>) -> Signer {
        let dir = tempfile::tempdir().unwrap();
        let mut s = AssertionSection::default();
        if let Some(pem) = pem {
            std::fs::write(dir.path().join("k.pem"), pem).unwrap();
            s.key_file = Some("k.pem".into());
        }
        Signer::load(&s, dir.path()).unwrap()
    }

    #[test]
    fn assertions_verify_with_the_published_jwks() {
        let pem = generate_pem().unwrap();
        let s = signer(Some(&pem));
        let who = Identity {
            subject: "svc-a".into(),
            issuer: "https://idp".into(),
            groups: vec!["ml".into()],
            scopes: vec!["infer".into()],
            client_id: Some("svc-a".into()),
        };
        let (jwt, exp) = s.sign(&who, "vllm").unwrap();
        let jwks: serde_json::Value = serde_json::from_str(s.jwks()).unwrap();
        let jwk: Jwk = serde_json::from_value(jwks["keys"][0].clone()).unwrap();
        let mut v = Validation::new(jsonwebtoken::Algorithm::ES256);
        v.set_audience(&["vllm"]);
        v.set_issuer(&["modelgate"]);
        let data =
            decode::<serde_json::Value>(&jwt, &DecodingKey::from_jwk(&jwk).unwrap(), &v).unwrap();
        assert_eq!(data.claims["sub"], "svc-a");
        assert_eq!(data.claims["groups"][0], "ml");
        assert_eq!(data.claims["exp"], exp);
        assert_eq!(data.header.kid.as_deref(), Some(s.kid()));
        // The same file gives the same kid (the thumbprint), so restarts keep it stable.
        assert_eq!(signer(Some(&pem)).kid(), s.kid());
    }

    #[test]
    fn ephemeral_keys_differ_and_bad_pem_is_a_config_error() {
        assert_ne!(signer(None).kid(), signer(None).kid());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k.pem"), "not a key").unwrap();
        let s = AssertionSection {
            key_file: Some("k.pem".into()),
            ..AssertionSection::default()
        };
        let e = Signer::load(&s, dir.path()).unwrap_err();
        assert_eq!(e.key, "identity.upstream_assertion.key_file");
    }
}
