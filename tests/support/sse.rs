//! Streaming mocks: an SSE token streamer (paced, or in lockstep with the test so any buffering in
//! the gateway deadlocks into a failure) and an OpenAI-style chat completions server.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::http::{chunk, response, GUARD};
use super::upstream::{UpConn, Upstream};

/// A counter shared by the test and a mock: one side `advance`s, the other `wait_for`s a value.
/// Used for lockstep streaming and for gates that hold a stream open until released.
#[derive(Clone, Default)]
pub struct Lockstep(Arc<(Mutex<u64>, Condvar)>);

impl Lockstep {
    pub fn new() -> Lockstep {
        Lockstep::default()
    }

    pub fn advance(&self) {
        let (m, cv) = &*self.0;
        *m.lock().unwrap() += 1;
        cv.notify_all();
    }

    pub fn value(&self) -> u64 {
        *self.0 .0.lock().unwrap()
    }

    /// Waits until the counter reaches `n`; false if the guard ran out first.
    pub fn wait_for(&self, n: u64) -> bool {
        self.wait_for_within(n, GUARD)
    }

    pub fn wait_for_within(&self, n: u64, limit: Duration) -> bool {
        let (m, cv) = &*self.0;
        let deadline = Instant::now() + limit;
        let mut v = m.lock().unwrap();
        while *v < n {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            v = cv.wait_timeout(v, deadline - now).unwrap().0;
        }
        true
    }
}

/// When the streamer sends each event.
#[derive(Clone)]
pub enum Pacing {
    /// All at once.
    Burst,
    /// A pause between events.
    Every(Duration),
    /// Event i (i ≥ 1) only after the counter reaches i, i.e. after the client confirmed event
    /// i−1. If the confirmation does not come within the guard the stream is abandoned (closed
    /// without its terminal chunk), so a buffering gateway fails the test instead of hanging it.
    Lockstep(Lockstep),
    /// Events before `at` at once, then wait for the gate to reach 1, then the rest: a stream that
    /// stays open until the test releases it.
    HoldAt { at: usize, gate: Lockstep },
}

/// How the streamer frames its response body.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SseFraming {
    /// One chunk per event, then the terminal chunk.
    Chunked,
    /// No length, no chunking: the body ends when the connection closes.
    CloseDelimited,
}

/// Text of event `i` as the streamer sends it (without the blank line).
pub fn sse_event(i: usize) -> String {
    format!("id: {i}\ndata: token-{i}")
}

/// An upstream answering every request with `count` SSE events.
pub fn sse_upstream(count: usize, pacing: Pacing, framing: SseFraming) -> Upstream {
    Upstream::start(move |c| {
        while let Some(req) = c.read_request() {
            if !req.complete {
                return;
            }
            if !stream_events(c, count, &pacing, framing) || framing == SseFraming::CloseDelimited {
                return;
            }
        }
    })
}

/// Writes one SSE response; false when the connection must be dropped.
pub fn stream_events(c: &mut UpConn, count: usize, pacing: &Pacing, framing: SseFraming) -> bool {
    let head = match framing {
        SseFraming::Chunked => "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n",
        SseFraming::CloseDelimited => "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
    };
    if !c.write(head.as_bytes()) {
        return false;
    }
    for i in 0..count {
        let proceed = match pacing {
            Pacing::Burst => true,
            Pacing::Every(d) => {
                if i > 0 {
                    std::thread::sleep(*d);
                }
                true
            }
            Pacing::Lockstep(step) => i == 0 || step.wait_for(i as u64),
            Pacing::HoldAt { at, gate } => i != *at || gate.wait_for_within(1, GUARD * 3),
        };
        if !proceed {
            eprintln!(
                "[sse upstream] no confirmation for event {}: abandoning the stream",
                i.saturating_sub(1)
            );
            return false;
        }
        let event = format!("{}\n\n", sse_event(i));
        let bytes = match framing {
            SseFraming::Chunked => chunk(event.as_bytes()),
            SseFraming::CloseDelimited => event.into_bytes(),
        };
        if !c.write(&bytes) {
            return false;
        }
    }
    framing == SseFraming::CloseDelimited || c.write(b"0\r\n\r\n")
}

/// An OpenAI-style server: `POST …/chat/completions` answers with `tokens` as the assistant's
/// reply, streamed as `chat.completion.chunk` events when the request says `"stream": true`.
pub fn openai_upstream(tokens: &[&str]) -> Upstream {
    let tokens: Vec<String> = tokens.iter().map(|s| s.to_string()).collect();
    Upstream::start(move |c| {
        while let Some(req) = c.read_request() {
            if !req.complete {
                return;
            }
            if req.head.method() != "POST" || !req.head.target().ends_with("/chat/completions") {
                let body =
                    json!({"error": {"message": "not found", "type": "invalid_request_error"}})
                        .to_string();
                if !c.write(&response(
                    404,
                    &["content-type: application/json"],
                    body.as_bytes(),
                )) {
                    return;
                }
                continue;
            }
            let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let model = body["model"].as_str().unwrap_or("unknown").to_string();
            let ok = if body["stream"] == true {
                stream_completion(c, &model, &tokens)
            } else {
                let reply = json!({
                    "id": "chatcmpl-mock", "object": "chat.completion", "created": 0, "model": model,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": tokens.concat()}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": tokens.len(), "total_tokens": tokens.len() + 1}
                });
                c.write(&response(
                    200,
                    &["content-type: application/json"],
                    reply.to_string().as_bytes(),
                ))
            };
            if !ok {
                return;
            }
        }
    })
}

fn stream_completion(c: &mut UpConn, model: &str, tokens: &[String]) -> bool {
    let head =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    if !c.write(head.as_bytes()) {
        return false;
    }
    let event = |delta: serde_json::Value, finish: serde_json::Value| {
        let chunk_json = json!({
            "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
        });
        chunk(format!("data: {chunk_json}\n\n").as_bytes())
    };
    if !c.write(&event(
        json!({"role": "assistant", "content": ""}),
        serde_json::Value::Null,
    )) {
        return false;
    }
    for t in tokens {
        if !c.write(&event(json!({"content": t}), serde_json::Value::Null)) {
            return false;
        }
    }
    c.write(&event(json!({}), json!("stop")))
        && c.write(&chunk(b"data: [DONE]\n\n"))
        && c.write(b"0\r\n\r\n")
}
