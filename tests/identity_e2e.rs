//! Identity end to end against a real OIDC provider (tests/idp: oidc-provider 9 over HTTPS):
//! the gateway fetches discovery and JWKS itself, verifies RS256 and ES256 access tokens,
//! refuses every forged or broken token before a byte reaches the model server, replaces the
//! client's token with its own signed assertion, and follows key rotation and IdP outages.

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::authn::*;
use support::*;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The kids the IdP serves: (RSA, EC).
fn idp_kids(idp: &Idp) -> (String, String) {
    let jwks = idp.get_json(&idp.jwks_uri());
    let kid = |kty: &str| {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kty"] == kty)
            .and_then(|k| k["kid"].as_str())
            .unwrap()
            .to_string()
    };
    (kid("RSA"), kid("EC"))
}

/// Claims like the IdP's, for forging variants of them.
fn claims(idp: &Idp) -> Value {
    let t = now();
    json!({"iss": idp.issuer(), "aud": RESOURCE, "sub": "svc-a", "client_id": "svc-a",
           "groups": ["ml-users"], "scope": "models:infer", "iat": t, "exp": t + 300})
}

fn sign(alg: Algorithm, kid: Option<&str>, typ: &str, claims: &Value, key_pem: &Path) -> String {
    let pem = std::fs::read(key_pem).unwrap();
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(String::from);
    header.typ = Some(typ.into());
    encode(&header, claims, &key).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn admin_addr(gw: &Gateway) -> String {
    let line = gw.wait_log(|l| l["message"] == "admin listener");
    line["admin"].as_str().unwrap().to_string()
}

#[test]
fn real_tokens_pass_and_the_model_server_gets_an_assertion_instead() {
    let f = fixture();
    let up = model_server();
    let gw = Gateway::start(&gateway_config(&f.idp, &up.url(), "30s"));

    for (id, secret) in [("svc-a", "secret-a"), ("svc-b", "secret-b")] {
        let token = f.idp.token(id, secret);
        let alg = jwt_parts(&token).0["alg"].as_str().unwrap().to_string();
        let res = send(
            &gw,
            "POST",
            "/v1/chat/completions",
            Some(&bearer(&token)),
            &chat("llama-3-8b"),
        );
        assert_eq!(res.status(), 200, "{id} ({alg}): {}", res.body_str());
        let log = gw.access_log(res.header("x-request-id").unwrap());
        assert_eq!(log["subject"], id, "{log}");
        assert_eq!(log["decision"], "allow");
        assert_eq!(log["rule"], "ml-llama");
        assert_eq!(log["model"], "llama-3-8b");
    }

    // Upstream: no client token, a signed assertion verifiable with the admin JWKS.
    let requests = up.wait_requests(2);
    let jwks = http_get_json(&admin_addr(&gw), "/.well-known/jwks.json");
    for (i, (_, req)) in requests.iter().enumerate() {
        assert!(
            req.header("authorization").is_none(),
            "client token forwarded"
        );
        let assertion = req
            .header("x-modelgate-identity")
            .expect("assertion header");
        let (header, _) = jwt_parts(assertion);
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == header["kid"])
            .expect("assertion kid published");
        let key =
            jsonwebtoken::DecodingKey::from_jwk(&serde_json::from_value(jwk.clone()).unwrap())
                .unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::ES256);
        v.set_audience(&["models"]);
        v.set_issuer(&["modelgate"]);
        let claims = jsonwebtoken::decode::<Value>(assertion, &key, &v)
            .expect("assertion verifies")
            .claims;
        assert_eq!(claims["sub"], ["svc-a", "svc-b"][i]);
        assert_eq!(claims["idp"], f.idp.issuer());
        assert!(claims["groups"]
            .as_array()
            .unwrap()
            .contains(&json!("ml-users")));
    }

    // A client cannot forge the assertion header: it is replaced, not forwarded.
    let token = f.idp.token("svc-a", "secret-a");
    let raw = format!(
        "POST /v1/completions HTTP/1.1\r\nhost: m\r\nauthorization: Bearer {token}\r\nx-modelgate-identity: forged\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        chat("llama-3-8b").len(),
        chat("llama-3-8b")
    );
    assert_eq!(gw.connect().request(raw).status(), 200);
    let (_, last) = up.wait_requests(3).pop().unwrap();
    assert_eq!(last.head.headers_named("x-modelgate-identity").len(), 1);
    assert_ne!(last.header("x-modelgate-identity"), Some("forged"));
}

/// A one-shot GET to a plain HTTP address, parsed as JSON.
fn http_get_json(addr: &str, path: &str) -> Value {
    let mut c = Client::connect(addr.parse().unwrap());
    let res = c.request(format!("GET {path} HTTP/1.1\r\nhost: admin\r\n\r\n"));
    assert_eq!(res.status(), 200, "{}", res.body_str());
    res.json()
}

#[test]
fn forged_and_broken_tokens_are_refused_before_the_upstream() {
    let f = fixture();
    let up = model_server();
    let gw = Gateway::start(&gateway_config(&f.idp, &up.url(), "30s"));
    let idp = &f.idp;
    // Warm up: the gateway has fetched the keys once a real token passed.
    let real = idp.token("svc-a", "secret-a");
    let ok = send(
        &gw,
        "POST",
        "/v1/completions",
        Some(&bearer(&real)),
        &chat("llama-3-8b"),
    );
    assert_eq!(ok.status(), 200, "{}", ok.body_str());
    let (rsa_kid, ec_kid) = idp_kids(idp);
    let (rsa, evil) = (&f.keys[0], &f.keys[4]);
    let c = claims(idp);
    let with = |patch: Value| {
        let mut c = c.clone();
        for (k, v) in patch.as_object().unwrap() {
            match v {
                Value::Null => c.as_object_mut().unwrap().remove(k),
                v => c.as_object_mut().unwrap().insert(k.clone(), v.clone()),
            };
        }
        c
    };
    let rs = |claims: &Value| sign(Algorithm::RS256, Some(&rsa_kid), "at+jwt", claims, rsa);
    let t = now();
    let public_pem = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(rsa)
        .output()
        .unwrap()
        .stdout;
    let parts: Vec<String> = real.split('.').map(String::from).collect();
    let header_json = |h: &Value| b64(h.to_string().as_bytes());
    let bomb = format!(
        r#"{{"alg":"RS256","kid":"{rsa_kid}","x":{}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );

    let mut table: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                header_json(&json!({"alg":"none","kid":rsa_kid,"typ":"at+jwt"})),
                b64(c.to_string().as_bytes())
            ),
        ),
        (
            "alg none with a signature",
            format!(
                "{}.{}.{}",
                header_json(&json!({"alg":"none","kid":rsa_kid})),
                b64(c.to_string().as_bytes()),
                parts[2]
            ),
        ),
        ("HS256 keyed with the RSA public key", {
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some(rsa_kid.clone());
            h.typ = Some("at+jwt".into());
            encode(&h, &c, &EncodingKey::from_secret(&public_pem)).unwrap()
        }),
        (
            "wrong signature (attacker key, real kid)",
            sign(Algorithm::RS256, Some(&rsa_kid), "at+jwt", &c, evil),
        ),
        ("flipped signature byte", {
            let mut sig = parts[2].clone().into_bytes();
            sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                String::from_utf8(sig).unwrap()
            )
        }),
        (
            "payload swapped under a real signature",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(with(json!({"groups":["ml-admins"]})).to_string().as_bytes()),
                parts[2]
            ),
        ),
        (
            "expired",
            rs(&with(json!({"exp": t - 3600, "iat": t - 7200}))),
        ),
        ("not yet valid", rs(&with(json!({"nbf": t + 3600})))),
        ("issued in the future", rs(&with(json!({"iat": t + 3600})))),
        ("no exp", rs(&with(json!({"exp": null})))),
        (
            "wrong iss (signed with a trusted key)",
            rs(&with(json!({"iss": "https://evil.example"}))),
        ),
        (
            "untrusted issuer",
            sign(
                Algorithm::RS256,
                Some("evil"),
                "at+jwt",
                &with(json!({"iss": "https://127.0.0.1:1"})),
                evil,
            ),
        ),
        ("wrong aud", rs(&with(json!({"aud": "https://other.test"})))),
        (
            "wrong typ",
            sign(Algorithm::RS256, Some(&rsa_kid), "JWT", &c, rsa),
        ),
        (
            "RS256 under the EC key's kid",
            sign(Algorithm::RS256, Some(&ec_kid), "at+jwt", &c, rsa),
        ),
        (
            "missing kid",
            sign(Algorithm::RS256, None, "at+jwt", &c, rsa),
        ),
        (
            "unknown kid",
            sign(Algorithm::RS256, Some("no-such-kid"), "at+jwt", &c, rsa),
        ),
        (
            "oversize token",
            rs(&with(json!({"pad": "x".repeat(20_000)}))),
        ),
        ("malformed base64", "!!!.###.$$$".into()),
        ("two segments", format!("{}.{}", parts[0], parts[1])),
        (
            "JSON bomb in the header",
            format!("{}.{}.{}", b64(bomb.as_bytes()), parts[1], parts[2]),
        ),
        (
            "header that is not JSON",
            format!("{}.{}.{}", b64(b"not json"), parts[1], parts[2]),
        ),
        (
            "crit header",
            format!(
                "{}.{}.{}",
                header_json(&json!({"alg":"RS256","kid":rsa_kid,"crit":["exp"]})),
                parts[1],
                parts[2]
            ),
        ),
    ];
    // Token-shaped values that are not bearer tokens at all.
    table.push(("empty bearer", String::new()));
    let before = up.requests().len();
    for (name, token) in &table {
        let res = send(
            &gw,
            "POST",
            "/v1/completions",
            Some(&bearer(token)),
            &chat("llama-3-8b"),
        );
        assert_eq!(res.status(), 401, "{name}: {}", res.body_str());
        let challenge = res.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{name}: {challenge}"
        );
        // Nothing in the answer says why: the reason is in the gateway's log only.
        assert!(
            res.body_str().contains("invalid_token"),
            "{name}: {}",
            res.body_str()
        );
    }
    for (name, auth) in [
        ("basic auth", "Basic c3ZjLWE6c2VjcmV0LWE="),
        ("scheme only", "Bearer"),
    ] {
        assert_eq!(
            send(&gw, "GET", "/v1/models", Some(auth), "").status(),
            401,
            "{name}"
        );
    }
    // No token at all: the bare challenge.
    let res = send(&gw, "GET", "/v1/models", None, "");
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.header("www-authenticate"),
        Some("Bearer realm=\"modelgate\"")
    );
    // Two Authorization headers, one of them valid: ambiguous, refused.
    let raw = format!("GET /v1/models HTTP/1.1\r\nhost: m\r\nauthorization: Bearer {real}\r\nauthorization: Bearer x.y.z\r\nconnection: close\r\n\r\n");
    assert_eq!(gw.connect().request(raw).status(), 401);
    assert_eq!(
        up.requests().len(),
        before,
        "a refused token reached the model server"
    );

    // A flood of random kids does not make the gateway hammer the IdP: one fetch per cooldown.
    let hits = idp.jwks_hits();
    for i in 0..40 {
        let token = sign(
            Algorithm::RS256,
            Some(&format!("random-{i}")),
            "at+jwt",
            &c,
            rsa,
        );
        assert_eq!(
            send(&gw, "GET", "/v1/models", Some(&bearer(&token)), "").status(),
            401
        );
    }
    assert!(
        idp.jwks_hits() <= hits + 1,
        "{} JWKS fetches for 40 unknown kids",
        idp.jwks_hits() - hits
    );
    assert_eq!(up.requests().len(), before);
    // And the real token still works.
    assert_eq!(
        send(
            &gw,
            "POST",
            "/v1/completions",
            Some(&bearer(&real)),
            &chat("llama-3-8b")
        )
        .status(),
        200
    );
}

#[test]
fn rotated_keys_are_picked_up_and_an_idp_outage_changes_nothing() {
    let mut f = fixture();
    let up = model_server();
    let gw = Gateway::start(&gateway_config(&f.idp, &up.url(), "1s"));
    let call = |token: &str| {
        send(
            &gw,
            "POST",
            "/v1/completions",
            Some(&bearer(token)),
            &chat("llama-3-8b"),
        )
        .status()
    };

    let first = f.idp.token("svc-a", "secret-a");
    let unused = f.idp.token("svc-b", "secret-b");
    assert_eq!(call(&first), 200);

    // IdP down: a token never seen before still verifies with the keys already fetched.
    f.idp.stop();
    assert_eq!(call(&unused), 200, "cached keys must outlive an IdP outage");
    assert_eq!(call(&first), 200);

    // Rotation: the IdP comes back with new keys only. A token under a new kid makes the
    // gateway fetch again (past the 1 s cooldown) without a restart.
    let new_keys = vec![f.keys[2].clone(), f.keys[3].clone()];
    f.idp.restart_with_keys(&new_keys);
    std::thread::sleep(Duration::from_millis(1100));
    let hits = f.idp.jwks_hits();
    let rotated = f.idp.token("svc-a", "secret-a");
    assert_ne!(jwt_parts(&rotated).0["kid"], jwt_parts(&first).0["kid"]);
    assert_eq!(call(&rotated), 200);
    assert!(
        f.idp.jwks_hits() > hits,
        "the new kid did not cause a fetch"
    );
    // The old key is gone from the JWKS, so tokens signed with it stop working, cached or not.
    assert_eq!(call(&first), 401);
    gw.wait_log(|l| l["message"] == "issuer keys fetched");
}

#[test]
fn tokens_from_each_of_several_issuers_are_accepted_and_told_apart() {
    let (f, g) = (fixture(), fixture());
    let up = model_server();
    let second = format!(
        "\n[[identity.issuer]]\nissuer = \"{}\"\naudiences = [\"{RESOURCE}\"]\nca_file = \"{}\"\n",
        g.idp.issuer(),
        g.idp.ca_pem().display()
    );
    let gw = Gateway::start(&(gateway_config(&f.idp, &up.url(), "30s") + &second));
    for idp in [&f.idp, &g.idp] {
        let token = idp.token("svc-a", "secret-a");
        let res = send(
            &gw,
            "POST",
            "/v1/completions",
            Some(&bearer(&token)),
            &chat("llama-3-8b"),
        );
        assert_eq!(res.status(), 200, "{}: {}", idp.issuer(), res.body_str());
    }
    // The model server can tell the two callers apart: same subject, different IdP.
    let idps: Vec<String> = up
        .wait_requests(2)
        .iter()
        .map(|(_, r)| jwt_parts(r.header("x-modelgate-identity").unwrap()).1["idp"].to_string())
        .collect();
    assert_eq!(
        idps,
        [f.idp.issuer(), g.idp.issuer()].map(|s| format!("{s:?}"))
    );
    // A token of one issuer does not verify under the other's keys.
    let token = g.idp.token("svc-a", "secret-a");
    let (h, _) = jwt_parts(&token);
    let mut claims = jwt_parts(&token).1;
    claims["iss"] = json!(f.idp.issuer());
    let forged = format!(
        "{}.{}.{}",
        b64(h.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        token.rsplit('.').next().unwrap()
    );
    assert_eq!(
        send(&gw, "GET", "/v1/models", Some(&bearer(&forged)), "").status(),
        401
    );
}

#[test]
fn a_gateway_started_while_the_idp_is_down_refuses_with_503_until_it_is_back() {
    let mut f = fixture();
    let up = model_server();
    let token = f.idp.token("svc-a", "secret-a");
    f.idp.stop();
    let gw = Gateway::start(&gateway_config(&f.idp, &up.url(), "1s"));
    let res = send(
        &gw,
        "POST",
        "/v1/completions",
        Some(&bearer(&token)),
        &chat("llama-3-8b"),
    );
    assert_eq!(res.status(), 503, "{}", res.body_str());
    assert_eq!(res.json()["error"]["type"], "identity_unavailable");
    assert_eq!(up.requests().len(), 0);

    f.idp.restart_with_keys(&f.keys[..2]);
    // Past the cooldown, the next request asks for a fetch itself and waits for it.
    std::thread::sleep(Duration::from_millis(1100));
    let res = send(
        &gw,
        "POST",
        "/v1/completions",
        Some(&bearer(&token)),
        &chat("llama-3-8b"),
    );
    assert_eq!(res.status(), 200, "{}", res.body_str());
}
