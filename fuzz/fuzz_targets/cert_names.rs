//! The client-certificate name reader walks DER by hand: on any bytes it returns a name or
//! `None`, never panics, never reads out of bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate::identity::cert::holder_name;

fuzz_target!(|data: &[u8]| {
    if let Some(name) = holder_name(data) {
        assert!(!name.is_empty());
    }
});
