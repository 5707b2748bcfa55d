//! Every configured timeout, each set short (300 ms) so the test waits little; the tests only
//! assert what happens when a timeout fires, never how long it took (the 10 s guard is a failure
//! guard). header_read (slowloris → 408 + close), keepalive_idle (silent close), body_idle
//! (close), upstream_connect (a listener with a full accept queue → 504), upstream_first_byte
//! (504) and upstream_idle (response cut: no terminal chunk / short body, then close).

mod support;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use support::*;

fn config(upstream: &str, timeouts: &str) -> String {
    basic_config(upstream, &format!("[timeouts]\n{timeouts}\n"))
}

on_both_drivers! {
    fn slowloris_request_head_gets_408_and_the_connection_closed(driver) {
        let up = Upstream::ok("unreachable");
        let gw = Gateway::start_with(driver, &config(&up.url(), "header_read = \"300ms\""));
        let mut c = gw.connect();
        c.send("GET /v1/models HTTP/1.1\r\nHost: test.local\r\n");
        // Keep the head trickling in, one header line every 100 ms, so only a deadline on the
        // whole head (not an idle timeout) can end it.
        let stop = Arc::new(AtomicBool::new(false));
        let (mut w, stop2) = (c.writer(), stop.clone());
        let dribbler = thread::spawn(move || {
            for i in 0..100 {
                if stop2.load(Ordering::SeqCst) || write!(w, "X-Slow-{i}: v\r\n").is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(100));
            }
        });
        let resp = c.read_response();
        stop.store(true, Ordering::SeqCst);
        assert_eq!(resp.status(), 408, "{:?} {}", resp.head, resp.body_str());
        assert!(resp.head.connection_has("close"), "{:?}", resp.head.headers);
        c.wait_closed();
        dribbler.join().unwrap();
        assert_eq!(up.connection_count(), 0);
    }

    fn idle_keep_alive_connection_is_closed_silently(driver) {
        let up = Upstream::ok("hello");
        let gw = Gateway::start_with(driver, &config(&up.url(), "keepalive_idle = \"300ms\""));
        let mut c = gw.connect();
        assert_eq!(c.request(get("/v1/models")).status(), 200);
        let extra = c.wait_closed();
        assert!(extra.is_empty(), "bytes sent on idle close: {:?}", String::from_utf8_lossy(&extra));
    }

    fn stalled_request_body_closes_the_connection_after_body_idle(driver) {
        let up = Upstream::ok("unreachable");
        let gw = Gateway::start_with(driver, &config(&up.url(), "body_idle = \"300ms\""));
        let mut c = gw.connect();
        c.send("POST /v1/upload HTTP/1.1\r\nHost: test.local\r\nContent-Length: 10\r\n\r\nabc");
        let extra = c.wait_closed();
        if !extra.is_empty() {
            eprintln!("gateway answered the stalled body with: {:?}", String::from_utf8_lossy(&extra));
        }
        assert!(up.requests().iter().all(|(_, r)| !r.complete), "the upstream got a complete request");
    }

    fn upstream_that_never_answers_gets_504_after_upstream_first_byte(driver) {
        let up = Upstream::silent();
        let gw = Gateway::start_with(driver, &config(&up.url(), "upstream_first_byte = \"300ms\""));
        let resp = one_shot(gw.addr, get("/v1/models"));
        assert_error(&resp, 504, "gateway_timeout");
        up.wait_requests(1);
    }

    fn upstream_stalling_mid_stream_ends_the_chunked_response_without_terminal_chunk(driver) {
        let up = Upstream::start(|c| {
            if c.read_request().is_some() {
                let _ = c.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n");
                let _ = c.write(&chunk(b"data: first\n\n"));
                c.hold_until_stopped();
            }
        });
        let gw = Gateway::start_with(driver, &config(&up.url(), "upstream_idle = \"300ms\""));
        let mut c = gw.connect();
        c.send(get("/v1/stream"));
        assert_eq!(c.read_head().status(), 200);
        assert_eq!(c.read_event().as_deref(), Some("data: first"));
        let (rest, _, complete) = c.finish();
        assert!(!complete, "the response ended with a terminal chunk after the upstream stalled");
        assert!(rest.is_empty(), "unexpected data {:?}", String::from_utf8_lossy(&rest));
        c.wait_closed();
    }

    fn upstream_stalling_mid_body_cuts_the_content_length_response_short(driver) {
        let up = Upstream::start(|c| {
            if c.read_request().is_some() {
                let _ = c.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789");
                c.hold_until_stopped();
            }
        });
        let gw = Gateway::start_with(driver, &config(&up.url(), "upstream_idle = \"300ms\""));
        let mut c = gw.connect();
        let resp = c.request(get("/v1/file"));
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.header("content-length"), Some("100"));
        assert!(!resp.complete);
        assert_eq!(resp.body_str(), "0123456789");
        c.wait_closed();
    }

    fn short_timeouts_do_not_cut_a_stream_that_keeps_moving(driver) {
        // Every timeout that could wrongly apply to an active stream is 300 ms; the stream runs
        // for about a second with a 100 ms gap between events.
        let up = sse_upstream(10, Pacing::Every(Duration::from_millis(100)), SseFraming::Chunked);
        let timeouts = "header_read = \"300ms\"\nbody_idle = \"300ms\"\nkeepalive_idle = \"300ms\"\nupstream_first_byte = \"300ms\"\nupstream_idle = \"300ms\"";
        let gw = Gateway::start_with(driver, &config(&up.url(), timeouts));
        let mut c = gw.connect();
        c.send(get("/v1/stream"));
        assert_eq!(c.read_head().status(), 200);
        for i in 0..10 {
            assert_eq!(c.read_event(), Some(sse_event(i)));
        }
        assert_eq!(c.read_event(), None);
        assert!(c.finish().2, "stream cut");
    }

    fn slow_but_steady_request_body_is_not_cut_by_body_idle(driver) {
        let up = Upstream::respond(|req| response(200, &[], &req.body));
        let gw = Gateway::start_with(driver, &config(&up.url(), "body_idle = \"300ms\"\nheader_read = \"300ms\""));
        let mut c = gw.connect();
        c.send("POST /v1/upload HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n");
        for i in 0..8 {
            thread::sleep(Duration::from_millis(100));
            c.send(chunk(format!("{i}").as_bytes()));
        }
        c.send("0\r\n\r\n");
        let resp = c.read_response();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.body_str(), "01234567");
    }

    fn upstream_whose_accept_queue_is_full_gets_504_after_upstream_connect(driver) {
        let Some(full) = FullBacklog::new() else {
            eprintln!("skipped: could not fill a listener's accept queue on this kernel");
            return;
        };
        let gw = Gateway::start_with(driver, &config(&full.addr.to_string(), "upstream_connect = \"300ms\""));
        let resp = one_shot(gw.addr, get("/v1/models"));
        assert_error(&resp, 504, "gateway_timeout");
    }
}
