//! Certificates for the TLS tests, made with the `openssl` CLI: CAs and leaf certificates with
//! the subject alternative names a test needs (server names, SPIFFE URIs for clients).

use std::path::{Path, PathBuf};
use std::process::Command;

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
