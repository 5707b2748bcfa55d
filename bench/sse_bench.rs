//! sse-bench: a std-only origin and client for measuring per-token transit of a
//! Server-Sent-Events stream through a reverse proxy (load `sse-1` in
//! /work/shared/BENCH.md).
//!
//! ```text
//! sse-bench origin --listen 127.0.0.1:PORT [--events 200] [--gap-ms 10]
//! sse-bench client --url http://127.0.0.1:PORT/sse [--repeat 1] [--timeout-s 30] [--streams 1]
//! ```
//!
//! The origin stamps every event with its send time (ns since UNIX_EPOCH, the
//! realtime clock) just before the write that carries it; the client stamps the
//! arrival of the read that completes the event with the same clock. Both run
//! on the same machine, so `arrival - t` is the transit through whatever sits
//! between them (nothing, for the "direct" baseline).
//!
//! No external crates: built as cargo example `sse-bench`, or standalone with
//! `rustc -O --edition 2021 bench/sse_bench.rs -o sse-bench`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::exit;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const USAGE: &str = "usage:
  sse-bench origin --listen 127.0.0.1:PORT [--events 200] [--gap-ms 10]
  sse-bench client --url http://127.0.0.1:PORT/sse [--repeat 1] [--timeout-s 30] [--streams 1]

origin: HTTP/1.1 server, one thread per connection, keep-alive.
  GET /sse...  200 text/event-stream, chunked; N events `data: {\"t\":<ns>,\"i\":<n>,...}`
               shaped as OpenAI chat-completion chunks (choices[0].delta.content),
               one chunk each, gap-ms apart, then the terminal chunk.
  GET /1k      200 with a 1024-byte body and content-length.
  anything else 404.
client: one connection per run (--streams N: N connections at once, figures over all their
  events); prints per run
  events=N median_us=X p90_us=Y p99_us=Z max_us=W";

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn die(msg: &str) -> ! {
    eprintln!("sse-bench: {msg}");
    exit(2)
}

/// Minimal `--flag value` parser.
struct Args {
    rest: Vec<String>,
}

impl Args {
    fn take(&mut self, name: &str) -> Option<String> {
        let pos = self.rest.iter().position(|a| a == name)?;
        if pos + 1 >= self.rest.len() {
            die(&format!("{name} needs a value"));
        }
        let v = self.rest.remove(pos + 1);
        self.rest.remove(pos);
        Some(v)
    }
    fn num<T: std::str::FromStr>(&mut self, name: &str, default: T) -> T {
        match self.take(name) {
            None => default,
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| die(&format!("{name}: not a number: {v}"))),
        }
    }
    fn finish(self) {
        if !self.rest.is_empty() {
            die(&format!("unexpected arguments: {:?}\n{USAGE}", self.rest));
        }
    }
}

fn main() {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() || argv.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        exit(if argv.is_empty() { 2 } else { 0 });
    }
    let cmd = argv.remove(0);
    let mut args = Args { rest: argv };
    match cmd.as_str() {
        "origin" => {
            let listen = args
                .take("--listen")
                .unwrap_or_else(|| die("origin: --listen is required"));
            let events: u64 = args.num("--events", 200);
            let gap_ms: u64 = args.num("--gap-ms", 10);
            args.finish();
            origin(&listen, events, Duration::from_millis(gap_ms));
        }
        "client" => {
            let url = args
                .take("--url")
                .unwrap_or_else(|| die("client: --url is required"));
            let repeat: u32 = args.num("--repeat", 1);
            let timeout_s: u64 = args.num("--timeout-s", 30);
            let streams: u32 = args.num("--streams", 1);
            args.finish();
            let mut failed = false;
            for _ in 0..repeat.max(1) {
                match client_streams(&url, Duration::from_secs(timeout_s.max(1)), streams.max(1)) {
                    Ok(line) => println!("{line}"),
                    Err(e) => {
                        eprintln!("sse-bench client: {e}");
                        failed = true;
                    }
                }
                let _ = io::stdout().flush();
            }
            if failed {
                exit(1);
            }
        }
        _ => die(&format!("unknown subcommand {cmd:?}\n{USAGE}")),
    }
}

// ---------------------------------------------------------------- origin ---

fn origin(listen: &str, events: u64, gap: Duration) {
    let listener =
        TcpListener::bind(listen).unwrap_or_else(|e| die(&format!("origin: bind {listen}: {e}")));
    eprintln!(
        "sse-bench origin listening on {} (events={events} gap={}ms)",
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        gap.as_millis()
    );
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                thread::spawn(move || {
                    let _ = serve_conn(stream, events, gap);
                });
            }
            Err(e) => {
                eprintln!("origin: accept: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

struct ReqHead {
    method: String,
    path: String,
    keep_alive: bool,
    content_length: u64,
    chunked_body: bool,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_req_head(head: &[u8]) -> Option<ReqHead> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut rl = lines.next()?.split(' ');
    let method = rl.next()?.to_string();
    let path = rl.next()?.to_string();
    let version = rl.next().unwrap_or("HTTP/1.0");
    let mut keep_alive = version == "HTTP/1.1";
    let mut content_length = 0;
    let mut chunked_body = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().ok()?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked_body = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                keep_alive = false;
            } else if v.contains("keep-alive") {
                keep_alive = true;
            }
        }
    }
    Some(ReqHead {
        method,
        path,
        keep_alive,
        content_length,
        chunked_body,
    })
}

fn serve_conn(mut s: TcpStream, events: u64, gap: Duration) -> io::Result<()> {
    s.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut tmp = [0u8; 8192];
    loop {
        // Read one request head.
        let head_end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p + 4;
            }
            if buf.len() > 64 * 1024 {
                let _ = s.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                return Ok(());
            }
            let n = s.read(&mut tmp)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        };
        let Some(req) = parse_req_head(&buf[..head_end]) else {
            let _ = s.write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            return Ok(());
        };
        buf.drain(..head_end);
        // Skip a Content-Length body. A chunked request body is not decoded:
        // answer, then close the connection.
        let mut skip = req.content_length;
        let from_buf = skip.min(buf.len() as u64) as usize;
        buf.drain(..from_buf);
        skip -= from_buf as u64;
        while skip > 0 {
            let want = skip.min(tmp.len() as u64) as usize;
            let n = s.read(&mut tmp[..want])?;
            if n == 0 {
                return Ok(());
            }
            skip -= n as u64;
        }
        let keep_alive = req.keep_alive && !req.chunked_body;
        let conn_hdr = if keep_alive {
            ""
        } else {
            "connection: close\r\n"
        };
        let head_only = req.method == "HEAD";

        if req.path.starts_with("/sse") {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n{conn_hdr}\r\n"
            );
            s.write_all(head.as_bytes())?;
            if !head_only {
                let mut out = String::with_capacity(128);
                for i in 0..events {
                    if i > 0 && !gap.is_zero() {
                        thread::sleep(gap);
                    }
                    let t = now_ns();
                    // OpenAI chat-completion chunk shape, so masking has text to scan.
                    let data = format!(
                        "data: {{\"t\":{t},\"i\":{i},\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"token{i} \"}}}}]}}\n\n"
                    );
                    out.clear();
                    out.push_str(&format!("{:x}\r\n", data.len()));
                    out.push_str(&data);
                    out.push_str("\r\n");
                    s.write_all(out.as_bytes())?; // one write per event/chunk
                }
                s.write_all(b"0\r\n\r\n")?;
            }
        } else if req.path == "/1k" || req.path.starts_with("/1k?") {
            let mut resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1024\r\n{conn_hdr}\r\n"
            )
            .into_bytes();
            if !head_only {
                resp.resize(resp.len() + 1024, b'x');
            }
            s.write_all(&resp)?;
        } else {
            let body = if head_only { "" } else { "not found\n" };
            let resp = format!(
                "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: 10\r\n{conn_hdr}\r\n{body}"
            );
            s.write_all(resp.as_bytes())?;
        }
        if !keep_alive {
            let _ = s.shutdown(Shutdown::Write);
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------- client ---

struct Url {
    authority: String,
    addr: SocketAddr,
    path: String,
}

fn parse_url(url: &str) -> Result<Url, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs are supported: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(p) => (&rest[..p], &rest[p..]),
        None => (rest, "/"),
    };
    let hostport = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| format!("resolve {hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("resolve {hostport}: no address"))?;
    Ok(Url {
        authority: authority.to_string(),
        addr,
        path: path.to_string(),
    })
}

/// Incremental chunked-transfer decoder: feed it any slice of the wire, it
/// appends decoded body bytes to `out`. Chunk boundaries may fall anywhere.
#[derive(Debug)]
enum Chunked {
    Size(Vec<u8>),    // collecting a chunk-size line
    Data(u64),        // bytes of chunk data left
    DataEnd(u8),      // CRLF after data: bytes of it seen
    Trailer(Vec<u8>), // collecting trailer lines after the last chunk
    Done,
}

impl Chunked {
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        while !input.is_empty() {
            match self {
                Chunked::Done => return Ok(()), // ignore anything after the end
                Chunked::Size(line) => match input.iter().position(|&b| b == b'\n') {
                    None => {
                        line.extend_from_slice(input);
                        if line.len() > 4096 {
                            return Err("chunk-size line too long".into());
                        }
                        return Ok(());
                    }
                    Some(p) => {
                        line.extend_from_slice(&input[..p]);
                        input = &input[p + 1..];
                        let text = String::from_utf8_lossy(line);
                        let hex = text
                            .trim_end_matches('\r')
                            .split(';')
                            .next()
                            .unwrap_or("")
                            .trim();
                        let size = u64::from_str_radix(hex, 16)
                            .map_err(|_| format!("bad chunk size line {text:?}"))?;
                        *self = if size == 0 {
                            Chunked::Trailer(Vec::new())
                        } else {
                            Chunked::Data(size)
                        };
                    }
                },
                Chunked::Data(left) => {
                    let n = (*left).min(input.len() as u64) as usize;
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        *self = Chunked::DataEnd(0);
                    }
                }
                Chunked::DataEnd(seen) => {
                    let b = input[0];
                    input = &input[1..];
                    match (*seen, b) {
                        (0, b'\r') => *seen = 1,
                        (_, b'\n') => *self = Chunked::Size(Vec::new()),
                        _ => return Err("missing CRLF after chunk data".into()),
                    }
                }
                Chunked::Trailer(line) => match input.iter().position(|&b| b == b'\n') {
                    None => {
                        line.extend_from_slice(input);
                        return Ok(());
                    }
                    Some(p) => {
                        line.extend_from_slice(&input[..p]);
                        input = &input[p + 1..];
                        let empty = line.iter().all(|&b| b == b'\r');
                        line.clear();
                        if empty {
                            *self = Chunked::Done;
                        }
                    }
                },
            }
        }
        Ok(())
    }
    fn done(&self) -> bool {
        matches!(self, Chunked::Done)
    }
}

enum Framing {
    Chunked(Chunked),
    Length(u64),
    UntilClose,
}

/// Incremental SSE parser: accumulates lines, an empty line ends an event.
struct SseParser {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    last_cr: bool,
}

impl SseParser {
    fn new() -> Self {
        SseParser {
            line: Vec::new(),
            data: Vec::new(),
            has_data: false,
            last_cr: false,
        }
    }
    /// Feeds body bytes; calls `on_event(data)` for each complete event.
    fn feed(&mut self, input: &[u8], on_event: &mut dyn FnMut(&[u8])) {
        for &b in input {
            // Lines end with CRLF, LF or CR (SSE spec).
            if b == b'\n' && self.last_cr {
                self.last_cr = false;
                continue;
            }
            self.last_cr = b == b'\r';
            if b == b'\n' || b == b'\r' {
                if self.line.is_empty() {
                    if self.has_data {
                        on_event(&self.data);
                    }
                    self.data.clear();
                    self.has_data = false;
                } else {
                    if let Some(v) = self.line.strip_prefix(b"data:") {
                        let v = v.strip_prefix(b" ").unwrap_or(v);
                        if self.has_data {
                            self.data.push(b'\n');
                        }
                        self.data.extend_from_slice(v);
                        self.has_data = true;
                    }
                    self.line.clear();
                }
            } else {
                self.line.push(b);
            }
        }
    }
}

/// Extracts the integer after `"key":` in a flat JSON object.
fn json_int(data: &[u8], key: &str) -> Option<i128> {
    let pat = format!("\"{key}\":");
    let p = find(data, pat.as_bytes())? + pat.len();
    let rest = std::str::from_utf8(&data[p..]).ok()?.trim_start();
    let end = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map(|(i, _)| i)
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn percentile(sorted: &[i128], p: f64) -> i128 {
    // nearest-rank
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(sorted: &[i128]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        sorted[n / 2] as f64
    } else {
        (sorted[n / 2 - 1] as f64 + sorted[n / 2] as f64) / 2.0
    }
}

/// `streams` runs at once, one thread each; the figures cover all their events.
fn client_streams(url: &str, timeout: Duration, streams: u32) -> Result<String, String> {
    let runs: Vec<_> = (0..streams)
        .map(|_| {
            let url = url.to_owned();
            thread::spawn(move || client_run(&url, timeout))
        })
        .collect();
    let mut transits = Vec::new();
    for run in runs {
        transits.extend(run.join().map_err(|_| "client thread panicked")??);
    }
    transits.sort_unstable();
    let us = |ns: f64| ns / 1000.0;
    Ok(format!(
        "events={} median_us={:.1} p90_us={:.1} p99_us={:.1} max_us={:.1}",
        transits.len(),
        us(median(&transits)),
        us(percentile(&transits, 90.0) as f64),
        us(percentile(&transits, 99.0) as f64),
        us(transits.last().copied().unwrap_or(0) as f64),
    ))
}

/// One stream: the transit of each event, in ns.
fn client_run(url: &str, timeout: Duration) -> Result<Vec<i128>, String> {
    let u = parse_url(url)?;
    let mut s = TcpStream::connect_timeout(&u.addr, timeout)
        .map_err(|e| format!("connect {}: {e}", u.addr))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let req = format!(
        "GET {} HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\nuser-agent: sse-bench\r\n\r\n",
        u.path, u.authority
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send: {e}"))?;

    let mut buf = vec![0u8; 64 * 1024];
    let mut head: Vec<u8> = Vec::new();
    let mut transits: Vec<i128> = Vec::with_capacity(1024);
    let mut bad_events = 0u64;
    let mut sse = SseParser::new();
    let mut body: Vec<u8> = Vec::with_capacity(64 * 1024);

    // Response head.
    let (mut framing, leftover) = loop {
        let n = s.read(&mut buf).map_err(|e| format!("read head: {e}"))?;
        if n == 0 {
            return Err("connection closed before the response head".into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(p) = find(&head, b"\r\n\r\n") {
            let rest = head.split_off(p + 4);
            let text = String::from_utf8_lossy(&head).to_string();
            let status_line = text.lines().next().unwrap_or("");
            let code = status_line.split(' ').nth(1).unwrap_or("");
            if code != "200" {
                return Err(format!("unexpected status: {status_line}"));
            }
            let mut framing = Framing::UntilClose;
            for line in text.split("\r\n").skip(1) {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                let value = value.trim();
                if name.eq_ignore_ascii_case("transfer-encoding")
                    && value.to_ascii_lowercase().contains("chunked")
                {
                    framing = Framing::Chunked(Chunked::Size(Vec::new()));
                    break;
                }
                if name.eq_ignore_ascii_case("content-length") {
                    framing = Framing::Length(value.parse().map_err(|_| "bad content-length")?);
                }
            }
            break (framing, rest);
        }
        if head.len() > 64 * 1024 {
            return Err("response head too large".into());
        }
    };

    // Body: decode framing, feed SSE parser; one arrival stamp per read.
    let mut pending: Vec<u8> = leftover;
    let mut arrival = now_ns();
    loop {
        body.clear();
        let finished = match &mut framing {
            Framing::Chunked(c) => {
                c.feed(&pending, &mut body)?;
                c.done()
            }
            Framing::Length(left) => {
                let n = (*left).min(pending.len() as u64) as usize;
                body.extend_from_slice(&pending[..n]);
                *left -= n as u64;
                *left == 0
            }
            Framing::UntilClose => {
                body.extend_from_slice(&pending);
                false
            }
        };
        sse.feed(&body, &mut |data: &[u8]| match json_int(data, "t") {
            Some(t) => transits.push(arrival - t),
            None => bad_events += 1,
        });
        if finished {
            break;
        }
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            Err(e) => return Err(format!("read body after {} events: {e}", transits.len())),
        };
        arrival = now_ns();
        if n == 0 {
            match framing {
                Framing::UntilClose => break,
                _ => {
                    return Err(format!(
                        "connection closed mid-body after {} events",
                        transits.len()
                    ))
                }
            }
        }
        pending.clear();
        pending.extend_from_slice(&buf[..n]);
    }
    drop(s);
    if bad_events > 0 {
        eprintln!("sse-bench client: {bad_events} events without a \"t\" field");
    }
    Ok(transits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_and_sse_split_anywhere() {
        let mut wire = Vec::new();
        for i in 0..5 {
            let d = format!("data: {{\"t\":{},\"i\":{i}}}\n\n", 1000 + i);
            wire.extend_from_slice(format!("{:x};ext=1\r\n{d}\r\n", d.len()).as_bytes());
        }
        wire.extend_from_slice(b"0\r\nx-trailer: 1\r\n\r\n");
        for step in 1..wire.len() {
            let mut c = Chunked::Size(Vec::new());
            let mut p = SseParser::new();
            let mut ts = Vec::new();
            for piece in wire.chunks(step) {
                let mut body = Vec::new();
                c.feed(piece, &mut body).unwrap();
                p.feed(&body, &mut |d: &[u8]| ts.push(json_int(d, "t").unwrap()));
            }
            assert!(c.done(), "step {step}");
            assert_eq!(ts, vec![1000, 1001, 1002, 1003, 1004], "step {step}");
        }
    }
}
