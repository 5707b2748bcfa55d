//! The SSE filter reads a token's event from its bytes and splices the masked text back; any
//! other event is parsed into a tree. Wherever the byte reader answers, it must find exactly
//! the texts, streams and ends the tree reader finds, at spans that decode to those texts.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(data) = std::str::from_utf8(data) {
        if let Err(e) = modelgate::masking::sse_readers_agree(data) {
            panic!("{data:?}: {e}");
        }
    }
});
