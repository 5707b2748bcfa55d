//! Coarse clocks for deadlines and expiry checks.
//!
//! A proxied request arms a timeout for every read and write and checks a pooled connection's
//! age and a token's `exp`; read through `clock_gettime(CLOCK_MONOTONIC)` that was a dozen
//! ~18 ns reads per request (2–3 % of the gateway's CPU on `h1-1k`). None of them needs better
//! than the kernel tick: `CLOCK_MONOTONIC_COARSE` and `CLOCK_REALTIME_COARSE` are the same
//! clocks as of the last tick (≤ 4 ms old here) and cost a few nanoseconds. Timings that are
//! reported (time to first byte, durations, recorded event offsets) keep using the precise
//! `Instant::now()`, and so does verifying a token's `iat` / `nbf`.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use monoio::time::Timeout;

/// A std `Instant` up to one kernel tick behind `Instant::now()` (never ahead), monotonic.
pub fn now() -> Instant {
    // std's `Instant` is CLOCK_MONOTONIC, which the coarse clock follows a tick behind: one
    // reading of both maps the coarse clock onto `Instant`. `None`: no coarse clock here (a
    // sandbox may refuse the clock id), so the precise one is used.
    static BASE: OnceLock<Option<(Instant, Duration)>> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        read(libc::CLOCK_MONOTONIC_COARSE)?;
        let precise = Instant::now();
        Some((precise, read(libc::CLOCK_MONOTONIC)?))
    });
    match (base, read(libc::CLOCK_MONOTONIC_COARSE)) {
        (Some((precise, monotonic)), Some(coarse)) => *precise + coarse.saturating_sub(*monotonic),
        _ => Instant::now(),
    }
}

/// Seconds since the Unix epoch, up to a tick late: for a cached token's `exp`.
pub fn unix_secs() -> u64 {
    read(libc::CLOCK_REALTIME_COARSE).map_or_else(precise_unix_secs, |d| d.as_secs())
}

/// Seconds since the Unix epoch from the precise clock: for verifying a token, whose `iat` may
/// be this very second (a coarse clock a tick behind would call it issued in the future).
pub fn precise_unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `limit` from now, saturating far in the future for limits too large to add.
pub fn deadline(limit: Duration) -> Instant {
    let now = now();
    now.checked_add(limit)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

/// `monoio::time::timeout` with its deadline from the coarse clock.
pub fn timeout<F: Future>(limit: Duration, future: F) -> Timeout<F> {
    monoio::time::timeout_at(monoio::time::Instant::from_std(deadline(limit)), future)
}

fn read(clock: libc::clockid_t) -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let ok = unsafe { libc::clock_gettime(clock, &mut ts) } == 0;
    ok.then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_clocks_follow_the_precise_ones() {
        // Never ahead of the precise clock; behind it by a tick (4 ms here), give or take a
        // preempted thread: the lower bound only catches a broken mapping.
        for _ in 0..1000 {
            let before = Instant::now();
            let coarse = now();
            let after = Instant::now();
            assert!(coarse <= after, "{:?} ahead", coarse - after);
            assert!(coarse + Duration::from_secs(1) >= before);
        }
        let wall = precise_unix_secs();
        assert!(wall > 1_700_000_000);
        assert!(wall.abs_diff(unix_secs()) <= 1);
    }

    #[test]
    fn coarse_now_never_goes_back() {
        let mut last = now();
        for _ in 0..100_000 {
            let t = now();
            assert!(t >= last);
            last = t;
        }
    }

    #[test]
    fn huge_limits_saturate() {
        assert!(deadline(Duration::MAX) > now() + Duration::from_secs(86_400 * 365));
    }
}
