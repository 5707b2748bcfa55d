//! Byte-level HTTP/1.1 reading used by both sides of the tests: the raw client and the mock
//! upstreams. Deliberately independent of the gateway's own codec (no httparse) so a bug shared
//! with the code under test cannot hide. Lenient where the gateway must be strict: this side only
//! has to understand well-formed traffic and report exactly what arrived.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Failure guard for every blocking read or wait in the suite. Never a performance assertion.
pub const GUARD: Duration = Duration::from_secs(10);

/// Raw bytes kept per connection for assertions; big-body tests go past it and are not recorded.
const RECORD_CAP: usize = 8 << 20;

/// A parsed start line and header block, in arrival order, names as sent.
#[derive(Clone, Debug, Default)]
pub struct Head {
    pub start_line: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn has(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// Status code of a response head; 0 when the start line is not a status line.
    pub fn status(&self) -> u16 {
        self.start_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    pub fn method(&self) -> &str {
        self.start_line.split(' ').next().unwrap_or("")
    }

    pub fn target(&self) -> &str {
        self.start_line.split(' ').nth(1).unwrap_or("")
    }

    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"))
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
    }

    /// True when the `Connection` header lists `token`.
    pub fn connection_has(&self, token: &str) -> bool {
        self.headers_named("connection")
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the peer closes (responses only).
    Close,
}

impl Framing {
    pub fn of_request(head: &Head) -> Framing {
        if head.is_chunked() {
            Framing::Chunked
        } else {
            match head.content_length() {
                Some(0) | None => Framing::Empty,
                Some(n) => Framing::Length(n),
            }
        }
    }

    pub fn of_response(head: &Head, request_method: &str) -> Framing {
        let status = head.status();
        if request_method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&status)
            || status == 204
            || status == 304
        {
            Framing::Empty
        } else if head.is_chunked() {
            Framing::Chunked
        } else {
            match head.content_length() {
                Some(0) => Framing::Empty,
                Some(n) => Framing::Length(n),
                None => Framing::Close,
            }
        }
    }
}

/// A whole message as received. `complete` is false when the peer closed before the framing said
/// the body was over (a cut Content-Length body, a chunked body without its terminal chunk).
#[derive(Clone, Debug, Default)]
pub struct Message {
    pub head: Head,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    pub complete: bool,
}

impl Message {
    pub fn status(&self) -> u16 {
        self.head.status()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body_str()))
    }

    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Copy, Debug)]
enum BodyState {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    Close,
    Done,
}

/// One TCP connection with a read buffer, a record of every byte read, and an optional body in
/// progress so bodies can be consumed piece by piece (streaming tests).
pub struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    record: Arc<Mutex<Vec<u8>>>,
    eof: bool,
    body: BodyState,
    trailers: Vec<(String, String)>,
}

impl HttpConn {
    pub fn new(stream: TcpStream, record: Arc<Mutex<Vec<u8>>>, read_timeout: Duration) -> HttpConn {
        stream
            .set_read_timeout(Some(read_timeout))
            .expect("set_read_timeout");
        stream
            .set_write_timeout(Some(GUARD * 3))
            .expect("set_write_timeout");
        let _ = stream.set_nodelay(true);
        HttpConn {
            stream,
            buf: Vec::new(),
            pos: 0,
            record,
            eof: false,
            body: BodyState::Done,
            trailers: Vec::new(),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Every byte read so far (up to the record cap).
    pub fn recorded(&self) -> Vec<u8> {
        self.record.lock().unwrap().clone()
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Reads once more from the socket; Ok(0) means the peer closed (or reset).
    fn fill(&mut self) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut tmp = [0u8; 64 * 1024];
        let n = match self.stream.read(&mut tmp) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return self.fill(),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => 0,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "read timed out (test guard)",
                ))
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            self.eof = true;
        }
        let mut rec = self.record.lock().unwrap();
        if rec.len() < RECORD_CAP {
            rec.extend_from_slice(&tmp[..n]);
        }
        drop(rec);
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    /// Reads a line ending in CRLF (returned without it).
    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = find(self.available(), b"\r\n") {
                let line = String::from_utf8_lossy(&self.available()[..i]).into_owned();
                self.consume(i + 2);
                return Ok(line);
            }
            if self.available().len() > 1 << 20 {
                return Err(invalid("line longer than 1 MiB"));
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed mid-line",
                ));
            }
        }
    }

    /// Reads the next message head. Ok(None) when the peer closed cleanly before sending a byte.
    pub fn read_head(&mut self) -> io::Result<Option<Head>> {
        loop {
            if let Some(i) = find(self.available(), b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&self.available()[..i]).into_owned();
                self.consume(i + 4);
                let mut lines = text.split("\r\n");
                let start_line = lines.next().unwrap_or("").to_string();
                let headers = lines.map(parse_field).collect();
                return Ok(Some(Head {
                    start_line,
                    headers,
                }));
            }
            if self.available().len() > 1 << 20 {
                return Err(invalid("head longer than 1 MiB"));
            }
            if self.fill()? == 0 {
                if self.available().is_empty() {
                    return Ok(None);
                }
                let partial = String::from_utf8_lossy(self.available()).into_owned();
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("peer closed mid-head: {partial:?}"),
                ));
            }
        }
    }

    /// Starts reading a body with the given framing; pieces come from [`HttpConn::next_piece`].
    pub fn begin_body(&mut self, framing: Framing) {
        self.trailers.clear();
        self.body = match framing {
            Framing::Empty | Framing::Length(0) => BodyState::Done,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::ChunkSize,
            Framing::Close => BodyState::Close,
        };
    }

    /// Next piece of decoded body data. Ok(None) once the body is complete; an `UnexpectedEof`
    /// error when the peer closed before the framing was satisfied.
    pub fn next_piece(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            match self.body {
                BodyState::Done => return Ok(None),
                BodyState::Length(remaining) | BodyState::ChunkData(remaining) => {
                    if self.available().is_empty() && self.fill()? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "peer closed mid-body",
                        ));
                    }
                    let n = (remaining as usize).min(self.available().len());
                    let piece = self.available()[..n].to_vec();
                    self.consume(n);
                    let left = remaining - n as u64;
                    self.body = match (self.body, left) {
                        (BodyState::Length(_), 0) => BodyState::Done,
                        (BodyState::Length(_), l) => BodyState::Length(l),
                        (_, 0) => BodyState::ChunkDataEnd,
                        (_, l) => BodyState::ChunkData(l),
                    };
                    return Ok(Some(piece));
                }
                BodyState::ChunkSize => {
                    let line = self.read_line()?;
                    let size_text = line.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(size_text, 16)
                        .map_err(|_| invalid(&format!("bad chunk size line {line:?}")))?;
                    self.body = if size == 0 {
                        BodyState::Trailers
                    } else {
                        BodyState::ChunkData(size)
                    };
                }
                BodyState::ChunkDataEnd => {
                    let line = self.read_line()?;
                    if !line.is_empty() {
                        return Err(invalid(&format!(
                            "chunk data not followed by CRLF: {line:?}"
                        )));
                    }
                    self.body = BodyState::ChunkSize;
                }
                BodyState::Trailers => {
                    let line = self.read_line()?;
                    if line.is_empty() {
                        self.body = BodyState::Done;
                    } else {
                        let field = parse_field(&line);
                        self.trailers.push(field);
                    }
                }
                BodyState::Close => {
                    if self.available().is_empty() && self.fill()? == 0 {
                        self.body = BodyState::Done;
                        return Ok(None);
                    }
                    let piece = self.available().to_vec();
                    self.consume(piece.len());
                    return Ok(Some(piece));
                }
            }
        }
    }

    /// Trailers of the body just finished.
    pub fn trailers(&self) -> Vec<(String, String)> {
        self.trailers.clone()
    }

    /// Reads the rest of the current body. Returns (data, complete); complete is false when the
    /// peer closed early. Other errors (the guard timing out, garbage framing) are returned.
    pub fn read_rest(&mut self) -> io::Result<(Vec<u8>, bool)> {
        let mut data = Vec::new();
        loop {
            match self.next_piece() {
                Ok(Some(p)) => data.extend_from_slice(&p),
                Ok(None) => return Ok((data, true)),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok((data, false)),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads a head and its whole body. `response_to` is the request method for responses, None
    /// when reading a request.
    pub fn read_message(&mut self, response_to: Option<&str>) -> io::Result<Option<Message>> {
        let Some(head) = self.read_head()? else {
            return Ok(None);
        };
        let framing = match response_to {
            Some(method) => Framing::of_response(&head, method),
            None => Framing::of_request(&head),
        };
        self.begin_body(framing);
        let (body, complete) = self.read_rest()?;
        Ok(Some(Message {
            head,
            body,
            trailers: self.trailers(),
            complete,
        }))
    }

    /// Waits until the peer closes the connection (EOF or reset). Returns any bytes that arrived
    /// first; Err if the guard ran out while the connection stayed open.
    pub fn wait_closed(&mut self) -> io::Result<Vec<u8>> {
        let mut extra = self.available().to_vec();
        self.consume(extra.len());
        loop {
            match self.fill()? {
                0 => return Ok(extra),
                _ => {
                    extra.extend_from_slice(self.available());
                    self.consume(self.available().len());
                }
            }
        }
    }
}

fn parse_field(line: &str) -> (String, String) {
    match line.split_once(':') {
        Some((n, v)) => (
            n.to_string(),
            v.trim_matches(|c| c == ' ' || c == '\t').to_string(),
        ),
        None => (line.to_string(), String::new()),
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

/// Builds a response with Content-Length. `headers` are raw `name: value` lines without CRLF.
pub fn response(status: u16, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status)).into_bytes();
    for h in headers {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

/// Encodes one chunk (no extension).
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// Encodes a whole chunked body: the chunks, then the terminal chunk with optional trailers.
pub fn chunked_body(chunks: &[&[u8]], trailers: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(&chunk(c));
    }
    out.extend_from_slice(b"0\r\n");
    for t in trailers {
        out.extend_from_slice(t.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

/// Deterministic byte pattern for big bodies: position-dependent so a dropped, duplicated or
/// reordered piece is caught, not just a wrong length.
pub fn pattern_byte(offset: u64) -> u8 {
    ((offset.wrapping_mul(7) ^ (offset >> 13)) % 251) as u8
}

pub fn fill_pattern(offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(offset + i as u64);
    }
}

/// Checks a received piece against the pattern; returns the first bad absolute offset.
pub fn check_pattern(offset: u64, piece: &[u8]) -> Option<u64> {
    piece
        .iter()
        .enumerate()
        .find(|(i, b)| **b != pattern_byte(offset + *i as u64))
        .map(|(i, _)| offset + i as u64)
}
