//! What a recording says about one exchange, as events appended while the exchange happens.
//!
//! A session (one request/response exchange) is written as a sequence of small [`Event`]s:
//! `SessionStart`, then any number of `RequestChunk` / `ResponseHead` / `ResponseChunk` /
//! `Trailers`, then `SessionEnd`. Appending events as they happen (rather than one record per
//! finished exchange) is what lets a stream be recorded while it flows, with nothing buffered for
//! its whole length, and what makes "everything the client received is on disk" a per-chunk
//! promise.
//!
//! The metadata events are serde structs (encoded as JSON inside the compressed record, with
//! optional fields defaulted, so a newer writer's extra fields do not break an older reader);
//! the body chunks are raw bytes with a time offset, encoded in binary (see `codec.rs`).
//!
//! Secrets never reach the disk through the heads: `authorization`, `proxy-authorization`,
//! `cookie` and `set-cookie` values are redacted when a head is built ([`Head::new`]) and again
//! by the writer.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Headers whose values are replaced by [`REDACTED`] before they are recorded.
pub const REDACTED_HEADERS: [&str; 7] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "x-modelgate-identity",
];

/// The value recorded in place of a secret header (the auth scheme word is kept, e.g.
/// `Bearer [redacted]`, because "which kind of credential" is useful to an auditor).
pub const REDACTED: &str = "[redacted]";

/// Authorization schemes (IANA registry, plus the common `Token` / `ApiKey`) whose name is kept
/// in front of a redacted credential.
const AUTH_SCHEMES: [&str; 13] = [
    "Basic",
    "Bearer",
    "Digest",
    "DPoP",
    "HOBA",
    "Mutual",
    "Negotiate",
    "NTLM",
    "PrivateToken",
    "SCRAM-SHA-1",
    "SCRAM-SHA-256",
    "Token",
    "ApiKey",
];

/// Header fields as read back: (name, value) in arrival order.
pub type HeaderList = Vec<(String, String)>;

/// What a head's headers can be when written: a [`HeaderList`], or (on the request path) a
/// view of the live head that serialises to the same `[name, value]` pairs without copying
/// each string, redacting as it goes. Sealed: the writer trusts `needs_redaction`, so only
/// this crate's types, each of which redacts, may be written.
pub trait Headers: Serialize + Clone + sealed::Sealed {
    /// Some secret value would be written as it is.
    fn needs_redaction(&self) -> bool;
    fn redact(&mut self);
}

pub(crate) mod sealed {
    pub trait Sealed {}
    impl Sealed for super::HeaderList {}
}

impl Headers for HeaderList {
    fn needs_redaction(&self) -> bool {
        needs_redaction(self)
    }

    fn redact(&mut self) {
        redact_in_place(self)
    }
}

/// One event of a session, as appended to the log and as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    SessionStart(Box<SessionStart>),
    /// Written by the writer at the top of a new segment for every session still open at
    /// rotation, so each segment can be read on its own (and survives retention of the previous
    /// one) without losing which request its chunks belong to.
    SessionContinue {
        request_id: String,
    },
    /// Raw request body bytes; only when the session's `record_request_body` is set.
    RequestChunk(Chunk),
    ResponseHead(ResponseHead),
    /// Response body bytes exactly as forwarded to the client (after masking): for SSE, one or
    /// more events.
    ResponseChunk(Chunk),
    /// Response body bytes as the model server sent them, before masking; only when the
    /// session's `record_upstream_body` is set (a per-route choice, off by default).
    UpstreamChunk(Chunk),
    Trailers(Trailers),
    SessionEnd(SessionEnd),
}

/// Body bytes and when they passed, in µs since the session started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub offset_us: u64,
    pub data: Vec<u8>,
}

/// Who asked, what was decided, and the request head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(deserialize = "H: Deserialize<'de> + Default"))]
pub struct SessionStart<H = HeaderList> {
    pub request_id: String,
    pub connection_id: u64,
    pub worker_id: u32,
    /// Wall-clock start, µs since the Unix epoch.
    pub wall_time_us: u64,
    #[serde(default)]
    pub identity: Option<Identity>,
    #[serde(default)]
    pub client_addr: Option<SocketAddr>,
    #[serde(default)]
    pub route: Option<String>,
    #[serde(default)]
    pub endpoint_class: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub decision: Option<PolicyDecision>,
    #[serde(default)]
    pub approval_id: Option<String>,
    pub request: Head<H>,
    /// The route records raw request bodies. Recorded so their absence is never silent.
    #[serde(default)]
    pub record_request_body: bool,
    /// The route also records the model server's unmasked response body (`UpstreamChunk`s).
    /// Recorded so that its presence, or absence, is never silent.
    #[serde(default)]
    pub record_upstream_body: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub subject: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub issuer: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDecision {
    pub action: Action,
    /// The rule that decided, by name.
    #[serde(default)]
    pub rule: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Deny,
    Hold,
}

/// A request head: method, path (with query) and headers in arrival order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head<H = HeaderList> {
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub headers: H,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseHead<H = HeaderList> {
    pub offset_us: u64,
    pub status: u16,
    #[serde(default)]
    pub headers: H,
    /// `group/address` of the upstream endpoint that answered.
    #[serde(default)]
    pub upstream: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trailers {
    pub offset_us: u64,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEnd {
    pub offset_us: u64,
    pub reason: EndReason,
    /// The status the client got (also for exchanges that never reached an upstream).
    #[serde(default)]
    pub status: Option<u16>,
    /// Detector id → number of matches masked in what the client saw.
    #[serde(default)]
    pub masking: BTreeMap<String, u64>,
    #[serde(default)]
    pub timing: Timing,
    #[serde(default)]
    pub bytes_in: u64,
    #[serde(default)]
    pub bytes_out: u64,
    /// A short reason for abnormal ends (`upstream reset`, `disk full`, …).
    #[serde(default)]
    pub error: Option<String>,
}

/// Where the time went. Inter-chunk gaps follow from the chunk offsets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// From the request head to the request leaving for the upstream (authn, policy, approval).
    #[serde(default)]
    pub gateway_us: Option<u64>,
    /// From the request leaving to the upstream's response head.
    #[serde(default)]
    pub upstream_ttfb_us: Option<u64>,
    #[serde(default)]
    pub total_us: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Complete,
    ClientGone,
    UpstreamDied,
    Denied,
    Rejected,
}

// === impl Head ===

impl Head {
    /// Builds a head with secret header values redacted.
    pub fn new<'a>(
        method: &str,
        path: &str,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Head {
        Head {
            method: method.to_owned(),
            path: path.to_owned(),
            headers: redacted(headers),
        }
    }
}

/// Copies headers, replacing the values of [`REDACTED_HEADERS`].
pub fn redacted<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<(String, String)> {
    headers
        .into_iter()
        .map(|(n, v)| (n.to_owned(), redact_value(n, v).into_owned()))
        .collect()
}

/// Whether any secret header still shows its value (the writer then redacts a copy).
pub(crate) fn needs_redaction(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .any(|(n, v)| is_secret(n) && *v != redact_value(n, v))
}

/// Redacts in place (the writer's second line of defence).
pub(crate) fn redact_in_place(headers: &mut [(String, String)]) {
    for (n, v) in headers.iter_mut() {
        if is_secret(n) {
            // Idempotent: "Bearer [redacted]" redacts to itself.
            *v = redact_value(n, v).into_owned();
        }
    }
}

pub fn is_secret(name: &str) -> bool {
    REDACTED_HEADERS
        .iter()
        .any(|s| s.eq_ignore_ascii_case(name))
}

/// `value` as it may be recorded under `name`.
pub fn redact_value<'v>(name: &str, value: &'v str) -> Cow<'v, str> {
    if !is_secret(name) {
        return Cow::Borrowed(value);
    }
    // Keep a leading scheme word ("Bearer", "Basic") for authorization headers only, and only
    // a registered one: a bare key followed by a space is not a scheme. Cookies have no scheme
    // and their names can be sensitive too.
    let scheme = value.split_once(' ').map(|(s, _)| s).filter(|s| {
        name.to_ascii_lowercase().ends_with("authorization")
            && AUTH_SCHEMES.iter().any(|k| k.eq_ignore_ascii_case(s))
    });
    Cow::Owned(match scheme {
        Some(s) => format!("{s} {REDACTED}"),
        None => REDACTED.to_owned(),
    })
}

// === impl SessionEnd ===

impl SessionEnd {
    /// Masking found (and hid) something in this exchange.
    pub fn contained_sensitive(&self) -> bool {
        self.masking.values().any(|&n| n > 0)
    }
}

// === impl Event ===

impl Event {
    /// The session this event belongs to starts here (its request id), if it is a start.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Event::SessionStart(s) => Some(&s.request_id),
            Event::SessionContinue { request_id } => Some(request_id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_headers_are_redacted_keeping_the_scheme() {
        let h = Head::new(
            "POST",
            "/v1/chat/completions",
            [
                ("Authorization", "Bearer eyJhbGciOi.secret"),
                ("cookie", "session=abc"),
                ("content-type", "application/json"),
                ("proxy-authorization", "opaque"),
                // A bare key followed by a space: its first word is no scheme.
                ("authorization", "sk-live-abc123 trailing"),
                ("authorization", "bearer x"),
            ],
        );
        assert_eq!(h.headers[0].1, "Bearer [redacted]");
        assert_eq!(h.headers[1].1, "[redacted]");
        assert_eq!(h.headers[2].1, "application/json");
        assert_eq!(h.headers[3].1, "[redacted]");
        assert_eq!(h.headers[4].1, "[redacted]");
        assert_eq!(h.headers[5].1, "bearer [redacted]");
    }

    #[test]
    fn redacting_twice_changes_nothing() {
        let mut h = Head::new("GET", "/", [("authorization", "Basic dXNlcjpwdw==")]).headers;
        let once = h.clone();
        redact_in_place(&mut h);
        assert_eq!(h, once);
    }
}
