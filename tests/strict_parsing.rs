//! Strict request parsing, as a table: every head-level rejection (framing ambiguity, bad header
//! syntax, bad request-targets, Host rules, size limits) answers the JSON error with
//! `connection: close`, closes the socket and never contacts the upstream; chunk-syntax errors
//! found mid-body close the connection with a 400 and never let the bad bytes or a complete
//! request reach the upstream. Unmatched routes get 404.

mod support;

use support::*;

/// A request the gateway must reject before contacting the upstream.
struct HeadCase {
    name: &'static str,
    raw: Vec<u8>,
    status: u16,
    kind: &'static str,
}

fn bad(name: &'static str, raw: impl Into<Vec<u8>>) -> HeadCase {
    HeadCase {
        name,
        raw: raw.into(),
        status: 400,
        kind: "bad_request",
    }
}

/// A request with well-formed head whose chunked body is malformed at `bad_bytes`.
struct ChunkCase {
    name: &'static str,
    body: Vec<u8>,
    bad_bytes: Vec<u8>,
    /// Acceptable statuses of the error response.
    statuses: &'static [u16],
}

fn bad_chunk(name: &'static str, body: &[u8], bad_bytes: &[u8]) -> ChunkCase {
    ChunkCase {
        name,
        body: body.to_vec(),
        bad_bytes: bad_bytes.to_vec(),
        statuses: &[400],
    }
}

/// Limits kept small so the size cases stay small.
const LIMITS: &str = "[limits]\nmax_headers = 20\nmax_header_bytes = 4096\nmax_uri_bytes = 1024\nmax_trailer_bytes = 1024\n";

fn head_cases() -> Vec<HeadCase> {
    let h = |extra: &str| format!("POST /v1/x HTTP/1.1\r\nHost: test.local\r\n{extra}\r\n");
    let many_headers: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    vec![
        bad(
            "content-length and transfer-encoding",
            h("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
        ),
        bad(
            "transfer-encoding and content-length",
            h("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"),
        ),
        bad(
            "duplicate equal content-length",
            h("Content-Length: 5\r\nContent-Length: 5\r\n"),
        ),
        bad(
            "duplicate different content-length",
            h("Content-Length: 5\r\nContent-Length: 6\r\n"),
        ),
        bad("content-length comma list", h("Content-Length: 5, 5\r\n")),
        bad("content-length with plus sign", h("Content-Length: +5\r\n")),
        bad("negative content-length", h("Content-Length: -1\r\n")),
        bad("content-length with letters", h("Content-Length: 5a\r\n")),
        bad("hex content-length", h("Content-Length: 0x5\r\n")),
        bad("empty content-length", h("Content-Length: \r\n")),
        bad(
            "content-length overflow",
            h("Content-Length: 99999999999999999999999\r\n"),
        ),
        bad(
            "transfer-encoding gzip, chunked",
            h("Transfer-Encoding: gzip, chunked\r\n"),
        ),
        bad(
            "transfer-encoding chunked, chunked",
            h("Transfer-Encoding: chunked, chunked\r\n"),
        ),
        bad(
            "two transfer-encoding headers",
            h("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
        ),
        bad(
            "transfer-encoding identity",
            h("Transfer-Encoding: identity\r\n"),
        ),
        bad("transfer-encoding gzip", h("Transfer-Encoding: gzip\r\n")),
        bad("obs-fold with space", h("X-Folded: first\r\n second\r\n")),
        bad("obs-fold with tab", h("X-Folded: first\r\n\tsecond\r\n")),
        bad("NUL in header value", h("X-Bad: a\0b\r\n")),
        bad("bare CR in header value", h("X-Bad: a\rb\r\n")),
        bad("bare LF in header value", h("X-Bad: a\nb\r\n")),
        bad("control char in header value", h("X-Bad: a\x01b\r\n")),
        bad("DEL in header value", h("X-Bad: a\x7fb\r\n")),
        bad("space before colon", h("X-Bad : v\r\n")),
        bad("tab before colon", h("X-Bad\t: v\r\n")),
        bad(
            "space before colon in host",
            "GET /v1/x HTTP/1.1\r\nHost : test.local\r\n\r\n",
        ),
        bad("missing host", "GET /v1/x HTTP/1.1\r\nX-A: b\r\n\r\n"),
        bad(
            "two host headers",
            "GET /v1/x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        ),
        bad(
            "fragment in request-target",
            "GET /v1/x#frag HTTP/1.1\r\nHost: test.local\r\n\r\n",
        ),
        bad(
            "bare fragment request-target",
            "GET #frag HTTP/1.1\r\nHost: test.local\r\n\r\n",
        ),
        bad(
            "absolute-form with userinfo",
            "GET http://user@test.local/v1/x HTTP/1.1\r\nHost: test.local\r\n\r\n",
        ),
        bad(
            "absolute-form with user and password",
            "GET http://user:pw@test.local/v1/x HTTP/1.1\r\nHost: test.local\r\n\r\n",
        ),
        bad(
            "absolute-form with ftp scheme",
            "GET ftp://test.local/v1/x HTTP/1.1\r\nHost: test.local\r\n\r\n",
        ),
        bad(
            "authority-form CONNECT",
            "CONNECT test.local:443 HTTP/1.1\r\nHost: test.local:443\r\n\r\n",
        ),
        bad(
            "authority-form with GET",
            "GET test.local:443 HTTP/1.1\r\nHost: test.local:443\r\n\r\n",
        ),
        bad(
            "asterisk-form on GET",
            "GET * HTTP/1.1\r\nHost: test.local\r\n\r\n",
        ),
        HeadCase {
            name: "more headers than max_headers",
            raw: format!("GET /v1/x HTTP/1.1\r\nHost: test.local\r\n{many_headers}\r\n")
                .into_bytes(),
            status: 431,
            kind: "header_too_large",
        },
        HeadCase {
            name: "head bigger than max_header_bytes",
            raw: format!(
                "GET /v1/x HTTP/1.1\r\nHost: test.local\r\nX-Big: {}\r\n\r\n",
                "a".repeat(5000)
            )
            .into_bytes(),
            status: 431,
            kind: "header_too_large",
        },
        HeadCase {
            name: "uri longer than max_uri_bytes",
            raw: format!(
                "GET /v1/{} HTTP/1.1\r\nHost: test.local\r\n\r\n",
                "u".repeat(2000)
            )
            .into_bytes(),
            status: 414,
            kind: "uri_too_long",
        },
    ]
}

fn chunk_cases() -> Vec<ChunkCase> {
    let big_trailer = format!(
        "5\r\nhello\r\n0\r\nx-big-trailer: {}\r\n\r\n",
        "t".repeat(2000)
    );
    vec![
        bad_chunk("non-hex chunk size", b"zz\r\nhello\r\n0\r\n\r\n", b"zz"),
        bad_chunk(
            "0x-prefixed chunk size",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"0x5",
        ),
        bad_chunk(
            "leading space in chunk size",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b" 5\r\n",
        ),
        bad_chunk(
            "chunk size with 17 hex digits",
            b"10000000000000000\r\nhello\r\n0\r\n\r\n",
            b"10000000000000000",
        ),
        bad_chunk(
            "chunk data not followed by CRLF",
            b"5\r\nhelloXX\r\n0\r\n\r\n",
            b"helloXX",
        ),
        bad_chunk(
            "empty chunk size line",
            b"\r\nhello\r\n0\r\n\r\n",
            b"chunked\r\n\r\n\r\nhello",
        ),
        ChunkCase {
            name: "trailers bigger than max_trailer_bytes",
            body: big_trailer.into_bytes(),
            bad_bytes: b"x-big-trailer".to_vec(),
            statuses: &[400, 431],
        },
    ]
}

/// Runs one head-level case; returns a description of every way it went wrong.
fn check_head_case(gw: &Gateway, case: &HeadCase) -> Vec<String> {
    let mut problems = Vec::new();
    let mut c = gw.connect();
    if let Err(e) = c.try_send(&case.raw) {
        return vec![format!("write failed: {e}")];
    }
    let resp = match c.try_read_response() {
        Ok(Some(r)) => r,
        Ok(None) => return vec!["connection closed without a response".into()],
        Err(e) => {
            return vec![format!(
                "no response: {e}; received {:?}",
                String::from_utf8_lossy(&c.received())
            )]
        }
    };
    if resp.status() != case.status {
        problems.push(format!(
            "status {} (want {}): {:?}",
            resp.status(),
            case.status,
            resp.head.start_line
        ));
    }
    if !resp.head.connection_has("close") {
        problems.push(format!("no `connection: close` in {:?}", resp.head.headers));
    }
    if !resp
        .header("content-type")
        .unwrap_or("")
        .starts_with("application/json")
    {
        problems.push(format!("content-type {:?}", resp.header("content-type")));
    }
    match serde_json::from_slice::<serde_json::Value>(&resp.body) {
        Ok(json) => {
            if json["error"]["type"] != case.kind {
                problems.push(format!(
                    "error type {} (want {})",
                    json["error"]["type"], case.kind
                ));
            }
            if resp.header("x-request-id").is_none()
                || json["error"]["request_id"] != resp.header("x-request-id").unwrap_or("")
            {
                problems.push(format!(
                    "request_id {} vs header {:?}",
                    json["error"]["request_id"],
                    resp.header("x-request-id")
                ));
            }
        }
        Err(e) => problems.push(format!("body not JSON ({e}): {:?}", resp.body_str())),
    }
    match c.closed_within_guard() {
        Ok(extra) if extra.is_empty() => {}
        Ok(extra) => problems.push(format!(
            "bytes after the error response: {:?}",
            String::from_utf8_lossy(&extra)
        )),
        Err(e) => problems.push(format!("socket not closed after the error: {e}")),
    }
    problems
}

fn check_chunk_case(gw: &Gateway, up: &Upstream, case: &ChunkCase, path: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut c = gw.connect();
    let mut raw =
        format!("POST {path} HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    raw.extend_from_slice(&case.body);
    if let Err(e) = c.try_send(&raw) {
        return vec![format!("write failed: {e}")];
    }
    match c.closed_within_guard() {
        Ok(bytes)
            if case
                .statuses
                .iter()
                .any(|s| bytes.starts_with(format!("HTTP/1.1 {s} ").as_bytes())) => {}
        Ok(bytes) => problems.push(format!(
            "want {:?} then close, got {:?}",
            case.statuses,
            String::from_utf8_lossy(&bytes)
        )),
        Err(e) => problems.push(format!(
            "connection not closed: {e}; received {:?}",
            String::from_utf8_lossy(&c.received())
        )),
    }
    let forwarded = up
        .requests()
        .into_iter()
        .filter(|(_, r)| r.head.target() == path)
        .collect::<Vec<_>>();
    if forwarded.iter().any(|(_, r)| r.complete) {
        problems.push("the upstream received a complete request".into());
    }
    if contains(&up.received_all(), &case.bad_bytes) {
        problems.push(format!(
            "the upstream received the bad bytes {:?}",
            String::from_utf8_lossy(&case.bad_bytes)
        ));
    }
    problems
}

on_both_drivers! {
    fn malformed_requests_are_rejected_and_never_reach_the_upstream(driver) {
        let up = Upstream::ok("should not be reached");
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), LIMITS));
        let mut failures = Vec::new();
        for case in head_cases() {
            for p in check_head_case(&gw, &case) {
                failures.push(format!("[{}] {p}", case.name));
            }
            if up.connection_count() != 0 {
                failures.push(format!("[{}] the upstream was contacted", case.name));
                break;
            }
        }
        assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));

        // Control: the same gateway forwards a valid request, so "never contacted" meant something.
        let resp = one_shot(gw.addr, get("/v1/x"));
        assert_eq!(resp.status(), 200);
        assert_eq!(up.connection_count(), 1);
    }

    fn malformed_chunked_bodies_close_the_connection_and_never_complete_upstream(driver) {
        let up = Upstream::ok("should not complete");
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), LIMITS));
        let mut failures = Vec::new();
        for (i, case) in chunk_cases().iter().enumerate() {
            for p in check_chunk_case(&gw, &up, case, &format!("/v1/chunk-case-{i}")) {
                failures.push(format!("[{}] {p}", case.name));
            }
        }
        assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));

        let mut c = gw.connect();
        c.send("POST /v1/ok HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        assert_eq!(c.read_response().status(), 200, "a valid chunked request still works");
    }
}

#[test]
fn unmatched_path_or_host_gets_404_and_the_upstream_is_not_contacted() {
    let up = Upstream::ok("should not be reached");
    let config = format!(
        "[[upstream]]\nname = \"models\"\nendpoints = [\"{}\"]\n\n[[route]]\nid = \"openai\"\nhost = \"api.example.com\"\npath_prefix = \"/v1/\"\nupstream = \"models\"\nclass = \"inference\"\nauth = \"none\"\n",
        up.url()
    );
    let gw = Gateway::start(&config);
    let resp = one_shot(
        gw.addr,
        "GET /v2/models HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    );
    assert_error(&resp, 404, "not_found");
    let resp = one_shot(
        gw.addr,
        "GET /v1/models HTTP/1.1\r\nHost: other.example.com\r\n\r\n",
    );
    assert_error(&resp, 404, "not_found");
    assert_eq!(up.connection_count(), 0);

    let resp = one_shot(
        gw.addr,
        "GET /v1/models HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    );
    assert_eq!(
        resp.status(),
        200,
        "the matching host and prefix are routed"
    );
}

#[test]
fn asterisk_form_options_is_not_rejected_as_malformed() {
    let up = Upstream::ok("ok");
    let gw = Gateway::start(&basic_config(&up.url(), ""));
    let resp = one_shot(gw.addr, "OPTIONS * HTTP/1.1\r\nHost: test.local\r\n\r\n");
    assert_ne!(
        resp.status(),
        400,
        "OPTIONS * is valid HTTP/1.1: {:?} {}",
        resp.head,
        resp.body_str()
    );
}

#[test]
fn absolute_form_http_target_is_accepted() {
    let up = Upstream::ok("ok");
    let gw = Gateway::start(&basic_config(&up.url(), ""));
    let resp = one_shot(
        gw.addr,
        "GET http://test.local/v1/models?a=1 HTTP/1.1\r\nHost: test.local\r\n\r\n",
    );
    assert_eq!(resp.status(), 200, "{:?} {}", resp.head, resp.body_str());
    let (_, req) = &up.wait_requests(1)[0];
    assert!(
        req.head.target().ends_with("/v1/models?a=1"),
        "upstream target {:?}",
        req.head.target()
    );
}
