//! The test IdP itself (tests/idp, tests/support/idp.rs): discovery names the issuer and JWKS the
//! gateway will use, RS256 and ES256 clients get `at+jwt` access tokens with the claims the
//! gateway checks, and a restart with other keys serves other kids at the same jwks_uri.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::*;

fn kids(jwks: &Value) -> BTreeSet<String> {
    jwks["keys"]
        .as_array()
        .expect("jwks keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_string())
        .collect()
}

#[test]
fn issues_rs256_and_es256_access_tokens_and_rotates_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = Pki::new(d);
    let keys: Vec<_> = ["rsa.pem", "ec.pem", "rsa2.pem", "ec2.pem"]
        .iter()
        .map(|n| d.join(n))
        .collect();
    gen_rsa(&keys[0]);
    gen_ec(&keys[1]);
    gen_rsa(&keys[2]);
    gen_ec(&keys[3]);

    let mut config = IdpConfig::new(&pki, &keys[..2])
        .client(
            IdpClient::new("svc-a", "s3cret", "RS256")
                .groups(&["ml-users"])
                .scope("models:infer"),
        )
        .client(
            IdpClient::new("svc-b", "s3cret-b", "ES256")
                .groups(&["ml-admins", "ml-users"])
                .scope("models:infer models:admin"),
        );
    config.other_resources.push("https://other.test".into());
    let mut idp = Idp::start(config);
    let issuer = idp.issuer().to_string();
    assert_eq!(issuer, format!("https://127.0.0.1:{}", idp.port()));

    let discovery = idp.get_json("/.well-known/openid-configuration");
    assert_eq!(discovery["issuer"], issuer.as_str());
    assert_eq!(discovery["jwks_uri"], idp.jwks_uri());
    assert_eq!(discovery["token_endpoint"], format!("{issuer}/token"));

    let jwks = idp.get_json(&idp.jwks_uri());
    assert_eq!(idp.jwks_hits(), 1);
    let first_kids = kids(&jwks);
    assert_eq!(first_kids.len(), 2, "{jwks}");

    for (id, secret, alg, groups, scope) in [
        (
            "svc-a",
            "s3cret",
            "RS256",
            &["ml-users"][..],
            "models:infer",
        ),
        (
            "svc-b",
            "s3cret-b",
            "ES256",
            &["ml-admins", "ml-users"][..],
            "models:infer models:admin",
        ),
    ] {
        let token = idp.token(id, secret);
        let (header, claims) = jwt_parts(&token);
        assert_eq!(header["alg"], alg, "{header}");
        assert_eq!(header["typ"], "at+jwt", "{header}");
        let kid = header["kid"].as_str().expect("kid");
        assert!(first_kids.contains(kid), "{kid} not in {jwks}");
        assert_eq!(claims["iss"], issuer.as_str(), "{claims}");
        assert_eq!(claims["aud"], "https://models.test", "{claims}");
        assert_eq!(claims["sub"], id, "{claims}");
        assert_eq!(claims["client_id"], id, "{claims}");
        assert_eq!(claims["scope"], scope, "{claims}");
        assert_eq!(claims["groups"], serde_json::json!(groups), "{claims}");
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert_eq!(exp - iat, 300, "{claims}");
        assert!(claims["jti"].is_string(), "{claims}");
    }

    // Another audience on request, for wrong-audience tests; a wrong secret is refused.
    let other = idp.token_response("svc-a", "s3cret", &[("resource", "https://other.test")]);
    let (_, claims) = jwt_parts(other["access_token"].as_str().expect("token"));
    assert_eq!(claims["aud"], "https://other.test", "{claims}");
    let refused = idp.token_response("svc-a", "wrong", &[]);
    assert_eq!(refused["error"], "invalid_client", "{refused}");

    idp.restart_with_keys(&keys[2..]);
    assert_eq!(idp.issuer(), issuer, "same port, same issuer");
    let rotated = kids(&idp.get_json(&idp.jwks_uri()));
    assert_eq!(rotated.len(), 2);
    assert!(
        rotated.is_disjoint(&first_kids),
        "{rotated:?} vs {first_kids:?}"
    );
    let (header, _) = jwt_parts(&idp.token("svc-b", "s3cret-b"));
    assert!(rotated.contains(header["kid"].as_str().unwrap()));
    assert_eq!(idp.jwks_hits(), 2, "hits are counted over restarts");
}
