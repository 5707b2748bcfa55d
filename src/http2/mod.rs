//! HTTP/2 on both sides, with `h2` over monoio.
//!
//! - [`io`]: the socket in the shape `h2` wants (poll-based), plain or TLS, with the h2c
//!   preface replayed and a fairness yield.
//! - [`convert`]: HTTP/2 messages to and from the pipeline's heads.
//! - [`stream`]: one stream's halves for the body transfer, flow control included.
//! - [`server`]: the client-facing connection driver; every stream runs `pipeline::handle`,
//!   the same path as an HTTP/1.1 request.
//!
//! The upstream side (one multiplexed connection per endpoint and worker) is in `upstream`.

pub mod convert;
pub mod io;
pub mod server;
pub mod stream;

/// Receive window per stream: what one stream's sender may have in flight before we forward.
pub const H2_STREAM_WINDOW: u32 = 256 * 1024;
/// Receive window per client connection: bounds what a connection's streams hold here together.
pub const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Receive window of a shared upstream connection: room for every stream's window at once, so
/// one slow client (whose stream stops taking data) cannot use up the window that every other
/// caller's responses on that connection need.
pub const H2_UPSTREAM_CONNECTION_WINDOW: u32 = H2_STREAM_WINDOW * MAX_CONCURRENT_STREAMS;
/// Send data buffered per stream before capacity stops being assigned (a slow reader stalls the
/// writer instead of growing this).
pub const H2_SEND_BUFFER: usize = 256 * 1024;
/// Streams a client may have open at once on one connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 128;

/// The client connection preface (RFC 9113 §3.4): prior-knowledge h2c starts with it.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
