//! Chunked bodies from the network, cut into arbitrary reads: the decoder must never panic and
//! must decode the same bytes whatever the read boundaries (the first byte picks the read size).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use modelgate::http::{ChunkedDecoder, Decoded};

fn decode(input: &[u8], piece: usize) -> Option<Vec<u8>> {
    let mut dec = ChunkedDecoder::new(4096);
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    for part in input.chunks(piece) {
        buf.extend_from_slice(part);
        loop {
            match dec.decode(&mut buf).ok()? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::NeedMore => break,
                Decoded::End(_) => return Some(body),
            }
        }
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let piece = usize::from(first % 16) + 1;
    let whole = decode(input, input.len().max(1));
    let pieces = decode(input, piece);
    assert_eq!(whole, pieces);
});
