//! Replay pacing: the schedule computed from recorded SSE offsets, checked against a fake clock
//! (no sleeping, no wall-clock assertions).

mod recorder_fixtures;

use std::time::Duration;

use modelgate::recorder::read::{load_sessions, segment_files};
use modelgate::recorder::replay::{replay, schedule, Clock};
use modelgate::recorder::{Chunk, SegmentWriter};
use recorder_fixtures::*;

struct FakeClock {
    waits: Vec<Duration>,
}

impl Clock for FakeClock {
    fn sleep_until(&mut self, at: Duration) {
        self.waits.push(at);
    }
}

#[test]
fn replay_reproduces_the_recorded_sse_pacing_scaled_by_speed() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = SegmentWriter::open(settings(dir.path()), 0).unwrap();
    let events = sse_events(9, 5);
    let offsets = [
        40_000u64, 40_500, 95_000, 95_000, 300_000, 301_000, 302_000, 900_000,
    ];
    let sid = w.start_session(&start("r", "alice", 1)).unwrap();
    for (e, off) in events.iter().zip(offsets) {
        w.response_chunk(sid, off, e.as_bytes()).unwrap();
    }
    w.close().unwrap();
    let s = load_sessions(&segment_files(dir.path()).unwrap(), &|_| true)
        .unwrap()
        .remove(0);
    let expect = |speed: f64| -> Vec<Duration> {
        offsets
            .iter()
            .map(|o| Duration::from_micros(((o - 40_000) as f64 / speed) as u64))
            .collect()
    };
    assert_eq!(schedule(&s.response_body, 1.0), expect(1.0));
    let mut clock = FakeClock { waits: Vec::new() };
    let mut out = Vec::new();
    replay(&s.response_body, 4.0, &mut clock, &mut out).unwrap();
    assert_eq!(clock.waits, expect(4.0));
    assert_eq!(out, events.concat().into_bytes());
    let none: Vec<Chunk> = Vec::new();
    assert!(schedule(&none, 1.0).is_empty());
}
