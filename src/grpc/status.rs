//! gRPC status: the codes, the `grpc-timeout` and `grpc-message` headers, and how the gateway's
//! own failures are told to a gRPC client.
//!
//! A gRPC client learns the outcome of a call from `grpc-status` (and `grpc-message`) in the
//! trailers, never from the HTTP status: a gateway that answers a gRPC call with `403` makes
//! the client report `PERMISSION_DENIED` only by the guesswork of the "HTTP to gRPC status code
//! mapping" table. So the gateway answers its own refusals with HTTP 200 and a Trailers-Only
//! response ([`trailers_only_response`]) carrying the code chosen by [`code_for`].
//!
//! Sources: gRPC `doc/PROTOCOL-HTTP2.md` (header grammar), `doc/statuscodes.md` (the codes and
//! which ones the library itself generates), `doc/http-grpc-status-mapping.md` (HTTP statuses
//! seen by a client), all in github.com/grpc/grpc.

use std::borrow::Cow;
use std::time::Duration;

use crate::error::ErrorKind;
use crate::masking::MaskError;

/// A gRPC status code. The numeric values are the wire values of `grpc-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

/// Every code, in numeric order (the index is the value).
const ALL: [Code; 17] = [
    Code::Ok,
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

impl Code {
    /// The wire value.
    pub fn value(self) -> u8 {
        self as u8
    }

    /// The canonical name, as gRPC libraries print it (and as logs should show it).
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// The code with this wire value, if there is one.
    pub fn from_value(v: u32) -> Option<Code> {
        usize::try_from(v).ok().and_then(|i| ALL.get(i).copied())
    }

    /// Reads a `grpc-status` value (an upstream's, for the access log and the recorder):
    /// decimal digits without leading zeros. A value that is not a known code is `UNKNOWN`,
    /// as a gRPC client would treat it; `None` means the header is malformed.
    pub fn parse(value: &[u8]) -> Option<Code> {
        let digits = match value {
            [] => return None,
            [b'0', _, ..] => return None,
            d if d.len() > 9 || !d.iter().all(u8::is_ascii_digit) => return None,
            d => d,
        };
        let n = digits
            .iter()
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
        Some(Code::from_value(n).unwrap_or(Code::Unknown))
    }

    /// What a gRPC client concludes from an HTTP status that came without `grpc-status`
    /// (`doc/http-grpc-status-mapping.md`): for an HTTP/1.1 upstream's error answered to a gRPC
    /// client. Never used in the other direction (the doc forbids it; the table is lossy).
    pub fn from_http_status(status: u16) -> Code {
        match status {
            400 | 431 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502..=504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The code a gRPC client gets for a request the gateway itself refused or failed.
///
/// The HTTP mapping table is for clients guessing from a status line, so it is a guide, not
/// the rule; where the gateway knows more (which side failed, and whether the upstream saw the
/// request) it says so with the code whose documented meaning fits, because the code decides
/// what the client does next: gRPC retry policies retry `UNAVAILABLE`, never
/// `DEADLINE_EXCEEDED`, `INVALID_ARGUMENT` or `PERMISSION_DENIED`.
pub fn code_for(kind: &ErrorKind) -> Code {
    match kind {
        // The caller's request itself is wrong (ambiguous framing, a body that contradicts the
        // model it was admitted for, a bad gRPC frame). The library says INTERNAL for a request
        // it cannot parse, and HTTP 400 maps to INTERNAL, but both describe a party that
        // cannot tell whose fault it is; the gateway can (Side::Downstream), and INTERNAL
        // would page the operators of a healthy server. INVALID_ARGUMENT: fix the request.
        ErrorKind::BadRequest(_) => Code::InvalidArgument,
        // Metadata or :path over a configured limit: "sent or received message was larger
        // than configured limit" is RESOURCE_EXHAUSTED in statuscodes.md.
        ErrorKind::HeaderTooLarge | ErrorKind::UriTooLong => Code::ResourceExhausted,
        // The client stalled its own request. A time limit expired before the call could
        // complete: DEADLINE_EXCEEDED. Not UNAVAILABLE, which would invite a retry that
        // stalls the same way and blames the server.
        ErrorKind::HeaderTimeout | ErrorKind::BodyTimeout => Code::DeadlineExceeded,
        // The caller went away; the status will rarely be read, but it is what happened.
        ErrorKind::ClientClosed(_) => Code::Cancelled,
        // No route for this :path is "method not found at server" (and 404 → UNIMPLEMENTED).
        ErrorKind::NoRoute => Code::Unimplemented,
        // The upstream could not be reached or dropped the call: transient, and the client's
        // retry policy (and GOAWAY/REFUSED_STREAM semantics) treat it as retryable.
        ErrorKind::ConnectFailed(_) | ErrorKind::UpstreamClosed(_) => Code::Unavailable,
        // The gateway's own upstream timeouts: UNAVAILABLE, as 504 maps in the HTTP table.
        // DEADLINE_EXCEEDED belongs to the caller's deadline (`grpc-timeout`): a client whose
        // deadline is far off must not be told its deadline passed, and should be free to retry
        // elsewhere. When it is the `grpc-timeout` that expires, the caller of this function
        // is `ErrorKind::DeadlineExceeded`.
        ErrorKind::ConnectTimeout | ErrorKind::FirstByteTimeout | ErrorKind::UpstreamIdle => {
            Code::Unavailable
        }
        // The upstream answered something that is not valid HTTP/gRPC: a protocol violation,
        // which gRPC reports as INTERNAL ("error parsing response", RST_STREAM PROTOCOL_ERROR).
        // Not UNAVAILABLE: retrying against a broken server does not help.
        ErrorKind::BadResponse(_) => Code::Internal,
        // A `block` detector matched: the content is not permitted (as 403).
        ErrorKind::Masking(MaskError::Blocked { .. }) => Code::PermissionDenied,
        // Scanning failed and masking failed closed: the gateway's own fault.
        ErrorKind::Masking(_) => Code::Internal,
        // A dependency of the gateway is down; the request may succeed later.
        ErrorKind::RecorderUnavailable | ErrorKind::IdentityUnavailable => Code::Unavailable,
        ErrorKind::Unauthenticated(_) => Code::Unauthenticated,
        // Denied by policy; a hold without an approver is still "you may not, as things stand".
        ErrorKind::Forbidden(_) | ErrorKind::ApprovalRequired(_) => Code::PermissionDenied,
        // The caller's `grpc-timeout` expired.
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
    }
}

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits, then one unit of `H` (hours), `M`
/// (minutes), `S` (seconds), `m` (milliseconds), `u` (microseconds), `n` (nanoseconds).
/// Anything else (signs, spaces, a ninth digit, other units) is `None`.
///
/// `0` is accepted although the grammar says "positive": grpc-go and grpc-core accept it, and
/// it means the deadline has already passed (answer DEADLINE_EXCEEDED), which is safer than
/// ignoring the header and running without a deadline.
pub fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // At most 99,999,999: fits u64 in every unit, and hours fit Duration's seconds.
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Percent-encodes a `grpc-message` value: the message as UTF-8, with every byte outside
/// 0x20..=0x7E, and `%` itself, written as `%XX` (uppercase hex). Borrowed when nothing needs
/// encoding, which is the common case.
pub fn encode_message(message: &str) -> Cow<'_, str> {
    let plain = |b: u8| (0x20..=0x7e).contains(&b) && b != b'%';
    if message.bytes().all(plain) {
        return Cow::Borrowed(message);
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(message.len() + 16);
    for b in message.bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    Cow::Owned(out)
}

/// Decodes a `grpc-message` value (an upstream's, for logs). The spec says a decoder must not
/// fail or drop the message: a broken `%` escape is kept as it is, and bytes that are not UTF-8
/// after decoding become U+FFFD.
pub fn decode_message(value: &[u8]) -> Cow<'_, str> {
    if !value.contains(&b'%') {
        return String::from_utf8_lossy(value);
    }
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while let Some(&b) = value.get(i) {
        let escaped = match (b, value.get(i + 1), value.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex(h).zip(hex(l)),
            _ => None,
        };
        match escaped {
            Some((h, l)) => {
                // Two hex digits: at most 0xFF.
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// The header block of a Trailers-Only response: the whole answer to a call the gateway ends
/// itself, sent as one HEADERS frame with END_STREAM. `:status` is listed for completeness;
/// with `h2` it goes in the `http::Response`'s status, the rest in its headers. An empty
/// message is left out (`grpc-message` is optional).
pub fn trailers_only_response(code: Code, message: &str) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        (":status", "200".to_string()),
        ("content-type", "application/grpc".to_string()),
        ("grpc-status", code.value().to_string()),
    ];
    if !message.is_empty() {
        headers.push(("grpc-message", encode_message(message).into_owned()));
    }
    headers
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Arc;

    use super::*;
    use crate::identity::AuthError;

    #[test]
    fn codes_have_their_wire_values_and_names() {
        for (i, code) in ALL.iter().enumerate() {
            assert_eq!(usize::from(code.value()), i);
            assert_eq!(Code::from_value(i as u32), Some(*code));
        }
        assert_eq!(Code::from_value(17), None);
        assert_eq!(Code::Unauthenticated.value(), 16);
        assert_eq!(Code::Unavailable.name(), "UNAVAILABLE");
        assert_eq!(Code::DeadlineExceeded.to_string(), "DEADLINE_EXCEEDED");
        assert_eq!(Code::Ok.name(), "OK");
    }

    #[test]
    fn grpc_status_values_parse_strictly_and_unknown_codes_are_unknown() {
        assert_eq!(Code::parse(b"0"), Some(Code::Ok));
        assert_eq!(Code::parse(b"14"), Some(Code::Unavailable));
        assert_eq!(Code::parse(b"99"), Some(Code::Unknown));
        assert_eq!(Code::parse(b"999999999"), Some(Code::Unknown));
        for bad in [&b""[..], b"07", b"-1", b" 1", b"1 ", b"0x1", b"1234567890"] {
            assert_eq!(Code::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn http_statuses_map_as_the_grpc_table_says() {
        assert_eq!(Code::from_http_status(400), Code::Internal);
        assert_eq!(Code::from_http_status(431), Code::Internal);
        assert_eq!(Code::from_http_status(401), Code::Unauthenticated);
        assert_eq!(Code::from_http_status(403), Code::PermissionDenied);
        assert_eq!(Code::from_http_status(404), Code::Unimplemented);
        for s in [429, 502, 503, 504] {
            assert_eq!(Code::from_http_status(s), Code::Unavailable);
        }
        for s in [200, 500, 501, 408] {
            assert_eq!(Code::from_http_status(s), Code::Unknown);
        }
    }

    #[test]
    fn every_gateway_error_has_the_documented_code() {
        let io = || io::Error::from(io::ErrorKind::ConnectionReset);
        let cases = [
            (ErrorKind::BadRequest("x"), Code::InvalidArgument),
            (ErrorKind::HeaderTooLarge, Code::ResourceExhausted),
            (ErrorKind::UriTooLong, Code::ResourceExhausted),
            (ErrorKind::HeaderTimeout, Code::DeadlineExceeded),
            (ErrorKind::BodyTimeout, Code::DeadlineExceeded),
            (ErrorKind::ClientClosed(io()), Code::Cancelled),
            (ErrorKind::NoRoute, Code::Unimplemented),
            (ErrorKind::ConnectFailed(io()), Code::Unavailable),
            (ErrorKind::ConnectTimeout, Code::Unavailable),
            (ErrorKind::FirstByteTimeout, Code::Unavailable),
            (ErrorKind::UpstreamIdle, Code::Unavailable),
            (ErrorKind::UpstreamClosed(io()), Code::Unavailable),
            (ErrorKind::BadResponse("x"), Code::Internal),
            (
                ErrorKind::Masking(MaskError::Blocked {
                    detector: "d".into(),
                    category: "c".into(),
                }),
                Code::PermissionDenied,
            ),
            (ErrorKind::Masking(MaskError::Poisoned), Code::Internal),
            (ErrorKind::RecorderUnavailable, Code::Unavailable),
            (
                ErrorKind::Unauthenticated(AuthError::Missing),
                Code::Unauthenticated,
            ),
            (ErrorKind::IdentityUnavailable, Code::Unavailable),
            (ErrorKind::Forbidden(Arc::from("r")), Code::PermissionDenied),
            (
                ErrorKind::ApprovalRequired(Arc::from("r")),
                Code::PermissionDenied,
            ),
        ];
        for (kind, code) in cases {
            assert_eq!(code_for(&kind), code, "{kind:?}");
        }
    }

    #[test]
    fn timeouts_parse_in_every_unit() {
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_timeout(b"30S"), Some(Duration::from_secs(30)));
        assert_eq!(parse_timeout(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout(b"5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_timeout(b"10n"), Some(Duration::from_nanos(10)));
        assert_eq!(parse_timeout(b"0S"), Some(Duration::ZERO));
        assert_eq!(parse_timeout(b"00000007m"), Some(Duration::from_millis(7)));
        assert_eq!(
            parse_timeout(b"99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
    }

    #[test]
    fn malformed_timeouts_are_refused() {
        for bad in [
            &b""[..],
            b"S",
            b"1",
            b"123456789S",
            b"1s",
            b"1h",
            b"1ms",
            b"-1S",
            b"+1S",
            b" 1S",
            b"1S ",
            b"1.5S",
            b"1 S",
            b"\xff1S",
            b"1\xc2\xb5",
        ] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn messages_are_percent_encoded_outside_printable_ascii_and_percent() {
        assert!(matches!(
            encode_message("denied by policy rule \"r1\""),
            Cow::Borrowed(_)
        ));
        assert_eq!(encode_message("100% sure"), "100%25 sure");
        assert_eq!(encode_message("a\nb\tc"), "a%0Ab%09c");
        assert_eq!(encode_message("\x7f~ "), "%7F~ ");
        assert_eq!(encode_message("résumé ✓"), "r%C3%A9sum%C3%A9 %E2%9C%93");
    }

    #[test]
    fn decoding_round_trips_and_keeps_broken_escapes() {
        for s in ["plain", "100% sure", "line\nbreak", "résumé ✓", "%", "%%41"] {
            assert_eq!(decode_message(encode_message(s).as_bytes()), s);
        }
        assert_eq!(decode_message(b"%41%4a%zz%4"), "AJ%zz%4");
        assert_eq!(decode_message(b"bad %FF byte"), "bad \u{fffd} byte");
    }

    #[test]
    fn a_trailers_only_response_carries_status_and_encoded_message() {
        let h = trailers_only_response(Code::PermissionDenied, "denied: 100%");
        assert_eq!(
            h,
            vec![
                (":status", "200".to_string()),
                ("content-type", "application/grpc".to_string()),
                ("grpc-status", "7".to_string()),
                ("grpc-message", "denied: 100%25".to_string()),
            ]
        );
        let h = trailers_only_response(Code::Unavailable, "");
        assert_eq!(h.len(), 3);
        assert_eq!(h[2], ("grpc-status", "14".to_string()));
    }
}
