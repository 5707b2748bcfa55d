//! A gateway in front of a real OIDC provider, for the identity and policy tests: the test IdP
//! with three clients, a gateway trusting it with a vLLM route, a KServe route and a small rule
//! set, and a model server that answers everything.

use std::path::PathBuf;

use serde_json::json;

use super::*;

pub const RESOURCE: &str = "https://models.test";

/// An IdP with an RSA and an EC key and three clients, and the key files (two spares for
/// rotation and one attacker key).
pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub idp: Idp,
    pub keys: Vec<PathBuf>,
}

pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = Pki::new(d);
    let keys: Vec<PathBuf> = ["rsa.pem", "ec.pem", "rsa2.pem", "ec2.pem", "evil.pem"]
        .iter()
        .map(|n| d.join(n))
        .collect();
    for (i, k) in keys.iter().enumerate() {
        match i {
            1 | 3 => gen_ec(k),
            _ => gen_rsa(k),
        }
    }
    let config = IdpConfig::new(&pki, &keys[..2])
        .client(
            IdpClient::new("svc-a", "secret-a", "RS256")
                .groups(&["ml-users"])
                .scope("models:infer"),
        )
        .client(
            IdpClient::new("svc-b", "secret-b", "ES256")
                .groups(&["ml-users", "ml-admins"])
                .scope("models:infer"),
        )
        .client(IdpClient::new("svc-summarizer", "secret-s", "RS256").scope("models:infer"));
    let mut config = config;
    config.other_resources.push("https://other.test".into());
    let idp = Idp::start(config);
    Fixture {
        _dir: dir,
        idp,
        keys,
    }
}

/// The gateway config: one issuer (the test IdP), a vLLM route and a KServe route, and rules.
pub fn gateway_config(idp: &Idp, upstream: &str, cooldown: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[identity]
kid_refresh_cooldown = "{cooldown}"
leeway = "5s"

[[identity.issuer]]
issuer = "{issuer}"
audiences = ["{RESOURCE}"]
algorithms = ["RS256", "ES256"]
ca_file = "{ca}"
typ = "at+jwt"

[[policy.rule]]
id = "ml-llama"
effect = "allow"
groups = ["ml-users"]
classes = ["inference", "metadata"]
models = ["llama-*"]

[[policy.rule]]
id = "svc-summarizer"
effect = "allow"
clients = ["svc-summarizer"]
scopes = ["models:infer"]
classes = ["inference"]
models = ["llama-3-8b"]

[[policy.rule]]
id = "admins-manage"
effect = "hold"
groups = ["ml-admins"]
classes = ["management"]

[[upstream]]
name = "models"
endpoints = ["{upstream}"]

[[route]]
id = "vllm"
path_prefix = "/v1/"
upstream = "models"
api = "vllm"

[[route]]
id = "triton"
path_prefix = "/v2/"
upstream = "models"
api = "kserve"
"#,
        issuer = idp.issuer(),
        ca = idp.ca_pem().display(),
    )
}

/// A model server that answers every request 200 and remembers what it got.
pub fn model_server() -> Upstream {
    Upstream::respond(|_| response(200, &["content-type: application/json"], b"{\"ok\":true}"))
}

pub fn chat(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

pub fn send(gw: &Gateway, method: &str, path: &str, auth: Option<&str>, body: &str) -> Message {
    let auth = auth.map_or(String::new(), |a| format!("authorization: {a}\r\n"));
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nhost: models\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    gw.connect().request(raw)
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
