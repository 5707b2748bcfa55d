//! `modelgate demo`: the gateway on an embedded config in front of a tiny OpenAI-style model
//! server that streams its answer as SSE, so a new user sees tokens flow through in one command.
//!
//! The demo model is deliberately plain blocking std code on its own threads: it is a stand-in
//! for vLLM or llama.cpp, not part of the gateway's data path.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::Config;

const REPLY: &str = "Hello! I am the modelgate demo model. Every token you see passed through the gateway as its own SSE event.";

/// Starts the demo model, then runs the gateway in front of it until SIGTERM/SIGINT.
pub fn run(listen: SocketAddr) -> std::io::Result<()> {
    let model = TcpListener::bind("127.0.0.1:0")?;
    let model_addr = model.local_addr()?;
    std::thread::spawn(move || {
        for stream in model.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = serve(stream);
            });
        }
    });
    let source = format!(
        r#"[server]
listen = "{listen}"
workers = 1

[[upstream]]
name = "demo-model"
endpoints = ["{model_addr}"]

[[route]]
id = "openai"
path_prefix = "/v1/"
upstream = "demo-model"
class = "inference"
auth = "none"
"#
    );
    let config = Config::parse(Path::new("<demo config>"), &source)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    crate::log::init(&config.log);
    crate::runtime::run(config, |addr| {
        println!("modelgate demo: gateway on http://{addr}, demo model on http://{model_addr}");
        println!("try:");
        println!(
            "  curl -N http://{addr}/v1/chat/completions -H 'content-type: application/json' \\\n    -d '{{\"model\":\"demo\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'"
        );
    })
}

/// One keep-alive connection of the demo model.
fn serve(stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length.min(1 << 20)];
        reader.read_exact(&mut body)?;
        let wants_stream = String::from_utf8_lossy(&body).contains("\"stream\":true");
        match path.as_str() {
            "/v1/chat/completions" if wants_stream => stream_reply(&mut out)?,
            "/v1/chat/completions" => {
                let body = format!(
                    r#"{{"id":"chatcmpl-demo","object":"chat.completion","created":{},"model":"demo","choices":[{{"index":0,"message":{{"role":"assistant","content":"{REPLY}"}},"finish_reason":"stop"}}]}}"#,
                    now()
                );
                write_json(&mut out, 200, &body)?;
            }
            "/v1/models" => write_json(
                &mut out,
                200,
                r#"{"object":"list","data":[{"id":"demo","object":"model","owned_by":"modelgate"}]}"#,
            )?,
            _ => write_json(&mut out, 404, r#"{"error":{"message":"not found"}}"#)?,
        }
    }
}

fn write_json(out: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {status} OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Streams `REPLY` word by word as OpenAI chat-completion chunks, then `[DONE]`.
fn stream_reply(out: &mut TcpStream) -> std::io::Result<()> {
    out.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n",
    )?;
    let created = now();
    let words: Vec<String> = REPLY.split_inclusive(' ').map(str::to_owned).collect();
    for word in &words {
        let event = format!(
            "data: {{\"id\":\"chatcmpl-demo\",\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":\"demo\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}},\"finish_reason\":null}}]}}\n\n",
            serde_json::Value::String(word.clone())
        );
        write!(out, "{:x}\r\n{event}\r\n", event.len())?;
        std::thread::sleep(Duration::from_millis(60));
    }
    let last = format!(
        "data: {{\"id\":\"chatcmpl-demo\",\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":\"demo\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\ndata: [DONE]\n\n"
    );
    write!(out, "{:x}\r\n{last}\r\n0\r\n\r\n", last.len())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
