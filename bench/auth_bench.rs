//! Token verification cost, and a token minter for `bench/run.sh`'s `modelgate_auth` variant.
//!
//! `cargo run --release --example auth-bench -- cold [ITERS]`
//!   per algorithm: µs for one cold verification (parse + signature + claims, what a token the
//!   worker has not seen costs) against one cache hit (keyed hash of the token's tail, lookup,
//!   whole-token compare: what every later request with the same token costs). Medians of 15
//!   batches.
//!
//! `auth-bench mint --jwks FILE --issuer ISS --aud AUD`
//!   writes a JWKS with a fresh ES256 key to FILE and prints a token (groups ["bench"], 24 h).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::time::Instant;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::Algorithm;
use modelgate::identity::config::IssuerConfig;
use modelgate::identity::{jwks, token};
use serde_json::{json, Value};

type SignFn = Box<dyn Fn(&[u8]) -> Vec<u8>>;

/// A signing key and its public JWK.
struct Key {
    alg: &'static str,
    jwk: Value,
    sign: SignFn,
}

fn key(alg: &'static str) -> Key {
    let rng = SystemRandom::new();
    let ec = |a: &'static signature::EcdsaSigningAlgorithm, crv: &str, n: usize| {
        let doc = EcdsaKeyPair::generate_pkcs8(a, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(a, doc.as_ref()).unwrap();
        let p = pair.public_key().as_ref().to_vec();
        let jwk =
            json!({"kty":"EC","crv":crv,"x":B64.encode(&p[1..1 + n]),"y":B64.encode(&p[1 + n..])});
        let rng = SystemRandom::new();
        let sign: SignFn = Box::new(move |m| pair.sign(&rng, m).unwrap().as_ref().to_vec());
        (jwk, sign)
    };
    let rsa = |padding: &'static dyn signature::RsaEncoding| {
        let pair = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).unwrap();
        let public = pair.public_key();
        let jwk = json!({"kty":"RSA",
            "n": B64.encode(public.modulus().big_endian_without_leading_zero()),
            "e": B64.encode(public.exponent().big_endian_without_leading_zero())});
        let rng = SystemRandom::new();
        let sign: SignFn = Box::new(move |m| {
            let mut sig = vec![0; pair.public_modulus_len()];
            pair.sign(padding, &rng, m, &mut sig).unwrap();
            sig
        });
        (jwk, sign)
    };
    let (mut jwk, sign) = match alg {
        "RS256" => rsa(&signature::RSA_PKCS1_SHA256),
        "PS256" => rsa(&signature::RSA_PSS_SHA256),
        "ES256" => ec(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", 32),
        "ES384" => ec(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", 48),
        "EdDSA" => {
            let pair = Ed25519KeyPair::generate().unwrap();
            let jwk =
                json!({"kty":"OKP","crv":"Ed25519","x":B64.encode(pair.public_key().as_ref())});
            let sign: SignFn = Box::new(move |m| pair.sign(m).as_ref().to_vec());
            (jwk, sign)
        }
        other => panic!("unsupported alg {other}"),
    };
    jwk["kid"] = json!(format!("bench-{alg}"));
    jwk["use"] = json!("sig");
    Key { alg, jwk, sign }
}

fn mint(k: &Key, iss: &str, aud: &str, ttl: u64) -> String {
    let now = modelgate::clock::unix_secs();
    let header = json!({"alg": k.alg, "typ": "at+jwt", "kid": k.jwk["kid"]});
    let claims = json!({"iss": iss, "aud": aud, "sub": "bench-client", "client_id": "bench-client",
        "groups": ["bench"], "scope": "models:infer", "iat": now, "exp": now + ttl});
    let mut t = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let sig = (k.sign)(t.as_bytes());
    t.push('.');
    t.push_str(&B64.encode(sig));
    t
}

fn issuer(iss: &str, aud: &str) -> IssuerConfig {
    IssuerConfig {
        issuer: iss.into(),
        audiences: vec![aud.into()],
        algorithms: vec![
            Algorithm::RS256,
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ],
        jwks_uri: None,
        ca_file: None,
        refresh: std::time::Duration::from_secs(900),
        max_stale: std::time::Duration::from_secs(86400),
        groups_claim: vec!["groups".into()],
        typ: Some("at+jwt".into()),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median over 15 batches of the mean µs per call of `f`.
fn time(iters: usize, mut f: impl FnMut()) -> f64 {
    let batches = (0..15)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / iters as f64
        })
        .collect();
    median(batches)
}

fn cold(iters: usize) {
    let (iss, aud) = ("https://idp.bench", "bench");
    let cfg = issuer(iss, aud);
    println!("| alg | cold verify µs | cache hit µs | cold ÷ hit |");
    println!("|---|---:|---:|---:|");
    for alg in ["RS256", "PS256", "ES256", "ES384", "EdDSA"] {
        let k = key(alg);
        let keys = jwks::parse(json!({"keys": [k.jwk]}).to_string().as_bytes()).unwrap();
        let vk = keys.values().next().unwrap().clone();
        let t = mint(&k, iss, aud, 3600);
        let now = modelgate::clock::unix_secs();
        let cold = time(iters, || {
            let p = token::parse(&t, 8192).unwrap();
            std::hint::black_box(token::verify(&p, &cfg, &vk, now, 30).unwrap());
        });
        // What a cache hit costs in `identity::Authenticator`: a keyed hash of the token's
        // last 32 bytes, a lookup among 1000 others, a whole-token compare, the exp check.
        let hasher = RandomState::new();
        let tail = |t: &str| hasher.hash_one(&t.as_bytes()[t.len() - 32..]);
        let mut cache: HashMap<u64, (Box<str>, u64)> = HashMap::new();
        for i in 0..1000u64 {
            let other = format!("{t}{i:032}");
            cache.insert(tail(&other), (other.into(), now + 3600));
        }
        cache.insert(tail(&t), (t.clone().into(), now + 3600));
        let hit = time(iters * 20, || {
            let probe = std::hint::black_box(t.as_str());
            let found = cache
                .get(&tail(probe))
                .filter(|(tok, exp)| **tok == *probe && *exp >= now);
            std::hint::black_box(found.is_some());
        });
        println!(
            "| {alg} ({} B token) | {cold:.1} | {hit:.3} | {:.0}× |",
            t.len(),
            cold / hit
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| panic!("missing {name}"))
    };
    match args.first().map(String::as_str) {
        Some("cold") => cold(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(200)),
        Some("mint") => {
            let k = key("ES256");
            std::fs::write(arg("--jwks"), json!({"keys": [k.jwk]}).to_string()).unwrap();
            println!("{}", mint(&k, &arg("--issuer"), &arg("--aud"), 86400));
        }
        _ => eprintln!("usage: auth-bench cold [ITERS] | mint --jwks FILE --issuer ISS --aud AUD"),
    }
}
