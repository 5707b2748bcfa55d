//! The socket under an HTTP/2 connection, in the shape `h2` wants (tokio's poll-based
//! `AsyncRead`/`AsyncWrite`).
//!
//! monoio's `poll-io` turns a completion-based `TcpStream` into a readiness-based one without an
//! extra copy (docs/h2-on-monoio.md). On top of it:
//! - bytes the HTTP/1.1 side already read (the h2c preface) are replayed first;
//! - TLS is driven by hand over the poll socket (as `tls::TlsIo` does over the completion one),
//!   continuing the session whose handshake `TlsIo` ran;
//! - a connection that always has bytes ready yields after `FAIR_SHARE` bytes: `h2` never yields
//!   on its own and monoio has no task budget, so without this one flooding peer could hold the
//!   worker thread and starve every other connection on it.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use monoio::io::IntoPollIo;
use monoio::net::tcp::stream_poll::TcpStreamPoll;
use monoio::net::TcpStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::tls::TlsIo;

/// Bytes read back to back before the connection lets other tasks run.
const FAIR_SHARE: usize = 256 * 1024;

pub struct H2Io {
    sock: Sock,
    /// Bytes read before the switch to HTTP/2, handed out before any new read.
    replay: Bytes,
    /// Bytes read since this connection last had to wait.
    streak: usize,
}

enum Sock {
    Tcp(TcpStreamPoll),
    Tls(Box<TlsPoll>),
}

impl H2Io {
    /// A plain TCP connection; `replay` is what was already read from it.
    pub fn tcp(stream: TcpStream, replay: Bytes) -> io::Result<H2Io> {
        Ok(H2Io {
            sock: Sock::Tcp(stream.into_poll_io()?),
            replay,
            streak: 0,
        })
    }

    /// A TLS session whose handshake is done; `replay` is plaintext already read from it.
    pub fn tls(session: TlsIo, replay: Bytes) -> io::Result<H2Io> {
        let (tcp, conn, raw) = session.into_parts();
        Ok(H2Io {
            sock: Sock::Tls(Box::new(TlsPoll {
                tcp: tcp.into_poll_io()?,
                conn,
                raw,
                eof: false,
            })),
            replay,
            streak: 0,
        })
    }
}

impl AsyncRead for H2Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay[..n]);
            this.replay.advance(n);
            return Poll::Ready(Ok(()));
        }
        if this.streak >= FAIR_SHARE {
            this.streak = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let polled = match &mut this.sock {
            Sock::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Sock::Tls(t) => t.poll_read(cx, buf),
        };
        match polled {
            Poll::Pending => this.streak = 0,
            Poll::Ready(_) => this.streak += buf.filled().len() - before,
        }
        polled
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.sock {
            Sock::Tcp(s) => Pin::new(s).poll_write(cx, data),
            Sock::Tls(t) => t.poll_write(cx, data),
        }
    }

    /// `h2` writes a DATA frame's header and its payload as two slices; without vectored
    /// writes each would be a send of its own.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.sock {
            Sock::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Sock::Tls(t) => t.poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.sock {
            Sock::Tcp(s) => Pin::new(s).poll_flush(cx),
            Sock::Tls(t) => t.poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.sock {
            Sock::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Sock::Tls(t) => {
                t.conn.send_close_notify();
                match t.poll_flush(cx) {
                    Poll::Ready(Ok(())) => Pin::new(&mut t.tcp).poll_shutdown(cx),
                    other => other,
                }
            }
        }
    }
}

/// A rustls session over the poll socket.
struct TlsPoll {
    tcp: TcpStreamPoll,
    conn: rustls::Connection,
    /// TLS bytes read during the handshake that rustls has not taken yet.
    raw: Vec<u8>,
    /// The socket reached end of stream.
    eof: bool,
}

impl TlsPoll {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.conn.reader().read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // A bare TCP close without close_notify is UnexpectedEof, as in `TlsIo`.
                Err(e) => return Poll::Ready(Err(e)),
            }
            if self.eof {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            // Alerts and post-handshake messages rustls queued go out first.
            if let Poll::Ready(Err(e)) = self.poll_send_tls(cx) {
                return Poll::Ready(Err(e));
            }
            if !self.raw.is_empty() {
                let mut rd: &[u8] = &self.raw;
                let taken = self.conn.read_tls(&mut rd)?;
                self.raw.drain(..taken);
            } else {
                let mut sync = SyncIo {
                    tcp: &mut self.tcp,
                    cx,
                };
                match self.conn.read_tls(&mut sync) {
                    Ok(0) => self.eof = true,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if let Err(e) = self.conn.process_new_packets() {
                let _ = self.poll_send_tls(cx);
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, data.is_empty(), |w| w.write(data))
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let empty = bufs.iter().all(|b| b.is_empty());
        self.poll_write_with(cx, empty, |w| w.write_vectored(bufs))
    }

    /// rustls takes at most its buffer limit of plaintext; what it took is accepted, and as
    /// much as the socket takes is sent now. With the buffer full nothing is taken: then the
    /// records go out first and the write is tried again, because `Ok(0)` for non-empty data
    /// means "the peer is gone" to the caller.
    fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        empty: bool,
        mut write: impl FnMut(&mut rustls::Writer<'_>) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        if empty {
            return Poll::Ready(Ok(0));
        }
        loop {
            let n = write(&mut self.conn.writer())?;
            match self.poll_send_tls(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if n == 0 => return Poll::Pending,
                Poll::Ready(Ok(())) if n == 0 => continue,
                _ => return Poll::Ready(Ok(n)),
            }
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.conn.writer().flush()?;
        match self.poll_send_tls(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.tcp).poll_flush(cx),
            other => other,
        }
    }

    /// Sends queued TLS records until none are left (`Ready`) or the socket is full (`Pending`).
    fn poll_send_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.conn.wants_write() {
            let mut sync = SyncIo {
                tcp: &mut self.tcp,
                cx,
            };
            match self.conn.write_tls(&mut sync) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// The poll socket as `std::io` for rustls: `Pending` becomes `WouldBlock` (the waker is
/// registered by the poll that returned it).
struct SyncIo<'a, 'b> {
    tcp: &'a mut TcpStreamPoll,
    cx: &'a mut Context<'b>,
}

impl Read for SyncIo<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(out);
        match Pin::new(&mut *self.tcp).poll_read(self.cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for SyncIo<'_, '_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.tcp).poll_write(self.cx, data) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
