//! The model a request names must not depend on how the body is cut: for any bytes, feeding
//! them to the JSON model scan in pieces (sizes drawn from the first bytes) gives the same
//! verdict, after the last piece and at the end, as feeding them whole. The path and gRPC
//! model finders get the same bytes. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate::policy::model::{model_from_grpc_infer, model_from_path, ModelScan, Scan};

/// The verdict after the last piece, and the final one.
fn scan(body: &[u8], sizes: &[u8]) -> (Scan, Scan) {
    let mut scan = ModelScan::new();
    let mut last = scan.feed(&[]);
    let mut rest = body;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(usize::from(size).max(1).min(rest.len()));
        last = scan.feed(piece);
        rest = tail;
    }
    (last, scan.finish())
}

fuzz_target!(|data: &[u8]| {
    let _ = model_from_grpc_infer(data);
    let _ = model_from_path(&String::from_utf8_lossy(data));
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (sizes, body) = rest.split_at(usize::from(n % 8).min(rest.len()));
    if sizes.is_empty() {
        return;
    }
    let mut all = ModelScan::new();
    let whole = (all.feed(body), all.finish());
    assert_eq!(scan(body, sizes), whole, "the verdict depends on the cut");
    assert_eq!(scan(body, &[1]), whole, "byte by byte differs");
});
