//! Event durability's streamed record: one zstd frame kept open across many writes.
//!
//! Each batch of events (a body chunk, and the metadata waiting with it) is compressed with
//! `ZSTD_e_flush` and written at once, so it is in the kernel before the bytes are forwarded;
//! but it is compressed as a continuation of the same frame, so it refers back to every earlier
//! event of the record instead of standing alone. A 280-byte SSE event that shares its envelope,
//! ids and model name with the one before costs a few bytes of matches plus its new words,
//! where a frame of its own paid for the frame header, a checksum, a link and whatever the
//! dictionary could not predict.
//!
//! The record ends (last block, checksum) once `RECORD_BYTES` of payload went in, before a seal,
//! after `IDLE_END` without events or after `MAX_OPEN`; only then does it get its hash and
//! become the next record's link. Its complete blocks are readable before that (see
//! `format::scan`).

use std::io;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective;
use zstd::zstd_safe::{CCtx, CParameter, InBuffer, OutBuffer, ResetDirective};

use crate::recorder::codec;
use crate::recorder::format;
use crate::recorder::segment::Active;

/// Payload bytes after which a streamed record is ended. Larger records compress a little
/// better; this bounds what a reader decompresses at once and how long a record waits for its
/// hash.
pub(super) const RECORD_BYTES: usize = 256 * 1024;

/// How long an open record may go without an append before it is ended.
const IDLE_END: Duration = Duration::from_secs(1);

/// How long a record may stay open at all (counted in upkeep ticks).
const MAX_OPEN: Duration = Duration::from_secs(60);

/// zstd's window, about one record's payload (a frame cannot refer before its own start).
const WINDOW_LOG: u32 = 18;

pub(super) struct Streamer {
    cctx: CCtx<'static>,
    /// Hash of the open record's bytes so far, and its payload length; `None` between records.
    open: Option<(Sha256, usize)>,
    /// Something was appended since the last [`Streamer::idle_tick`].
    appended: bool,
    /// The last tick that found appends (or found no record open).
    busy_at: Option<Instant>,
    /// The first tick that found the current record open.
    open_since: Option<Instant>,
}

impl Streamer {
    pub(super) fn new(level: i32, dictionary: &[u8]) -> io::Result<Streamer> {
        let mut cctx = CCtx::create();
        let params = [
            CParameter::CompressionLevel(level),
            CParameter::ChecksumFlag(true),
            CParameter::ContentSizeFlag(false),
            CParameter::DictIdFlag(false),
            CParameter::WindowLog(WINDOW_LOG),
        ];
        for p in params {
            cctx.set_parameter(p).map_err(zstd_error)?;
        }
        cctx.load_dictionary(dictionary).map_err(zstd_error)?;
        Ok(Streamer {
            cctx,
            open: None,
            appended: false,
            busy_at: None,
            open_since: None,
        })
    }

    pub(super) fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Called on each upkeep tick (`now`): ends a record that got nothing for `IDLE_END`, so a
    /// quiet gateway's last events get their hash (and the next record's link) without waiting
    /// for more traffic, and any record open for `MAX_OPEN`, so a trickle of events cannot keep
    /// them unlinked for long. A slow stream (a token a second or more) keeps its record open
    /// meanwhile, and with it the history its events compress against.
    pub(super) fn idle_tick(
        &mut self,
        now: Instant,
        active: &mut Active,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        if self.open.is_none() {
            (self.busy_at, self.open_since, self.appended) = (Some(now), None, false);
            return Ok(());
        }
        let since = *self.open_since.get_or_insert(now);
        let busy = std::mem::take(&mut self.appended);
        if busy {
            self.busy_at = Some(now);
        }
        let idle = self
            .busy_at
            .is_none_or(|t| now.saturating_duration_since(t) >= IDLE_END);
        if idle || now.saturating_duration_since(since) >= MAX_OPEN {
            self.open_since = None;
            return self.end(active, out);
        }
        Ok(())
    }

    /// Appends `batch` (encoded items) to the open record, starting one if needed, and writes
    /// the result; ends the record once it is large enough. `out` is scratch.
    pub(super) fn append(
        &mut self,
        active: &mut Active,
        batch: &[u8],
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        out.clear();
        let (mut hasher, mut raw) = match self.open.take() {
            Some(open) => open,
            None => {
                format::encode_stream_envelope(out, &active.head);
                self.cctx
                    .reset(ResetDirective::SessionOnly)
                    .map_err(zstd_error)?;
                let mut index = Vec::with_capacity(10);
                codec::begin_payload(&mut index, active.records);
                self.compress(&index, ZSTD_EndDirective::ZSTD_e_continue, out)?;
                (Sha256::new(), index.len())
            }
        };
        raw += batch.len();
        self.appended = true;
        let end = raw >= RECORD_BYTES;
        let op = if end {
            ZSTD_EndDirective::ZSTD_e_end
        } else {
            ZSTD_EndDirective::ZSTD_e_flush
        };
        self.compress(batch, op, out)?;
        active.write_open(out)?;
        hasher.update(&out[..]);
        if end {
            active.close_open(hasher.finalize().into());
        } else {
            self.open = Some((hasher, raw));
        }
        Ok(())
    }

    /// Ends the open record, if any (before a seal, or when the writer stops).
    pub(super) fn end(&mut self, active: &mut Active, out: &mut Vec<u8>) -> io::Result<()> {
        let Some((mut hasher, _)) = self.open.take() else {
            return Ok(());
        };
        out.clear();
        self.compress(&[], ZSTD_EndDirective::ZSTD_e_end, out)?;
        active.write_open(out)?;
        hasher.update(&out[..]);
        active.close_open(hasher.finalize().into());
        Ok(())
    }

    /// Forgets the open record after a failed write (the file was cut back to its last whole
    /// block; the next writer links to that).
    pub(super) fn abandon(&mut self) {
        self.open = None;
    }

    /// Runs zstd until `input` is consumed and, for a flush or an end, everything is out.
    fn compress(
        &mut self,
        input: &[u8],
        op: ZSTD_EndDirective,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let mut input = InBuffer::around(input);
        loop {
            out.reserve(zstd::zstd_safe::compress_bound(input.src.len() - input.pos()) + 64);
            let at = out.len();
            let mut o = OutBuffer::around_pos(out, at);
            let left = self
                .cctx
                .compress_stream2(&mut o, &mut input, op)
                .map_err(zstd_error)?;
            let consumed = input.pos() == input.src.len();
            if consumed && (left == 0 || op == ZSTD_EndDirective::ZSTD_e_continue) {
                return Ok(());
            }
        }
    }
}

fn zstd_error(code: usize) -> io::Error {
    io::Error::other(format!("zstd: {}", zstd::zstd_safe::get_error_name(code)))
}
