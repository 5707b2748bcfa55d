//! The HTTP/2 connection driver: accepts streams and runs each through the pipeline, the same
//! path an HTTP/1.1 request takes.
//!
//! `h2` spawns nothing: the connection makes progress only while `accept` is polled, so this
//! loop runs for the connection's whole life and every stream is a task of its own. Limits
//! (RFC 9113 floods, CVE-2023-44487 rapid reset, the CONTINUATION flood of RUSTSEC-2024-0332):
//! - concurrent streams per connection, and our own count of live stream tasks (a stream the
//!   client resets stops counting for `h2` but its task may still run): over it, REFUSED_STREAM;
//! - streams reset before they were accepted, and streams `h2` had to reset for protocol
//!   errors: over either limit, GOAWAY `ENHANCE_YOUR_CALM`;
//! - the decoded header list (which also bounds CONTINUATION frames per block);
//! - receive windows, and the send buffer per stream (`http2` constants).

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::convert::request_head;
use super::stream::{H2Recv, H2Send};
use super::{H2_CONNECTION_WINDOW, H2_SEND_BUFFER, H2_STREAM_WINDOW, MAX_CONCURRENT_STREAMS};
use crate::conn::Conn;
use crate::error::Error;
use crate::grpc::is_grpc_content_type;
use crate::http::head::HeadLimits;
use crate::identity::Verified;
use crate::pipeline::{self, Client, H2Exchange, Outcome, RequestCtx};
use crate::runtime::Worker;

/// Streams reset by the client before we accepted them, per connection.
const MAX_PENDING_RESETS: usize = 20;
/// Streams we reset for the client's protocol errors, per connection.
const MAX_ERROR_RESETS: usize = 256;
/// How often an idle connection checks for the worker draining.
const DRAIN_CHECK: Duration = Duration::from_millis(250);

/// What the connection carries into each of its streams.
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub connection_id: u64,
    pub tls: bool,
    pub cert_identity: Option<Rc<Verified>>,
}

/// Serves one client connection that speaks HTTP/2 until it closes.
pub async fn serve(worker: Rc<Worker>, client: Conn, info: ConnInfo) {
    let generation = worker.generation();
    let config = &generation.config;
    let io = match client.into_h2_io() {
        Ok(io) => io,
        Err(e) => {
            tracing::info!(client = %info.peer, error = %e, "HTTP/2 connection setup failed");
            return;
        }
    };
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(config.limits.max_header_bytes as u32)
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .max_local_error_reset_streams(Some(MAX_ERROR_RESETS))
        .max_send_buffer_size(H2_SEND_BUFFER)
        .initial_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .handshake::<_, Bytes>(io);
    let mut conn = match crate::clock::timeout(config.timeouts.header_read, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::info!(client = %info.peer, error = %e, "HTTP/2 handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(client = %info.peer, "HTTP/2 handshake timed out");
            return;
        }
    };
    let info = Rc::new(info);
    let live = Rc::new(Cell::new(0u32));
    let keepalive_idle = config.timeouts.keepalive_idle;
    let mut idle_for = Duration::ZERO;
    let mut closing: Option<Instant> = None;
    let close_grace = config.server.drain_grace;
    // One timer for the connection's life (not one per accepted stream): it wakes the loop to
    // look at draining and idleness while nothing arrives.
    let mut tick = std::pin::pin!(monoio::time::sleep(DRAIN_CHECK));
    loop {
        // Draining is checked on every turn (a client opening streams faster than the check
        // interval must still get its GOAWAY), and a peer that never lets the graceful close
        // finish (it must acknowledge a PING) is dropped after the drain grace.
        match closing {
            None if worker.drain.is_on() => {
                closing = Some(Instant::now());
                conn.graceful_shutdown();
            }
            Some(since) if since.elapsed() > close_grace => return,
            _ => {}
        }
        let next = std::future::poll_fn(|cx| match conn.poll_accept(cx) {
            Poll::Ready(accepted) => Poll::Ready(Some(accepted)),
            Poll::Pending => tick.as_mut().poll(cx).map(|()| None),
        })
        .await;
        let (request, mut respond) = match next {
            Some(Some(Ok(stream))) => stream,
            Some(Some(Err(e))) => {
                if !e.is_go_away() && !e.is_io() {
                    tracing::info!(client = %info.peer, error = %e, "HTTP/2 connection error");
                }
                return;
            }
            Some(None) => return,
            None => {
                tick.set(monoio::time::sleep(DRAIN_CHECK));
                // The tick: close when idle too long (after the streams in
                // flight finish: GOAWAY first, then `accept` runs until it returns `None`).
                idle_for = match live.get() {
                    0 => idle_for + DRAIN_CHECK,
                    _ => Duration::ZERO,
                };
                if closing.is_none() && idle_for >= keepalive_idle {
                    closing = Some(Instant::now());
                    conn.graceful_shutdown();
                }
                continue;
            }
        };
        idle_for = Duration::ZERO;
        if live.get() >= MAX_CONCURRENT_STREAMS {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
            continue;
        }
        live.set(live.get() + 1);
        let worker = Rc::clone(&worker);
        let info = Rc::clone(&info);
        let live = Rc::clone(&live);
        monoio::spawn(async move {
            stream(&worker, &info, request, respond).await;
            live.set(live.get() - 1);
        });
    }
}

/// One stream: its head becomes a request head, then the pipeline answers it.
async fn stream(
    worker: &Rc<Worker>,
    info: &ConnInfo,
    request: http::Request<h2::RecvStream>,
    respond: h2::server::SendResponse<Bytes>,
) {
    let generation = worker.generation();
    let config = &generation.config;
    let (parts, body) = request.into_parts();
    let limits = HeadLimits {
        max_headers: config.limits.max_headers,
        max_head_bytes: config.limits.max_header_bytes,
        max_uri_bytes: config.limits.max_uri_bytes,
    };
    let head = request_head(&parts, body.is_end_stream(), &limits);
    let mut exchange = H2Exchange {
        body: H2Recv::new(body),
        send: H2Send::Waiting(respond),
    };
    let mut client = Client::H2(&mut exchange);
    let head = match head {
        Ok(head) => head,
        Err(e) => {
            let err = Error::from_request_head(e);
            let mut ctx = RequestCtx::rejected(worker.next_request_id(), info.peer.ip());
            ctx.connection_id = info.connection_id;
            ctx.http2 = true;
            ctx.grpc = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| is_grpc_content_type(v.as_bytes()));
            tracing::info!(request_id = %ctx.request_id, client = %info.peer, error = %err, "request rejected");
            pipeline::rescue(&mut ctx, &mut client, err, config, true).await;
            ctx.outcome = Outcome::Rejected;
            if config.log.access_log {
                crate::log::access(&ctx);
            }
            return;
        }
    };
    let request_id =
        crate::server::client_request_id(&head).unwrap_or_else(|| worker.next_request_id());
    let mut ctx = RequestCtx::new(request_id, info.peer.ip(), &head);
    ctx.connection_id = info.connection_id;
    ctx.worker_id = worker.id as u32;
    ctx.tls = info.tls;
    ctx.http2 = true;
    ctx.peer_identity = info.cert_identity.clone();
    pipeline::handle(&mut ctx, &mut client, &head, &generation, false).await;
    if config.log.access_log {
        crate::log::access(&ctx);
    }
    // A refusal answers before the body is read: let a small one finish arriving.
    if !exchange.body.is_end() {
        exchange.body.linger().await;
    }
}
