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

use crate::config::{Timeouts, Upstream};
use crate::conn::Conn;
use crate::error::{Error, ErrorKind};

struct Endpoint {
    addr: SocketAddr,
    outstanding: Cell<u32>,
    down_until: Cell<Option<Instant>>,
    idle: RefCell<Vec<(Conn, Instant)>>,
}

pub struct Pool {
    name: String,
    endpoints: Vec<Endpoint>,
    rotate: Cell<usize>,
    fail_backoff: Duration,
    max_idle: usize,
    idle_timeout: Duration,
    tls: Option<Arc<UpstreamTls>>,
}

/// One request's claim on an endpoint; counts as outstanding until dropped.
pub struct Lease {
    pool: Rc<Pool>,
    index: usize,
}

impl Pool {
    pub fn new(cfg: &Upstream) -> Rc<Pool> {
        Rc::new(Pool {
            name: cfg.name.clone(),
            endpoints: cfg
                .endpoints
                .iter()
                .map(|&addr| Endpoint {
                    addr,
                    outstanding: Cell::new(0),
                    down_until: Cell::new(None),
                    idle: RefCell::new(Vec::new()),
                })
                .collect(),
            rotate: Cell::new(0),
            fail_backoff: cfg.fail_backoff,
            max_idle: cfg.max_idle_per_endpoint,
            idle_timeout: cfg.pool_idle_timeout,
            tls: cfg.tls.clone(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection to the best endpoint: pooled if a live one is idle, else newly connected.
    /// Tries each endpoint at most once.
    pub async fn checkout(self: &Rc<Self>, t: &Timeouts) -> Result<(Conn, Lease), Error> {
        let mut tried = vec![false; self.endpoints.len()];
        let mut last = Error::upstream(ErrorKind::ConnectTimeout);
        while let Some(index) = self.pick(&tried) {
            tried[index] = true;
            let ep = &self.endpoints[index];
            let lease = Lease::new(self, index);
            if let Some(conn) = self.pooled(ep) {
                return Ok((conn, lease));
            }
            match monoio::time::timeout(t.upstream_connect, self.connect(ep.addr)).await {
                Ok(Ok(conn)) => {
                    ep.down_until.set(None);
                    return Ok((conn, lease));
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
            ep.down_until.set(Some(Instant::now() + self.fail_backoff));
        }
        Err(last)
    }

    /// TCP, then TLS when the group has `[upstream.tls]` (verified as its `server_name`, else
    /// the endpoint's IP address). Both under the caller's connect timeout.
    async fn connect(&self, addr: SocketAddr) -> std::io::Result<Conn> {
        let tcp = TcpStream::connect_addr(addr).await?;
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

    /// Returns a connection whose exchange completed cleanly, for reuse.
    pub fn checkin(&self, lease: &Lease, conn: Conn) {
        let ep = &self.endpoints[lease.index];
        let mut idle = ep.idle.borrow_mut();
        if idle.len() < self.max_idle {
            idle.push((conn, Instant::now()));
        }
    }

    pub fn endpoint(&self, lease: &Lease) -> SocketAddr {
        self.endpoints[lease.index].addr
    }

    /// Least outstanding among untried endpoints that are up; ties broken by rotation.
    fn pick(&self, tried: &[bool]) -> Option<usize> {
        let now = Instant::now();
        let n = self.endpoints.len();
        let start = self.rotate.get();
        self.rotate.set(start.wrapping_add(1));
        let candidates = (0..n).map(|i| (start + i) % n).filter(|&i| !tried[i]);
        let up = candidates
            .clone()
            .filter(|&i| self.endpoints[i].down_until.get().is_none_or(|t| t <= now))
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
            if since.elapsed() < self.idle_timeout && conn.is_reusable() {
                return Some(conn);
            }
        }
        None
    }
}

impl Lease {
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
