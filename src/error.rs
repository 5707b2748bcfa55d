//! The one error type of the request path.
//!
//! Every failure records which side caused it, because that decides everything that follows: a
//! client that sent garbage gets a 4xx and its connection closed; an upstream that failed gets a
//! 502/504 and is marked down; an internal fault is logged loudly. `pipeline::rescue` is the only
//! place that turns an [`Error`] into a response.

use std::fmt;
use std::io;

use crate::http::head::HeadError;

/// Who failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client: malformed input, timeouts, a closed connection.
    Downstream,
    /// The model server: refused, timed out, closed, or spoke invalid HTTP.
    Upstream,
    /// The gateway itself.
    Internal,
}

/// What went wrong, named after the condition.
#[derive(Debug)]
pub enum ErrorKind {
    /// The client's message is malformed or ambiguous.
    BadRequest(&'static str),
    /// Too many header fields or too many head bytes.
    HeaderTooLarge,
    UriTooLong,
    /// The client did not send a complete head in time.
    HeaderTimeout,
    /// The client stopped sending its body.
    BodyTimeout,
    /// The client closed or reset the connection.
    ClientClosed(io::Error),
    /// No route matches host and path.
    NoRoute,
    /// No endpoint of the upstream group could be connected.
    ConnectFailed(io::Error),
    ConnectTimeout,
    /// The upstream sent no response head in time.
    FirstByteTimeout,
    /// The upstream went quiet mid-response.
    UpstreamIdle,
    /// The upstream closed or reset before or during its response.
    UpstreamClosed(io::Error),
    /// The upstream's response is malformed.
    BadResponse(&'static str),
    /// Masking stopped the body: a `block` detector matched, or scanning failed (fail closed).
    Masking(crate::masking::MaskError),
    /// The session recorder cannot write and recording fails closed.
    RecorderUnavailable,
    /// No valid bearer token. The cause is logged, never sent: it would help an attacker.
    Unauthenticated(crate::identity::AuthError),
    /// The issuer's keys could not be fetched (never, or not for `max_stale`).
    IdentityUnavailable,
    /// A policy rule (or the default) denies the request; the rule id is named.
    Forbidden(std::sync::Arc<str>),
    /// A policy rule holds the request for an approver, which is not available yet.
    ApprovalRequired(std::sync::Arc<str>),
    /// The caller's own deadline (`grpc-timeout`) passed before the exchange completed.
    DeadlineExceeded,
}

#[derive(Debug)]
pub struct Error {
    pub side: Side,
    pub kind: ErrorKind,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn downstream(kind: ErrorKind) -> Self {
        Error {
            side: Side::Downstream,
            kind,
        }
    }

    pub fn internal(kind: ErrorKind) -> Self {
        Error {
            side: Side::Internal,
            kind,
        }
    }

    pub fn upstream(kind: ErrorKind) -> Self {
        Error {
            side: Side::Upstream,
            kind,
        }
    }

    /// A client-side parse failure.
    pub fn from_request_head(e: HeadError) -> Self {
        Error::downstream(match e {
            HeadError::Invalid(why) => ErrorKind::BadRequest(why),
            HeadError::TooLarge => ErrorKind::HeaderTooLarge,
            HeadError::UriTooLong => ErrorKind::UriTooLong,
        })
    }

    /// An upstream-side parse failure.
    pub fn from_response_head(e: HeadError) -> Self {
        Error::upstream(match e {
            HeadError::Invalid(why) => ErrorKind::BadResponse(why),
            HeadError::TooLarge => ErrorKind::BadResponse("response head too large"),
            HeadError::UriTooLong => ErrorKind::BadResponse("response head too large"),
        })
    }

    /// Status code, error type for the JSON body, and whether the client connection must close.
    pub fn status(&self) -> (u16, &'static str) {
        match &self.kind {
            ErrorKind::BadRequest(_) | ErrorKind::ClientClosed(_) => (400, "bad_request"),
            ErrorKind::HeaderTooLarge => (431, "header_too_large"),
            ErrorKind::UriTooLong => (414, "uri_too_long"),
            ErrorKind::HeaderTimeout | ErrorKind::BodyTimeout => (408, "request_timeout"),
            ErrorKind::NoRoute => (404, "not_found"),
            ErrorKind::ConnectFailed(_)
            | ErrorKind::UpstreamClosed(_)
            | ErrorKind::BadResponse(_) => (502, "bad_gateway"),
            ErrorKind::ConnectTimeout
            | ErrorKind::FirstByteTimeout
            | ErrorKind::UpstreamIdle
            | ErrorKind::DeadlineExceeded => (504, "gateway_timeout"),
            ErrorKind::Masking(crate::masking::MaskError::Blocked { .. }) => (403, "blocked"),
            ErrorKind::Masking(_) => (500, "masking_failed"),
            ErrorKind::RecorderUnavailable => (503, "recording_unavailable"),
            ErrorKind::Unauthenticated(_) => (401, "unauthenticated"),
            ErrorKind::IdentityUnavailable => (503, "identity_unavailable"),
            ErrorKind::Forbidden(_) => (403, "forbidden"),
            ErrorKind::ApprovalRequired(_) => (403, "approval_required"),
        }
    }
}

impl fmt::Display for Error {
    /// The message a client may see: it names the condition, never internal addresses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::BadRequest(why) => write!(f, "malformed request: {why}"),
            ErrorKind::HeaderTooLarge => f.write_str("request header fields too large"),
            ErrorKind::UriTooLong => f.write_str("request-target too long"),
            ErrorKind::HeaderTimeout => f.write_str("request head not received in time"),
            ErrorKind::BodyTimeout => f.write_str("request body stalled"),
            ErrorKind::ClientClosed(_) => f.write_str("client closed the connection"),
            ErrorKind::NoRoute => f.write_str("no route for this host and path"),
            ErrorKind::ConnectFailed(_) => f.write_str("upstream unavailable"),
            ErrorKind::ConnectTimeout => f.write_str("upstream connect timed out"),
            ErrorKind::FirstByteTimeout => f.write_str("upstream did not respond in time"),
            ErrorKind::UpstreamIdle => f.write_str("upstream stalled mid-response"),
            ErrorKind::UpstreamClosed(_) => f.write_str("upstream closed the connection"),
            ErrorKind::BadResponse(why) => write!(f, "invalid upstream response: {why}"),
            ErrorKind::Masking(e) => e.fmt(f),
            ErrorKind::RecorderUnavailable => f.write_str(
                "session recording is unavailable; requests are refused until it recovers",
            ),
            ErrorKind::Unauthenticated(crate::identity::AuthError::Missing) => {
                f.write_str("a bearer token is required")
            }
            ErrorKind::Unauthenticated(_) => f.write_str("invalid_token"),
            ErrorKind::IdentityUnavailable => {
                f.write_str("identity provider keys unavailable; try again later")
            }
            ErrorKind::Forbidden(rule) => write!(f, "denied by policy rule {rule:?}"),
            ErrorKind::ApprovalRequired(rule) => {
                write!(
                    f,
                    "policy rule {rule:?} requires approval, which is not available"
                )
            }
            ErrorKind::DeadlineExceeded => f.write_str("the call's deadline passed"),
        }
    }
}

impl std::error::Error for Error {}
