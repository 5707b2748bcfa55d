//! The segment file format, and a pure scanner that turns any bytes into records, corrupt
//! stretches and a tail state without panicking.
//!
//! ```text
//! segment = header record*
//! header  = "MGSEG\0\r\n" version:u16 flags:u16 worker:u32 seq:u64 created_us:u64
//!           prev_kind:u8 [0;7] prev_link:[32] prev_valid_len:u64 dict_len:u32 dict
//! record  = "MGR\x01" len:u32 link:[32] frame[len]          (little endian throughout)
//!         | "MGR\x02" link:[32] frame                       (streamed: ends with its frame)
//! ```
//!
//! * `frame` is one zstd frame (with checksum) compressed against the segment's dictionary: a
//!   record needs only its segment header to be read, so a cut file leaves every earlier record
//!   readable.
//! * A streamed record is written while it grows (event durability): its frame is opened, each
//!   batch of events is appended as flushed blocks that refer back to everything earlier in the
//!   frame, and the frame is ended once the record is large enough. The frame's own end (last
//!   block, checksum) is the record's end, found by walking block headers (`zframe`). Until it
//!   ends the record is *open*: its complete blocks decode (a crash keeps every event written),
//!   and it is the segment's last record.
//! * `link` is the SHA-256 of the previous record's bytes (the first record links to the SHA-256
//!   of the header), which chains every byte of the segment: an edited, deleted or moved record
//!   breaks the link stored in the one after it.
//! * The header's `prev_link` chains segments: the SHA-256 of the previous segment's seal record
//!   (`prev_kind` 1) or, after a crash left that segment unsealed, of its last complete record
//!   together with the length of its valid prefix (`prev_kind` 2), so the torn tail is
//!   acknowledged rather than silently skipped.
//! * The magic before each record lets a reader resynchronize after a corrupt stretch.

use std::fmt;

use sha2::{Digest, Sha256};

pub const SEGMENT_MAGIC: &[u8; 8] = b"MGSEG\0\r\n";
pub const RECORD_MAGIC: &[u8; 4] = b"MGR\x01";
pub const STREAM_MAGIC: &[u8; 4] = b"MGR\x02";
pub const VERSION: u16 = 1;
/// Fixed header bytes before the dictionary.
pub const HEADER_FIXED: usize = 84;
pub const RECORD_OVERHEAD: usize = 40;
pub const STREAM_OVERHEAD: usize = 36;
/// Largest compressed frame and largest payload a reader accepts (the writer splits chunks well
/// below this), so hostile lengths cannot make the reader allocate without bound.
pub const MAX_FRAME: usize = 16 << 20;
pub const MAX_PAYLOAD: usize = 16 << 20;
const MAX_DICT: usize = 1 << 20;
pub(crate) const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

pub type Hash = [u8; 32];

/// How a segment is chained to the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrevLink {
    /// The first segment of this worker's chain.
    First,
    /// SHA-256 of the previous segment's seal record.
    Sealed(Hash),
    /// The previous segment was never sealed (crash): SHA-256 of its last complete record (or of
    /// its header when it had none) and the byte length up to the end of that record.
    Recovered { head: Hash, valid_len: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    pub version: u16,
    pub worker: u32,
    pub seq: u64,
    pub created_us: u64,
    pub prev: PrevLink,
    pub dict: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    Short,
    Magic,
    Version(u16),
    PrevKind(u8),
    DictTooLarge(u32),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Short => f.write_str("file is shorter than a segment header"),
            HeaderError::Magic => f.write_str("not a modelgate segment (bad magic)"),
            HeaderError::Version(v) => write!(f, "unsupported segment version {v}"),
            HeaderError::PrevKind(k) => write!(f, "unknown previous-link kind {k}"),
            HeaderError::DictTooLarge(n) => write!(f, "dictionary length {n} is implausible"),
        }
    }
}

// === impl SegmentHeader ===

impl SegmentHeader {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_FIXED + self.dict.len());
        b.extend_from_slice(SEGMENT_MAGIC);
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&self.worker.to_le_bytes());
        b.extend_from_slice(&self.seq.to_le_bytes());
        b.extend_from_slice(&self.created_us.to_le_bytes());
        let (kind, link, valid) = match self.prev {
            PrevLink::First => (0u8, [0; 32], 0),
            PrevLink::Sealed(h) => (1, h, 0),
            PrevLink::Recovered { head, valid_len } => (2, head, valid_len),
        };
        b.push(kind);
        b.extend_from_slice(&[0; 7]);
        b.extend_from_slice(&link);
        b.extend_from_slice(&valid.to_le_bytes());
        // The dictionary is at most MAX_DICT, checked by the writer's caller (it is ours).
        b.extend_from_slice(&(self.dict.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.dict);
        b
    }

    /// Parses a header; returns it and its length in bytes.
    pub fn parse(buf: &[u8]) -> Result<(SegmentHeader, usize), HeaderError> {
        if buf.len() < HEADER_FIXED {
            return Err(if buf.len() >= 8 && &buf[..8] != SEGMENT_MAGIC {
                HeaderError::Magic
            } else {
                HeaderError::Short
            });
        }
        if &buf[..8] != SEGMENT_MAGIC {
            return Err(HeaderError::Magic);
        }
        let version = u16::from_le_bytes(arr(&buf[8..10]));
        if version != VERSION {
            return Err(HeaderError::Version(version));
        }
        let link: Hash = arr(&buf[40..72]);
        let valid_len = u64::from_le_bytes(arr(&buf[72..80]));
        let prev = match buf[32] {
            0 => PrevLink::First,
            1 => PrevLink::Sealed(link),
            2 => PrevLink::Recovered {
                head: link,
                valid_len,
            },
            k => return Err(HeaderError::PrevKind(k)),
        };
        let dict_len = u32::from_le_bytes(arr(&buf[80..84]));
        let n = dict_len as usize;
        if n > MAX_DICT {
            return Err(HeaderError::DictTooLarge(dict_len));
        }
        let end = HEADER_FIXED + n;
        let dict = buf
            .get(HEADER_FIXED..end)
            .ok_or(HeaderError::Short)?
            .to_vec();
        let header = SegmentHeader {
            version,
            worker: u32::from_le_bytes(arr(&buf[12..16])),
            seq: u64::from_le_bytes(arr(&buf[16..24])),
            created_us: u64::from_le_bytes(arr(&buf[24..32])),
            prev,
            dict,
        };
        Ok((header, end))
    }
}

/// Copies a slice whose length the caller has just fixed by its range.
pub(crate) fn arr<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0; N];
    a.copy_from_slice(&s[..N]);
    a
}

pub fn sha256(b: &[u8]) -> Hash {
    Sha256::digest(b).into()
}

/// Frames compressed bytes as a record linked to `link`.
pub fn encode_record(out: &mut Vec<u8>, link: &Hash, frame: &[u8]) {
    out.extend_from_slice(RECORD_MAGIC);
    // Frames are bounded by MAX_FRAME (the writer splits payloads), so this fits in u32.
    out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    out.extend_from_slice(link);
    out.extend_from_slice(frame);
}

/// Starts a streamed record linked to `link`; its frame follows.
pub fn encode_stream_envelope(out: &mut Vec<u8>, link: &Hash) {
    out.extend_from_slice(STREAM_MAGIC);
    out.extend_from_slice(link);
}

mod scan;
pub mod zframe;

pub use scan::{scan, FrameError, Piece, RawRecord, Scan, Tail};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_with_each_kind_of_previous_link() {
        for prev in [
            PrevLink::First,
            PrevLink::Sealed([7; 32]),
            PrevLink::Recovered {
                head: [9; 32],
                valid_len: 1234,
            },
        ] {
            let h = SegmentHeader {
                version: VERSION,
                worker: 3,
                seq: 42,
                created_us: 1_700_000_000_000_000,
                prev,
                dict: b"dictionary".to_vec(),
            };
            let bytes = h.encode();
            assert_eq!(SegmentHeader::parse(&bytes), Ok((h, bytes.len())));
        }
    }

    #[test]
    fn garbage_is_not_a_header() {
        assert_eq!(SegmentHeader::parse(b"hello"), Err(HeaderError::Short));
        assert_eq!(SegmentHeader::parse(&[b'x'; 100]), Err(HeaderError::Magic));
    }
}
