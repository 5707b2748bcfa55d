//! Bearer tokens and JWKS documents come from the network: neither parser may panic, whatever
//! the bytes. Every input is read as a JWKS; a UTF-8 input is also parsed as a token and, if it
//! gets that far, verified against a fixed P-256 key (its kid or not), so hostile headers and
//! claims reach jsonwebtoken's decoder and the time-claim checks too.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use modelgate::identity::config::IssuerConfig;
use modelgate::identity::jwks::{self, VerifyKey};
use modelgate::identity::token;

const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"e1","use":"sig",
    "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

fn fixed() -> &'static (IssuerConfig, Arc<VerifyKey>) {
    static FIXED: OnceLock<(IssuerConfig, Arc<VerifyKey>)> = OnceLock::new();
    FIXED.get_or_init(|| {
        let mut algorithms = token::algorithms_for("RSA", None, None);
        algorithms.extend(token::algorithms_for("EC", Some("P-256"), None));
        algorithms.extend(token::algorithms_for("OKP", Some("Ed25519"), None));
        let issuer = IssuerConfig {
            issuer: "https://idp.test".into(),
            audiences: vec!["https://models.test".into()],
            algorithms,
            jwks_uri: None,
            ca_file: None,
            refresh: Duration::from_secs(900),
            max_stale: Duration::from_secs(86_400),
            groups_claim: vec!["realm_access".into(), "roles".into()],
            typ: Some("at+jwt".into()),
        };
        // The JWKS is a constant: it parses and holds the key.
        let key = jwks::parse(JWKS.as_bytes()).unwrap().remove("e1").unwrap();
        (issuer, key)
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = jwks::parse(data);
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = token::parse(s, 8192) else {
        return;
    };
    assert!(!parsed.kid.is_empty() && parsed.kid.len() <= 256);
    let (issuer, key) = fixed();
    let _ = token::verify(&parsed, issuer, key, 1_600_000_000, 30);
});
