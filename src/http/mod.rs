//! HTTP codecs: pure parsers and encoders, no I/O and no knowledge of the pipeline.
//!
//! Everything here takes `&[u8]` and returns a `Result`, so it is unit-tested and fuzzed without a
//! runtime. The connection drivers (`server`, `upstream`) own the sockets and call into these.
//!
//! - [`head`]: HTTP/1.1 request and response heads, validated strictly (a gateway that disagrees
//!   with its upstream about where a message ends can be bypassed, so anything ambiguous is a 4xx).
//! - [`chunked`]: the chunked transfer-coding decoder and encoder, trailers included.
//! - [`headers`]: hop-by-hop header handling shared by both directions.

pub mod chunked;
pub mod head;
pub mod headers;

pub use chunked::{ChunkedDecoder, Decoded};
pub use head::{parse_request, parse_response, BodyFraming, RequestHead, ResponseHead};
