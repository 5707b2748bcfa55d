//! The two checks that join things: a segment header against the previous segment's ending, and
//! a seal against the records it seals (count, head, signature).

use std::path::Path;

use super::{Break, BreakKind, ChainReport, Ending};
use crate::recorder::codec::{hex, seal_message, Seal};
use crate::recorder::format::{Hash, PrevLink, Scan};
use crate::recorder::sign::{self, SealPublicKey};

/// Checks a segment header against the previous segment's ending.
pub(super) fn check_link(
    prev: Option<&Ending>,
    scan: &Scan,
    path: &Path,
    rep: &mut ChainReport,
) -> Option<Break> {
    let seq = scan.header.seq;
    let brk = |kind, detail: String| {
        Some(Break {
            file: path.to_owned(),
            offset: 0,
            record: 0,
            kind,
            detail,
        })
    };
    let Some(prev) = prev else {
        if scan.header.prev != PrevLink::First {
            rep.notes.push(format!(
                "chain starts at segment {seq}, which links to an earlier one no longer present \
                 (removed by retention, or deleted)"
            ));
        }
        return None;
    };
    if seq != prev.seq + 1 {
        return brk(
            BreakKind::SegmentLink,
            format!("segments {}..{} are missing", prev.seq + 1, seq - 1),
        );
    }
    match scan.header.prev {
        PrevLink::First => brk(
            BreakKind::SegmentLink,
            "chain restarts: header links to nothing".into(),
        ),
        PrevLink::Sealed(h) if prev.seal == Some(h) => prev.torn.clone(),
        PrevLink::Sealed(_) if prev.seal.is_none() => {
            let detail = format!(
                "segment {} ends without the seal this header links to",
                prev.seq
            );
            Some(prev.torn.clone().unwrap_or(Break {
                file: prev.path.clone(),
                offset: prev.heads.last().map_or(0, |h| h.0),
                record: prev.heads.len().saturating_sub(1) as u64,
                kind: BreakKind::Truncated,
                detail,
            }))
        }
        PrevLink::Sealed(_) => brk(
            BreakKind::SegmentLink,
            "header does not link to the previous seal".into(),
        ),
        PrevLink::Recovered { head, valid_len } => {
            // The acknowledged point must be the last whole record: whole records after it
            // would be records the next writer never saw (appended later).
            if prev.heads.last() == Some(&(valid_len, head)) {
                if prev.torn.is_some() {
                    rep.notes.push(format!(
                        "segment {} has a torn tail after byte {valid_len}, acknowledged by the \
                         writer that followed (crash or disk error)",
                        prev.seq
                    ));
                }
                None
            } else {
                brk(
                    BreakKind::SegmentLink,
                    format!(
                        "header links to byte {valid_len} of segment {}, which does not match",
                        prev.seq
                    ),
                )
            }
        }
    }
}

pub(super) fn check_seal(
    s: &Seal,
    k: u64,
    head: &Hash,
    worker: u32,
    seq: u64,
    key: Option<&SealPublicKey>,
    rep: &mut ChainReport,
) -> Result<(), (BreakKind, String)> {
    if s.records != k || s.head != hex(head) {
        return Err((
            BreakKind::BadSeal,
            format!("seal says {} records and head {}", s.records, s.head),
        ));
    }
    rep.seals += 1;
    match (key, &s.signature) {
        (Some(key), Some(sig)) => {
            if !sign::check(key, &seal_message(worker, seq, k, head), sig) {
                return Err((
                    BreakKind::BadSignature,
                    "seal signature does not verify".into(),
                ));
            }
            rep.signatures += 1;
            rep.unsigned_records = 0;
        }
        (Some(_), None) => return Err((BreakKind::BadSignature, "seal is not signed".into())),
        (None, _) => {}
    }
    Ok(())
}
