//! The auxiliary thread: everything that is not the request path runs here, on its own monoio
//! runtime, so no worker ever waits on an IdP or an operator.
//!
//! - the issuer key fetcher ([`KeyHub::run_fetcher`]);
//! - the admin listener (`[admin] listen`): `GET /.well-known/jwks.json`, the public keys of the
//!   identity assertion, which model servers fetch to verify it. Public by nature, so it needs
//!   no authentication; nothing else is served yet (404). Bind it to an internal address.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use monoio::net::{TcpListener, TcpStream};

use crate::config::{Config, DriverChoice};
use crate::conn::Conn;
use crate::http::head::HeadLimits;
use crate::http::parse_request;
use crate::identity::hub::KeyHub;

/// State the control thread and the auxiliary thread share.
pub struct Shared {
    config: RwLock<Arc<Config>>,
    pub hub: Arc<KeyHub>,
}

impl Shared {
    pub fn new(config: Arc<Config>) -> Arc<Shared> {
        let hub = KeyHub::new();
        hub.configure(config.identity.as_deref());
        Arc::new(Shared {
            config: RwLock::new(config),
            hub,
        })
    }

    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_config(&self, config: Arc<Config>) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }
}

/// Binds the admin listener (so a bad address fails the start) and starts the thread. Returns
/// the admin address, if there is one.
pub fn spawn(shared: Arc<Shared>) -> std::io::Result<Option<SocketAddr>> {
    let config = shared.config();
    let admin = match config.admin {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Some(l)
        }
        None => None,
    };
    let addr = admin.as_ref().map(|l| l.local_addr()).transpose()?;
    std::thread::Builder::new()
        .name("modelgate-aux".into())
        .spawn(move || {
            let mut rt = match super::build_runtime(DriverChoice::Legacy) {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the auxiliary runtime");
                    std::process::exit(1);
                }
            };
            rt.block_on(async move {
                if let Some(l) = admin {
                    match TcpListener::from_std(l) {
                        Ok(l) => drop(monoio::spawn(admin_loop(l, Arc::clone(&shared)))),
                        Err(e) => tracing::error!(error = %e, "cannot register the admin listener"),
                    }
                }
                let timeout_of = {
                    let shared = Arc::clone(&shared);
                    move || {
                        shared
                            .config()
                            .identity
                            .as_ref()
                            .map_or(Duration::from_secs(5), |i| i.fetch_timeout)
                    }
                };
                Arc::clone(&shared.hub).run_fetcher(timeout_of).await;
            });
        })?;
    Ok(addr)
}

async fn admin_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => drop(monoio::spawn(admin_request(stream, Arc::clone(&shared)))),
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One request per connection: read the head, answer, close.
async fn admin_request(stream: TcpStream, shared: Arc<Shared>) {
    let mut conn = Conn::new(stream);
    let limits = HeadLimits {
        max_headers: 64,
        max_head_bytes: 16 * 1024,
        max_uri_bytes: 2048,
    };
    let limit = Duration::from_secs(10);
    let head = loop {
        match parse_request(&mut conn.buf, &limits) {
            Ok(Some(head)) => break head,
            Ok(None) => {}
            Err(_) => return respond(&mut conn, 400, "text/plain", "bad request\n").await,
        }
        if !matches!(conn.fill(limit).await, Ok(n) if n > 0) {
            return;
        }
    };
    let path = head.path.split('?').next().unwrap_or("");
    match (head.method.as_str(), path) {
        ("GET", "/.well-known/jwks.json") => {
            let config = shared.config();
            let jwks = config
                .identity
                .as_ref()
                .and_then(|i| i.assertion.as_ref())
                .map_or_else(|| r#"{"keys":[]}"#.to_owned(), |s| s.jwks().to_owned());
            respond(&mut conn, 200, "application/jwk-set+json", &jwks).await
        }
        _ => respond(&mut conn, 404, "text/plain", "not found\n").await,
    }
}

async fn respond(conn: &mut Conn, status: u16, content_type: &str, body: &str) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        _ => "Not Found",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\ncache-control: max-age=60\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn
        .write(Bytes::from(response), Duration::from_secs(10))
        .await;
}
