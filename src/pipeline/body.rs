//! Streaming a body from one connection to the other, one chunk at a time.
//!
//! Backpressure is structural: the next read is issued only after the previous chunk was fully
//! written, so a slow reader slows the writer and at most one read buffer per direction is held.
//! Framing is decoded on the way in and re-encoded on the way out (`Content-Length` stays
//! `Content-Length`; chunked is re-chunked; a close-delimited response becomes chunked for an
//! HTTP/1.1 client). Each chunk is written as soon as it is read: no coalescing, no timers.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::conn::{Conn, ReadError};
use crate::error::{Error, ErrorKind};
use crate::http::chunked::{encode_chunk, encode_last, ChunkedDecoder, Decoded};
use crate::http::head::Fields;
use crate::http::BodyFraming;
use crate::http2::stream::{H2Recv, H2Send, Read};

/// Which way the body flows; decides which side an I/O failure is blamed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client → upstream.
    Request,
    /// Upstream → client.
    Response,
}

/// Per-transfer settings.
pub struct Transfer {
    pub dir: Dir,
    /// Longest gap between reads from the source.
    pub read_idle: Duration,
    /// Longest time a write to the destination may take.
    pub write_limit: Duration,
}

enum Event {
    Data(Bytes),
    End(Option<Fields>),
}

/// A stage that sees every body chunk on its way through, in order: masking rewrites it, the
/// recorder tees it. What it returns is what gets forwarded.
pub trait BodyStage {
    fn chunk(&mut self, data: Bytes) -> Result<Bytes, Stop>;
    /// The body ended (with these trailers): anything the stage still holds.
    fn end(&mut self, trailers: Option<&Fields>) -> Result<Bytes, Stop>;
}

/// A stage ended the body early. `last` is what may still be sent: with `ends_body` it is the
/// format's own error (an SSE error event) and the body then ends properly; otherwise it is a
/// safe prefix and the body is cut short after it, so the client cannot take it for complete.
pub struct Stop {
    pub last: Bytes,
    pub ends_body: bool,
    pub error: Error,
}

/// Where a body comes from: an HTTP/1.1 connection (decoded by its framing) or an HTTP/2 stream.
pub enum Source<'a> {
    H1(&'a mut Conn, BodyReader),
    H2(&'a mut H2Recv),
}

/// Where a body goes, with the message head that must precede it while the peer has not seen
/// it: an HTTP/1.1 connection (re-framed as `framing`) or an HTTP/2 stream.
pub enum Sink<'a> {
    H1 {
        conn: &'a mut Conn,
        framing: BodyFraming,
        /// The head waits in `conn.out`, encoded with room for a small first chunk, which is
        /// appended to it: one buffer and one write for head and body.
        head_pending: bool,
    },
    H2(&'a mut H2Send),
}

impl<'a> Source<'a> {
    /// An HTTP/1.1 body framed by `framing`.
    pub fn h1(conn: &'a mut Conn, framing: BodyFraming, max_trailer_bytes: usize) -> Self {
        Source::H1(conn, BodyReader::new(framing, max_trailer_bytes))
    }

    /// Bytes are already waiting, or there is no body at all: no reason to send a head alone.
    fn ready(&self) -> bool {
        match self {
            Source::H1(conn, reader) => reader.done || !conn.buf.is_empty(),
            Source::H2(recv) => !recv.ahead.is_empty() || recv.is_end(),
        }
    }

    /// The body is known to end, without trailers, right after what was read last: a body of
    /// known length read to its end. Lets the last bytes and the end go out together (one
    /// HTTP/2 DATA frame with END_STREAM instead of two frames, often two sends).
    fn ends_here(&self) -> bool {
        match self {
            Source::H1(_, reader) => {
                matches!(reader.framing, BodyFraming::Length(_)) && reader.remaining == 0
            }
            Source::H2(recv) => recv.ends_here(),
        }
    }

    async fn next(&mut self, t: &Transfer) -> Result<Event, Error> {
        match self {
            Source::H1(conn, reader) => reader.next(conn, t).await,
            Source::H2(recv) => match recv.next(t.read_idle).await {
                Ok(Read::Data(d)) => Ok(Event::Data(d)),
                Ok(Read::End(trailers)) => Ok(Event::End(trailers)),
                Err(e) => Err(read_failed(t.dir, Some(e))),
            },
        }
    }
}

impl Sink<'_> {
    /// The peer has seen the message head.
    pub fn head_sent(&self) -> bool {
        match self {
            Sink::H1 { head_pending, .. } => !head_pending,
            Sink::H2(send) => send.head_sent(),
        }
    }

    /// Writes `data`, preceded by the head if it has not gone out yet; `end` (with the
    /// trailers) ends the body after it.
    async fn write(
        &mut self,
        data: Bytes,
        end: Option<Option<Fields>>,
        t: &Transfer,
    ) -> Result<(), Error> {
        let result = match self {
            Sink::H1 {
                conn,
                framing,
                head_pending,
            } => {
                let chunked = *framing == BodyFraming::Chunked;
                let data = if chunked || *head_pending {
                    // Framed into the connection's reused buffer, after the head if it is
                    // still there: no allocation per chunk.
                    *head_pending = false;
                    let out = &mut conn.out;
                    match chunked {
                        true => frame_into(&data, end, out),
                        false => out.extend_from_slice(&data),
                    }
                    let bytes = out.split().freeze();
                    if bytes.len() > OUT_KEEP {
                        // Not kept for the next message: an idle connection would hold it.
                        *out = BytesMut::new();
                    }
                    bytes
                } else {
                    data
                };
                if data.is_empty() {
                    return Ok(());
                }
                conn.write(data, t.write_limit).await
            }
            Sink::H2(send) => send.write(data, end, t.write_limit).await,
        };
        result.map_err(|e| match t.dir {
            Dir::Request => Error::upstream(ErrorKind::UpstreamClosed(into_io(e))),
            Dir::Response => Error::downstream(ErrorKind::ClientClosed(into_io(e))),
        })
    }
}

/// Largest write whose buffer a connection keeps for its next head or chunk (heads, SSE
/// events and small bodies); a larger one is freed once written.
const OUT_KEEP: usize = 4096;

/// Reads the body framed by `framing` from its source connection.
pub struct BodyReader {
    framing: BodyFraming,
    remaining: u64,
    chunked: Option<ChunkedDecoder>,
    done: bool,
}
impl BodyReader {
    fn new(framing: BodyFraming, max_trailer_bytes: usize) -> Self {
        BodyReader {
            framing,
            remaining: match framing {
                BodyFraming::Length(n) => n,
                _ => 0,
            },
            chunked: (framing == BodyFraming::Chunked)
                .then(|| ChunkedDecoder::new(max_trailer_bytes)),
            done: framing == BodyFraming::Empty,
        }
    }

    async fn next(&mut self, src: &mut Conn, t: &Transfer) -> Result<Event, Error> {
        if self.done {
            return Ok(Event::End(None));
        }
        loop {
            match self.framing {
                BodyFraming::Empty => unreachable!("Empty bodies start done"),
                BodyFraming::Length(_) if self.remaining == 0 => {
                    self.done = true;
                    return Ok(Event::End(None));
                }
                BodyFraming::Length(_) if !src.buf.is_empty() => {
                    let n = self.remaining.min(src.buf.len() as u64);
                    self.remaining -= n;
                    return Ok(Event::Data(src.buf.split_to(n as usize).freeze()));
                }
                BodyFraming::Chunked => {
                    // The decoder exists exactly when framing is chunked (see `new`).
                    let dec = self.chunked.as_mut().expect("chunked decoder");
                    match dec
                        .decode(&mut src.buf)
                        .map_err(|e| bad_framing(t.dir, e))?
                    {
                        Decoded::Data(d) => return Ok(Event::Data(d)),
                        Decoded::End(trailers) => {
                            self.done = true;
                            return Ok(Event::End(trailers));
                        }
                        Decoded::NeedMore => {}
                    }
                }
                BodyFraming::UntilClose if !src.buf.is_empty() => {
                    return Ok(Event::Data(src.buf.split().freeze()));
                }
                BodyFraming::Length(_) | BodyFraming::UntilClose => {}
            }
            match src.fill(t.read_idle).await {
                Ok(0) if self.framing == BodyFraming::UntilClose => {
                    self.done = true;
                    return Ok(Event::End(None));
                }
                Ok(0) => return Err(read_failed(t.dir, None)),
                Ok(_) => {}
                Err(e) => return Err(read_failed(t.dir, Some(e))),
            }
        }
    }
}

/// Streams the body from `src` to `dst`, through `stage`. Returns the number of body bytes
/// moved. On error the destination has received a prefix (or nothing, if its head is still
/// unsent) and must be closed or reset.
///
/// The head goes out together with the first body bytes when those are already buffered (one
/// send and one wake-up of the peer instead of two, which is most of the cost of a small
/// exchange); when they are not, the head goes out at once, so a stream's head is never held
/// back waiting for its first event.
pub async fn transfer(
    src: &mut Source<'_>,
    dst: &mut Sink<'_>,
    stage: &mut dyn BodyStage,
    t: &Transfer,
) -> Result<u64, Error> {
    if !src.ready() {
        dst.write(Bytes::new(), None, t).await?;
    }
    let mut moved = 0u64;
    loop {
        let (data, trailers) = match src.next(t).await? {
            Event::Data(data) if src.ends_here() => (last(stage, data), Some(None)),
            Event::Data(data) => (stage.chunk(data), None),
            Event::End(trailers) => (stage.end(trailers.as_ref()), Some(trailers)),
        };
        let data = match data {
            Ok(data) => data,
            Err(stop) => {
                if stop.ends_body {
                    dst.write(stop.last, Some(None), t).await?;
                } else if dst.head_sent() && !stop.last.is_empty() {
                    dst.write(stop.last, None, t).await?;
                }
                // With the head still unsent nothing went out: the caller answers with the
                // error's status instead.
                return Err(stop.error);
            }
        };
        moved += data.len() as u64;
        let end = trailers.is_some();
        if !data.is_empty() || end {
            dst.write(data, trailers, t).await?;
        }
        if end {
            return Ok(moved);
        }
    }
}

/// The body's last bytes through the stage, then its end: what the stage releases for both.
fn last(stage: &mut dyn BodyStage, data: Bytes) -> Result<Bytes, Stop> {
    let data = stage.chunk(data)?;
    let tail = stage.end(None)?;
    Ok(match (data.is_empty(), tail.is_empty()) {
        (_, true) => data,
        (true, false) => tail,
        (false, false) => {
            let mut both = BytesMut::with_capacity(data.len() + tail.len());
            both.extend_from_slice(&data);
            both.extend_from_slice(&tail);
            both.freeze()
        }
    })
}

/// Frames body bytes as HTTP/1.1 chunks onto `out`; `end` (with the trailers) appends the last
/// chunk.
fn frame_into(data: &[u8], end: Option<Option<Fields>>, out: &mut BytesMut) {
    if !data.is_empty() {
        encode_chunk(data, out);
    }
    if let Some(trailers) = end {
        encode_last(trailers.as_ref(), out);
    }
}

fn read_failed(dir: Dir, e: Option<ReadError>) -> Error {
    match (dir, e) {
        (Dir::Request, Some(ReadError::TimedOut)) => Error::downstream(ErrorKind::BodyTimeout),
        (Dir::Request, e) => Error::downstream(ErrorKind::ClientClosed(into_io_opt(e))),
        (Dir::Response, Some(ReadError::TimedOut)) => Error::upstream(ErrorKind::UpstreamIdle),
        (Dir::Response, e) => Error::upstream(ErrorKind::UpstreamClosed(into_io_opt(e))),
    }
}

fn bad_framing(dir: Dir, e: crate::http::head::HeadError) -> Error {
    match dir {
        Dir::Request => Error::from_request_head(e),
        Dir::Response => Error::from_response_head(e),
    }
}

pub fn into_io(e: ReadError) -> std::io::Error {
    match e {
        ReadError::TimedOut => std::io::ErrorKind::TimedOut.into(),
        ReadError::Io(e) => e,
    }
}

fn into_io_opt(e: Option<ReadError>) -> std::io::Error {
    e.map_or_else(|| std::io::ErrorKind::UnexpectedEof.into(), into_io)
}
