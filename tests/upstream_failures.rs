//! What the client sees when the upstream fails: refused connection, a close before or in the
//! middle of the response head, a malformed head (all 502), a death in the middle of the body (cut
//! response, closed connection); and endpoint choice: a refusing endpoint is skipped (passive
//! health), a new request goes to the endpoint with fewer outstanding requests.

mod support;

use support::*;

fn two_endpoint_config(a: &str, b: &str) -> String {
    format!(
        "[[upstream]]\nname = \"models\"\nendpoints = [\"{a}\", \"{b}\"]\nfail_backoff = \"60s\"\n\n[[route]]\nid = \"main\"\npath_prefix = \"/\"\nupstream = \"models\"\nclass = \"inference\"\nauth = \"none\"\n"
    )
}

/// An upstream that reads a request and answers with `bytes`, then closes.
fn answers_then_closes(bytes: &'static [u8]) -> Upstream {
    Upstream::start(move |c| {
        if c.read_request().is_some() {
            let _ = c.write(bytes);
        }
    })
}

/// A mock endpoint named `name`: `/v1/hold` streams one event and then waits for `gate`; any other
/// path answers `name` at once.
fn named_endpoint(name: &'static str, gate: Lockstep) -> Upstream {
    Upstream::start(move |c| {
        while let Some(req) = c.read_request() {
            let ok = if req.head.target() == "/v1/hold" {
                sse::stream_events(
                    c,
                    3,
                    &Pacing::HoldAt {
                        at: 1,
                        gate: gate.clone(),
                    },
                    SseFraming::Chunked,
                )
            } else {
                c.write(&response(200, &[], name.as_bytes()))
            };
            if !ok {
                return;
            }
        }
    })
}

on_both_drivers! {
    fn refused_upstream_connection_gets_502(driver) {
        let gw = Gateway::start_with(driver, &basic_config(&closed_port().to_string(), ""));
        assert_error(&one_shot(gw.addr, get("/v1/models")), 502, "bad_gateway");
    }

    fn upstream_closing_before_the_response_head_gets_502(driver) {
        let up = Upstream::close_after_request();
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        assert_error(&one_shot(gw.addr, get("/v1/models")), 502, "bad_gateway");
    }

    fn upstream_closing_in_the_middle_of_the_response_head_gets_502(driver) {
        let up = answers_then_closes(b"HTTP/1.1 200 OK\r\ncontent-le");
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        assert_error(&one_shot(gw.addr, get("/v1/models")), 502, "bad_gateway");
    }

    fn upstream_sending_a_malformed_head_gets_502(driver) {
        for garbage in [&b"HTTP/1.1 abc OK\r\ncontent-length: 0\r\n\r\n"[..], b"this is not http\r\n\r\n", b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n"] {
            let up = answers_then_closes(garbage);
            let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
            let resp = one_shot(gw.addr, get("/v1/models"));
            assert_error(&resp, 502, "bad_gateway");
        }
    }

    fn upstream_dying_mid_stream_ends_the_chunked_response_without_terminal_chunk(driver) {
        let up = answers_then_closes(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nd\r\ndata: first\n\n\r\n");
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let mut c = gw.connect();
        let resp = c.request(get("/v1/stream"));
        assert_eq!(resp.status(), 200);
        assert!(resp.head.is_chunked());
        assert!(!resp.complete, "terminal chunk sent although the upstream died");
        assert_eq!(resp.body_str(), "data: first\n\n");
        c.wait_closed();
    }

    fn upstream_dying_mid_body_cuts_the_content_length_response_short(driver) {
        let up = answers_then_closes(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nonly this");
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let mut c = gw.connect();
        let resp = c.request(get("/v1/file"));
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.header("content-length"), Some("1000"));
        assert!(!resp.complete);
        assert_eq!(resp.body_str(), "only this");
        c.wait_closed();
    }

    fn refusing_endpoint_is_skipped_and_every_request_succeeds(driver) {
        let bad = closed_port().to_string();
        let good = Upstream::ok("good");
        let gw = Gateway::start_with(driver, &two_endpoint_config(&bad, &good.url()));
        for i in 0..6 {
            let resp = one_shot(gw.addr, get(&format!("/v1/models?i={i}")));
            assert_eq!(resp.status(), 200, "request {i}: {:?} {}", resp.head, resp.body_str());
            assert_eq!(resp.body_str(), "good");
            let line = gw.access_log(resp.header("x-request-id").expect("x-request-id"));
            let upstream = line["upstream"].as_str().unwrap_or_default();
            assert!(upstream.contains(&good.url()) && !upstream.contains(&bad), "request {i} access log: {line}");
        }
    }

    fn new_request_goes_to_the_endpoint_with_fewer_outstanding_requests(driver) {
        let gate = Lockstep::new();
        let a = named_endpoint("A", gate.clone());
        let b = named_endpoint("B", gate.clone());
        let gw = Gateway::start_with(driver, &two_endpoint_config(&a.url(), &b.url()));

        let mut long = gw.connect();
        long.send(get("/v1/hold"));
        assert_eq!(long.read_head().status(), 200);
        assert_eq!(long.read_event(), Some(sse_event(0)));
        let busy = if a.requests().iter().any(|(_, r)| r.head.target() == "/v1/hold") { "A" } else { "B" };
        let idle = if busy == "A" { "B" } else { "A" };

        for i in 0..4 {
            let resp = one_shot(gw.addr, get(&format!("/v1/quick?i={i}")));
            assert_eq!(resp.body_str(), idle, "request {i} went to the endpoint holding the open stream");
        }

        gate.advance();
        assert_eq!(long.read_event(), Some(sse_event(1)));
        assert_eq!(long.read_event(), Some(sse_event(2)));
        assert_eq!(long.read_event(), None);
    }

    fn idle_pool_keeps_at_most_max_idle_per_endpoint_connections(driver) {
        let gate = Lockstep::new();
        let up = named_endpoint("only", gate.clone());
        let config = format!(
            "[[upstream]]\nname = \"models\"\nendpoints = [\"{}\"]\nmax_idle_per_endpoint = 1\n\n[[route]]\nid = \"main\"\npath_prefix = \"/\"\nupstream = \"models\"\nclass = \"inference\"\nauth = \"none\"\n",
            up.url()
        );
        let gw = Gateway::start_with(driver, &config);
        let mut streams: Vec<Client> = (0..3)
            .map(|_| {
                let mut c = gw.connect();
                c.send(get("/v1/hold"));
                assert_eq!(c.read_head().status(), 200);
                assert_eq!(c.read_event(), Some(sse_event(0)));
                c
            })
            .collect();
        assert_eq!(up.connection_count(), 3, "three concurrent streams need three upstream connections");
        gate.advance();
        for c in &mut streams {
            assert_eq!(c.read_event(), Some(sse_event(1)));
            assert_eq!(c.read_event(), Some(sse_event(2)));
            assert_eq!(c.read_event(), None);
        }
        // Three connections came back idle; the pool may keep one, so the gateway closes two.
        up.wait_finished(2);
        assert_eq!(one_shot(gw.addr, get("/v1/quick")).body_str(), "only");
        assert_eq!(up.connection_count(), 3, "the one pooled connection was not reused");
    }
}
