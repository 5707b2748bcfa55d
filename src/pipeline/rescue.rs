//! The one place where errors become responses.
//!
//! Before the response head went out, the client gets a JSON error with the status the error
//! maps to. After it, nothing can be said any more: the connection is closed without the
//! terminal chunk (or short of `Content-Length`), which every HTTP client reports as an
//! incomplete response rather than mistaking a cut stream for a complete one.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use super::{Client, Next, Outcome, RequestCtx};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Side};
use crate::grpc::status::{code_for, trailers_only_response};
use crate::http2::stream::H2Send;
use crate::identity::AuthError;

/// Answers (or ends) the request after `err` and says whether the connection can go on.
pub async fn rescue(
    ctx: &mut RequestCtx,
    client: &mut Client<'_>,
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
    let client = match client {
        Client::H1(conn) => conn,
        Client::H2(x) => {
            rescue_h2(ctx, &mut x.send, &err).await;
            return Next::Close;
        }
    };
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

/// The same for an HTTP/2 stream. A gRPC call always ends with a status: Trailers-Only before
/// the response head, trailers after it, so the client reads a code rather than a reset.
async fn rescue_h2(ctx: &mut RequestCtx, send: &mut H2Send, err: &Error) {
    if err.side == Side::Upstream {
        tracing::warn!(request_id = %ctx.request_id, upstream = ctx.upstream.as_deref().unwrap_or("-"), error = %err, cause = ?err.kind, "upstream failed");
    }
    let respond = match std::mem::replace(send, H2Send::Done) {
        H2Send::Waiting(r) | H2Send::Head(r, _) => r,
        H2Send::Body(mut stream) if ctx.grpc => {
            let (code, message) = (code_for(&err.kind), err.to_string());
            ctx.grpc_status = Some(code);
            let mut trailers = http::HeaderMap::new();
            for (name, value) in trailers_only_response(code, &message).into_iter().skip(2) {
                if let Ok(v) = http::HeaderValue::from_str(&value) {
                    trailers.insert(name, v);
                }
            }
            let _ = stream.send_trailers(trailers);
            return;
        }
        mut started @ (H2Send::Opened(_) | H2Send::Body(_)) => {
            tracing::warn!(request_id = %ctx.request_id, error = %err, side = ?err.side, "response cut short");
            started.reset();
            return;
        }
        H2Send::Done => return,
    };
    let mut respond = respond;
    if let ErrorKind::ClientClosed(_) = err.kind {
        respond.send_reset(h2::Reason::CANCEL);
        return;
    }
    let (status, fields, body) = if ctx.grpc {
        let code = code_for(&err.kind);
        ctx.grpc_status = Some(code);
        let mut fields = trailers_only_response(code, &err.to_string());
        fields.remove(0); // :status goes in the response's status
        (200, fields, None)
    } else {
        let (status, _) = err.status();
        let mut fields = vec![("content-type", "application/json".to_string())];
        if let Some(challenge) = challenge(&err.kind) {
            fields.push(("www-authenticate", challenge.to_string()));
        }
        (status, fields, Some(error_body(err, &ctx.request_id)))
    };
    ctx.status = if ctx.grpc { 200 } else { status };
    let mut response = http::Response::new(());
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
    let headers = response.headers_mut();
    for (name, value) in fields
        .into_iter()
        .chain([("x-request-id", ctx.request_id.clone())])
    {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    let Some(body) = body else {
        let _ = respond.send_response(response, true);
        return;
    };
    ctx.bytes_out += body.len() as u64;
    if let Ok(mut stream) = respond.send_response(response, false) {
        let _ = stream.send_data(Bytes::from(body), true);
    }
}

fn write_limit(config: &Config) -> Duration {
    config.timeouts.body_idle
}

/// A complete HTTP/1.1 error response with the JSON body
/// `{"error":{"type":…,"message":…,"request_id":…}}`.
pub fn error_response(err: &Error, request_id: &str, close: bool) -> Bytes {
    let (status, _) = err.status();
    let body = error_body(err, request_id);
    let mut out = BytesMut::with_capacity(body.len() + 200);
    out.put_slice(format!("HTTP/1.1 {status} {}\r\n", reason(status)).as_bytes());
    out.put_slice(b"content-type: application/json\r\n");
    out.put_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    out.put_slice(format!("x-request-id: {request_id}\r\n").as_bytes());
    if let Some(challenge) = challenge(&err.kind) {
        out.put_slice(b"www-authenticate: ");
        out.put_slice(challenge.as_bytes());
        out.put_slice(b"\r\n");
    }
    if close {
        out.put_slice(b"connection: close\r\n");
    }
    out.put_slice(b"\r\n");
    out.put_slice(body.as_bytes());
    out.freeze()
}

/// `{"error":{"type":…,"message":…,"request_id":…}}`
fn error_body(err: &Error, request_id: &str) -> String {
    let (_, kind) = err.status();
    format!(
        "{{\"error\":{{\"type\":\"{kind}\",\"message\":{},\"request_id\":{}}}}}\n",
        json_string(&err.to_string()),
        json_string(request_id)
    )
}

/// RFC 6750 §3: a missing token gets the bare challenge, a bad one `invalid_token` and nothing
/// more specific.
fn challenge(kind: &ErrorKind) -> Option<&'static str> {
    match kind {
        ErrorKind::Unauthenticated(AuthError::Missing) => Some("Bearer realm=\"modelgate\""),
        ErrorKind::Unauthenticated(_) => {
            Some("Bearer realm=\"modelgate\", error=\"invalid_token\"")
        }
        _ => None,
    }
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
