//! `verify`: checks every worker's chain of segments and reports the first break precisely.
//!
//! Every byte of a record is covered by something: the envelope (magic, length) by parsing, the
//! link by comparing it with the SHA-256 of the record before, the compressed frame by zstd's
//! content checksum and by the next record's link. Each record also carries its index in the
//! segment, which is what tells the kinds of break apart:
//!
//! | seen at position k                                  | reported as |
//! |-----------------------------------------------------|-------------|
//! | bytes that do not parse or decode                   | `Corrupt`   |
//! | index k, but a link that is not hash(k-1)           | `Edited`    |
//! | index > k, and index k is nowhere later             | `Deleted`   |
//! | index ≠ k, and the records are all there            | `Reordered` |
//! | the file ends inside a record                       | `Truncated` |
//!
//! Segments are chained by their headers (see `format.rs`); a missing sequence number, a header
//! that does not link to its predecessor's seal, or a seal whose count or head is wrong are
//! breaks too. With a public key, every seal's signature must verify. The oldest segments may be
//! gone (retention), so a chain may start at any sequence number; that is a note, not a break.

use std::fmt;
use std::path::{Path, PathBuf};

use super::codec::Item;
use super::format::{self, Hash, Piece, Scan, Tail};
use super::segment::list_segments;
use super::sign::SealPublicKey;

mod checks;
use checks::{check_link, check_seal};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakKind {
    /// Bytes that are not a readable record (flipped bits, overwritten data).
    Corrupt,
    /// A readable record whose link does not match the record before it.
    Edited,
    /// Records missing from the middle of a segment.
    Deleted,
    /// Records present but out of order.
    Reordered,
    /// The segment ends inside a record, or without the seal its successor expects.
    Truncated,
    /// A segment of the chain is missing (sequence gap) or does not link to its predecessor.
    SegmentLink,
    BadHeader,
    /// A seal whose count or head disagrees with the records, or records after a seal.
    BadSeal,
    /// A seal signature that does not verify, or is missing while a key was given.
    BadSignature,
}

/// The first break in one worker's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub file: PathBuf,
    /// Byte offset of the broken record (or of the header).
    pub offset: u64,
    /// Index of the broken record within its segment.
    pub record: u64,
    pub kind: BreakKind,
    pub detail: String,
}

#[derive(Debug, Default)]
pub struct ChainReport {
    pub worker: u32,
    pub segments: u64,
    /// Records checked and found intact.
    pub records: u64,
    pub seals: u64,
    pub signatures: u64,
    /// Records after the last signed seal (chained, not yet signed).
    pub unsigned_records: u64,
    pub first_break: Option<Break>,
    pub notes: Vec<String>,
}

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub chains: Vec<ChainReport>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.chains.iter().all(|c| c.first_break.is_none())
    }

    pub fn first_break(&self) -> Option<&Break> {
        self.chains.iter().find_map(|c| c.first_break.as_ref())
    }
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: record {} at byte {}: {:?}: {}",
            self.file.display(),
            self.record,
            self.offset,
            self.kind,
            self.detail
        )
    }
}

/// Verifies every chain in `dir`.
pub fn verify_dir(dir: &Path, key: Option<&SealPublicKey>) -> std::io::Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let mut segs = list_segments(dir)?.into_iter().peekable();
    while let Some(&(worker, _, _)) = segs.peek() {
        let mut chain = Vec::new();
        while let Some(s) = segs.next_if(|s| s.0 == worker) {
            chain.push((s.1, s.2));
        }
        report.chains.push(verify_chain(worker, &chain, key)?);
    }
    Ok(report)
}

/// What the previous segment left for the next to link to.
struct Ending {
    path: PathBuf,
    seq: u64,
    /// Hash of the seal record, if the segment ended with one.
    seal: Option<Hash>,
    /// (end offset, hash) of every complete record, and of the header.
    heads: Vec<(u64, Hash)>,
    /// A torn tail, to be forgiven if the next segment acknowledges the valid prefix.
    torn: Option<Break>,
}

fn verify_chain(
    worker: u32,
    chain: &[(u64, PathBuf)],
    key: Option<&SealPublicKey>,
) -> std::io::Result<ChainReport> {
    let mut rep = ChainReport {
        worker,
        ..ChainReport::default()
    };
    let mut prev: Option<Ending> = None;
    for (seq, path) in chain {
        rep.segments += 1;
        let bytes = std::fs::read(path)?;
        let brk = |offset, record, kind, detail: String| Break {
            file: path.clone(),
            offset,
            record,
            kind,
            detail,
        };
        let scan = match format::scan(&bytes) {
            Ok(s) => s,
            Err(e) => {
                rep.first_break = Some(brk(0, 0, BreakKind::BadHeader, e.to_string()));
                return Ok(rep);
            }
        };
        if (scan.header.worker, scan.header.seq) != (worker, *seq) {
            let detail = format!(
                "header says worker {} segment {}, the file name says worker {worker} segment {seq}",
                scan.header.worker, scan.header.seq
            );
            rep.first_break = Some(brk(0, 0, BreakKind::SegmentLink, detail));
            return Ok(rep);
        }
        if let Some(b) = check_link(prev.as_ref(), &scan, path, &mut rep) {
            rep.first_break = Some(b);
            return Ok(rep);
        }
        match walk(&scan, path, worker, key, &mut rep) {
            Ok(ending) => prev = Some(ending),
            Err(b) => {
                rep.first_break = Some(b);
                return Ok(rep);
            }
        }
    }
    if let Some(end) = prev {
        if let Some(torn) = end.torn {
            rep.first_break = Some(torn);
        } else if end.seal.is_none() {
            rep.notes.push(format!(
                "segment {} is not sealed (being written, or the writer stopped)",
                end.seq
            ));
        }
    }
    Ok(rep)
}

/// Walks one segment's records in order.
fn walk(
    scan: &Scan,
    path: &Path,
    worker: u32,
    key: Option<&SealPublicKey>,
    rep: &mut ChainReport,
) -> Result<Ending, Break> {
    let mut link = scan.header_hash;
    let mut heads = vec![(scan.header_len, scan.header_hash)];
    let mut seal: Option<Hash> = None;
    let indices: Vec<Option<u64>> = scan
        .pieces
        .iter()
        .map(|p| match p {
            Piece::Record(r) => r.payload.as_ref().ok().map(|p| p.index),
            Piece::Corrupt { .. } => None,
        })
        .collect();
    for (k, piece) in scan.pieces.iter().enumerate() {
        let k64 = k as u64;
        let brk = |offset, kind, detail: String| Break {
            file: path.to_owned(),
            offset,
            record: k64,
            kind,
            detail,
        };
        let r = match piece {
            Piece::Corrupt { offset, len, why } => {
                return Err(brk(
                    *offset,
                    BreakKind::Corrupt,
                    format!("{len} bytes: {why}"),
                ))
            }
            Piece::Record(r) => r,
        };
        if seal.is_some() {
            return Err(brk(
                r.offset,
                BreakKind::BadSeal,
                "record after the seal".into(),
            ));
        }
        let payload = r
            .payload
            .as_ref()
            .map_err(|e| brk(r.offset, BreakKind::Corrupt, e.to_string()))?;
        if payload.index != k64 {
            let found = payload.index;
            let later = indices[k..].contains(&Some(k64));
            return Err(if found > k64 && !later {
                brk(
                    r.offset,
                    BreakKind::Deleted,
                    format!("records {k}..{found} are missing (found record {found} here)"),
                )
            } else {
                brk(
                    r.offset,
                    BreakKind::Reordered,
                    format!("record {found} found where record {k} belongs"),
                )
            });
        }
        if r.link != link {
            let detail = if k == 0 {
                "link does not match the segment header (header or link edited)".to_owned()
            } else {
                format!(
                    "link does not match record {} (this record's link was edited)",
                    k - 1
                )
            };
            return Err(brk(r.offset, BreakKind::Edited, detail));
        }
        if let [Item::Seal(s)] = payload.items.as_slice() {
            check_seal(s, k64, &link, worker, scan.header.seq, key, rep)
                .map_err(|(kind, d)| brk(r.offset, kind, d))?;
            seal = Some(r.hash);
        } else if payload.items.iter().any(|i| matches!(i, Item::Seal(_))) {
            return Err(brk(
                r.offset,
                BreakKind::BadSeal,
                "seal mixed with events".into(),
            ));
        } else {
            rep.unsigned_records += 1;
        }
        rep.records += 1;
        link = r.hash;
        heads.push((r.offset + r.len, r.hash));
    }
    let open = match scan.pieces.last() {
        Some(Piece::Record(r)) if r.open => Some(r),
        _ => None,
    };
    if let Some(r) = open {
        rep.notes.push(format!(
            "segment {} ends in an open streamed record at byte {} (being written, or the \
             writer stopped before ending it): its whole blocks read, and no later record links \
             to them yet",
            scan.header.seq, r.offset
        ));
    }
    let torn = match scan.tail {
        Tail::Clean => None,
        Tail::Truncated { offset, have, need } => Some(Break {
            file: path.to_owned(),
            offset,
            record: scan.pieces.len() as u64 - u64::from(open.is_some()),
            kind: BreakKind::Truncated,
            detail: match open {
                None => format!(
                    "file ends after {have} of the record's {need} bytes; the {} records before \
                     it verify",
                    scan.pieces.len()
                ),
                Some(_) => format!(
                    "file ends after {have} of {need} bytes of a block of open record {}, cut \
                     while being written; the records before it and its whole blocks verify",
                    scan.pieces.len() - 1
                ),
            },
        }),
    };
    Ok(Ending {
        path: path.to_owned(),
        seq: scan.header.seq,
        seal,
        heads,
        torn,
    })
}
