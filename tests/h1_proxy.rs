//! HTTP/1.1 proxying end to end: keep-alive reuse on both sides, Content-Length and chunked
//! bodies in both directions (re-chunked, extensions dropped, trailers kept), `Expect:
//! 100-continue`, forwarded and hop-by-hop headers, request ids and the access log, 64 MiB bodies
//! with bounded gateway memory, SSE events delivered one by one, and close-delimited upstream
//! responses turned into chunked ones.

mod support;

use std::io::Write;
use std::thread;
use std::time::Duration;

use support::http::{check_pattern, fill_pattern};
use support::*;

const MIB: u64 = 1 << 20;

on_both_drivers! {
    fn five_sequential_requests_on_one_client_connection_use_one_upstream_connection(driver) {
        let up = Upstream::ok("hello");
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let mut c = gw.connect();
        for i in 0..5 {
            let resp = c.request(get(&format!("/v1/models?i={i}")));
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.body_str(), "hello");
        }
        let reqs = up.wait_requests(5);
        assert_eq!(reqs.len(), 5);
        assert_eq!(up.connection_count(), 1, "upstream connections for 5 sequential requests");
        gw.wait_log_count(5, |l| l["message"] == "access");
        assert!(reqs.iter().all(|(conn, _)| *conn == 0));
    }

    fn pooled_upstream_connection_is_reused_by_a_later_client_connection(driver) {
        let up = Upstream::ok("hello");
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        for _ in 0..3 {
            let mut c = gw.connect();
            assert_eq!(c.request(get("/v1/models")).status(), 200);
        }
        up.wait_requests(3);
        assert_eq!(up.connection_count(), 1);
    }

    fn content_length_request_body_is_forwarded_with_the_same_length(driver) {
        let up = Upstream::ok("done");
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let body = "{\"model\":\"m\",\"prompt\":\"hi\"}";
        let resp = gw.connect().request(post("/v1/completions", body));
        assert_eq!(resp.status(), 200);
        let (_, req) = &up.wait_requests(1)[0];
        assert_eq!(req.head.start_line, "POST /v1/completions HTTP/1.1");
        assert_eq!(req.head.header("content-length"), Some(body.len().to_string().as_str()));
        assert!(!req.head.has("transfer-encoding"));
        assert_eq!(req.body_str(), body);
    }

    fn chunked_request_body_reaches_upstream_rechunked_without_extensions(driver) {
        let up = Upstream::ok("done");
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let mut c = gw.connect();
        c.send("POST /v1/completions HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n");
        c.send("5;name=value\r\nhello\r\n1;x\r\n \r\n6\r\nworld!\r\n0\r\n\r\n");
        assert_eq!(c.read_response().status(), 200);
        let (_, req) = &up.wait_requests(1)[0];
        assert!(req.complete);
        assert!(req.head.is_chunked(), "upstream head: {:?}", req.head);
        assert!(!req.head.has("content-length"));
        assert_eq!(req.body_str(), "hello world!");
        let raw = up.received(0);
        assert!(!contains(&raw, b"name=value") && !contains(&raw, b";x"), "chunk extensions forwarded: {:?}", String::from_utf8_lossy(&raw));
    }

    fn chunked_response_body_reaches_client_rechunked_without_extensions(driver) {
        let up = Upstream::respond(|_| {
            let mut r = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            r.extend_from_slice(b"4;ext=1\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n");
            r
        });
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let mut c = gw.connect();
        let resp = c.request(get("/v1/x"));
        assert_eq!(resp.status(), 200);
        assert!(resp.head.is_chunked(), "client head: {:?}", resp.head);
        assert!(!resp.head.has("content-length"));
        assert!(resp.complete);
        assert_eq!(resp.body_str(), "abcdefg");
        assert!(!contains(&c.received(), b"ext=1"));
        // The connection stays usable after a chunked response.
        assert_eq!(c.request(get("/v1/x")).body_str(), "abcdefg");
    }

    fn content_length_response_is_forwarded_as_is(driver) {
        let up = Upstream::respond(|_| response(200, &["content-type: application/json"], b"{\"ok\":true}"));
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let resp = gw.connect().request(get("/v1/x"));
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.header("content-length"), Some("11"));
        assert!(!resp.head.has("transfer-encoding"));
        assert_eq!(resp.header("content-type"), Some("application/json"));
        assert_eq!(resp.body_str(), "{\"ok\":true}");
    }

    fn request_trailers_are_passed_upstream(driver) {
        let up = Upstream::ok("done");
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let mut c = gw.connect();
        c.send("POST /v1/upload HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n");
        c.send("3\r\nabc\r\n0\r\nx-checksum: 900150983cd24fb0\r\n\r\n");
        assert_eq!(c.read_response().status(), 200);
        let (_, req) = &up.wait_requests(1)[0];
        assert_eq!(req.body_str(), "abc");
        assert_eq!(req.trailer("x-checksum"), Some("900150983cd24fb0"), "upstream trailers {:?}", req.trailers);
    }

    fn response_trailers_are_passed_to_the_client(driver) {
        let up = Upstream::respond(|_| {
            let mut r = b"HTTP/1.1 200 OK\r\ntrailer: grpc-status\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            r.extend_from_slice(&chunked_body(&[b"payload"], &["grpc-status: 0", "x-usage-tokens: 42"]));
            r
        });
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let mut c = gw.connect();
        let resp = c.request(get("/v1/x"));
        assert_eq!(resp.body_str(), "payload");
        assert_eq!(resp.trailer("grpc-status"), Some("0"), "client trailers {:?}", resp.trailers);
        assert_eq!(resp.trailer("x-usage-tokens"), Some("42"));
        assert_eq!(c.request(get("/v1/x")).status(), 200, "connection reusable after trailers");
    }

    fn expect_100_continue_is_answered_by_the_gateway_and_not_forwarded(driver) {
        let up = Upstream::ok("stored");
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let mut c = gw.connect();
        c.send("POST /v1/files HTTP/1.1\r\nHost: test.local\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
        let interim = c.read_response();
        assert_eq!(interim.head.start_line, "HTTP/1.1 100 Continue");
        c.send("12345");
        let resp = c.read_response();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.body_str(), "stored");
        let (_, req) = &up.wait_requests(1)[0];
        assert!(!req.head.has("expect"), "Expect forwarded upstream: {:?}", req.head);
        assert_eq!(req.body_str(), "12345");
    }

    fn expect_100_continue_for_an_unmatched_route_gets_the_final_404_without_100(driver) {
        let up = Upstream::ok("unreachable");
        let config = format!(
            "[[upstream]]\nname = \"models\"\nendpoints = [\"{}\"]\n\n[[route]]\nid = \"v1\"\npath_prefix = \"/v1/\"\nupstream = \"models\"\nclass = \"inference\"\nauth = \"none\"\n",
            up.url()
        );
        let gw = Gateway::start_with(driver, &config);
        let mut c = gw.connect();
        c.send("POST /elsewhere HTTP/1.1\r\nHost: test.local\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
        let resp = c.read_response();
        assert_error(&resp, 404, "not_found");
        assert_eq!(up.connection_count(), 0);
    }

    fn forwarded_headers_are_added_and_hop_by_hop_request_headers_stripped(driver) {
        let up = Upstream::ok("ok");
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let resp = gw.connect().request(concat!(
            "GET /v1/models HTTP/1.1\r\n",
            "Host: api.example.com:8443\r\n",
            "Connection: keep-alive, x-private-hop\r\n",
            "X-Private-Hop: secret\r\n",
            "Keep-Alive: timeout=5\r\n",
            "Proxy-Connection: keep-alive\r\n",
            "TE: deflate\r\n",
            "Upgrade: example/1\r\n",
            "Proxy-Authorization: Basic dTpw\r\n",
            "X-Forwarded-For: 203.0.113.7\r\n",
            "X-End-To-End: kept\r\n",
            "\r\n"
        ));
        assert_eq!(resp.status(), 200);
        let (_, req) = &up.wait_requests(1)[0];
        let h = &req.head;
        for name in ["connection", "x-private-hop", "keep-alive", "proxy-connection", "te", "upgrade", "proxy-authorization"] {
            assert!(!h.has(name), "hop-by-hop `{name}` reached upstream: {:?}", h.headers);
        }
        assert_eq!(h.header("host"), Some("api.example.com:8443"));
        assert_eq!(h.header("x-end-to-end"), Some("kept"));
        assert_eq!(h.header("via"), Some("1.1 modelgate"));
        assert_eq!(h.headers_named("x-forwarded-for"), vec!["203.0.113.7, 127.0.0.1"]);
        assert_eq!(h.header("x-forwarded-proto"), Some("http"));
        assert_generated_id(h.header("x-request-id").expect("x-request-id upstream"));
    }

    fn x_forwarded_for_is_the_client_ip_when_the_client_sent_none(driver) {
        let up = Upstream::ok("ok");
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        assert_eq!(gw.connect().request(get("/v1/models")).status(), 200);
        let (_, req) = &up.wait_requests(1)[0];
        assert_eq!(req.head.headers_named("x-forwarded-for"), vec!["127.0.0.1"]);
    }

    fn hop_by_hop_response_headers_are_stripped(driver) {
        let up = Upstream::respond(|_| response(200, &[
            "connection: x-upstream-hop",
            "x-upstream-hop: 1",
            "keep-alive: timeout=30",
            "proxy-connection: keep-alive",
            "x-end-to-end: kept",
        ], b"ok"));
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let resp = gw.connect().request(get("/v1/models"));
        assert_eq!(resp.status(), 200);
        for name in ["x-upstream-hop", "keep-alive", "proxy-connection"] {
            assert!(!resp.head.has(name), "hop-by-hop `{name}` reached client: {:?}", resp.head.headers);
        }
        assert!(!resp.head.connection_has("x-upstream-hop"));
        assert_eq!(resp.header("x-end-to-end"), Some("kept"));
    }

    fn generated_request_id_reaches_upstream_client_and_access_log(driver) {
        let up = Upstream::ok("hello");
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let resp = gw.connect().request(post("/v1/chat/completions?x=1", "abc"));
        assert_eq!(resp.status(), 200);
        let id = resp.header("x-request-id").expect("x-request-id on response").to_string();
        assert_generated_id(&id);
        let (_, req) = &up.wait_requests(1)[0];
        assert_eq!(req.head.header("x-request-id"), Some(id.as_str()));
        let line = gw.access_log(&id);
        assert_eq!(line["method"], "POST");
        assert!(line["path"].as_str().is_some_and(|p| p.starts_with("/v1/chat/completions")), "{line}");
        assert_eq!(line["route"], "main");
        assert!(line["upstream"].as_str().is_some_and(|u| u.contains(&up.url()) || u == "models"), "{line}");
        assert_eq!(line["status"], 200);
        for field in ["bytes_in", "bytes_out", "duration_us", "ttfb_us"] {
            assert!(line[field].is_u64(), "access log field `{field}` missing or not a number: {line}");
        }
        assert!(line["bytes_out"].as_u64().unwrap() >= 5, "{line}");
    }

    fn client_request_id_is_kept(driver) {
        let up = Upstream::ok("hello");
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let resp = gw.connect().request("GET /v1/models HTTP/1.1\r\nHost: test.local\r\nX-Request-Id: client-id-123\r\n\r\n");
        assert_eq!(resp.header("x-request-id"), Some("client-id-123"));
        let (_, req) = &up.wait_requests(1)[0];
        assert_eq!(req.head.headers_named("x-request-id"), vec!["client-id-123"]);
        assert_eq!(gw.access_log("client-id-123")["status"], 200);
    }

    fn sse_events_arrive_one_by_one_in_lockstep(driver) {
        let step = Lockstep::new();
        let up = sse_upstream(20, Pacing::Lockstep(step.clone()), SseFraming::Chunked);
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let mut c = gw.connect();
        c.send(post("/v1/chat/completions", "{\"stream\":true}"));
        let head = c.read_head();
        assert_eq!(head.status(), 200);
        assert_eq!(head.header("content-type"), Some("text/event-stream"));
        for i in 0..20 {
            let event = c.read_event().unwrap_or_else(|| panic!("stream ended before event {i}"));
            assert_eq!(event, sse_event(i));
            step.advance(); // only now may the upstream send event i + 1
        }
        assert_eq!(c.read_event(), None);
        let (_, _, complete) = c.finish();
        assert!(complete);
    }

    fn close_delimited_upstream_response_becomes_chunked_for_the_client(driver) {
        let up = sse_upstream(3, Pacing::Burst, SseFraming::CloseDelimited);
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let mut c = gw.connect();
        let resp = c.request(get("/v1/stream"));
        assert_eq!(resp.status(), 200);
        assert!(resp.head.is_chunked(), "client head: {:?}", resp.head);
        assert!(resp.complete, "terminal chunk missing");
        let expected: String = (0..3).map(|i| format!("{}\n\n", sse_event(i))).collect();
        assert_eq!(resp.body_str(), expected);
        // The client connection survives even though the upstream one did not.
        assert_eq!(c.request(get("/v1/stream")).body_str(), expected);
        assert_eq!(up.connection_count(), 2);
    }

    fn close_delimited_sse_events_arrive_one_by_one_in_lockstep(driver) {
        let step = Lockstep::new();
        let up = sse_upstream(10, Pacing::Lockstep(step.clone()), SseFraming::CloseDelimited);
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let mut c = gw.connect();
        c.send(get("/v1/stream"));
        assert!(c.read_head().is_chunked());
        for i in 0..10 {
            assert_eq!(c.read_event(), Some(sse_event(i)));
            step.advance();
        }
        assert_eq!(c.read_event(), None);
    }

    fn chunked_request_body_streams_to_upstream_piece_by_piece(driver) {
        request_body_in_lockstep(driver, true);
    }

    fn content_length_request_body_streams_to_upstream_piece_by_piece(driver) {
        request_body_in_lockstep(driver, false);
    }

    fn head_response_keeps_content_length_and_has_no_body(driver) {
        let up = Upstream::respond(|req| {
            if req.head.method() == "HEAD" {
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1234\r\n\r\n".to_vec()
            } else {
                response(200, &[], b"body")
            }
        });
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let mut c = gw.connect();
        let resp = c.request("HEAD /v1/file HTTP/1.1\r\nHost: test.local\r\n\r\n");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.header("content-length"), Some("1234"));
        assert!(resp.body.is_empty());
        let next = c.request(get("/v1/file"));
        assert_eq!(next.body_str(), "body", "connection unusable after HEAD");
    }

    fn pipelined_requests_are_answered_in_order(driver) {
        let up = Upstream::respond(|req| response(200, &[], req.head.target().as_bytes()));
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let mut c = gw.connect();
        c.send(format!("{}{}{}", get("/v1/a"), post("/v1/b", "xyz"), get("/v1/c")));
        assert_eq!(c.read_response().body_str(), "/v1/a");
        assert_eq!(c.read_response().body_str(), "/v1/b");
        assert_eq!(c.read_response().body_str(), "/v1/c");
    }

    fn client_connection_close_is_honoured(driver) {
        let up = Upstream::ok("bye");
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let mut c = gw.connect();
        let resp = c.request("GET /v1/x HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n");
        assert_eq!(resp.body_str(), "bye");
        let extra = c.wait_closed();
        assert!(extra.is_empty());
    }

    fn http_1_0_client_never_gets_a_chunked_response(driver) {
        let up = sse_upstream(3, Pacing::Burst, SseFraming::Chunked);
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let mut c = gw.connect();
        let resp = c.request("GET /v1/stream HTTP/1.0\r\nHost: test.local\r\n\r\n");
        assert_eq!(resp.status(), 200);
        assert!(!resp.head.is_chunked(), "chunked sent to an HTTP/1.0 client: {:?}", resp.head);
        let expected: String = (0..3).map(|i| format!("{}\n\n", sse_event(i))).collect();
        assert_eq!(resp.body_str(), expected);
        assert!(resp.complete);
    }

    fn upstream_connection_close_response_is_not_reused(driver) {
        let up = Upstream::respond(|_| response(200, &["connection: close"], b"once"));
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let mut c = gw.connect();
        for i in 0..3 {
            assert_eq!(c.request(get("/v1/x")).body_str(), "once", "request {i}");
        }
        assert_eq!(up.connection_count(), 3);
        assert!(!c.received().windows(17).any(|w| w.eq_ignore_ascii_case(b"connection: close")), "upstream's close leaked to the client");
    }

    fn upstream_closing_an_idle_pooled_connection_does_not_fail_the_next_request(driver) {
        // Answers one request per connection, then closes without saying so (an upstream's own
        // keep-alive timeout firing while the connection sits in the gateway's pool).
        let up = Upstream::start(|c| {
            if let Some(req) = c.read_request() {
                if req.complete {
                    let _ = c.write(&response(200, &[], b"fresh"));
                }
            }
        });
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let mut c = gw.connect();
        assert_eq!(c.request(get("/v1/x")).body_str(), "fresh");
        up.wait_finished(1);
        let resp = c.request(get("/v1/x"));
        assert_eq!(resp.status(), 200, "{:?} {}", resp.head, resp.body_str());
        assert_eq!(resp.body_str(), "fresh");
    }

    fn sixty_four_mib_request_body_streams_with_bounded_gateway_memory(driver) {
        let total = 64 * MIB;
        let up = Upstream::start(move |c| {
            while let Some(head) = c.read_head() {
                // Give a buffering gateway the chance to swallow the whole body before we read.
                thread::sleep(Duration::from_millis(500));
                let (mut len, mut bad) = (0u64, None);
                loop {
                    match c.conn.next_piece() {
                        Ok(Some(p)) => {
                            if bad.is_none() {
                                bad = check_pattern(len, &p);
                            }
                            len += p.len() as u64;
                        }
                        Ok(None) => break,
                        Err(_) => return,
                    }
                }
                let body = format!("len={len} bad={bad:?} cl={:?}", head.header("content-length"));
                if !c.write(&response(200, &[], body.as_bytes())) {
                    return;
                }
            }
        });
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let mut c = gw.connect();
        let mut w = c.writer();
        let writer = thread::spawn(move || {
            write!(w, "POST /v1/upload HTTP/1.1\r\nHost: test.local\r\nContent-Length: {total}\r\n\r\n").unwrap();
            let mut buf = vec![0u8; 256 * 1024];
            let mut off = 0;
            while off < total {
                fill_pattern(off, &mut buf);
                w.write_all(&buf).unwrap();
                off += buf.len() as u64;
            }
        });
        let resp = c.read_response();
        writer.join().expect("client writer");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.body_str(), format!("len={total} bad=None cl=Some(\"{total}\")"));
        let hwm = gw.vm_hwm_kib();
        eprintln!("gateway VmHWM after a 64 MiB request body: {hwm} KiB");
        assert!(hwm < 48 * 1024, "gateway peak RSS {hwm} KiB for a 64 MiB request body");
    }

    fn sixty_four_mib_response_body_streams_with_bounded_gateway_memory(driver) {
        let total = 64 * MIB;
        let up = Upstream::start(move |c| {
            while let Some(req) = c.read_request() {
                if !req.complete || !c.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n") {
                    return;
                }
                let mut buf = vec![0u8; 64 * 1024];
                let mut off = 0;
                while off < total {
                    fill_pattern(off, &mut buf);
                    if !c.write(&chunk(&buf)) {
                        return;
                    }
                    off += buf.len() as u64;
                }
                if !c.write(b"0\r\n\r\n") {
                    return;
                }
            }
        });
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let mut c = gw.connect();
        c.send(get("/v1/download"));
        let head = c.read_head();
        assert_eq!(head.status(), 200);
        // A slow reader: a gateway without backpressure would now pull everything in.
        thread::sleep(Duration::from_millis(500));
        let (mut len, mut bad) = (0u64, None);
        while let Some(p) = c.next_piece() {
            if bad.is_none() {
                bad = check_pattern(len, &p);
            }
            len += p.len() as u64;
        }
        assert_eq!(len, total);
        assert_eq!(bad, None, "first corrupted offset");
        let hwm = gw.vm_hwm_kib();
        eprintln!("gateway VmHWM after a 64 MiB response body: {hwm} KiB");
        assert!(hwm < 48 * 1024, "gateway peak RSS {hwm} KiB for a 64 MiB response body");
    }
}

/// The client sends body part i only after the upstream has received part i−1 (a gateway that
/// collects the body before forwarding deadlocks here, and the guard turns that into a failure).
fn request_body_in_lockstep(driver: Driver, chunked: bool) {
    const PARTS: usize = 10;
    let step = Lockstep::new();
    let seen = step.clone();
    let up = Upstream::start(move |c| {
        if c.read_head().is_none() {
            return;
        }
        let mut got = Vec::new();
        loop {
            match c.conn.next_piece() {
                Ok(Some(p)) => {
                    got.extend_from_slice(&p);
                    let parts = got.iter().filter(|b| **b == b'.').count() as u64;
                    while seen.value() < parts {
                        seen.advance();
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        let _ = c.write(&response(200, &[], &got));
    });
    let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
    let mut c = gw.connect();
    let parts: Vec<String> = (0..PARTS).map(|i| format!("part-{i}.")).collect();
    let total: usize = parts.iter().map(|p| p.len()).sum();
    if chunked {
        c.send(
            "POST /v1/upload HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
    } else {
        c.send(format!(
            "POST /v1/upload HTTP/1.1\r\nHost: test.local\r\nContent-Length: {total}\r\n\r\n"
        ));
    }
    for (i, part) in parts.iter().enumerate() {
        if chunked {
            c.send(chunk(part.as_bytes()));
        } else {
            c.send(part);
        }
        assert!(
            step.wait_for(i as u64 + 1),
            "the upstream never received part {i} while the client held back the rest"
        );
    }
    if chunked {
        c.send("0\r\n\r\n");
    }
    let resp = c.read_response();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body_str(), parts.concat());
}

#[test]
fn an_answer_sent_before_the_body_was_read_lets_the_client_finish_its_upload() {
    use std::io::Read;
    let up = Upstream::ok("hello");
    let config =
        basic_config(&up.url(), "").replace("path_prefix = \"/\"", "path_prefix = \"/v1/\"");
    let gw = Gateway::start(&config);
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    // Refused from the head alone (no route): the answer comes before any of the body.
    s.write_all(b"POST /nowhere HTTP/1.1\r\nhost: x\r\ncontent-length: 40000\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        let n = s.read(&mut chunk).expect("the answer");
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&chunk[..n]);
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 404"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // The client, still uploading, can finish: the gateway reads and drops the rest instead of
    // closing on unread bytes (which would reset the connection under the client's writes).
    for piece in [0u8; 40000].chunks(4000) {
        s.write_all(piece)
            .expect("the upload goes on after the answer");
        thread::sleep(Duration::from_millis(10));
    }
    // And then the gateway's end of the connection: a clean EOF.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .expect("a clean close, not a reset");
    assert!(up.requests().is_empty(), "nothing reached the model server");
}

#[test]
fn an_http10_request_without_host_reaches_the_upstream_with_the_groups_name_as_host() {
    let up = Upstream::ok("hello");
    let gw = Gateway::start(&basic_config(&up.url(), ""));
    let mut c = gw.connect();
    let resp = c.request("GET /v1/models HTTP/1.0\r\n\r\n");
    assert_eq!(resp.status(), 200);
    // The upstream request is HTTP/1.1, which must name a host: the group's, as nginx's
    // `$proxy_host` (found by the h1_request_head fuzz target: no Host was sent at all).
    let (_, req) = &up.wait_requests(1)[0];
    assert_eq!(req.head.header("host"), Some("models"), "{:?}", req.head);
    assert_eq!(req.head.headers_named("host").len(), 1);
}

#[test]
fn an_absolute_form_target_decides_the_upstream_host_whatever_the_host_field_says() {
    let up = Upstream::ok("hello");
    let gw = Gateway::start(&basic_config(&up.url(), ""));
    let mut c = gw.connect();
    // RFC 9112 §3.2.2: with an absolute-form target the Host field is ignored; it must not
    // reach the model server either (found by the h1_request_head fuzz target).
    let resp = c.request("GET http://a.example/v1/models HTTP/1.1\r\nHost: b.example\r\n\r\n");
    assert_eq!(resp.status(), 200);
    let (_, req) = &up.wait_requests(1)[0];
    assert_eq!(
        req.head.headers_named("host"),
        vec!["a.example"],
        "{:?}",
        req.head
    );
    assert_eq!(req.head.target(), "/v1/models");
}
