//! Real clients through the gateway: curl (GET, a chunked `--data-binary` upload, `-N` SSE in
//! lockstep) and the official `openai` Python SDK streaming a chat completion from the
//! OpenAI-style mock (tests/clients/openai_stream.py). Skipped with a note when the tool is absent.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use support::http::{check_pattern, fill_pattern};
use support::*;

fn have(cmd: &str, args: &[&str]) -> bool {
    let ok = Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: `{cmd} {}` is not available", args.join(" "));
    }
    ok
}

fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("run curl")
}

#[test]
fn curl_get_receives_the_upstream_body() {
    if !have("curl", &["--version"]) {
        return;
    }
    let up = Upstream::ok("{\"data\":[{\"id\":\"m\"}]}");
    let gw = Gateway::start(&basic_config(&up.url(), ""));
    let out = curl(&[&format!("http://{}/v1/models", gw.addr)]);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"data\":[{\"id\":\"m\"}]}"
    );
    let (_, req) = &up.wait_requests(1)[0];
    assert!(req
        .head
        .header("user-agent")
        .is_some_and(|ua| ua.starts_with("curl/")));
}

#[test]
fn curl_chunked_upload_of_a_file_reaches_upstream_intact() {
    if !have("curl", &["--version"]) {
        return;
    }
    let size = 3 << 20;
    let dir = temp_dir("curl");
    let file = dir.join("body.bin");
    let mut data = vec![0u8; size];
    fill_pattern(0, &mut data);
    std::fs::write(&file, &data).unwrap();

    let up = Upstream::respond(|req| {
        let verdict = format!(
            "len={} bad={:?}",
            req.body.len(),
            check_pattern(0, &req.body)
        );
        response(200, &[], verdict.as_bytes())
    });
    let gw = Gateway::start(&basic_config(&up.url(), ""));
    let out = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("http://{}/v1/files", gw.addr),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("len={size} bad=None")
    );
    let (_, req) = &up.wait_requests(1)[0];
    assert_eq!(req.head.method(), "POST");
    assert!(req.head.is_chunked(), "upstream head {:?}", req.head);
    assert!(!req.head.has("expect"));
}

#[test]
fn curl_no_buffer_receives_sse_events_one_by_one() {
    if !have("curl", &["--version"]) {
        return;
    }
    let step = Lockstep::new();
    let up = sse_upstream(10, Pacing::Lockstep(step.clone()), SseFraming::Chunked);
    let gw = Gateway::start(&basic_config(&up.url(), ""));
    let mut child = Command::new("curl")
        .args([
            "-sS",
            "-N",
            "--max-time",
            "30",
            &format!("http://{}/v1/chat/completions", gw.addr),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn curl");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut events = 0;
    let mut current = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("read curl output");
        if line.is_empty() {
            assert_eq!(current.join("\n"), sse_event(events));
            current.clear();
            events += 1;
            step.advance(); // the upstream sends the next event only now
        } else {
            current.push(line);
        }
    }
    let status = child.wait().unwrap();
    assert_eq!(events, 10, "events received by curl");
    assert!(status.success(), "curl exit {status:?}");
}

#[test]
fn openai_python_sdk_streams_a_chat_completion_through_the_gateway() {
    if !have("python3", &["-c", "import openai"]) {
        return;
    }
    let up = openai_upstream(&[
        "Hello",
        ",",
        " world",
        "!",
        " Streamed",
        " through",
        " modelgate.",
    ]);
    let gw = Gateway::start(&basic_config(&up.url(), ""));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/openai_stream.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(format!("http://{}/v1", gw.addr))
        .arg("mock-model-1")
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "script failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Hello, world! Streamed through modelgate.\n"
    );
    let (_, req) = &up.wait_requests(1)[0];
    assert_eq!(req.head.start_line, "POST /v1/chat/completions HTTP/1.1");
    let body = req.body.clone();
    let json: serde_json::Value = serde_json::from_slice(&body).expect("SDK sent JSON");
    assert_eq!(json["model"], "mock-model-1");
    assert_eq!(json["stream"], true);
    assert_eq!(req.head.header("authorization"), Some("Bearer test-key"));
}
