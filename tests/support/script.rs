//! Scripted upstream responses for the masking and recording tests: an exact body, cut into
//! pieces the test chooses (SSE events, JSON split inside escapes, big binary bodies), written with
//! a [`Pacing`] (at once, paced, in lockstep with the test, or held open at a gate). Plus
//! OpenAI-shaped chat completion events, the `modelgate` CLI as a child process with a guard, and
//! the openai SDK helper script.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::gateway::BIN;
use super::http::{chunk, Message, GUARD};
use super::sse::Pacing;
use super::upstream::{UpConn, Upstream};

/// How a scripted body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// One chunk per piece, then the terminal chunk.
    Chunked,
    /// `Content-Length` of the whole body; the pieces are written one by one.
    Length,
}

/// One scripted response: status, content type, framing and the body in pieces.
#[derive(Clone, Debug)]
pub struct Script {
    pub status: u16,
    pub content_type: String,
    pub framing: BodyFraming,
    pub pieces: Vec<Vec<u8>>,
}

impl Script {
    /// An SSE response: each event (text without the blank line) is one piece ending in `\n\n`.
    pub fn sse(events: &[String]) -> Script {
        Script {
            status: 200,
            content_type: "text/event-stream".into(),
            framing: BodyFraming::Chunked,
            pieces: events
                .iter()
                .map(|e| format!("{e}\n\n").into_bytes())
                .collect(),
        }
    }

    /// A body with a Content-Length, written in the given pieces.
    pub fn length(content_type: &str, pieces: &[&[u8]]) -> Script {
        Script {
            status: 200,
            content_type: content_type.into(),
            framing: BodyFraming::Length,
            pieces: pieces.iter().map(|p| p.to_vec()).collect(),
        }
    }

    /// The whole body as the upstream sends it (decoded).
    pub fn body(&self) -> Vec<u8> {
        self.pieces.concat()
    }

    /// Writes the response; false when the gateway went away or the pacing gave up.
    pub fn write(&self, c: &mut UpConn, pacing: &Pacing) -> bool {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: {}\r\n",
            self.status,
            super::http::reason(self.status),
            self.content_type
        );
        match self.framing {
            BodyFraming::Chunked => head.push_str("transfer-encoding: chunked\r\n"),
            BodyFraming::Length => {
                head.push_str(&format!("content-length: {}\r\n", self.body().len()))
            }
        }
        head.push_str("\r\n");
        if let Pacing::Burst = pacing {
            // All at once, in one write: the gateway most likely reads head and body together.
            let mut all = head.into_bytes();
            for piece in &self.pieces {
                match self.framing {
                    BodyFraming::Chunked => all.extend_from_slice(&chunk(piece)),
                    BodyFraming::Length => all.extend_from_slice(piece),
                }
            }
            if self.framing == BodyFraming::Chunked {
                all.extend_from_slice(b"0\r\n\r\n");
            }
            return c.write(&all);
        }
        if !c.write(head.as_bytes()) {
            return false;
        }
        for (i, piece) in self.pieces.iter().enumerate() {
            let proceed = match pacing {
                Pacing::Burst => unreachable!("written above"),
                Pacing::Every(d) => {
                    // Also before the first piece, so the head usually travels alone.
                    std::thread::sleep(*d);
                    true
                }
                Pacing::Lockstep(step) => i == 0 || step.wait_for(i as u64),
                Pacing::HoldAt { at, gate } => i != *at || gate.wait_for_within(1, GUARD * 3),
            };
            if !proceed {
                eprintln!("[script upstream] no go-ahead for piece {i}: abandoning the response");
                return false;
            }
            let bytes = match self.framing {
                BodyFraming::Chunked => chunk(piece),
                BodyFraming::Length => piece.clone(),
            };
            if !c.write(&bytes) {
                return false;
            }
        }
        self.framing == BodyFraming::Length || c.write(b"0\r\n\r\n")
    }
}

/// An upstream answering every complete request with `script(request)`, paced by `pacing`
/// (a lockstep counter is shared by all requests: use one request per lockstep test).
pub fn script_upstream(
    pacing: Pacing,
    script: impl Fn(&Message) -> Script + Send + Sync + 'static,
) -> Upstream {
    let script = Arc::new(script);
    Upstream::start(move |c| {
        while let Some(req) = c.read_request() {
            if !req.complete {
                return;
            }
            if !script(&req).write(c, &pacing) {
                return;
            }
        }
    })
}

/// One OpenAI `chat.completion.chunk` event (`data: {...}`, no blank line), in the exact byte
/// shape of the stock OpenAI mock (compact JSON, this key order).
pub fn chat_event(delta: Value, finish: Value) -> String {
    let chunk_json = json!({
        "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": "mock-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
    });
    format!("data: {chunk_json}")
}

/// A whole chat completion stream: the role event, one event per token, the finish event and
/// `[DONE]`.
pub fn chat_stream(tokens: &[&str]) -> Vec<String> {
    let mut events = vec![chat_event(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for t in tokens {
        events.push(chat_event(json!({ "content": t }), Value::Null));
    }
    events.push(chat_event(json!({}), json!("stop")));
    events.push("data: [DONE]".to_string());
    events
}

/// The `data:` JSON of an SSE event, if it has one that parses.
pub fn event_json(event: &str) -> Option<Value> {
    let data: Vec<&str> = event
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    if data.is_empty() {
        return None;
    }
    serde_json::from_str(&data.join("\n")).ok()
}

/// `choices[0].delta.content` of a chat completion chunk event, if present.
pub fn event_content(event: &str) -> Option<String> {
    event_json(event)?["choices"][0]["delta"]["content"]
        .as_str()
        .map(str::to_owned)
}

/// What a CLI run produced.
#[derive(Debug)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl CliOutput {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `modelgate ARGS` (the binary under test) with a failure guard; output captured.
pub fn modelgate_cli(args: &[&str]) -> CliOutput {
    run_guarded(Command::new(BIN).args(args), GUARD * 3)
}

/// Runs a command to completion, killing it if it outlives `limit` (a failure guard).
pub fn run_guarded(cmd: &mut Command, limit: Duration) -> CliOutput {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    CliOutput {
        code: status.code(),
        stdout: out_t.join().unwrap(),
        stderr: String::from_utf8_lossy(&err_t.join().unwrap()).into_owned(),
    }
}

/// Path of a script under tests/clients/.
pub fn client_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

/// Whether `python3 -c 'import openai'` works; prints a skip note when not.
pub fn have_openai_sdk() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import openai"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: the openai Python SDK is not available");
    }
    ok
}
