//! [`SegmentWriter`]: one per worker thread, appending that worker's sessions to its own chain of
//! segment files.
//!
//! ```text
//!            open()                      write error (ENOSPC, EIO, EROFS, …)
//!   ──────▶ Open ─────────────────────────────────────────▶ Failed   (every later call errors;
//!            │ ▲  append / flush / rotate (seal + next)                nothing more is written)
//!            │ └───────────┘
//!            └── close() ──▶ Closed   (sealed)
//! ```
//!
//! Durability, per deployment:
//! * `Event`: every body chunk is compressed and written before the call returns, as flushed
//!   blocks of the open streamed record (`stream.rs`); session metadata (start, response head,
//!   trailers) waits in the batch and rides along with the next write. The pipeline appends a
//!   chunk before forwarding it, so a gateway crash cannot lose anything the client received.
//!   Session ends are written at once, so an exchange that completed never reads as cut off.
//! * `Interval`: events are batched into one record, written when `flush_bytes` accumulate or
//!   when [`SegmentWriter::maybe_flush`] finds the batch older than `flush_interval`. Larger frames
//!   compress far better; a crash loses at most the unflushed batch.
//!
//! fsync is a separate policy (`Never`, `Interval`, `Segment`): it protects against power loss,
//! not process death, and is the one call here that can take milliseconds.
//!
//! A failed write puts the writer in `Failed` for good (the owner decides between fail closed and
//! fail open, and recovers by opening a new writer, which starts a new segment linked to the last
//! complete record). Already-written records are never touched: a partial record is cut off when
//! the file system allows, otherwise the reader reports it as a truncated tail.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io;
use std::time::{Instant, SystemTime};

use super::codec;
use super::config::{Durability, FsyncPolicy, WriterSettings};
use super::format::{self, SegmentHeader};
use super::model::{Event, Headers, ResponseHead, SessionEnd, SessionStart, Trailers};
use super::segment::{resume_point, unix_us, Active};
use super::sink::{ensure_private_dir, ensure_private_file, FileStorage, Storage};

mod output;
mod stream;

/// Chunks larger than this are recorded as several events with the same offset, keeping every
/// payload far below what a reader accepts.
const MAX_CHUNK: usize = 1 << 20;

/// When an event must reach the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sync {
    /// Body bytes: before they are forwarded (event durability).
    Now,
    /// Session metadata: with the next write.
    Deferred,
}

/// A session's handle, valid for the writer that issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(u64);

/// Why the writer stopped.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: io::ErrorKind,
    pub os_error: Option<i32>,
    pub message: String,
}

enum State {
    Open(Active),
    Failed(Failure),
    Closed,
}

struct OpenSession {
    request_id: String,
    record_request_body: bool,
    record_upstream_body: bool,
}

pub struct SegmentWriter {
    settings: WriterSettings,
    worker: u32,
    storage: Box<dyn Storage>,
    state: State,
    sessions: HashMap<SessionId, OpenSession>,
    next_sid: u64,
    /// Length-prefixed records: interval batches, seals, re-announcements.
    compressor: zstd::bulk::Compressor<'static>,
    /// Event durability's open record.
    streamer: Option<stream::Streamer>,
    /// The payload being batched (empty when nothing is pending): interval mode, and session
    /// metadata waiting for the next chunk in event mode.
    batch: Vec<u8>,
    batch_since: Option<Instant>,
    last_sync: Instant,
    /// Reused buffers: one for compressed frames, one for the
    /// framed record.
    frame: Vec<u8>,
    record: Vec<u8>,
}

impl SegmentWriter {
    /// Opens the writer for `worker` on the local file system: creates or repairs the directory
    /// (0700), and starts a new segment linked to where this worker's chain left off.
    pub fn open(settings: WriterSettings, worker: u32) -> io::Result<SegmentWriter> {
        SegmentWriter::open_with(settings, worker, Box::new(FileStorage))
    }

    /// Like [`SegmentWriter::open`], with segment files made by `storage` (tests inject faults).
    pub fn open_with(
        settings: WriterSettings,
        worker: u32,
        mut storage: Box<dyn Storage>,
    ) -> io::Result<SegmentWriter> {
        if ensure_private_dir(&settings.dir)? {
            tracing::warn!(dir = %settings.dir.display(), "recording directory was not 0700; fixed");
        }
        for (w, _, path) in super::segment::list_segments(&settings.dir)? {
            if w == worker && ensure_private_file(&path)? {
                tracing::warn!(file = %path.display(), "segment was not 0600; fixed");
            }
        }
        let (seq, prev) = resume_point(&settings.dir, worker)?;
        let header = SegmentHeader {
            version: format::VERSION,
            worker,
            seq,
            created_us: unix_us(SystemTime::now()),
            prev,
            dict: settings.dictionary.clone(),
        };
        let sync = settings.fsync != FsyncPolicy::Never;
        let active = Active::create(storage.as_mut(), &settings.dir, &header, sync)?;
        let mut compressor =
            zstd::bulk::Compressor::with_dictionary(settings.zstd_level, &settings.dictionary)?;
        compressor.include_checksum(true)?;
        compressor.include_contentsize(true)?;
        let streamer = match settings.durability {
            Durability::Event => Some(stream::Streamer::new(
                settings.zstd_level,
                &settings.dictionary,
            )?),
            Durability::Interval { .. } => None,
        };
        Ok(SegmentWriter {
            settings,
            worker,
            storage,
            state: State::Open(active),
            sessions: HashMap::new(),
            next_sid: 0,
            compressor,
            streamer,
            batch: Vec::new(),
            batch_since: None,
            last_sync: Instant::now(),
            frame: Vec::new(),
            record: Vec::new(),
        })
    }

    // --- sessions ---

    /// Records the start of a session and returns its handle. Secret header values are redacted
    /// here even if the caller did not.
    pub fn start_session<H: Headers>(&mut self, start: &SessionStart<H>) -> io::Result<SessionId> {
        let sid = SessionId(self.next_sid);
        let mut start = Cow::Borrowed(start);
        if start.request.headers.needs_redaction() {
            start.to_mut().request.headers.redact();
        }
        let open = OpenSession {
            request_id: start.request_id.clone(),
            record_request_body: start.record_request_body,
            record_upstream_body: start.record_upstream_body,
        };
        self.push(Sync::Deferred, |out| codec::put_start(out, sid.0, &start))?;
        self.next_sid += 1;
        self.sessions.insert(sid, open);
        Ok(sid)
    }

    /// Records raw request body bytes, if the session's route records request bodies; otherwise
    /// does nothing (the `SessionStart` says they were not recorded).
    pub fn request_chunk(&mut self, sid: SessionId, offset_us: u64, data: &[u8]) -> io::Result<()> {
        if !self.session(sid)?.record_request_body {
            return Ok(());
        }
        self.chunk(sid, codec::request_chunk_tag(), offset_us, data)
    }

    /// Records the model server's unmasked body bytes, if the session's route records them;
    /// otherwise does nothing (the `SessionStart` says they were not recorded).
    pub fn upstream_chunk(
        &mut self,
        sid: SessionId,
        offset_us: u64,
        data: &[u8],
    ) -> io::Result<()> {
        if !self.session(sid)?.record_upstream_body {
            return Ok(());
        }
        self.chunk(sid, codec::upstream_chunk_tag(), offset_us, data)
    }

    pub fn response_head<H: Headers>(
        &mut self,
        sid: SessionId,
        head: &ResponseHead<H>,
    ) -> io::Result<()> {
        self.session(sid)?;
        let mut head = Cow::Borrowed(head);
        if head.headers.needs_redaction() {
            head.to_mut().headers.redact();
        }
        self.push(Sync::Deferred, |out| {
            codec::put_response_head(out, sid.0, &head)
        })
    }

    /// Records response bytes as the client gets them. Call before forwarding them: with
    /// `Event` durability the bytes are in the kernel when this returns.
    pub fn response_chunk(
        &mut self,
        sid: SessionId,
        offset_us: u64,
        data: &[u8],
    ) -> io::Result<()> {
        self.session(sid)?;
        self.chunk(sid, codec::response_chunk_tag(), offset_us, data)
    }

    pub fn trailers(&mut self, sid: SessionId, trailers: &Trailers) -> io::Result<()> {
        self.session(sid)?;
        self.push(Sync::Deferred, |out| {
            codec::put_trailers(out, sid.0, trailers)
        })
    }

    /// Records the end of a session; the handle is invalid afterwards.
    pub fn end_session(&mut self, sid: SessionId, end: &SessionEnd) -> io::Result<()> {
        self.session(sid)?;
        // The end is written at once: after a crash, an exchange that completed must not read
        // as cut off.
        self.push(Sync::Now, |out| codec::put_end(out, sid.0, end))?;
        self.sessions.remove(&sid);
        Ok(())
    }

    /// Appends any event (used by tests and tools; the pipeline uses the typed calls above).
    pub fn append(&mut self, sid: SessionId, event: &Event) -> io::Result<()> {
        match event {
            Event::SessionStart(_) | Event::SessionContinue { .. } => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "sessions start with start_session",
            )),
            Event::RequestChunk(c) => self.request_chunk(sid, c.offset_us, &c.data),
            Event::ResponseHead(h) => self.response_head(sid, h),
            Event::ResponseChunk(c) => self.response_chunk(sid, c.offset_us, &c.data),
            Event::UpstreamChunk(c) => self.upstream_chunk(sid, c.offset_us, &c.data),
            Event::Trailers(t) => self.trailers(sid, t),
            Event::SessionEnd(e) => self.end_session(sid, e),
        }
    }

    // --- time-driven work ---

    /// Called periodically by the worker: writes a batch older than `flush_interval`, rotates a
    /// segment older than `segment_max_age`, and fsyncs under the `Interval` policy.
    pub fn maybe_flush(&mut self, now: Instant) -> io::Result<()> {
        self.check_open()?;
        match (self.settings.durability, self.batch_since) {
            (Durability::Interval { every, .. }, Some(since))
                if now.saturating_duration_since(since) < every => {}
            (_, Some(_)) => self.flush()?,
            (_, None) => {}
        }
        if let (State::Open(active), Some(streamer)) = (&mut self.state, &mut self.streamer) {
            if let Err(e) = streamer.idle_tick(now, active, &mut self.record) {
                return Err(self.fail(e));
            }
        }
        let open_record = self.streamer.as_ref().is_some_and(|s| s.is_open());
        let age = match &self.state {
            State::Open(a) => {
                (a.records > 0 || open_record).then(|| now.saturating_duration_since(a.opened))
            }
            _ => None,
        };
        if age.is_some_and(|age| age >= self.settings.segment_max_age) {
            self.rotate()?;
        }
        if let FsyncPolicy::Interval(every) = self.settings.fsync {
            if now.saturating_duration_since(self.last_sync) >= every {
                self.sync()?;
                self.last_sync = now;
            }
        }
        Ok(())
    }

    /// Writes the pending batch, if any: as a record of its own in interval mode, into the open
    /// streamed record in event mode.
    pub fn flush(&mut self) -> io::Result<()> {
        self.check_open()?;
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_since = None;
        let r = if self.streamer.is_some() {
            self.write_streamed(&batch)
        } else {
            self.write_payload(&batch)
        };
        self.batch = batch;
        self.batch.clear();
        r
    }

    /// Seals the current segment and continues in a new one.
    pub fn rotate(&mut self) -> io::Result<()> {
        self.flush()?;
        let prev = self.seal()?;
        let header = SegmentHeader {
            version: format::VERSION,
            worker: self.worker,
            seq: self.active()?.seq + 1,
            created_us: unix_us(SystemTime::now()),
            prev: format::PrevLink::Sealed(prev),
            dict: self.settings.dictionary.clone(),
        };
        let sync = self.settings.fsync != FsyncPolicy::Never;
        let next = Active::create(self.storage.as_mut(), &self.settings.dir, &header, sync);
        match next {
            Ok(a) => self.state = State::Open(a),
            Err(e) => return Err(self.fail(e)),
        }
        // Re-announce open sessions so the new segment is readable on its own.
        if !self.sessions.is_empty() {
            let mut payload = Vec::new();
            codec::begin_payload(&mut payload, 0);
            for (sid, s) in &self.sessions {
                let ev = Event::SessionContinue {
                    request_id: s.request_id.clone(),
                };
                codec::put_event(&mut payload, sid.0, &ev);
            }
            self.write_payload(&payload)?;
        }
        Ok(())
    }

    /// Seals the current segment (flushing and fsyncing unless the policy is `Never`) and stops.
    pub fn close(mut self) -> io::Result<()> {
        self.flush()?;
        self.seal()?;
        self.state = State::Closed;
        Ok(())
    }

    /// Deletes old segments in the directory per the retention settings (all workers' sealed
    /// segments; never the newest segment of any worker).
    pub fn enforce_retention(&self, now: SystemTime) -> io::Result<super::retention::Removed> {
        super::retention::enforce(&self.settings.dir, &self.settings.retention, now)
    }

    // --- state ---

    pub fn is_failed(&self) -> bool {
        matches!(self.state, State::Failed(_))
    }

    pub fn failure(&self) -> Option<&Failure> {
        match &self.state {
            State::Failed(f) => Some(f),
            _ => None,
        }
    }

    /// The segment being written, while open.
    pub fn current_segment(&self) -> Option<&std::path::Path> {
        match &self.state {
            State::Open(a) => Some(&a.path),
            _ => None,
        }
    }

    /// Sessions started and not yet ended.
    pub fn open_sessions(&self) -> usize {
        self.sessions.len()
    }
}

impl Drop for SegmentWriter {
    /// Writes a pending batch and ends an open streamed record (unsealed: the next writer links
    /// to it as Recovered).
    fn drop(&mut self) {
        if matches!(self.state, State::Open(_)) {
            let _ = self.flush();
            let _ = self.end_stream();
        }
    }
}

/// Time since a session started, in µs, for chunk offsets.
pub fn offset_us(started: Instant, now: Instant) -> u64 {
    now.saturating_duration_since(started)
        .as_micros()
        .min(u128::from(u64::MAX)) as u64
}
