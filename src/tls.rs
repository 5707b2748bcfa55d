//! TLS termination on the client listener: rustls (aws-lc-rs), TLS 1.2 and 1.3 only, a default
//! certificate plus certificates chosen by SNI, optional client certificates verified against a
//! CA bundle (mTLS), and a handshake timeout.
//!
//! Everything is built at config load, so a bad certificate or key is a config error naming its
//! key, and SIGHUP re-reads the files: new connections use the new certificates, open ones keep
//! theirs. ALPN offers `http/1.1` (HTTP/2 comes with its stage); a client that offers ALPN
//! without it is refused in the handshake rather than spoken to in a protocol it did not ask for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use serde::Deserialize;

use crate::config::{Dur, KeyError};

/// `[server.tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain served when no SNI entry matches.
    pub cert_file: PathBuf,
    /// Its PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// `[[server.tls.sni]]`: certificates for other names.
    #[serde(default)]
    pub sni: Vec<SniSection>,
    /// CA bundle for client certificates; with it, clients may (or must) present one.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// `optional` (default with a CA) or `required`.
    #[serde(default)]
    pub client_auth: ClientAuth,
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: Dur,
    /// `"1.2"` (default) or `"1.3"`.
    #[serde(default = "default_min_version")]
    pub min_version: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniSection {
    /// Exact names or `*.example.com` (one label).
    pub names: Vec<String>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    Optional,
    Required,
}

fn default_handshake_timeout() -> Dur {
    Dur::secs(10)
}
fn default_min_version() -> String {
    "1.2".into()
}

/// The built acceptor and its settings.
pub struct Tls {
    pub config: Arc<rustls::ServerConfig>,
    pub handshake_timeout: Duration,
    /// Client certificates are verified (mTLS).
    pub client_certs: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("client_certs", &self.client_certs)
            .finish()
    }
}

impl Tls {
    /// Reads every file and builds the rustls server config; paths are relative to `base`.
    pub fn load(s: &TlsSection, base: &Path) -> Result<Tls, KeyError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key_of = |cert: &PathBuf, key: &PathBuf, at: &str| {
            certified_key(&base.join(cert), &base.join(key), &provider, at)
        };
        let default = key_of(&s.cert_file, &s.key_file, "server.tls")?;
        let mut exact = HashMap::new();
        let mut wildcard = Vec::new();
        for (i, sni) in s.sni.iter().enumerate() {
            let at = format!("server.tls.sni[{i}]");
            let key = key_of(&sni.cert_file, &sni.key_file, &at)?;
            for name in &sni.names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix('*') {
                    Some(suffix) if suffix.starts_with('.') => {
                        wildcard.push((suffix.to_owned(), key.clone()))
                    }
                    Some(_) => {
                        return Err(KeyError::new(
                            &format!("{at}.names"),
                            &format!("{name:?} is not a name or a *.suffix wildcard"),
                            "write exact names (\"api.example.com\") or \"*.example.com\"",
                        ))
                    }
                    None => drop(exact.insert(name, key.clone())),
                }
            }
        }
        let versions: &[&rustls::SupportedProtocolVersion] = match s.min_version.as_str() {
            "1.2" => &[&rustls::version::TLS13, &rustls::version::TLS12],
            "1.3" => &[&rustls::version::TLS13],
            v => {
                return Err(KeyError::new(
                    "server.tls.min_version",
                    &format!("unsupported TLS version {v:?}"),
                    "use \"1.2\" or \"1.3\" (older versions are not offered)",
                ))
            }
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| KeyError::new("server.tls", &e.to_string(), "check the TLS settings"))?;
        let builder =
            match &s.client_ca_file {
                None if s.client_auth == ClientAuth::Required => return Err(KeyError::new(
                    "server.tls.client_auth",
                    "client_auth = \"required\" but no client_ca_file to verify certificates with",
                    "set client_ca_file to the CA bundle that issues client certificates",
                )),
                None => builder.with_no_client_auth(),
                Some(ca) => {
                    let roots = roots(&base.join(ca))?;
                    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
                    let verifier = match s.client_auth {
                        ClientAuth::Optional => verifier.allow_unauthenticated(),
                        ClientAuth::Required => verifier,
                    };
                    let verifier = verifier.build().map_err(|e| {
                        KeyError::new(
                            "server.tls.client_ca_file",
                            &e.to_string(),
                            "give a PEM CA bundle",
                        )
                    })?;
                    builder.with_client_cert_verifier(verifier)
                }
            };
        let mut config = builder.with_cert_resolver(Arc::new(SniResolver {
            exact,
            wildcard,
            default,
        }));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            config: Arc::new(config),
            handshake_timeout: s.handshake_timeout.0,
            client_certs: s.client_ca_file.is_some(),
        })
    }
}

fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
    at: &str,
) -> Result<Arc<CertifiedKey>, KeyError> {
    let (chain, private) = read_pair(cert, key, at)?;
    CertifiedKey::from_der(chain, private, provider)
        .map(Arc::new)
        .map_err(|e| mismatch(at, e))
}

fn mismatch(at: &str, e: rustls::Error) -> KeyError {
    KeyError::new(
        &format!("{at}.key_file"),
        &format!("key does not fit the certificate: {e}"),
        "use the private key the certificate was issued for",
    )
}

/// A PEM certificate chain and its private key.
fn read_pair(
    cert: &Path,
    key: &Path,
    at: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), KeyError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect())
        .map_err(|e| {
            KeyError::new(
                &format!("{at}.cert_file"),
                &format!("cannot read certificates from {}: {e}", cert.display()),
                "point cert_file at a PEM file with the certificate chain, leaf first",
            )
        })?;
    if chain.is_empty() {
        return Err(KeyError::new(
            &format!("{at}.cert_file"),
            &format!("{} holds no certificate", cert.display()),
            "point cert_file at a PEM file with the certificate chain, leaf first",
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        KeyError::new(
            &format!("{at}.key_file"),
            &format!("cannot read a private key from {}: {e}", key.display()),
            "point key_file at the PEM private key of the certificate (PKCS#8, PKCS#1 or SEC1)",
        )
    })?;
    Ok((chain, private))
}

/// The CA certificates of a PEM bundle (errors keyed as `server.tls.client_ca_file`; callers
/// for other keys re-key them).
pub(crate) fn roots(ca: &Path) -> Result<Arc<rustls::RootCertStore>, KeyError> {
    let err = |e: String| {
        KeyError::new(
            "server.tls.client_ca_file",
            &format!("cannot read CA certificates from {}: {e}", ca.display()),
            "point client_ca_file at a PEM bundle of the CAs that issue client certificates",
        )
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| err(e.to_string()))? {
        roots
            .add(cert.map_err(|e| err(e.to_string()))?)
            .map_err(|e| err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("no certificates".into()));
    }
    Ok(Arc::new(roots))
}

/// Certificates by SNI: exact name, then the longest `*.suffix` covering one label, then the
/// default.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name().map(str::to_ascii_lowercase) else {
            return Some(self.default.clone());
        };
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        self.wildcard
            .iter()
            .filter(|(suffix, _)| {
                name.strip_suffix(suffix.as_str())
                    .is_some_and(|label| !label.is_empty() && !label.contains('.'))
            })
            .max_by_key(|(suffix, _)| suffix.len())
            .map(|(_, k)| k.clone())
            .or_else(|| Some(self.default.clone()))
    }
}

/// A TLS session over a monoio `TcpStream` (either side), driven by hand so the connection's
/// own buffer receives the plaintext (no extra copy layer) and the verified peer certificate
/// stays reachable. Raw TLS bytes read but not yet taken by rustls wait in `pending`.
pub struct TlsIo {
    pub tcp: monoio::net::TcpStream,
    pub session: rustls::Connection,
    pending: Vec<u8>,
    /// Where decrypted bytes are read before they are appended to the caller's buffer.
    scratch: Box<[u8]>,
}

impl TlsIo {
    /// The server side: runs the handshake to its end (the caller bounds it with a timeout).
    pub async fn accept(
        tcp: monoio::net::TcpStream,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<TlsIo> {
        let session = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
        TlsIo::handshake(tcp, session.into()).await
    }

    /// The client side, to a model server: verifies it as `name`.
    pub async fn connect(
        tcp: monoio::net::TcpStream,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> std::io::Result<TlsIo> {
        let session = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        TlsIo::handshake(tcp, session.into()).await
    }

    async fn handshake(
        tcp: monoio::net::TcpStream,
        session: rustls::Connection,
    ) -> std::io::Result<TlsIo> {
        let mut io = TlsIo {
            tcp,
            session,
            pending: Vec::new(),
            scratch: vec![0; 16 * 1024].into_boxed_slice(),
        };
        while io.session.is_handshaking() {
            io.flush().await?;
            if io.session.wants_read() && io.read_tls().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        // TLS 1.3 session tickets and the like go out now, not with the first response.
        io.flush().await?;
        Ok(io)
    }

    /// Reads TLS bytes from the socket and hands them to rustls. `Ok(0)`: the peer closed.
    async fn read_tls(&mut self) -> std::io::Result<usize> {
        use monoio::io::AsyncReadRent;
        if self.pending.is_empty() {
            let buf = Vec::with_capacity(16 * 1024);
            let (res, buf) = self.tcp.read(buf).await;
            let n = res?;
            if n == 0 {
                return Ok(0);
            }
            self.pending = buf;
        }
        let mut rd: &[u8] = &self.pending;
        let taken = self.session.read_tls(&mut rd)?;
        self.pending.drain(..taken);
        if let Err(e) = self.session.process_new_packets() {
            // Tell the peer why (an alert), then fail.
            let _ = self.flush().await;
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
        }
        Ok(taken.max(1))
    }

    /// Sends whatever rustls has queued (handshake messages, records, alerts).
    pub async fn flush(&mut self) -> std::io::Result<()> {
        use monoio::io::AsyncWriteRentExt;
        while self.session.wants_write() {
            let mut out = Vec::with_capacity(16 * 1024);
            self.session.write_tls(&mut out)?;
            let (res, _) = self.tcp.write_all(out).await;
            res?;
        }
        Ok(())
    }

    /// Appends decrypted bytes to `buf`. `Ok(0)`: the peer closed with close_notify. A bare TCP
    /// close is `UnexpectedEof`: on TLS, only close_notify proves nothing was cut off (a body
    /// delimited by the connection's end must not look complete after an injected FIN).
    pub async fn read_into(&mut self, buf: &mut bytes::BytesMut) -> std::io::Result<usize> {
        use std::io::Read;
        loop {
            // Through a scratch buffer on the heap: a stack array here would live across the
            // awaits below and make every future that reads a connection 16 KiB larger.
            match self.session.reader().read(&mut self.scratch) {
                Ok(0) => return Ok(0),
                Ok(n) => {
                    buf.extend_from_slice(&self.scratch[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            self.flush().await?;
            if self.read_tls().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Encrypts and sends all of `data`.
    pub async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        // rustls buffers at most 64 KiB of plaintext: write what it takes, send, repeat.
        let mut rest = data;
        while !rest.is_empty() {
            let n = self.session.writer().write(rest)?;
            rest = &rest[n..];
            self.flush().await?;
        }
        Ok(())
    }

    /// The socket, the session and the TLS bytes read but not yet processed: for continuing
    /// the session over a poll-based socket (`http2::io`).
    pub fn into_parts(self) -> (monoio::net::TcpStream, rustls::Connection, Vec<u8>) {
        (self.tcp, self.session, self.pending)
    }

    /// The verified client certificate's leaf, if the client presented one.
    pub fn peer_leaf(&self) -> Option<&CertificateDer<'static>> {
        self.session.peer_certificates().and_then(|c| c.first())
    }

    /// For a pooled upstream session: takes in whatever arrived while it was idle without
    /// blocking (TLS 1.3 servers send session tickets after the handshake) and says whether it
    /// is still clean: no plaintext the server was not asked for, no close, no error.
    pub fn idle_and_clean(&mut self) -> bool {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let mut raw = [0u8; 4096];
        loop {
            // SAFETY: `recv` writes at most `raw.len()` bytes into `raw`, which outlives the
            // call; the fd belongs to `self.tcp` and is open.
            let n = unsafe {
                libc::recv(
                    self.tcp.as_raw_fd(),
                    raw.as_mut_ptr().cast(),
                    raw.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n == 0 {
                return false;
            }
            if n < 0 {
                let would_block =
                    std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock;
                if !would_block {
                    return false;
                }
                break;
            }
            self.pending.extend_from_slice(&raw[..n as usize]);
        }
        // A partial record would be the start of something the server sent unasked (and rustls
        // cannot say it holds one): only whole records count as idle traffic.
        if !whole_records(&self.pending) {
            return false;
        }
        while !self.pending.is_empty() {
            let mut rd: &[u8] = &self.pending;
            let Ok(taken) = self.session.read_tls(&mut rd) else {
                return false;
            };
            self.pending.drain(..taken);
            if self.session.process_new_packets().is_err() || taken == 0 {
                return false;
            }
        }
        let mut probe = [0u8; 1];
        matches!(self.session.reader().read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            && !self.session.wants_write()
    }
}

/// Whether `bytes` is a run of whole TLS records (5-byte header with the length, then that many
/// bytes).
fn whole_records(mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        let Some(header) = bytes.get(..5) else {
            return false;
        };
        let len = 5 + u16::from_be_bytes([header[3], header[4]]) as usize;
        let Some(rest) = bytes.get(len..) else {
            return false;
        };
        bytes = rest;
    }
    true
}

/// `[upstream.tls]`: TLS to the model servers of one upstream group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsSection {
    /// Name sent as SNI and verified in the server's certificate; default: the endpoint's IP.
    #[serde(default)]
    pub server_name: Option<String>,
    /// PEM bundle the server's certificate must chain to; default: the system bundle.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, for model servers that require mTLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// The system CA bundle on Debian and its derivatives.
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Client-side TLS settings of one upstream group.
pub struct UpstreamTls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl UpstreamTls {
    /// `at` is the section's dotted key, for errors (`upstream[2].tls`); `alpn` the protocol
    /// offered (`http/1.1` or `h2`).
    pub fn load(
        s: &UpstreamTlsSection,
        base: &Path,
        at: &str,
        alpn: &[u8],
    ) -> Result<UpstreamTls, KeyError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let ca = s
            .ca_file
            .as_ref()
            .map_or_else(|| PathBuf::from(SYSTEM_BUNDLE), |p| base.join(p));
        let roots = roots(&ca).map_err(|e| KeyError {
            key: format!("{at}.ca_file"),
            ..e
        })?;
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| KeyError::new(at, &e.to_string(), "check the TLS settings"))?
            .with_root_certificates(roots);
        let mut config = match (&s.cert_file, &s.key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let (chain, private) = read_pair(&base.join(cert), &base.join(key), at)?;
                builder
                    .with_client_auth_cert(chain, private)
                    .map_err(|e| mismatch(at, e))?
            }
            _ => {
                return Err(KeyError::new(
                    &format!("{at}.cert_file"),
                    "cert_file and key_file go together",
                    "set both (a client certificate for mTLS to the model server), or neither",
                ))
            }
        };
        config.alpn_protocols = vec![alpn.to_vec()];
        let server_name = match &s.server_name {
            None => None,
            Some(n) => Some(ServerName::try_from(n.clone()).map_err(|_| {
                KeyError::new(
                    &format!("{at}.server_name"),
                    &format!("{n:?} is not a DNS name or IP address"),
                    "write the name in the model server's certificate, e.g. \"vllm.internal\"",
                )
            })?),
        };
        Ok(UpstreamTls {
            config: Arc::new(config),
            server_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_records_count_as_idle_traffic() {
        let record = |len: u16| {
            let mut r = vec![23, 3, 3];
            r.extend_from_slice(&len.to_be_bytes());
            r.extend(std::iter::repeat_n(0, len as usize));
            r
        };
        assert!(whole_records(&[]));
        let two = [record(10), record(0)].concat();
        assert!(whole_records(&two));
        for cut in 1..two.len() {
            let whole = cut == 15;
            assert_eq!(whole_records(&two[..cut]), whole, "cut at {cut}");
        }
    }
}
