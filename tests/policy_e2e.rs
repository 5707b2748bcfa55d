//! Least-privilege policy end to end, with real tokens from the test IdP: models read from JSON
//! bodies (whole, chunked, split) and KServe paths, endpoint classes from the built-in tables,
//! a service account limited to inference on one model, holds, the default deny, and every
//! decision in the access log and the session recording with the rule that made it.

mod support;

use support::authn::*;
use support::*;

/// The gateway of `gateway_config` with session recording on, its recording directory, and
/// tokens for the three clients.
struct Env {
    f: Fixture,
    up: Upstream,
    gw: Gateway,
    rec: std::path::PathBuf,
}

fn env() -> Env {
    let f = fixture();
    let up = model_server();
    let rec = temp_dir("policy-rec");
    let config = format!(
        "{}\n[recording]\nenabled = true\ndir = \"{}\"\ndurability = \"event\"\n",
        gateway_config(&f.idp, &up.url(), "30s"),
        rec.display()
    );
    let gw = Gateway::start(&config);
    Env { f, up, gw, rec }
}

impl Env {
    fn token(&self, client: &str) -> String {
        let secret = match client {
            "svc-a" => "secret-a",
            "svc-b" => "secret-b",
            _ => "secret-s",
        };
        bearer(&self.f.idp.token(client, secret))
    }

    /// Sends and returns (status, the access log line).
    fn call(&self, auth: &str, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let res = send(&self.gw, method, path, Some(auth), body);
        let log = self
            .gw
            .access_log(res.header("x-request-id").expect("request id"));
        (res.status(), log)
    }
}

fn decision(log: &serde_json::Value) -> (String, String) {
    (
        log["decision"].as_str().unwrap_or("?").to_string(),
        log["rule"].as_str().unwrap_or("?").to_string(),
    )
}

#[test]
fn a_group_gets_the_models_its_rule_names_and_no_others() {
    let e = env();
    let a = e.token("svc-a");
    let before = e.up.requests().len();

    // JSON body.
    let (s, log) = e.call(&a, "POST", "/v1/chat/completions", &chat("llama-3-8b"));
    assert_eq!(
        (s, decision(&log)),
        (200, ("allow".into(), "ml-llama".into()))
    );
    let (s, log) = e.call(&a, "POST", "/v1/chat/completions", &chat("qwen-72b"));
    assert_eq!(
        (s, decision(&log)),
        (403, ("deny".into(), "default-deny".into()))
    );
    assert_eq!(log["model"], "qwen-72b");

    // KServe path.
    let (s, _) = e.call(&a, "POST", "/v2/models/llama-3-8b/infer", "{\"inputs\":[]}");
    assert_eq!(s, 200);
    let (s, log) = e.call(&a, "POST", "/v2/models/qwen-72b/versions/1/infer", "{}");
    assert_eq!((s, log["model"].as_str()), (403, Some("qwen-72b")));
    assert_eq!(
        e.up.requests().len(),
        before + 2,
        "a denied request reached the model server"
    );

    // A chunked body with the model split across chunks: read without changing the body.
    let body = chat("llama-3-8b");
    let (x, y) = body.split_at(12);
    let raw = format!(
        "POST /v1/completions HTTP/1.1\r\nhost: m\r\nauthorization: {a}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{}",
        String::from_utf8(chunked_body(&[x.as_bytes(), y.as_bytes()], &[])).unwrap()
    );
    assert_eq!(e.gw.connect().request(raw).status(), 200);
    let (_, got) = e.up.wait_requests(before + 3).pop().unwrap();
    assert_eq!(got.body_str(), body, "the body must be forwarded unchanged");

    // The 403 names the rule and nothing else.
    let res = send(&e.gw, "POST", "/v1/completions", Some(&a), &chat("mistral"));
    assert_eq!(res.status(), 403);
    assert!(
        res.body_str()
            .contains("denied by policy rule \\\"default-deny\\\""),
        "{}",
        res.body_str()
    );
}

#[test]
fn a_service_account_gets_inference_on_its_model_and_nothing_else() {
    let e = env();
    let s = e.token("svc-summarizer");
    let allowed = e.up.requests().len();
    let (st, log) = e.call(&s, "POST", "/v1/chat/completions", &chat("llama-3-8b"));
    assert_eq!(
        (st, decision(&log)),
        (200, ("allow".into(), "svc-summarizer".into()))
    );
    for (method, path, body) in [
        ("POST", "/v1/chat/completions", chat("llama-3-70b")),
        (
            "POST",
            "/v1/fine_tuning/jobs",
            "{\"model\":\"llama-3-8b\",\"training_file\":\"f\"}".into(),
        ),
        ("GET", "/v1/files/file-abc/content", String::new()),
        (
            "POST",
            "/v1/load_lora_adapter",
            "{\"lora_name\":\"x\",\"lora_path\":\"/w\"}".into(),
        ),
        ("POST", "/v2/repository/models/llama-3-8b/load", "{}".into()),
        ("GET", "/v1/models", String::new()),
    ] {
        let (st, log) = e.call(&s, method, path, &body);
        assert_eq!(st, 403, "{method} {path}: {log}");
        assert_eq!(
            decision(&log),
            ("deny".into(), "default-deny".into()),
            "{method} {path}"
        );
    }
    assert_eq!(e.up.requests().len(), allowed + 1);
}

#[test]
fn unknown_endpoints_are_denied_and_holds_are_refused_naming_their_rule() {
    let e = env();
    let a = e.token("svc-a");
    let (st, log) = e.call(&a, "POST", "/v1/debug/dump_state", &chat("llama-3-8b"));
    assert_eq!((st, log["class"].as_str()), (403, Some("unknown")));
    assert_eq!(decision(&log).1, "default-deny");

    let b = e.token("svc-b");
    let res = send(
        &e.gw,
        "POST",
        "/v2/repository/models/llama-3-8b/load",
        Some(&b),
        "{}",
    );
    assert_eq!(res.status(), 403);
    assert_eq!(res.json()["error"]["type"], "approval_required");
    let log = e.gw.access_log(res.header("x-request-id").unwrap());
    assert_eq!(decision(&log), ("hold".into(), "admins-manage".into()));
    assert_eq!(e.up.requests().len(), 0);
}

#[test]
fn bodies_that_hide_or_repeat_the_model_do_not_get_through() {
    let e = env();
    let a = e.token("svc-a");
    // Two top-level "model" members within the look-ahead: refused before the upstream.
    let twice = r#"{"model":"llama-3-8b","prompt":"x","model":"qwen-72b"}"#;
    assert_eq!(e.call(&a, "POST", "/v1/completions", twice).0, 400);
    // The escaped spelling of "model" is the same member.
    let escaped = r#"{"mod\u0065l":"qwen-72b","prompt":"x"}"#;
    assert_eq!(e.call(&a, "POST", "/v1/completions", escaped).0, 403);
    assert_eq!(e.up.requests().len(), 0);

    // The second "model" far past the look-ahead: admitted on the first, then the body is cut
    // when the second appears, so the model server never gets a complete request.
    let pad = "y".repeat(100 * 1024);
    let late = format!(r#"{{"model":"llama-3-8b","prompt":"{pad}","model":"qwen-72b"}}"#);
    let (st, log) = e.call(&a, "POST", "/v1/completions", &late);
    assert_eq!(st, 400, "{log}");
    assert!(
        e.up.requests().iter().all(|(_, r)| !r.complete),
        "a contradicted body was forwarded whole"
    );

    // A model named only after the look-ahead is unknown, and rules naming models do not match.
    let hidden = format!(r#"{{"prompt":"{pad}","model":"llama-3-8b"}}"#);
    let (st, log) = e.call(&a, "POST", "/v1/completions", &hidden);
    assert_eq!((st, log["model"].as_str()), (403, Some("-")));
}

#[test]
fn recordings_carry_who_asked_which_model_and_the_decision() {
    let e = env();
    let a = e.token("svc-a");
    let (_, ok) = e.call(&a, "POST", "/v1/chat/completions", &chat("llama-3-8b"));
    let (_, denied) = e.call(&a, "POST", "/v1/chat/completions", &chat("qwen-72b"));
    let res = send(
        &e.gw,
        "GET",
        "/v1/models",
        Some("Bearer forged.token.x"),
        "",
    );
    assert_eq!(res.status(), 401);
    let dir = e.rec.to_str().unwrap();
    let list = |extra: &[&str]| {
        let mut args = vec!["sessions", "list", "--dir", dir];
        args.extend_from_slice(extra);
        let out = modelgate_cli(&args);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        out.stdout_str()
    };
    let id = |log: &serde_json::Value| log["request_id"].as_str().unwrap().to_string();
    let denials = list(&["--subject", "svc-a", "--decision", "deny"]);
    assert!(
        denials.contains(&id(&denied)) && !denials.contains(&id(&ok)),
        "{denials}"
    );
    let llama = list(&["--model", "llama-3-8b", "--group", "ml-users"]);
    assert!(
        llama.contains(&id(&ok)) && !llama.contains(&id(&denied)),
        "{llama}"
    );
    // The unauthenticated request is on the record too, without an identity.
    let all = list(&[]);
    assert!(all.contains(res.header("x-request-id").unwrap()), "{all}");
    let show = modelgate_cli(&["sessions", "show", "--dir", dir, &id(&denied)]);
    assert!(
        show.stdout_str().contains("default-deny"),
        "{}",
        show.stdout_str()
    );
}

#[test]
fn a_reloaded_policy_applies_to_the_next_request_without_refetching_keys() {
    let e = env();
    let a = e.token("svc-a");
    assert_eq!(
        e.call(&a, "POST", "/v1/completions", &chat("qwen-72b")).0,
        403
    );
    let hits = e.f.idp.jwks_hits();
    let config = format!(
        "{}\n[recording]\nenabled = true\ndir = \"{}\"\ndurability = \"event\"\n",
        gateway_config(&e.f.idp, &e.up.url(), "30s").replace(
            "models = [\"llama-*\"]",
            "models = [\"llama-*\", \"qwen-*\"]"
        ),
        e.rec.display()
    );
    e.gw.reload(&config);
    e.gw.wait_log(|l| l["message"] == "config reloaded");
    let (st, log) = e.call(&a, "POST", "/v1/completions", &chat("qwen-72b"));
    assert_eq!(
        (st, decision(&log)),
        (200, ("allow".into(), "ml-llama".into()))
    );
    // The issuer did not change, so its keys were kept: no new JWKS fetch.
    assert_eq!(e.f.idp.jwks_hits(), hits);
}

#[test]
fn a_body_peeked_for_its_model_goes_whole_to_a_tls_model_server() {
    // The look-ahead leaves tens of KiB buffered before the upstream connection exists; all of
    // it, and the rest, must reach a TLS model server byte for byte.
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let ca = support::pki::Ca::new(dir.path(), "models-ca");
    let origin = support::pki::TlsOrigin::start(&ca.server("models", &["models.test"]), None);
    let endpoint = format!("127.0.0.1:{}", origin.port);
    let config = gateway_config(&f.idp, &endpoint, "30s").replace(
        &format!("endpoints = [\"{endpoint}\"]\n"),
        &format!(
            "endpoints = [\"{endpoint}\"]\n[upstream.tls]\nca_file = \"{}\"\nserver_name = \"models.test\"\n",
            ca.cert.display()
        ),
    );
    let gw = Gateway::start(&config);
    let token = bearer(&f.idp.token("svc-a", "secret-a"));
    let prompt = "z".repeat(60 * 1024);
    let tail = "y".repeat(40 * 1024);
    let body = format!(r#"{{"prompt":"{prompt}","model":"llama-3-8b","suffix":"{tail}"}}"#);
    let res = send(&gw, "POST", "/v1/completions", Some(&token), &body);
    assert_eq!(res.status(), 200, "{}", res.body_str());
    assert!(
        res.body_str().starts_with(&format!("len={} ", body.len())),
        "{}",
        res.body_str()
    );
}
