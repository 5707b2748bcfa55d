//! Mock upstreams on std threads: a scriptable raw server that records every byte and request per
//! connection, ready-made behaviours (answer, never answer, close early, stall after accept), a
//! refusing port and a listener whose accept queue is full (connects to it hang).

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::http::{Framing, Head, HttpConn, Message, GUARD};

/// How long an upstream connection may sit idle waiting for the gateway's next request before the
/// mock gives up on it. Long: the gateway's pool legitimately keeps connections idle.
const UPSTREAM_READ_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
struct State {
    /// Raw bytes received, one entry per accepted connection.
    conns: Mutex<Vec<Arc<Mutex<Vec<u8>>>>>,
    /// Clones of accepted sockets, shut down on drop to free handler threads.
    sockets: Mutex<Vec<TcpStream>>,
    /// (connection index, request) in arrival order.
    requests: Mutex<Vec<(usize, Message)>>,
    changed: Condvar,
    stop: AtomicBool,
    /// Connections whose handler has returned (closed by the gateway or by the script).
    finished: AtomicUsize,
}

impl State {
    fn notify(&self) {
        let _guard = self.requests.lock().unwrap();
        self.changed.notify_all();
    }
}

/// A running mock upstream. Dropping it stops accepting and closes every connection.
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<State>,
}

/// The handler's view of one accepted connection.
pub struct UpConn {
    pub conn: HttpConn,
    pub index: usize,
    state: Arc<State>,
}

impl UpConn {
    /// Reads one whole request and records it. None when the gateway closed the connection
    /// before a head. A request whose body broke off is recorded and returned with
    /// `complete == false`.
    pub fn read_request(&mut self) -> Option<Message> {
        let msg = match self.conn.read_message(None) {
            Ok(Some(m)) => m,
            Ok(None) => return None,
            Err(e) => {
                eprintln!("[upstream] conn {} read error: {e}", self.index);
                return None;
            }
        };
        self.record(msg.clone());
        Some(msg)
    }

    /// Reads only a request head (for handlers that stream the body themselves with
    /// `conn.next_piece()`); records it with an empty body.
    pub fn read_head(&mut self) -> Option<Head> {
        match self.conn.read_head() {
            Ok(Some(h)) => {
                self.conn.begin_body(Framing::of_request(&h));
                self.record(Message {
                    head: h.clone(),
                    body: Vec::new(),
                    trailers: Vec::new(),
                    complete: true,
                });
                Some(h)
            }
            Ok(None) => None,
            Err(e) => {
                eprintln!("[upstream] conn {} read error: {e}", self.index);
                None
            }
        }
    }

    fn record(&self, msg: Message) {
        self.state.requests.lock().unwrap().push((self.index, msg));
        self.state.changed.notify_all();
    }

    /// Writes bytes; false when the gateway has gone away.
    pub fn write(&mut self, bytes: &[u8]) -> bool {
        self.conn.write_all(bytes).is_ok()
    }

    /// Blocks until the mock is dropped: the "never answer" behaviour.
    pub fn hold_until_stopped(&self) {
        let mut guard = self.state.requests.lock().unwrap();
        while !self.state.stop.load(Ordering::SeqCst) {
            guard = self
                .state
                .changed
                .wait_timeout(guard, Duration::from_millis(200))
                .unwrap()
                .0;
        }
    }

    pub fn stopped(&self) -> bool {
        self.state.stop.load(Ordering::SeqCst)
    }
}

impl Upstream {
    /// Starts a mock running `handler` on its own thread for every accepted connection; the
    /// connection closes when the handler returns.
    pub fn start(handler: impl Fn(&mut UpConn) + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind mock upstream");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let handler = Arc::new(handler);
        let st = state.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let record = Arc::new(Mutex::new(Vec::new()));
                let index = {
                    let mut conns = st.conns.lock().unwrap();
                    conns.push(record.clone());
                    conns.len() - 1
                };
                if let Ok(clone) = stream.try_clone() {
                    st.sockets.lock().unwrap().push(clone);
                }
                st.notify();
                let handler = handler.clone();
                let st2 = st.clone();
                thread::spawn(move || {
                    let mut up = UpConn {
                        conn: HttpConn::new(stream, record, UPSTREAM_READ_TIMEOUT),
                        index,
                        state: st2,
                    };
                    handler(&mut up);
                    let _ = up.conn.stream().shutdown(Shutdown::Both);
                    up.state.finished.fetch_add(1, Ordering::SeqCst);
                    up.state.notify();
                });
            }
        });
        Upstream { addr, state }
    }

    /// Answers every complete request with `f(request)`, keeping the connection alive unless the
    /// answer says `connection: close`.
    pub fn respond(f: impl Fn(&Message) -> Vec<u8> + Send + Sync + 'static) -> Upstream {
        Upstream::start(move |c| {
            while let Some(req) = c.read_request() {
                if !req.complete {
                    return;
                }
                let resp = f(&req);
                if !c.write(&resp) {
                    return;
                }
                let head_end = super::http::find(&resp, b"\r\n\r\n").unwrap_or(resp.len());
                if String::from_utf8_lossy(&resp[..head_end])
                    .to_ascii_lowercase()
                    .contains("connection: close")
                {
                    return;
                }
            }
        })
    }

    /// 200 with a fixed text body.
    pub fn ok(body: &'static str) -> Upstream {
        Upstream::respond(move |_| {
            super::http::response(200, &["content-type: text/plain"], body.as_bytes())
        })
    }

    /// Reads requests and never answers; holds the connection open until dropped.
    pub fn silent() -> Upstream {
        Upstream::start(|c| {
            if c.read_request().is_some() {
                c.hold_until_stopped();
            }
        })
    }

    /// Accepts, reads nothing, answers nothing.
    pub fn stall_after_accept() -> Upstream {
        Upstream::start(|c| c.hold_until_stopped())
    }

    /// Reads one request and closes without answering.
    pub fn close_after_request() -> Upstream {
        Upstream::start(|c| {
            let _ = c.read_request();
        })
    }

    pub fn url(&self) -> String {
        self.addr.to_string()
    }

    pub fn connection_count(&self) -> usize {
        self.state.conns.lock().unwrap().len()
    }

    /// Raw bytes received on connection `i`.
    pub fn received(&self, i: usize) -> Vec<u8> {
        self.state.conns.lock().unwrap()[i].lock().unwrap().clone()
    }

    /// Raw bytes received on all connections, concatenated.
    pub fn received_all(&self) -> Vec<u8> {
        let conns = self.state.conns.lock().unwrap();
        conns
            .iter()
            .flat_map(|c| c.lock().unwrap().clone())
            .collect()
    }

    /// Requests recorded so far with the index of the connection each came on.
    pub fn requests(&self) -> Vec<(usize, Message)> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Waits (up to the guard) for at least `n` recorded requests.
    pub fn wait_requests(&self, n: usize) -> Vec<(usize, Message)> {
        let deadline = Instant::now() + GUARD;
        let mut guard = self.state.requests.lock().unwrap();
        while guard.len() < n {
            let now = Instant::now();
            assert!(
                now < deadline,
                "mock upstream {} saw {} requests, expected {n}",
                self.addr,
                guard.len()
            );
            guard = self
                .state
                .changed
                .wait_timeout(guard, deadline - now)
                .unwrap()
                .0;
        }
        guard.clone()
    }

    /// Connections whose handler has finished (for the stock handlers: the gateway closed them).
    pub fn finished_count(&self) -> usize {
        self.state.finished.load(Ordering::SeqCst)
    }

    /// Waits (up to the guard) until at least `n` connections have finished.
    pub fn wait_finished(&self, n: usize) {
        let deadline = Instant::now() + GUARD;
        let mut guard = self.state.requests.lock().unwrap();
        while self.finished_count() < n {
            let now = Instant::now();
            assert!(
                now < deadline,
                "mock upstream {}: {} connections finished, expected {n}",
                self.addr,
                self.finished_count()
            );
            guard = self
                .state
                .changed
                .wait_timeout(guard, Duration::from_millis(50).min(deadline - now))
                .unwrap()
                .0;
        }
    }

    /// Waits (up to the guard) for at least `n` accepted connections.
    pub fn wait_connections(&self, n: usize) {
        let deadline = Instant::now() + GUARD;
        let mut guard = self.state.requests.lock().unwrap();
        while self.connection_count() < n {
            let now = Instant::now();
            assert!(
                now < deadline,
                "mock upstream {} accepted {} connections, expected {n}",
                self.addr,
                self.connection_count()
            );
            guard = self
                .state
                .changed
                .wait_timeout(guard, Duration::from_millis(50).min(deadline - now))
                .unwrap()
                .0;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.state.notify();
        for s in self.state.sockets.lock().unwrap().iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Wake the accept loop so its thread ends.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// An address on 127.0.0.1 where nothing listens: bound, then released.
pub fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// A listener whose accept queue is full, so a new connect to it hangs in SYN-SENT (Linux drops
/// the SYN). The only way to exercise a connect timeout on 127.0.0.1.
pub struct FullBacklog {
    pub addr: SocketAddr,
    _listener: TcpListener,
    _fillers: Vec<TcpStream>,
}

impl FullBacklog {
    /// None when the queue could not be shown full (a connect probe still succeeded).
    pub fn new() -> Option<FullBacklog> {
        // SAFETY: plain socket syscalls on a fresh fd owned by the TcpListener created below.
        let listener = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket");
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
            sa.sin_port = 0;
            let rc = libc::bind(
                fd,
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            );
            assert_eq!(rc, 0, "bind");
            assert_eq!(libc::listen(fd, 0), 0, "listen");
            TcpListener::from_raw_fd(fd)
        };
        let addr = listener.local_addr().unwrap();
        let mut fillers = Vec::new();
        for _ in 0..8 {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(s) => fillers.push(s),
                Err(_) => {
                    return Some(FullBacklog {
                        addr,
                        _listener: listener,
                        _fillers: fillers,
                    })
                }
            }
        }
        None
    }
}
