//! A real OIDC identity provider for the tests: `tests/idp/idp.mjs` (oidc-provider on Node.js,
//! installed by `tests/install-deps.sh`) as a child process, serving HTTPS on 127.0.0.1 with a
//! test CA made here by the `openssl` CLI, and issuing JWT access tokens for the
//! client_credentials grant. Tokens are fetched with `curl`, as any client would.
//!
//! Every request the IdP serves shows as a `hit PATH` line on its stderr; a thread keeps them (over
//! restarts too), so tests can assert how often the gateway fetched the JWKS.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::gateway::temp_dir;
use super::http::GUARD;
use super::script::run_guarded;

/// Node's start (and the first import of oidc-provider) may compete with a compile on 2 cores.
const START_GUARD: Duration = Duration::from_secs(60);

/// oidc-provider's default routes (the smoke test checks discovery names them).
pub const JWKS_PATH: &str = "/jwks";
pub const TOKEN_PATH: &str = "/token";
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// A test CA and a server certificate for IP 127.0.0.1 signed by it (P-256 keys: fast to make).
#[derive(Clone, Debug)]
pub struct Pki {
    pub ca_pem: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// Writes `ca.pem`, `ca.key`, `server.pem` and `server.key` into `dir`.
    pub fn new(dir: &Path) -> Pki {
        let d = s(dir);
        assert!(
            !d.contains(char::is_whitespace),
            "openssl args are split on spaces: {d}"
        );
        gen_ec(&dir.join("ca.key"));
        openssl(&format!(
            "req -x509 -new -key {d}/ca.key -subj /CN=modelgate-test-CA -days 2 -out {d}/ca.pem \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
        ));
        gen_ec(&dir.join("server.key"));
        openssl(&format!(
            "req -new -key {d}/server.key -subj /CN=127.0.0.1 -out {d}/server.csr"
        ));
        // A strict verifier (webpki) wants a v3 leaf, not a CA, with the IP in subjectAltName.
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n\
             subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
        )
        .expect("write server.ext");
        openssl(&format!(
            "x509 -req -in {d}/server.csr -CA {d}/ca.pem -CAkey {d}/ca.key -CAcreateserial -days 2 \
             -extfile {d}/server.ext -out {d}/server.pem"
        ));
        Pki {
            ca_pem: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}

/// An RSA-2048 PKCS#8 PEM private key at `path`.
pub fn gen_rsa(path: &Path) {
    let p = s(path);
    openssl(&format!(
        "genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out {p}"
    ));
}

/// A P-256 PKCS#8 PEM private key at `path`.
pub fn gen_ec(path: &Path) {
    let p = s(path);
    openssl(&format!(
        "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {p}"
    ));
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Runs `openssl` with `args` split on whitespace.
fn openssl(args: &str) {
    let out = run_guarded(
        Command::new("openssl").args(args.split_whitespace()),
        GUARD * 3,
    );
    assert_eq!(out.code, Some(0), "openssl {args}: {}", out.stderr);
}

/// One client_credentials client. Its tokens are signed with `alg` (RS256 or ES256) and carry
/// `groups` as a claim and, when asked for (as [`Idp::token`] does), `scope`.
#[derive(Clone, Debug)]
pub struct IdpClient {
    pub client_id: String,
    pub client_secret: String,
    pub alg: String,
    pub groups: Vec<String>,
    /// Space-separated; what the client may ask for.
    pub scope: String,
    /// Access-token lifetime in seconds (at least 1).
    pub ttl: u64,
}

impl IdpClient {
    pub fn new(client_id: &str, client_secret: &str, alg: &str) -> IdpClient {
        IdpClient {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            alg: alg.into(),
            groups: Vec::new(),
            scope: String::new(),
            ttl: 300,
        }
    }

    pub fn groups(mut self, groups: &[&str]) -> IdpClient {
        self.groups = groups.iter().map(|g| g.to_string()).collect();
        self
    }

    pub fn scope(mut self, scope: &str) -> IdpClient {
        self.scope = scope.into();
        self
    }

    pub fn ttl(mut self, secs: u64) -> IdpClient {
        self.ttl = secs;
        self
    }
}

#[derive(Clone, Debug)]
pub struct IdpConfig {
    /// 0: any free port (the issuer follows it).
    pub port: u16,
    pub pki: Pki,
    /// PKCS#8 PEM private keys; each one's kid is its RFC 7638 thumbprint.
    pub keys: Vec<PathBuf>,
    /// The audience of issued tokens (when a request names no resource).
    pub resource: String,
    /// Further audiences a request may name with `resource=` (wrong-audience tokens).
    pub other_resources: Vec<String>,
    pub clients: Vec<IdpClient>,
}

impl IdpConfig {
    /// Any port, audience `https://models.test`, no clients yet.
    pub fn new(pki: &Pki, keys: &[PathBuf]) -> IdpConfig {
        IdpConfig {
            port: 0,
            pki: pki.clone(),
            keys: keys.to_vec(),
            resource: "https://models.test".into(),
            other_resources: Vec::new(),
            clients: Vec::new(),
        }
    }

    pub fn client(mut self, client: IdpClient) -> IdpConfig {
        self.clients.push(client);
        self
    }

    fn to_json(&self) -> Value {
        let mut resources = vec![self.resource.clone()];
        resources.extend(self.other_resources.iter().cloned());
        let clients: Vec<Value> = self
            .clients
            .iter()
            .map(|c| {
                json!({"client_id": c.client_id, "client_secret": c.client_secret, "alg": c.alg,
                       "groups": c.groups, "scope": c.scope, "ttl": c.ttl})
            })
            .collect();
        json!({"port": self.port, "tls": {"cert": self.pki.cert, "key": self.pki.key},
               "keys": self.keys, "resource": resources, "clients": clients})
    }
}

/// The IdP's stderr lines, over all its runs.
#[derive(Default)]
struct Log {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

/// A running IdP; killed on drop.
pub struct Idp {
    config: IdpConfig,
    issuer: String,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    stderr_thread: Option<JoinHandle<()>>,
    log: Arc<Log>,
}

impl Idp {
    /// Starts the IdP and waits for its `ready` line; panics with its stderr if none comes.
    pub fn start(config: IdpConfig) -> Idp {
        let mut idp = Idp {
            config,
            issuer: String::new(),
            port: 0,
            dir: temp_dir("idp"),
            child: None,
            stderr_thread: None,
            log: Arc::default(),
        };
        idp.spawn();
        idp
    }

    fn spawn(&mut self) {
        let config_path = self.dir.join("idp.json");
        std::fs::write(&config_path, self.config.to_json().to_string()).expect("write idp.json");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/idp/idp.mjs");
        let mut child = Command::new("node")
            .arg(&script)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "spawn node {}: {e} (run tests/install-deps.sh)",
                    script.display()
                )
            });
        let log = self.log.clone();
        let stderr = child.stderr.take().unwrap();
        self.stderr_thread = Some(thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !line.starts_with("hit ") {
                    eprintln!("[idp] {line}");
                }
                log.lines.lock().unwrap().push(line);
                log.changed.notify_all();
            }
        }));
        // The ready line on a thread, so that a hung start runs into the guard.
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        let ready = rx.recv_timeout(START_GUARD);
        let issuer = match ready.as_deref().map(|l| l.strip_prefix("ready ")) {
            Ok(Some(issuer)) => issuer.to_string(),
            _ => {
                self.stop();
                panic!(
                    "IdP did not get ready ({ready:?}); its stderr:\n{}",
                    self.stderr()
                );
            }
        };
        self.port = issuer
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in issuer");
        self.issuer = issuer;
    }

    /// `https://127.0.0.1:PORT`, as in discovery and in every token's `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA that signed the IdP's server certificate.
    pub fn ca_pem(&self) -> &Path {
        &self.config.pki.ca_pem
    }

    pub fn config(&self) -> &IdpConfig {
        &self.config
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}{JWKS_PATH}", self.issuer)
    }

    pub fn discovery_url(&self) -> String {
        format!("{}{DISCOVERY_PATH}", self.issuer)
    }

    /// A client_credentials access token for the configured audience, asking for the client's
    /// configured scope (oidc-provider grants only what is asked for). Panics on an error answer.
    pub fn token(&self, client_id: &str, secret: &str) -> String {
        let scope = self
            .config
            .clients
            .iter()
            .find(|c| c.client_id == client_id)
            .map(|c| c.scope.clone())
            .unwrap_or_default();
        let mut params = vec![("resource", self.config.resource.as_str())];
        if !scope.is_empty() {
            params.push(("scope", &scope));
        }
        let answer = self.token_response(client_id, secret, &params);
        match answer["access_token"].as_str() {
            Some(token) => token.to_string(),
            None => panic!("no access token for {client_id}: {answer}"),
        }
    }

    /// The token endpoint's JSON answer to a client_credentials request with these extra form
    /// parameters (`resource`, `scope`), error answers included.
    pub fn token_response(&self, client_id: &str, secret: &str, params: &[(&str, &str)]) -> Value {
        let mut args = vec![
            "-u".to_string(),
            format!("{client_id}:{secret}"),
            "-d".into(),
            "grant_type=client_credentials".into(),
        ];
        for (k, v) in params {
            args.push("--data-urlencode".into());
            args.push(format!("{k}={v}"));
        }
        args.push(format!("{}{TOKEN_PATH}", self.issuer));
        self.curl_json(&args)
    }

    /// GETs an absolute URL or a path on the IdP, trusting its CA; the body as JSON.
    pub fn get_json(&self, url_or_path: &str) -> Value {
        let url = if url_or_path.starts_with('/') {
            format!("{}{url_or_path}", self.issuer)
        } else {
            url_or_path.to_string()
        };
        self.curl_json(&[url])
    }

    fn curl_json(&self, args: &[String]) -> Value {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "10", "--cacert", s(self.ca_pem())]);
        cmd.args(args);
        let out = run_guarded(&mut cmd, GUARD * 2);
        assert_eq!(out.code, Some(0), "curl {args:?}: {}", out.stderr);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "curl {args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Requests served for `path` (query ignored) so far, over all runs.
    pub fn hits(&self, path: &str) -> usize {
        let want = format!("hit {path}");
        self.log
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| **l == want)
            .count()
    }

    pub fn jwks_hits(&self) -> usize {
        self.hits(JWKS_PATH)
    }

    /// Waits until `path` has been served at least `n` times; panics after the guard.
    pub fn wait_hits(&self, path: &str, n: usize) -> usize {
        let deadline = Instant::now() + GUARD;
        let mut lines = self.log.lines.lock().unwrap();
        loop {
            let seen = lines
                .iter()
                .filter(|l| l.strip_prefix("hit ") == Some(path))
                .count();
            if seen >= n {
                return seen;
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "IdP served {path} {seen} times, expected {n} within {GUARD:?}"
            );
            lines = self
                .log
                .changed
                .wait_timeout(lines, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// Everything the IdP wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.log.lines.lock().unwrap().join("\n")
    }

    /// Kills the IdP (its port refuses connections until a restart).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Its stderr is at EOF now: every hit line is counted before stop returns.
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
    }

    /// Stops and starts again on the same port (same issuer) signing with other keys: a key
    /// rotation as relying parties see it.
    pub fn restart_with_keys(&mut self, keys: &[PathBuf]) {
        self.stop();
        self.config.keys = keys.to_vec();
        self.config.port = self.port;
        self.spawn();
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A JWS compact token's header and payload, decoded (the signature is not checked).
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWS compact token: {token}");
    let decode = |part: &str| -> Value {
        let bytes = base64url_decode(part).unwrap_or_else(|| panic!("bad base64url: {part}"));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {part}"))
    };
    (decode(parts[0]), decode(parts[1]))
}

/// Unpadded base64url (RFC 4648 §5), as JOSE uses it.
pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
