//! The chunked transfer coding (RFC 9112 §7.1): a strict incremental decoder and the encoder.
//!
//! The gateway never forwards chunk framing as received: it decodes and re-encodes, so the
//! upstream sees exactly the framing the gateway believes in (extensions are dropped, sizes are
//! canonical). The decoder is a small state machine fed from the connection's read buffer; it
//! hands out data as `Bytes` split off that buffer, so no byte is copied on the way through.
//!
//! ```text
//!  Size ──(n>0)──▶ Data(n) ──▶ DataEnd ──▶ Size
//!   │
//!   └──(n=0)──▶ Trailers ──▶ Done
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use super::head::{Fields, HeadError};

/// Longest chunk-size line accepted (size plus extensions).
const MAX_SIZE_LINE: usize = 4096;

/// One step of decoding.
#[derive(Debug)]
pub enum Decoded {
    /// Body bytes, in order.
    Data(Bytes),
    /// The trailer section (possibly empty); the body is complete after it.
    End(Option<Fields>),
    /// The buffer holds no complete next item: read more.
    NeedMore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// Incremental decoder for one chunked body.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    max_trailer_bytes: usize,
}

impl ChunkedDecoder {
    pub fn new(max_trailer_bytes: usize) -> Self {
        ChunkedDecoder {
            state: State::Size,
            max_trailer_bytes,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes the next item from the front of `buf`, consuming what it used.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, HeadError> {
        loop {
            match self.state {
                State::Size => {
                    let Some(size) = parse_size_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = left.min(buf.len() as u64) as usize;
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(HeadError::Invalid("chunk data not followed by CRLF"));
                    }
                    let _ = buf.split_to(2);
                    self.state = State::Size;
                }
                State::Trailers => {
                    let Some(trailers) = self.parse_trailers(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    self.state = State::Done;
                    return Ok(Decoded::End(trailers));
                }
                State::Done => return Ok(Decoded::End(None)),
            }
        }
    }

    fn parse_trailers(&self, buf: &mut BytesMut) -> Result<Option<Option<Fields>>, HeadError> {
        if buf.starts_with(b"\r\n") {
            let _ = buf.split_to(2);
            return Ok(Some(None));
        }
        let mut storage = [httparse::EMPTY_HEADER; 64];
        match httparse::parse_headers(buf, &mut storage) {
            Ok(httparse::Status::Complete((len, headers))) if len <= self.max_trailer_bytes => {
                let ranges = super::head::field_ranges(buf, headers)?;
                let raw = buf.split_to(len).freeze();
                Ok(Some(Some(Fields::from_parts(raw, ranges))))
            }
            Ok(httparse::Status::Partial) if buf.len() <= self.max_trailer_bytes => Ok(None),
            Ok(_) | Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
            Err(_) => Err(HeadError::Invalid("malformed trailer section")),
        }
    }
}

/// `hex-size [ext] CRLF`, strictly: the line starts with a hex digit, at most 16 of them, no
/// `0x`, no whitespace before the size, extensions free of control bytes.
fn parse_size_line(buf: &mut BytesMut) -> Result<Option<u64>, HeadError> {
    let Some(lf) = buf.iter().take(MAX_SIZE_LINE).position(|b| *b == b'\n') else {
        if buf.len() >= MAX_SIZE_LINE {
            return Err(HeadError::Invalid("chunk size line too long"));
        }
        return Ok(None);
    };
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err(HeadError::Invalid("chunk size line not ended by CRLF"));
    }
    let line = &buf[..lf - 1];
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(HeadError::Invalid("invalid chunk size"));
    }
    let rest = &line[digits..];
    let ext_ok = match rest.iter().position(|b| *b != b' ' && *b != b'\t') {
        None => rest.is_empty(),
        Some(i) => {
            rest[i] == b';'
                && rest
                    .iter()
                    .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        }
    };
    if !ext_ok {
        return Err(HeadError::Invalid("invalid chunk size"));
    }
    let size = line[..digits].iter().try_fold(0u64, |n, &d| {
        let v = (d as char).to_digit(16).unwrap_or(0) as u64;
        n.checked_mul(16).and_then(|n| n.checked_add(v))
    });
    let size = size.ok_or(HeadError::Invalid("chunk size overflows"))?;
    let _ = buf.split_to(lf + 1);
    Ok(Some(size))
}

/// Appends one chunk (`size CRLF data CRLF`); empty data writes nothing (it would end the body).
pub fn encode_chunk(data: &[u8], out: &mut BytesMut) {
    if data.is_empty() {
        return;
    }
    out.reserve(data.len() + 20);
    // By hand: `format!` allocated a String for every chunk (every SSE event).
    let mut hex = [0u8; 16];
    let mut at = hex.len();
    let mut n = data.len();
    loop {
        at -= 1;
        hex[at] = b"0123456789abcdef"[n % 16];
        n /= 16;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&hex[at..]);
    out.put_slice(b"\r\n");
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// Appends the last chunk and the trailer section, leaving out fields that must not travel in
/// trailers (framing, routing and authentication fields: RFC 9110 §6.5.1).
pub fn encode_last(trailers: Option<&Fields>, out: &mut BytesMut) {
    out.put_slice(b"0\r\n");
    if let Some(t) = trailers {
        for (name, value) in t.iter() {
            if super::headers::forbidden_in_trailer(name) {
                continue;
            }
            out.put_slice(name);
            out.put_slice(b": ");
            out.put_slice(value);
            out.put_slice(b"\r\n");
        }
    }
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], piece: usize) -> Result<(Vec<u8>, Option<Vec<u8>>), HeadError> {
        let mut dec = ChunkedDecoder::new(1024);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for part in input.chunks(piece.max(1)) {
            buf.extend_from_slice(part);
            loop {
                match dec.decode(&mut buf)? {
                    Decoded::Data(d) => body.extend_from_slice(&d),
                    Decoded::NeedMore => break,
                    Decoded::End(t) => {
                        let mut out = BytesMut::new();
                        encode_last(t.as_ref(), &mut out);
                        return Ok((body, Some(out.to_vec())));
                    }
                }
            }
        }
        Ok((body, None))
    }

    #[test]
    fn decodes_the_same_body_whatever_the_read_sizes() {
        let input = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 42\r\n\r\n";
        for piece in 1..input.len() {
            let (body, end) = decode_all(input, piece).unwrap();
            assert_eq!(body, b"hello world");
            assert_eq!(end.unwrap(), b"0\r\nx-sum: 42\r\n\r\n");
        }
    }

    #[test]
    fn rejects_malformed_sizes() {
        for bad in [
            &b"0x5\r\nhello\r\n0\r\n\r\n"[..],
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"g\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
        ] {
            assert!(
                decode_all(bad, 64).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn drops_framing_fields_from_trailers() {
        let (_, end) = decode_all(b"0\r\ncontent-length: 5\r\ngrpc-status: 0\r\n\r\n", 64).unwrap();
        assert_eq!(end.unwrap(), b"0\r\ngrpc-status: 0\r\n\r\n");
    }

    #[test]
    fn encodes_chunks_in_hex() {
        let mut out = BytesMut::new();
        encode_chunk(&[b'a'; 26], &mut out);
        assert!(out.starts_with(b"1a\r\n"));
        for len in [1, 9, 15, 16, 255, 256, 4096, 65535, 1 << 20] {
            let mut out = BytesMut::new();
            encode_chunk(&vec![b'x'; len], &mut out);
            let head = format!("{len:x}\r\n");
            assert!(out.starts_with(head.as_bytes()), "{len}");
            assert_eq!(out.len(), head.len() + len + 2);
        }
    }
}
