//! Replaying a recorded response: when each chunk should be written, and writing it then.
//!
//! The schedule is computed purely from the recorded offsets ([`schedule`]), and the pacing goes
//! through a [`Clock`], so tests check the timing against a fake clock with no sleeping and no
//! wall-clock assertions.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use super::model::Chunk;

/// When to write each chunk, relative to the start of the replay, at `speed` (2.0 = twice as
/// fast). Offsets are taken relative to the first chunk, so the replay starts at once.
pub fn schedule(chunks: &[Chunk], speed: f64) -> Vec<Duration> {
    let Some(first) = chunks.first() else {
        return Vec::new();
    };
    let speed = if speed.is_finite() && speed > 0.0 {
        speed
    } else {
        1.0
    };
    chunks
        .iter()
        .map(|c| {
            let us = c.offset_us.saturating_sub(first.offset_us) as f64 / speed;
            Duration::from_micros(us.min(u64::MAX as f64) as u64)
        })
        .collect()
}

/// Something that can wait until a moment of the replay.
pub trait Clock {
    /// Blocks until `at` after the replay started.
    fn sleep_until(&mut self, at: Duration);
}

/// The real clock.
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    pub fn new() -> SystemClock {
        SystemClock {
            start: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn sleep_until(&mut self, at: Duration) {
        let now = self.start.elapsed();
        if at > now {
            std::thread::sleep(at - now);
        }
    }
}

/// Writes the chunks to `out` with the recorded pacing (flushing each, so a terminal or a pipe
/// sees them when a client would have).
pub fn replay(
    chunks: &[Chunk],
    speed: f64,
    clock: &mut dyn Clock,
    out: &mut dyn Write,
) -> io::Result<()> {
    for (chunk, at) in chunks.iter().zip(schedule(chunks, speed)) {
        clock.sleep_until(at);
        out.write_all(&chunk.data)?;
        out.flush()?;
    }
    Ok(())
}
