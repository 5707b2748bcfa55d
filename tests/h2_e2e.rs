//! HTTP/2 end to end: curl with prior knowledge (h2c) to HTTP/1.1 model servers, SSE over a
//! stream, a 64 MiB body to a slow reader, an HTTP/1.1 client through an h2c hop (both
//! translations), trailers, and the flood limits (rapid reset, CONTINUATION) cut off without
//! affecting another connection.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::h2raw::{
    self, frame, CONTINUATION, DATA, END_HEADERS, END_STREAM, HEADERS, RST_STREAM,
};
use support::*;

const MIB: u64 = 1024 * 1024;

/// `curl --http2-prior-knowledge` to the gateway; returns (exit code, stdout).
fn curl_h2c(gw: &Gateway, path: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--http2-prior-knowledge"])
        .args(args)
        .arg(format!("http://127.0.0.1:{}{path}", gw.addr.port()))
        .output()
        .expect("run curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// An upstream that describes the request it got: method, target, body length and the fields
/// that show how the gateway re-framed and annotated it.
fn describing_upstream() -> Upstream {
    Upstream::respond(|req| {
        let h = &req.head;
        let body = format!(
            "{} {} len={} cl={:?} te={:?} host={:?} via={:?} xff={:?}",
            h.method(),
            h.target(),
            req.body.len(),
            h.header("content-length"),
            h.header("transfer-encoding"),
            h.header("host"),
            h.header("via"),
            h.header("x-forwarded-for"),
        );
        response(200, &["content-type: text/plain"], body.as_bytes())
    })
}

on_both_drivers! {
    fn h2c_prior_knowledge_reaches_an_http1_model_server(driver) {
        let up = describing_upstream();
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let host = format!("127.0.0.1:{}", gw.addr.port());

        // A body with a length: forwarded with that length.
        let (code, out) = curl_h2c(&gw, "/v1/completions?x=1", &["-w", " %{http_version}", "-d", "{\"prompt\":\"hi\"}"]);
        assert_eq!(code, 0);
        assert_eq!(
            out,
            format!("POST /v1/completions?x=1 len=15 cl=Some(\"15\") te=None host=Some(\"{host}\") via=Some(\"2 modelgate\") xff=Some(\"127.0.0.1\") 2")
        );
        // No body: no framing fields at all.
        let (code, out) = curl_h2c(&gw, "/v1/models", &[]);
        assert_eq!(code, 0);
        assert!(out.starts_with("GET /v1/models len=0 cl=None te=None"), "{out}");
        // A body without a length (curl streams stdin): chunked to the HTTP/1.1 server.
        let mut child = Command::new("curl")
            .args(["-sS", "--max-time", "20", "--http2-prior-knowledge", "-T", "-", "-X", "POST"])
            .arg(format!("http://{host}/v1/upload"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&[b'x'; 100_000]).unwrap();
        let out = child.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&out.stdout);
        assert!(out.starts_with("POST /v1/upload len=100000 cl=None te=Some(\"chunked\")"), "{out}");

        // Every stream is an ordinary request in the access log.
        let logs = gw.wait_log_count(3, |l| l["message"] == "access");
        assert!(logs.iter().all(|l| l["route"] == "main" && l["status"] == 200), "{logs:?}");
    }

    fn sse_over_h2_arrives_event_by_event(driver) {
        const EVENTS: usize = 5;
        let step = Lockstep::new();
        let up = sse_upstream(EVENTS, Pacing::Lockstep(step.clone()), SseFraming::Chunked);
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let mut curl = Command::new("curl")
            .args(["-sS", "-N", "--max-time", "30", "--http2-prior-knowledge"])
            .arg(format!("http://127.0.0.1:{}/v1/chat/completions", gw.addr.port()))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(curl.stdout.take().unwrap()).lines();
        // Event i+1 is sent only after event i reached the client: a gateway that buffered the
        // stream would deadlock here until the guard.
        for i in 0..EVENTS {
            let want = format!("data: token-{i}");
            let got = lines.by_ref().map_while(Result::ok).find(|l| l.starts_with("data:"));
            assert_eq!(got.as_deref(), Some(want.as_str()), "event {i}");
            step.advance();
        }
        assert!(lines.map_while(Result::ok).all(|l| !l.starts_with("data:")));
        assert!(curl.wait().unwrap().success());
    }

    fn a_64_mib_response_to_a_slow_h2_reader_keeps_gateway_memory_bounded(driver) {
        let total = 64 * MIB;
        let up = Upstream::start(move |c| {
            while let Some(req) = c.read_request() {
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {total}\r\n\r\n");
                if !req.complete || !c.write(head.as_bytes()) {
                    return;
                }
                let block: Vec<u8> = (0..64 * 1024u64).map(|i| (i % 251) as u8).collect();
                let mut sent = 0;
                while sent < total {
                    if !c.write(&block) {
                        return;
                    }
                    sent += block.len() as u64;
                }
            }
        });
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let mut curl = Command::new("curl")
            .args(["-sS", "--max-time", "60", "--http2-prior-knowledge"])
            .arg(format!("http://127.0.0.1:{}/v1/download", gw.addr.port()))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = curl.stdout.take().unwrap();
        // A slow reader: nothing is read for a while, so the pipe, curl's window and then the
        // gateway's send buffer fill up; a gateway without backpressure would pull it all in.
        std::thread::sleep(Duration::from_millis(700));
        let (mut len, mut bad) = (0u64, None);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = out.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            if bad.is_none() {
                bad = buf[..n]
                    .iter()
                    .enumerate()
                    .position(|(i, b)| *b != ((len + i as u64) % (64 * 1024) % 251) as u8)
                    .map(|i| len + i as u64);
            }
            len += n as u64;
        }
        assert!(curl.wait().unwrap().success());
        assert_eq!(len, total);
        assert_eq!(bad, None, "first corrupted offset");
        let hwm = gw.vm_hwm_kib();
        eprintln!("gateway VmHWM after a 64 MiB response over HTTP/2: {hwm} KiB");
        assert!(hwm < 48 * 1024, "gateway peak RSS {hwm} KiB for a 64 MiB response body");
    }

    fn an_http1_client_through_an_h2c_hop_keeps_bodies_and_trailers(driver) {
        // client ─h1─▶ gateway A ─h2c─▶ gateway B ─h1─▶ model server: both translations.
        let up = Upstream::respond(|req| {
            let body = format!("got {} bytes", req.body.len());
            let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n".to_vec();
            out.extend_from_slice(&chunk(body.as_bytes()));
            out.extend_from_slice(b"0\r\nx-checksum: abc123\r\n\r\n");
            out
        });
        let b = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let a_config = basic_config(&b.addr.to_string(), "")
            .replace("endpoints = [", "protocol = \"h2c\"\nendpoints = [");
        let a = Gateway::start_with(driver, &a_config);
        for (framing, body) in [
            ("content-length: 11\r\n", "hello world".to_string()),
            ("transfer-encoding: chunked\r\n", String::from_utf8(chunked_body(&[b"hello ", b"world"], &[])).unwrap()),
        ] {
            let raw = format!("POST /v1/x HTTP/1.1\r\nhost: models\r\nte: trailers\r\n{framing}\r\n{body}");
            let res = a.connect().request(raw);
            assert_eq!(res.status(), 200, "{framing}");
            assert_eq!(res.body_str(), "got 11 bytes", "{framing}");
            assert_eq!(res.trailer("x-checksum"), Some("abc123"), "{framing}");
        }
        // Keep-alive on the client side: a second request on the same connection.
        let mut c = a.connect();
        for _ in 0..2 {
            c.send(get("/v1/y"));
            let res = c.read_response();
            assert_eq!(res.body_str(), "got 0 bytes");
        }
        // B saw the requests arrive over HTTP/2 on few connections (multiplexed by A's worker).
        assert!(up.requests().len() >= 4);
    }
}

/// Sends `frames` in pieces (a write error means the gateway closed already), then asserts
/// the gateway ended the connection with GOAWAY `ENHANCE_YOUR_CALM`.
fn flood_until_cut_off(s: &mut std::net::TcpStream, frames: &[u8]) -> h2raw::Ending {
    for piece in frames.chunks(64 * 1024) {
        if s.write_all(piece).is_err() {
            break;
        }
    }
    let ending = h2raw::read_until_closed(s, GUARD);
    assert!(
        ending.closed,
        "the flooding connection is closed: {ending:?}"
    );
    assert_eq!(ending.goaway, Some(h2raw::ENHANCE_YOUR_CALM), "{ending:?}");
    ending
}

/// Another client, on its own connection, still gets answers.
fn still_serving(gw: &Gateway) {
    let (code, out) = curl_h2c(gw, "/v1/ok", &[]);
    assert_eq!((code, out.as_str()), (0, "ok"));
}

/// The same, for an upstream that answers with what it got.
fn still_serving_path(gw: &Gateway, path: &str) {
    let (code, out) = curl_h2c(gw, path, &[]);
    assert_eq!(code, 0);
    assert!(out.starts_with(&format!("GET {path} ")), "{out}");
}

#[test]
fn a_rapid_reset_flood_is_cut_off() {
    let up = Upstream::ok("ok");
    let gw = Gateway::start(&basic_config(&up.url(), ""));
    let mut s = h2raw::connect(gw.addr);
    let mut frames = Vec::new();
    const STREAMS: u32 = 5000;
    for i in 0..STREAMS {
        let id = 2 * i + 1;
        frames.extend(frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            id,
            &h2raw::get_block("/v1/x"),
        ));
        frames.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    flood_until_cut_off(&mut s, &frames);
    let reached = up.requests().len();
    still_serving(&gw);
    eprintln!("rapid reset: {reached} of {STREAMS} reset streams reached the model server");
    assert!(
        reached < 200,
        "{reached} reset streams reached the model server"
    );
}

#[test]
fn a_continuation_flood_is_cut_off() {
    let up = Upstream::ok("ok");
    let gw = Gateway::start(&basic_config(&up.url(), ""));
    let before = gw.vm_hwm_kib();
    let mut s = h2raw::connect(gw.addr);
    // HEADERS without END_HEADERS, then CONTINUATION frames that never end the block.
    let mut frames = frame(HEADERS, END_STREAM, 1, &h2raw::get_block("/v1/x"));
    // Each frame: 100 literal fields `x-pad: a…` (new name, not indexed), ~11 KB.
    let mut block = Vec::new();
    for _ in 0..100 {
        block.extend_from_slice(&[0x00, 5]);
        block.extend_from_slice(b"x-pad");
        block.push(100);
        block.extend_from_slice(&[b'a'; 100]);
    }
    for _ in 0..2000 {
        frames.extend(frame(CONTINUATION, 0, 1, &block));
    }
    let ending = flood_until_cut_off(&mut s, &frames);
    assert_eq!(
        up.requests().len(),
        0,
        "the flooded request never reached the model server"
    );
    still_serving(&gw);
    let after = gw.vm_hwm_kib();
    eprintln!("CONTINUATION flood of ~22 MB: gateway VmHWM {before} KiB -> {after} KiB, ending {ending:?}");
    assert!(
        after < before + 16 * 1024,
        "memory grew from {before} to {after} KiB"
    );
}

#[test]
fn h2_requests_with_transfer_encoding_or_a_wrong_content_length_never_reach_the_model_server() {
    const PROTOCOL_ERROR: u32 = 1;
    let up = describing_upstream();
    let gw = Gateway::start(&basic_config(&up.url(), ""));
    let mut s = h2raw::connect(gw.addr);
    // Transfer-Encoding is connection-specific: malformed in HTTP/2 (RFC 9113 §8.2.2).
    let te = h2raw::post_block("/v1/x", &[("transfer-encoding", "chunked")]);
    s.write_all(&frame(HEADERS, END_HEADERS, 1, &te)).unwrap();
    s.write_all(&frame(DATA, END_STREAM, 1, b"5\r\nhello\r\n0\r\n\r\n"))
        .unwrap();
    assert_eq!(h2raw::wait_reset(&mut s, 1, GUARD), Some(PROTOCOL_ERROR));
    // DATA frames that end short of the declared Content-Length.
    let short = h2raw::post_block("/v1/x", &[("content-length", "10")]);
    s.write_all(&frame(HEADERS, END_HEADERS, 3, &short))
        .unwrap();
    s.write_all(&frame(DATA, END_STREAM, 3, b"hello")).unwrap();
    assert_eq!(h2raw::wait_reset(&mut s, 3, GUARD), Some(PROTOCOL_ERROR));
    // And more DATA than declared.
    let long = h2raw::post_block("/v1/x", &[("content-length", "2")]);
    s.write_all(&frame(HEADERS, END_HEADERS, 5, &long)).unwrap();
    s.write_all(&frame(DATA, END_STREAM, 5, b"hello")).unwrap();
    assert_eq!(h2raw::wait_reset(&mut s, 5, GUARD), Some(PROTOCOL_ERROR));
    still_serving_path(&gw, "/v1/ok");
    // No complete request came out of those streams (a cut-off body is not a request).
    let complete: Vec<_> = up
        .requests()
        .into_iter()
        .filter(|(_, m)| m.complete && m.head.target() == "/v1/x")
        .collect();
    assert!(complete.is_empty(), "{complete:?}");
}

#[test]
fn a_refusal_sent_before_the_body_arrived_lets_the_small_body_finish_instead_of_resetting() {
    let up = describing_upstream();
    let config =
        basic_config(&up.url(), "").replace("path_prefix = \"/\"", "path_prefix = \"/v1/\"");
    let gw = Gateway::start(&config);
    let mut s = h2raw::connect(gw.addr);
    // A POST to no route: refused (404) from its head alone, while its body is still to come.
    let post = h2raw::post_block("/nowhere", &[("content-length", "5")]);
    s.write_all(&frame(HEADERS, END_HEADERS, 1, &post)).unwrap();
    let answer = h2raw::frames_on(&mut s, 1, Duration::from_millis(300), GUARD);
    assert_eq!(answer.first(), Some(&(HEADERS, END_HEADERS)), "{answer:?}");
    assert!(answer.contains(&(DATA, END_STREAM)), "{answer:?}");
    // Then the body, as a client whose upload was still on its way would send it: the stream
    // ends on it, with no RST_STREAM that a client could mistake for a failed call.
    s.write_all(&frame(DATA, END_STREAM, 1, b"hello")).unwrap();
    let after = h2raw::frames_on(&mut s, 1, Duration::from_millis(300), GUARD);
    let resets: Vec<_> = answer
        .iter()
        .chain(&after)
        .filter(|(kind, _)| *kind == RST_STREAM)
        .collect();
    assert!(resets.is_empty(), "{answer:?} then {after:?}");
    still_serving_path(&gw, "/v1/ok");
}

#[test]
fn a_client_cancelling_its_call_stops_the_model_servers_work() {
    // The model server takes the request and would take minutes to answer; it notices the
    // gateway giving up on it when its connection closes.
    let up = Upstream::start(|c| {
        if c.read_request().is_some() {
            let _ = c.read_request();
        }
    });
    let gw = Gateway::start(&basic_config(&up.url(), ""));
    let mut s = h2raw::connect(gw.addr);
    let headers = h2raw::get_block("/v1/completions");
    s.write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &headers))
        .unwrap();
    up.wait_requests(1);
    assert_eq!(up.finished_count(), 0, "the model server is still at work");
    // The client cancels (RST_STREAM CANCEL): the gateway drops the upstream exchange.
    s.write_all(&frame(RST_STREAM, 0, 1, &8u32.to_be_bytes()))
        .unwrap();
    up.wait_finished(1);
    let log = gw.wait_log(|l| l["message"] == "access");
    assert_eq!(log["outcome"], "ClientGone", "{log}");
}
