//! One segment file's lifecycle, below the writer: naming, finding where a worker's chain left
//! off, creating the next file, framing and writing records.
//!
//! ```text
//!   create ──▶ Active ──append*──▶ seal ──▶ (next segment: Sealed link)
//!                 │
//!                 └─ crash / write error ──▶ left unsealed; the next writer to open the
//!                                            directory links to its last complete record
//!                                            (Recovered link) and starts a fresh file
//! ```
//! A writer never appends to a file it did not create in this process: resuming would mean
//! trusting (or repairing) a tail that a crash may have torn.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::format::{self, encode_record, Hash, Piece, PrevLink, SegmentHeader, Tail};
use super::sink::{Sink, Storage};

pub const EXTENSION: &str = "mgrec";

/// `DIR/w{worker}-{seq:06}.mgrec`
pub fn segment_path(dir: &Path, worker: u32, seq: u64) -> PathBuf {
    dir.join(format!("w{worker}-{seq:06}.{EXTENSION}"))
}

/// Parses a segment file name into (worker, seq).
pub fn parse_name(name: &str) -> Option<(u32, u64)> {
    let stem = name.strip_suffix(EXTENSION)?.strip_suffix('.')?;
    let (w, s) = stem.strip_prefix('w')?.split_once('-')?;
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(w) || !digits(s) {
        return None;
    }
    Some((w.parse().ok()?, s.parse().ok()?))
}

/// Every segment in `dir` as (worker, seq, path), sorted by worker then seq.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u32, u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some((w, s)) = name.to_str().and_then(parse_name) {
            out.push((w, s, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Where a worker's chain stands: the next sequence number and how to link to what exists.
pub fn resume_point(dir: &Path, worker: u32) -> io::Result<(u64, PrevLink)> {
    let last = list_segments(dir)?
        .into_iter()
        .rfind(|(w, _, _)| *w == worker);
    let Some((_, seq, path)) = last else {
        return Ok((1, PrevLink::First));
    };
    let bytes = std::fs::read(&path)?;
    Ok((seq + 1, link_after(&bytes)))
}

/// How a new segment links to an existing one whose bytes are given.
pub fn link_after(bytes: &[u8]) -> PrevLink {
    let Ok(scan) = format::scan(bytes) else {
        // An unreadable previous header: nothing can be linked; verify reports the gap.
        return PrevLink::Recovered {
            head: [0; 32],
            valid_len: 0,
        };
    };
    let last = scan.pieces.iter().rev().find_map(|p| match p {
        Piece::Record(r) => Some(r),
        Piece::Corrupt { .. } => None,
    });
    let clean_end =
        matches!(scan.tail, Tail::Clean) && matches!(scan.pieces.last(), Some(Piece::Record(_)));
    match last {
        Some(r) if clean_end && is_seal(r) => PrevLink::Sealed(r.hash),
        Some(r) => PrevLink::Recovered {
            head: r.hash,
            valid_len: r.offset + r.len,
        },
        None => PrevLink::Recovered {
            head: scan.header_hash,
            valid_len: scan.header_len,
        },
    }
}

fn is_seal(r: &format::RawRecord) -> bool {
    matches!(&r.payload, Ok(p) if matches!(p.items.as_slice(), [super::codec::Item::Seal(_)]))
}

pub fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The segment being written.
pub struct Active {
    pub sink: Box<dyn Sink>,
    pub path: PathBuf,
    pub seq: u64,
    pub opened: Instant,
    /// Bytes in the file that are known good (header and complete records).
    pub len: u64,
    /// Records written after the header (the next record's index).
    pub records: u64,
    /// SHA-256 of the last record (or of the header): the next record's link.
    pub head: Hash,
    /// Bytes written since the last fsync.
    pub dirty: bool,
}

impl Active {
    pub fn create(
        storage: &mut dyn Storage,
        dir: &Path,
        header: &SegmentHeader,
        sync_dir: bool,
    ) -> io::Result<Active> {
        let path = segment_path(dir, header.worker, header.seq);
        let mut sink = storage.create(&path)?;
        let bytes = header.encode();
        sink.write_all(&bytes)?;
        if sync_dir {
            sink.sync()?;
            storage.sync_dir(dir)?;
        }
        Ok(Active {
            sink,
            path,
            seq: header.seq,
            opened: Instant::now(),
            len: bytes.len() as u64,
            records: 0,
            head: format::sha256(&bytes),
            dirty: !sync_dir,
        })
    }

    /// Frames `frame` as the next record (into `scratch`) and writes it. On error the file is cut
    /// back to its last good length when the disk allows, so no partial record stays behind.
    pub fn write_frame(&mut self, frame: &[u8], scratch: &mut Vec<u8>) -> io::Result<()> {
        scratch.clear();
        encode_record(scratch, &self.head, frame);
        if let Err(e) = self.sink.write_all(scratch) {
            // Best effort: if even this fails, the reader reports a truncated last record.
            let _ = self.sink.truncate(self.len);
            return Err(e);
        }
        self.head = format::sha256(scratch);
        self.len += scratch.len() as u64;
        self.records += 1;
        self.dirty = true;
        Ok(())
    }

    /// Writes the next piece of the open streamed record (whole blocks, so the file stays
    /// readable up to here). Cut back on error like [`Active::write_frame`].
    pub fn write_open(&mut self, piece: &[u8]) -> io::Result<()> {
        if let Err(e) = self.sink.write_all(piece) {
            let _ = self.sink.truncate(self.len);
            return Err(e);
        }
        self.len += piece.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// The open streamed record has ended; `hash` covers all its bytes.
    pub fn close_open(&mut self, hash: Hash) {
        self.head = hash;
        self.records += 1;
    }

    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            self.sink.sync()?;
            self.dirty = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_reject_strangers() {
        let p = segment_path(Path::new("/d"), 3, 12);
        assert_eq!(p, Path::new("/d/w3-000012.mgrec"));
        assert_eq!(parse_name("w3-000012.mgrec"), Some((3, 12)));
        assert_eq!(parse_name("w3-1234567.mgrec"), Some((3, 1_234_567)));
        for bad in [
            "w3-12.mgidx",
            "x3-12.mgrec",
            "w-12.mgrec",
            "w3-.mgrec",
            "w3-1a.mgrec",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }
}
