//! The body filters: SSE (OpenAI chat/completions/responses, TGI, llama.cpp), JSON and plain,
//! driven chunk by chunk exactly as the response path will. Pure: no gateway.

use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use modelgate::masking::{
    filter_for, Action, BuiltinSetting, LiteralList, MaskError, Masker, MaskingSection, Mode,
};
use serde_json::Value;

fn masker() -> Arc<Masker> {
    let section = MaskingSection {
        literals: vec![LiteralList {
            id: "codenames".into(),
            category: Some("internal".into()),
            action: Action::Redact,
            caseless: false,
            values: vec!["Project Nightingale".into()],
            file: None,
        }],
        ..MaskingSection::default()
    };
    Arc::new(Masker::compile(&section, Path::new(".")).expect("test config compiles"))
}

const SSE: &str = "text/event-stream";

/// Runs a body through a fresh filter in the given chunks.
fn run(
    m: &Arc<Masker>,
    content_type: &str,
    chunks: &[&[u8]],
    mode: Mode,
) -> (Vec<u8>, Result<(), MaskError>) {
    let mut filter = filter_for(m, Some(content_type.as_bytes()), mode);
    let mut out = BytesMut::new();
    for chunk in chunks {
        if let Err(e) = filter.on_chunk(chunk, &mut out) {
            return (out.to_vec(), Err(e));
        }
    }
    let end = filter.on_end(&mut out);
    (out.to_vec(), end)
}

fn whole(m: &Arc<Masker>, content_type: &str, body: &str) -> String {
    let (out, result) = run(m, content_type, &[body.as_bytes()], Mode::Enforce);
    result.expect("no block detector");
    String::from_utf8(out).expect("UTF-8")
}

fn chat_event(id: &str, content: &str) -> String {
    let v = serde_json::json!({"id": id, "object": "chat.completion.chunk", "model": "m",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]});
    format!("data: {v}\n\n")
}

fn chat_stream(pieces: &[&str]) -> String {
    let mut body = String::from(": keep-alive\n\n");
    body.push_str(&format!(
        "data: {}\n\n",
        serde_json::json!({"id": "c1", "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": null}]})
    ));
    for p in pieces {
        body.push_str(&chat_event("c1", p));
    }
    body.push_str(&format!(
        "data: {}\n\n",
        serde_json::json!({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    ));
    body.push_str("data: [DONE]\n\n");
    body
}

/// The concatenated `delta.content` of every event, in order.
fn chat_text(body: &str) -> String {
    data_events(body)
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

fn data_events(body: &str) -> impl Iterator<Item = Value> + '_ {
    body.split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter_map(|d| serde_json::from_str(d).ok())
}

#[test]
fn an_email_split_over_sse_events_is_masked_and_the_rest_flows() {
    let m = masker();
    let out = whole(
        &m,
        SSE,
        &chat_stream(&[
            "Contact jane.",
            "doe@exam",
            "ple.com",
            " or call ",
            "+1 415 555 2671",
            " today.",
        ]),
    );
    assert_eq!(
        chat_text(&out),
        "Contact [REDACTED:email] or call [REDACTED:phone] today."
    );
    assert!(!out.contains("jane") && !out.contains("2671"), "{out}");
    // Envelope preserved: ids, role, finish reason, comment, [DONE], and one event per input.
    assert!(out.starts_with(": keep-alive\n\n"));
    assert!(out.contains(r#""role":"assistant""#) && out.contains(r#""finish_reason":"stop""#));
    assert!(out.ends_with("data: [DONE]\n\n"));
    assert!(data_events(&out).all(|v| v["id"] == "c1"));
    let first = data_events(&out).nth(1).expect("first text event");
    assert_eq!(
        first["choices"][0]["delta"]["content"], "Contact ",
        "safe text goes out in its own event"
    );
}

#[test]
fn sse_masking_is_the_same_for_every_split_of_the_body() {
    let m = masker();
    let body = chat_stream(&[
        "card 4111 1111 ",
        "1111 1111 and ",
        "Project Night",
        "ingale, é ",
        "ok",
    ]);
    let expected = whole(&m, SSE, &body);
    assert_eq!(
        chat_text(&expected),
        "card ***************1111 and [REDACTED:internal], é ok"
    );
    let bytes = body.as_bytes();
    for k in 0..=bytes.len() {
        let (out, result) = run(&m, SSE, &[&bytes[..k], &bytes[k..]], Mode::Enforce);
        result.expect("masks");
        assert_eq!(String::from_utf8_lossy(&out), expected, "split at {k}");
    }
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(
        String::from_utf8_lossy(&run(&m, SSE, &singles, Mode::Enforce).0),
        expected
    );
}

#[test]
fn masked_text_is_the_same_however_it_is_split_into_events() {
    let m = masker();
    let text = "mail bob@example.com, key AKIAIOSFODNN7EXAMPLE, Project Nightingale.";
    let expected = chat_text(&whole(&m, SSE, &chat_stream(&[text])));
    for size in 1..12 {
        let pieces: Vec<String> = text
            .as_bytes()
            .chunks(size)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        assert_eq!(
            chat_text(&whole(&m, SSE, &chat_stream(&refs))),
            expected,
            "events of {size} bytes"
        );
    }
}

#[test]
fn events_without_text_pass_through_byte_identical() {
    let m = masker();
    let body = ": comment\r\n\r\nevent: ping\r\nid: 7\r\n\r\nretry: 100\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"},\"finish_reason\":null}]}\n\ndata: {\"usage\":{\"total_tokens\":3},   \"choices\":[]}\n\ndata: [DONE]\n\n";
    assert_eq!(whole(&m, SSE, body), body);
}

#[test]
fn a_token_event_keeps_its_bytes_around_the_masked_text() {
    // Unusual but valid formatting everywhere else: spaces, key order, escapes, number forms.
    let m = masker();
    let event = |content: &str| {
        format!(
            "id: 4\ndata: {{ \"model\" : \"caf\\u00e9\", \"created\":1.0e3, \"choices\": [ {{\"finish_reason\":null, \"delta\": {{\"content\": {content}}}, \"index\":0 }} ] }}\n\n"
        )
    };
    // Each text ends in `!`, which no detector can start with, so nothing is held over.
    let plain = event(r#""no secret \u00e9 here!""#);
    let body = format!("{plain}{}", event(r#""mail jane.doe@example.com now!""#));
    let out = whole(&m, SSE, &body);
    let expected = format!("{plain}{}", event(r#""mail [REDACTED:email] now!""#));
    assert_eq!(out, expected);
}

#[test]
fn texts_listed_out_of_byte_order_are_spliced_in_byte_order() {
    // `text` and `reasoning_content` come before `content` in the bytes; all three change.
    let m = masker();
    let body = "data: {\"choices\":[{\"text\":\"t jane.doe@example.com!\",\"delta\":{\"reasoning_content\":\"r Project Nightingale!\",\"content\":\"c john@example.org!\"},\"index\":0}]}\n\n";
    let out = whole(&m, SSE, body);
    assert_eq!(
        out,
        "data: {\"choices\":[{\"text\":\"t [REDACTED:email]!\",\"delta\":{\"reasoning_content\":\"r [REDACTED:internal]!\",\"content\":\"c [REDACTED:email]!\"},\"index\":0}]}\n\n"
    );
}

#[test]
fn reasoning_and_refusal_texts_are_masked_across_events_like_content() {
    let m = masker();
    let event = |field: &str, text: &str| {
        let v = serde_json::json!({"choices": [{"index": 0, "delta": {field: text}}]});
        format!("data: {v}\n\n")
    };
    let body = [
        event("reasoning", "the user is jane."),
        event("content", "Hello"),
        event("reasoning", "doe@example.com!"),
        event("refusal", "Project Night"),
        event("refusal", "ingale is secret!"),
    ]
    .concat();
    let out = whole(&m, SSE, &body);
    let text = |field: &str| -> String {
        data_events(&out)
            .filter_map(|v| v["choices"][0]["delta"][field].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(text("reasoning"), "the user is [REDACTED:email]!");
    assert_eq!(text("refusal"), "[REDACTED:internal] is secret!");
    assert_eq!(text("content"), "Hello");
}

#[test]
fn an_endless_event_fails_closed_instead_of_growing_the_buffer() {
    // A first event goes out; then a model server streams one `data:` line that never ends.
    let m = masker();
    let first = chat_event("c1", "Hi!");
    let chunk = vec![b'x'; 64 * 1024];
    let mut chunks: Vec<&[u8]> = vec![
        first.as_bytes(),
        b"data: {\"choices\":[{\"delta\":{\"content\":\"",
    ];
    chunks.extend(std::iter::repeat_n(&chunk[..], 100)); // 6.4 MiB
    let (out, result) = run(&m, SSE, &chunks, Mode::Enforce);
    assert!(
        matches!(result, Err(MaskError::EventTooLarge { .. })),
        "{result:?}"
    );
    let out = String::from_utf8(out).unwrap();
    assert!(out.starts_with(&first), "{out:.200}");
    assert!(
        out[first.len()..].starts_with("event: error\n"),
        "{:.200}",
        &out[first.len()..]
    );
    assert!(
        out.len() < first.len() + 1024,
        "none of the endless event went out"
    );
}

#[test]
fn a_multi_line_data_event_keeps_one_data_line_per_line() {
    let m = masker();
    let body = "id: 1\ndata: {\"choices\":[{\"index\":0,\ndata: \"delta\":{\"content\":\"mail jane.doe@example.com!\"}}]}\n\n";
    let out = whole(&m, SSE, body);
    assert_eq!(
        out,
        "id: 1\ndata: {\"choices\":[{\"index\":0,\ndata: \"delta\":{\"content\":\"mail [REDACTED:email]!\"}}]}\n\n"
    );
    let data: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    let event: Value = serde_json::from_str(&data.join("\n")).expect("still one JSON document");
    assert_eq!(
        event["choices"][0]["delta"]["content"],
        "mail [REDACTED:email]!"
    );
}

#[test]
fn held_text_gets_out_even_when_its_template_is_no_value() {
    // The byte reader takes an event with a number beyond f64 in a field without text; the
    // parsed path refuses it. The word held at its end must still reach the client.
    let m = masker();
    let body = "data: {\"big\":1e999,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ends with Project\"}}]}\n\ndata: [DONE]\n\n";
    let out = whole(&m, SSE, body);
    // The first event (spliced, its 1e999 kept) carries the text up to the held word; the word
    // comes in an event synthesized before [DONE] (the only one `chat_text` can parse).
    assert!(
        out.contains(r#"1e999,"choices":[{"index":0,"delta":{"content":"ends with "}}]}"#),
        "{out}"
    );
    assert_eq!(chat_text(&out), "Project", "{out}");
    assert!(out.ends_with("data: [DONE]\n\n"));
}

#[test]
fn text_held_at_the_end_goes_out_before_done() {
    let m = masker();
    let body = format!("{}data: [DONE]\n\n", chat_event("c9", "ends with Project"));
    let out = whole(&m, SSE, &body);
    assert_eq!(chat_text(&out), "ends with Project");
    assert!(out.ends_with("data: [DONE]\n\n"));
    assert_eq!(
        data_events(&out).count(),
        2,
        "one synthesized event carries the held word: {out}"
    );
}

#[test]
fn tool_call_arguments_completions_responses_tgi_and_llama_shapes_are_masked() {
    let m = masker();
    let tool = r#"data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"to\":\"bob@"}}]},"finish_reason":null}]}

data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"example.com\"}"}}]},"finish_reason":"tool_calls"}]}

"#;
    let out = whole(&m, SSE, tool);
    let args: String = data_events(&out)
        .filter_map(|v| {
            v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(args, r#"{"to":"[REDACTED:email]"}"#);

    let completions = "data: {\"choices\":[{\"index\":0,\"text\":\"ssn 123-45-\",\"finish_reason\":null}]}\n\ndata: {\"choices\":[{\"index\":0,\"text\":\"6789\",\"finish_reason\":\"length\"}]}\n\n";
    let out = whole(&m, SSE, completions);
    let text: String = data_events(&out)
        .filter_map(|v| v["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, "ssn [REDACTED:ssn]");

    let responses = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"item_id\":\"i\",\"content_index\":0,\"delta\":\"a@b.\"}\n\nevent: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"item_id\":\"i\",\"content_index\":0,\"delta\":\"co x\"}\n\nevent: response.output_text.done\ndata: {\"type\":\"response.output_text.done\",\"item_id\":\"i\",\"content_index\":0,\"text\":\"a@b.co x\"}\n\n";
    let out = whole(&m, SSE, responses);
    let deltas: String = data_events(&out)
        .filter_map(|v| v["delta"].as_str().map(str::to_string))
        .collect();
    assert_eq!(deltas, "[REDACTED:email] x");
    assert!(out.contains(r#""text":"[REDACTED:email] x""#), "{out}");
    assert!(!out.contains("a@b"), "{out}");

    let tgi = "data: {\"token\":{\"id\":1,\"text\":\"ip 10.0.\",\"special\":false},\"generated_text\":null}\n\ndata: {\"token\":{\"id\":2,\"text\":\"0.1\",\"special\":false},\"generated_text\":\"ip 10.0.0.1\"}\n\n";
    let out = whole(&m, SSE, tgi);
    let text: String = data_events(&out)
        .filter_map(|v| v["token"]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, "ip [REDACTED:ip_address]");
    assert!(!out.contains("10.0.0.1"), "{out}");

    let llama = "data: {\"content\":\"Project Night\",\"stop\":false}\n\ndata: {\"content\":\"ingale\",\"stop\":true}\n\n";
    let out = whole(&m, SSE, llama);
    let text: String = data_events(&out)
        .filter_map(|v| v["content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, "[REDACTED:internal]");
}

#[test]
fn a_block_ends_the_sse_stream_with_an_error_event() {
    let mut section = MaskingSection::default();
    section
        .builtins
        .insert("aws_access_key".into(), BuiltinSetting::Block);
    let m = Arc::new(Masker::compile(&section, Path::new(".")).expect("compiles"));
    let body = chat_stream(&["here: AKIAIOSF", "ODNN7EXAMPLE ok"]);
    let (out, result) = run(&m, SSE, &[body.as_bytes()], Mode::Enforce);
    assert!(
        matches!(result, Err(MaskError::Blocked { .. })),
        "{result:?}"
    );
    let out = String::from_utf8(out).expect("UTF-8");
    assert!(
        out.ends_with("\n\n")
            && out.contains("event: error\ndata: {\"error\":{\"type\":\"blocked\""),
        "{out}"
    );
    assert!(!out.contains("AKIA"), "{out}");
}

#[test]
fn detect_mode_passes_the_body_through_untouched_and_counts() {
    let m = masker();
    let body = chat_stream(&["mail a@b.co"]);
    let mut filter = filter_for(&m, Some(b"text/event-stream; charset=utf-8"), Mode::Detect);
    let mut out = BytesMut::new();
    filter
        .on_chunk(body.as_bytes(), &mut out)
        .expect("never fails");
    filter.on_end(&mut out).expect("never fails");
    assert_eq!(&out[..], body.as_bytes());
    assert_eq!(filter.verdict().detections.get("email"), Some(&1));
}

#[test]
fn json_strings_are_masked_and_the_document_stays_valid() {
    let m = masker();
    let body = r#"{"id":"x","choices":[{"message":{"role":"assistant","content":"write to bob\u0040example.com \"quoted\"\n\ud83d\ude00 Project Nightingale"}}],"a@b.co":1,"n":[1,"4111111111111111"]}"#;
    let out = whole(&m, "application/json", body);
    let v: Value = serde_json::from_str(&out).expect("still valid JSON");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "write to [REDACTED:email] \"quoted\"\n😀 [REDACTED:internal]"
    );
    assert_eq!(v["n"][1], "************1111");
    assert_eq!(v["a@b.co"], 1, "object keys are not values");
    assert!(out.starts_with(
        r#"{"id":"x","choices":[{"message":{"role":"assistant","content":"write to "#
    ));
    let bytes = body.as_bytes();
    for k in 0..=bytes.len() {
        assert_eq!(
            String::from_utf8_lossy(
                &run(
                    &m,
                    "application/json",
                    &[&bytes[..k], &bytes[k..]],
                    Mode::Enforce
                )
                .0
            ),
            out,
            "split at {k}"
        );
    }
}

#[test]
fn plain_text_is_scanned_as_bytes() {
    let m = masker();
    assert_eq!(
        whole(&m, "text/plain", "ping 192.168.1.1 now"),
        "ping [REDACTED:ip_address] now"
    );
    let (out, _) = run(
        &m,
        "application/octet-stream",
        &[b"gh", b"p_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 x"],
        Mode::Enforce,
    );
    assert_eq!(out, b"[REDACTED:credential] x");
}

// === gRPC: KServe v2 BYTES tensors ===

mod grpc {
    use super::*;
    use modelgate::grpc::wire::{put_len, put_varint};
    use modelgate::masking::filter_for_grpc;

    const INFER: &str = "/inference.GRPCInferenceService/ModelInfer";
    const STREAM: &str = "/inference.GRPCInferenceService/ModelStreamInfer";

    /// An output tensor: name, datatype, shape [n], optionally `contents.bytes_contents`.
    fn tensor(name: &str, datatype: &str, n: u64, contents: &[&str]) -> Vec<u8> {
        let mut t = Vec::new();
        put_len(&mut t, 1, name.as_bytes());
        put_len(&mut t, 2, datatype.as_bytes());
        t.push(3 << 3); // shape: one varint
        put_varint(&mut t, n);
        if !contents.is_empty() {
            let mut c = Vec::new();
            for s in contents {
                put_len(&mut c, 8, s.as_bytes());
            }
            put_len(&mut t, 5, &c);
        }
        t
    }

    /// Raw BYTES contents: 4-byte little-endian length, then the element.
    fn raw(elements: &[&str]) -> Vec<u8> {
        let mut r = Vec::new();
        for e in elements {
            r.extend_from_slice(&(e.len() as u32).to_le_bytes());
            r.extend_from_slice(e.as_bytes());
        }
        r
    }

    /// A ModelInferResponse: a BYTES output and an INT32 output with raw contents, and a
    /// BYTES output in `bytes_contents`.
    fn response(texts: &[&str], int_raw: &[u8], inline: &[&str]) -> Vec<u8> {
        let mut m = Vec::new();
        put_len(&mut m, 1, b"echo");
        put_len(&mut m, 5, &tensor("TEXT", "BYTES", texts.len() as u64, &[]));
        put_len(&mut m, 5, &tensor("IDS", "INT32", 1, &[]));
        put_len(
            &mut m,
            5,
            &tensor("INLINE", "BYTES", inline.len() as u64, inline),
        );
        put_len(&mut m, 6, &raw(texts));
        put_len(&mut m, 6, int_raw);
        m
    }

    fn framed(messages: &[Vec<u8>]) -> Vec<u8> {
        let mut body = Vec::new();
        for m in messages {
            body.push(0);
            body.extend_from_slice(&(m.len() as u32).to_be_bytes());
            body.extend_from_slice(m);
        }
        body
    }

    fn run_grpc(path: &str, body: &[u8], piece: usize) -> (Vec<u8>, Result<(), MaskError>) {
        let request = path.ends_with("#request");
        let path = path.trim_end_matches("#request");
        let mut filter = filter_for_grpc(&masker(), path, request, Mode::Enforce);
        let mut out = BytesMut::new();
        for chunk in body.chunks(piece) {
            if let Err(e) = filter.on_chunk(chunk, &mut out) {
                return (out.to_vec(), Err(e));
            }
        }
        let end = filter.on_end(&mut out);
        (out.to_vec(), end)
    }

    #[test]
    fn bytes_elements_are_masked_and_everything_else_is_kept_byte_for_byte() {
        // An INT32 tensor whose raw bytes happen to spell the codename: not text, not touched.
        let ints = b"Project Nightingale!".to_vec();
        let body = framed(&[
            response(
                &["see Project Nightingale", "nothing here"],
                &ints,
                &["Project Nightingale"],
            ),
            response(&[""], &ints, &[]),
        ]);
        let expected = framed(&[
            response(
                &["see [REDACTED:internal]", "nothing here"],
                &ints,
                &["[REDACTED:internal]"],
            ),
            response(&[""], &ints, &[]),
        ]);
        // Split anywhere (every piece size from 1 byte to the whole body): the same output.
        for piece in [1, 2, 3, 7, 64, body.len()] {
            let (out, end) = run_grpc(INFER, &body, piece);
            assert_eq!(end, Ok(()), "piece {piece}");
            assert_eq!(out, expected, "piece {piece}");
        }
    }

    #[test]
    fn stream_responses_mask_the_wrapped_response_and_the_error_message() {
        let mut wrapped = Vec::new();
        put_len(
            &mut wrapped,
            2,
            &response(&["Project Nightingale#1"], &[], &[]),
        );
        let mut error = Vec::new();
        put_len(&mut error, 1, b"failed on Project Nightingale");
        let mut want_wrapped = Vec::new();
        put_len(
            &mut want_wrapped,
            2,
            &response(&["[REDACTED:internal]#1"], &[], &[]),
        );
        let mut want_error = Vec::new();
        put_len(&mut want_error, 1, b"failed on [REDACTED:internal]");
        let (out, end) = run_grpc(STREAM, &framed(&[wrapped, error]), 5);
        assert_eq!(end, Ok(()));
        assert_eq!(out, framed(&[want_wrapped, want_error]));
    }

    #[test]
    fn what_cannot_be_read_is_not_let_through() {
        // Compressed: cannot be scanned.
        let mut compressed = framed(&[response(&["Project Nightingale"], &[], &[])]);
        compressed[0] = 1;
        let (out, end) = run_grpc(INFER, &compressed, 1000);
        assert!(end.is_err() && out.is_empty(), "{end:?}");
        // A raw BYTES element whose length runs past the tensor.
        let mut bad = Vec::new();
        put_len(&mut bad, 5, &tensor("TEXT", "BYTES", 1, &[]));
        put_len(&mut bad, 6, &[200, 0, 0, 0, b'x']);
        let (out, end) = run_grpc(INFER, &framed(&[bad]), 1000);
        assert!(end.is_err() && out.is_empty(), "{end:?}");
        // A body cut inside a message.
        let whole = framed(&[response(&["hello"], &[], &[])]);
        let (_, end) = run_grpc(INFER, &whole[..whole.len() - 1], 1000);
        assert!(end.is_err(), "{end:?}");
        // Other methods carry no model output: passed through as they are.
        let other = b"\x00\x00\x00\x00\x02\x08\x01".to_vec();
        let (out, end) = run_grpc("/inference.GRPCInferenceService/ServerLive", &other, 3);
        assert_eq!((out, end), (other, Ok(())));
    }

    #[test]
    fn prompts_in_bytes_inputs_are_masked_on_the_request_side() {
        // ModelInferRequest: model_name 1, inputs 5 (InferInputTensor, same layout), raw 7.
        let request = |texts: &[&str], inline: &[&str]| {
            let mut m = Vec::new();
            put_len(&mut m, 1, b"echo");
            put_len(
                &mut m,
                5,
                &tensor("PROMPT", "BYTES", texts.len() as u64, &[]),
            );
            put_len(
                &mut m,
                5,
                &tensor("INLINE", "BYTES", inline.len() as u64, inline),
            );
            put_len(&mut m, 7, &raw(texts));
            m
        };
        let body = framed(&[request(
            &["ask Project Nightingale"],
            &["Project Nightingale"],
        )]);
        let want = framed(&[request(
            &["ask [REDACTED:internal]"],
            &["[REDACTED:internal]"],
        )]);
        for path in [INFER, STREAM] {
            let (out, end) = run_grpc(&format!("{path}#request"), &body, 9);
            assert_eq!((out, end), (want.clone(), Ok(())), "{path}");
        }
    }

    #[test]
    fn a_worker_holds_at_most_its_budget_of_incomplete_messages() {
        // Each filter holds one incomplete message of almost 4 MiB (the per-message limit); the
        // worker's budget (64 MiB) runs out at the 17th, which fails closed.
        let m = masker();
        let len: u32 = 4 * 1024 * 1024 - 16;
        let mut prefix = vec![0u8];
        prefix.extend_from_slice(&len.to_be_bytes());
        let part = vec![0u8; len as usize - 1];
        let mut filters = Vec::new();
        let mut refused = None;
        for i in 0..20 {
            let mut f = filter_for_grpc(&m, INFER, false, Mode::Enforce);
            let mut out = BytesMut::new();
            f.on_chunk(&prefix, &mut out).unwrap();
            if let Err(e) = f.on_chunk(&part, &mut out) {
                refused = Some((i, e));
                break;
            }
            filters.push(f);
        }
        let (i, e) = refused.expect("the budget runs out");
        assert_eq!(i, 16, "{e:?}");
        assert!(matches!(e, MaskError::HoldExceeded { .. }), "{e:?}");
        // Dropped filters give their share back.
        filters.clear();
        let mut f = filter_for_grpc(&m, INFER, false, Mode::Enforce);
        let mut out = BytesMut::new();
        f.on_chunk(&prefix, &mut out).unwrap();
        assert!(f.on_chunk(&part, &mut out).is_ok());
    }
}
