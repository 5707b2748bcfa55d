//! gRPC's length-prefixed messages: a streaming reader and the encoder.
//!
//! Every gRPC body (request and response) is a sequence of
//!
//! ```text
//! +------------+---------------------+-----------------+
//! | flag: u8   | length: u32 (BE)    | message         |
//! | 0 or 1     | bytes of message    | length bytes    |
//! +------------+---------------------+-----------------+
//! ```
//!
//! and HTTP/2 DATA frame boundaries have nothing to do with message boundaries: a message may
//! span many frames, and a frame may hold many messages. [`MessageReader`] is fed the body's
//! chunks as they arrive (`Bytes` from `h2::RecvStream`, or decoded HTTP/1.1 chunks) and hands
//! out whole messages. It does no I/O and never panics on input.
//!
//! Memory: a message that lies inside one chunk is handed out as a slice of that chunk (no
//! copy). Only a message that straddles chunks is assembled, and the assembly buffer grows with
//! the bytes actually received, never with the declared length, so a peer that announces a
//! 4 GiB message and sends five bytes costs five bytes. The declared length is checked against
//! the configured maximum as soon as the 5-byte prefix is complete.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes of the prefix: flag and length.
pub const PREFIX_LEN: usize = 5;

/// One gRPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The message is compressed with the stream's `grpc-encoding`.
    pub compressed: bool,
    /// The message bytes (protobuf, usually), without the prefix.
    pub data: Bytes,
}

/// Why a body is not a valid sequence of gRPC messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The flag byte is neither 0 nor 1. The spec allows nothing else, and a gateway that
    /// guessed would frame the stream differently from the server behind it.
    BadFlag(u8),
    /// The declared length exceeds the configured maximum (gRPC: RESOURCE_EXHAUSTED).
    TooLarge { declared: u32, max: u32 },
    /// The body ended inside a message: `received` of `expected` bytes (prefix included);
    /// `expected` is `None` while the prefix itself is incomplete.
    Truncated {
        received: usize,
        expected: Option<usize>,
    },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::BadFlag(b) => write!(f, "invalid gRPC compressed flag {b}"),
            FrameError::TooLarge { declared, max } => {
                write!(
                    f,
                    "gRPC message of {declared} bytes exceeds the limit of {max}"
                )
            }
            FrameError::Truncated { .. } => f.write_str("body ended inside a gRPC message"),
        }
    }
}

impl std::error::Error for FrameError {}

/// The prefix of a message whose prefix is complete.
#[derive(Debug, Clone, Copy)]
struct Prefix {
    compressed: bool,
    len: usize,
}

/// Reads and checks a prefix from the first [`PREFIX_LEN`] bytes of `buf`. `Ok(None)`: too few
/// bytes yet. The flag is judged from the first byte alone, so a bad stream fails as early as
/// it can (and at the same point whatever the chunking).
fn prefix(buf: &[u8], max: u32) -> Result<Option<Prefix>, FrameError> {
    let compressed = match buf.first() {
        None => return Ok(None),
        Some(0) => false,
        Some(1) => true,
        Some(&b) => return Err(FrameError::BadFlag(b)),
    };
    let Some(len) = buf.get(1..PREFIX_LEN) else {
        return Ok(None);
    };
    let declared = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    if declared > max {
        return Err(FrameError::TooLarge { declared, max });
    }
    // u32 → usize is lossless on every target this gateway builds for (64-bit Linux).
    let len = declared as usize;
    Ok(Some(Prefix { compressed, len }))
}

/// Streaming reader of one body's messages.
///
/// ```text
/// push(chunk) ─▶ next_message() → Ok(Some(msg)) … Ok(None) ─▶ push(chunk) … ─▶ finish()
/// ```
///
/// Drain with [`next_message`](Self::next_message) until `Ok(None)` after each
/// [`push`](Self::push); call [`finish`](Self::finish) when the body ends. After an error the
/// reader stays failed: the stream's framing is lost and nothing after it can be trusted.
#[derive(Debug)]
pub struct MessageReader {
    max: u32,
    /// Bytes of a message (prefix first) that straddles chunks; empty otherwise.
    partial: BytesMut,
    /// The unread rest of the latest chunk.
    chunk: Bytes,
    failed: Option<FrameError>,
}

impl MessageReader {
    /// A reader that refuses messages longer than `max_message` bytes.
    pub fn new(max_message: u32) -> Self {
        MessageReader {
            max: max_message,
            partial: BytesMut::new(),
            chunk: Bytes::new(),
            failed: None,
        }
    }

    /// Adds the next chunk of the body. Call [`next_message`](Self::next_message) until it
    /// returns `Ok(None)` before pushing again; a chunk pushed over unread bytes is appended
    /// after them (copied), which is correct but slower.
    pub fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        if self.chunk.is_empty() {
            self.chunk = chunk;
        } else {
            let mut joined = BytesMut::with_capacity(self.chunk.len() + chunk.len());
            joined.put_slice(&self.chunk);
            joined.put_slice(&chunk);
            self.chunk = joined.freeze();
        }
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let out = self.step();
        if let Err(e) = out {
            self.failed = Some(e);
            self.partial = BytesMut::new();
            self.chunk = Bytes::new();
        }
        out
    }

    fn step(&mut self) -> Result<Option<Message>, FrameError> {
        if self.partial.is_empty() {
            // Fast path: the whole message is inside the current chunk.
            match prefix(&self.chunk, self.max)? {
                Some(p) if self.chunk.len() >= PREFIX_LEN + p.len => {
                    self.chunk.advance(PREFIX_LEN);
                    let data = self.chunk.split_to(p.len);
                    return Ok(Some(Message {
                        compressed: p.compressed,
                        data,
                    }));
                }
                // Incomplete: keep what there is, and wait for more.
                _ => {
                    self.partial.put_slice(&self.chunk);
                    self.chunk = Bytes::new();
                    return Ok(None);
                }
            }
        }
        // Slow path: top up the straddling message, first to a full prefix, then to its end.
        if self.partial.len() < PREFIX_LEN {
            self.take_into_partial(PREFIX_LEN - self.partial.len());
        }
        let Some(p) = prefix(&self.partial, self.max)? else {
            return Ok(None);
        };
        let total = PREFIX_LEN + p.len;
        self.take_into_partial(total - self.partial.len());
        if self.partial.len() < total {
            return Ok(None);
        }
        let mut whole = self.partial.split().freeze();
        whole.advance(PREFIX_LEN);
        Ok(Some(Message {
            compressed: p.compressed,
            data: whole,
        }))
    }

    /// Moves up to `n` bytes from the front of the current chunk to the assembly buffer.
    fn take_into_partial(&mut self, n: usize) {
        let n = n.min(self.chunk.len());
        self.partial.put_slice(&self.chunk[..n]);
        self.chunk.advance(n);
    }

    /// Bytes held and not yet handed out (for memory accounting).
    pub fn buffered(&self) -> usize {
        self.partial.len() + self.chunk.len()
    }

    /// The body has ended: it must have ended on a message boundary. Call after
    /// [`next_message`](Self::next_message) returned `Ok(None)`.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let received = self.buffered();
        if received == 0 {
            return Ok(());
        }
        // Whatever is left is one incomplete message (the caller drained the complete ones).
        let held = if self.partial.is_empty() {
            &self.chunk[..]
        } else {
            &self.partial[..]
        };
        let expected = prefix(held, self.max)?.map(|p| PREFIX_LEN + p.len);
        Err(FrameError::Truncated { received, expected })
    }
}

/// What the front of a body holds, for a stage that looks at the first message only.
#[derive(Debug, PartialEq, Eq)]
pub enum First<'a> {
    /// The first message is complete (it borrows from the buffer).
    Complete { compressed: bool, data: &'a [u8] },
    /// More bytes are needed: `needed` in total (prefix included) once the prefix is known.
    Incomplete { needed: Option<usize> },
}

/// Looks at the first message of a body without consuming it: the policy stage reads the model
/// name from the first `ModelInferRequest` while the bytes stay buffered for the upstream.
/// A declared length over `max_message` is an error here, so the caller never has to buffer
/// more than `PREFIX_LEN + max_message` bytes to get an answer.
pub fn first_message(buf: &[u8], max_message: u32) -> Result<First<'_>, FrameError> {
    let Some(p) = prefix(buf, max_message)? else {
        return Ok(First::Incomplete { needed: None });
    };
    let total = PREFIX_LEN + p.len;
    match buf.get(PREFIX_LEN..total) {
        Some(data) => Ok(First::Complete {
            compressed: p.compressed,
            data,
        }),
        None => Ok(First::Incomplete {
            needed: Some(total),
        }),
    }
}

/// Appends one length-prefixed message to `out`.
///
/// # Errors
/// A message longer than `u32::MAX` bytes cannot be framed; nothing is written then.
pub fn encode(compressed: bool, message: &[u8], out: &mut BytesMut) -> Result<(), FrameError> {
    let Ok(len) = u32::try_from(message.len()) else {
        return Err(FrameError::TooLarge {
            declared: u32::MAX,
            max: u32::MAX,
        });
    };
    out.reserve(PREFIX_LEN + message.len());
    out.put_u8(u8::from(compressed));
    out.put_u32(len);
    out.put_slice(message);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(msgs: &[(bool, &[u8])]) -> Bytes {
        let mut out = BytesMut::new();
        for (c, m) in msgs {
            encode(*c, m, &mut out).unwrap();
        }
        out.freeze()
    }

    /// Feeds `chunks`, draining after each; returns the messages and the end result.
    fn read(chunks: &[Bytes], max: u32) -> (Vec<Message>, Result<(), FrameError>) {
        let mut r = MessageReader::new(max);
        let mut out = Vec::new();
        for c in chunks {
            r.push(c.clone());
            loop {
                match r.next_message() {
                    Ok(Some(m)) => out.push(m),
                    Ok(None) => break,
                    Err(e) => return (out, Err(e)),
                }
            }
        }
        let end = r.finish();
        (out, end)
    }

    #[test]
    fn every_split_point_gives_the_same_messages_as_the_whole_body() {
        let body = framed(&[
            (false, b"hello"),
            (true, b""),
            (false, &[7u8; 300]),
            (true, b"x"),
        ]);
        let (whole, end) = read(std::slice::from_ref(&body), 1024);
        assert_eq!(end, Ok(()));
        assert_eq!(whole.len(), 4);
        assert_eq!(whole[0].data, &b"hello"[..]);
        assert!(whole[1].compressed && whole[1].data.is_empty());
        for a in 0..=body.len() {
            for b in a..=body.len() {
                let parts = [body.slice(..a), body.slice(a..b), body.slice(b..)];
                assert_eq!(read(&parts, 1024), (whole.clone(), Ok(())), "cut {a}/{b}");
            }
        }
        // One byte at a time.
        let bytes: Vec<Bytes> = (0..body.len()).map(|i| body.slice(i..i + 1)).collect();
        assert_eq!(read(&bytes, 1024), (whole, Ok(())));
    }

    /// The fuzz target's property (fuzz/fuzz_targets/grpc_frame.rs) on generated bodies, so it
    /// holds in every `cargo test`: valid framings, then a byte changed or the tail cut off.
    #[test]
    fn generated_bodies_read_the_same_whatever_the_cuts() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..3000 {
            let mut body = BytesMut::new();
            for _ in 0..next(4) {
                let msg = vec![next(256) as u8; next(7) as usize];
                encode(next(2) == 1, &msg, &mut body).unwrap();
            }
            match next(4) {
                0 if !body.is_empty() => {
                    let at = next(body.len() as u64) as usize;
                    body[at] = next(256) as u8;
                }
                1 => body.truncate(next(body.len() as u64 + 1) as usize),
                _ => {}
            }
            let body = body.freeze();
            let max = [0, 3, 6, u32::MAX][next(4) as usize];
            let whole = read(std::slice::from_ref(&body), max);
            let (mut parts, mut rest) = (Vec::new(), body.clone());
            while !rest.is_empty() {
                parts.push(rest.split_to((next(4) as usize + 1).min(rest.len())));
            }
            assert_eq!(read(&parts, max), whole, "{body:?}");
            let mut again = BytesMut::new();
            for m in &whole.0 {
                encode(m.compressed, &m.data, &mut again).unwrap();
            }
            assert_eq!(&body[..again.len()], &again[..]);
            if whole.1.is_ok() {
                assert_eq!(again.len(), body.len());
            }
        }
    }

    #[test]
    fn a_message_inside_one_chunk_is_not_copied() {
        let body = framed(&[(false, b"abc"), (false, b"defg")]);
        let mut r = MessageReader::new(64);
        r.push(body.clone());
        let m = r.next_message().unwrap().unwrap();
        assert_eq!(m.data.as_ptr(), body[PREFIX_LEN..].as_ptr());
        let m = r.next_message().unwrap().unwrap();
        assert_eq!(m.data.as_ptr(), body[2 * PREFIX_LEN + 3..].as_ptr());
        assert_eq!(r.next_message(), Ok(None));
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn zero_length_messages_are_messages() {
        let body = framed(&[(false, b""), (false, b""), (true, b"")]);
        let (msgs, end) = read(&[body], 0);
        assert_eq!(end, Ok(()));
        assert_eq!(msgs.len(), 3);
        assert!(msgs.iter().all(|m| m.data.is_empty()));
    }

    #[test]
    fn an_empty_body_is_zero_messages() {
        assert_eq!(read(&[], 16), (vec![], Ok(())));
    }

    #[test]
    fn a_message_at_the_limit_passes_and_one_byte_over_fails_at_the_prefix() {
        let ok = framed(&[(false, &[1u8; 16])]);
        assert_eq!(read(&[ok], 16).0.len(), 1);
        // Only the prefix of the oversized message arrives: it fails before any body.
        let over = framed(&[(false, &[1u8; 17])]).slice(..PREFIX_LEN);
        let (msgs, end) = read(&[over], 16);
        assert!(msgs.is_empty());
        assert_eq!(
            end,
            Err(FrameError::TooLarge {
                declared: 17,
                max: 16
            })
        );
    }

    #[test]
    fn a_huge_declared_length_allocates_nothing() {
        let mut r = MessageReader::new(u32::MAX);
        r.push(Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff, 1, 2]));
        assert_eq!(r.next_message(), Ok(None));
        assert!(r.partial.capacity() < 1024);
        assert_eq!(
            r.finish(),
            Err(FrameError::Truncated {
                received: 7,
                expected: Some(PREFIX_LEN + u32::MAX as usize)
            })
        );
    }

    #[test]
    fn a_body_ending_inside_a_message_is_truncated() {
        let body = framed(&[(false, b"one"), (false, b"two")]);
        let cut = body.slice(..body.len() - 1);
        let (msgs, end) = read(&[cut], 64);
        assert_eq!(msgs.len(), 1);
        assert_eq!(
            end,
            Err(FrameError::Truncated {
                received: 7,
                expected: Some(8)
            })
        );
        // Inside the prefix: the expected size is not known yet.
        let (_, end) = read(&[Bytes::from_static(&[0, 0, 0])], 64);
        assert_eq!(
            end,
            Err(FrameError::Truncated {
                received: 3,
                expected: None
            })
        );
    }

    #[test]
    fn flag_values_other_than_zero_and_one_are_refused_and_the_reader_stays_failed() {
        for flag in [2u8, 0x80, 0xff] {
            let mut body = BytesMut::from(&framed(&[(false, b"ok"), (false, b"no")])[..]);
            body[PREFIX_LEN + 2] = flag;
            let mut r = MessageReader::new(64);
            r.push(body.freeze());
            assert!(r.next_message().unwrap().is_some());
            assert_eq!(r.next_message(), Err(FrameError::BadFlag(flag)));
            r.push(framed(&[(false, b"later")]));
            assert_eq!(r.next_message(), Err(FrameError::BadFlag(flag)));
            assert_eq!(r.finish(), Err(FrameError::BadFlag(flag)));
        }
        // Judged on the first byte, before the length arrives.
        let mut r = MessageReader::new(64);
        r.push(Bytes::from_static(&[9]));
        assert_eq!(r.next_message(), Err(FrameError::BadFlag(9)));
    }

    #[test]
    fn pushing_over_unread_bytes_keeps_their_order() {
        let body = framed(&[(false, b"first"), (false, b"second")]);
        let mut r = MessageReader::new(64);
        r.push(body.slice(..PREFIX_LEN + 5));
        r.push(body.slice(PREFIX_LEN + 5..));
        assert_eq!(r.next_message().unwrap().unwrap().data, &b"first"[..]);
        assert_eq!(r.next_message().unwrap().unwrap().data, &b"second"[..]);
        assert_eq!(r.next_message(), Ok(None));
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn the_first_message_is_seen_without_consuming_the_buffer() {
        let body = framed(&[(true, b"model"), (false, b"rest")]);
        assert_eq!(
            first_message(&body, 64),
            Ok(First::Complete {
                compressed: true,
                data: b"model"
            })
        );
        assert_eq!(
            first_message(&body[..3], 64),
            Ok(First::Incomplete { needed: None })
        );
        assert_eq!(
            first_message(&body[..7], 64),
            Ok(First::Incomplete { needed: Some(10) })
        );
        assert_eq!(
            first_message(&body, 4),
            Err(FrameError::TooLarge {
                declared: 5,
                max: 4
            })
        );
        assert_eq!(first_message(&[2], 4), Err(FrameError::BadFlag(2)));
    }

    #[test]
    fn encode_writes_flag_big_endian_length_and_message() {
        let mut out = BytesMut::new();
        encode(true, &[0xaa; 258], &mut out).unwrap();
        assert_eq!(&out[..PREFIX_LEN], &[1, 0, 0, 1, 2]);
        assert_eq!(out.len(), PREFIX_LEN + 258);
        encode(false, b"", &mut out).unwrap();
        assert_eq!(&out[PREFIX_LEN + 258..], &[0, 0, 0, 0, 0]);
    }
}
