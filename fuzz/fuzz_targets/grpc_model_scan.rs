//! The model each gRPC message of a request body names must not depend on how the body is cut,
//! and must be what `model_from_grpc_infer` reads from the whole message. For any bytes: the
//! streaming scan fed in two pieces (the cut from the first bytes) and byte by byte reports the
//! same verdicts and the same end as fed whole; with no name limit, its verdicts, error and end
//! are those of `MessageReader` on the same body with each uncompressed message judged by
//! `model_from_grpc_infer`; a name limit only ever turns a name into `Unknown`. Nothing may
//! panic.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use modelgate::grpc::frame::{FrameError, MessageReader};
use modelgate::policy::grpc_model::{GrpcModelScan, Named};
use modelgate::policy::model::model_from_grpc_infer;

/// The verdicts reported, and the first error or the end.
type Outcome = (Vec<Named>, Result<(), FrameError>);

fn scan<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]>,
    max_message: u32,
    max_name: usize,
) -> Outcome {
    let mut scan = GrpcModelScan::new(max_message, max_name);
    let mut named = Vec::new();
    for piece in pieces {
        if let Err(e) = scan.feed(piece, |n| named.push(n)) {
            return (named, Err(e));
        }
    }
    let end = scan.finish();
    (named, end)
}

/// The body read whole by `MessageReader`, each message judged by `model_from_grpc_infer`.
fn reference(body: &[u8], max_message: u32) -> Outcome {
    let mut reader = MessageReader::new(max_message);
    reader.push(Bytes::copy_from_slice(body));
    let mut named = Vec::new();
    loop {
        match reader.next_message() {
            Ok(Some(m)) if m.compressed => named.push(Named::Compressed),
            Ok(Some(m)) => {
                named.push(model_from_grpc_infer(&m.data).map_or(Named::Unknown, Named::Model))
            }
            Ok(None) => return (named, reader.finish()),
            Err(e) => return (named, Err(e)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [limits, hi, lo, body @ ..] = data else {
        return;
    };
    let max_message = [0, 16, 300, u32::MAX][usize::from(limits & 3)];
    let max_name = [0, 4, 256, usize::MAX][usize::from((limits >> 2) & 3)];
    let at = usize::from(u16::from_be_bytes([*hi, *lo])) % (body.len() + 1);

    let whole = scan([body], max_message, max_name);
    let (a, b) = body.split_at(at);
    assert_eq!(
        scan([a, b], max_message, max_name),
        whole,
        "the verdicts depend on the cut"
    );
    assert_eq!(
        scan(body.chunks(1), max_message, max_name),
        whole,
        "byte by byte differs"
    );

    let unlimited = scan([body], max_message, usize::MAX);
    assert_eq!(
        unlimited,
        reference(body, max_message),
        "differs from model_from_grpc_infer per message"
    );
    assert_eq!(whole.1, unlimited.1, "the name limit changed the framing");
    assert_eq!(whole.0.len(), unlimited.0.len());
    for (limited, full) in whole.0.iter().zip(&unlimited.0) {
        match full {
            Named::Model(s) if s.len() > max_name => assert_eq!(*limited, Named::Unknown),
            _ => assert!(limited == full || *limited == Named::Unknown),
        }
    }
});
