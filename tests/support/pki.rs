//! Certificates for the TLS tests, made with the `openssl` CLI: CAs and leaf certificates with
//! the subject alternative names a test needs (server names, SPIFFE URIs for clients).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A CA that can issue leaves into its directory.
pub struct Ca {
    pub dir: PathBuf,
    pub name: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A leaf certificate and its key.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            s(&key),
            "-out",
            s(&cert),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ]);
        Ca {
            dir: dir.to_path_buf(),
            name: name.into(),
            cert,
            key,
        }
    }

    /// A leaf named `cn` with `san` (e.g. `DNS:a.test,IP:127.0.0.1` or `URI:spiffe://x/y`),
    /// for server (`serverAuth`) or client (`clientAuth`) use.
    pub fn issue(&self, file: &str, cn: &str, san: &str, usage: &str) -> Leaf {
        let d = &self.dir;
        let (key, csr, cert, ext) = (
            d.join(format!("{file}.key")),
            d.join(format!("{file}.csr")),
            d.join(format!("{file}.pem")),
            d.join(format!("{file}.ext")),
        );
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            s(&key),
            "-out",
            s(&csr),
        ]);
        std::fs::write(
            &ext,
            format!("basicConstraints=CA:FALSE\nsubjectAltName={san}\nextendedKeyUsage={usage}\n"),
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            s(&csr),
            "-CA",
            s(&self.cert),
            "-CAkey",
            s(&self.key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            s(&ext),
            "-out",
            s(&cert),
        ]);
        Leaf { cert, key }
    }

    pub fn server(&self, file: &str, names: &[&str]) -> Leaf {
        let san: Vec<String> = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(_) => format!("IP:{n}"),
                Err(_) => format!("DNS:{n}"),
            })
            .collect();
        self.issue(file, names[0], &san.join(","), "serverAuth")
    }

    pub fn client(&self, file: &str, uri: &str) -> Leaf {
        self.issue(file, file, &format!("URI:{uri}"), "clientAuth")
    }
}

/// `tests/clients/tls_origin.py`: an HTTPS/1.1 server (Python's ssl, i.e. OpenSSL) that answers
/// with the client's source port; killed on drop.
pub struct TlsOrigin {
    child: std::process::Child,
    pub port: u16,
}

impl TlsOrigin {
    pub fn start(leaf: &Leaf, client_ca: Option<&Path>) -> TlsOrigin {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/tls_origin.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(&leaf.cert).arg(&leaf.key);
        if let Some(ca) = client_ca {
            cmd.arg(ca);
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("python3");
        let mut line = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        let port = line
            .trim()
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("tls_origin.py: {line:?}"));
        TlsOrigin { child, port }
    }
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
