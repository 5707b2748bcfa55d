//! The scanner: any bytes in, records / corrupt stretches / tail state out. Pure, total and
//! bounded: lengths are checked before slicing and each record's decompressed size is capped
//! (`MAX_PAYLOAD`), so hostile input cannot make it loop or allocate without bound (fuzzed by
//! `record_reader`).

use std::fmt;

use zstd::zstd_safe::{DCtx, DParameter, InBuffer, OutBuffer, ResetDirective};

use super::zframe::{self, Extent};
use super::{
    arr, sha256, Hash, HeaderError, SegmentHeader, MAX_FRAME, MAX_PAYLOAD, RECORD_MAGIC,
    RECORD_OVERHEAD, STREAM_MAGIC, STREAM_OVERHEAD, ZSTD_MAGIC,
};
use crate::recorder::codec::{decode_payload, decode_payload_prefix, CodecError, Payload};

/// Largest zstd window a reader accepts (the writer's levels use at most 2 MiB), so a hostile
/// frame header cannot make it allocate 128 MiB.
const MAX_WINDOW_LOG: u32 = 23;

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
    /// A streamed record whose frame has not ended (being written, or the writer stopped):
    /// `len` covers its complete blocks, whose events `payload` holds.
    pub open: bool,
}

/// How the bytes after the last piece end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    Clean,
    /// A record (or, in an open streamed record, a block) starts at `offset` but the file ends
    /// after `have` of its `need` bytes.
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
    let bad_dict = || HeaderError::DictTooLarge(header.dict.len() as u32);
    let mut dec = Decoder {
        bulk: zstd::bulk::Decompressor::with_dictionary(&header.dict).map_err(|_| bad_dict())?,
        stream: None,
        dict: &header.dict,
    };
    let mut pieces = Vec::new();
    let mut pos = header_len;
    let mut tail = Tail::Clean;
    while pos < buf.len() {
        let envelope = match record_at(buf, pos) {
            Ok(e) => e,
            Err(Bad::Short { need }) => {
                // A length edited to run past the end looks like a cut file; a plausible record
                // further on shows it is damage in the middle instead.
                let next = resync(buf, pos + 1);
                if next < buf.len() {
                    pos = skip(
                        &mut pieces,
                        pos,
                        next,
                        "record length runs past a later record",
                    );
                    continue;
                }
                tail = Tail::Truncated {
                    offset: pos as u64,
                    have: (buf.len() - pos) as u64,
                    need: need as u64,
                };
                break;
            }
            Err(Bad::Junk(why)) => {
                pos = skip(&mut pieces, pos, resync(buf, pos + 1), why);
                continue;
            }
        };
        let (link, start, extent) = match envelope {
            Envelope::Closed { link, frame_len } => {
                (link, pos + RECORD_OVERHEAD, Extent::Complete(frame_len))
            }
            Envelope::Streamed { link } => {
                let start = pos + STREAM_OVERHEAD;
                (link, start, zframe::extent(&buf[start..]))
            }
        };
        match extent {
            Extent::Complete(n) => {
                let end = start + n;
                let payload = match envelope {
                    Envelope::Closed { .. } => dec.closed(&buf[start..end]),
                    Envelope::Streamed { .. } => dec.streamed(&buf[start..end], true),
                };
                pieces.push(record(buf, pos..end, link, payload, false));
                pos = end;
            }
            Extent::Invalid { whole, why } => {
                let why = format!("streamed record: {why}");
                // Damage after whole blocks with no record after it (a zero-filled tail after
                // power loss, say) is the open last record's torn tail: its whole blocks still
                // read. Anywhere else the record is corrupt as a whole.
                if whole > 0 && resync(buf, start + whole) == buf.len() {
                    let (open, _) = dec.open_record(buf, pos, start + whole, link);
                    pieces.push(open);
                    pos = skip(&mut pieces, start + whole, buf.len(), why);
                } else {
                    pos = skip(&mut pieces, pos, resync(buf, pos + 1), why);
                }
            }
            Extent::Open { whole, need } => {
                // The frame runs past the end of the file: the last record, open, unless a
                // record follows its last whole block (a damaged block length swallowed it).
                // Only what follows the whole blocks is searched: recorded bytes inside them
                // may spell a record magic.
                let next = resync(buf, start + whole);
                if next < buf.len() {
                    let why = "streamed record runs into the next record";
                    pos = skip(&mut pieces, pos, next, why);
                    continue;
                }
                let mut cut_inside = false;
                if whole > 0 {
                    let (open, cut) = dec.open_record(buf, pos, start + whole, link);
                    pieces.push(open);
                    cut_inside = cut;
                }
                let from = if whole > 0 { start + whole } else { pos };
                if buf.len() > from || cut_inside {
                    tail = Tail::Truncated {
                        offset: from as u64,
                        have: (buf.len() - from) as u64,
                        need: (start + need - from) as u64,
                    };
                }
                break;
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

/// Notes `pos..next` as a corrupt stretch; returns where scanning goes on.
fn skip(pieces: &mut Vec<Piece>, pos: usize, next: usize, why: impl Into<String>) -> usize {
    pieces.push(Piece::Corrupt {
        offset: pos as u64,
        len: (next - pos) as u64,
        why: why.into(),
    });
    next
}

fn record(
    buf: &[u8],
    at: std::ops::Range<usize>,
    link: Hash,
    payload: Result<(Payload, bool), FrameError>,
    open: bool,
) -> Piece {
    Piece::Record(RawRecord {
        offset: at.start as u64,
        len: at.len() as u64,
        link,
        hash: sha256(&buf[at]),
        payload: payload.map(|(p, _)| p),
        open,
    })
}

enum Bad {
    /// Plausible so far, but the file ends first: `need` bytes for the whole record.
    Short {
        need: usize,
    },
    Junk(String),
}

#[derive(Clone, Copy)]
enum Envelope {
    /// Length-prefixed: the frame is the next `frame_len` bytes.
    Closed { link: Hash, frame_len: usize },
    /// Streamed: the frame's own end is the record's end.
    Streamed { link: Hash },
}

/// Checks the envelope of a record at `pos`.
fn record_at(buf: &[u8], pos: usize) -> Result<Envelope, Bad> {
    let rest = &buf[pos..];
    let have = rest.len().min(4);
    let streamed = rest[..have] == STREAM_MAGIC[..have] && have == 4;
    if rest[..have] != RECORD_MAGIC[..have] && !streamed {
        return Err(Bad::Junk("no record magic".into()));
    }
    let overhead = if streamed {
        STREAM_OVERHEAD
    } else {
        RECORD_OVERHEAD
    };
    let zstd_have = rest.len().saturating_sub(overhead).min(4);
    if rest.len() > overhead && rest[overhead..overhead + zstd_have] != ZSTD_MAGIC[..zstd_have] {
        return Err(Bad::Junk("record does not hold a zstd frame".into()));
    }
    if streamed {
        if rest.len() <= STREAM_OVERHEAD {
            return Err(Bad::Short {
                need: STREAM_OVERHEAD + 1,
            });
        }
        return Ok(Envelope::Streamed {
            link: arr(&rest[4..36]),
        });
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
    if rest.len() < need {
        return Err(Bad::Short { need });
    }
    Ok(Envelope::Closed {
        link: arr(&rest[8..40]),
        frame_len,
    })
}

/// The next offset at or after `from` where a record envelope looks plausible, else the end.
fn resync(buf: &[u8], from: usize) -> usize {
    let mut i = from;
    while i + 4 <= buf.len() {
        let magic = &buf[i..i + 4];
        if (magic == RECORD_MAGIC || magic == STREAM_MAGIC)
            && !matches!(record_at(buf, i), Err(Bad::Junk(_)))
        {
            return i;
        }
        i += 1;
    }
    buf.len()
}

/// The segment's decompressors: the bulk one for length-prefixed frames (which carry their
/// content size), a streaming one, made on first use, for streamed frames.
struct Decoder<'a> {
    bulk: zstd::bulk::Decompressor<'static>,
    stream: Option<DCtx<'static>>,
    dict: &'a [u8],
}

impl Decoder<'_> {
    fn closed(&mut self, frame: &[u8]) -> Result<(Payload, bool), FrameError> {
        let size = match zstd::zstd_safe::get_frame_content_size(frame) {
            Ok(Some(n)) if n <= MAX_PAYLOAD as u64 => n as usize,
            Ok(_) => return Err(FrameError::TooLarge),
            Err(_) => return Err(FrameError::Decompress("bad frame header".into())),
        };
        let raw = self
            .bulk
            .decompress(frame, size)
            .map_err(|e| FrameError::Decompress(e.to_string()))?;
        let payload = decode_payload(&raw).map_err(FrameError::Payload)?;
        Ok((payload, false))
    }

    /// The open streamed record at `pos` whose whole blocks end at `end`, and whether its
    /// payload ends inside an item (a write cut short).
    fn open_record(&mut self, buf: &[u8], pos: usize, end: usize, link: Hash) -> (Piece, bool) {
        let start = pos + STREAM_OVERHEAD;
        let payload = self.streamed(&buf[start..end], false);
        let cut = matches!(payload, Ok((_, true)));
        (record(buf, pos..end, link, payload, true), cut)
    }

    /// Decodes a streamed frame: whole (`complete`, its checksum verified) or the complete
    /// blocks of an open one, whose payload may end inside an item (returned as `true`).
    fn streamed(&mut self, frame: &[u8], complete: bool) -> Result<(Payload, bool), FrameError> {
        let raw = self.inflate(frame, complete)?;
        if complete {
            return Ok((decode_payload(&raw).map_err(FrameError::Payload)?, false));
        }
        decode_payload_prefix(&raw).map_err(FrameError::Payload)
    }

    fn inflate(&mut self, frame: &[u8], complete: bool) -> Result<Vec<u8>, FrameError> {
        let zerr = |c| FrameError::Decompress(zstd::zstd_safe::get_error_name(c).to_owned());
        let dctx = match &mut self.stream {
            Some(d) => d,
            None => {
                let mut d = DCtx::create();
                d.load_dictionary(self.dict).map_err(zerr)?;
                d.set_parameter(DParameter::WindowLogMax(MAX_WINDOW_LOG))
                    .map_err(zerr)?;
                self.stream.insert(d)
            }
        };
        dctx.reset(ResetDirective::SessionOnly).map_err(zerr)?;
        let mut out: Vec<u8> = Vec::with_capacity((frame.len() * 4).clamp(4096, MAX_PAYLOAD));
        let mut input = InBuffer::around(frame);
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_PAYLOAD {
                    return Err(FrameError::TooLarge);
                }
                out.reserve(out.len().min(MAX_PAYLOAD - out.len()));
            }
            let before = out.len();
            let mut o = OutBuffer::around_pos(&mut out, before);
            let left = dctx.decompress_stream(&mut o, &mut input).map_err(zerr)?;
            let stalled = out.len() == before && out.len() < out.capacity();
            if left == 0 || (input.pos() == frame.len() && stalled) {
                // A frame the block walk called complete must also end for zstd (checksum
                // included); an open one simply runs out of input.
                if complete && left != 0 {
                    return Err(FrameError::Decompress("frame ends early".into()));
                }
                return Ok(out);
            }
        }
    }
}
