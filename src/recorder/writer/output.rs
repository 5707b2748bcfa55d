//! The writer's internals: encoding an event into the pending batch, compressing, writing,
//! sealing, and entering the failed state. Split from `writer.rs` so that file reads as the API
//! the pipeline calls.

use std::io;
use std::time::{Instant, SystemTime};

use super::{Failure, OpenSession, SegmentWriter, SessionId, State, Sync, MAX_CHUNK};
use crate::recorder::codec::{self, Seal};
use crate::recorder::config::{Durability, FsyncPolicy};
use crate::recorder::format::{self, MAX_PAYLOAD};
use crate::recorder::segment::{unix_us, Active};
use crate::recorder::sign;

impl SegmentWriter {
    pub(super) fn session(&self, sid: SessionId) -> io::Result<&OpenSession> {
        self.sessions.get(&sid).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "unknown or ended recording session",
            )
        })
    }

    pub(super) fn chunk(
        &mut self,
        sid: SessionId,
        tag: u8,
        offset_us: u64,
        data: &[u8],
    ) -> io::Result<()> {
        if data.is_empty() {
            return self.push(Sync::Now, |out| {
                codec::put_chunk(out, tag, sid.0, offset_us, data)
            });
        }
        for part in data.chunks(MAX_CHUNK) {
            self.push(Sync::Now, |out| {
                codec::put_chunk(out, tag, sid.0, offset_us, part)
            })?;
        }
        Ok(())
    }

    /// Adds one encoded event to the batch. In event mode body chunks and session ends
    /// (`Sync::Now`) write the batch at once, so they are in the kernel before the bytes are
    /// forwarded; the session start, response head and trailers (`Sync::Deferred`) ride along
    /// with the next write. Fewer zstd flushes and `write(2)`s per exchange are most of
    /// what recording costs per request.
    pub(super) fn push(&mut self, sync: Sync, put: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        self.check_open()?;
        if self.active()?.len >= self.settings.segment_max_bytes {
            self.rotate()?;
        }
        if self.batch.is_empty() {
            // A streamed record writes its index once, when it starts.
            if self.streamer.is_none() {
                let index = self.active()?.records;
                codec::begin_payload(&mut self.batch, index);
            }
            self.batch_since = Some(Instant::now());
        }
        put(&mut self.batch);
        let full = match self.settings.durability {
            Durability::Event => sync == Sync::Now || self.batch.len() >= MAX_PAYLOAD / 2,
            Durability::Interval { bytes, .. } => self.batch.len() >= bytes.min(MAX_PAYLOAD / 2),
        };
        if full {
            self.flush()?;
        }
        Ok(())
    }

    /// Compresses a payload and writes it as the next record.
    pub(super) fn write_payload(&mut self, payload: &[u8]) -> io::Result<()> {
        self.frame.clear();
        self.frame
            .reserve(zstd::zstd_safe::compress_bound(payload.len()));
        if let Err(e) = self.compressor.compress_to_buffer(payload, &mut self.frame) {
            return Err(self.fail(e));
        }
        let State::Open(active) = &mut self.state else {
            return Err(self.not_open());
        };
        if let Err(e) = active.write_frame(&self.frame, &mut self.record) {
            return Err(self.fail(e));
        }
        Ok(())
    }

    /// Appends a batch of items to the open streamed record (event durability).
    pub(super) fn write_streamed(&mut self, batch: &[u8]) -> io::Result<()> {
        let (State::Open(active), Some(streamer)) = (&mut self.state, &mut self.streamer) else {
            return Err(self.not_open());
        };
        if let Err(e) = streamer.append(active, batch, &mut self.record) {
            return Err(self.fail(e));
        }
        Ok(())
    }

    /// Ends the open streamed record, if any.
    pub(super) fn end_stream(&mut self) -> io::Result<()> {
        let (State::Open(active), Some(streamer)) = (&mut self.state, &mut self.streamer) else {
            return Ok(());
        };
        if let Err(e) = streamer.end(active, &mut self.record) {
            return Err(self.fail(e));
        }
        Ok(())
    }

    /// Writes the seal record; returns its hash (the next segment's link).
    pub(super) fn seal(&mut self) -> io::Result<format::Hash> {
        self.end_stream()?;
        let (records, head, seq) = {
            let a = self.active()?;
            (a.records, a.head, a.seq)
        };
        let signature = self
            .settings
            .signing_key
            .as_ref()
            .map(|k| sign::sign(k, &codec::seal_message(self.worker, seq, records, &head)));
        let seal = Seal {
            records,
            head: codec::hex(&head),
            sealed_at_us: unix_us(SystemTime::now()),
            signature,
        };
        let mut payload = Vec::new();
        codec::begin_payload(&mut payload, records);
        codec::put_seal(&mut payload, &seal);
        self.write_payload(&payload)?;
        if self.settings.fsync != FsyncPolicy::Never {
            self.sync()?;
        }
        Ok(self.active()?.head)
    }

    pub(super) fn sync(&mut self) -> io::Result<()> {
        let State::Open(active) = &mut self.state else {
            return Err(self.not_open());
        };
        if let Err(e) = active.sync() {
            return Err(self.fail(e));
        }
        Ok(())
    }

    pub(super) fn active(&self) -> io::Result<&Active> {
        match &self.state {
            State::Open(a) => Ok(a),
            _ => Err(self.not_open()),
        }
    }

    pub(super) fn check_open(&self) -> io::Result<()> {
        self.active().map(|_| ())
    }

    pub(super) fn not_open(&self) -> io::Error {
        match &self.state {
            State::Failed(f) => io::Error::new(
                f.kind,
                format!("recording stopped after an earlier error: {}", f.message),
            ),
            _ => io::Error::other("recording is closed"),
        }
    }

    /// Enters `Failed` and hands the error back.
    pub(super) fn fail(&mut self, e: io::Error) -> io::Error {
        tracing::error!(error = %e, worker = self.worker, "recording write failed; writer stopped");
        self.state = State::Failed(Failure {
            kind: e.kind(),
            os_error: e.raw_os_error(),
            message: e.to_string(),
        });
        self.batch.clear();
        self.batch_since = None;
        if let Some(s) = &mut self.streamer {
            s.abandon();
        }
        e
    }
}
