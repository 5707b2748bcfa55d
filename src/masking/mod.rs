//! Masking: redact secrets and personal data in model output while it streams.
//!
//! # Where it sits
//! A response body filter (`◀─ response filters` in the request path): the pipeline makes one
//! [`BodyFilter`] per response with [`filter_for`] and hands it each chunk as it arrives from the
//! upstream. Everything here is pure: bytes in, bytes out, no I/O, no clock except the
//! `Instant` the filters read to measure how long text was held.
//!
//! # Why it is built this way
//! Model output is a stream, and a secret can be split anywhere: over TCP reads, over SSE
//! events (`"bob"`, `"@exam"`, `"ple.com"`), inside JSON escapes. Buffering the whole answer
//! would be correct and useless (the user waits for the full generation). So:
//! - The formats (`sse`, `json`, plain) extract *the text the user sees* and feed it, per
//!   choice, to one [`Engine`] each; they re-emit the envelope with the masked text.
//! - The engine scans with one vectorscan streaming database (all detectors together), which
//!   reports match *ends* across chunk seams at ~GB/s. Starts are found only for the rare
//!   matches, in the small held window (see `engine.rs` for the measurement and the rule).
//! - It holds back only the tail that could still become part of a match, which it knows from
//!   each detector's longest match and byte classes, and releases the rest at once.
//! - Overlaps resolve by one deterministic rule (earliest start, then longest, then detector
//!   order), so masking a text in any chunking gives the same bytes as masking it whole. The
//!   differential tests and the `mask_split` fuzz target hold the engine to that.
//!
//! # Failing closed
//! A scan error, or a `block` detector firing, ends the response: the SSE filter writes an
//! `event: error` and every filter returns `Err`; unmasked text never goes out. Every detector's
//! longest match must fit in `max_hold_bytes` (checked when the config compiles), so the hold
//! cap cannot be exceeded at run time; long secrets (PEM keys, JWTs) are *span* detectors that
//! redact from a bounded start marker onwards and need no hold at all.
//!
//! # Threads
//! [`Masker`] is the compiled configuration: immutable, `Send + Sync`, shared by `Arc` across
//! workers. Per-response state (engines, vectorscan streams) is owned by the filter, without
//! locks. Vectorscan's scratch space lives in a `thread_local` per worker ([`vs`]).
//!
//! # gRPC
//! KServe v2 messages (`ModelInfer`, `ModelStreamInfer`; responses, and requests with
//! `mask_requests`): the elements of `BYTES` tensors are masked one by one, each message
//! re-encoded (`grpc.rs`).
//!
//! # Not yet
//! NDJSON streams split across documents (each JSON string is masked on its own) are left for
//! later.

mod action;
mod builtins;
mod compile;
mod compile_custom;
mod config;
mod engine;
mod filter;
mod grpc;
mod hold;
mod json;
mod sse;
mod sse_shapes;
mod validate;
pub mod vs;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use compile::Masker;

/// For `fuzz/fuzz_targets/sse_fields.rs`: the SSE filter's two readers of an event agree.
#[doc(hidden)]
pub fn sse_readers_agree(data: &str) -> Result<(), String> {
    sse_shapes::readers_agree(data)
}
pub use config::{
    Action, BuiltinSetting, LiteralList, MaskConfigError, MaskingSection, RegexDetector,
};
pub use engine::Engine;
pub use filter::{filter_for, filter_for_grpc, is_event_stream, BodyFilter};

/// How a response is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Apply each detector's action (mask, redact, hash, block).
    #[default]
    Enforce,
    /// Count detections, change nothing, never block (for rolling out new detectors).
    Detect,
}

/// Why a filter stopped the response. The filter has already written its format's terminal
/// error (if it has one) into `out`; the caller ends the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskError {
    /// A `block` detector matched.
    Blocked {
        detector: Arc<str>,
        category: Arc<str>,
    },
    /// Vectorscan reported an error; nothing unscanned was released.
    Scan(String),
    /// Text would have to be held beyond `max_hold_bytes` (cannot happen with a config that
    /// compiled; checked anyway so a bug fails closed).
    HoldExceeded { held: usize, cap: usize },
    /// One SSE event grew past the filter's cap without ending; none of it was released.
    EventTooLarge { cap: usize },
    /// The filter already failed; it produces nothing more.
    Poisoned,
}

/// What masking saw in one response: for the recorder and the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Detector id → number of matches acted on (or, in detect mode, seen).
    pub detections: BTreeMap<Arc<str>, u64>,
    /// Most bytes held back at once by any one text stream of the response.
    pub max_held_bytes: usize,
    /// Longest time any byte was held back (arrival to release).
    pub max_hold: Duration,
    /// The `block` detector that ended the response, if one did.
    pub blocked: Option<Arc<str>>,
    /// A scan error that ended the response (or, in detect mode, stopped counting).
    pub error: Option<String>,
}

// === impl MaskError ===

impl fmt::Display for MaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaskError::Blocked { detector, category } => {
                write!(
                    f,
                    "response blocked by masking policy (detector {detector}, category {category})"
                )
            }
            MaskError::Scan(msg) => write!(f, "masking scan failed: {msg}"),
            MaskError::HoldExceeded { held, cap } => {
                write!(
                    f,
                    "masking would hold {held} bytes, more than max_hold_bytes = {cap}"
                )
            }
            MaskError::EventTooLarge { cap } => {
                write!(f, "an SSE event grew past {cap} bytes without ending")
            }
            MaskError::Poisoned => f.write_str("masking already failed for this response"),
        }
    }
}

impl std::error::Error for MaskError {}

// === impl Verdict ===

impl Verdict {
    /// True when any detector matched.
    pub fn found_anything(&self) -> bool {
        self.detections.values().any(|&n| n > 0)
    }

    pub(crate) fn count(&mut self, detector: &Arc<str>) {
        *self.detections.entry(Arc::clone(detector)).or_insert(0) += 1;
    }

    pub(crate) fn note_error(&mut self, err: &MaskError) {
        match err {
            MaskError::Blocked { detector, .. } => self.blocked = Some(Arc::clone(detector)),
            MaskError::Poisoned => {}
            other => self.error = Some(other.to_string()),
        }
    }
}
