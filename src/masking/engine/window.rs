//! The held window: where a reported regex match starts (see `StartFinder` for why it is
//! found this way), and hold statistics with the fail-closed cap check.

use std::time::Instant;

use super::Engine;
use crate::masking::{MaskError, Verdict};

// === impl Engine ===

impl Engine {
    /// The leftmost start of a match of detector `det` ending at `end` (see `StartFinder`).
    pub(super) fn find_start(&self, det: u32, end: u64) -> Result<u64, MaskError> {
        let detector = &self.masker.detectors[det as usize];
        let widest = end.saturating_sub(detector.max_width as u64);
        let floor = widest.max(self.released);
        let Some(finder) = &detector.starts else {
            return Ok(floor);
        };
        // Every byte of the match is in `anywhere`: the start is after the last one that is not.
        let mut lowest = end;
        while lowest > floor
            && self
                .byte(lowest - 1)
                .is_some_and(|b| finder.anywhere.contains(b))
        {
            lowest -= 1;
        }
        let hi = self.offset.min(end + 1);
        for start in lowest..end {
            if !self.byte(start).is_some_and(|b| finder.first.contains(b)) {
                continue;
            }
            let (db, from) = if start == 0 {
                (&finder.at_text_start, 0)
            } else {
                (&finder.with_context, start - 1)
            };
            let target = end - from;
            let mut found = false;
            db.scan_block(self.slice(from, hi), |_, _, to| found |= to == target)
                .map_err(|e| MaskError::Scan(e.message))?;
            if found {
                return Ok(start);
            }
        }
        // No start at or after `released`, but the match may begin before it: then it does, in
        // text already taken by a match or a span, and the candidate is void by the overlap
        // rule, as it is when the whole text is scanned before that match or span is taken.
        // Answering `released` would make the masked bytes depend on where the text was cut
        // (found by the mask_split fuzz target).
        if widest < self.released {
            return Ok(widest);
        }
        // No start found would be a vectorscan inconsistency: mask the widest possible match.
        Ok(floor)
    }

    pub(super) fn byte(&self, at: u64) -> Option<u8> {
        self.slice(at, at + 1).first().copied()
    }

    /// Hold statistics and the fail-closed cap check.
    pub(super) fn account(
        &mut self,
        before: u64,
        last: bool,
        now: Instant,
        verdict: &mut Verdict,
    ) -> Result<(), MaskError> {
        if self.detect {
            return Ok(());
        }
        let held = self.held();
        verdict.max_held_bytes = verdict.max_held_bytes.max(held);
        if self.released > before {
            if let Some(&(_, arrived)) = self.arrivals.front() {
                verdict.max_hold = verdict.max_hold.max(now.saturating_duration_since(arrived));
            }
            while self
                .arrivals
                .front()
                .is_some_and(|&(end, _)| end <= self.released)
            {
                self.arrivals.pop_front();
            }
        }
        // Slack of 3: the release point may step back over a partial UTF-8 character.
        if !last && held > self.masker.max_hold_bytes + 3 {
            return Err(MaskError::HoldExceeded {
                held,
                cap: self.masker.max_hold_bytes,
            });
        }
        Ok(())
    }
}
