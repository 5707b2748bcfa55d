//! Admission: who is calling, which model they ask for, and whether a policy rule lets them.
//!
//! ```text
//! route.auth = none ─▶ allowed as "open-route"
//! Authorization ─▶ identity (401 / 503) ─▶ model: route, path, or JSON body prefix
//!   ─▶ policy: first matching rule ─▶ allow │ deny (403 naming the rule) │ hold (403 for now)
//! ```
//!
//! Everything is decided before a byte goes upstream. Reading the model from a JSON body peeks
//! at the client connection's buffer without consuming it, so the body is forwarded unchanged;
//! the request-body stage then checks that the rest of the body does not name a second model.

use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use std::time::Duration;

use super::{Client, Generation, RequestCtx};
use crate::conn::ReadError;
use crate::error::{Error, ErrorKind};
use crate::http::headers::media_type;
use crate::http::{BodyFraming, ChunkedDecoder, Decoded, RequestHead};
use crate::identity::{AuthError, TokenError};
use crate::policy::model::{model_from_grpc_prefix, model_from_path, GrpcPrefix, ModelScan, Scan};
use crate::policy::{Decision, Effect, Request};
use crate::route::Route;

/// The decision recorded for routes configured `auth = "none"`.
pub const OPEN_ROUTE: &str = "open-route";

/// Decides whether the request may go on; fills the context's identity, model and decision.
pub async fn admit(
    ctx: &mut RequestCtx,
    client: &mut Client<'_>,
    head: &RequestHead,
    route: &Route,
    generation: &Generation,
) -> Result<(), Error> {
    let config = &generation.config;
    ctx.model = route
        .model
        .as_deref()
        .map(str::to_owned)
        .or_else(|| model_from_path(&head.path));
    if !route.auth_required {
        ctx.decision = Some(Decision {
            effect: Effect::Allow,
            rule: OPEN_ROUTE.into(),
        });
        return Ok(());
    }

    // Identity. More than one Authorization header is ambiguous: refused like a bad token.
    let auth = generation
        .auth
        .as_ref()
        .ok_or(Error::internal(ErrorKind::IdentityUnavailable))?;
    let header = match head.fields.count("authorization") {
        0 | 1 => head.fields.get("authorization"),
        _ => Some(&b"duplicate"[..]),
    };
    // A bearer token speaks for the request; without one, a mapped client certificate does.
    let verified = match (header, &ctx.peer_identity) {
        (None, Some(peer)) => Ok(Rc::clone(peer)),
        _ => auth.authenticate(header).await,
    };
    let verified = match verified {
        Ok(v) => v,
        Err(e) => {
            tracing::info!(request_id = %ctx.request_id, route = %route.id, reason = %e, "request not authenticated");
            return Err(match e {
                AuthError::Invalid(TokenError::KeysUnavailable) => {
                    Error::internal(ErrorKind::IdentityUnavailable)
                }
                e => Error::downstream(ErrorKind::Unauthenticated(e)),
            });
        }
    };
    ctx.identity = Some(Rc::clone(&verified));

    // The model, from the body when the path did not name it and a rule cares.
    let policy = &config.policy;
    let limit = policy.model_lookahead_bytes;
    let idle = config.timeouts.body_idle;
    if ctx.model.is_none() && policy.wants_model && ctx.grpc && carries_model(head) {
        ctx.model = peek_grpc_model(client, limit, idle).await?;
        ctx.model_from_body = ctx.model.is_some();
    } else if ctx.model.is_none() && policy.wants_model && is_json_body(head) {
        if let Client::H1(conn) = client {
            if head.expect_continue {
                conn.write(Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"), idle)
                    .await
                    .map_err(|e| {
                        Error::downstream(ErrorKind::ClientClosed(super::body::into_io(e)))
                    })?;
                ctx.continue_sent = true;
            }
        }
        ctx.model = peek_model(client, head.framing, limit, idle).await?;
        ctx.model_from_body = ctx.model.is_some();
    }

    let class = ctx.class.clone().unwrap_or_else(|| Arc::from("unknown"));
    let decision = policy.decide(&Request {
        identity: &verified.identity,
        route: &route.id,
        class: &class,
        method: head.method.as_str(),
        model: ctx.model.as_deref(),
    });
    ctx.decision = Some(decision.clone());
    match decision.effect {
        Effect::Allow => Ok(()),
        Effect::Deny => Err(Error::downstream(ErrorKind::Forbidden(decision.rule))),
        Effect::Hold => Err(Error::downstream(ErrorKind::ApprovalRequired(
            decision.rule,
        ))),
    }
}

/// Bodies worth reading for a model: JSON, or no declared type at all (model servers parse
/// JSON regardless). An encoded body (`Content-Encoding: gzip`) cannot be read here, so its
/// model stays unknown, which rules that deny or hold by model treat as a match.
fn is_json_body(head: &RequestHead) -> bool {
    let encoded = head
        .fields
        .get("content-encoding")
        .is_some_and(|v| !v.eq_ignore_ascii_case(b"identity"));
    head.framing != BodyFraming::Empty
        && !encoded
        && head
            .fields
            .get("content-type")
            .map(media_type)
            .is_none_or(|e| e == "application/json" || e.ends_with("+json"))
}

/// gRPC methods whose request messages are `ModelInferRequest`s, which name their model.
fn carries_model(head: &RequestHead) -> bool {
    head.path.ends_with("/ModelInfer") || head.path.ends_with("/ModelStreamInfer")
}

/// What the client has sent of its body so far, not yet forwarded.
fn peeked<'a>(client: &'a Client<'_>) -> &'a BytesMut {
    match client {
        Client::H1(conn) => &conn.buf,
        Client::H2(x) => &x.body.ahead,
    }
}

/// Reads more of the body into the peek buffer; `Ok(false)`: an HTTP/2 body ended.
async fn peek_more(client: &mut Client<'_>, read_idle: Duration) -> Result<bool, Error> {
    let read = match client {
        Client::H1(conn) => conn.fill(read_idle).await,
        Client::H2(x) => match x.body.fill(read_idle).await {
            Ok(0) => return Ok(false),
            other => other,
        },
    };
    match read {
        // On HTTP/1.1 the head promised more body than the connection brought.
        Ok(0) => {
            let eof = std::io::ErrorKind::UnexpectedEof.into();
            Err(Error::downstream(ErrorKind::ClientClosed(eof)))
        }
        Ok(_) => Ok(true),
        Err(ReadError::TimedOut) => Err(Error::downstream(ErrorKind::BodyTimeout)),
        Err(ReadError::Io(e)) => Err(Error::downstream(ErrorKind::ClientClosed(e))),
    }
}

/// Reads (without consuming) up to `limit` decoded body bytes until the top-level `model` is
/// known. `None`: the body names no model, is not a JSON object, or names it too late.
async fn peek_model(
    client: &mut Client<'_>,
    framing: BodyFraming,
    limit: usize,
    read_idle: Duration,
) -> Result<Option<String>, Error> {
    // An HTTP/2 body arrives decoded; without a declared length its end is the stream's.
    let framing = match (&*client, framing) {
        (Client::H2(_), BodyFraming::Chunked) => BodyFraming::Length(u64::MAX),
        (_, f) => f,
    };
    let mut peek = Peek::new(framing, limit);
    loop {
        let buf = peeked(client);
        match peek.advance(buf)? {
            Scan::Found(model) => return Ok(Some(model)),
            Scan::Absent => return Ok(None),
            Scan::Invalid(why) => return Err(Error::downstream(ErrorKind::BadRequest(why))),
            Scan::NeedMore if peek.done() => return Ok(None),
            // Framing bytes (chunk-size lines and their extensions) count too: the look-ahead
            // bounds memory, not just what the scanner saw.
            Scan::NeedMore if buf.len() > limit.saturating_mul(2) + 16 * 1024 => return Ok(None),
            Scan::NeedMore => {}
        }
        if !peek_more(client, read_idle).await? {
            peek.framing = BodyFraming::Length(peeked(client).len() as u64);
        }
    }
}

/// The model named by a gRPC call's first `ModelInferRequest`, read (without consuming it)
/// from the front of the body within the look-ahead (the name comes first, so large tensors
/// after it do not matter). `None`: compressed, no name within the look-ahead, or no body.
async fn peek_grpc_model(
    client: &mut Client<'_>,
    limit: usize,
    read_idle: Duration,
) -> Result<Option<String>, Error> {
    loop {
        let buf = peeked(client);
        match model_from_grpc_prefix(buf) {
            GrpcPrefix::Named(model) => return Ok(Some(model)),
            GrpcPrefix::Unknown => return Ok(None),
            GrpcPrefix::Invalid => {
                return Err(Error::downstream(ErrorKind::BadRequest("bad gRPC message")))
            }
            GrpcPrefix::NeedMore if buf.len() >= limit => return Ok(None),
            GrpcPrefix::NeedMore => {}
        }
        if !peek_more(client, read_idle).await? {
            return Ok(None);
        }
    }
}

/// An incremental look at the start of a body sitting in the connection's buffer: each call
/// decodes and scans only the bytes that arrived since the last, so a client trickling its body
/// byte by byte costs linear time. The buffer itself is never consumed.
struct Peek {
    framing: BodyFraming,
    limit: usize,
    scan: ModelScan,
    /// Raw bytes of the buffer already looked at.
    seen: usize,
    /// Decoded bytes fed to the scanner.
    fed: usize,
    /// Chunked bodies: the decoder and the raw bytes it has not consumed yet.
    chunked: Option<(ChunkedDecoder, BytesMut)>,
    whole: bool,
}

impl Peek {
    fn new(framing: BodyFraming, limit: usize) -> Self {
        Peek {
            framing,
            limit,
            scan: ModelScan::new(),
            seen: 0,
            fed: 0,
            chunked: (framing == BodyFraming::Chunked)
                .then(|| (ChunkedDecoder::new(16 * 1024), BytesMut::new())),
            whole: matches!(framing, BodyFraming::Empty | BodyFraming::UntilClose),
        }
    }

    /// The whole body, or `limit` bytes of it, has been scanned.
    fn done(&self) -> bool {
        self.whole || self.fed >= self.limit
    }

    fn advance(&mut self, buf: &BytesMut) -> Result<Scan, Error> {
        let mut verdict = Scan::NeedMore;
        match (self.framing, self.chunked.as_mut()) {
            (BodyFraming::Length(n), _) => {
                let end = (buf.len() as u64).min(n).min(self.limit as u64) as usize;
                if end > self.seen {
                    verdict = self.scan.feed(&buf[self.seen..end]);
                    self.fed = end;
                    self.seen = end;
                }
                self.whole = end as u64 == n;
            }
            (_, Some((dec, pending))) => {
                pending.extend_from_slice(&buf[self.seen..]);
                self.seen = buf.len();
                while self.fed < self.limit && !self.whole {
                    match dec.decode(pending).map_err(Error::from_request_head)? {
                        Decoded::Data(d) => {
                            let d = &d[..d.len().min(self.limit - self.fed)];
                            self.fed += d.len();
                            verdict = self.scan.feed(d);
                            if !matches!(verdict, Scan::NeedMore) {
                                break;
                            }
                        }
                        Decoded::End(_) => self.whole = true,
                        Decoded::NeedMore => break,
                    }
                }
            }
            _ => {}
        }
        Ok(match verdict {
            Scan::NeedMore if self.whole => self.scan.finish(),
            v => v,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Grows a buffer byte by byte, as a trickling client would, and peeks after each byte.
    fn trickle(raw: &[u8], framing: BodyFraming, limit: usize) -> Result<Scan, ()> {
        let mut peek = Peek::new(framing, limit);
        let mut buf = BytesMut::new();
        for &b in raw {
            buf.extend_from_slice(&[b]);
            match peek.advance(&buf).map_err(|_| ())? {
                Scan::NeedMore if !peek.done() => {}
                v => return Ok(v),
            }
        }
        Err(())
    }

    #[test]
    fn the_model_is_found_however_the_body_trickles_in() {
        let body = br#"{"stream":true,"model":"llama-3-8b","messages":[]}"#;
        let length = BodyFraming::Length(body.len() as u64);
        assert_eq!(
            trickle(body, length, 1024),
            Ok(Scan::Found("llama-3-8b".into()))
        );
        let mut chunked = Vec::new();
        for piece in body.chunks(7) {
            chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            chunked.extend_from_slice(piece);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let found = trickle(&chunked, BodyFraming::Chunked, 1024);
        assert_eq!(found, Ok(Scan::Found("llama-3-8b".into())));
    }

    #[test]
    fn the_look_ahead_bounds_what_is_read() {
        let body = br#"{"prompt":"aaaaaaaaaaaaaaaaaaaaaaaa","model":"x"}"#;
        let length = BodyFraming::Length(body.len() as u64);
        // Within 16 bytes nothing is decided: the peek ends without a model.
        let mut peek = Peek::new(length, 16);
        assert_eq!(
            peek.advance(&BytesMut::from(&body[..])).unwrap(),
            Scan::NeedMore
        );
        assert!(peek.done());
        let whole = body.len();
        assert_eq!(trickle(body, length, whole), Ok(Scan::Found("x".into())));
        let no_model = br#"{"prompt":"a"}"#;
        let length = BodyFraming::Length(no_model.len() as u64);
        assert_eq!(trickle(no_model, length, 1024), Ok(Scan::Absent));
    }
}
