//! The gateway's own small HTTPS client, for discovery documents and JWKS: one GET per
//! connection (`Connection: close`), TLS verified with rustls against the issuer's CA bundle or
//! the system one, the whole exchange under one timeout and the body under a size cap.
//!
//! It runs on the auxiliary thread's monoio runtime, never on a worker. Host names are resolved
//! with the system resolver on a thread of their own.

use std::net::ToSocketAddrs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;

use crate::conn::Conn;
use crate::http::chunked::{ChunkedDecoder, Decoded};
use crate::http::head::Method;
use crate::http::{parse_response, BodyFraming};
use crate::tls::TlsIo;

/// Largest discovery or JWKS document accepted.
const MAX_BODY: usize = 1024 * 1024;

/// GETs `url` and returns the body of a 200 response.
pub async fn get(url: &str, ca_file: Option<&Path>, timeout: Duration) -> Result<Vec<u8>, String> {
    match crate::clock::timeout(timeout, fetch(url, ca_file)).await {
        Ok(r) => r,
        Err(_) => Err(format!("GET {url}: timed out after {timeout:?}")),
    }
}

async fn fetch(url: &str, ca_file: Option<&Path>) -> Result<Vec<u8>, String> {
    let target = Target::parse(url)?;
    let addr = resolve(&target.host, target.port).await?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nhost: {}\r\naccept: application/json\r\nuser-agent: modelgate\r\nconnection: close\r\n\r\n",
        target.path, target.authority
    );
    let mut conn = if target.tls {
        let config = client_config(ca_file)?;
        let name = ServerName::try_from(target.host.trim_matches(['[', ']']).to_owned())
            .map_err(|e| format!("server name {}: {e}", target.host))?;
        let session = TlsIo::connect(tcp, config, name)
            .await
            .map_err(|e| format!("TLS to {}: {e}", target.authority))?;
        Conn::tls(session)
    } else {
        Conn::new(tcp)
    };
    let raw = exchange(&mut conn, request).await?;
    body_of(raw).map_err(|e| format!("GET {url}: {e}"))
}

/// The host's first address. IP literals need no lookup; names are resolved by the system
/// resolver on a short-lived thread, so a slow DNS server stalls this fetch and nothing else on
/// the auxiliary thread.
async fn resolve(host: &str, port: u16) -> Result<std::net::SocketAddr, String> {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        return Ok((ip, port).into());
    }
    let (tx, rx) = async_channel::bounded(1);
    let name = host.to_owned();
    std::thread::Builder::new()
        .name("modelgate-dns".into())
        .spawn(move || {
            let found = (name.as_str(), port)
                .to_socket_addrs()
                .map(|mut a| a.next());
            let _ = tx.send_blocking(found);
        })
        .map_err(|e| format!("resolve {host}: {e}"))?;
    match rx.recv().await {
        Ok(Ok(Some(addr))) => Ok(addr),
        Ok(Ok(None)) => Err(format!("resolve {host}: no address")),
        Ok(Err(e)) => Err(format!("resolve {host}: {e}")),
        Err(_) => Err(format!("resolve {host}: resolver thread gone")),
    }
}

/// Sends the request and reads until the server closes (or the cap). The caller's timeout
/// bounds the whole exchange, so the per-read limit here is only a backstop.
async fn exchange(conn: &mut Conn, request: String) -> Result<BytesMut, String> {
    let limit = Duration::from_secs(60);
    conn.write(Bytes::from(request), limit)
        .await
        .map_err(|e| format!("send: {e:?}"))?;
    loop {
        match conn.fill(limit).await {
            Ok(0) => break,
            Ok(_) => {}
            // A peer that closes without close_notify has still sent its whole framed body;
            // `body_of` checks the framing, so a cut body is still an error.
            Err(_) if !conn.buf.is_empty() => break,
            Err(e) => return Err(format!("read: {e:?}")),
        }
        if conn.buf.len() > MAX_BODY + 64 * 1024 {
            return Err(format!("response larger than {MAX_BODY} bytes"));
        }
    }
    Ok(std::mem::take(&mut conn.buf))
}

/// The body of a complete 200 response held in `raw`.
pub fn body_of(mut raw: BytesMut) -> Result<Vec<u8>, String> {
    let head = parse_response(&mut raw, 64 * 1024, &Method::Get)
        .map_err(|e| format!("bad response head: {e:?}"))?
        .ok_or("response cut short in its head")?;
    if head.status != 200 {
        return Err(format!("status {}", head.status));
    }
    match head.framing {
        BodyFraming::Length(n) if raw.len() as u64 >= n => Ok(raw[..n as usize].to_vec()),
        BodyFraming::Length(_) => Err("body cut short".into()),
        BodyFraming::UntilClose | BodyFraming::Empty => Ok(raw.to_vec()),
        BodyFraming::Chunked => {
            let mut dec = ChunkedDecoder::new(16 * 1024);
            let mut body = Vec::new();
            loop {
                match dec
                    .decode(&mut raw)
                    .map_err(|e| format!("bad chunked body: {e:?}"))?
                {
                    Decoded::Data(d) => body.extend_from_slice(&d),
                    Decoded::End(_) => return Ok(body),
                    Decoded::NeedMore => return Err("chunked body cut short".into()),
                }
            }
        }
    }
}

fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let path = ca_file.unwrap_or(Path::new(crate::tls::SYSTEM_BUNDLE));
    let roots = crate::tls::roots(path).map_err(|e| e.message)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The parts of an `http(s)://host[:port]/path` URL this client needs.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    tls: bool,
    host: String,
    port: u16,
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let (tls, rest) = match url.split_once("://") {
            Some(("https", rest)) => (true, rest),
            Some(("http", rest)) => (false, rest),
            _ => return Err(format!("{url:?}: not an http(s) URL")),
        };
        let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => {
                (h, p.parse().map_err(|_| format!("{url:?}: bad port"))?)
            }
            _ => (authority, if tls { 443 } else { 80 }),
        };
        if host.is_empty() || authority.contains('@') {
            return Err(format!("{url:?}: bad host"));
        }
        Ok(Target {
            tls,
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = Target::parse("https://127.0.0.1:8443/jwks").unwrap();
        assert_eq!((t.tls, t.host.as_str(), t.port), (true, "127.0.0.1", 8443));
        assert_eq!(t.path, "/jwks");
        let t = Target::parse("https://idp.example.com").unwrap();
        assert_eq!((t.port, t.path.as_str()), (443, "/"));
        let t = Target::parse("http://[::1]:9/x?y").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("[::1]", 9));
        assert!(Target::parse("ftp://x").is_err());
        assert!(Target::parse("https://user@x/").is_err());
    }

    #[test]
    fn names_resolve_off_the_runtime_thread_and_literals_need_no_lookup() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        rt.block_on(async {
            let addr = resolve("localhost", 8443).await.unwrap();
            assert!(addr.ip().is_loopback() && addr.port() == 8443, "{addr}");
            assert_eq!(resolve("[::1]", 1).await.unwrap().to_string(), "[::1]:1");
        });
    }

    #[test]
    fn reads_bodies_by_their_framing() {
        let raw = |s: &str| BytesMut::from(s.as_bytes());
        let cl = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(body_of(raw(cl)).unwrap(), b"{}");
        let ch =
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\n{\r\n1\r\n}\r\n0\r\n\r\n";
        assert_eq!(body_of(raw(ch)).unwrap(), b"{}");
        assert!(body_of(raw("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}")).is_err());
        assert!(body_of(raw("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")).is_err());
    }
}
