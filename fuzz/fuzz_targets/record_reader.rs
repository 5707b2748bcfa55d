//! Recording segments from disk are untrusted input for `verify` and `sessions`: the scanner and
//! the payload decoder must never panic, loop or allocate without bound, whatever the bytes.
//! The first byte picks the entry point; mode 2 puts a valid header in front so the fuzzer
//! spends its time on records (length-prefixed and streamed), not on finding the header magic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate::recorder::codec::{decode_payload, decode_payload_prefix};
use modelgate::recorder::format::{scan, Piece, PrevLink, SegmentHeader, Tail, VERSION};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => check(input),
        1 => {
            let _ = decode_payload(input);
            let _ = decode_payload_prefix(input);
        }
        _ => {
            let header = SegmentHeader {
                version: VERSION,
                worker: 0,
                seq: 1,
                created_us: 0,
                prev: PrevLink::First,
                dict: modelgate::recorder::DEFAULT_DICTIONARY.to_vec(),
            };
            let mut seg = header.encode();
            seg.extend_from_slice(input);
            check(&seg);
        }
    }
});

fn check(bytes: &[u8]) {
    let Ok(s) = scan(bytes) else { return };
    // Pieces tile the file in order, without overlap, inside its bounds.
    let mut pos = s.header_len;
    for p in &s.pieces {
        let (offset, len) = match p {
            Piece::Record(r) => (r.offset, r.len),
            Piece::Corrupt { offset, len, .. } => (*offset, *len),
        };
        assert_eq!(offset, pos);
        assert!(len > 0);
        pos += len;
    }
    assert!(pos <= bytes.len() as u64);
    // A torn tail starts where the pieces end; only the last record can be open, followed at
    // most by the damaged rest of its frame.
    if let Tail::Truncated { offset, .. } = s.tail {
        assert_eq!(offset, pos);
    }
    let open = s
        .pieces
        .iter()
        .position(|p| matches!(p, Piece::Record(r) if r.open));
    assert!(open.is_none_or(|i| {
        i + 1 == s.pieces.len()
            || (i + 2 == s.pieces.len() && matches!(s.pieces[i + 1], Piece::Corrupt { .. }))
    }));
}
