//! Recording cost and size for SSE transcripts: bytes on disk per 200-event OpenAI-style
//! stream, compression ratio against the bytes the client received, and append cost, for each
//! durability mode and zstd level; event mode also with 8 streams interleaved, as concurrent
//! streams on one worker are.
//!
//! `cargo run --release --example record-bench [-- STREAMS]`

use std::time::{Duration, Instant};

use modelgate::recorder::{
    Action, Durability, EndReason, Head, Identity, PolicyDecision, ResponseHead, SegmentWriter,
    SessionEnd, SessionStart, Timing, WriterSettings,
};

const EVENTS: usize = 200;
const MODEL: &str = "meta-llama/Meta-Llama-3.1-8B-Instruct";
const WORDS: &[&str] = &[
    " the", " model", " answer", " is", " a", " data", " of", " to", " and", " in", " that",
    " request", " gateway", " stream", ",", ".", " we", " can", " with", " for", " token",
];

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// 200 events: role, 197 content deltas, stop, `[DONE]`.
fn transcript(seed: u64) -> Vec<String> {
    let mut rng = Lcg(seed);
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let id: String = (0..29)
        .map(|_| char::from(alphabet[(rng.next() % 62) as usize]))
        .collect();
    let created = 1_718_000_000 + rng.next() % 1_000_000;
    let head = format!(
        r#"data: {{"id":"chatcmpl-{id}","object":"chat.completion.chunk","created":{created},"model":"{MODEL}","system_fingerprint":"fp_44709d6fcb","choices":[{{"index":0,"#
    );
    let mut out = vec![format!(
        "{head}\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
    )];
    while out.len() < EVENTS - 2 {
        let w = WORDS[(rng.next() as usize) % WORDS.len()];
        out.push(format!(
            "{head}\"delta\":{{\"content\":\"{w}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
        ));
    }
    out.push(format!(
        "{head}\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"stop\"}}]}}\n\n"
    ));
    out.push("data: [DONE]\n\n".to_owned());
    out
}

fn start(i: u64) -> SessionStart {
    SessionStart {
        request_id: format!("01J0REQ{i:020}"),
        connection_id: i,
        worker_id: 0,
        wall_time_us: 1_718_000_000_000_000 + i * 1000,
        identity: Some(Identity {
            subject: "alice@example.com".into(),
            groups: vec!["ml-users".into()],
            issuer: Some("https://idp.example".into()),
        }),
        client_addr: Some("10.0.0.5:51234".parse().unwrap()),
        route: Some("chat".into()),
        endpoint_class: Some("inference".into()),
        model: Some(MODEL.into()),
        decision: Some(PolicyDecision {
            action: Action::Allow,
            rule: Some("ml-users".into()),
        }),
        approval_id: None,
        request: Head::new(
            "POST",
            "/v1/chat/completions",
            [
                ("host", "gw"),
                ("authorization", "Bearer x"),
                ("content-type", "application/json"),
            ],
        ),
        record_request_body: false,
        record_upstream_body: false,
    }
}

struct Figures {
    disk: u64,
    raw: u64,
    records: u64,
    events: u64,
    append: Duration,
}

fn head() -> ResponseHead {
    ResponseHead {
        offset_us: 9_000,
        status: 200,
        headers: vec![("content-type".into(), "text/event-stream".into())],
        upstream: Some("vllm/10.0.1.2:8000".into()),
    }
}

fn end() -> SessionEnd {
    SessionEnd {
        offset_us: 4_300_000,
        reason: EndReason::Complete,
        status: Some(200),
        masking: Default::default(),
        timing: Timing {
            gateway_us: Some(250),
            upstream_ttfb_us: Some(8_700),
            total_us: Some(4_300_000),
        },
        bytes_in: 180,
        bytes_out: 50_000,
        error: None,
    }
}

/// Records `streams` transcripts, `together` at a time with their events interleaved round
/// robin (as concurrent streams on one worker are).
fn run(durability: Durability, level: i32, streams: u64, together: u64) -> Figures {
    let dir = std::env::temp_dir().join(format!("mg-record-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut s = WriterSettings::new(&dir);
    s.durability = durability;
    s.zstd_level = level;
    s.segment_max_bytes = 1 << 40;
    let mut w = SegmentWriter::open(s, 0).unwrap();
    let header = std::fs::metadata(w.current_segment().unwrap())
        .unwrap()
        .len();
    let mut raw = 0;
    let mut events_appended = 0;
    let mut append = Duration::ZERO;
    for group in (0..streams).collect::<Vec<_>>().chunks(together as usize) {
        let transcripts: Vec<Vec<String>> = group.iter().map(|&i| transcript(i)).collect();
        let t = Instant::now();
        let mut sids = Vec::new();
        for &i in group {
            let sid = w.start_session(&start(i)).unwrap();
            w.response_head(sid, &head()).unwrap();
            sids.push(sid);
        }
        for k in 0..EVENTS {
            for (sid, events) in sids.iter().zip(&transcripts) {
                w.response_chunk(*sid, 10_000 + k as u64 * 21_000, events[k].as_bytes())
                    .unwrap();
            }
        }
        for sid in sids {
            w.end_session(sid, &end()).unwrap();
        }
        append += t.elapsed();
        for events in &transcripts {
            raw += events.iter().map(|e| e.len() as u64).sum::<u64>();
            events_appended += events.len() as u64 + 3;
        }
    }
    w.flush().unwrap();
    let path = w.current_segment().unwrap().to_owned();
    let bytes = std::fs::read(&path).unwrap();
    let disk = bytes.len() as u64 - header;
    let records = modelgate::recorder::format::scan(&bytes)
        .unwrap()
        .pieces
        .len() as u64;
    drop(w);
    let _ = std::fs::remove_dir_all(&dir);
    Figures {
        disk,
        raw,
        records,
        events: events_appended,
        append,
    }
}

fn main() {
    let streams: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let t = transcript(0);
    let raw: usize = t.iter().map(String::len).sum();
    println!(
        "transcript: {} events, {raw} bytes ({} bytes/event); {streams} streams per run; \
         disk bytes include the session's start, head and end events",
        t.len(),
        raw / t.len()
    );
    println!(
        "{:<26} {:>5} {:>12} {:>9} {:>7} {:>14} {:>9}",
        "mode", "level", "disk/stream", "B/event", "ratio", "append µs/ev", "records"
    );
    let modes = [
        ("event", Durability::Event, 1),
        ("event, 8 streams at once", Durability::Event, 8),
        (
            "interval 64KiB/250ms",
            Durability::Interval {
                every: Duration::from_millis(250),
                bytes: 64 << 10,
            },
            1,
        ),
        (
            "interval 16KiB/250ms",
            Durability::Interval {
                every: Duration::from_millis(250),
                bytes: 16 << 10,
            },
            1,
        ),
    ];
    for (name, d, together) in modes {
        for level in [1, 3] {
            let f = run(d, level, streams, together);
            let per_stream = f.disk as f64 / streams as f64;
            println!(
                "{name:<26} {level:>5} {per_stream:>12.0} {:>9.1} {:>6.1}x {:>14.2} {:>9}",
                per_stream / EVENTS as f64,
                f.raw as f64 / f.disk as f64,
                f.append.as_secs_f64() * 1e6 / f.events as f64,
                f.records,
            );
        }
    }
}
