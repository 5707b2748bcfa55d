//! A TCP connection with its read buffer: the one place that touches sockets on the request
//! path, used for both the client and the upstream side.
//!
//! monoio's I/O is completion based: a read takes ownership of the buffer and gives it back.
//! `Conn` hides that dance. Reads append into the spare capacity of one `BytesMut`; parsed heads
//! and body data are split off its front as `Bytes`, so forwarding copies nothing. If a read times
//! out, the in-flight buffer stays with the kernel operation, the connection is unusable and the
//! caller closes it.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::tls::TlsIo;

/// Read sizes: small enough to keep per-connection memory low, large enough for bulk bodies.
const READ_CHUNK: usize = 16 * 1024;

/// After an answer sent before the request body was read: how much of the rest is read and
/// dropped, and for how long, before the connection (HTTP/1.1) or stream (HTTP/2) is closed
/// anyway. Closing with the client's bytes unread makes the kernel answer with RST (HTTP/2:
/// `h2` sends RST_STREAM), and a client whose upload is still going can lose the answer to it.
pub const LINGER_BYTES: usize = 64 * 1024;
pub const LINGER: Duration = Duration::from_secs(1);

/// Why a read did not produce bytes.
#[derive(Debug)]
pub enum ReadError {
    TimedOut,
    Io(io::Error),
}

pub struct Conn {
    io: Io,
    pub buf: BytesMut,
    /// Where heads (and the body bytes sent with them) are written before they go out. Kept
    /// across messages: once the `Bytes` split off it is written and dropped, the next head
    /// reuses the same allocation, so a keep-alive exchange allocates nothing for its heads.
    pub out: BytesMut,
}

/// The socket: plain TCP, or TCP under a TLS session (either side).
enum Io {
    Tcp(TcpStream),
    Tls(Box<TlsIo>),
}

impl Conn {
    /// Wraps a connected stream; Nagle is disabled because every write here is a complete unit
    /// (a head, a chunk, an SSE event) that must leave now.
    pub fn new(stream: TcpStream) -> Conn {
        let _ = stream.set_nodelay(true);
        Conn {
            io: Io::Tcp(stream),
            buf: BytesMut::with_capacity(READ_CHUNK),
            out: BytesMut::new(),
        }
    }

    /// Wraps a TLS session (client or server side) whose handshake is done.
    pub fn tls(session: TlsIo) -> Conn {
        let _ = session.tcp.set_nodelay(true);
        Conn {
            io: Io::Tls(Box::new(session)),
            buf: BytesMut::with_capacity(READ_CHUNK),
            out: BytesMut::new(),
        }
    }

    /// Hands the connection to HTTP/2; bytes already read (the client preface) come first.
    pub fn into_h2_io(self) -> io::Result<crate::http2::io::H2Io> {
        use crate::http2::io::H2Io;
        let replay = self.buf.freeze();
        match self.io {
            Io::Tcp(s) => H2Io::tcp(s, replay),
            Io::Tls(t) => H2Io::tls(*t, replay),
        }
    }

    /// The protocol the TLS handshake agreed on (ALPN), if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.tls_session().and_then(|t| t.session.alpn_protocol())
    }

    /// The TLS session, when the connection has one.
    pub fn tls_session(&self) -> Option<&TlsIo> {
        match &self.io {
            Io::Tls(t) => Some(t),
            Io::Tcp(_) => None,
        }
    }

    /// Reads more bytes onto the end of `buf`. `Ok(0)` is end of stream.
    pub async fn fill(&mut self, limit: Duration) -> Result<usize, ReadError> {
        let stream = match &mut self.io {
            Io::Tcp(s) => s,
            Io::Tls(t) => {
                return match crate::clock::timeout(limit, t.read_into(&mut self.buf)).await {
                    Ok(res) => res.map_err(ReadError::Io),
                    Err(_) => Err(ReadError::TimedOut),
                }
            }
        };
        let mut buf = std::mem::take(&mut self.buf);
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let len = buf.len();
        let cap = buf.capacity();
        match crate::clock::timeout(limit, stream.read(buf.slice_mut(len..cap))).await {
            Ok((res, slice)) => {
                self.buf = slice.into_inner();
                res.map_err(ReadError::Io)
            }
            Err(_) => Err(ReadError::TimedOut),
        }
    }

    /// Closes after an early answer (see [`LINGER`]): our side is shut down, so the client sees
    /// the end of the answer, then what it still sends is read and dropped until it closes too
    /// or the limits pass.
    pub async fn linger_close(&mut self) {
        use std::os::fd::AsRawFd;
        let fd = match &self.io {
            Io::Tcp(s) => s.as_raw_fd(),
            Io::Tls(t) => t.tcp.as_raw_fd(),
        };
        // SAFETY: `fd` is the open socket this `Conn` owns; shutdown does not close it.
        unsafe { libc::shutdown(fd, libc::SHUT_WR) };
        let deadline = crate::clock::now() + LINGER;
        let mut seen = 0;
        while seen < LINGER_BYTES {
            self.buf.clear();
            let left = deadline.saturating_duration_since(crate::clock::now());
            match self.fill(left).await {
                Ok(n) if n > 0 => seen += n,
                _ => return,
            }
        }
    }

    /// Writes all of `data`, failing if the peer does not take it within `limit`.
    pub async fn write(&mut self, data: Bytes, limit: Duration) -> Result<(), ReadError> {
        let result = match &mut self.io {
            Io::Tcp(s) => crate::clock::timeout(limit, s.write_all(data))
                .await
                .map(|(r, _)| r.map(drop)),
            Io::Tls(t) => crate::clock::timeout(limit, t.write_all(&data)).await,
        };
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ReadError::Io(e)),
            Err(_) => Err(ReadError::TimedOut),
        }
    }

    /// Whether a pooled connection is still usable: no EOF, no error, and no unsolicited bytes
    /// waiting (an upstream must not speak before it is asked). One non-blocking `recv` peek.
    pub fn is_reusable(&mut self) -> bool {
        use std::os::fd::AsRawFd;
        if !self.buf.is_empty() {
            return false;
        }
        let stream = match &mut self.io {
            Io::Tcp(s) => s,
            Io::Tls(t) => return t.idle_and_clean(),
        };
        let mut byte = 0u8;
        // SAFETY: `recv` writes at most 1 byte into `byte`, which lives across the call; the fd
        // is owned by `self.stream` and open for the duration of the call.
        let n = unsafe {
            libc::recv(
                stream.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }
}
