//! TLS on the listener, checked with real clients (curl and `openssl s_client`): TLS 1.2 and
//! 1.3, ALPN, certificates by SNI, client certificates accepted, refused and mapped to an
//! identity the policy sees, certificates re-read on reload, and the handshake timeout.

mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use support::pki::{Ca, Leaf, TlsOrigin};
use support::*;

struct Env {
    _dir: tempfile::TempDir,
    ca: Ca,
    default: Leaf,
    up: Upstream,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "test-ca");
    let default = ca.server("default", &["127.0.0.1", "default.test"]);
    let up = Upstream::respond(|req| {
        let proto = req.header("x-forwarded-proto").unwrap_or("-").to_string();
        response(200, &["content-type: text/plain"], proto.as_bytes())
    });
    Env {
        _dir: dir,
        ca,
        default,
        up,
    }
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// `[server.tls]` with the default certificate and `extra` keys, one open route.
fn config(e: &Env, extra: &str, rest: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n{extra}\n{rest}\n[[upstream]]\nname = \"models\"\nendpoints = [\"{}\"]\n\n[[route]]\nid = \"open\"\npath_prefix = \"/open/\"\nupstream = \"models\"\nclass = \"inference\"\nauth = \"none\"\n",
        p(&e.default.cert),
        p(&e.default.key),
        e.up.url()
    )
}

/// curl over TLS; returns (exit code, body).
fn curl(gw: &Gateway, e: &Env, path: &str, args: &[&str]) -> (i32, String) {
    let url = format!("https://127.0.0.1:{}{path}", gw.addr.port());
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&e.ca.cert)
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `openssl s_client` against the gateway; returns its whole output.
fn s_client(gw: &Gateway, e: &Env, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{}", gw.addr.port()),
        ])
        .args(["-CAfile", &p(&e.ca.cert)])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn subject_line(out: &str) -> String {
    out.lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or("")
        .to_string()
}

#[test]
fn tls_1_2_and_1_3_with_alpn_h2_and_http_1_1() {
    let e = env();
    let gw = Gateway::start(&config(&e, "", ""));
    for version in [
        ["--tlsv1.2", "--tls-max", "1.2"],
        ["--tlsv1.3", "--tls-max", "1.3"],
    ] {
        let (code, body) = curl(&gw, &e, "/open/x", &version);
        assert_eq!((code, body.as_str()), (0, "https"), "{version:?}");
    }
    let tls12 = s_client(&gw, &e, &["-tls1_2"]);
    assert!(tls12.contains("TLSv1.2"), "{tls12}");
    // ALPN: h2 is preferred, http/1.1 still chosen by a client that offers only it, and a
    // client offering neither is refused.
    let both = s_client(&gw, &e, &["-alpn", "http/1.1,h2"]);
    assert!(both.contains("ALPN protocol: h2"), "{both}");
    let h1_only = s_client(&gw, &e, &["-alpn", "http/1.1"]);
    assert!(h1_only.contains("ALPN protocol: http/1.1"), "{h1_only}");
    let neither = s_client(&gw, &e, &["-alpn", "spdy/3"]);
    assert!(neither.contains("no application protocol"), "{neither}");

    // min_version = "1.3" refuses TLS 1.2.
    let gw13 = Gateway::start(&config(&e, "min_version = \"1.3\"", ""));
    assert_ne!(
        curl(&gw13, &e, "/open/x", &["--tlsv1.2", "--tls-max", "1.2"]).0,
        0
    );
    assert_eq!(curl(&gw13, &e, "/open/x", &[]).0, 0);
    // Plain HTTP on a TLS listener is not answered as HTTP: the handshake fails, the
    // connection closes.
    let mut plain = std::net::TcpStream::connect(gw.addr).unwrap();
    plain.set_read_timeout(Some(GUARD)).unwrap();
    std::io::Write::write_all(&mut plain, b"GET /open/x HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    plain
        .read_to_end(&mut answer)
        .expect("closed before the guard");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    gw.wait_log(|l| l["message"] == "TLS handshake failed");
}

#[test]
fn a_large_response_crosses_the_tls_listener_whole() {
    let e = env();
    let body: Vec<u8> = (0..1_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let expected = body.clone();
    let up = Upstream::respond(move |_| response(200, &["content-type: text/plain"], &body));
    let mut cfg = config(&e, "", "");
    cfg = cfg.replace(&e.up.url(), &up.url());
    let gw = Gateway::start(&cfg);
    let (code, got) = curl(&gw, &e, "/open/big", &[]);
    assert_eq!(code, 0);
    assert!(got.as_bytes() == expected.as_slice(), "{} bytes", got.len());
}

#[test]
fn sni_chooses_the_certificate_and_reload_replaces_it() {
    let e = env();
    let a = e.ca.server("a", &["a.test"]);
    let wild = e.ca.server("wild", &["*.wild.test"]);
    let sni = format!(
        "[[server.tls.sni]]\nnames = [\"a.test\"]\ncert_file = \"{}\"\nkey_file = \"{}\"\n[[server.tls.sni]]\nnames = [\"*.wild.test\"]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        p(&a.cert),
        p(&a.key),
        p(&wild.cert),
        p(&wild.key)
    );
    let gw = Gateway::start(&config(&e, "", &sni));
    let subject = |name: &str| subject_line(&s_client(&gw, &e, &["-servername", name]));
    assert!(
        subject("a.test").contains("a.test"),
        "{}",
        subject("a.test")
    );
    assert!(subject("x.wild.test").contains("*.wild.test"));
    // A name no entry covers (two labels under the wildcard, or unknown) gets the default.
    assert!(subject("x.y.wild.test").contains("127.0.0.1"));
    assert!(subject("other.test").contains("127.0.0.1"));
    let port = gw.addr.port().to_string();
    let resolve = format!("a.test:{port}:127.0.0.1");
    let url = format!("https://a.test:{port}/open/x");
    let out = Command::new("curl")
        .args([
            "-sS",
            "--cacert",
            &p(&e.ca.cert),
            "--resolve",
            &resolve,
            &url,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "https",
        "curl verifies a.test"
    );

    // Reload: a new default certificate in the same files; new connections get it.
    let renewed = e.ca.server("renewed", &["127.0.0.1", "renewed.test"]);
    std::fs::copy(&renewed.cert, &e.default.cert).unwrap();
    std::fs::copy(&renewed.key, &e.default.key).unwrap();
    gw.reload(&config(&e, "", &sni));
    gw.wait_log(|l| l["message"] == "config reloaded");
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(&renewed.cert)
        .output()
        .unwrap();
    let serial = String::from_utf8_lossy(&text.stdout)
        .trim()
        .replace("serial=", "");
    let served = s_client(&gw, &e, &["-servername", "other.test", "-showcerts"]);
    let pem_start = served
        .find("-----BEGIN CERTIFICATE-----")
        .expect("served cert");
    let pem_end = served.find("-----END CERTIFICATE-----").unwrap() + 25;
    let served_path = e.ca.dir.join("served.pem");
    std::fs::write(&served_path, &served[pem_start..pem_end]).unwrap();
    let served_serial = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(&served_path)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&served_serial.stdout)
            .trim()
            .replace("serial=", ""),
        serial,
        "the reloaded certificate is served"
    );
}

#[test]
fn client_certificates_are_required_verified_and_become_identities() {
    let e = env();
    let other_ca = Ca::new(e.ca.dir.as_path(), "other-ca");
    let spiffe = "spiffe://prod.test/ns/ml/sa/summarizer";
    let good = e.ca.client("summarizer", spiffe);
    let unmapped =
        e.ca.client("stranger", "spiffe://prod.test/ns/x/sa/stranger");
    let foreign = other_ca.client("foreign", spiffe);
    let mtls = |auth: &str| {
        format!(
            "client_ca_file = \"{}\"\nclient_auth = \"{auth}\"\n",
            p(&e.ca.cert)
        )
    };
    let rest = "[identity]\n[[identity.client_cert]]\nuri = \"spiffe://prod.test/ns/ml/*\"\ngroups = [\"svc\"]\n\n[[policy.rule]]\nid = \"svc-infer\"\neffect = \"allow\"\ngroups = [\"svc\"]\nclasses = [\"inference\"]\n\n[[route]]\nid = \"models\"\npath_prefix = \"/v1/\"\nupstream = \"models\"\napi = \"openai\"\n";
    let cert = |l: &Leaf| vec!["--cert".to_string(), p(&l.cert), "--key".into(), p(&l.key)];

    // Required: no certificate or a foreign one fails the handshake.
    let gw = Gateway::start(&config(&e, &mtls("required"), rest));
    assert_ne!(curl(&gw, &e, "/open/x", &[]).0, 0, "no client certificate");
    assert_ne!(
        curl(&gw, &e, "/open/x", &args(&cert(&foreign))).0,
        0,
        "foreign CA"
    );
    assert_eq!(
        curl(&gw, &e, "/open/x", &args(&cert(&good))),
        (0, "https".into())
    );
    gw.wait_log(|l| l["message"] == "TLS handshake failed");

    // Optional: the certificate is the identity; policy sees its groups; unmapped is anonymous.
    let gw = Gateway::start(&config(&e, &mtls("optional"), rest));
    let post = |extra: &[&str]| {
        let mut a = vec![
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "content-type: application/json",
            "-d",
            "{\"model\":\"m\"}",
        ];
        a.extend_from_slice(extra);
        curl(&gw, &e, "/v1/completions", &a).1
    };
    assert_eq!(post(&args(&cert(&good))), "200");
    assert_eq!(post(&args(&cert(&unmapped))), "401");
    assert_eq!(post(&[]), "401");
    let line =
        gw.wait_log(|l| l["message"] == "access" && l["status"] == 200 && l["route"] == "models");
    assert_eq!(line["subject"], spiffe);
    assert_eq!(line["rule"], "svc-infer");
}

#[test]
fn a_silent_client_is_cut_off_by_the_handshake_timeout() {
    let e = env();
    let gw = Gateway::start(&config(&e, "handshake_timeout = \"500ms\"", ""));
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    let mut buf = [0u8; 16];
    // The gateway closes the connection (0 bytes), well before the guard.
    assert_eq!(s.read(&mut buf).unwrap_or(usize::MAX), 0);
    gw.wait_log(|l| l["message"] == "TLS handshake timed out");
    // Config errors name the key: a key that does not match the certificate.
    let bad = config(&e, "", "").replace(&p(&e.default.key), &p(&e.ca.key));
    let path = e.ca.dir.join("bad.toml");
    std::fs::write(&path, compose_config(Driver::Auto, &bad)).unwrap();
    let out = modelgate_cli(&["check-config", path.to_str().unwrap()]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("server.tls.key_file"), "{}", out.stderr);
}

/// A plain listener in front of one TLS upstream with `tls` as its `[upstream.tls]` body.
fn upstream_tls_config(origin: &TlsOrigin, tls: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[upstream]]\nname = \"models\"\nendpoints = [\"127.0.0.1:{}\"]\n[upstream.tls]\n{tls}\n[[route]]\nid = \"all\"\nupstream = \"models\"\nclass = \"inference\"\nauth = \"none\"\n",
        origin.port
    )
}

#[test]
fn model_servers_are_reached_over_verified_tls_and_connections_are_reused() {
    let e = env();
    let leaf = e.ca.server("models", &["models.test"]);
    let origin = TlsOrigin::start(&leaf, None);
    let ca = format!("ca_file = \"{}\"\n", p(&e.ca.cert));
    let gw = Gateway::start(&upstream_tls_config(
        &origin,
        &format!("{ca}server_name = \"models.test\""),
    ));
    let mut client = gw.connect();
    let first = client.request("GET /a HTTP/1.1\r\nhost: m\r\n\r\n");
    let second = client.request("GET /b HTTP/1.1\r\nhost: m\r\n\r\n");
    assert_eq!(first.status(), 200, "{}", first.body_str());
    assert!(first.body_str().starts_with("port="));
    // One TLS connection to the model server carried both requests (TLS 1.3 session tickets
    // that arrive after the handshake do not make the pooled connection look dirty).
    assert_eq!(first.body_str(), second.body_str());

    // Bodies far larger than rustls's 64 KiB plaintext buffer go through whole, both ways.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let sum = big.iter().map(|&b| b as u64).sum::<u64>() % 65536;
    let mut raw = format!(
        "POST /big HTTP/1.1\r\nhost: m\r\ncontent-length: {}\r\n\r\n",
        big.len()
    )
    .into_bytes();
    raw.extend_from_slice(&big);
    let res = client.request(raw);
    assert_eq!(res.body_str(), format!("len=300000 sum={sum}"));

    // Verification is on: the wrong name, or a CA that did not sign the server, is a 502.
    let wrong_name = Gateway::start(&upstream_tls_config(
        &origin,
        &format!("{ca}server_name = \"other.test\""),
    ));
    assert_eq!(wrong_name.connect().request(get("/")).status(), 502);
    let other_ca = Ca::new(e.ca.dir.as_path(), "unrelated-ca");
    let wrong_ca = Gateway::start(&upstream_tls_config(
        &origin,
        &format!(
            "ca_file = \"{}\"\nserver_name = \"models.test\"",
            p(&other_ca.cert)
        ),
    ));
    assert_eq!(wrong_ca.connect().request(get("/")).status(), 502);
    wrong_ca.wait_log(|l| l["message"] == "upstream connect failed");
}

#[test]
fn http2_over_tls_on_both_sides() {
    let e = env();
    // Gateway B terminates TLS and offers h2 by ALPN; curl takes it.
    let b = Gateway::start(&config(&e, "", ""));
    let version = ["-w", " %{http_version}"];
    assert_eq!(curl(&b, &e, "/open/x", &version), (0, "https 2".into()));
    let h1 = ["-w", " %{http_version}", "--http1.1"];
    assert_eq!(curl(&b, &e, "/open/x", &h1), (0, "https 1.1".into()));
    let log = b.wait_log(|l| l["message"] == "access" && l["protocol"] == "HTTP/2");
    assert_eq!(log["status"], 200);

    // Gateway A reaches B as an HTTP/2 upstream over verified TLS (ALPN h2).
    let a_config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[upstream]]\nname = \"models\"\nendpoints = [\"{}\"]\nprotocol = \"h2\"\n[upstream.tls]\nca_file = \"{}\"\nserver_name = \"default.test\"\n[[route]]\nid = \"all\"\nupstream = \"models\"\nclass = \"inference\"\nauth = \"none\"\n",
        b.addr,
        p(&e.ca.cert)
    );
    let a = Gateway::start(&a_config);
    let mut client = a.connect();
    for path in ["/open/a", "/open/b"] {
        let res = client.request(format!("GET {path} HTTP/1.1\r\nhost: m\r\n\r\n"));
        assert_eq!((res.status(), res.body_str().as_str()), (200, "https"));
    }
    let seen = b.wait_log_count(3, |l| l["message"] == "access" && l["protocol"] == "HTTP/2");
    assert!(seen.iter().any(|l| l["path"] == "/open/b"), "{seen:?}");
}

#[test]
fn a_big_http2_response_over_tls_survives_a_reader_that_stalls() {
    // 64 MiB through HTTP/2 over TLS to a client that stops reading for a while: flow control
    // holds the gateway back and the body arrives whole. (curl's window stops the sender
    // before the socket fills, so this does not exercise the TLS adapter's full-buffer path.)
    let e = env();
    let total: usize = 64 << 20;
    let body: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
    let up = Upstream::respond(move |_| {
        response(200, &["content-type: application/octet-stream"], &body)
    });
    let gw = Gateway::start(&config(&e, "", "").replace(&e.up.url(), &up.url()));
    let mut curl = Command::new("curl")
        .args(["-sS", "--http2", "--max-time", "60", "--cacert"])
        .arg(&e.ca.cert)
        .arg(format!("https://127.0.0.1:{}/open/big", gw.addr.port()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = curl.stdout.take().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let mut got = Vec::with_capacity(total);
    out.read_to_end(&mut got).unwrap();
    assert!(curl.wait().unwrap().success());
    assert_eq!(got.len(), total);
    assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
}

#[test]
fn model_servers_that_require_client_certificates_get_the_configured_one() {
    let e = env();
    let leaf = e.ca.server("models", &["models.test"]);
    let origin = TlsOrigin::start(&leaf, Some(&e.ca.cert));
    let base = format!(
        "ca_file = \"{}\"\nserver_name = \"models.test\"\n",
        p(&e.ca.cert)
    );
    let without = Gateway::start(&upstream_tls_config(&origin, &base));
    assert_eq!(without.connect().request(get("/")).status(), 502);
    let client = e.ca.client("gateway", "spiffe://prod.test/gateway");
    let with = Gateway::start(&upstream_tls_config(
        &origin,
        &format!(
            "{base}cert_file = \"{}\"\nkey_file = \"{}\"",
            p(&client.cert),
            p(&client.key)
        ),
    ));
    assert_eq!(with.connect().request(get("/")).status(), 200);
}
