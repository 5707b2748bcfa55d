//! The scanner: any bytes in, records / corrupt stretches / tail state out. Pure, total and
//! bounded: lengths are checked before slicing and decompressed sizes are capped, so hostile
//! input costs at most its own size (fuzzed by `record_reader`).

use std::fmt;

use super::{
    arr, sha256, Hash, HeaderError, SegmentHeader, MAX_FRAME, MAX_PAYLOAD, RECORD_MAGIC,
    RECORD_OVERHEAD, ZSTD_MAGIC,
};
use crate::recorder::codec::{decode_payload, CodecError, Payload};

/// What the scanner found at one position of a segment.
#[derive(Debug)]
pub enum Piece {
    Record(RawRecord),
    /// Bytes that do not form a record, up to the next plausible record (or the end).
    Corrupt {
        offset: u64,
        len: u64,
        why: String,
    },
}

#[derive(Debug)]
pub struct RawRecord {
    pub offset: u64,
    pub len: u64,
    pub link: Hash,
    /// SHA-256 of the whole record: what the next record must link to.
    pub hash: Hash,
    pub payload: Result<Payload, FrameError>,
}

/// How the bytes after the last piece end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    Clean,
    /// A record starts at `offset` but the file ends after `have` of its `need` bytes.
    Truncated {
        offset: u64,
        have: u64,
        need: u64,
    },
}

#[derive(Debug)]
pub struct Scan {
    pub header: SegmentHeader,
    pub header_len: u64,
    pub header_hash: Hash,
    pub pieces: Vec<Piece>,
    pub tail: Tail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    Decompress(String),
    TooLarge,
    Payload(CodecError),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Decompress(e) => write!(f, "zstd frame does not decode: {e}"),
            FrameError::TooLarge => f.write_str("frame declares an implausible size"),
            FrameError::Payload(e) => write!(f, "record payload: {e}"),
        }
    }
}

/// Scans a whole segment. Never panics; all damage is described in the result.
pub fn scan(buf: &[u8]) -> Result<Scan, HeaderError> {
    let (header, header_len) = SegmentHeader::parse(buf)?;
    let mut dec = zstd::bulk::Decompressor::with_dictionary(&header.dict)
        .map_err(|_| HeaderError::DictTooLarge(header.dict.len() as u32))?;
    let mut pieces = Vec::new();
    let mut pos = header_len;
    let mut tail = Tail::Clean;
    while pos < buf.len() {
        match record_at(buf, pos) {
            Ok((link, frame_len)) => {
                let end = pos + RECORD_OVERHEAD + frame_len;
                let frame = &buf[pos + RECORD_OVERHEAD..end];
                pieces.push(Piece::Record(RawRecord {
                    offset: pos as u64,
                    len: (end - pos) as u64,
                    link,
                    hash: sha256(&buf[pos..end]),
                    payload: decode_frame(&mut dec, frame),
                }));
                pos = end;
            }
            Err(Bad::Short { need }) => {
                // A length edited to run past the end looks like a cut file; a plausible record
                // further on shows it is damage in the middle instead.
                let next = resync(buf, pos + 1);
                if next < buf.len() {
                    pieces.push(Piece::Corrupt {
                        offset: pos as u64,
                        len: (next - pos) as u64,
                        why: "record length runs past a later record".into(),
                    });
                    pos = next;
                    continue;
                }
                let have = (buf.len() - pos) as u64;
                tail = Tail::Truncated {
                    offset: pos as u64,
                    have,
                    need: need as u64,
                };
                break;
            }
            Err(Bad::Junk(why)) => {
                let next = resync(buf, pos + 1);
                pieces.push(Piece::Corrupt {
                    offset: pos as u64,
                    len: (next - pos) as u64,
                    why,
                });
                pos = next;
            }
        }
    }
    Ok(Scan {
        header_hash: sha256(&buf[..header_len]),
        header,
        header_len: header_len as u64,
        pieces,
        tail,
    })
}

enum Bad {
    /// Plausible so far, but the file ends first: `need` bytes for the whole record.
    Short {
        need: usize,
    },
    Junk(String),
}

/// Checks the envelope of a record at `pos`: returns its link and frame length.
fn record_at(buf: &[u8], pos: usize) -> Result<(Hash, usize), Bad> {
    let rest = &buf[pos..];
    let have = rest.len().min(4);
    if rest[..have] != RECORD_MAGIC[..have] {
        return Err(Bad::Junk("no record magic".into()));
    }
    if rest.len() < 8 {
        return Err(Bad::Short {
            need: RECORD_OVERHEAD,
        });
    }
    let frame_len = u32::from_le_bytes(arr(&rest[4..8])) as usize;
    if !(ZSTD_MAGIC.len()..=MAX_FRAME).contains(&frame_len) {
        return Err(Bad::Junk(format!("implausible record length {frame_len}")));
    }
    let need = RECORD_OVERHEAD + frame_len;
    let zstd_have = rest.len().saturating_sub(RECORD_OVERHEAD).min(4);
    if rest.len() > RECORD_OVERHEAD
        && rest[RECORD_OVERHEAD..RECORD_OVERHEAD + zstd_have] != ZSTD_MAGIC[..zstd_have]
    {
        return Err(Bad::Junk("record does not hold a zstd frame".into()));
    }
    if rest.len() < need {
        return Err(Bad::Short { need });
    }
    Ok((arr(&rest[8..40]), frame_len))
}

/// The next offset at or after `from` where a record envelope looks plausible, else the end.
fn resync(buf: &[u8], from: usize) -> usize {
    let mut i = from;
    while i + 4 <= buf.len() {
        if &buf[i..i + 4] == RECORD_MAGIC && !matches!(record_at(buf, i), Err(Bad::Junk(_))) {
            return i;
        }
        i += 1;
    }
    buf.len()
}

fn decode_frame(
    dec: &mut zstd::bulk::Decompressor<'_>,
    frame: &[u8],
) -> Result<Payload, FrameError> {
    let size = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(n)) if n <= MAX_PAYLOAD as u64 => n as usize,
        Ok(_) => return Err(FrameError::TooLarge),
        Err(_) => return Err(FrameError::Decompress("bad frame header".into())),
    };
    let raw = dec
        .decompress(frame, size)
        .map_err(|e| FrameError::Decompress(e.to_string()))?;
    decode_payload(&raw).map_err(FrameError::Payload)
}
