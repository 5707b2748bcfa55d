//! gRPC through the gateway with real parts on both ends: `tritonclient[grpc]` calling a KServe
//! v2 server written with `grpcio` on tritonclient's own service stubs. Unary and bidirectional
//! streaming calls pass with their trailers; the gateway's own refusals are gRPC statuses
//! (UNAUTHENTICATED, PERMISSION_DENIED, UNAVAILABLE, DEADLINE_EXCEEDED); the policy reads the
//! model from the first `ModelInferRequest`.

mod support;

use serde_json::Value;
use support::authn::{bearer, fixture, RESOURCE};
use support::*;

/// A gateway with one gRPC route to `upstream` (h2c) and `extra` config on top.
fn grpc_config(upstream: &str, auth: &str, extra: &str) -> String {
    format!(
        r#"{extra}

[[upstream]]
name = "triton"
endpoints = ["{upstream}"]
protocol = "h2c"

[[route]]
id = "grpc"
path_prefix = "/inference.GRPCInferenceService/"
upstream = "triton"
api = "kserve"
auth = "{auth}"
"#
    )
}

/// A unary ModelInfer for `model` with `grpc-timeout: timeout`, sent by curl (which keeps no
/// deadline of its own); returns the response head (a Trailers-Only answer's status is in it).
fn curl_grpc(gw: std::net::SocketAddr, model: &str, timeout: &str) -> String {
    curl_grpc_with(
        gw,
        model,
        &[
            "-H",
            "content-type: application/grpc",
            "-H",
            &format!("grpc-timeout: {timeout}"),
        ],
    )
}

/// A unary ModelInfer for `model` sent by curl with the given extra arguments (headers).
fn curl_grpc_with(gw: std::net::SocketAddr, model: &str, extra: &[&str]) -> String {
    let mut msg = vec![0x0a, model.len() as u8];
    msg.extend_from_slice(model.as_bytes());
    curl_grpc_message(gw, &msg, extra)
}

/// Sends one gRPC message (protobuf bytes, framed here) to ModelInfer with curl; returns the
/// response head.
fn curl_grpc_message(gw: std::net::SocketAddr, msg: &[u8], extra: &[&str]) -> String {
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(msg);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("infer.bin");
    std::fs::write(&file, body).unwrap();
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "--http2-prior-knowledge",
            "-D",
            "-",
            "-o",
            "/dev/null",
        ])
        .args(["-H", "te: trailers"])
        .args(extra)
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!(
            "http://{gw}/inference.GRPCInferenceService/ModelInfer"
        ))
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A protobuf length-delimited field (number < 16, length < 2^21).
fn pb_len(out: &mut Vec<u8>, number: u8, value: &[u8]) {
    out.push(number << 3 | 2);
    let mut n = value.len();
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(value);
}

fn status(v: &Value) -> &str {
    v["status"].as_str().unwrap_or("-")
}

#[test]
fn grpc_calls_pass_through_with_their_trailers_and_statuses() {
    let server = KserveServer::start();
    let gw = Gateway::start(&grpc_config(&server.addr.to_string(), "none", ""));

    // Unary: the answer and its trailers (grpc-status 0) arrive; the client would report a
    // missing status otherwise.
    let v = triton(
        gw.addr,
        &["--mode", "unary", "--model", "echo", "--text", "héllo"],
    );
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["output"], "héllo");
    let md = &v["metadata"];
    assert_eq!(md["x-forwarded-for"], "127.0.0.1", "{md}");
    assert!(md["x-request-id"].is_string(), "{md}");

    // Bidirectional streaming: the client keeps its side open until all three answers came,
    // so this only completes if both directions flow at once.
    let v = triton(
        gw.addr,
        &["--mode", "stream", "--model", "stream", "--text", "abc"],
    );
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["outputs"], serde_json::json!(["abc#1", "abc#2", "abc#3"]));

    // The model server's own errors pass through unchanged.
    let v = triton(gw.addr, &["--mode", "unary", "--model", "fail"]);
    assert_eq!(status(&v), "StatusCode.INVALID_ARGUMENT", "{v}");
    assert_eq!(v["message"], "model fail always fails");
    let v = triton(gw.addr, &["--mode", "unary", "--model", "nope"]);
    assert_eq!(status(&v), "StatusCode.NOT_FOUND", "{v}");

    // Statuses, the model server's and the gateway's, are in the access log.
    let statuses: Vec<String> = gw
        .wait_log_count(4, |l| l["message"] == "access")
        .iter()
        .map(|l| l["grpc_status"].as_str().unwrap_or("-").to_owned())
        .collect();
    assert_eq!(statuses, ["OK", "OK", "INVALID_ARGUMENT", "NOT_FOUND"]);

    // The caller's deadline (grpc-timeout) ends the call at the gateway. tritonclient keeps
    // its own deadline too (whichever fires first, the client sees DEADLINE_EXCEEDED), so
    // the gateway's own answer is checked with a client that keeps none: curl.
    let v = triton(
        gw.addr,
        &["--mode", "unary", "--model", "slow", "--timeout", "1"],
    );
    assert_eq!(status(&v), "StatusCode.DEADLINE_EXCEEDED", "{v}");
    let head = curl_grpc(gw.addr, "slow", "300m");
    assert!(head.starts_with("HTTP/2 200"), "{head}");
    assert!(head.contains("grpc-status: 4\r\n"), "{head}");
    let log = gw.wait_log(|l| {
        l["message"] == "access"
            && l["grpc_status"] == "DEADLINE_EXCEEDED"
            && l["error"] == "the call's deadline passed"
    });
    assert_eq!(log["path"], "/inference.GRPCInferenceService/ModelInfer");
}

#[test]
fn an_unreachable_model_server_is_unavailable_to_grpc_callers() {
    let gw = Gateway::start(&grpc_config(&closed_port().to_string(), "none", ""));
    let v = triton(gw.addr, &["--mode", "unary", "--model", "echo"]);
    assert_eq!(status(&v), "StatusCode.UNAVAILABLE", "{v}");
    assert_eq!(v["message"], "upstream unavailable");
}

#[test]
fn grpc_callers_are_authenticated_and_held_to_policy_by_model() {
    let f = fixture();
    let server = KserveServer::start();
    let identity = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[[identity.issuer]]
issuer = "{issuer}"
audiences = ["{RESOURCE}"]
algorithms = ["RS256", "ES256"]
ca_file = "{ca}"

[identity.upstream_assertion]
key_file = "{key}"

[[policy.rule]]
id = "users-echo"
effect = "allow"
groups = ["ml-users"]
classes = ["inference", "metadata"]
models = ["echo", "stream"]
"#,
        issuer = f.idp.issuer(),
        ca = f.idp.ca_pem().display(),
        key = f.keys[3].display(),
    );
    let gw = Gateway::start(&grpc_config(
        &server.addr.to_string(),
        "required",
        &identity,
    ));
    let token = f.idp.token("svc-a", "secret-a");
    let bearer_token = bearer(&token);
    let auth = bearer_token.trim_start_matches("Bearer ");

    // No token, or a broken one: UNAUTHENTICATED, and nothing reaches the model server.
    let v = triton(gw.addr, &["--mode", "unary", "--model", "echo"]);
    assert_eq!(status(&v), "StatusCode.UNAUTHENTICATED", "{v}");
    let v = triton(
        gw.addr,
        &["--mode", "unary", "--model", "echo", "--token", "not.a.jwt"],
    );
    assert_eq!(status(&v), "StatusCode.UNAUTHENTICATED", "{v}");
    assert!(server.lines().is_empty(), "{:?}", server.lines());

    // Allowed model: the model server sees the gateway's identity assertion, not the token.
    let v = triton(
        gw.addr,
        &["--mode", "unary", "--model", "echo", "--token", auth],
    );
    assert_eq!(v["ok"], true, "{v}");
    let md = &v["metadata"];
    assert!(md["x-modelgate-identity"].is_string(), "{md}");
    assert!(md.get("authorization").is_none(), "{md}");
    let log = gw.wait_log(|l| l["message"] == "access" && l["grpc_status"] == "OK");
    assert_eq!(
        (&log["model"], &log["decision"], &log["rule"]),
        (&"echo".into(), &"allow".into(), &"users-echo".into())
    );

    // The model named inside the protobuf message decides: "fail" is not allowed.
    let v = triton(
        gw.addr,
        &["--mode", "unary", "--model", "fail", "--token", auth],
    );
    assert_eq!(status(&v), "StatusCode.PERMISSION_DENIED", "{v}");
    // Management is not inference: loading a model is denied by default.
    let v = triton(
        gw.addr,
        &["--mode", "load", "--model", "echo", "--token", auth],
    );
    assert_eq!(status(&v), "StatusCode.PERMISSION_DENIED", "{v}");
    // The KServe gRPC path is a gRPC call whatever the content type claims: the model is still
    // read from the message (a JSON content type does not dodge the model rule).
    let auth_header = format!("authorization: Bearer {auth}");
    let head = curl_grpc_with(
        gw.addr,
        "fail",
        &["-H", "content-type: application/json", "-H", &auth_header],
    );
    assert!(head.contains("grpc-status: 7\r\n"), "{head}");
    // A first message far larger than the look-ahead: the model is read from its front.
    let grpc_ct = [
        "-H",
        "content-type: application/grpc",
        "-H",
        auth_header.as_str(),
    ];
    let mut big = Vec::new();
    pb_len(&mut big, 1, b"echo");
    pb_len(&mut big, 7, &vec![b'x'; 300_000]);
    let echo_calls = || server.lines().iter().filter(|l| *l == "INFER echo").count();
    let before = echo_calls();
    let head = curl_grpc_message(gw.addr, &big, &grpc_ct);
    assert!(!head.contains("grpc-status: 7\r\n"), "{head}");
    let deadline = std::time::Instant::now() + GUARD;
    while echo_calls() == before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        echo_calls(),
        before + 1,
        "the large call reached the model server"
    );
    // The same message naming a second model after the tensor: the server would take the last
    // one, so the gateway stops the message before its end reaches the server.
    pb_len(&mut big, 1, b"fail");
    let head = curl_grpc_message(gw.addr, &big, &grpc_ct);
    assert!(head.contains("grpc-status: 3\r\n"), "{head}");
    // A streaming call on an allowed model works.
    let v = triton(
        gw.addr,
        &["--mode", "stream", "--model", "stream", "--token", auth],
    );
    assert_eq!(v["ok"], true, "{v}");

    // A bidirectional stream admitted for one model cannot switch to another mid-stream: the
    // message naming it never reaches the model server, and the call ends INVALID_ARGUMENT.
    let v = triton(
        gw.addr,
        &[
            "--mode",
            "stream",
            "--model",
            "stream,fail",
            "--token",
            auth,
        ],
    );
    assert_eq!(status(&v), "StatusCode.INVALID_ARGUMENT", "{v}");
    assert!(server.wait_line("STREAM stream"));

    let lines = server.lines();
    assert!(
        !lines
            .iter()
            .any(|l| l == "INFER fail" || l.starts_with("LOAD")),
        "{lines:?}"
    );
    let denied = gw.wait_log(|l| l["message"] == "access" && l["model"] == "fail");
    assert_eq!(denied["decision"], "deny");
}

#[test]
fn text_in_bytes_tensors_is_masked_in_unary_and_streaming_responses() {
    let server = KserveServer::start();
    let masking = r#"
[masking]
mode = "enforce"

[[masking.literals]]
id = "codename"
category = "internal"
action = "redact"
values = ["Project Nightjar"]
"#;
    let gw = Gateway::start(&grpc_config(&server.addr.to_string(), "none", masking));
    let text = "mail jane.doe@example.com about Project Nightjar, ok";
    // Without mask_requests the model gets the prompt as sent; its answer is masked.
    let v = triton(
        gw.addr,
        &["--mode", "unary", "--model", "echo", "--text", text],
    );
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(
        v["output"],
        "mail [REDACTED:email] about [REDACTED:internal], ok"
    );
    // Each streamed response message is masked on its own.
    let v = triton(
        gw.addr,
        &[
            "--mode",
            "stream",
            "--model",
            "stream",
            "--text",
            "Project Nightjar",
        ],
    );
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(
        v["outputs"],
        serde_json::json!([
            "[REDACTED:internal]#1",
            "[REDACTED:internal]#2",
            "[REDACTED:internal]#3"
        ])
    );
    let logs = gw.wait_log_count(2, |l| l["message"] == "access");
    assert!(
        logs.iter().all(|l| l["masked"].as_u64() >= Some(1)),
        "{logs:?}"
    );
    assert!(logs.iter().all(|l| l["grpc_status"] == "OK"), "{logs:?}");
}

#[test]
fn grpc_calls_are_recorded_with_their_messages_and_trailers() {
    let server = KserveServer::start();
    let dir = temp_dir("grpc-rec");
    let recording = format!(
        "[recording]\nenabled = true\ndir = \"{}\"\ndurability = \"event\"\n",
        dir.display()
    );
    let gw = Gateway::start(&grpc_config(&server.addr.to_string(), "none", &recording));
    let v = triton(
        gw.addr,
        &["--mode", "unary", "--model", "echo", "--text", "recorded"],
    );
    assert_eq!(v["ok"], true, "{v}");
    let log = gw.wait_log(|l| l["message"] == "access" && l["grpc_status"] == "OK");
    let id = log["request_id"].as_str().unwrap().to_owned();
    let out = modelgate_cli(&[
        "sessions",
        "export",
        "--dir",
        dir.to_str().unwrap(),
        &id,
        "--format",
        "jsonl",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let s: Value = serde_json::from_str(out.stdout_str().trim()).expect("one exported session");
    assert_eq!(
        s["start"]["request"]["path"], "/inference.GRPCInferenceService/ModelInfer",
        "{s}"
    );
    // The trailers that carried the call's status are in the recording.
    let trailers = s["trailers"].to_string();
    assert!(
        trailers.contains("grpc-status") && trailers.contains("\"0\""),
        "{s}"
    );
    // The response message (length-prefixed protobuf) is there as the client received it.
    let text = s.to_string();
    assert!(text.contains("recorded"), "{s}");
    let verify = modelgate_cli(&["verify", dir.to_str().unwrap()]);
    assert_eq!(verify.code, Some(0), "{}", verify.stdout_str());
}

#[test]
fn an_upstream_connection_that_stops_answering_pings_is_replaced() {
    let server = KserveServer::start();
    let config = grpc_config(&server.addr.to_string(), "none", "").replace(
        "protocol = \"h2c\"",
        "protocol = \"h2c\"\nh2_keepalive = \"1s\"",
    );
    let gw = Gateway::start(&config);

    let v = triton(
        gw.addr,
        &["--mode", "unary", "--model", "echo", "--text", "a"],
    );
    assert_eq!(v["ok"], true, "{v}");
    let first = server.client_ports();
    assert_eq!(first.len(), 1, "one multiplexed connection: {first:?}");

    // A hung server: the PING after a quiet second goes unanswered for another second.
    server.freeze(true);
    let dropped = gw.wait_log(|l| {
        l["message"] == "HTTP/2 upstream connection did not answer a PING; dropping it"
    });
    server.freeze(false);
    assert_eq!(dropped["upstream"], "triton", "{dropped}");

    // The next call goes out on a new connection and is answered.
    let v = triton(
        gw.addr,
        &["--mode", "unary", "--model", "echo", "--text", "b"],
    );
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["output"], "b");
    let now = server.client_ports();
    assert!(
        !now.is_empty() && now.iter().all(|p| !first.contains(p)),
        "the old connection {first:?} was replaced: {now:?}"
    );
}
