//! Coarse clocks for deadlines and expiry checks.
//!
//! A proxied request arms a timeout for every read and write and checks a pooled connection's
//! age and a token's `exp`; read through `clock_gettime(CLOCK_MONOTONIC)` that was a dozen
//! ~18 ns reads per request (2–3 % of the gateway's CPU on `h1-1k`). None of them needs better
//! than the kernel tick: `CLOCK_MONOTONIC_COARSE` and `CLOCK_REALTIME_COARSE` are the same
//! clocks as of the last tick (≤ 4 ms old here) and cost a few nanoseconds. Timings that are
//! reported (time to first byte, durations, recorded event offsets) keep using the precise
//! `Instant::now()`.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use monoio::time::Timeout;

/// A std `Instant` at most one kernel tick off the precise clock, monotonic.
pub fn now() -> Instant {
    // std's `Instant` is CLOCK_MONOTONIC, which the coarse clock follows a tick behind, so an
    // offset taken once maps one onto the other.
    static BASE: OnceLock<(Instant, Duration)> = OnceLock::new();
    let (precise, coarse) =
        *BASE.get_or_init(|| (Instant::now(), read(libc::CLOCK_MONOTONIC_COARSE)));
    precise + read(libc::CLOCK_MONOTONIC_COARSE).saturating_sub(coarse)
}

/// Seconds since the Unix epoch (for `exp`, `nbf`, `iat`: second resolution).
pub fn unix_secs() -> u64 {
    read(libc::CLOCK_REALTIME_COARSE).as_secs()
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

fn read(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call; both clock ids
    // exist on every Linux since 2.6.32, so the call cannot fail.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_clocks_stay_within_a_tick_of_the_precise_ones() {
        // The coarse clock lags the precise one by under a tick (4 ms here, 10 ms at HZ=100),
        // and the offset taken at start adds at most another.
        let tick = Duration::from_millis(10);
        for _ in 0..1000 {
            let before = Instant::now();
            let coarse = now();
            let after = Instant::now();
            assert!(coarse + 2 * tick >= before && coarse <= after + tick);
        }
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
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
