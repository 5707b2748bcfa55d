//! The body-filter interface the response path drives, and the plain-text filter.
//!
//! One filter per response, fed each chunk as it arrives from the upstream. The pipeline does
//! not know formats: [`filter_for`] picks one by content type. Each call appends what is safe
//! to send to `out`; on `Err` the filter has already written its format's terminal error (SSE
//! only) and the caller ends the response.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::grpc::{GrpcFilter, GrpcMethod};
use super::json::JsonFilter;
use super::sse::SseFilter;
use super::{Engine, MaskError, Masker, Mode, Verdict};
use crate::http::headers::{media_type, media_type_starts_with};

/// A streaming response-body filter.
pub trait BodyFilter {
    /// Takes the next chunk of the upstream body; appends what can be sent now to `out`.
    fn on_chunk(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), MaskError>;
    /// The upstream body ended: appends everything still held (masked) to `out`.
    fn on_end(&mut self, out: &mut BytesMut) -> Result<(), MaskError>;
    /// What was found so far.
    fn verdict(&self) -> &Verdict;
}

/// Picks the filter for a response's `Content-Type` (`None`: scanned as plain bytes).
///
/// `text/event-stream` → SSE; `application/json`, `*/*+json`, `application/x-ndjson` → JSON
/// (string values only); anything else → the bytes as text. In [`Mode::Detect`] the body
/// passes through byte for byte, immediately, and the filter only counts.
pub fn filter_for(
    masker: &Arc<Masker>,
    content_type: Option<&[u8]>,
    mode: Mode,
) -> Box<dyn BodyFilter> {
    let essence = content_type.map(media_type).unwrap_or_default();
    let inner: Box<dyn BodyFilter> = if essence == "text/event-stream" {
        Box::new(SseFilter::new(masker, mode))
    } else if essence == "application/json"
        || essence.ends_with("+json")
        || essence == "application/x-ndjson"
    {
        Box::new(JsonFilter::new(masker, mode))
    } else {
        Box::new(PlainFilter::new(masker, mode))
    };
    in_mode(inner, mode)
}

/// The filter for a gRPC call's messages to (`request`) or from the method at `path` (see
/// `grpc.rs`).
pub fn filter_for_grpc(
    masker: &Arc<Masker>,
    path: &str,
    request: bool,
    mode: Mode,
) -> Box<dyn BodyFilter> {
    let method = GrpcMethod::of(path, request);
    in_mode(Box::new(GrpcFilter::new(masker, mode, method)), mode)
}

/// In [`Mode::Detect`] the body passes through byte for byte and `inner` only counts.
fn in_mode(inner: Box<dyn BodyFilter>, mode: Mode) -> Box<dyn BodyFilter> {
    match mode {
        Mode::Enforce => inner,
        Mode::Detect => Box::new(DetectFilter {
            inner,
            sink: BytesMut::new(),
            stopped: false,
            verdict: Verdict::default(),
        }),
    }
}

/// Whether [`filter_for`] treats a body of this type as SSE (whose stops end the body with an
/// error event rather than cutting it).
pub fn is_event_stream(content_type: Option<&[u8]>) -> bool {
    content_type.is_some_and(|ct| {
        media_type_starts_with(ct, "text/event-stream") && media_type(ct) == "text/event-stream"
    })
}

/// Plain text or unknown types: the body bytes are the text.
pub(crate) struct PlainFilter {
    lazy: LazyEngine,
    scratch: Vec<u8>,
    verdict: Verdict,
}

/// Detect mode: the body goes out untouched at once; the inner filter only counts.
struct DetectFilter {
    inner: Box<dyn BodyFilter>,
    sink: BytesMut,
    stopped: bool,
    verdict: Verdict,
}

/// An engine opened on first use, so that a failure to open one fails the response closed
/// instead of failing filter construction.
pub(crate) struct LazyEngine {
    masker: Arc<Masker>,
    mode: Mode,
    engine: Option<Engine>,
}

// === impl PlainFilter ===

impl PlainFilter {
    pub(crate) fn new(masker: &Arc<Masker>, mode: Mode) -> PlainFilter {
        PlainFilter {
            lazy: LazyEngine::new(masker, mode),
            scratch: Vec::new(),
            verdict: Verdict::default(),
        }
    }
}

impl BodyFilter for PlainFilter {
    fn on_chunk(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), MaskError> {
        self.scratch.clear();
        let result = self
            .lazy
            .get(&mut self.verdict)
            .and_then(|e| e.feed(data, Instant::now(), &mut self.scratch, &mut self.verdict));
        out.extend_from_slice(&self.scratch);
        result
    }

    fn on_end(&mut self, out: &mut BytesMut) -> Result<(), MaskError> {
        self.scratch.clear();
        let result = self
            .lazy
            .get(&mut self.verdict)
            .and_then(|e| e.finish(Instant::now(), &mut self.scratch, &mut self.verdict));
        out.extend_from_slice(&self.scratch);
        result
    }

    fn verdict(&self) -> &Verdict {
        &self.verdict
    }
}

// === impl DetectFilter ===

impl DetectFilter {
    fn run(&mut self, data: &[u8], end: bool, out: &mut BytesMut) -> Result<(), MaskError> {
        out.extend_from_slice(data);
        if self.stopped {
            return Ok(());
        }
        self.sink.clear();
        let result = if end {
            self.inner.on_end(&mut self.sink)
        } else {
            self.inner.on_chunk(data, &mut self.sink)
        };
        self.verdict = self.inner.verdict().clone();
        if let Err(err) = result {
            // Counting failed; the response is unaffected in detect mode.
            self.stopped = true;
            self.verdict.note_error(&err);
        }
        Ok(())
    }
}

impl BodyFilter for DetectFilter {
    fn on_chunk(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), MaskError> {
        self.run(data, false, out)
    }

    fn on_end(&mut self, out: &mut BytesMut) -> Result<(), MaskError> {
        self.run(&[], true, out)
    }

    fn verdict(&self) -> &Verdict {
        &self.verdict
    }
}

// === impl LazyEngine ===

impl LazyEngine {
    pub(crate) fn new(masker: &Arc<Masker>, mode: Mode) -> LazyEngine {
        LazyEngine {
            masker: Arc::clone(masker),
            mode,
            engine: None,
        }
    }

    pub(crate) fn get(&mut self, verdict: &mut Verdict) -> Result<&mut Engine, MaskError> {
        let engine = match self.engine.take() {
            Some(engine) => engine,
            None => {
                Engine::new(&self.masker, self.mode).inspect_err(|err| verdict.note_error(err))?
            }
        };
        Ok(self.engine.insert(engine))
    }
}
