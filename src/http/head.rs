//! HTTP/1.1 message heads: strict parsing of requests (from clients) and responses (from
//! upstreams), and the framing decision that follows from them.
//!
//! The parsed head keeps the raw bytes it came from (`Bytes`, shared with the read buffer) and
//! records header names and values as ranges into them, so parsing allocates one small `Vec`.
//!
//! Strictness is deliberate. Request smuggling lives in the gap between two parsers that frame a
//! message differently, so every input that two correct implementations could read differently is
//! refused here: `Content-Length` together with `Transfer-Encoding`, repeated or list-valued
//! `Content-Length`, transfer codings other than a lone `chunked`, obs-fold, control bytes in
//! values, whitespace before the colon, odd request targets. The caller turns a [`HeadError`]
//! into 400/414/431 and closes the connection.

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::rc::Rc;

use bytes::Bytes;

/// Why a head was refused. Each variant maps to one status code in `pipeline::rescue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Malformed or ambiguous message: 400 (502 when an upstream sent it).
    Invalid(&'static str),
    /// More header fields, or more head bytes, than the configured limit: 431.
    TooLarge,
    /// The request-target is longer than the configured limit: 414.
    UriTooLong,
}

/// Limits applied while parsing a request head. Copied out of the config once per connection.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_headers: usize,
    pub max_head_bytes: usize,
    pub max_uri_bytes: usize,
}

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body at all (requests without framing headers, HEAD responses, 1xx/204/304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Response body runs until the upstream closes the connection.
    UntilClose,
}

/// One header as ranges into the head's bytes.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub(crate) name: Range<usize>,
    pub(crate) value: Range<usize>,
}

/// Header fields of a parsed head, borrowed from its raw bytes.
#[derive(Debug, Clone)]
pub struct Fields {
    raw: Bytes,
    fields: Vec<Field>,
}

impl Fields {
    /// Fields from name/value pairs (an HTTP/2 header map), laid out as a parsed head's are.
    pub fn from_pairs<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Fields {
        let mut raw = Vec::new();
        let mut fields = Vec::new();
        for (name, value) in pairs {
            let n = raw.len();
            raw.extend_from_slice(name);
            let v = raw.len();
            raw.extend_from_slice(value);
            fields.push(Field {
                name: n..v,
                value: v..raw.len(),
            });
        }
        Fields {
            raw: Bytes::from(raw),
            fields,
        }
    }

    pub(crate) fn from_parts(raw: Bytes, fields: Vec<Field>) -> Self {
        Fields { raw, fields }
    }

    /// All fields in order, as (name, value) byte slices.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.fields
            .iter()
            .map(|f| (&self.raw[f.name.clone()], &self.raw[f.value.clone()]))
    }

    /// The value of the first field called `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// How many fields are called `name`.
    pub fn count(&self, name: &str) -> usize {
        self.iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .count()
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// A validated request head.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    /// Origin-form path and query (absolute-form targets are reduced to this).
    /// Shared with the request context (the access log), not copied.
    pub path: Rc<str>,
    /// Authority from an absolute-form target or the single `Host` field; empty for HTTP/1.0
    /// requests without one.
    pub host: String,
    /// `true` for HTTP/1.1 (and HTTP/2), `false` for HTTP/1.0.
    pub http11: bool,
    /// The message came over HTTP/2 (`Via` says `2`).
    pub h2: bool,
    pub fields: Fields,
    pub framing: BodyFraming,
    /// The client asked to close after this exchange (or is HTTP/1.0 without keep-alive).
    pub close: bool,
    pub expect_continue: bool,
    /// Size of the head on the wire, for accounting.
    pub head_len: usize,
}

/// Request methods the gateway distinguishes; everything else is carried as `Other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Other(String),
}

impl Method {
    pub fn parse(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Patch => "PATCH",
            Method::Other(s) => s,
        }
    }
}

/// A validated response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    /// Usually a canonical phrase, kept without an allocation.
    pub reason: Cow<'static, str>,
    pub http11: bool,
    /// The message came over HTTP/2 (`Via` says `2`).
    pub h2: bool,
    pub fields: Fields,
    pub framing: BodyFraming,
    /// The upstream will close after this response.
    pub close: bool,
    pub head_len: usize,
}

/// Parses a request head from the start of `buf`.
///
/// `Ok(None)` means "need more bytes" (and the buffer is still within limits). On success the
/// head's bytes are split off the front of `buf`.
pub fn parse_request(
    buf: &mut bytes::BytesMut,
    limits: &HeadLimits,
) -> Result<Option<RequestHead>, HeadError> {
    // Leading empty lines before a request line are allowed (RFC 9112 §2.2) but bound them.
    let skip = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    if skip > 0 {
        let _ = buf.split_to(skip);
    }
    // Uninitialised storage: zeroing 256 header slots per request is measurable.
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 256];
    let mut req = httparse::Request::new(&mut []);
    let slots = &mut storage[..limits.max_headers.min(256)];
    let status = match req.parse_with_uninit_headers(buf, slots) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => return Err(HeadError::Invalid(httparse_reason(e))),
    };
    let head_len = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => {
            if !buf.contains(&b'\n') && buf.len() > limits.max_uri_bytes + 32 {
                return Err(HeadError::UriTooLong);
            }
            if buf.len() > limits.max_head_bytes {
                return Err(HeadError::TooLarge);
            }
            return Ok(None);
        }
    };
    if head_len > limits.max_head_bytes {
        return Err(HeadError::TooLarge);
    }
    let method = Method::parse(req.method.unwrap_or(""));
    let target = req.path.unwrap_or("");
    if target.len() > limits.max_uri_bytes {
        return Err(HeadError::UriTooLong);
    }
    let target = parse_target(&method, target)?;
    let http11 = req.version == Some(1);
    let ranges = field_ranges(buf, req.headers)?;
    let fields = Fields {
        raw: buf.split_to(head_len).freeze(),
        fields: ranges,
    };
    let host = match (target.authority, fields.count("host")) {
        (_, n) if n > 1 => return Err(HeadError::Invalid("more than one Host field")),
        (Some(a), _) => a,
        (None, 1) => {
            let h = fields.get("host").unwrap_or_default();
            valid_authority(h)?;
            String::from_utf8_lossy(h).into_owned()
        }
        (None, _) if http11 => return Err(HeadError::Invalid("HTTP/1.1 request without Host")),
        (None, _) => String::new(),
    };
    let framing = request_framing(&fields, http11)?;
    let connection = connection_tokens(&fields);
    let close = connection.close || (!http11 && !connection.keep_alive);
    let expect_continue = match fields.get("expect") {
        Some(v) if v.eq_ignore_ascii_case(b"100-continue") => http11,
        Some(_) => return Err(HeadError::Invalid("unsupported Expect value")),
        None => false,
    };
    Ok(Some(RequestHead {
        method,
        path: target.path,
        host,
        http11,
        h2: false,
        fields,
        framing,
        close,
        expect_continue,
        head_len,
    }))
}

/// Parses a response head from the start of `buf`; `request_method` decides whether a body
/// follows (HEAD responses have none).
pub fn parse_response(
    buf: &mut bytes::BytesMut,
    max_head_bytes: usize,
    request_method: &Method,
) -> Result<Option<ResponseHead>, HeadError> {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 256];
    let mut res = httparse::Response::new(&mut []);
    let status = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        buf,
        &mut storage,
    ) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => return Err(HeadError::Invalid(httparse_reason(e))),
    };
    let head_len = match status {
        httparse::Status::Complete(n) if n <= max_head_bytes => n,
        httparse::Status::Partial if buf.len() <= max_head_bytes => return Ok(None),
        _ => return Err(HeadError::TooLarge),
    };
    let code = res.code.unwrap_or(0);
    let reason = match res.reason.unwrap_or("") {
        "OK" => Cow::Borrowed("OK"),
        other => Cow::Owned(other.to_owned()),
    };
    let http11 = res.version == Some(1);
    let ranges = field_ranges(buf, res.headers)?;
    let fields = Fields {
        raw: buf.split_to(head_len).freeze(),
        fields: ranges,
    };
    let no_body =
        *request_method == Method::Head || (100..200).contains(&code) || code == 204 || code == 304;
    let framing = if no_body {
        BodyFraming::Empty
    } else {
        message_framing(&fields)?.unwrap_or(BodyFraming::UntilClose)
    };
    let connection = connection_tokens(&fields);
    let close = connection.close
        || (!http11 && !connection.keep_alive)
        || framing == BodyFraming::UntilClose;
    Ok(Some(ResponseHead {
        status: code,
        reason,
        http11,
        h2: false,
        fields,
        framing,
        close,
        head_len,
    }))
}

/// Field ranges relative to `buf`'s start, checked for bytes httparse lets through.
pub(crate) fn field_ranges(
    buf: &[u8],
    headers: &[httparse::Header<'_>],
) -> Result<Vec<Field>, HeadError> {
    let base = buf.as_ptr() as usize;
    let mut fields = Vec::with_capacity(headers.len());
    for h in headers {
        // httparse accepts some controls in values; we only allow HTAB, SP, visible ASCII and
        // obs-text, so nothing downstream can be tricked by a NUL or a bare CR.
        // A fold without early exit, so it vectorizes: bearer tokens make values long.
        let bad = h.value.iter().fold(false, |bad, &b| {
            bad | ((b < 0x20) & (b != b'\t')) | (b == 0x7f)
        });
        if bad {
            return Err(HeadError::Invalid("control character in header value"));
        }
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        fields.push(Field {
            name: name..name + h.name.len(),
            value: value..value + h.value.len(),
        });
    }
    Ok(fields)
}

fn httparse_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name (whitespace before colon, obs-fold?)",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status line",
        httparse::Error::Token => "invalid token in request line",
        httparse::Error::Version => "unsupported HTTP version",
        httparse::Error::TooManyHeaders => "too many headers",
    }
}

struct Target {
    path: Rc<str>,
    authority: Option<String>,
}

/// Accepts origin-form, absolute-form with an http(s) scheme, and `*` for OPTIONS only.
fn parse_target(method: &Method, target: &str) -> Result<Target, HeadError> {
    if target.contains('#') {
        return Err(HeadError::Invalid("fragment in request-target"));
    }
    if matches!(method, Method::Other(m) if m == "CONNECT") {
        return Err(HeadError::Invalid("CONNECT is not supported"));
    }
    if target == "*" {
        return match method {
            Method::Options => Ok(Target {
                path: "*".into(),
                authority: None,
            }),
            _ => Err(HeadError::Invalid(
                "asterisk-form is only valid for OPTIONS",
            )),
        };
    }
    if target.starts_with('/') {
        return Ok(Target {
            path: target.into(),
            authority: None,
        });
    }
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &target[7..]
    } else if lower.starts_with("https://") {
        &target[8..]
    } else {
        return Err(HeadError::Invalid(
            "request-target is not origin- or absolute-form",
        ));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], &rest[i..]),
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    valid_authority(authority.as_bytes())?;
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    Ok(Target {
        path: path.into(),
        authority: Some(authority.to_owned()),
    })
}

/// host[:port] with no userinfo, no whitespace, not empty.
fn valid_authority(a: &[u8]) -> Result<(), HeadError> {
    if a.is_empty() {
        return Err(HeadError::Invalid("empty authority"));
    }
    if a.contains(&b'@') {
        return Err(HeadError::Invalid("userinfo in authority"));
    }
    let ok = a.iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']' | b'~' | b'%')
    });
    if !ok {
        return Err(HeadError::Invalid("invalid character in authority"));
    }
    Ok(())
}

/// Request framing: a missing framing header means no body (RFC 9112 §6.3 rule 7).
fn request_framing(fields: &Fields, http11: bool) -> Result<BodyFraming, HeadError> {
    match message_framing(fields)? {
        Some(BodyFraming::Chunked) if !http11 => Err(HeadError::Invalid(
            "Transfer-Encoding in an HTTP/1.0 request",
        )),
        Some(f) => Ok(f),
        None => Ok(BodyFraming::Empty),
    }
}

/// `Some(framing)` from `Content-Length` / `Transfer-Encoding`, `None` when neither is present.
fn message_framing(fields: &Fields) -> Result<Option<BodyFraming>, HeadError> {
    let te = fields.count("transfer-encoding");
    let cl = fields.count("content-length");
    match (te, cl) {
        (0, 0) => Ok(None),
        (_, 1..) if te > 0 => Err(HeadError::Invalid(
            "both Content-Length and Transfer-Encoding",
        )),
        (1, 0) => {
            let v = fields.get("transfer-encoding").unwrap_or_default();
            if trim(v).eq_ignore_ascii_case(b"chunked") {
                Ok(Some(BodyFraming::Chunked))
            } else {
                Err(HeadError::Invalid(
                    "Transfer-Encoding other than a lone chunked",
                ))
            }
        }
        (_, 0) => Err(HeadError::Invalid("more than one Transfer-Encoding field")),
        (0, 1) => {
            let v = fields.get("content-length").unwrap_or_default();
            parse_length(v).map(|n| Some(BodyFraming::Length(n)))
        }
        _ => Err(HeadError::Invalid("more than one Content-Length field")),
    }
}

/// Digits only, at most 18 of them (so it fits in a u64 without overflow checks elsewhere).
fn parse_length(v: &[u8]) -> Result<u64, HeadError> {
    let v = trim(v);
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::Invalid("invalid Content-Length"));
    }
    Ok(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

#[derive(Default)]
struct ConnectionTokens {
    close: bool,
    keep_alive: bool,
}

fn connection_tokens(fields: &Fields) -> ConnectionTokens {
    let mut t = ConnectionTokens::default();
    for (name, value) in fields.iter() {
        if !name.eq_ignore_ascii_case(b"connection") {
            continue;
        }
        for token in value.split(|b| *b == b',') {
            let token = trim(token);
            t.close |= token.eq_ignore_ascii_case(b"close");
            t.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    t
}

pub(crate) fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_headers: 16,
        max_head_bytes: 1024,
        max_uri_bytes: 64,
    };

    fn req(raw: &str) -> Result<Option<RequestHead>, HeadError> {
        parse_request(&mut BytesMut::from(raw), &LIMITS)
    }

    #[test]
    fn accepts_a_plain_request_and_reads_its_framing() {
        let h = req("POST /v1/chat HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, BodyFraming::Length(12));
        assert_eq!((h.host.as_str(), &*h.path), ("a", "/v1/chat"));
        let h = req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, BodyFraming::Chunked);
    }

    #[test]
    fn reduces_absolute_form_to_origin_form_and_takes_its_authority() {
        let h = req("GET http://models.local:8000?x=1 HTTP/1.1\r\nHost: other\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.host.as_str(), &*h.path), ("models.local:8000", "/?x=1"));
    }

    #[test]
    fn waits_for_more_bytes_on_a_partial_head() {
        assert!(req("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
    }

    #[test]
    fn refuses_every_ambiguous_or_malformed_head() {
        let cases = [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET /#frag HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://user@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        ];
        for raw in cases {
            assert!(
                matches!(req(raw), Err(HeadError::Invalid(_))),
                "accepted: {raw:?} -> {:?}",
                req(raw)
            );
        }
    }

    #[test]
    fn enforces_size_limits_with_the_right_error() {
        let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(100));
        assert_eq!(req(&long_uri).unwrap_err(), HeadError::UriTooLong);
        let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", "X: y\r\n".repeat(20));
        assert_eq!(req(&many).unwrap_err(), HeadError::TooLarge);
        let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n", "y".repeat(2000));
        assert_eq!(req(&big).unwrap_err(), HeadError::TooLarge);
    }

    #[test]
    fn response_without_length_runs_until_close_except_where_no_body_is_allowed() {
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\n\r\nbody");
        let res = parse_response(&mut buf, 1024, &Method::Get)
            .unwrap()
            .unwrap();
        assert_eq!((res.framing, res.close), (BodyFraming::UntilClose, true));
        assert_eq!(&buf[..], b"body");
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n");
        let res = parse_response(&mut buf, 1024, &Method::Head)
            .unwrap()
            .unwrap();
        assert_eq!(res.framing, BodyFraming::Empty);
        let mut buf = BytesMut::from("HTTP/1.1 204 No Content\r\n\r\n");
        let res = parse_response(&mut buf, 1024, &Method::Get)
            .unwrap()
            .unwrap();
        assert_eq!((res.framing, res.close), (BodyFraming::Empty, false));
    }
}
