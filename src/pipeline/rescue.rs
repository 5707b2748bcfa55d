//! The one place where errors become responses.
//!
//! Before the response head went out, the client gets a JSON error with the status the error
//! maps to. After it, nothing can be said any more: the connection is closed without the
//! terminal chunk (or short of `Content-Length`), which every HTTP client reports as an
//! incomplete response rather than mistaking a cut stream for a complete one.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use super::{Next, Outcome, RequestCtx};
use crate::config::Config;
use crate::conn::Conn;
use crate::error::{Error, ErrorKind, Side};
use crate::identity::AuthError;

/// Answers (or ends) the request after `err` and says whether the connection can go on.
pub async fn rescue(
    ctx: &mut RequestCtx,
    client: &mut Conn,
    err: Error,
    config: &Config,
    must_close: bool,
) -> Next {
    ctx.outcome = match (&err.side, &err.kind) {
        (_, ErrorKind::ClientClosed(_)) => Outcome::ClientGone,
        (_, ErrorKind::Masking(_)) => Outcome::Blocked,
        (Side::Upstream, _) => Outcome::UpstreamFailed,
        _ => Outcome::Rejected,
    };
    ctx.error = Some(err.to_string());
    if ctx.response_started {
        tracing::warn!(request_id = %ctx.request_id, error = %err, side = ?err.side, "response cut short");
        return Next::Close;
    }
    if let ErrorKind::ClientClosed(_) = err.kind {
        return Next::Close;
    }
    if err.side == Side::Upstream {
        tracing::warn!(request_id = %ctx.request_id, upstream = ctx.upstream.as_deref().unwrap_or("-"), error = %err, cause = ?err.kind, "upstream failed");
    }
    // A body still in flight cannot be skipped reliably, and a client that sent garbage or
    // stalled gets no second chance: close rather than guess where the next request starts.
    let client_at_fault = err.side == Side::Downstream
        && !matches!(
            err.kind,
            ErrorKind::NoRoute
                | ErrorKind::Unauthenticated(_)
                | ErrorKind::Forbidden(_)
                | ErrorKind::ApprovalRequired(_)
        );
    // A blocked exchange ends the conversation too: the upstream body was abandoned mid-way.
    let blocked = matches!(err.kind, ErrorKind::Masking(_));
    let next = if ctx.request_done && !must_close && !client_at_fault && !blocked {
        Next::KeepAlive
    } else {
        Next::Close
    };
    let response = error_response(&err, &ctx.request_id, next == Next::Close);
    ctx.status = err.status().0;
    ctx.bytes_out += response.len() as u64;
    let _ = client.write(response, write_limit(config)).await;
    next
}

fn write_limit(config: &Config) -> Duration {
    config.timeouts.body_idle
}

/// A complete HTTP/1.1 error response with the JSON body
/// `{"error":{"type":…,"message":…,"request_id":…}}`.
pub fn error_response(err: &Error, request_id: &str, close: bool) -> Bytes {
    let (status, kind) = err.status();
    let body = format!(
        "{{\"error\":{{\"type\":\"{kind}\",\"message\":{},\"request_id\":{}}}}}\n",
        json_string(&err.to_string()),
        json_string(request_id)
    );
    let mut out = BytesMut::with_capacity(body.len() + 200);
    out.put_slice(format!("HTTP/1.1 {status} {}\r\n", reason(status)).as_bytes());
    out.put_slice(b"content-type: application/json\r\n");
    out.put_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    out.put_slice(format!("x-request-id: {request_id}\r\n").as_bytes());
    // RFC 6750 §3: a missing token gets the bare challenge, a bad one `invalid_token` and
    // nothing more specific.
    match &err.kind {
        ErrorKind::Unauthenticated(AuthError::Missing) => {
            out.put_slice(b"www-authenticate: Bearer realm=\"modelgate\"\r\n")
        }
        ErrorKind::Unauthenticated(_) => out.put_slice(
            b"www-authenticate: Bearer realm=\"modelgate\", error=\"invalid_token\"\r\n",
        ),
        _ => {}
    }
    if close {
        out.put_slice(b"connection: close\r\n");
    }
    out.put_slice(b"\r\n");
    out.put_slice(body.as_bytes());
    out.freeze()
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}
