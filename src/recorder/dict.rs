//! The zstd dictionary that gives a segment's first frames something to refer to.
//!
//! A 250-byte SSE chunk compressed alone barely shrinks: zstd has no history to match against.
//! Primed with the text such chunks are made of (the OpenAI-style envelope, common headers and
//! our own event field names), a frame only pays for what is new in it. Streamed records (event
//! durability) and interval batches soon have their own history, so the dictionary matters most
//! at the start of each record. It is copied into every segment header, so a segment stays
//! readable whatever later versions put here (segments written by earlier versions carry a
//! dictionary with entropy tables, which readers load the same way); changing it needs no format
//! bump. zstd weighs recent dictionary bytes as cheaper matches, so the commonest text comes
//! last.

/// The dictionary written into new segments.
pub const DEFAULT: &[u8] = concat!(
    // Metadata events (JSON), written once or twice per session.
    r#"{"request_id":"","connection_id":0,"worker_id":0,"wall_time_us":17"#,
    r#","identity":{"subject":"","groups":[],"issuer":"https://"},"client_addr":"127.0.0.1:"#,
    r#","route":"","endpoint_class":"inference","model":"","decision":{"action":"allow","rule":null}"#,
    r#","approval_id":null,"request":{"method":"POST","path":"/v1/chat/completions","headers":[["host",""],"#,
    r#"["authorization","Bearer [redacted]"],["content-type","application/json"],["accept","text/event-stream"],"#,
    r#"["user-agent",""],["content-length",""],["x-request-id",""]]},"record_request_body":false}"#,
    r#"{"offset_us":,"status":200,"headers":[["content-type","text/event-stream; charset=utf-8"],"#,
    r#"["transfer-encoding","chunked"],["cache-control","no-cache"],["connection","keep-alive"],"#,
    r#"["date",""],["server","uvicorn"]],"upstream":""}"#,
    r#"{"offset_us":,"reason":"complete","status":200,"masking":{},"timing":{"gateway_us":,"upstream_ttfb_us":,"total_us":},"#,
    r#""bytes_in":,"bytes_out":,"error":null}"#,
    // Non-streaming completions.
    r#"{"id":"chatcmpl-","object":"chat.completion","created":17,"model":"","choices":[{"index":0,"#,
    r#""message":{"role":"assistant","content":""},"logprobs":null,"finish_reason":"stop"}],"#,
    r#""usage":{"prompt_tokens":,"completion_tokens":,"total_tokens":}}"#,
    r#"{"model":"","messages":[{"role":"system","content":""},{"role":"user","content":""}],"stream":true,"max_tokens":,"temperature":}"#,
    // SSE chunks: the bulk of every stream, so last.
    "data: [DONE]\n\n",
    r#"data: {"id":"cmpl-","object":"text_completion","created":17,"model":"","choices":[{"index":0,"text":"","logprobs":null,"finish_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-","object":"chat.completion.chunk","created":17,"model":"","system_fingerprint":"fp_","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-","object":"chat.completion.chunk","created":17,"model":"","system_fingerprint":"fp_","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-","object":"chat.completion.chunk","created":17,"model":"","choices":[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-","object":"chat.completion.chunk","created":17,"model":"","system_fingerprint":"fp_","choices":[{"index":0,"delta":{"content":" the"},"logprobs":null,"finish_reason":null}]}"#,
    "\n\n",
)
.as_bytes();
