//! The attack table at the pure level: keys generated here, published through a JWKS that
//! [`jwks::parse`] reads (so the JWK path is the one production uses), tokens forged byte
//! by byte, and for each one the exact refusal. The clock is a fixed `NOW` far in the past,
//! so every accepted token also proves that no real clock was consulted.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaEncoding, RsaKeyPair,
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, RSA_PKCS1_SHA256,
    RSA_PKCS1_SHA384, RSA_PKCS1_SHA512, RSA_PSS_SHA256, RSA_PSS_SHA384, RSA_PSS_SHA512,
};
use serde_json::json;

use super::*;
use crate::identity::jwks;

const ISS: &str = "https://idp.test";
const AUD: &str = "https://models.test";
const NOW: u64 = 1_600_000_000;
const LEEWAY: u64 = 30;
const MAX: usize = 8192;

/// A private key held by the test; its public half is published under `kid`.
enum Private {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair, &'static str),
    Ed(Ed25519KeyPair),
}

struct Fixture {
    private: HashMap<&'static str, Private>,
    /// What the gateway would hold after fetching the JWKS.
    keys: jwks::Keys,
    /// The published JWKS, for "HS256 keyed with the public key".
    jwks: String,
}

/// Published: `rsa`, `p256`, `p384`, `ed`. Held only by the attacker: `evil-rsa`, `evil-ed`.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rsa = || Private::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).unwrap());
        let ed = || Private::Ed(Ed25519KeyPair::generate().unwrap());
        let private: HashMap<&'static str, Private> = [
            ("rsa", rsa()),
            (
                "p256",
                Private::Ec(
                    EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
                    "P-256",
                ),
            ),
            (
                "p384",
                Private::Ec(
                    EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap(),
                    "P-384",
                ),
            ),
            ("ed", ed()),
            ("evil-rsa", rsa()),
            ("evil-ed", ed()),
        ]
        .into_iter()
        .collect();
        let published: Vec<Value> = ["rsa", "p256", "p384", "ed"]
            .iter()
            .map(|kid| public_jwk(&private[kid], kid))
            .collect();
        let jwks = json!({ "keys": published }).to_string();
        let keys = jwks::parse(jwks.as_bytes()).unwrap();
        assert_eq!(keys.len(), 4, "every generated key is usable: {jwks}");
        Fixture {
            private,
            keys,
            jwks,
        }
    })
}

fn public_jwk(key: &Private, kid: &str) -> Value {
    let b64 = |b: &[u8]| B64.encode(b);
    match key {
        Private::Rsa(k) => {
            let c = PublicKeyComponents::<Vec<u8>>::from(k.public_key());
            json!({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(&c.n), "e": b64(&c.e)})
        }
        Private::Ec(k, crv) => {
            // Uncompressed point: 0x04 ‖ x ‖ y.
            let point = &k.public_key().as_ref()[1..];
            let (x, y) = point.split_at(point.len() / 2);
            json!({"kty": "EC", "crv": crv, "kid": kid, "x": b64(x), "y": b64(y)})
        }
        Private::Ed(k) => {
            let x = b64(k.public_key().as_ref());
            json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": x})
        }
    }
}

/// The signature of `input` under `alg` with the fixture's key `signer`; `None` signs
/// nothing (an empty third segment).
fn signature(alg: &str, signer: Option<&str>, input: &[u8]) -> Vec<u8> {
    let Some(signer) = signer else {
        return Vec::new();
    };
    let f = fixture();
    if alg.starts_with("HS") {
        // The classic confusion attack: the HMAC secret is the verifier's public key.
        let key = hmac::Key::new(hmac::HMAC_SHA256, f.jwks.as_bytes());
        return hmac::sign(&key, input).as_ref().to_vec();
    }
    let rng = SystemRandom::new();
    match &f.private[signer] {
        Private::Rsa(k) => {
            let padding: &'static dyn RsaEncoding = match alg {
                "RS256" => &RSA_PKCS1_SHA256,
                "RS384" => &RSA_PKCS1_SHA384,
                "RS512" => &RSA_PKCS1_SHA512,
                "PS256" => &RSA_PSS_SHA256,
                "PS384" => &RSA_PSS_SHA384,
                "PS512" => &RSA_PSS_SHA512,
                _ => panic!("{alg} with an RSA key"),
            };
            let mut sig = vec![0; k.public_modulus_len()];
            k.sign(padding, &rng, input, &mut sig).unwrap();
            sig
        }
        Private::Ec(k, _) => k.sign(&rng, input).unwrap().as_ref().to_vec(),
        Private::Ed(k) => k.sign(input).as_ref().to_vec(),
    }
}

/// `header.claims.signature`, each JSON text taken as given.
fn compact(header: &str, claims: &str, alg: &str, signer: Option<&str>) -> String {
    let input = format!("{}.{}", B64.encode(header), B64.encode(claims));
    let sig = signature(alg, signer, input.as_bytes());
    format!("{input}.{}", B64.encode(sig))
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "svc-a", "client_id": "svc-a",
           "groups": ["ml-users"], "scope": "models:infer", "iat": NOW - 10, "exp": NOW + 300})
}

/// `claims()` with `patch` applied: a `null` removes the claim.
fn with(patch: Value) -> Value {
    let mut c = claims();
    for (k, v) in patch.as_object().unwrap() {
        match v {
            Value::Null => c.as_object_mut().unwrap().remove(k),
            v => c.as_object_mut().unwrap().insert(k.clone(), v.clone()),
        };
    }
    c
}

/// A token with header `{alg, kid, typ: "at+jwt"}` signed by the key published as `kid`.
fn token(alg: &str, kid: &str, claims: &Value) -> String {
    forged(alg, kid, kid, claims)
}

/// Like [`token`], but signed by `signer`, whatever `kid` says.
fn forged(alg: &str, kid: &str, signer: &str, claims: &Value) -> String {
    let header = json!({"alg": alg, "kid": kid, "typ": "at+jwt"});
    compact(&header.to_string(), &claims.to_string(), alg, Some(signer))
}

fn issuer() -> IssuerConfig {
    use Algorithm::*;
    IssuerConfig {
        issuer: ISS.into(),
        audiences: vec![AUD.into(), "https://also.test".into()],
        algorithms: vec![
            RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA,
        ],
        jwks_uri: None,
        ca_file: None,
        refresh: Duration::from_secs(900),
        max_stale: Duration::from_secs(86_400),
        groups_claim: vec!["groups".into()],
        typ: None,
    }
}

/// What the authenticator does after picking the issuer: parse, key by kid, verify.
fn check(token: &str, issuer: &IssuerConfig) -> Result<Identity, TokenError> {
    let parsed = parse(token, MAX)?;
    assert_eq!(parsed.token, token);
    let key: &Arc<VerifyKey> = fixture()
        .keys
        .get(&parsed.kid)
        .ok_or(TokenError::UnknownKey)?;
    verify(&parsed, issuer, key, NOW, LEEWAY).map(|(identity, _)| identity)
}

/// Expected outcome of one row.
#[derive(Debug)]
enum Want {
    Accept,
    Is(TokenError),
    /// `TokenError::Rejected` whose reason contains this.
    Rejected(&'static str),
}

#[track_caller]
fn assert_table(rows: &[(&str, String, Want)], issuer: &IssuerConfig) {
    let mut wrong = Vec::new();
    for (name, token, want) in rows {
        let got = check(token, issuer);
        let ok = match (want, &got) {
            (Want::Accept, Ok(_)) => true,
            (Want::Is(e), Err(g)) => e == g,
            (Want::Rejected(s), Err(TokenError::Rejected(why))) => why.contains(s),
            _ => false,
        };
        if !ok {
            wrong.push(format!("{name}: wanted {want:?}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn every_supported_algorithm_verifies_with_a_key_from_the_jwks() {
    let c = claims();
    for (alg, kid) in [
        ("RS256", "rsa"),
        ("RS384", "rsa"),
        ("RS512", "rsa"),
        ("PS256", "rsa"),
        ("PS384", "rsa"),
        ("PS512", "rsa"),
        ("ES256", "p256"),
        ("ES384", "p384"),
        ("EdDSA", "ed"),
    ] {
        let t = token(alg, kid, &c);
        let parsed = parse(&t, MAX).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!((parsed.kid.as_str(), parsed.iss.as_str()), (kid, ISS));
        let key = &fixture().keys[kid];
        let (who, exp) =
            verify(&parsed, &issuer(), key, NOW, LEEWAY).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(exp, NOW + 300, "{alg}");
        assert_eq!(
            who,
            Identity {
                subject: "svc-a".into(),
                issuer: ISS.into(),
                groups: vec!["ml-users".into()],
                scopes: vec!["models:infer".into()],
                client_id: Some("svc-a".into()),
            },
            "{alg}"
        );
    }
}

#[test]
fn forged_and_broken_tokens_are_refused_for_the_right_reason() {
    let c = claims();
    let rs = |claims: &Value| token("RS256", "rsa", claims);
    let good = rs(&c);
    let parts: Vec<&str> = good.split('.').collect();
    let b64 = |s: &str| B64.encode(s);
    let bomb = format!(
        r#"{{"alg":"RS256","kid":"rsa","x":{}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    assert!(
        b64(&bomb).len() <= MAX_HEADER_B64,
        "the bomb fits the header limit"
    );
    let none = json!({"alg": "none", "kid": "rsa"}).to_string();
    let hs = json!({"alg": "HS256", "kid": "rsa", "typ": "at+jwt"}).to_string();
    let crit = json!({"alg": "RS256", "kid": "rsa", "crit": ["exp"]}).to_string();
    let t = NOW;
    use TokenError::*;

    let rows: Vec<(&str, String, Want)> = vec![
        ("the good token", good.clone(), Want::Accept),
        // Signature attacks.
        (
            "alg none, no signature",
            compact(&none, &c.to_string(), "none", None),
            Want::Is(Malformed("bad base64url segment")),
        ),
        (
            "alg none with a real signature",
            format!("{}.{}.{}", b64(&none), parts[1], parts[2]),
            Want::Is(Malformed("unsupported header or alg")),
        ),
        (
            "alg None (capitalised)",
            format!(
                "{}.{}.{}",
                b64(r#"{"alg":"None","kid":"rsa"}"#),
                parts[1],
                parts[2]
            ),
            Want::Is(Malformed("unsupported header or alg")),
        ),
        (
            "HS256 keyed with the published public key",
            compact(&hs, &c.to_string(), "HS256", Some("rsa")),
            Want::Rejected("alg HS256 not allowed"),
        ),
        (
            "signed by another RSA key under the real kid",
            forged("RS256", "rsa", "evil-rsa", &c),
            Want::Rejected("InvalidSignature"),
        ),
        (
            "signed by another Ed25519 key under the real kid",
            forged("EdDSA", "ed", "evil-ed", &c),
            Want::Rejected("InvalidSignature"),
        ),
        (
            "claims swapped under a real signature",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(&with(json!({"groups": ["ml-admins"]})).to_string()),
                parts[2]
            ),
            Want::Rejected("InvalidSignature"),
        ),
        (
            "signature of another token",
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                token("RS256", "rsa", &with(json!({"sub": "x"})))
                    .rsplit('.')
                    .next()
                    .unwrap()
            ),
            Want::Rejected("InvalidSignature"),
        ),
        (
            "RS256 under the EC key's kid",
            forged("RS256", "p256", "rsa", &c),
            Want::Rejected("alg RS256 not allowed"),
        ),
        (
            "ES256 under the RSA key's kid",
            forged("ES256", "rsa", "p256", &c),
            Want::Rejected("alg ES256 not allowed"),
        ),
        (
            "ES384 under the P-256 key's kid",
            forged("ES384", "p256", "p384", &c),
            Want::Rejected("alg ES384 not allowed"),
        ),
        (
            "EdDSA under the RSA key's kid",
            forged("EdDSA", "rsa", "ed", &c),
            Want::Rejected("alg EdDSA not allowed"),
        ),
        (
            "unknown kid",
            forged("RS256", "no-such-kid", "rsa", &c),
            Want::Is(UnknownKey),
        ),
        (
            "no kid",
            compact(r#"{"alg":"RS256"}"#, &c.to_string(), "RS256", Some("rsa")),
            Want::Is(Malformed("missing kid")),
        ),
        (
            "empty kid",
            compact(
                r#"{"alg":"RS256","kid":""}"#,
                &c.to_string(),
                "RS256",
                Some("rsa"),
            ),
            Want::Is(Malformed("missing kid")),
        ),
        (
            "crit header",
            format!("{}.{}.{}", b64(&crit), parts[1], parts[2]),
            Want::Is(Malformed("crit header")),
        ),
        // Time.
        (
            "expired beyond the leeway",
            rs(&with(json!({"exp": t - LEEWAY - 1, "iat": t - 600}))),
            Want::Rejected("expired"),
        ),
        (
            "expired exactly at the leeway",
            rs(&with(json!({"exp": t - LEEWAY, "iat": t - 600}))),
            Want::Accept,
        ),
        (
            "expired within the leeway",
            rs(&with(json!({"exp": t - 5, "iat": t - 600}))),
            Want::Accept,
        ),
        (
            "nbf beyond the leeway",
            rs(&with(json!({"nbf": t + LEEWAY + 1}))),
            Want::Rejected("nbf"),
        ),
        (
            "nbf within the leeway",
            rs(&with(json!({"nbf": t + LEEWAY}))),
            Want::Accept,
        ),
        (
            "iat beyond the leeway",
            rs(&with(json!({"iat": t + LEEWAY + 1}))),
            Want::Rejected("iat in the future"),
        ),
        (
            "iat within the leeway",
            rs(&with(json!({"iat": t + LEEWAY}))),
            Want::Accept,
        ),
        (
            "fractional exp (a NumericDate may have one)",
            rs(&with(json!({"exp": (t + 300) as f64 + 0.5}))),
            Want::Accept,
        ),
        (
            "exp as a string",
            rs(&with(json!({"exp": (t + 300).to_string()}))),
            Want::Rejected("exp"),
        ),
        (
            "nbf as a string",
            rs(&with(json!({"nbf": "0"}))),
            Want::Rejected("nbf is not a NumericDate"),
        ),
        (
            "negative iat",
            rs(&with(json!({"iat": -1}))),
            Want::Rejected("iat is not a NumericDate"),
        ),
        (
            "exp at u64::MAX (no overflow)",
            rs(&with(json!({"exp": u64::MAX}))),
            Want::Accept,
        ),
        (
            "exp beyond u64",
            rs(&with(json!({"exp": 1e30}))),
            Want::Rejected("exp"),
        ),
        // Required claims, issuer and audience.
        (
            "no exp",
            rs(&with(json!({"exp": null}))),
            Want::Rejected("exp"),
        ),
        (
            "no sub",
            rs(&with(json!({"sub": null}))),
            Want::Rejected("sub"),
        ),
        (
            "empty sub",
            rs(&with(json!({"sub": ""}))),
            Want::Rejected("sub"),
        ),
        (
            "numeric sub",
            rs(&with(json!({"sub": 42}))),
            Want::Rejected("sub"),
        ),
        (
            "no aud",
            rs(&with(json!({"aud": null}))),
            Want::Rejected("aud"),
        ),
        (
            "no iss",
            rs(&with(json!({"iss": null}))),
            Want::Is(Malformed("missing iss")),
        ),
        (
            "iss as an array",
            rs(&with(json!({"iss": [ISS]}))),
            Want::Is(Malformed("missing iss")),
        ),
        (
            "another issuer's iss, signed with this issuer's key",
            rs(&with(json!({"iss": "https://evil.test"}))),
            Want::Rejected("InvalidIssuer"),
        ),
        (
            "iss differing only by a trailing slash",
            rs(&with(json!({"iss": format!("{ISS}/")}))),
            Want::Rejected("InvalidIssuer"),
        ),
        (
            "wrong aud",
            rs(&with(json!({"aud": "https://other.test"}))),
            Want::Rejected("InvalidAudience"),
        ),
        (
            "aud array without ours",
            rs(&with(json!({"aud": ["https://other.test", "x"]}))),
            Want::Rejected("InvalidAudience"),
        ),
        (
            "aud array containing ours",
            rs(&with(json!({"aud": ["https://other.test", AUD]}))),
            Want::Accept,
        ),
        (
            "the issuer's second audience",
            rs(&with(json!({"aud": "https://also.test"}))),
            Want::Accept,
        ),
        (
            "empty aud array",
            rs(&with(json!({"aud": []}))),
            Want::Rejected("InvalidAudience"),
        ),
        // Structure and size.
        (
            "oversize",
            rs(&with(json!({"pad": "x".repeat(MAX)}))),
            Want::Is(TooLarge),
        ),
        (
            "bad base64url characters",
            "!!!.###.$$$".into(),
            Want::Is(Malformed("bad base64url segment")),
        ),
        (
            "standard base64 padding",
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            Want::Is(Malformed("bad base64url segment")),
        ),
        (
            "base64url of an impossible length",
            format!("A.{}.{}", parts[1], parts[2]),
            Want::Is(Malformed("bad base64url")),
        ),
        (
            "two segments",
            format!("{}.{}", parts[0], parts[1]),
            Want::Is(Malformed("not three segments")),
        ),
        (
            "four segments",
            format!("{good}.{}", parts[2]),
            Want::Is(Malformed("not three segments")),
        ),
        (
            "empty claims segment",
            format!("{}..{}", parts[0], parts[2]),
            Want::Is(Malformed("bad base64url segment")),
        ),
        (
            "empty token",
            String::new(),
            Want::Is(Malformed("not three segments")),
        ),
        (
            "JSON bomb in the header (200 nested arrays, under 1 KiB)",
            format!("{}.{}.{}", b64(&bomb), parts[1], parts[2]),
            Want::Is(Malformed("segment is not a JSON object")),
        ),
        (
            "header over 1 KiB",
            format!(
                "{}.{}.{}",
                b64(&json!({"alg": "RS256", "kid": "rsa", "x": "y".repeat(800)}).to_string()),
                parts[1],
                parts[2]
            ),
            Want::Is(Malformed("header too large")),
        ),
        (
            "header that is not JSON",
            format!("{}.{}.{}", b64("not json"), parts[1], parts[2]),
            Want::Is(Malformed("segment is not a JSON object")),
        ),
        (
            "header that is a JSON array",
            format!("{}.{}.{}", b64(r#"["RS256"]"#), parts[1], parts[2]),
            Want::Is(Malformed("segment is not a JSON object")),
        ),
        (
            "claims that are a JSON string",
            format!("{}.{}.{}", parts[0], b64(r#""svc-a""#), parts[2]),
            Want::Is(Malformed("segment is not a JSON object")),
        ),
    ];
    assert_table(&rows, &issuer());
}

#[test]
fn duplicate_members_cannot_smuggle_a_second_value_past_verification() {
    // The parser keeps the last `iss`/`alg`, which could differ from what the verifier
    // reads; jsonwebtoken refuses duplicates, so such a token never passes.
    let twice = format!(
        r#"{{"iss":"https://evil.test","iss":"{ISS}","aud":"{AUD}","sub":"a","exp":{}}}"#,
        NOW + 300
    );
    let header = r#"{"alg":"HS256","kid":"rsa","alg":"RS256"}"#;
    assert_table(
        &[
            (
                "two iss claims",
                compact(
                    r#"{"alg":"RS256","kid":"rsa"}"#,
                    &twice,
                    "RS256",
                    Some("rsa"),
                ),
                Want::Rejected("duplicate field `iss`"),
            ),
            (
                "two alg members",
                compact(header, &claims().to_string(), "RS256", Some("rsa")),
                Want::Rejected("duplicate field `alg`"),
            ),
        ],
        &issuer(),
    );
}

#[test]
fn algorithms_the_issuer_does_not_list_are_refused_even_with_a_good_signature() {
    let only_rs256 = IssuerConfig {
        algorithms: vec![Algorithm::RS256],
        ..issuer()
    };
    let c = claims();
    assert_table(
        &[
            ("RS256", token("RS256", "rsa", &c), Want::Accept),
            (
                "PS256",
                token("PS256", "rsa", &c),
                Want::Rejected("alg PS256 not allowed"),
            ),
            (
                "ES256",
                token("ES256", "p256", &c),
                Want::Rejected("alg ES256 not allowed"),
            ),
        ],
        &only_rs256,
    );
    // Even an issuer config that somehow listed HS256 would not let the RSA key be used
    // as an HMAC secret: the key's own family does not include it.
    let with_hs = IssuerConfig {
        algorithms: vec![Algorithm::RS256, Algorithm::HS256],
        ..issuer()
    };
    let hs = json!({"alg": "HS256", "kid": "rsa"}).to_string();
    assert_table(
        &[(
            "HS256 with the public key as secret",
            compact(&hs, &c.to_string(), "HS256", Some("rsa")),
            Want::Rejected("alg HS256 not allowed"),
        )],
        &with_hs,
    );
}

#[test]
fn typ_is_checked_only_when_configured_with_or_without_the_application_prefix() {
    let c = claims().to_string();
    let typed = |typ: Option<&str>| {
        let mut h = json!({"alg": "ES256", "kid": "p256"});
        if let Some(typ) = typ {
            h["typ"] = json!(typ);
        }
        compact(&h.to_string(), &c, "ES256", Some("p256"))
    };
    let rows = |accept_plain_jwt: bool| {
        vec![
            ("at+jwt", typed(Some("at+jwt")), Want::Accept),
            (
                "application/at+jwt",
                typed(Some("application/at+jwt")),
                Want::Accept,
            ),
            (
                "Application/AT+JWT",
                typed(Some("Application/AT+JWT")),
                Want::Accept,
            ),
            (
                "JWT",
                typed(Some("JWT")),
                if accept_plain_jwt {
                    Want::Accept
                } else {
                    Want::Rejected("typ")
                },
            ),
            (
                "no typ",
                typed(None),
                if accept_plain_jwt {
                    Want::Accept
                } else {
                    Want::Rejected("typ")
                },
            ),
            (
                "application/",
                typed(Some("application/")),
                if accept_plain_jwt {
                    Want::Accept
                } else {
                    Want::Rejected("typ")
                },
            ),
        ]
    };
    assert_table(&rows(true), &issuer());
    for want in ["at+jwt", "application/at+jwt"] {
        let typed_issuer = IssuerConfig {
            typ: Some(want.into()),
            ..issuer()
        };
        assert_table(&rows(false), &typed_issuer);
    }
}

#[test]
fn groups_scopes_and_client_id_are_read_where_idps_put_them() {
    let keycloak = IssuerConfig {
        groups_claim: vec!["realm_access".into(), "roles".into()],
        ..issuer()
    };
    let c = with(json!({
        "realm_access": {"roles": ["ml-users", "offline_access", 7]},
        "groups": ["not-these"],
        "scope": null,
        "scp": ["models:infer", "models:list"],
        "client_id": null,
        "azp": "svc-kc",
    }));
    let who = check(&token("ES256", "p256", &c), &keycloak).unwrap();
    assert_eq!(who.groups, ["ml-users", "offline_access"]);
    assert_eq!(who.scopes, ["models:infer", "models:list"]);
    assert_eq!(who.client_id.as_deref(), Some("svc-kc"));

    // A space-separated `scope` string (RFC 8693) wins over `scp`; a missing path is no groups.
    let c = with(json!({"scope": "a  b", "scp": ["c"], "realm_access": {"x": 1}}));
    let who = check(&token("ES256", "p256", &c), &keycloak).unwrap();
    assert_eq!(who.scopes, ["a", "b"]);
    assert!(who.groups.is_empty());
    assert_eq!(who.client_id.as_deref(), Some("svc-a"));

    // Azure's `appid` is the last resort; no client claim at all is `None`.
    let c = with(json!({"client_id": null, "appid": "app-1"}));
    let who = check(&token("ES256", "p256", &c), &issuer()).unwrap();
    assert_eq!(who.client_id.as_deref(), Some("app-1"));
    let c = with(json!({"client_id": null}));
    assert_eq!(
        check(&token("ES256", "p256", &c), &issuer())
            .unwrap()
            .client_id,
        None
    );
}

#[test]
fn parse_is_bounded_before_it_decodes_anything() {
    let huge = "a".repeat(MAX + 1);
    assert_eq!(parse(&huge, MAX).unwrap_err(), TokenError::TooLarge);
    // Exactly at the limit is parsed (and then found malformed, not too large).
    let at = format!("{}.b.c", "a".repeat(MAX - 4));
    assert_eq!(
        parse(&at, MAX).unwrap_err(),
        TokenError::Malformed("header too large")
    );
}
