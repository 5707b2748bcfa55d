//! The recorder's view of the request path: a session starts once the route is known (so
//! refusals are on the record), gets the response head, and ends with the outcome, the masking
//! verdict and the timing split. Body chunks are teed by `stages`.

use std::rc::Rc;

use serde::ser::{Serialize, SerializeSeq, Serializer};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::stages::{Recorder, Session};
use super::{Outcome, RequestCtx};
use crate::error::{Error, ErrorKind};
use crate::http::head::Fields;
use crate::http::{RequestHead, ResponseHead};
use crate::policy::Effect;
use crate::recorder::{self, EndReason, Head, OnDiskError, SessionEnd, SessionStart, Timing};

/// Opens the exchange's session. A recorder that already failed refuses new requests (503) when
/// recording fails closed; fail open serves them unrecorded.
pub fn start(
    ctx: &mut RequestCtx,
    head: &RequestHead,
    recorder: Option<&Rc<Recorder>>,
) -> Result<(), Error> {
    let Some(recorder) = recorder else {
        return Ok(());
    };
    let closed = recorder.on_disk_error == OnDiskError::FailClosed;
    if recorder.writer.borrow().is_failed() {
        return match closed {
            true => Err(Error::internal(ErrorKind::RecorderUnavailable)),
            false => Ok(()),
        };
    }
    let start = SessionStart {
        request_id: ctx.request_id.clone(),
        connection_id: ctx.connection_id,
        worker_id: ctx.worker_id,
        wall_time_us: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64),
        identity: ctx.identity.as_ref().map(|v| recorder::model::Identity {
            subject: v.identity.subject.clone(),
            groups: v.identity.groups.clone(),
            issuer: Some(v.identity.issuer.clone()),
        }),
        client_addr: Some(std::net::SocketAddr::new(ctx.client_ip, 0)),
        route: ctx.route_id.as_deref().map(str::to_owned),
        endpoint_class: ctx.class.as_deref().map(str::to_owned),
        model: ctx.model.clone(),
        decision: ctx
            .decision
            .as_ref()
            .map(|d| recorder::model::PolicyDecision {
                action: match d.effect {
                    Effect::Allow => recorder::model::Action::Allow,
                    Effect::Deny => recorder::model::Action::Deny,
                    Effect::Hold => recorder::model::Action::Hold,
                },
                rule: Some(d.rule.to_string()),
            }),
        approval_id: None,
        request: Head {
            method: head.method.as_str().to_owned(),
            path: head.path.to_string(),
            headers: LiveHeaders(&head.fields),
        },
        // The prompt is the heart of "who asked what": request bodies are always recorded.
        record_request_body: true,
        record_upstream_body: ctx.record_upstream_body,
    };
    let started = recorder.writer.borrow_mut().start_session(&start);
    match started {
        Ok(id) => {
            ctx.session = Some(Rc::new(Session {
                recorder: Rc::clone(recorder),
                id,
                epoch: recorder.epoch.get(),
                started: Instant::now(),
                abandoned: std::cell::Cell::new(false),
            }));
            Ok(())
        }
        Err(e) => {
            tracing::error!(request_id = %ctx.request_id, error = %e, "session recording failed");
            match closed {
                true => Err(Error::internal(ErrorKind::RecorderUnavailable)),
                false => Ok(()),
            }
        }
    }
}

/// Records the response head as the upstream sent it.
pub fn response_head(
    ctx: &RequestCtx,
    session: Option<&Session>,
    res: &ResponseHead,
) -> Result<(), Error> {
    let Some(session) = session else {
        return Ok(());
    };
    let upstream = ctx.upstream.as_deref().map(str::to_owned);
    let head = recorder::ResponseHead {
        offset_us: 0,
        status: res.status,
        headers: LiveHeaders(&res.fields),
        upstream,
    };
    session.write(|w, sid, offset_us| {
        w.response_head(sid, &recorder::ResponseHead { offset_us, ..head })
    })
}

/// Closes the session with how the exchange ended.
pub fn end(ctx: &mut RequestCtx) {
    let Some(session) = ctx.session.take() else {
        return;
    };
    let reason = match ctx.outcome {
        Outcome::Complete => EndReason::Complete,
        Outcome::ClientGone => EndReason::ClientGone,
        Outcome::UpstreamFailed => EndReason::UpstreamDied,
        Outcome::Blocked => EndReason::Denied,
        Outcome::Rejected if matches!(ctx.status, 401 | 403 | 404) => EndReason::Denied,
        Outcome::Rejected => EndReason::Rejected,
    };
    let masking = ctx.masking.as_ref().map_or_else(Default::default, |v| {
        v.detections
            .iter()
            .map(|(id, n)| (id.to_string(), *n))
            .collect()
    });
    let us = |d: std::time::Duration| d.as_micros() as u64;
    let end = SessionEnd {
        offset_us: 0,
        reason,
        status: (ctx.status != 0).then_some(ctx.status),
        masking,
        timing: Timing {
            gateway_us: ctx.request_sent.map(us),
            upstream_ttfb_us: ctx
                .ttfb
                .zip(ctx.request_sent)
                .map(|(a, b)| us(a.saturating_sub(b))),
            total_us: Some(us(ctx.started.elapsed())),
        },
        bytes_in: ctx.bytes_in,
        bytes_out: ctx.bytes_out,
        error: ctx.error.clone(),
    };
    let _ = session.write(|w, sid, offset_us| w.end_session(sid, &SessionEnd { offset_us, ..end }));
}

/// A live head's fields as the recorder writes headers (`[name, value]` pairs, secrets
/// redacted) without a copy of every name and value: a head is recorded for each exchange.
#[derive(Clone, Copy)]
struct LiveHeaders<'a>(&'a Fields);

impl Serialize for LiveHeaders<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut pairs = s.serialize_seq(Some(self.0.len()))?;
        for (name, value) in self.0.iter() {
            let name = std::str::from_utf8(name).unwrap_or("?");
            let value = std::str::from_utf8(value).unwrap_or("?");
            pairs.serialize_element(&(name, recorder::model::redact_value(name, value)))?;
        }
        pairs.end()
    }
}

impl recorder::model::sealed::Sealed for LiveHeaders<'_> {}

impl recorder::model::Headers for LiveHeaders<'_> {
    fn needs_redaction(&self) -> bool {
        false // done while serialising
    }

    fn redact(&mut self) {}
}

/// Header fields as (name, value) strings, for the recorder.
pub fn header_list(fields: &Fields) -> Vec<(String, String)> {
    recorder::model::redacted(fields.iter().map(|(n, v)| {
        (
            std::str::from_utf8(n).unwrap_or("?"),
            std::str::from_utf8(v).unwrap_or("?"),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::HeadLimits;

    #[test]
    fn live_headers_write_what_a_header_list_would() {
        let mut buf = bytes::BytesMut::from(
            &b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer abc.def\r\nCookie: s=1\r\nX-Odd: caf\xc3\xa9 \"q\" \\\r\n\r\n"[..],
        );
        let limits = HeadLimits {
            max_headers: 16,
            max_head_bytes: 1024,
            max_uri_bytes: 256,
        };
        let head = crate::http::parse_request(&mut buf, &limits)
            .unwrap()
            .unwrap();
        let live = serde_json::to_string(&LiveHeaders(&head.fields)).unwrap();
        let list = serde_json::to_string(&header_list(&head.fields)).unwrap();
        assert_eq!(live, list);
        assert!(live.contains("Bearer [redacted]"), "{live}");
        assert!(!live.contains("abc.def") && !live.contains("s=1"), "{live}");
    }
}
