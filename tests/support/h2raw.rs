//! HTTP/2 frames written by hand, for the flood tests: what a hostile client sends is exactly
//! what no well-behaved library would let a test send.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const GOAWAY: u8 = 7;
pub const CONTINUATION: u8 = 9;
pub const DATA: u8 = 0;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame: 9-byte header and payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK block for `GET http://localhost/path` from the static table (`:method GET`,
/// `:scheme http`) and literals without indexing.
pub fn get_block(path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x86];
    literal(&mut b, 4, path); // :path
    literal(&mut b, 1, "localhost"); // :authority
    b
}

/// An HPACK block for a `POST` to `path` with extra literal fields (new names, not indexed).
pub fn post_block(path: &str, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = vec![0x83, 0x86]; // :method POST, :scheme http
    literal(&mut b, 4, path);
    literal(&mut b, 1, "localhost");
    for (name, value) in fields {
        b.push(0x00);
        b.push(name.len() as u8);
        b.extend_from_slice(name.as_bytes());
        b.push(value.len() as u8);
        b.extend_from_slice(value.as_bytes());
    }
    b
}

/// One frame read off the server.
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// One read onto `buf`: `Some(true)` bytes came, `Some(false)` none yet (the read timed out),
/// `None` the connection ended.
fn read_some(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<bool> {
    let mut chunk = [0u8; 16384];
    match s.read(&mut chunk) {
        Ok(0) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(true)
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Some(false)
        }
        Err(_) => None,
    }
}

/// Splits the complete frames off the front of `buf`.
fn take_frames(buf: &mut Vec<u8>) -> Vec<Frame> {
    let mut out = Vec::new();
    while buf.len() >= 9 {
        let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
        if buf.len() < 9 + len {
            break;
        }
        out.push(Frame {
            kind: buf[3],
            flags: buf[4],
            stream: u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff,
            payload: buf[9..9 + len].to_vec(),
        });
        buf.drain(..9 + len);
    }
    out
}

/// The RST_STREAM error code the server sent for `stream`, reading frames until one arrives,
/// the connection closes, or `limit` passes.
pub fn wait_reset(s: &mut TcpStream, stream: u32, limit: Duration) -> Option<u32> {
    let deadline = std::time::Instant::now() + limit;
    let mut buf = Vec::new();
    while std::time::Instant::now() < deadline {
        read_some(s, &mut buf)?;
        for f in take_frames(&mut buf) {
            if f.kind == RST_STREAM && f.stream == stream && f.payload.len() == 4 {
                return Some(u32::from_be_bytes([
                    f.payload[0],
                    f.payload[1],
                    f.payload[2],
                    f.payload[3],
                ]));
            }
        }
    }
    None
}

/// Frames the server sent on `stream`, as (type, flags), read until the connection has been
/// quiet for `quiet` (or closed, or `limit` passed).
pub fn frames_on(
    s: &mut TcpStream,
    stream: u32,
    quiet: Duration,
    limit: Duration,
) -> Vec<(u8, u8)> {
    let deadline = std::time::Instant::now() + limit;
    let mut last = std::time::Instant::now();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while std::time::Instant::now() < deadline && last.elapsed() < quiet {
        match read_some(s, &mut buf) {
            None => break,
            Some(true) => last = std::time::Instant::now(),
            Some(false) => {}
        }
        for f in take_frames(&mut buf) {
            if f.stream == stream {
                out.push((f.kind, f.flags));
            }
        }
    }
    out
}

/// A literal header field without indexing, name from static table index `name` (< 15).
pub fn literal(out: &mut Vec<u8>, name: u8, value: &str) {
    assert!(name < 15 && value.len() < 127);
    out.push(name);
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
}

/// Connects, sends the preface and an empty SETTINGS frame.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s.write_all(PREFACE).unwrap();
    s.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
    s
}

/// How a connection ended, read until EOF or `limit` (whatever the server sent).
#[derive(Debug, Default)]
pub struct Ending {
    /// The GOAWAY error code, if one arrived.
    pub goaway: Option<u32>,
    /// The server closed the connection (EOF or reset).
    pub closed: bool,
}

/// Reads frames until the server closes or `limit` passes; notes any GOAWAY.
pub fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Ending {
    let deadline = std::time::Instant::now() + limit;
    let mut buf = Vec::new();
    let mut ending = Ending::default();
    while std::time::Instant::now() < deadline {
        if read_some(s, &mut buf).is_none() {
            ending.closed = true;
            break;
        }
        for f in take_frames(&mut buf) {
            if f.kind == GOAWAY && f.payload.len() >= 8 {
                let p = &f.payload;
                ending.goaway = Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
            }
        }
    }
    ending
}
