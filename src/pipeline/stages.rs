//! The body stages of one exchange: masking rewrites a chunk, then the recorder tees what the
//! peer will receive, then the chunk is forwarded.
//!
//! Order matters and is fixed here: the recording holds what the client *saw* (masked), and with
//! `event` durability each chunk is handed to the kernel before it is forwarded, so a gateway
//! crash never loses bytes a client already received.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::body::{BodyStage, Stop};
use super::Dir;
use crate::error::{Error, ErrorKind};
use crate::grpc::status::Code;
use crate::http::head::Fields;
use crate::masking::{
    filter_for, filter_for_grpc, is_event_stream, BodyFilter, MaskError, Masker, Mode, Verdict,
};
use crate::policy::grpc_model::{GrpcModelScan, Named};
use crate::policy::model::{ModelScan, Scan};
use crate::recorder::{
    offset_us, OnDiskError, RecorderConfig, SegmentWriter, SessionId, Trailers, WriterSettings,
};

/// The worker's recorder: one segment writer, owned by the worker thread.
///
/// A writer that failed (disk full, I/O error) is replaced by a fresh one once the disk takes
/// writes again (`runtime::recorder_upkeep`); `epoch` counts the replacements so sessions begun
/// on a failed writer never write into its successor.
pub struct Recorder {
    pub writer: RefCell<SegmentWriter>,
    pub on_disk_error: OnDiskError,
    pub epoch: Cell<u64>,
    settings: WriterSettings,
    worker: u32,
}

impl Recorder {
    pub fn open(config: &RecorderConfig, worker: u32) -> std::io::Result<Recorder> {
        Ok(Recorder {
            writer: RefCell::new(SegmentWriter::open(config.writer.clone(), worker)?),
            on_disk_error: config.on_disk_error,
            epoch: Cell::new(0),
            settings: config.writer.clone(),
            worker,
        })
    }

    /// Starts a new segment after a failure. The failed segment is left as it is: every record
    /// before the failure still verifies, and the new segment links to where the chain left off.
    pub fn reopen(&self) {
        match SegmentWriter::open(self.settings.clone(), self.worker) {
            Ok(fresh) => {
                *self.writer.borrow_mut() = fresh;
                self.epoch.set(self.epoch.get() + 1);
                tracing::info!(worker = self.worker, "session recording recovered");
            }
            Err(e) => {
                tracing::debug!(worker = self.worker, error = %e, "session recording still unavailable")
            }
        }
    }
}

/// One exchange's session in the recorder.
pub struct Session {
    pub recorder: Rc<Recorder>,
    pub id: SessionId,
    /// The recorder's epoch when the session started.
    pub epoch: u64,
    pub started: Instant,
    /// A write failed in `fail_open` mode: the rest of the exchange goes unrecorded. A `Cell`,
    /// so the two directions of a duplex exchange can share the session.
    pub abandoned: Cell<bool>,
}

impl Session {
    /// Applies `write` to the writer; a failure ends the stream (fail closed) or abandons the
    /// recording of this session (fail open). Either way it is logged once and counted.
    pub fn write(
        &self,
        write: impl FnOnce(&mut SegmentWriter, SessionId, u64) -> std::io::Result<()>,
    ) -> Result<(), Error> {
        if self.abandoned.get() {
            return Ok(());
        }
        let offset = offset_us(self.started, Instant::now());
        let result = match self.recorder.epoch.get() == self.epoch {
            true => write(&mut self.recorder.writer.borrow_mut(), self.id, offset),
            false => Err(std::io::Error::other("the session's segment writer failed")),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::error!(error = %e, "session recording failed");
                self.abandoned.set(true);
                match self.recorder.on_disk_error {
                    OnDiskError::FailClosed => Err(Error::internal(ErrorKind::RecorderUnavailable)),
                    OnDiskError::FailOpen => Ok(()),
                }
            }
        }
    }
}

/// Longest gRPC `model_name` the guard keeps; a longer one is not a model it admitted.
const MAX_MODEL_NAME: usize = 1024;

/// The request body's model guard, by format: the decided model, and for gRPC whether every
/// message so far named it.
enum ModelGuard {
    Json(ModelScan, Option<String>),
    Grpc(GrpcModelScan, Option<String>, bool),
}

/// Masking and recording for one direction of one exchange.
pub struct Stages<'a> {
    dir: Dir,
    mask: Option<Box<dyn BodyFilter>>,
    /// The body is SSE: a masking stop ends it with an error event rather than cutting it.
    sse: bool,
    session: Option<&'a Session>,
    out: BytesMut,
    /// Request bodies whose model the policy read from their first bytes: a scan of the whole
    /// body that refuses any other model.
    model_guard: Option<ModelGuard>,
    /// Also record the body as it arrived, before masking (`route.record_raw`).
    tee_upstream: bool,
    /// The `grpc-status` of the trailers that ended the body.
    pub grpc_status: Option<Code>,
}

impl<'a> Stages<'a> {
    /// `masking`: the route's mode and the compiled detectors, if this body is masked;
    /// `content_type` picks the format (SSE, JSON, plain), and `grpc_path` makes it a gRPC
    /// call's messages for that method.
    pub fn new(
        dir: Dir,
        masking: Option<(&Arc<Masker>, Mode)>,
        content_type: Option<&[u8]>,
        grpc_path: Option<&str>,
        session: Option<&'a Session>,
    ) -> Self {
        Stages {
            dir,
            mask: masking.map(|(masker, mode)| match grpc_path {
                Some(path) => filter_for_grpc(masker, path, dir == Dir::Request, mode),
                None => filter_for(masker, content_type, mode),
            }),
            sse: is_event_stream(content_type),
            session,
            out: BytesMut::new(),
            model_guard: None,
            tee_upstream: false,
            grpc_status: None,
        }
    }

    /// Records each response chunk as the model server sent it, before masking rewrites it.
    pub fn record_upstream(&mut self) {
        self.tee_upstream = true;
    }

    /// Checks the whole body against the model the policy decided on: JSON parsers disagree on
    /// which of two `model` members wins, so a body with two is refused rather than forwarded;
    /// a gRPC call's every later message (a bidirectional stream carries many) must name the
    /// same model as the first.
    pub fn guard_model(&mut self, decided: Option<String>, grpc: bool) {
        self.model_guard = Some(match grpc {
            false => ModelGuard::Json(ModelScan::new(), decided),
            true => ModelGuard::Grpc(GrpcModelScan::new(u32::MAX, MAX_MODEL_NAME), decided, true),
        });
    }

    fn check_model(&mut self, data: &[u8], end: bool) -> Result<(), Stop> {
        let ok = match self.model_guard.as_mut() {
            None => true,
            Some(ModelGuard::Json(scan, decided)) => {
                let verdict = match end {
                    false => scan.feed(data),
                    true => scan.finish(),
                };
                match verdict {
                    Scan::Invalid(_) => false,
                    Scan::Found(m) => decided.as_deref() == Some(m.as_str()),
                    Scan::NeedMore | Scan::Absent => !end || decided.is_none(),
                }
            }
            Some(ModelGuard::Grpc(scan, decided, ok)) => {
                let fed = scan.feed(data, |named| {
                    *ok &=
                        matches!(&named, Named::Model(m) if decided.as_deref() == Some(m.as_str()))
                });
                *ok && fed.is_ok() && (!end || scan.finish().is_ok())
            }
        };
        match ok {
            true => Ok(()),
            false => Err(Stop {
                last: Bytes::new(),
                ends_body: false,
                error: Error::downstream(ErrorKind::BadRequest(
                    "request body contradicts the model it was admitted for",
                )),
            }),
        }
    }

    /// Whether the body's bytes may change (so its length must not be promised up front).
    pub fn rewrites(masking: Option<(&Arc<Masker>, Mode)>) -> bool {
        matches!(masking, Some((_, Mode::Enforce)))
    }

    pub fn verdict(&self) -> Option<&Verdict> {
        self.mask.as_ref().map(|m| m.verdict())
    }

    /// Tees `data` to the recorder; on a fail-closed recorder error, ends the body.
    fn record(&mut self, data: &[u8]) -> Result<(), Stop> {
        let Some(session) = self.session else {
            return Ok(());
        };
        if data.is_empty() {
            return Ok(());
        }
        let dir = self.dir;
        session
            .write(|w, sid, offset| match dir {
                Dir::Request => w.request_chunk(sid, offset, data),
                Dir::Response => w.response_chunk(sid, offset, data),
            })
            .map_err(|error| Stop {
                last: Bytes::new(),
                ends_body: false,
                error,
            })
    }

    fn masked(&mut self, result: Result<(), MaskError>) -> Result<Bytes, Stop> {
        let out = self.out.split().freeze();
        match result {
            Ok(()) => Ok(out),
            Err(e) => {
                // What the filter wrote (an SSE error event) is what the client sees last;
                // record it too, so the recording shows how the stream ended.
                let _ = self.record(&out);
                Err(Stop {
                    last: out,
                    ends_body: self.sse,
                    error: Error::internal(ErrorKind::Masking(e)),
                })
            }
        }
    }
}

impl BodyStage for Stages<'_> {
    fn chunk(&mut self, data: Bytes) -> Result<Bytes, Stop> {
        self.check_model(&data, false)?;
        if self.tee_upstream {
            if let Some(session) = self.session {
                session
                    .write(|w, sid, offset| w.upstream_chunk(sid, offset, &data))
                    .map_err(|error| Stop {
                        last: Bytes::new(),
                        ends_body: false,
                        error,
                    })?;
            }
        }
        let out = match self.mask.as_mut() {
            None => data,
            Some(filter) => {
                let result = filter.on_chunk(&data, &mut self.out);
                self.masked(result)?
            }
        };
        self.record(&out)?;
        Ok(out)
    }

    fn end(&mut self, trailers: Option<&Fields>) -> Result<Bytes, Stop> {
        self.check_model(&[], true)?;
        self.grpc_status = trailers
            .and_then(|t| t.get("grpc-status"))
            .and_then(Code::parse);
        let out = match self.mask.as_mut() {
            None => Bytes::new(),
            Some(filter) => {
                let result = filter.on_end(&mut self.out);
                self.masked(result)?
            }
        };
        self.record(&out)?;
        if let (Some(t), Some(session)) = (trailers, self.session) {
            let headers = super::record::header_list(t);
            session
                .write(|w, sid, offset_us| w.trailers(sid, &Trailers { offset_us, headers }))
                .map_err(|error| Stop {
                    last: Bytes::new(),
                    ends_body: false,
                    error,
                })?;
        }
        Ok(out)
    }
}
