//! The identity assertion's signing keys, from the outside: `modelgate identity keygen` writes
//! a PKCS#8 key only its owner can read and never replaces an existing file; rotation by
//! SIGHUP publishes the new key first and keeps the old one while its assertions may still be
//! in flight, each under its RFC 7638 thumbprint; a key file that is not a key fails
//! `check-config` naming the key.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::*;

fn keygen(out: &Path) -> Output {
    Command::new(BIN)
        .args(["identity", "keygen", "--out"])
        .arg(out)
        .output()
        .expect("run modelgate identity keygen")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The public point of a PKCS#8 PEM P-256 key as JWK `x`, `y`, read here with aws-lc-rs,
/// independently of the gateway's own loader.
fn public_xy(pem: &str) -> (String, String) {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(body).expect("PEM body is base64");
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
        .expect("a PKCS#8 P-256 private key");
    let point = key.public_key().as_ref();
    assert_eq!((point.len(), point[0]), (65, 4), "uncompressed P-256 point");
    (B64.encode(&point[1..33]), B64.encode(&point[33..]))
}

/// RFC 7638 §3.2: SHA-256 of the required members in lexicographic order, no whitespace.
fn thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    B64.encode(Sha256::digest(canonical.as_bytes()))
}

/// The kid the gateway must publish for the key in `pem`.
fn kid_of(pem_file: &Path) -> String {
    let (x, y) = public_xy(&fs::read_to_string(pem_file).unwrap());
    thumbprint(&x, &y)
}

fn gateway_config(key_file: &Path, previous: &[&Path]) -> String {
    let previous: Vec<String> = previous
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    let identity = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[identity]

[[identity.issuer]]
issuer = "https://127.0.0.1:1"
audiences = ["https://models.test"]

[identity.upstream_assertion]
key_file = {key_file:?}
previous_key_files = [{previous}]
"#,
        key_file = key_file.display().to_string(),
        previous = previous.join(", "),
    );
    basic_config("127.0.0.1:9", &identity)
}

/// `GET /.well-known/jwks.json` on the admin listener: the keys, checked to be public P-256
/// signing keys whose kid is their thumbprint.
fn published_kids(admin: &str) -> Vec<String> {
    let mut c = Client::connect(admin.parse().unwrap());
    let res = c.request("GET /.well-known/jwks.json HTTP/1.1\r\nhost: admin\r\n\r\n");
    assert_eq!(res.status(), 200, "{}", res.body_str());
    assert_eq!(res.header("content-type"), Some("application/jwk-set+json"));
    let jwks: Value = res.json();
    let keys = jwks["keys"].as_array().expect("a keys array");
    keys.iter()
        .map(|k| {
            assert_eq!(
                (&k["kty"], &k["crv"], &k["alg"], &k["use"]),
                (
                    &Value::from("EC"),
                    &Value::from("P-256"),
                    &Value::from("ES256"),
                    &Value::from("sig")
                ),
                "{k}"
            );
            assert!(k.get("d").is_none(), "a private key was published: {k}");
            let (x, y) = (k["x"].as_str().unwrap(), k["y"].as_str().unwrap());
            let kid = k["kid"].as_str().expect("a kid").to_owned();
            assert_eq!(
                kid,
                thumbprint(x, y),
                "kid is not the RFC 7638 thumbprint: {k}"
            );
            kid
        })
        .collect()
}

#[test]
fn keygen_writes_an_owner_only_pkcs8_key_and_never_replaces_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("assertion.pem");
    let out = keygen(&path);
    assert!(out.status.success(), "keygen failed: {}", stderr(&out));

    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    let pem = fs::read_to_string(&path).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    assert!(pem.ends_with("-----END PRIVATE KEY-----\n"), "{pem}");
    assert!(
        pem.lines().all(|l| l.len() <= 64),
        "PEM lines over 64 columns"
    );
    public_xy(&pem);

    // Again on the same path: refused, and the key is untouched.
    let again = keygen(&path);
    assert_ne!(again.status.code(), Some(0), "keygen overwrote {path:?}");
    assert!(
        stderr(&again).contains(&path.display().to_string()),
        "the error names the file: {}",
        stderr(&again)
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), pem);

    // Nor is a symlink followed, even a dangling one.
    let target = dir.path().join("elsewhere.pem");
    let link = dir.path().join("link.pem");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let through = keygen(&link);
    assert_ne!(
        through.status.code(),
        Some(0),
        "keygen wrote through a symlink"
    );
    assert!(!target.exists(), "keygen created the symlink's target");

    // A second key is a different key.
    let other = dir.path().join("other.pem");
    assert!(keygen(&other).status.success());
    assert_ne!(kid_of(&other), kid_of(&path));
}

#[test]
fn rotation_publishes_the_new_key_first_and_keeps_the_old_one_until_it_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2, junk) = (
        dir.path().join("k1.pem"),
        dir.path().join("k2.pem"),
        dir.path().join("junk.pem"),
    );
    assert!(keygen(&k1).status.success());
    let gw = Gateway::start(&gateway_config(&k1, &[]));
    let admin = gw.wait_log(|l| l["message"] == "admin listener")["admin"]
        .as_str()
        .expect("admin address in the log")
        .to_owned();
    assert_eq!(published_kids(&admin), [kid_of(&k1)]);

    // Rotate: K2 signs, K1 is still published for assertions signed before the reload.
    assert!(keygen(&k2).status.success());
    gw.reload(&gateway_config(&k2, &[&k1]));
    gw.wait_log(|l| l["message"] == "config reloaded");
    assert_eq!(published_kids(&admin), [kid_of(&k2), kid_of(&k1)]);

    // A reload naming a file that is not a key is rejected and changes nothing.
    fs::write(&junk, "not a key\n").unwrap();
    gw.reload(&gateway_config(&junk, &[&k2]));
    let rejected = gw.wait_log(|l| l["message"] == "config reload rejected");
    assert!(
        rejected
            .to_string()
            .contains("identity.upstream_assertion.key_file"),
        "{rejected}"
    );
    assert_eq!(published_kids(&admin), [kid_of(&k2), kid_of(&k1)]);

    // After the assertions' ttl: K1 is dropped.
    gw.reload(&gateway_config(&k2, &[]));
    gw.wait_log_count(2, |l| l["message"] == "config reloaded");
    assert_eq!(published_kids(&admin), [kid_of(&k2)]);
}

/// Runs `check-config` on `text` (written as `dir/gateway.toml`); returns the path and output.
fn check_config(dir: &Path, text: &str) -> (String, Output) {
    let path = dir.join("gateway.toml");
    fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run check-config");
    (path.display().to_string(), out)
}

/// Exit 1, `error: PATH:LINE:COL: key `KEY`: …` at the line holding `key`'s last segment,
/// mentioning `mentions`, then a `  fix: ` line.
#[track_caller]
fn assert_rejected(dir: &Path, text: &str, key: &str, mentions: &str) {
    let (path, out) = check_config(dir, text);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr:\n{err}");
    let mut lines = err.lines();
    let first = lines.next().unwrap_or_default();
    let name = key.rsplit('.').next().unwrap().split('[').next().unwrap();
    let line = text
        .lines()
        .position(|l| l.trim_start().starts_with(name))
        .unwrap()
        + 1;
    let prefix = format!("error: {path}:{line}:");
    assert!(first.starts_with(&prefix), "wanted {prefix:?} in:\n{err}");
    assert!(
        first.contains(&format!("key `{key}`: ")),
        "key not named:\n{err}"
    );
    assert!(
        first.contains(mentions),
        "{mentions:?} not mentioned:\n{err}"
    );
    let fix = lines.next().unwrap_or_default();
    assert!(
        fix.starts_with("  fix: ") && fix.contains("modelgate identity keygen"),
        "no fix naming keygen:\n{err}"
    );
}

#[test]
fn check_config_names_the_key_of_a_key_file_that_is_not_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let (good, junk, rsa) = (
        dir.path().join("good.pem"),
        dir.path().join("junk.pem"),
        dir.path().join("rsa.pem"),
    );
    assert!(keygen(&good).status.success());
    fs::write(&junk, "not a key\n").unwrap();
    gen_rsa(&rsa);
    let missing = dir.path().join("missing.pem");

    // Keys made by keygen and by openssl are both fine.
    let openssl_ec = dir.path().join("openssl-ec.pem");
    gen_ec(&openssl_ec);
    for key in [&good, &openssl_ec] {
        let (_, ok) = check_config(dir.path(), &gateway_config(key, &[]));
        assert_eq!(ok.status.code(), Some(0), "{key:?}: {}", stderr(&ok));
    }

    let key_file = "identity.upstream_assertion.key_file";
    let text = gateway_config(&junk, &[]);
    assert_rejected(
        dir.path(),
        &text,
        key_file,
        "is not a PKCS#8 P-256 private key",
    );
    // An RSA key is a PKCS#8 key, but not one that can sign ES256.
    let text = gateway_config(&rsa, &[]);
    assert_rejected(
        dir.path(),
        &text,
        key_file,
        "is not a PKCS#8 P-256 private key",
    );
    let text = gateway_config(&missing, &[]);
    assert_rejected(dir.path(), &text, key_file, "cannot read");
    let text = gateway_config(&good, &[&junk]);
    assert_rejected(
        dir.path(),
        &text,
        "identity.upstream_assertion.previous_key_files[0]",
        "is not a PKCS#8 P-256 private key",
    );
}
