//! Inline masking end to end, through the gateway process: OpenAI-style SSE with secrets split
//! over events (the `openai` Python SDK and a raw client), lockstep streaming that proves every
//! safe token goes out at once, JSON bodies with escapes, `block`, `detect`, request-side masking
//! and routes with masking off.
//!
//! Detectors used: the built-ins `email` (redact) and `credit_card` (partial: all but the last
//! four characters become `*`), a literal list `codename` (category `internal`, redact) and, where
//! a test says so, a `block` regex.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use support::*;

const MASKING: &str = r#"
[masking]
mode = "enforce"
hash_key = "masking-e2e-hash-key-0123456789"

[[masking.literals]]
id = "codename"
category = "internal"
action = "redact"
values = ["Project Nightjar", "Operation Bluebird"]
"#;

const BLOCK_REGEX: &str = r#"
[[masking.regex]]
id = "launch_code"
category = "restricted"
action = "block"
pattern = "LAUNCH-[0-9]{4}"
"#;

/// `MASKING` (+ `extra` detectors), one upstream `models`, and routes `(id, prefix, route keys)`.
fn config(upstream: &str, extra: &str, routes: &[(&str, &str, &str)]) -> String {
    let mut out = format!(
        "{MASKING}{extra}\n[[upstream]]\nname = \"models\"\nendpoints = [\"{upstream}\"]\n"
    );
    for (id, prefix, keys) in routes {
        out.push_str(&format!(
            "\n[[route]]\nid = \"{id}\"\npath_prefix = \"{prefix}\"\nupstream = \"models\"\nclass = \"inference\"\nauth = \"none\"\n{keys}\n"
        ));
    }
    out
}

/// One catch-all route with the default masking mode (enforce).
fn main_config(upstream: &str, extra: &str) -> String {
    config(upstream, extra, &[("main", "/", "")])
}

/// An email, a Luhn-valid card number and a codename, each split over several events.
const SPLIT_TOKENS: &[&str] = &[
    "Contact jane.",
    "doe@exam",
    "ple.com",
    " or pay with 4111 1111 ",
    "1111 11",
    "11 for Proj",
    "ect Nigh",
    "tjar",
    " today.",
];
const SPLIT_PLAIN: &str =
    "Contact jane.doe@example.com or pay with 4111 1111 1111 1111 for Project Nightjar today.";
const SPLIT_MASKED: &str =
    "Contact [REDACTED:email] or pay with ***************1111 for [REDACTED:internal] today.";

const STREAM_REQUEST: &str =
    r#"{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

fn post_json(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: test.local\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn request_id(resp_head: &Head) -> String {
    resp_head
        .header("x-request-id")
        .expect("x-request-id on the response")
        .to_string()
}

/// Reads a whole SSE response: head, then every event until the body ends (asserted complete).
fn read_sse(c: &mut Client) -> (Head, Vec<String>) {
    let head = c.read_head();
    let mut events = Vec::new();
    while let Some(e) = c.read_event() {
        events.push(e);
    }
    let (rest, _, complete) = c.finish();
    assert!(rest.is_empty(), "bytes after the last event: {rest:?}");
    assert!(complete, "SSE body ended without its terminal chunk");
    (head, events)
}

fn assert_streaming_head(head: &Head) {
    assert_eq!(head.status(), 200, "{head:?}");
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert!(
        head.is_chunked(),
        "masked SSE must go out chunked: {head:?}"
    );
    assert!(!head.has("content-length"), "{head:?}");
}

/// Checks the envelope of a masked chat stream: every data event is a well-formed chunk with the
/// upstream's id/object/model, the role event comes first and is untouched, the finish event and
/// `[DONE]` come last, in order, byte-identical. Returns the contents in order.
fn assert_chat_envelope(events: &[String]) -> Vec<String> {
    let upstream = chat_stream(&[]);
    assert!(events.len() >= 3, "too few events: {events:#?}");
    assert_eq!(events[0], upstream[0], "role event changed");
    assert_eq!(
        events[events.len() - 2],
        upstream[1],
        "finish event changed or moved"
    );
    assert_eq!(events[events.len() - 1], "data: [DONE]", "[DONE] last");
    let mut contents = Vec::new();
    for e in &events[..events.len() - 1] {
        let v = event_json(e).unwrap_or_else(|| panic!("event is not a JSON data event: {e:?}"));
        assert_eq!(v["id"], "chatcmpl-mock", "{e}");
        assert_eq!(v["object"], "chat.completion.chunk", "{e}");
        assert_eq!(v["model"], "mock-model", "{e}");
        assert_eq!(v["choices"][0]["index"], 0, "{e}");
        assert!(e.starts_with("data: {\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"mock-model\",\"choices\":[{\"index\":0,\"delta\":"),
            "key order / shape changed: {e}");
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            contents.push(c.to_string());
        }
    }
    let finishes: Vec<&String> = events
        .iter()
        .filter(|e| event_json(e).is_some_and(|v| v["choices"][0]["finish_reason"] == "stop"))
        .collect();
    assert_eq!(finishes.len(), 1, "exactly one finish event: {events:#?}");
    contents
}

// ───────────────────────────── 1. split secrets, SDK + raw ─────────────────────────────

on_both_drivers! {
    fn openai_sdk_receives_secrets_split_over_events_masked(driver) {
        if !have_openai_sdk() {
            return;
        }
        let up = script_upstream(Pacing::Every(Duration::from_millis(5)), |_| {
            Script::sse(&chat_stream(SPLIT_TOKENS))
        });
        let gw = Gateway::start_with(driver, &main_config(&up.url(), ""));
        let out = run_guarded(
            Command::new("python3")
                .arg(client_script("openai_chunks.py"))
                .arg(format!("http://{}/v1", gw.addr))
                .arg("mock-model")
                .arg("stream"),
            GUARD * 3,
        );
        assert_eq!(out.code, Some(0), "script failed:\n{}", out.stderr);
        let lines: Vec<Value> = out
            .stdout_str()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let (text, chunks) = lines.split_last().expect("script output");
        assert_eq!(text["text"], SPLIT_MASKED, "text the SDK assembled");
        assert!(!out.stdout_str().contains("jane"), "a secret leaked to the SDK");
        assert!(!out.stdout_str().contains("Nigh"), "a secret leaked to the SDK");
        for c in chunks {
            assert_eq!(c["id"], "chatcmpl-mock", "{c}");
            assert_eq!(c["model"], "mock-model", "{c}");
            assert_eq!(c["object"], "chat.completion.chunk", "{c}");
        }
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "stop", "{last}");
        for c in &chunks[..chunks.len() - 1] {
            assert!(c["choices"][0]["finish_reason"].is_null(), "early finish: {c}");
        }
        let (_, req) = &up.wait_requests(1)[0];
        assert_eq!(req.head.start_line, "POST /v1/chat/completions HTTP/1.1");
        let line = gw.wait_log(|l| l["message"] == "access");
        assert_eq!(line["masked"], 3, "email + card + codename: {line}");
        assert_eq!(line["outcome"], "Complete", "{line}");
    }

    fn raw_client_sees_ids_roles_finish_and_done_preserved_in_order(driver) {
        let up = script_upstream(Pacing::Burst, |_| Script::sse(&chat_stream(SPLIT_TOKENS)));
        let gw = Gateway::start_with(driver, &main_config(&up.url(), ""));
        let mut c = gw.connect();
        c.send(post("/v1/chat/completions", STREAM_REQUEST));
        let (head, events) = read_sse(&mut c);
        assert_streaming_head(&head);
        let contents = assert_chat_envelope(&events);
        assert_eq!(contents.concat(), SPLIT_MASKED, "contents in order: {contents:#?}");
        let raw = c.received();
        for secret in ["jane", "doe@", "exam", "4111", "Nigh", "Proj"] {
            assert!(!contains(&raw, secret.as_bytes()), "{secret:?} leaked: {:?}", String::from_utf8_lossy(&raw));
        }
        // Every upstream text event has exactly one counterpart, in order; text still held when
        // the choice finished (`today.` could still grow into an email) comes in one event
        // synthesized just before the finish event.
        assert_eq!(events.len(), chat_stream(SPLIT_TOKENS).len() + 1, "{events:#?}");
        assert_eq!(contents.last().map(String::as_str), Some("today."), "{contents:#?}");
        let line = gw.access_log(&request_id(&head));
        assert_eq!(line["masked"], 3, "{line}");
        assert_eq!(line["status"], 200, "{line}");
        // The connection is still usable: the stream ended properly.
        c.send(post("/v1/chat/completions", STREAM_REQUEST));
        let (_, again) = read_sse(&mut c);
        assert_eq!(again, events, "same stream, same masked events");
    }
}

// ───────────────────────────── 2. lockstep: safe tokens go out at once ─────────────────

/// Upstream tokens and the exact `delta.content` the client must get for each, in the same
/// lockstep step. "" = wholly held (could still be part of a secret); a prefix = released up to
/// where a secret could start; a token after a completed secret carries the replacement first.
const LOCKSTEP: &[(&str, &str)] = &[
    ("Hello there, ", "Hello there, "),
    ("the weather is fine, ", "the weather is fine, "),
    ("write to jane.", "write to "),
    ("doe@exam", ""),
    ("ple.com", ""),
    (" now, ", "[REDACTED:email] now, "),
    ("please ", "please "),
    ("pay 4111 1111 ", "pay "),
    ("1111 1111", ""),
    (", thanks, ", "***************1111, thanks, "),
    ("and ", "and "),
    ("Project ", ""),
    // Observed: the complete literal is still held here although no detector can extend
    // "Project Nightjar" (the literal prefix check counts a whole literal as a prefix of itself);
    // over-holding costs one event of latency, never a leak. Reported; a fix that releases the
    // replacement in this step must move it here from the next one.
    ("Nightjar", ""),
    (" is secret, ", "[REDACTED:internal] is secret, "),
    ("bye, ", "bye, "),
];

on_both_drivers! {
    fn every_safe_token_arrives_in_its_own_lockstep_step(driver) {
        let step = Lockstep::new();
        let tokens: Vec<&str> = LOCKSTEP.iter().map(|(t, _)| *t).collect();
        let upstream_events = chat_stream(&tokens);
        let script = Script::sse(&upstream_events);
        let up = script_upstream(Pacing::Lockstep(step.clone()), move |_| script.clone());
        let gw = Gateway::start_with(driver, &main_config(&up.url(), ""));
        let mut c = gw.connect();
        c.send(post("/v1/chat/completions", STREAM_REQUEST));
        let head = c.read_head();
        assert_streaming_head(&head);

        // Upstream event i goes out only once the client holds the gateway's event for i-1: a
        // gateway that buffers never gets the next event, the upstream gives up after the guard
        // and the read below fails.
        let mut got = Vec::new();
        for i in 0..upstream_events.len() {
            let e = c.read_event().unwrap_or_else(|| panic!("stream ended before event {i}"));
            got.push(e);
            step.advance();
        }
        assert_eq!(c.read_event(), None, "events after [DONE]: {got:#?}");
        let (_, _, complete) = c.finish();
        assert!(complete);

        assert_eq!(got[0], upstream_events[0], "role event");
        let mut empty = Vec::new();
        let mut partial = Vec::new();
        for (i, (token, want)) in LOCKSTEP.iter().enumerate() {
            let e = &got[i + 1];
            let content = event_content(e).unwrap_or_else(|| panic!("event {} has no content: {e}", i + 1));
            assert_eq!(content, *want, "step {}: token {token:?} gave {e}", i + 1);
            if content.is_empty() {
                empty.push(i + 1);
            } else if !content.ends_with(token) {
                partial.push(i + 1);
            }
            // Same envelope as the upstream event, only the content differs.
            assert_eq!(e, &chat_event(json!({ "content": want }), Value::Null), "step {}", i + 1);
        }
        // Holds observed: wholly held while a secret was still open; released up to the
        // possible start of one.
        assert_eq!(empty, vec![4, 5, 9, 12, 13], "wholly held steps");
        assert_eq!(partial, vec![3, 8], "partly held steps");
        assert_eq!(got[got.len() - 2], upstream_events[upstream_events.len() - 2], "finish event");
        assert_eq!(got[got.len() - 1], "data: [DONE]");
        assert_eq!(got.len(), upstream_events.len(), "no synthesized events: nothing was held at the end");
        let line = gw.access_log(&request_id(&head));
        assert_eq!(line["masked"], 3, "{line}");
    }
}

// ───────────────────────────── 3. JSON bodies ─────────────────────────────

/// A non-streamed completion with secrets in values (plain, behind `\"`, `\n`, a `\u0040`
/// escape, next to a surrogate pair) and in keys (never masked); split inside escapes.
const JSON_PIECES: &[&str] = &[
    r#"{"id":"chatcmpl-json","object":"chat.completion","created":0,"model":"mock-model","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"Mail \"jane.doe@exa"#,
    r#"mple.com\"\nor bob\u00"#,
    r#"40example.org, card 4111-1111-"#,
    r#"1111-1111.\tBye \u00e9\ud83d"#,
    r#"\ude00 \\ done"}}],"jane.doe@exam"#,
    r#"ple.com":"the key stays","notes":["Project Night"#,
    r#"jar","plain \"quoted\" text",{"Project Nightjar":"Operation Bluebird"}],"count":4111111111111111}"#,
];
const JSON_CONTENT_MASKED: &str =
    "Mail \"[REDACTED:email]\"\nor [REDACTED:email], card ***************1111.\tBye \u{e9}\u{1F600} \\ done";

fn json_upstream() -> Upstream {
    script_upstream(Pacing::Every(Duration::from_millis(10)), |_| {
        let pieces: Vec<&[u8]> = JSON_PIECES.iter().map(|p| p.as_bytes()).collect();
        Script::length("application/json", &pieces)
    })
}

fn assert_masked_json(body: &[u8]) {
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "masked body is not valid JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    });
    assert_eq!(
        v["choices"][0]["message"]["content"], JSON_CONTENT_MASKED,
        "{v}"
    );
    assert_eq!(
        v["jane.doe@example.com"], "the key stays",
        "keys are not masked: {v}"
    );
    assert_eq!(v["notes"][0], "[REDACTED:internal]", "{v}");
    assert_eq!(v["notes"][1], "plain \"quoted\" text", "{v}");
    assert_eq!(
        v["notes"][2]["Project Nightjar"], "[REDACTED:internal]",
        "{v}"
    );
    assert_eq!(
        v["count"], 4111111111111111u64,
        "numbers are not strings: {v}"
    );
    assert_eq!(v["id"], "chatcmpl-json");
    // Untouched parts are byte-identical.
    for verbatim in [
        r#"{"id":"chatcmpl-json","object":"chat.completion","created":0,"model":"mock-model","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":""#,
        r#""jane.doe@example.com":"the key stays","notes":[""#,
        r#""plain \"quoted\" text",{"Project Nightjar":""#,
        r#"],"count":4111111111111111}"#,
    ] {
        assert!(
            contains(body, verbatim.as_bytes()),
            "{verbatim:?} not verbatim in {:?}",
            String::from_utf8_lossy(body)
        );
    }
    for leak in [
        "jane.doe@example.com\\\"",
        "bob",
        "u0040",
        "4111-",
        "Bluebird",
        "\"Project Nightjar\",",
        "Night\"",
    ] {
        assert!(
            !contains(body, leak.as_bytes()),
            "{leak:?} leaked: {:?}",
            String::from_utf8_lossy(body)
        );
    }
}

on_both_drivers! {
    fn json_response_stays_valid_and_only_values_are_masked(driver) {
        let up = json_upstream();
        let gw = Gateway::start_with(driver, &main_config(&up.url(), ""));
        let upstream_len = JSON_PIECES.concat().len();

        // HTTP/1.1: the length changed, so the body goes chunked (no stale Content-Length).
        let resp = one_shot(gw.addr, post("/v1/chat/completions", r#"{"model":"mock-model"}"#));
        assert_eq!(resp.status(), 200, "{:?}", resp.head);
        assert!(resp.complete, "body cut short");
        assert!(resp.head.is_chunked(), "{:?}", resp.head);
        assert!(!resp.head.has("content-length"), "stale Content-Length: {:?}", resp.head);
        assert_eq!(resp.header("content-type"), Some("application/json"));
        assert_masked_json(&resp.body);
        assert_ne!(resp.body.len(), upstream_len);
        let line = gw.access_log(&request_id(&resp.head));
        assert_eq!(line["masked"], 5, "2 emails + card + 2 codenames in values: {line}");

        // HTTP/1.0: no chunked; the body is delimited by the close (or by a correct length).
        let mut c = gw.connect();
        c.send("POST /v1/chat/completions HTTP/1.0\r\nHost: test.local\r\nContent-Length: 2\r\n\r\n{}");
        let resp = c.read_response();
        assert_eq!(resp.status(), 200, "{:?}", resp.head);
        assert!(!resp.head.is_chunked(), "chunked to an HTTP/1.0 client: {:?}", resp.head);
        if let Some(n) = resp.head.content_length() {
            assert_eq!(n as usize, resp.body.len(), "wrong Content-Length");
        }
        assert!(resp.complete);
        assert_masked_json(&resp.body);
    }
}

#[test]
fn openai_sdk_parses_a_masked_json_completion() {
    if !have_openai_sdk() {
        return;
    }
    let up = json_upstream();
    let gw = Gateway::start(&main_config(&up.url(), ""));
    let out = run_guarded(
        Command::new("python3")
            .arg(client_script("openai_chunks.py"))
            .arg(format!("http://{}/v1", gw.addr))
            .arg("mock-model")
            .arg("json"),
        GUARD * 3,
    );
    assert_eq!(out.code, Some(0), "script failed:\n{}", out.stderr);
    let v: Value = serde_json::from_str(out.stdout_str().trim()).expect("SDK output");
    assert_eq!(
        v["choices"][0]["message"]["content"], JSON_CONTENT_MASKED,
        "{v}"
    );
    assert_eq!(v["id"], "chatcmpl-json");
}

// ───────────────────────────── 4. block ─────────────────────────────

const BLOCK_TOKENS: &[&str] = &[
    "Here is ",
    "the code, ",
    "LAUNCH-",
    "12",
    "34, and",
    " then more",
    " text nobody sees",
];
const BLOCKED_EVENT: &str = "event: error\ndata: {\"error\":{\"type\":\"blocked\",\"message\":\"response blocked by masking policy (detector launch_code, category restricted)\"}}";

on_both_drivers! {
    fn block_ends_the_sse_stream_with_an_error_event_and_closes(driver) {
        let step = Lockstep::new();
        let events = chat_stream(BLOCK_TOKENS);
        let script = Script::sse(&events);
        let up = script_upstream(Pacing::Lockstep(step.clone()), move |_| script.clone());
        let gw = Gateway::start_with(driver, &main_config(&up.url(), BLOCK_REGEX));
        let mut c = gw.connect();
        c.send(post("/v1/chat/completions", STREAM_REQUEST));
        let head = c.read_head();
        assert_streaming_head(&head);
        let mut got = Vec::new();
        while let Some(e) = c.read_event() {
            let last = e.starts_with("event: error");
            got.push(e);
            step.advance();
            if last {
                break;
            }
            assert!(got.len() < events.len(), "stream not blocked: {got:#?}");
        }
        let want = vec![
            events[0].clone(),
            chat_event(json!({"content": "Here is "}), Value::Null),
            chat_event(json!({"content": "the code, "}), Value::Null),
            chat_event(json!({"content": ""}), Value::Null),
            chat_event(json!({"content": ""}), Value::Null),
            BLOCKED_EVENT.to_string(),
        ];
        assert_eq!(got, want);
        // The body then ends properly (terminal chunk), nothing more, and the connection closes,
        // even though the upstream goes on sending.
        step.advance();
        assert_eq!(c.read_event(), None, "events after the error event");
        let (rest, _, complete) = c.finish();
        assert!(rest.is_empty() && complete, "rest {rest:?} complete {complete}");
        let after = c.wait_closed();
        assert!(after.is_empty(), "bytes after the blocked stream: {:?}", String::from_utf8_lossy(&after));
        let raw = c.received();
        for leak in ["LAUNCH", "1234", "then more", "nobody"] {
            assert!(!contains(&raw, leak.as_bytes()), "{leak:?} reached the client");
        }
        let line = gw.access_log(&request_id(&head));
        assert_eq!(line["outcome"], "Blocked", "{line}");
        assert_eq!(line["status"], 200, "{line}");
    }
}

#[test]
fn block_in_a_burst_stops_at_the_secret_and_keeps_what_was_safe_before_it() {
    let up = script_upstream(Pacing::Burst, |_| Script::sse(&chat_stream(BLOCK_TOKENS)));
    let gw = Gateway::start(&main_config(&up.url(), BLOCK_REGEX));
    let mut c = gw.connect();
    c.send(post("/v1/chat/completions", STREAM_REQUEST));
    let (head, events) = read_sse(&mut c);
    assert_streaming_head(&head);
    assert_eq!(
        events.last().map(String::as_str),
        Some(BLOCKED_EVENT),
        "{events:#?}"
    );
    let contents: Vec<String> = events.iter().filter_map(|e| event_content(e)).collect();
    assert_eq!(contents.concat(), "Here is the code, ", "{events:#?}");
    assert!(
        events
            .iter()
            .all(|e| !e.contains("finish_reason\":\"stop") && !e.contains("[DONE]")),
        "events after the block: {events:#?}"
    );
    let after = c.wait_closed();
    assert!(after.is_empty(), "{after:?}");
    assert_eq!(gw.access_log(&request_id(&head))["outcome"], "Blocked");
}

/// A non-streamed body blocked by masking: acceptable are a 403 `blocked` error (when nothing
/// went out yet) or the 200 head with the body cut short (no terminal chunk). Never the secret,
/// never a body that looks complete, never a connection closed without any answer.
fn assert_blocked_body(gw: &Gateway, mut c: Client) {
    let resp = c
        .try_read_response()
        .unwrap_or_else(|e| panic!("reading the response failed: {e}"))
        .unwrap_or_else(|| {
            panic!(
                "the gateway closed the connection without any response (no head, no error); received {:?}",
                String::from_utf8_lossy(&c.received())
            )
        });
    assert!(
        !contains(&c.received(), b"LAUNCH"),
        "secret reached the client"
    );
    match resp.status() {
        403 => assert_error(&resp, 403, "blocked"),
        200 => assert!(
            !resp.complete,
            "a blocked body must not look complete: {:?}",
            resp.body_str()
        ),
        s => panic!("unexpected status {s}: {:?}", resp.head),
    }
    let _ = c.wait_closed();
    assert_eq!(gw.access_log(&request_id(&resp.head))["outcome"], "Blocked");
}

#[test]
fn block_in_a_json_body_never_delivers_a_complete_looking_body() {
    let body = r#"{"choices":[{"message":{"content":"the code is LAUNCH-1234, ok"}}]}"#;
    let up = script_upstream(Pacing::Burst, move |_| {
        Script::length("application/json", &[body.as_bytes()])
    });
    let gw = Gateway::start(&main_config(&up.url(), BLOCK_REGEX));
    let mut c = gw.connect();
    c.send(post("/v1/chat/completions", "{}"));
    assert_blocked_body(&gw, c);
}

#[test]
fn block_in_a_plain_text_body_never_delivers_a_complete_looking_body() {
    let up = script_upstream(Pacing::Burst, |_| {
        Script::length(
            "text/plain",
            &[b"safe words first, then LAUNCH-1234, then more"],
        )
    });
    let gw = Gateway::start(&main_config(&up.url(), BLOCK_REGEX));
    let mut c = gw.connect();
    c.send(get("/v1/text"));
    assert_blocked_body(&gw, c);
}

// ───────────────────────────── 5–7. detect, request side, off ─────────────────────────────

fn mode_routes(up: &str) -> String {
    config(
        up,
        "",
        &[
            ("detect", "/detect/", "masking = \"detect\""),
            ("off", "/off/", "masking = \"off\""),
            ("prompt", "/prompt/", "mask_requests = true"),
            ("main", "/", ""),
        ],
    )
}

/// Answers `/…/sse` with the split-secret stream and anything else with the JSON body; `/…/echo`
/// with a small text.
fn mixed_upstream() -> Upstream {
    script_upstream(Pacing::Every(Duration::from_millis(2)), |req| {
        let target = req.head.target();
        if target.ends_with("/sse") {
            Script::sse(&chat_stream(SPLIT_TOKENS))
        } else if target.ends_with("/echo") {
            Script::length("text/plain", &[b"ok"])
        } else {
            let pieces: Vec<&[u8]> = JSON_PIECES.iter().map(|p| p.as_bytes()).collect();
            Script::length("application/json", &pieces)
        }
    })
}

on_both_drivers! {
    fn detect_mode_passes_bytes_through_and_counts(driver) {
        let up = mixed_upstream();
        let gw = Gateway::start_with(driver, &mode_routes(&up.url()));
        let want_sse = Script::sse(&chat_stream(SPLIT_TOKENS)).body();

        let resp = one_shot(gw.addr, post("/detect/v1/sse", STREAM_REQUEST));
        assert_eq!(resp.status(), 200);
        assert!(resp.complete);
        assert_eq!(resp.body_str(), String::from_utf8_lossy(&want_sse), "detect mode changed the stream");
        let line = gw.access_log(&request_id(&resp.head));
        assert_eq!(line["masked"], 3, "{line}");
        assert_eq!(line["route"], "detect", "{line}");

        let resp = one_shot(gw.addr, post("/detect/v1/json", "{}"));
        assert_eq!(resp.body, JSON_PIECES.concat().as_bytes(), "detect mode changed the JSON");
        assert_eq!(resp.head.content_length(), Some(JSON_PIECES.concat().len() as u64), "detect mode keeps Content-Length: {:?}", resp.head);
        let line = gw.access_log(&request_id(&resp.head));
        assert_eq!(line["masked"], 5, "{line}");
    }

    fn request_bodies_are_masked_before_the_upstream_sees_them(driver) {
        let up = mixed_upstream();
        let gw = Gateway::start_with(driver, &mode_routes(&up.url()));
        let prompt = json!({
            "model": "mock-model",
            "messages": [{"role": "user", "content": "I am jane.doe@example.com, card 4111 1111 1111 1111, on Project Nightjar."}],
            "jane.doe@example.com": "key"
        })
        .to_string();

        let resp = one_shot(gw.addr, post_json("/prompt/v1/echo", &prompt));
        assert_eq!(resp.status(), 200, "{:?} {}", resp.head, resp.body_str());
        assert_eq!(resp.body_str(), "ok");
        let (_, req) = up.wait_requests(1).pop().unwrap();
        assert!(req.complete);
        let sent: Value = serde_json::from_slice(&req.body).unwrap_or_else(|e| {
            panic!("upstream got invalid JSON ({e}): {:?}", String::from_utf8_lossy(&req.body))
        });
        assert_eq!(
            sent["messages"][0]["content"],
            "I am [REDACTED:email], card ***************1111, on [REDACTED:internal].",
            "{sent}"
        );
        assert_eq!(sent["jane.doe@example.com"], "key", "keys stay");
        assert!(!contains(&up.received_all(), b"4111 1111"), "card reached the upstream");
        if let Some(n) = req.head.content_length() {
            assert_eq!(n as usize, req.body.len(), "stale Content-Length upstream");
        }
        let line = gw.access_log(&request_id(&resp.head));
        assert_eq!(line["masked"], 3, "{line}");

        // A route without mask_requests forwards the prompt untouched, length and all.
        let resp = one_shot(gw.addr, post_json("/v1/echo", &prompt));
        assert_eq!(resp.status(), 200);
        let (_, req) = up.wait_requests(2).pop().unwrap();
        assert_eq!(req.body, prompt.as_bytes(), "unmasked route changed the prompt");
        assert_eq!(req.head.content_length(), Some(prompt.len() as u64));
    }

    fn masking_off_route_is_untouched(driver) {
        let up = mixed_upstream();
        let gw = Gateway::start_with(driver, &mode_routes(&up.url()));
        let resp = one_shot(gw.addr, post("/off/v1/sse", STREAM_REQUEST));
        assert_eq!(resp.body, Script::sse(&chat_stream(SPLIT_TOKENS)).body(), "off route changed the stream");
        assert!(resp.body_str().contains("jane.doe@example.com") || resp.body_str().contains("doe@exam"));
        let line = gw.access_log(&request_id(&resp.head));
        assert_eq!(line["masked"], 0, "{line}");
        assert_eq!(line["route"], "off");

        let resp = one_shot(gw.addr, post("/off/v1/json", "{}"));
        assert_eq!(resp.body, JSON_PIECES.concat().as_bytes());
        assert_eq!(resp.head.content_length(), Some(JSON_PIECES.concat().len() as u64), "{:?}", resp.head);
        assert_eq!(gw.access_log(&request_id(&resp.head))["masked"], 0);

        // And the same upstream through the enforcing route is masked (the detectors are live).
        let resp = one_shot(gw.addr, post("/v1/json", "{}"));
        assert_masked_json(&resp.body);
    }
}

#[test]
fn plain_text_bodies_are_masked_as_bytes() {
    let up = script_upstream(Pacing::Every(Duration::from_millis(5)), |_| Script {
        status: 200,
        content_type: "text/plain; charset=utf-8".into(),
        framing: BodyFraming::Chunked,
        pieces: SPLIT_PLAIN
            .as_bytes()
            .chunks(3)
            .map(|c| c.to_vec())
            .collect(),
    });
    let gw = Gateway::start(&main_config(&up.url(), ""));
    let resp = one_shot(gw.addr, get("/v1/text"));
    assert!(resp.complete);
    assert_eq!(resp.body_str(), SPLIT_MASKED);
}
