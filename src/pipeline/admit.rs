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

use super::{Generation, RequestCtx};
use crate::conn::{Conn, ReadError};
use crate::error::{Error, ErrorKind};
use crate::http::headers::media_type;
use crate::http::{BodyFraming, ChunkedDecoder, Decoded, RequestHead};
use crate::identity::{AuthError, TokenError};
use crate::policy::model::{model_from_path, ModelScan, Scan};
use crate::policy::{Decision, Effect, Request};
use crate::route::Route;

/// The decision recorded for routes configured `auth = "none"`.
pub const OPEN_ROUTE: &str = "open-route";

/// Decides whether the request may go on; fills the context's identity, model and decision.
pub async fn admit(
    ctx: &mut RequestCtx,
    client: &mut Conn,
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
    let verified = match auth.authenticate(header).await {
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
    if ctx.model.is_none() && policy.wants_model && is_json_body(head) {
        if head.expect_continue {
            client
                .write(
                    Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"),
                    config.timeouts.body_idle,
                )
                .await
                .map_err(|e| Error::downstream(ErrorKind::ClientClosed(super::body::into_io(e))))?;
            ctx.continue_sent = true;
        }
        let limit = policy.model_lookahead_bytes;
        ctx.model = peek_model(client, head.framing, limit, config.timeouts.body_idle).await?;
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

fn is_json_body(head: &RequestHead) -> bool {
    head.framing != BodyFraming::Empty
        && head
            .fields
            .get("content-type")
            .map(media_type)
            .is_some_and(|e| e == "application/json" || e.ends_with("+json"))
}

/// Reads (without consuming) up to `limit` decoded body bytes until the top-level `model` is
/// known. `None`: the body names no model, is not a JSON object, or names it too late.
async fn peek_model(
    client: &mut Conn,
    framing: BodyFraming,
    limit: usize,
    read_idle: std::time::Duration,
) -> Result<Option<String>, Error> {
    loop {
        let (prefix, whole) = decoded_prefix(&client.buf, framing, limit)?;
        let mut scan = ModelScan::new();
        let verdict = match scan.feed(&prefix) {
            Scan::NeedMore if whole => scan.finish(),
            v => v,
        };
        match verdict {
            Scan::Found(model) => return Ok(Some(model)),
            Scan::Absent => return Ok(None),
            Scan::Invalid(why) => return Err(Error::downstream(ErrorKind::BadRequest(why))),
            Scan::NeedMore if whole || prefix.len() >= limit => return Ok(None),
            Scan::NeedMore => {}
        }
        match client.fill(read_idle).await {
            Ok(0) => {
                let eof = std::io::ErrorKind::UnexpectedEof.into();
                return Err(Error::downstream(ErrorKind::ClientClosed(eof)));
            }
            Ok(_) => {}
            Err(ReadError::TimedOut) => return Err(Error::downstream(ErrorKind::BodyTimeout)),
            Err(ReadError::Io(e)) => return Err(Error::downstream(ErrorKind::ClientClosed(e))),
        }
    }
}

/// The body bytes buffered so far (decoded, at most `limit`), and whether that is the whole
/// body. A chunked body is decoded from a copy, so the buffer is forwarded as it arrived.
fn decoded_prefix(
    buf: &BytesMut,
    framing: BodyFraming,
    limit: usize,
) -> Result<(Bytes, bool), Error> {
    match framing {
        BodyFraming::Length(n) => {
            let take = (buf.len() as u64).min(n).min(limit as u64) as usize;
            Ok((Bytes::copy_from_slice(&buf[..take]), take as u64 == n))
        }
        BodyFraming::Chunked => {
            let mut copy = buf.clone();
            let mut dec = ChunkedDecoder::new(16 * 1024);
            let mut out = BytesMut::new();
            while out.len() < limit {
                match dec.decode(&mut copy).map_err(Error::from_request_head)? {
                    Decoded::Data(d) => out.extend_from_slice(&d),
                    Decoded::End(_) => return Ok((out.freeze(), true)),
                    Decoded::NeedMore => break,
                }
            }
            out.truncate(limit);
            Ok((out.freeze(), false))
        }
        BodyFraming::Empty | BodyFraming::UntilClose => Ok((Bytes::new(), true)),
    }
}
