//! The zstd dictionary that gives tiny one-event frames something to refer to.
//!
//! A 250-byte SSE chunk compressed alone barely shrinks: zstd has no history to match against.
//! Primed with the text such chunks are made of (the OpenAI-style envelope, common headers and
//! our own event field names), a frame only pays for what is new in it: the ids, the timestamp
//! and the few words of content. The dictionary is copied into every segment header, so a
//! segment stays readable whatever later versions put here; changing it needs no format bump.
//! zstd weighs recent dictionary bytes as cheaper matches, so the commonest text comes last.
//!
//! New segments get [`finalized`]: the same content plus zstd's entropy tables, computed from
//! synthetic record payloads. A frame of a few hundred bytes then reuses the dictionary's
//! Huffman and FSE tables instead of building its own (measured with `bench/record_bench.rs`:
//! table building was most of the append cost, and the tables most of a tiny frame's size).
//! The samples are generated here from the shapes above, not taken from the benchmark's
//! transcript, so the benchmark does not grade its own answers.

use crate::recorder::codec;
use crate::recorder::config::Durability;

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

/// The dictionary for a writer's new segments. Event durability writes one small frame per
/// chunk, which the entropy tables serve; interval batches are large frames that build better
/// tables of their own (with the tables they came out 20 % larger in `bench/record_bench.rs`).
pub fn for_writes(durability: Durability, level: i32) -> Vec<u8> {
    match durability {
        Durability::Event => finalized(level),
        Durability::Interval { .. } => DEFAULT.to_vec(),
    }
}

/// [`DEFAULT`] with entropy tables for compression `level`, as a zstd "full" dictionary (readers
/// recognise it by its magic number; older segments keep their raw-content dictionaries). Falls
/// back to [`DEFAULT`] if zstd refuses the samples.
pub fn finalized(level: i32) -> Vec<u8> {
    let (samples, sizes) = samples();
    let capacity = DEFAULT.len() + 16 * 1024;
    let mut out = vec![0u8; capacity];
    let params = zstd::zstd_safe::zstd_sys::ZDICT_params_t {
        compressionLevel: level,
        notificationLevel: 0,
        // A fixed id keeps the output reproducible; frames do not carry it (the writer turns
        // the frame header's dictionary id off: a segment has exactly one dictionary).
        dictID: 0x6d67_0001,
    };
    // SAFETY: every pointer/length pair describes a live buffer of that length: `out` has
    // `capacity` bytes, `DEFAULT` its length, `samples` the sum of `sizes` (built together
    // below), and `sizes` has `sizes.len()` entries.
    let n = unsafe {
        zstd::zstd_safe::zstd_sys::ZDICT_finalizeDictionary(
            out.as_mut_ptr().cast(),
            capacity,
            DEFAULT.as_ptr().cast(),
            DEFAULT.len(),
            samples.as_ptr().cast(),
            sizes.as_ptr(),
            sizes.len() as u32,
            params,
        )
    };
    // SAFETY: a pure function of its argument.
    if unsafe { zstd::zstd_safe::zstd_sys::ZDICT_isError(n) } != 0 {
        return DEFAULT.to_vec();
    }
    out.truncate(n);
    out
}

/// Record payloads shaped like a recorder's traffic: SSE chunk records of chat and text
/// completions with varied ids, times and words, and the JSON metadata events. Deterministic.
fn samples() -> (Vec<u8>, Vec<usize>) {
    const WORDS: &[&str] = &[
        " the", " of", " and", " to", " a", " in", " is", " that", " for", " it", " as", " with",
        " was", " on", " be", " by", " this", " are", " or", " from", "\\n", ".", ",", " model",
        " data", " can", " which", " we", " you", " an", "ing", "ed", " not", " will", " one",
        " all", " their", " has", " more", " when", "1", "2", "0", "5",
    ];
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut buf = Vec::new();
    let mut sizes = Vec::new();
    let mut record = |buf: &mut Vec<u8>, body: &dyn Fn(&mut Vec<u8>)| {
        let before = buf.len();
        body(buf);
        sizes.push(buf.len() - before);
    };
    for i in 0..600u64 {
        let r = next();
        let word = WORDS[(r % WORDS.len() as u64) as usize];
        let created = 1_760_000_000 + (r >> 20) % 40_000_000;
        let id = format!("{:024x}", r.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 8);
        let line = match i % 6 {
            0 => format!(
                r#"data: {{"id":"cmpl-{id}","object":"text_completion","created":{created},"model":"llama-3.1-8b-instruct","choices":[{{"index":0,"text":"{word}","logprobs":null,"finish_reason":null}}]}}"#
            ),
            1 => format!(
                r#"data: {{"id":"chatcmpl-{id}","object":"chat.completion.chunk","created":{created},"model":"mistral-7b","system_fingerprint":"fp_{:08x}","choices":[{{"index":0,"delta":{{"content":"{word}{word}"}},"logprobs":null,"finish_reason":null}}]}}"#,
                r >> 32
            ),
            _ => format!(
                r#"data: {{"id":"chatcmpl-{id}","object":"chat.completion.chunk","created":{created},"model":"qwen2.5-72b","choices":[{{"index":0,"delta":{{"content":"{word}"}},"logprobs":null,"finish_reason":null}}]}}"#
            ),
        };
        let offset = (r >> 40) % 30_000_000;
        record(&mut buf, &|b: &mut Vec<u8>| {
            codec::begin_payload(b, i * 3);
            codec::put_chunk(
                b,
                codec::response_chunk_tag(),
                i % 40,
                offset,
                line.as_bytes(),
            );
            b.extend_from_slice(b"\n\n");
        });
        if i % 25 == 0 {
            // The metadata events, with this sample's values in their holes.
            let meta = format!(
                r#"{{"request_id":"{id}","connection_id":{},"worker_id":0,"wall_time_us":{created}000000,"route":"chat","endpoint_class":"inference","model":"qwen2.5-72b","decision":{{"action":"allow","rule":"r{}"}}}}"#,
                r % 5000,
                r % 7
            );
            record(&mut buf, &|b: &mut Vec<u8>| {
                // A session-start item: tag 1, session number, length, JSON.
                codec::begin_payload(b, i * 3 + 1);
                b.push(1);
                codec::put_varint(b, i % 40);
                codec::put_varint(b, meta.len() as u64);
                b.extend_from_slice(meta.as_bytes());
            });
        }
    }
    (buf, sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_finalized_dictionary_is_a_zstd_dictionary_over_the_default_content() {
        let dict = finalized(3);
        assert_eq!(
            &dict[..4],
            &0xEC30_A437u32.to_le_bytes(),
            "zstd dictionary magic"
        );
        assert!(dict.ends_with(DEFAULT), "the content follows the tables");
        assert_eq!(dict, finalized(3), "reproducible");

        let event = br#"data: {"id":"chatcmpl-x1","object":"chat.completion.chunk","created":1764000000,"model":"m","choices":[{"index":0,"delta":{"content":" hi"},"logprobs":null,"finish_reason":null}]}"#;
        let mut c = zstd::bulk::Compressor::with_dictionary(3, &dict).unwrap();
        let frame = c.compress(event).unwrap();
        let mut d = zstd::bulk::Decompressor::with_dictionary(&dict).unwrap();
        assert_eq!(d.decompress(&frame, event.len()).unwrap(), event);
    }

    #[test]
    fn interval_writes_keep_the_raw_content_dictionary() {
        let interval = Durability::Interval {
            every: std::time::Duration::from_millis(250),
            bytes: 65536,
        };
        assert_eq!(for_writes(interval, 3), DEFAULT);
        assert_ne!(for_writes(Durability::Event, 3), DEFAULT);
    }
}
