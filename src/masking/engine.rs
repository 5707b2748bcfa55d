//! The streaming engine: text in, masked text out, holding back only what could still match.
//!
//! # One text, any chunking, the same output
//! The output is defined on the whole text, so that it cannot depend on where chunks split:
//! 1. Vectorscan reports every `(pattern, end)` of the text.
//! 2. Each gets one start: a literal's is `end - len`; a regex's is the leftmost start of a
//!    match ending there, found by a block-mode start-of-match scan of the detector's own
//!    patterns over the window `[end - longest - 1, end + 1)` (one byte either side so `\b`
//!    sees the same neighbours as in the stream). Validators (Luhn, IBAN, …) drop candidates.
//! 3. **Overlaps**: walking left to right, take the candidate with the earliest start, then the
//!    longest, then the detector listed first (built-ins in table order, then literal lists,
//!    then regexes); a regex candidate that starts inside it gets the leftmost start after it
//!    that still makes a match (and is dropped if none does), a literal is dropped; repeat
//!    after its end. A regex candidate its validator refused never wins, but it restarts like
//!    this too (its rest may be valid), so it is kept until no match can cut into it.
//!
//! Streaming, a candidate is taken once no unseen match could start at or before it: unseen
//! matches end at or after the current offset, so they start no earlier than the hold point
//! computed by [`super::hold`]. Bytes before the hold point and before every pending candidate
//! go out immediately (never splitting a UTF-8 character); the rest waits for the next chunk.
//!
//! # Why starts are found this way (measured with `bench/mask_bench.rs`, 2026-11-26)
//! Streaming start-of-match (`HS_FLAG_SOM_LEFTMOST` + `HS_MODE_SOM_HORIZON_LARGE`) is not
//! available for these detectors: vectorscan refuses 5 built-ins with it ("Pattern is too
//! large": email, github_pat, slack, openai key, jwt, all bounded class repeats), and block-mode
//! SOM refuses the same ones. With those 5 dropped, streaming SOM scanned English text at
//! 267 MB/s against 373 MB/s for the plain database (4 KiB chunks, on a 2-core box at load 7:
//! read the ratio, not the absolute figures). So the stream runs without SOM and each reported
//! end gets its start afterwards, by anchored block scans at candidate starts (usually exactly
//! one candidate): cost per *match*, nothing per byte.
//!
//! # Spans
//! A span detector's match opens a region that is replaced as it streams (`[REDACTED:x]` once,
//! or one `*` per character) until its end marker or the first byte outside its class (or its
//! stop sequence: a JWT span ends where a PEM armour line `-----` begins), so a 3 KiB PEM key
//! needs no hold. Candidates starting inside the region are dropped.
//!
//! # Failing closed
//! After an error the engine is poisoned ([`MaskError::Poisoned`]); held text never goes out.

use std::cmp::Reverse;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::compile::{Masker, PatternKind, Span};

mod window;
use super::config::Action;
use super::{action, vs, MaskError, Mode, Verdict};

/// The masking state of one text stream (one SSE choice, one JSON string, one plain body).
#[derive(Debug)]
pub struct Engine {
    masker: Arc<Masker>,
    stream: vs::Stream,
    detect: bool,
    /// Text from stream offset `base` to `offset`: one byte of context, then the held tail.
    buf: Vec<u8>,
    base: u64,
    /// Everything before this offset has been emitted.
    released: u64,
    /// Bytes fed so far.
    offset: u64,
    cands: Vec<Cand>,
    /// End offsets of span end markers seen, with their detector.
    span_ends: Vec<(u32, u64)>,
    span: Option<OpenSpan>,
    /// Matches reported by the current scan call, before starts are found.
    raw: Vec<(u32, u64)>,
    /// End offset and arrival time of each fed piece with unreleased bytes.
    arrivals: VecDeque<(u64, Instant)>,
    failed: bool,
}

/// Spare capacity kept after the text handed to vectorscan, which is always the engine's own
/// buffer (the stream scan and the start finder's block scans). Some vectorscan SIMD routines
/// read a whole vector past the end of the data: in 5.4.12 `shuftiDoubleExecReal`'s tail
/// (fixed upstream in VectorCamp/vectorscan#381), a SIGSEGV when the data ends at a page
/// boundary. With this room after it such a read stays in memory the engine owns. Found by
/// the `mask_split` fuzz target under AddressSanitizer.
const SCAN_SLACK: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Cand {
    start: u64,
    end: u64,
    det: u32,
    /// The validator accepts `[start, end)`. An invalid pattern match never wins, but it is
    /// kept while a match taken at its start could cut into it: it then restarts after that
    /// match like any other (see `restart_overlapped`), and its rest may be valid.
    valid: bool,
}

#[derive(Debug, Clone, Copy)]
struct OpenSpan {
    det: u32,
    trigger_end: u64,
}

// === impl Engine ===

impl Engine {
    pub(crate) fn new(masker: &Arc<Masker>, mode: Mode) -> Result<Engine, MaskError> {
        let stream = vs::Stream::open(&masker.stream_db).map_err(|e| MaskError::Scan(e.message))?;
        Ok(Engine {
            masker: Arc::clone(masker),
            stream,
            detect: mode == Mode::Detect,
            buf: Vec::new(),
            base: 0,
            released: 0,
            offset: 0,
            cands: Vec::new(),
            span_ends: Vec::new(),
            span: None,
            raw: Vec::new(),
            arrivals: VecDeque::new(),
            failed: false,
        })
    }

    /// Feeds the next piece of text and appends whatever is now safe to `out`. In detect mode
    /// `text` itself is appended at once and matches are only counted.
    pub fn feed(
        &mut self,
        text: &[u8],
        now: Instant,
        out: &mut Vec<u8>,
        verdict: &mut Verdict,
    ) -> Result<(), MaskError> {
        if self.failed {
            return Err(MaskError::Poisoned);
        }
        if self.detect {
            out.extend_from_slice(text);
        }
        if text.is_empty() {
            return Ok(());
        }
        let at = self.buf.len();
        self.buf.extend_from_slice(text);
        self.buf.reserve(SCAN_SLACK);
        self.offset += text.len() as u64;
        self.arrivals.push_back((self.offset, now));
        let raw = &mut self.raw;
        let scanned = self
            .stream
            .scan(&self.buf[at..], |id, _from, to| raw.push((id, to)));
        self.step(scanned, false, now, out, verdict)
    }

    /// Ends the text: flushes everything (masked) into `out`, then resets the engine so it can
    /// take the next text.
    pub fn finish(
        &mut self,
        now: Instant,
        out: &mut Vec<u8>,
        verdict: &mut Verdict,
    ) -> Result<(), MaskError> {
        if self.failed {
            return Err(MaskError::Poisoned);
        }
        let raw = &mut self.raw;
        let scanned = self.stream.finish(|id, _from, to| raw.push((id, to)));
        self.step(scanned, true, now, out, verdict)?;
        self.buf.clear();
        self.base = 0;
        self.released = 0;
        self.offset = 0;
        self.cands.clear();
        self.span_ends.clear();
        self.span = None;
        self.arrivals.clear();
        Ok(())
    }

    /// Bytes currently held back.
    pub fn held(&self) -> usize {
        usize::try_from(self.offset - self.released).unwrap_or(usize::MAX)
    }

    fn step(
        &mut self,
        scanned: Result<(), vs::VsError>,
        last: bool,
        now: Instant,
        out: &mut Vec<u8>,
        verdict: &mut Verdict,
    ) -> Result<(), MaskError> {
        let result = scanned
            .map_err(|e| MaskError::Scan(e.message))
            .and_then(|()| self.collect())
            .and_then(|()| self.advance(last, now, out, verdict));
        if let Err(err) = &result {
            self.failed = true;
            verdict.note_error(err);
        }
        result
    }

    /// Turns reported match ends into validated candidates.
    fn collect(&mut self) -> Result<(), MaskError> {
        let mut raw = std::mem::take(&mut self.raw);
        for &(id, end) in &raw {
            let Some(&kind) = usize::try_from(id)
                .ok()
                .and_then(|i| self.masker.patterns.get(i))
            else {
                continue;
            };
            let (det, start) = match kind {
                PatternKind::SpanEnd { det } => {
                    self.span_ends.push((det, end));
                    continue;
                }
                PatternKind::Literal { det, len } => (det, end.saturating_sub(u64::from(len))),
                PatternKind::Regex { det } if det == u32::MAX => continue,
                PatternKind::Regex { det } => (det, self.find_start(det, end)?),
            };
            // A start before `released` lies inside a match already taken (or a span): by the
            // overlap rule the candidate is void, exactly as it would be in the whole text.
            if start < self.released || start >= end {
                continue;
            }
            let detector = &self.masker.detectors[det as usize];
            let valid = detector
                .validator
                .is_none_or(|valid| valid(self.slice(start, end)));
            // A literal cannot restart later, so an invalid one is dropped now.
            if !valid && detector.starts.is_none() {
                continue;
            }
            self.cands.push(Cand {
                start,
                end,
                det,
                valid,
            });
        }
        raw.clear();
        self.raw = raw;
        Ok(())
    }

    /// Commits what can be committed and releases what is safe.
    fn advance(
        &mut self,
        last: bool,
        now: Instant,
        out: &mut Vec<u8>,
        verdict: &mut Verdict,
    ) -> Result<(), MaskError> {
        let before = self.released;
        if self.run_span(last, out) {
            let hold_point = if last {
                self.offset
            } else {
                let tail = self.slice(self.released, self.offset);
                self.offset - self.masker.hold.hold_len(tail) as u64
            };
            let mut cands = std::mem::take(&mut self.cands);
            let mut open_span = false;
            loop {
                self.restart_overlapped(&mut cands)?;
                cands.sort_unstable_by_key(|c| Reverse((c.start, !c.valid, Reverse(c.end), c.det)));
                // Valid candidates sort first at a start: a refused one in front can no longer
                // be cut into by a match taken at its start, so it is done. Dropping it moves
                // nothing, so all of them go without sorting again (a run of numbers failing
                // Luhn leaves one per digit).
                while cands
                    .last()
                    .is_some_and(|c| !c.valid && c.start < hold_point)
                {
                    cands.pop();
                }
                let Some(&c) = cands.last() else { break };
                if c.start >= hold_point {
                    break;
                }
                cands.pop();
                self.select(c, out, verdict)?;
                if self.span.is_some() && !self.run_span(last, out) {
                    open_span = true;
                    break;
                }
            }
            self.restart_overlapped(&mut cands)?;
            self.cands = cands;
            if !open_span {
                let mut to = hold_point.clamp(self.released, self.offset);
                // Never split a UTF-8 character: formats put this text into JSON strings.
                while to > self.released
                    && self
                        .slice(to, to + 1)
                        .first()
                        .is_some_and(|b| b & 0xC0 == 0x80)
                {
                    to -= 1;
                }
                self.emit_raw(to, out);
            }
        }
        self.account(before, last, now, verdict)?;
        let keep_from = self.released.saturating_sub(1).max(self.base);
        self.buf.drain(..(keep_from - self.base) as usize);
        self.base = keep_from;
        let released = self.released;
        self.span_ends.retain(|&(_, end)| end > released);
        Ok(())
    }

    /// Candidates that start inside what was just taken (a match or a span) keep the part of
    /// their match after it, if that part is still a match of their detector: a regex match
    /// gets the leftmost start at or after `released` (`find_start`) and its validator again;
    /// a literal (no start finder) cannot shrink and is dropped. This is what a candidate reported after the
    /// taken match gets anyway, so the output does not depend on whether both were reported by
    /// the same scan call (mask_split fuzz target: `ta bob@example.com` with the literal `a b`
    /// left `ob@example.com` unmasked only when the text came in one piece).
    fn restart_overlapped(&self, cands: &mut Vec<Cand>) -> Result<(), MaskError> {
        let released = self.released;
        let mut i = 0;
        while i < cands.len() {
            let c = cands[i];
            if c.start >= released {
                i += 1;
                continue;
            }
            let detector = &self.masker.detectors[c.det as usize];
            let restarted = if detector.starts.is_none() || c.end <= released {
                None
            } else {
                // As in `collect`: no start at or after `released` drops it; a start the
                // validator refuses keeps it, invalid, for the next match that cuts into it.
                let start = self.find_start(c.det, c.end)?;
                (start >= released && start < c.end).then(|| {
                    let valid = detector
                        .validator
                        .is_none_or(|valid| valid(self.slice(start, c.end)));
                    (start, valid)
                })
            };
            match restarted {
                Some((start, valid)) => {
                    cands[i].start = start;
                    cands[i].valid = valid;
                    i += 1;
                }
                None => {
                    cands.swap_remove(i);
                }
            }
        }
        Ok(())
    }

    /// Applies the action of candidate `c` (all of whose bytes are buffered).
    fn select(
        &mut self,
        c: Cand,
        out: &mut Vec<u8>,
        verdict: &mut Verdict,
    ) -> Result<(), MaskError> {
        let masker = Arc::clone(&self.masker);
        let detector = &masker.detectors[c.det as usize];
        verdict.count(&detector.id);
        if detector.action == Action::Block && !self.detect {
            return Err(MaskError::Blocked {
                detector: Arc::clone(&detector.id),
                category: Arc::clone(&detector.category),
            });
        }
        self.emit_raw(c.start, out);
        if !self.detect {
            let value = self.slice(c.start, c.end);
            match (detector.span, detector.action) {
                (Some(_), Action::Mask) => action::stars(action::chars(value), out),
                (Some(_), _) => {
                    action::render(Action::Redact, &detector.category, value, None, out)
                }
                (None, act) => action::render(
                    act,
                    &detector.category,
                    value,
                    masker.hash_key.as_ref(),
                    out,
                ),
            }
        }
        self.released = c.end;
        if detector.span.is_some() {
            self.span = Some(OpenSpan {
                det: c.det,
                trigger_end: c.end,
            });
        }
        Ok(())
    }

    /// Extends an open span over the new text. True when no span is open afterwards.
    fn run_span(&mut self, last: bool, out: &mut Vec<u8>) -> bool {
        let Some(span) = self.span else { return true };
        let detector = &self.masker.detectors[span.det as usize];
        // Tail bytes that could still begin the span's stop sequence.
        let mut unsure = 0;
        let close = match detector.span {
            Some(Span::Marker) => self
                .span_ends
                .iter()
                .filter(|&&(det, end)| det == span.det && end > span.trigger_end)
                .map(|&(_, end)| end)
                .min(),
            Some(Span::WhileIn { class, stop }) => {
                let text = self.slice(self.released, self.offset);
                let outside = text.iter().position(|&b| !class.contains(b));
                let close = outside.into_iter().chain(find(text, stop)).min();
                if close.is_none() {
                    unsure = stop_prefix_at_end(text, stop) as u64;
                }
                close.map(|p| self.released + p as u64)
            }
            None => Some(self.released),
        };
        let (end, closed) = match close {
            Some(end) => (end.clamp(self.released, self.offset), true),
            // Not closed yet: a tail that could begin the stop sequence waits for more text,
            // so where the span ends never depends on where the text was cut.
            None if !last => (self.offset - unsure, false),
            None => (self.offset, true),
        };
        if !self.detect && detector.action == Action::Mask {
            action::stars(action::chars(self.slice(self.released, end)), out);
        }
        self.released = end;
        if closed {
            self.span = None;
        }
        closed
    }

    fn emit_raw(&mut self, to: u64, out: &mut Vec<u8>) {
        if to <= self.released {
            return;
        }
        if !self.detect {
            out.extend_from_slice(self.slice(self.released, to));
        }
        self.released = to;
    }

    /// Buffered bytes `[from, to)` in stream offsets (callers stay within the buffer).
    pub(super) fn slice(&self, from: u64, to: u64) -> &[u8] {
        let lo = (from.saturating_sub(self.base) as usize).min(self.buf.len());
        let hi = (to.saturating_sub(self.base) as usize).clamp(lo, self.buf.len());
        &self.buf[lo..hi]
    }
}

/// Length of the longest tail of `text` that is a proper prefix of `stop`.
fn stop_prefix_at_end(text: &[u8], stop: &[u8]) -> usize {
    (1..stop.len().min(text.len() + 1))
        .rev()
        .find(|&n| text.ends_with(&stop[..n]))
        .unwrap_or(0)
}

/// Where `needle` first occurs in `hay` (an empty needle never does).
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}
