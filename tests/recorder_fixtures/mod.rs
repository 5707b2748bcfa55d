//! Shared fixtures for the recorder tests: realistic sessions and OpenAI-style SSE streams.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use modelgate::recorder::format::{self, Piece};
use modelgate::recorder::{
    Action, Durability, EndReason, Head, Identity, PolicyDecision, ResponseHead, SegmentWriter,
    SessionEnd, SessionStart, Timing, WriterSettings,
};

pub const MODEL: &str = "meta-llama/Meta-Llama-3.1-8B-Instruct";

pub fn start(request_id: &str, subject: &str, wall_time_us: u64) -> SessionStart {
    SessionStart {
        request_id: request_id.into(),
        connection_id: 7,
        worker_id: 0,
        wall_time_us,
        identity: Some(Identity {
            subject: subject.into(),
            groups: vec!["ml-users".into(), "eng".into()],
            issuer: Some("https://idp.example".into()),
        }),
        client_addr: Some("10.0.0.5:51234".parse().unwrap()),
        route: Some("chat".into()),
        endpoint_class: Some("inference".into()),
        model: Some(MODEL.into()),
        decision: Some(PolicyDecision {
            action: Action::Allow,
            rule: Some("ml-users-chat".into()),
        }),
        approval_id: None,
        request: Head::new(
            "POST",
            "/v1/chat/completions",
            [
                ("host", "gw.example"),
                ("authorization", "Bearer eyJhbGciOiJSUzI1NiJ9.secret.sig"),
                ("content-type", "application/json"),
            ],
        ),
        record_request_body: false,
        record_upstream_body: false,
    }
}

pub fn response_head() -> ResponseHead {
    ResponseHead {
        offset_us: 12_000,
        status: 200,
        headers: vec![("content-type".into(), "text/event-stream".into())],
        upstream: Some("vllm/10.0.1.2:8000".into()),
    }
}

pub fn end(offset_us: u64, masked: u64) -> SessionEnd {
    let mut masking = BTreeMap::new();
    if masked > 0 {
        masking.insert("email".to_owned(), masked);
    }
    SessionEnd {
        offset_us,
        reason: EndReason::Complete,
        status: Some(200),
        masking,
        timing: Timing {
            gateway_us: Some(300),
            upstream_ttfb_us: Some(11_700),
            total_us: Some(offset_us),
        },
        bytes_in: 120,
        bytes_out: 40_000,
        error: None,
    }
}

/// A deterministic pseudo-random source, so streams differ like real ones without a dependency.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

const WORDS: &[&str] = &[
    " the", " model", " answer", " is", " a", " data", " of", " to", " and", " in", " that",
    " request", " gateway", " stream", ",", ".", " we", " can", " with", " for", " token",
];

/// One OpenAI-style chat completion stream: `n` content events, a stop event and `[DONE]`.
pub fn sse_events(seed: u64, n: usize) -> Vec<String> {
    let mut rng = Lcg(seed);
    let id: String = (0..29)
        .map(|_| {
            let c = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                [(rng.next() % 62) as usize];
            char::from(c)
        })
        .collect();
    let created = 1_718_000_000 + rng.next() % 1_000_000;
    let head = format!(
        r#"data: {{"id":"chatcmpl-{id}","object":"chat.completion.chunk","created":{created},"model":"{MODEL}","system_fingerprint":"fp_44709d6fcb","choices":[{{"index":0,"#
    );
    let mut out = vec![
        format!(
            r#"{head}"delta":{{"role":"assistant","content":""}},"logprobs":null,"finish_reason":null}}]}}"#
        ) + "\n\n",
    ];
    for _ in 0..n {
        let w = WORDS[(rng.next() as usize) % WORDS.len()];
        out.push(
            format!(
                r#"{head}"delta":{{"content":"{w}"}},"logprobs":null,"finish_reason":null}}]}}"#
            ) + "\n\n",
        );
    }
    out.push(format!(r#"{head}"delta":{{}},"logprobs":null,"finish_reason":"stop"}}]}}"#) + "\n\n");
    out.push("data: [DONE]\n\n".to_owned());
    out
}

/// Records one streaming session: start, head, each event 25 ms apart, end.
pub fn record_stream(w: &mut SegmentWriter, id: &str, subject: &str, t0: u64, events: &[String]) {
    let sid = w.start_session(&start(id, subject, t0)).unwrap();
    w.response_head(sid, &response_head()).unwrap();
    let mut off = 12_000;
    for e in events {
        off += 25_000;
        w.response_chunk(sid, off, e.as_bytes()).unwrap();
    }
    w.end_session(sid, &end(off + 1000, 0)).unwrap();
}

pub fn settings(dir: &Path) -> WriterSettings {
    WriterSettings::new(dir)
}

/// Every event in a length-prefixed record of its own (interval durability, written at every
/// event): the fixture for tests about the chain between records.
pub fn one_record_per_event(dir: &Path) -> WriterSettings {
    let mut s = settings(dir);
    s.durability = Durability::Interval {
        every: std::time::Duration::from_secs(3600),
        bytes: 1,
    };
    s
}

/// (offset, len) of every record in a segment file.
pub fn records(path: &Path) -> Vec<(usize, usize)> {
    let bytes = std::fs::read(path).unwrap();
    format::scan(&bytes)
        .unwrap()
        .pieces
        .iter()
        .map(|p| match p {
            Piece::Record(r) => (r.offset as usize, r.len as usize),
            Piece::Corrupt { .. } => panic!("fixture segment has a corrupt stretch"),
        })
        .collect()
}

pub fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    modelgate::recorder::read::segment_files(dir).unwrap()
}
