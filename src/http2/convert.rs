//! HTTP/2 messages to and from the heads the pipeline works on.
//!
//! An HTTP/2 request becomes the same [`RequestHead`] an HTTP/1.1 request does, so routing,
//! admission, recording and forwarding see one shape. Fields going out are produced by the same
//! functions as HTTP/1.1 heads (`http::headers::{request_fields, response_fields}`) into a
//! header map, minus what HTTP/2 forbids (connection-specific fields, RFC 9113 §8.2.2) and with
//! `Host` carried as `:authority`.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::http::head::{BodyFraming, Fields, HeadError, HeadLimits, Method};
use crate::http::headers::Forwarding;
use crate::http::headers::{forbidden_in_trailer, request_fields, response_fields, FieldSink};
use crate::http::{RequestHead, ResponseHead};

/// HPACK's per-field overhead (RFC 7541 §4.1), used for the head size limit.
const FIELD_OVERHEAD: usize = 32;

/// The head of a request that arrived on an HTTP/2 stream. `end_of_stream`: HEADERS carried
/// END_STREAM, so there is no body.
pub fn request_head(
    parts: &http::request::Parts,
    end_of_stream: bool,
    limits: &HeadLimits,
) -> Result<RequestHead, HeadError> {
    if parts.method == http::Method::CONNECT {
        return Err(HeadError::Invalid("CONNECT is not supported"));
    }
    let path = match parts.uri.path_and_query() {
        Some(p) if p.as_str().starts_with('/') => p.as_str(),
        Some(p) if p.as_str() == "*" && parts.method == http::Method::OPTIONS => "*",
        _ => return Err(HeadError::Invalid("bad :path")),
    };
    if path.len() > limits.max_uri_bytes {
        return Err(HeadError::UriTooLong);
    }
    if parts.headers.len() > limits.max_headers {
        return Err(HeadError::TooLarge);
    }
    let head_len: usize = parts
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + FIELD_OVERHEAD)
        .sum();
    if head_len > limits.max_head_bytes {
        return Err(HeadError::TooLarge);
    }
    // Routing and the upstream must see the same authority: `:authority` and a `Host` field
    // that disagree (or several `Host` fields) are refused (RFC 9113 §8.3.1).
    let mut hosts = parts.headers.get_all(http::header::HOST).iter();
    let (host_field, extra) = (hosts.next(), hosts.next());
    if extra.is_some() {
        return Err(HeadError::Invalid("more than one host"));
    }
    let host = match (parts.uri.authority(), host_field.map(|h| h.to_str())) {
        (_, Some(Err(_))) => return Err(HeadError::Invalid("bad host")),
        (Some(a), Some(Ok(h))) if !a.as_str().eq_ignore_ascii_case(h) => {
            return Err(HeadError::Invalid("host disagrees with :authority"))
        }
        (Some(a), _) => a.as_str().to_owned(),
        (None, Some(Ok(h))) => h.to_owned(),
        (None, None) => String::new(),
    };
    let fields = fields_from_map(&parts.headers);
    // h2 itself refuses a body that disagrees with Content-Length (and Transfer-Encoding).
    let framing = match fields.get("content-length") {
        _ if end_of_stream => BodyFraming::Empty,
        Some(v) => match std::str::from_utf8(v).ok().and_then(|v| v.parse().ok()) {
            Some(n) => BodyFraming::Length(n),
            None => return Err(HeadError::Invalid("bad content-length")),
        },
        None => BodyFraming::Chunked,
    };
    Ok(RequestHead {
        method: Method::parse(parts.method.as_str()),
        path: path.into(),
        host,
        http11: true,
        h2: true,
        fields,
        framing,
        close: false,
        expect_continue: false,
        head_len,
    })
}

/// The head of a response from an HTTP/2 upstream.
pub fn response_head(
    parts: &http::response::Parts,
    end_of_stream: bool,
    method: &Method,
) -> ResponseHead {
    let fields = fields_from_map(&parts.headers);
    let status = parts.status.as_u16();
    let no_body = end_of_stream || *method == Method::Head || matches!(status, 204 | 304);
    let framing = match fields
        .get("content-length")
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
    {
        _ if no_body => BodyFraming::Empty,
        Some(n) => BodyFraming::Length(n),
        None => BodyFraming::Chunked,
    };
    ResponseHead {
        status,
        reason: parts.status.canonical_reason().unwrap_or("").into(),
        http11: true,
        h2: true,
        head_len: fields.iter().map(|(n, v)| n.len() + v.len() + 4).sum(),
        fields,
        framing,
        close: false,
    }
}

/// The request for an HTTP/2 upstream: the same fields an HTTP/1.1 upstream would get.
pub fn upstream_request(
    head: &RequestHead,
    framing: BodyFraming,
    fwd: &Forwarding<'_>,
    scheme: &str,
    fallback_authority: &str,
) -> Result<http::Request<()>, http::Error> {
    let mut sink = HeaderSink::default();
    request_fields(head, framing, fwd, &mut sink);
    let authority = match head.host.as_str() {
        "" => fallback_authority,
        host => host,
    };
    let mut request = http::Request::builder()
        .method(head.method.as_str())
        .uri(format!("{scheme}://{authority}{}", head.path))
        .version(http::Version::HTTP_2)
        .body(())?;
    *request.headers_mut() = sink.map;
    Ok(request)
}

/// The response for an HTTP/2 client.
pub fn client_response(
    res: &ResponseHead,
    framing: BodyFraming,
    request_id: &str,
) -> Result<http::Response<()>, http::Error> {
    let mut sink = HeaderSink::default();
    response_fields(res, framing, false, request_id, &mut sink);
    let mut response = http::Response::builder()
        .status(res.status)
        .version(http::Version::HTTP_2)
        .body(())?;
    *response.headers_mut() = sink.map;
    Ok(response)
}

/// Any header map as fields.
pub fn fields_from_map(map: &HeaderMap) -> Fields {
    Fields::from_pairs(
        map.iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
    )
}

/// Trailers for an HTTP/2 peer: the fields a trailer section may carry.
pub fn trailers_map(fields: &Fields) -> HeaderMap {
    let mut sink = HeaderSink::default();
    for (name, value) in fields.iter() {
        if !forbidden_in_trailer(name) {
            sink.field(name, value);
        }
    }
    sink.map
}

/// A header map built field by field, leaving out what an HTTP/2 message must not carry.
#[derive(Default)]
pub struct HeaderSink {
    pub map: HeaderMap,
}

impl FieldSink for HeaderSink {
    fn field(&mut self, name: &[u8], value: &[u8]) {
        const NOT_IN_H2: &[&str] = &[
            "connection",
            "host",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
        ];
        if NOT_IN_H2
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
        {
            return;
        }
        if name.eq_ignore_ascii_case(b"te") && !value.eq_ignore_ascii_case(b"trailers") {
            return;
        }
        // Every field here was validated on the way in; a name or value `http` still refuses
        // is dropped rather than forwarded half-formed.
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            self.map.append(n, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HeadLimits {
        HeadLimits {
            max_headers: 100,
            max_head_bytes: 64 * 1024,
            max_uri_bytes: 8192,
        }
    }

    fn parts(req: http::Request<()>) -> http::request::Parts {
        req.into_parts().0
    }

    #[test]
    fn an_h2_request_becomes_the_pipelines_head() {
        let req = http::Request::post("https://gw.example/v1/chat/completions?x=1")
            .header("content-type", "application/json")
            .header("content-length", "12")
            .header("authorization", "Bearer t")
            .body(())
            .unwrap();
        let head = request_head(&parts(req), false, &limits()).unwrap();
        assert_eq!(head.method, Method::Post);
        assert_eq!(&*head.path, "/v1/chat/completions?x=1");
        assert_eq!(head.host, "gw.example");
        assert_eq!(head.framing, BodyFraming::Length(12));
        assert_eq!(head.fields.get("authorization"), Some(&b"Bearer t"[..]));

        let req = http::Request::get("http://gw/x").body(()).unwrap();
        let head = request_head(&parts(req), true, &limits()).unwrap();
        assert_eq!(head.framing, BodyFraming::Empty);
        let req = http::Request::post("http://gw/x").body(()).unwrap();
        let head = request_head(&parts(req), false, &limits()).unwrap();
        assert_eq!(head.framing, BodyFraming::Chunked, "open-ended body");
    }

    #[test]
    fn split_cookies_reach_an_http1_server_as_one_line() {
        let req = http::Request::get("http://gw/x")
            .header("cookie", "a=1")
            .header("x-other", "v")
            .header("cookie", "b=2")
            .body(())
            .unwrap();
        let head = request_head(&parts(req), true, &limits()).unwrap();
        let fwd = Forwarding {
            client_ip: "127.0.0.1",
            proto: "http",
            request_id: "r1",
            drop: &[],
            identity: None,
            fallback_host: "models",
        };
        let mut out = bytes::BytesMut::new();
        crate::http::headers::encode_request_head(&head, BodyFraming::Empty, &fwd, &mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert_eq!(text.matches("cookie:").count(), 1, "{text}");
        assert!(text.contains("cookie: a=1; b=2\r\n"), "{text}");
        assert!(text.contains("x-other: v\r\n"), "{text}");
    }

    #[test]
    fn host_must_agree_with_authority() {
        let agree = http::Request::get("http://gw.example/x")
            .header("host", "GW.example")
            .body(())
            .unwrap();
        assert_eq!(
            request_head(&parts(agree), true, &limits()).unwrap().host,
            "gw.example"
        );
        let other = http::Request::get("http://open.example/x")
            .header("host", "internal.example")
            .body(())
            .unwrap();
        assert!(request_head(&parts(other), true, &limits()).is_err());
        let two = http::Request::get("http://gw/x")
            .header("host", "gw")
            .header("host", "gw")
            .body(())
            .unwrap();
        assert!(request_head(&parts(two), true, &limits()).is_err());
    }

    #[test]
    fn bad_h2_requests_are_refused() {
        let connect = http::Request::connect("http://gw:443").body(()).unwrap();
        assert!(request_head(&parts(connect), true, &limits()).is_err());
        let bad_len = http::Request::post("http://gw/x")
            .header("content-length", "12, 13")
            .body(())
            .unwrap();
        assert!(request_head(&parts(bad_len), false, &limits()).is_err());
        let mut many = http::Request::get("http://gw/x");
        for i in 0..101 {
            many = many.header(format!("x-h{i}"), "v");
        }
        let many = many.body(()).unwrap();
        assert_eq!(
            request_head(&parts(many), true, &limits()).err(),
            Some(HeadError::TooLarge)
        );
    }

    #[test]
    fn forwarded_fields_leave_out_what_h2_forbids() {
        let mut sink = HeaderSink::default();
        sink.field(b"Connection", b"close");
        sink.field(b"host", b"gw");
        sink.field(b"transfer-encoding", b"chunked");
        sink.field(b"te", b"gzip");
        sink.field(b"te", b"trailers");
        sink.field(b"X-Thing", b"1");
        let names: Vec<_> = sink.map.keys().map(|k| k.as_str().to_owned()).collect();
        assert_eq!(names, ["te", "x-thing"]);
        assert_eq!(sink.map["te"], "trailers");
    }

    #[test]
    fn trailers_keep_only_what_a_trailer_may_carry() {
        let fields = Fields::from_pairs(
            [
                (&b"grpc-status"[..], &b"0"[..]),
                (b"content-length", b"5"),
                (b"x-modelgate-identity", b"forged"),
            ]
            .into_iter(),
        );
        let map = trailers_map(&fields);
        assert_eq!(map.len(), 1);
        assert_eq!(map["grpc-status"], "0");
    }
}
