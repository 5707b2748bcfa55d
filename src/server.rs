//! The HTTP/1.1 connection driver: reads request heads one after another (pipelined requests
//! are handled strictly in sequence), runs each through the pipeline, and decides whether the
//! connection goes on.
//!
//! ```text
//!  Idle ──first byte──▶ ReadingHead ──complete──▶ InPipeline ──keep-alive──▶ Idle
//!   │ keepalive_idle / drain       │ header_read timeout / bad head   │ close
//!   ▼                              ▼                                  ▼
//!  closed                      4xx + closed                         closed
//! ```

use std::net::SocketAddr;
use std::rc::Rc;

use monoio::net::TcpStream;

use crate::config::Config;
use crate::conn::{Conn, ReadError};
use crate::error::{Error, ErrorKind};
use crate::http::head::HeadLimits;
use crate::http::{parse_request, RequestHead};
use crate::http2::server::ConnInfo;
use crate::http2::PREFACE;
use crate::pipeline::{self, rescue::error_response, Client, Next, Outcome, RequestCtx};
use crate::runtime::Worker;
use crate::tls::TlsIo;

/// Serves one client connection until it closes.
pub async fn serve(worker: Rc<Worker>, stream: TcpStream, peer: SocketAddr) {
    let _active = worker.enter();
    let Some(mut client) = handshake(&worker, stream, peer).await else {
        return;
    };
    let tls = client.tls_session().is_some();
    // A verified client certificate that a rule maps is this connection's identity.
    let cert_identity = client
        .tls_session()
        .and_then(|t| t.peer_leaf())
        .and_then(|leaf| {
            let generation = worker.generation();
            generation.auth.as_ref().and_then(|a| a.certificate(leaf))
        });
    let connection_id = worker.next_connection_id();
    // HTTP/2: agreed by ALPN over TLS, or announced by its preface on plain TCP (h2c with
    // prior knowledge).
    let h2 = match tls {
        true => client.alpn() == Some(b"h2"),
        false => match sniff_preface(&mut client, &worker).await {
            Some(h2) => h2,
            None => return,
        },
    };
    if h2 {
        let info = ConnInfo {
            peer,
            connection_id,
            tls,
            cert_identity,
        };
        return crate::http2::server::serve(Rc::clone(&worker), client, info).await;
    }
    let mut first = true;
    loop {
        let generation = worker.generation();
        let config = &generation.config;
        let head = match read_head(&mut client, config, &worker, first).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(e) => return reject(&mut client, e, &worker, peer, config).await,
        };
        first = false;
        let request_id = client_request_id(&head).unwrap_or_else(|| worker.next_request_id());
        let mut ctx = RequestCtx::new(request_id, peer.ip(), &head);
        ctx.connection_id = connection_id;
        ctx.worker_id = worker.id as u32;
        ctx.tls = tls;
        ctx.peer_identity = cert_identity.clone();
        let next = pipeline::handle(
            &mut ctx,
            &mut Client::H1(&mut client),
            &head,
            &generation,
            worker.drain.is_on(),
        )
        .await;
        if config.log.access_log {
            crate::log::access(&ctx);
        }
        if next == Next::Close {
            if !ctx.request_done {
                client.linger_close().await;
            }
            return;
        }
    }
}

/// The connection as the pipeline sees it: plain, or after a TLS handshake bounded by
/// `handshake_timeout`. A failed handshake ends the connection (logged, with the reason).
async fn handshake(worker: &Worker, stream: TcpStream, peer: SocketAddr) -> Option<Conn> {
    let generation = worker.generation();
    let Some(tls) = generation.config.server.tls.as_ref() else {
        return Some(Conn::new(stream));
    };
    let accepted = crate::clock::timeout(
        tls.handshake_timeout,
        TlsIo::accept(stream, tls.config.clone()),
    )
    .await;
    match accepted {
        Ok(Ok(session)) => Some(Conn::tls(session)),
        Ok(Err(e)) => {
            tracing::info!(client = %peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!(client = %peer, "TLS handshake timed out");
            None
        }
    }
}

/// Waits for the next request head. `Ok(None)`: the connection ends quietly (closed by the
/// client, idle too long, or the worker is draining).
async fn read_head(
    client: &mut Conn,
    config: &Config,
    worker: &Worker,
    first: bool,
) -> Result<Option<RequestHead>, Error> {
    let t = &config.timeouts;
    let limits = HeadLimits {
        max_headers: config.limits.max_headers,
        max_head_bytes: config.limits.max_header_bytes,
        max_uri_bytes: config.limits.max_uri_bytes,
    };
    if client.buf.is_empty() {
        // A fresh connection gets `header_read` to start talking; a kept-alive one gets
        // `keepalive_idle`. Either way, draining closes it now.
        let idle = if first {
            t.header_read
        } else {
            t.keepalive_idle
        };
        let read = monoio::select! {
            r = client.fill(idle) => Some(r),
            _ = worker.drain.wait() => None,
        };
        match read {
            Some(Ok(n)) if n > 0 => {}
            _ => return Ok(None),
        }
    }
    let deadline = crate::clock::now() + t.header_read;
    loop {
        if let Some(head) =
            parse_request(&mut client.buf, &limits).map_err(Error::from_request_head)?
        {
            return Ok(Some(head));
        }
        match client
            .fill(deadline.saturating_duration_since(crate::clock::now()))
            .await
        {
            Ok(0) | Err(ReadError::Io(_)) => return Ok(None),
            Ok(_) => {}
            Err(ReadError::TimedOut) => return Err(Error::downstream(ErrorKind::HeaderTimeout)),
        }
    }
}

/// Answers a request whose head was refused, logs it, and closes.
async fn reject(client: &mut Conn, err: Error, worker: &Worker, peer: SocketAddr, config: &Config) {
    let mut ctx = RequestCtx::rejected(worker.next_request_id(), peer.ip());
    ctx.status = err.status().0;
    ctx.outcome = Outcome::Rejected;
    tracing::info!(request_id = %ctx.request_id, client = %peer, error = %err, "request rejected");
    let response = error_response(&err, &ctx.request_id, true);
    ctx.bytes_out = response.len() as u64;
    let _ = client.write(response, config.timeouts.body_idle).await;
    if config.log.access_log {
        crate::log::access(&ctx);
    }
    client.linger_close().await;
}

/// Reads the first bytes of a plain connection far enough to tell the HTTP/2 preface from an
/// HTTP/1.1 request line. `None`: the connection ended (closed, idle, draining) before that.
async fn sniff_preface(client: &mut Conn, worker: &Worker) -> Option<bool> {
    let header_read = worker.generation().config.timeouts.header_read;
    let deadline = crate::clock::now() + header_read;
    while client.buf.len() < PREFACE.len() && PREFACE.starts_with(&client.buf) {
        let left = deadline.saturating_duration_since(crate::clock::now());
        let read = monoio::select! {
            r = client.fill(left) => r,
            _ = worker.drain.wait() => return None,
        };
        match read {
            Ok(n) if n > 0 => {}
            _ => return None,
        }
    }
    Some(client.buf.starts_with(PREFACE))
}

/// The client's `x-request-id` if it is safe to log and forward (1–128 of `[A-Za-z0-9._:-]`).
pub(crate) fn client_request_id(head: &RequestHead) -> Option<String> {
    let v = head.fields.get("x-request-id")?;
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(b));
    ok.then(|| String::from_utf8_lossy(v).into_owned())
}
