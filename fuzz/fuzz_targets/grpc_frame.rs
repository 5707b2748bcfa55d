//! gRPC bodies from the network, cut into arbitrary chunks: the message reader must never
//! panic, must give the same messages and the same end (clean, truncated, or which error)
//! whatever the cuts, and what it reads must re-encode to exactly the bytes it consumed. The
//! first byte picks the size limit and how many of the next bytes are cut sizes.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use modelgate::grpc::frame::{encode, first_message, First, FrameError, Message, MessageReader};

/// Reads `body` pushed in pieces of the given sizes (cycled), or whole if `sizes` is empty.
fn read(body: &Bytes, sizes: &[u8], max: u32) -> (Vec<Message>, Result<(), FrameError>) {
    let mut reader = MessageReader::new(max);
    let mut messages = Vec::new();
    let mut rest = body.clone();
    let whole = [0u8];
    let sizes = if sizes.is_empty() { &whole[..] } else { sizes };
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let size = match size {
            0 => rest.len(),
            n => usize::from(n).min(rest.len()),
        };
        let piece = rest.split_to(size);
        reader.push(piece);
        loop {
            match reader.next_message() {
                Ok(Some(m)) => messages.push(m),
                Ok(None) => break,
                Err(e) => return (messages, Err(e)),
            }
        }
    }
    let end = reader.finish();
    (messages, end)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let max = [0, 16, 300, u32::MAX][usize::from(first >> 6)];
    let (sizes, body) = rest.split_at(usize::from(first % 8).min(rest.len()));
    let body = Bytes::copy_from_slice(body);
    let whole = read(&body, &[], max);
    if !sizes.is_empty() {
        assert_eq!(read(&body, sizes, max), whole, "result depends on the cuts");
    }
    let (messages, end) = &whole;
    let mut again = BytesMut::new();
    for m in messages {
        encode(m.compressed, &m.data, &mut again).expect("a read message fits");
    }
    assert_eq!(
        &body[..again.len()],
        &again[..],
        "read bytes do not re-encode"
    );
    if end.is_ok() {
        assert_eq!(again.len(), body.len(), "a clean end consumed everything");
    }
    match (first_message(&body, max), messages.first()) {
        (Ok(First::Complete { compressed, data }), Some(m)) => {
            assert_eq!((compressed, data), (m.compressed, &m.data[..]));
        }
        (Ok(First::Complete { .. }), None) => {
            panic!("first_message saw a message the reader did not")
        }
        (Ok(First::Incomplete { .. }), m) => assert!(m.is_none()),
        (Err(e), m) => assert!(m.is_none() && *end == Err(e)),
    }
});
