//! Upstream groups as seen by one worker: endpoint choice, passive health, keep-alive pool.
//!
//! Each worker owns its `Pool`s outright (`Rc`, `Cell`): no locks, no cross-core traffic.
//! Balancing is *least outstanding requests* within the worker, because inference servers queue
//! internally and a round-robin gateway keeps feeding the one that is busy with a long
//! generation. Ties rotate so idle groups still spread load. An endpoint that fails to connect is
//! skipped for `fail_backoff`; if every endpoint is backing off, the one whose back-off ends first
//! is tried anyway, so one blip cannot black-hole a single-endpoint group.
//!
//! Retries happen only while connecting, i.e. before any request byte was sent: a request is
//! never replayed to a model server that may have started working on it.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use std::sync::Arc;

use crate::tls::{TlsIo, UpstreamTls};

use bytes::Bytes;
use h2::client::SendRequest;

use crate::config::{Timeouts, Upstream as UpstreamConfig, UpstreamProtocol};
use crate::conn::Conn;
use crate::error::{Error, ErrorKind};
use crate::http2::io::H2Io;
use crate::http2::stream::h2_io;
use crate::http2::{H2_SEND_BUFFER, H2_STREAM_WINDOW, H2_UPSTREAM_CONNECTION_WINDOW};

struct Endpoint {
    addr: SocketAddr,
    /// `group/address`, for logs and recordings.
    label: Rc<str>,
    outstanding: Cell<u32>,
    down_until: Cell<Option<Instant>>,
    idle: RefCell<Vec<(Conn, Instant)>>,
    /// HTTP/2 groups: the one connection this worker multiplexes its requests on.
    h2: RefCell<Option<SendRequest<Bytes>>>,
}

/// A checked-out way to send one request: an HTTP/1.1 connection of its own, or a stream on
/// the endpoint's shared HTTP/2 connection.
pub enum Upstream {
    H1(Conn),
    H2(SendRequest<Bytes>),
}

pub struct Pool {
    name: String,
    endpoints: Vec<Endpoint>,
    rotate: Cell<usize>,
    fail_backoff: Duration,
    max_idle: usize,
    idle_timeout: Duration,
    tls: Option<Arc<UpstreamTls>>,
    protocol: UpstreamProtocol,
    /// PING interval on HTTP/2 connections (`h2_keepalive`), `None` when off.
    h2_keepalive: Option<Duration>,
}

/// One request's claim on an endpoint; counts as outstanding until dropped.
pub struct Lease {
    pool: Rc<Pool>,
    index: usize,
}

impl Pool {
    pub fn new(cfg: &UpstreamConfig) -> Rc<Pool> {
        Rc::new(Pool {
            name: cfg.name.clone(),
            endpoints: cfg
                .endpoints
                .iter()
                .map(|&addr| Endpoint {
                    addr,
                    label: Rc::from(format!("{}/{addr}", cfg.name)),
                    outstanding: Cell::new(0),
                    down_until: Cell::new(None),
                    idle: RefCell::new(Vec::new()),
                    h2: RefCell::new(None),
                })
                .collect(),
            rotate: Cell::new(0),
            fail_backoff: cfg.fail_backoff,
            max_idle: cfg.max_idle_per_endpoint,
            idle_timeout: cfg.pool_idle_timeout,
            tls: cfg.tls.clone(),
            protocol: cfg.protocol,
            h2_keepalive: Some(cfg.h2_keepalive).filter(|d| !d.is_zero()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection to the best endpoint: pooled if a live one is idle, else newly connected.
    /// Tries each endpoint at most once.
    pub async fn checkout(self: &Rc<Self>, t: &Timeouts) -> Result<(Upstream, Lease), Error> {
        let mut tried = vec![false; self.endpoints.len()];
        let mut last = Error::upstream(ErrorKind::ConnectTimeout);
        while let Some(index) = self.pick(&tried) {
            tried[index] = true;
            let ep = &self.endpoints[index];
            let lease = Lease::new(self, index);
            // Handshakes are boxed (here and in `h2_sender`): their futures are large (TLS,
            // HTTP/2) and rare next to a pooled connection, and every request's future would
            // otherwise carry their size.
            let connecting = async {
                if self.protocol != UpstreamProtocol::Http1 {
                    return self.h2_sender(ep).await.map(Upstream::H2);
                }
                if let Some(conn) = self.pooled(ep) {
                    return Ok(Upstream::H1(conn));
                }
                Box::pin(self.connect(ep.addr)).await.map(Upstream::H1)
            };
            match crate::clock::timeout(t.upstream_connect, connecting).await {
                Ok(Ok(upstream)) => {
                    ep.down_until.set(None);
                    return Ok((upstream, lease));
                }
                Ok(Err(e)) => {
                    tracing::warn!(upstream = %self.name, endpoint = %ep.addr, error = %e, "upstream connect failed");
                    last = Error::upstream(ErrorKind::ConnectFailed(e));
                }
                Err(_) => {
                    tracing::warn!(upstream = %self.name, endpoint = %ep.addr, "upstream connect timed out");
                    last = Error::upstream(ErrorKind::ConnectTimeout);
                }
            }
            ep.down_until
                .set(Some(crate::clock::now() + self.fail_backoff));
        }
        Err(last)
    }

    /// TCP, then TLS when the group has `[upstream.tls]` (verified as its `server_name`, else
    /// the endpoint's IP address). Both under the caller's connect timeout.
    async fn connect(&self, addr: SocketAddr) -> std::io::Result<Conn> {
        let tcp = TcpStream::connect_addr(addr).await?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(Conn::new(tcp));
        };
        let name = tls
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        let session = TlsIo::connect(tcp, tls.config.clone(), name).await?;
        Ok(Conn::tls(session))
    }

    /// A handle on the endpoint's HTTP/2 connection, connecting (again) when there is none or
    /// it has gone away (`ready` fails on a closed connection).
    async fn h2_sender(&self, ep: &Endpoint) -> std::io::Result<SendRequest<Bytes>> {
        let cached = ep.h2.borrow().clone();
        if let Some(sender) = cached {
            match sender.ready().await {
                Ok(sender) => return Ok(sender),
                Err(e) => {
                    tracing::debug!(upstream = %self.name, endpoint = %ep.addr, error = %e, "HTTP/2 upstream connection gone; reconnecting");
                    ep.h2.borrow_mut().take();
                }
            }
        }
        let (sender, connection) = Box::pin(async {
            let io = self.connect(ep.addr).await?.into_h2_io()?;
            h2::client::Builder::new()
                .initial_window_size(H2_STREAM_WINDOW)
                .initial_connection_window_size(H2_UPSTREAM_CONNECTION_WINDOW)
                .max_send_buffer_size(H2_SEND_BUFFER)
                .handshake::<_, Bytes>(io)
                .await
                .map_err(h2_io)
        })
        .await?;
        // h2 spawns nothing: the connection makes progress only while this task polls it.
        monoio::spawn(drive_h2(
            connection,
            self.h2_keepalive,
            self.name.clone(),
            ep.addr,
        ));
        *ep.h2.borrow_mut() = Some(sender.clone());
        sender.ready().await.map_err(h2_io)
    }

    /// Drops the endpoint's HTTP/2 connection after it failed an exchange (a half-open
    /// connection would otherwise time out every call): the next call connects afresh, and
    /// streams in flight on the old one finish or fail on their own.
    pub fn forget_h2(&self, lease: &Lease) {
        self.endpoints[lease.index].h2.borrow_mut().take();
    }

    /// Returns a connection whose exchange completed cleanly, for reuse.
    pub fn checkin(&self, lease: &Lease, conn: Conn) {
        let ep = &self.endpoints[lease.index];
        let mut idle = ep.idle.borrow_mut();
        if idle.len() < self.max_idle {
            idle.push((conn, crate::clock::now()));
        }
    }

    /// The group speaks TLS to its model servers.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `group/address` of the leased endpoint.
    pub fn label(&self, lease: &Lease) -> &Rc<str> {
        &self.endpoints[lease.index].label
    }

    /// Least outstanding among untried endpoints that are up; ties broken by rotation.
    fn pick(&self, tried: &[bool]) -> Option<usize> {
        let n = self.endpoints.len();
        let start = self.rotate.get();
        self.rotate.set(start.wrapping_add(1));
        let candidates = (0..n).map(|i| (start + i) % n).filter(|&i| !tried[i]);
        let up = candidates
            .clone()
            // The clock is read only for an endpoint that is backing off (rarely).
            .filter(|&i| {
                self.endpoints[i]
                    .down_until
                    .get()
                    .is_none_or(|t| t <= crate::clock::now())
            })
            .min_by_key(|&i| self.endpoints[i].outstanding.get());
        // All remaining endpoints are backing off: try the one that recovers first, but only
        // as the first attempt (a request should not walk through a list of dead endpoints).
        up.or_else(|| {
            if tried.iter().any(|t| *t) {
                return None;
            }
            candidates.min_by_key(|&i| self.endpoints[i].down_until.get())
        })
    }

    /// The most recently used idle connection that is still alive; stale ones are dropped.
    fn pooled(&self, ep: &Endpoint) -> Option<Conn> {
        let mut idle = ep.idle.borrow_mut();
        while let Some((mut conn, since)) = idle.pop() {
            if crate::clock::now().saturating_duration_since(since) < self.idle_timeout
                && conn.is_reusable()
            {
                return Some(conn);
            }
        }
        None
    }
}

/// Runs an upstream HTTP/2 connection until it ends. With a keepalive interval, a PING goes
/// out after each quiet interval and a connection that does not answer within the next one is
/// dropped: a model server that vanished without a FIN or RST (host down, network partition)
/// would otherwise be found only by the next call timing out on it. Dropping the connection
/// fails its streams and the endpoint's cached sender, so the next call connects afresh.
async fn drive_h2(
    mut connection: h2::client::Connection<H2Io, Bytes>,
    keepalive: Option<Duration>,
    name: String,
    addr: SocketAddr,
) {
    let mut pinger = keepalive.zip(connection.ping_pong());
    let mut connection = std::pin::pin!(connection);
    loop {
        // Without keepalive this never completes and the loop runs once.
        let alive = async {
            let Some((every, pinger)) = &mut pinger else {
                return std::future::pending().await;
            };
            monoio::time::sleep(*every).await;
            let pong = crate::clock::timeout(*every, pinger.ping(h2::Ping::opaque())).await;
            matches!(pong, Ok(Ok(_)))
        };
        monoio::select! {
            ended = &mut connection => {
                if let Err(e) = ended {
                    tracing::debug!(upstream = %name, endpoint = %addr, error = %e, "HTTP/2 upstream connection ended");
                }
                return;
            }
            answered = alive => if !answered {
                tracing::warn!(upstream = %name, endpoint = %addr, after = ?keepalive, "HTTP/2 upstream connection did not answer a PING; dropping it");
                return;
            }
        }
    }
}

impl Lease {
    /// Returns the connection the lease was for, after a clean exchange, to the pool.
    pub fn checkin(&self, conn: Conn) {
        self.pool.checkin(self, conn);
    }

    fn new(pool: &Rc<Pool>, index: usize) -> Lease {
        let ep = &pool.endpoints[index];
        ep.outstanding.set(ep.outstanding.get() + 1);
        Lease {
            pool: Rc::clone(pool),
            index,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let ep = &self.pool.endpoints[self.index];
        ep.outstanding.set(ep.outstanding.get().saturating_sub(1));
    }
}
