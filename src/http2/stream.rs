//! One HTTP/2 stream's two halves, as the body transfer uses them: what `conn::Conn` is for an
//! HTTP/1.1 connection.
//!
//! Flow control is what gives backpressure here. Receiving: a chunk's window is given back only
//! when the next chunk is asked for, i.e. after the chunk was written onwards, so a slow
//! destination stops the peer after one stream window. Sending: data goes out only as capacity
//! is assigned, and `h2` assigns none while `max_send_buffer_size` bytes wait for the socket,
//! so a slow reader stalls us instead of growing a buffer.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};

use crate::conn::{ReadError, LINGER, LINGER_BYTES};
use crate::http::head::Fields;

use super::convert::{fields_from_map, trailers_map};

/// Largest first piece of a body sent with its head without waiting for window capacity.
const EAGER_FIRST_PIECE: usize = 16 * 1024;

/// The receiving half of a stream (a request body from a client, a response body from an
/// upstream).
pub struct H2Recv {
    recv: RecvStream,
    /// Data read ahead of the transfer (the model peek) and not handed on yet.
    pub ahead: BytesMut,
    /// Bytes handed on whose window goes back with the next read.
    unreleased: usize,
    /// DATA ended (END_STREAM seen); trailers may still be waiting.
    data_done: bool,
}

/// What the next read produced.
pub enum Read {
    Data(Bytes),
    End(Option<Fields>),
}

impl H2Recv {
    pub fn new(recv: RecvStream) -> H2Recv {
        H2Recv {
            data_done: recv.is_end_stream(),
            recv,
            ahead: BytesMut::new(),
            unreleased: 0,
        }
    }

    /// The next piece of the body, or its end with the trailers.
    pub async fn next(&mut self, idle: Duration) -> Result<Read, ReadError> {
        if !self.ahead.is_empty() {
            return Ok(Read::Data(self.ahead.split().freeze()));
        }
        match self.data(idle).await? {
            // The last DATA frame: no later read will give its window back, so it goes now.
            Some(data) if self.recv.is_end_stream() => {
                let _ = self.recv.flow_control().release_capacity(data.len());
                Ok(Read::Data(data))
            }
            Some(data) => {
                self.unreleased = data.len();
                Ok(Read::Data(data))
            }
            None => {
                let trailers = match crate::clock::timeout(idle, self.recv.trailers()).await {
                    Ok(Ok(t)) => t.map(|t| fields_from_map(&t)),
                    Ok(Err(e)) => return Err(ReadError::Io(h2_io(e))),
                    Err(_) => return Err(ReadError::TimedOut),
                };
                Ok(Read::End(trailers))
            }
        }
    }

    /// Reads one more chunk onto `ahead`; `Ok(0)`: the body ended. Windows for bytes read ahead
    /// go back at once: the look-ahead that bounds them is small.
    pub async fn fill(&mut self, idle: Duration) -> Result<usize, ReadError> {
        match self.data(idle).await? {
            Some(data) => {
                let _ = self.recv.flow_control().release_capacity(data.len());
                self.ahead.extend_from_slice(&data);
                Ok(data.len())
            }
            None => Ok(0),
        }
    }

    /// After an answer that did not need the rest of the body (a refusal, an early response):
    /// reads and drops what the client is still sending, up to [`LINGER_BYTES`] and [`LINGER`], so
    /// a small body's stream ends with the client's own END_STREAM. Otherwise `h2` ends it with
    /// RST_STREAM(NO_ERROR), which RFC 9113 §8.1 allows but clients race: curl 7.88 (Debian 12)
    /// reports a stream error instead of the complete 401 it was sent when the reset arrives
    /// before its upload went out.
    pub async fn linger(&mut self) {
        self.ahead.clear();
        let deadline = crate::clock::now() + LINGER;
        let mut seen = 0;
        while !self.data_done && seen < LINGER_BYTES {
            let left = deadline.saturating_duration_since(crate::clock::now());
            match self.data(left).await {
                Ok(Some(data)) => {
                    seen += data.len();
                    let _ = self.recv.flow_control().release_capacity(data.len());
                }
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// The body ended and nothing read ahead is left.
    pub fn is_end(&self) -> bool {
        self.data_done && self.ahead.is_empty()
    }

    /// Nothing at all follows what was handed on: no data, no trailers (END_STREAM was on the
    /// last DATA frame).
    pub fn ends_here(&self) -> bool {
        self.ahead.is_empty() && self.recv.is_end_stream()
    }

    async fn data(&mut self, idle: Duration) -> Result<Option<Bytes>, ReadError> {
        if self.unreleased > 0 {
            let _ = self.recv.flow_control().release_capacity(self.unreleased);
            self.unreleased = 0;
        }
        if self.data_done {
            return Ok(None);
        }
        loop {
            match crate::clock::timeout(idle, self.recv.data()).await {
                Ok(Some(Ok(data))) if data.is_empty() => continue,
                Ok(Some(Ok(data))) => return Ok(Some(data)),
                Ok(Some(Err(e))) => return Err(ReadError::Io(h2_io(e))),
                Ok(None) => {
                    self.data_done = true;
                    return Ok(None);
                }
                Err(_) => return Err(ReadError::TimedOut),
            }
        }
    }
}

/// The sending half of a stream: a response to a client (head first), or a request body to an
/// upstream.
pub enum H2Send {
    /// A client's stream before anything was decided.
    Waiting(SendResponse<Bytes>),
    /// The response head, held until the first data (or at once, see `body::transfer`).
    Head(SendResponse<Bytes>, http::Response<()>),
    /// A request's stream: its head went out with `send_request`, no data yet.
    Opened(SendStream<Bytes>),
    Body(SendStream<Bytes>),
    Done,
}

impl H2Send {
    /// Whether the peer has seen a response head (or the stream is finished).
    pub fn head_sent(&self) -> bool {
        matches!(self, H2Send::Opened(_) | H2Send::Body(_) | H2Send::Done)
    }

    /// Sends `data`; `end` (with the trailers) ends the stream after it. Waits for flow-control
    /// capacity, at most `limit` for each piece.
    pub async fn write(
        &mut self,
        mut data: Bytes,
        end: Option<Option<Fields>>,
        limit: Duration,
    ) -> Result<(), ReadError> {
        // A request's head already went out with `send_request`: nothing to flush yet.
        if data.is_empty() && end.is_none() && matches!(self, H2Send::Opened(_)) {
            return Ok(());
        }
        let first = matches!(self, H2Send::Head(..) | H2Send::Opened(_));
        if let H2Send::Opened(_) = self {
            let H2Send::Opened(stream) = std::mem::replace(self, H2Send::Done) else {
                unreachable!("matched above")
            };
            *self = H2Send::Body(stream);
        } else if first {
            let H2Send::Head(mut respond, head) = std::mem::replace(self, H2Send::Done) else {
                unreachable!("matched above")
            };
            let only_head = data.is_empty() && matches!(end, Some(None));
            let stream = respond
                .send_response(head, only_head)
                .map_err(|e| ReadError::Io(h2_io(e)))?;
            if only_head {
                return Ok(());
            }
            *self = H2Send::Body(stream);
        }
        let stream = match self {
            H2Send::Body(stream) => stream,
            // A stream that ended with its head (no body) has nothing more to send.
            H2Send::Done if data.is_empty() => return Ok(()),
            _ => return Err(ReadError::Io(io::ErrorKind::NotConnected.into())),
        };
        // The body's end rides on its last DATA frame when there are no trailers.
        let end_with_data = matches!(end, Some(None)) && !data.is_empty();
        while !data.is_empty() {
            // A small first piece goes out with the head without waiting for capacity to be
            // assigned (which takes a turn of the connection task, and a send of its own):
            // `h2` holds at most this one piece beyond the peer's window.
            if first && data.len() <= EAGER_FIRST_PIECE {
                let eos = end_with_data;
                stream
                    .send_data(std::mem::take(&mut data), eos)
                    .map_err(|e| ReadError::Io(h2_io(e)))?;
                break;
            }
            stream.reserve_capacity(data.len());
            let granted = std::future::poll_fn(|cx| stream.poll_capacity(cx));
            let n = match crate::clock::timeout(limit, granted).await {
                Ok(Some(Ok(n))) => n,
                Ok(Some(Err(e))) => return Err(ReadError::Io(h2_io(e))),
                Ok(None) => return Err(ReadError::Io(io::ErrorKind::BrokenPipe.into())),
                Err(_) => return Err(ReadError::TimedOut),
            };
            let piece = data.split_to(n.min(data.len()));
            let eos = end_with_data && data.is_empty();
            stream
                .send_data(piece, eos)
                .map_err(|e| ReadError::Io(h2_io(e)))?;
        }
        let sent = match end {
            None => return Ok(()),
            Some(Some(trailers)) => stream.send_trailers(trailers_map(&trailers)),
            Some(None) if end_with_data => Ok(()),
            Some(None) => stream.send_data(Bytes::new(), true),
        };
        sent.map_err(|e| ReadError::Io(h2_io(e)))?;
        *self = H2Send::Done;
        Ok(())
    }

    /// Ready when the client reset the stream (it cancelled the call).
    pub fn poll_reset(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let polled = match self {
            H2Send::Waiting(r) | H2Send::Head(r, _) => r.poll_reset(cx),
            H2Send::Opened(s) | H2Send::Body(s) => s.poll_reset(cx),
            H2Send::Done => return std::task::Poll::Pending,
        };
        polled.map(drop)
    }

    /// Ends the stream abruptly: the peer must not take what it got for complete.
    pub fn reset(&mut self) {
        match std::mem::replace(self, H2Send::Done) {
            H2Send::Waiting(mut r) | H2Send::Head(mut r, _) => r.send_reset(h2::Reason::CANCEL),
            H2Send::Opened(mut s) | H2Send::Body(mut s) => s.send_reset(h2::Reason::CANCEL),
            H2Send::Done => {}
        }
    }
}

pub fn h2_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        if let Some(e) = e.into_io() {
            return e;
        }
        return io::ErrorKind::BrokenPipe.into();
    }
    io::Error::other(e)
}
