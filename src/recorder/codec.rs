//! The payload inside one record's zstd frame: a record index, then one or more tagged events.
//!
//! ```text
//! payload  = varint(record_index) item+
//! item     = 0x7f varint(len) seal-json                     (alone in the last record)
//!          | tag varint(sid) body
//! body     = chunk:  varint(offset_us) varint(len) bytes     (RequestChunk 3, ResponseChunk 5,
//!                                                             UpstreamChunk 8)
//!          | other:  varint(len) json-or-utf8                (Start 1, Continue 2, Head 4,
//!                                                             Trailers 6, End 7)
//! ```
//!
//! Chunks are binary because they are most of the volume and JSON would escape every quote of an
//! SSE line; the rare metadata events are JSON so fields can be added without a format bump.
//! `sid` is the writer's small per-segment session number: repeating a 36-byte request id in
//! every chunk would cost more than the compressed chunk itself. Decoding is pure and total:
//! any input gives `Ok` or a [`CodecError`], never a panic or an allocation larger than the
//! input.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::model::{Chunk, Event, ResponseHead, SessionEnd, SessionStart, Trailers};

const TAG_START: u8 = 1;
const TAG_CONTINUE: u8 = 2;
const TAG_REQUEST_CHUNK: u8 = 3;
const TAG_RESPONSE_HEAD: u8 = 4;
const TAG_RESPONSE_CHUNK: u8 = 5;
const TAG_TRAILERS: u8 = 6;
const TAG_END: u8 = 7;
const TAG_UPSTREAM_CHUNK: u8 = 8;
const TAG_SEAL: u8 = 0x7f;

/// The last record of a finished segment: how many records came before it and the chain head
/// (the SHA-256 of the record before it), optionally signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// Records in the segment before the seal.
    pub records: u64,
    /// Hex SHA-256 of the last record before the seal: the chain head being sealed.
    pub head: String,
    pub sealed_at_us: u64,
    /// Hex Ed25519 signature over [`seal_message`], when a signing key is configured.
    #[serde(default)]
    pub signature: Option<String>,
}

/// One decoded item of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Session { sid: u64, event: Event },
    Seal(Seal),
}

/// A decoded record payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub index: u64,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    Truncated,
    BadVarint,
    UnknownTag(u8),
    Json(String),
    Utf8,
    Empty,
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Truncated => f.write_str("payload ends inside an item"),
            CodecError::BadVarint => f.write_str("malformed varint"),
            CodecError::UnknownTag(t) => write!(f, "unknown item tag {t:#04x}"),
            CodecError::Json(e) => write!(f, "bad event: {e}"),
            CodecError::Utf8 => f.write_str("request id is not UTF-8"),
            CodecError::Empty => f.write_str("record has no items"),
        }
    }
}

/// The bytes an Ed25519 seal signature covers.
pub fn seal_message(worker: u32, seq: u64, records: u64, head: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(b"modelgate seal v1\0");
    m.extend_from_slice(&worker.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(&records.to_le_bytes());
    m.extend_from_slice(head);
    m
}

// === encoding ===

pub fn put_varint(out: &mut Vec<u8>, v: u64) {
    let mut buf = [0u8; 10];
    let n = varint_into(&mut buf, v);
    out.extend_from_slice(&buf[..n]);
}

pub fn begin_payload(out: &mut Vec<u8>, index: u64) {
    put_varint(out, index);
}

/// Appends one session event. Serializing our own structs to JSON cannot fail (no maps with
/// non-string keys, no non-finite floats), so a failure is reported as an empty object rather
/// than a panic; the reader would then flag the event.
pub fn put_event(out: &mut Vec<u8>, sid: u64, event: &Event) {
    match event {
        Event::SessionStart(s) => put_start(out, sid, s),
        Event::SessionContinue { request_id } => {
            put_head(out, TAG_CONTINUE, sid);
            put_bytes(out, request_id.as_bytes());
        }
        Event::RequestChunk(c) => put_chunk(out, TAG_REQUEST_CHUNK, sid, c.offset_us, &c.data),
        Event::ResponseHead(h) => put_response_head(out, sid, h),
        Event::ResponseChunk(c) => put_chunk(out, TAG_RESPONSE_CHUNK, sid, c.offset_us, &c.data),
        Event::UpstreamChunk(c) => put_chunk(out, TAG_UPSTREAM_CHUNK, sid, c.offset_us, &c.data),
        Event::Trailers(t) => put_trailers(out, sid, t),
        Event::SessionEnd(e) => put_end(out, sid, e),
    }
}

// The metadata events by reference, so the writer need not build an owned `Event` (a copy of
// every header string) for each.

pub fn put_start<H: Serialize>(out: &mut Vec<u8>, sid: u64, start: &SessionStart<H>) {
    put_json(out, TAG_START, sid, start)
}

pub fn put_response_head<H: Serialize>(out: &mut Vec<u8>, sid: u64, head: &ResponseHead<H>) {
    put_json(out, TAG_RESPONSE_HEAD, sid, head)
}

pub fn put_trailers(out: &mut Vec<u8>, sid: u64, trailers: &Trailers) {
    put_json(out, TAG_TRAILERS, sid, trailers)
}

pub fn put_end(out: &mut Vec<u8>, sid: u64, end: &SessionEnd) {
    put_json(out, TAG_END, sid, end)
}

/// Appends a chunk without building an [`Event`] (the hot path: no copy of the body).
pub fn put_chunk(out: &mut Vec<u8>, tag: u8, sid: u64, offset_us: u64, data: &[u8]) {
    put_head(out, tag, sid);
    put_varint(out, offset_us);
    put_bytes(out, data);
}

pub const fn request_chunk_tag() -> u8 {
    TAG_REQUEST_CHUNK
}

pub const fn response_chunk_tag() -> u8 {
    TAG_RESPONSE_CHUNK
}

pub const fn upstream_chunk_tag() -> u8 {
    TAG_UPSTREAM_CHUNK
}

pub fn put_seal(out: &mut Vec<u8>, seal: &Seal) {
    out.push(TAG_SEAL);
    put_bytes(
        out,
        &serde_json::to_vec(seal).unwrap_or_else(|_| b"{}".to_vec()),
    );
}

fn put_head(out: &mut Vec<u8>, tag: u8, sid: u64) {
    out.push(tag);
    put_varint(out, sid);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// JSON straight into `out`, then its length in front of it: no temporary buffer.
fn put_json<T: Serialize>(out: &mut Vec<u8>, tag: u8, sid: u64, v: &T) {
    put_head(out, tag, sid);
    let at = out.len();
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.truncate(at);
        out.extend_from_slice(b"{}");
    }
    let mut prefix = [0u8; 10];
    let n = varint_into(&mut prefix, (out.len() - at) as u64);
    out.splice(at..at, prefix[..n].iter().copied());
}

/// `v` as a varint in `buf`; returns its length.
fn varint_into(buf: &mut [u8; 10], mut v: u64) -> usize {
    let mut n = 0;
    while v >= 0x80 {
        buf[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    buf[n] = v as u8;
    n + 1
}

// === decoding ===

struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v: u64 = 0;
        for (i, &b) in self.buf.iter().enumerate().take(10) {
            let part = u64::from(b & 0x7f);
            if i == 9 && part > 1 {
                return Err(CodecError::BadVarint);
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                self.buf = &self.buf[i + 1..];
                return Ok(v);
            }
        }
        Err(if self.buf.len() < 10 {
            CodecError::Truncated
        } else {
            CodecError::BadVarint
        })
    }

    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| CodecError::Truncated)?;
        if len > self.buf.len() {
            return Err(CodecError::Truncated);
        }
        let (b, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(b)
    }

    fn byte(&mut self) -> Result<u8, CodecError> {
        let (&b, rest) = self.buf.split_first().ok_or(CodecError::Truncated)?;
        self.buf = rest;
        Ok(b)
    }
}

fn json<'de, T: Deserialize<'de>>(b: &'de [u8]) -> Result<T, CodecError> {
    serde_json::from_slice(b).map_err(|e| CodecError::Json(e.to_string()))
}

pub fn decode_payload(buf: &[u8]) -> Result<Payload, CodecError> {
    let (payload, cut) = decode(buf)?;
    match cut {
        Some(e) => Err(e),
        None if payload.items.is_empty() => Err(CodecError::Empty),
        None => Ok(payload),
    }
}

/// Decodes the payload of an open streamed record, which a crash in the middle of a write may
/// have cut inside an item: the complete items, and whether one was cut off.
pub fn decode_payload_prefix(buf: &[u8]) -> Result<(Payload, bool), CodecError> {
    let (payload, cut) = decode(buf)?;
    Ok((payload, cut.is_some()))
}

/// The items up to the first that ends early (returned as the error beside them).
fn decode(buf: &[u8]) -> Result<(Payload, Option<CodecError>), CodecError> {
    let mut c = Cursor { buf };
    let index = c.varint()?;
    let mut items = Vec::new();
    while !c.buf.is_empty() {
        match item(&mut c) {
            Ok(i) => items.push(i),
            Err(CodecError::Truncated) => {
                return Ok((Payload { index, items }, Some(CodecError::Truncated)))
            }
            Err(e) => return Err(e),
        }
    }
    Ok((Payload { index, items }, None))
}

fn item(c: &mut Cursor<'_>) -> Result<Item, CodecError> {
    let tag = c.byte()?;
    if tag == TAG_SEAL {
        return Ok(Item::Seal(json(c.bytes()?)?));
    }
    let sid = c.varint()?;
    let event = match tag {
        TAG_REQUEST_CHUNK | TAG_RESPONSE_CHUNK | TAG_UPSTREAM_CHUNK => {
            let offset_us = c.varint()?;
            let chunk = Chunk {
                offset_us,
                data: c.bytes()?.to_vec(),
            };
            match tag {
                TAG_REQUEST_CHUNK => Event::RequestChunk(chunk),
                TAG_RESPONSE_CHUNK => Event::ResponseChunk(chunk),
                _ => Event::UpstreamChunk(chunk),
            }
        }
        TAG_START => Event::SessionStart(Box::new(json(c.bytes()?)?)),
        TAG_CONTINUE => Event::SessionContinue {
            request_id: String::from_utf8(c.bytes()?.to_vec()).map_err(|_| CodecError::Utf8)?,
        },
        TAG_RESPONSE_HEAD => Event::ResponseHead(json(c.bytes()?)?),
        TAG_TRAILERS => Event::Trailers(json(c.bytes()?)?),
        TAG_END => Event::SessionEnd(json(c.bytes()?)?),
        other => return Err(CodecError::UnknownTag(other)),
    };
    Ok(Item::Session { sid, event })
}

// === hex ===

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().as_bytes();
    if s.len() % 2 != 0 {
        return None;
    }
    let nibble = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    s.chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(Cursor { buf: &b }.varint(), Ok(v));
        }
    }

    #[test]
    fn an_overlong_varint_is_an_error_not_a_panic() {
        assert_eq!(
            Cursor { buf: &[0xff; 11] }.varint(),
            Err(CodecError::BadVarint)
        );
        assert_eq!(
            Cursor { buf: &[0x80, 0x80] }.varint(),
            Err(CodecError::Truncated)
        );
    }

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        assert_eq!(
            unhex(&hex(&[0, 1, 0xab, 0xff])),
            Some(vec![0, 1, 0xab, 0xff])
        );
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("abc"), None);
    }
}
