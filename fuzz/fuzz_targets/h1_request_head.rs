//! Request heads from the network: the parser must never panic, and whatever it accepts must be
//! unambiguous (exactly one framing) and re-serialise to a head it accepts again the same way.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use modelgate::http::head::HeadLimits;
use modelgate::http::headers::{encode_request_head, Forwarding};
use modelgate::http::parse_request;

const LIMITS: HeadLimits = HeadLimits {
    max_headers: 64,
    max_head_bytes: 8192,
    max_uri_bytes: 2048,
};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let Ok(Some(head)) = parse_request(&mut buf, &LIMITS) else {
        return;
    };
    let fwd = Forwarding {
        client_ip: "127.0.0.1",
        proto: "http",
        request_id: "fuzz",
        drop: &["authorization"],
        identity: Some(("x-modelgate-identity", "a.b.c")),
        fallback_host: "upstream",
    };
    let mut out = BytesMut::new();
    encode_request_head(&head, head.framing, &fwd, &mut out);
    let again = parse_request(&mut out, &HeadLimits { max_head_bytes: 1 << 20, max_uri_bytes: 1 << 20, max_headers: 256 })
        .expect("the gateway's own head must parse")
        .expect("the gateway's own head is complete");
    assert_eq!(again.framing, head.framing);
    assert_eq!(again.path, head.path);
    assert_eq!(again.method, head.method);
});
