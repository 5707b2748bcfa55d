//! Re-serialising heads for the next hop: hop-by-hop fields dropped (RFC 9110 §7.6.1), framing
//! rewritten to what the gateway actually sends, forwarding fields added.
//!
//! Heads are always rebuilt from the parsed fields rather than forwarded as received, so the next
//! hop never sees a byte sequence the gateway did not itself validate.

use bytes::{BufMut, BytesMut};

use super::head::{trim, BodyFraming, Fields, RequestHead, ResponseHead};

/// Fields that describe one connection and never travel past it.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "transfer-encoding",
    "upgrade",
];

fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

/// Fields a sender must not put in a trailer section: framing, routing, authentication,
/// and fields the gateway itself controls.
pub fn forbidden_in_trailer(name: &[u8]) -> bool {
    const FORBIDDEN: &[&str] = &[
        "content-length",
        "content-type",
        "content-encoding",
        "host",
        "authorization",
        "set-cookie",
        "cookie",
        "expect",
        "trailer",
        "x-request-id",
        "proxy-authorization",
        "forwarded",
        "via",
    ];
    // The gateway's own fields (the identity assertion, X-Forwarded-*) cannot be smuggled in
    // after the head either.
    let prefixed = |p: &[u8]| name.len() >= p.len() && name[..p.len()].eq_ignore_ascii_case(p);
    is_hop_by_hop(name)
        || prefixed(b"x-modelgate-")
        || prefixed(b"x-forwarded-")
        || FORBIDDEN
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f.as_bytes()))
}

/// Names listed in `Connection` are hop-by-hop for this message too.
fn connection_listed(fields: &Fields, name: &[u8]) -> bool {
    fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, v)| v.split(|b| *b == b','))
        .any(|token| trim(token).eq_ignore_ascii_case(name))
}

/// Whether a field is passed to the next hop unchanged.
fn passes(fields: &Fields, name: &[u8], also_drop: &[&str]) -> bool {
    !is_hop_by_hop(name)
        && !name.eq_ignore_ascii_case(b"content-length")
        && !also_drop
            .iter()
            .any(|d| name.eq_ignore_ascii_case(d.as_bytes()))
        && !connection_listed(fields, name)
}

/// What the gateway adds to a request on its way upstream.
pub struct Forwarding<'a> {
    pub client_ip: &'a str,
    pub proto: &'a str,
    pub request_id: &'a str,
    /// Client fields never forwarded (`authorization`, and the identity assertion's header so
    /// a client cannot forge one).
    pub drop: &'a [&'a str],
    /// The identity assertion: header name and signed value.
    pub identity: Option<(&'a str, &'a str)>,
    /// `Host` for a request that named none (HTTP/1.0 without `Host`): the upstream group's
    /// name, as nginx sends `$proxy_host`. An HTTP/1.1 request must carry one.
    pub fallback_host: &'a str,
}

/// Writes the upstream request head: origin-form target, the client's end-to-end fields,
/// `Via`, `X-Forwarded-*`, `x-request-id`, and framing for `framing`.
pub fn encode_request_head(
    req: &RequestHead,
    framing: BodyFraming,
    fwd: &Forwarding<'_>,
    out: &mut BytesMut,
) {
    // Room for what is added (the identity assertion can be larger than the client's
    // `Authorization` it replaces) and a small body, which the sink appends to the head.
    let assertion = fwd.identity.map_or(0, |(n, v)| n.len() + v.len() + 4);
    out.reserve(req.head_len + 256 + assertion + small_body(req.framing));
    out.put_slice(req.method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(req.path.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    request_fields(req, framing, fwd, out);
    out.put_slice(b"\r\n");
}

/// Bytes to reserve after a head for its body: a body this small usually arrives in one read
/// and goes out in the head's buffer.
fn small_body(framing: BodyFraming) -> usize {
    match framing {
        BodyFraming::Length(n) if n <= 16 * 1024 => n as usize,
        _ => 0,
    }
}

/// Where re-serialised fields go: an HTTP/1.1 head being written, or an HTTP/2 header map
/// (`http2::convert`), so both protocols forward exactly the same fields.
pub trait FieldSink {
    fn field(&mut self, name: &[u8], value: &[u8]);
}

impl FieldSink for BytesMut {
    fn field(&mut self, name: &[u8], value: &[u8]) {
        put_field(self, name, value);
    }
}

/// The upstream request's fields (everything between the request line and the blank line).
pub fn request_fields(
    req: &RequestHead,
    framing: BodyFraming,
    fwd: &Forwarding<'_>,
    out: &mut impl FieldSink,
) {
    // The authority the request was routed by, never the client's `Host` field as sent: with
    // an absolute-form target the field is ignored (RFC 9112 §3.2.2) and may hold anything
    // (found by the h1_request_head fuzz target).
    let host = match req.host.as_str() {
        "" => fwd.fallback_host,
        host => host,
    };
    out.field(b"host", host.as_bytes());
    let mut xff: Option<Vec<u8>> = None;
    // HTTP/2 splits cookies into one field per pair (RFC 9113 §8.2.3); an HTTP/1.1 server
    // expects one `Cookie` line, so several are joined with "; " (one is passed as it is).
    let join_cookies = req.fields.count("cookie") > 1;
    let mut cookies: Option<Vec<u8>> = None;
    if join_cookies {
        for (_, value) in req
            .fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"cookie"))
        {
            let joined = cookies.get_or_insert_with(Vec::new);
            if !joined.is_empty() {
                joined.extend_from_slice(b"; ");
            }
            joined.extend_from_slice(value);
        }
    }
    for (name, value) in req.fields.iter() {
        if join_cookies && name.eq_ignore_ascii_case(b"cookie") {
            if let Some(joined) = cookies.take() {
                out.field(b"cookie", &joined);
            }
            continue;
        }
        if name.eq_ignore_ascii_case(b"host") {
            continue;
        }
        if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            let list = xff.get_or_insert_with(Vec::new);
            if !list.is_empty() {
                list.extend_from_slice(b", ");
            }
            list.extend_from_slice(value);
            continue;
        }
        if !passes(
            &req.fields,
            name,
            &["expect", "x-request-id", "x-forwarded-proto"],
        ) || fwd
            .drop
            .iter()
            .any(|d| name.eq_ignore_ascii_case(d.as_bytes()))
        {
            continue;
        }
        out.field(name, value);
    }
    match xff {
        Some(mut list) => {
            list.extend_from_slice(b", ");
            list.extend_from_slice(fwd.client_ip.as_bytes());
            out.field(b"x-forwarded-for", &list);
        }
        None => out.field(b"x-forwarded-for", fwd.client_ip.as_bytes()),
    }
    out.field(b"x-forwarded-proto", fwd.proto.as_bytes());
    out.field(b"via", via_token(req.http11, req.h2));
    out.field(b"x-request-id", fwd.request_id.as_bytes());
    if let Some((name, value)) = fwd.identity {
        out.field(name.as_bytes(), value.as_bytes());
    }
    if wants_trailers(&req.fields) {
        out.field(b"te", b"trailers");
    }
    put_framing(out, framing);
}

/// Writes the response head for the client. `framing` is what the gateway will send, which may
/// differ from the upstream's (close-delimited becomes chunked); `close` adds `Connection: close`.
pub fn encode_response_head(
    res: &ResponseHead,
    framing: BodyFraming,
    close: bool,
    request_id: &str,
    out: &mut BytesMut,
) {
    out.reserve(res.head_len + 128 + small_body(res.framing));
    // Status codes are three digits (the parser and the gateway's own responses see to it).
    let s = res.status % 1000;
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(&[
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]);
    out.put_u8(b' ');
    out.put_slice(res.reason.as_bytes());
    out.put_slice(b"\r\n");
    response_fields(res, framing, close, request_id, out);
    out.put_slice(b"\r\n");
}

/// The client response's fields (everything between the status line and the blank line).
pub fn response_fields(
    res: &ResponseHead,
    framing: BodyFraming,
    close: bool,
    request_id: &str,
    out: &mut impl FieldSink,
) {
    let mut has_id = false;
    for (name, value) in res.fields.iter() {
        if !passes(&res.fields, name, &[]) {
            continue;
        }
        has_id |= name.eq_ignore_ascii_case(b"x-request-id");
        out.field(name, value);
    }
    out.field(b"via", via_token(res.http11, res.h2));
    if !has_id {
        out.field(b"x-request-id", request_id.as_bytes());
    }
    // 1xx/204/304 and HEAD responses keep the upstream's Content-Length semantics: for HEAD the
    // length describes the body a GET would get, so pass it on.
    if framing == BodyFraming::Empty {
        if let Some(cl) = res.fields.get("content-length") {
            out.field(b"content-length", cl);
        }
    } else {
        put_framing(out, framing);
    }
    if close {
        out.field(b"connection", b"close");
    }
}

/// `Via` names the protocol version the message was received with (RFC 9110 §7.6.3).
fn via_token(http11: bool, h2: bool) -> &'static [u8] {
    if h2 {
        b"2 modelgate"
    } else if http11 {
        b"1.1 modelgate"
    } else {
        b"1.0 modelgate"
    }
}

fn wants_trailers(fields: &Fields) -> bool {
    fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"te"))
        .flat_map(|(_, v)| v.split(|b| *b == b','))
        .any(|t| trim(t).eq_ignore_ascii_case(b"trailers"))
}

fn put_framing(out: &mut impl FieldSink, framing: BodyFraming) {
    match framing {
        BodyFraming::Length(n) => {
            let mut digits = [0u8; 20];
            let mut at = digits.len();
            let mut n = n;
            loop {
                at -= 1;
                digits[at] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            out.field(b"content-length", &digits[at..])
        }
        BodyFraming::Chunked => out.field(b"transfer-encoding", b"chunked"),
        BodyFraming::Empty | BodyFraming::UntilClose => {}
    }
}

pub fn put_field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Whether a `Content-Type` value's media type starts with `prefix` (ASCII case-insensitive,
/// leading spaces ignored), without allocating: the per-request checks use it.
pub fn media_type_starts_with(content_type: &[u8], prefix: &str) -> bool {
    let value = content_type.trim_ascii_start();
    value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// The media type of a `Content-Type` value without parameters, lower-cased.
pub fn media_type(content_type: &[u8]) -> String {
    let end = content_type
        .iter()
        .position(|&b| b == b';')
        .unwrap_or(content_type.len());
    String::from_utf8_lossy(&content_type[..end])
        .trim()
        .to_ascii_lowercase()
}
