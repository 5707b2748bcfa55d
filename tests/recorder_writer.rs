//! The segment writer's contracts: durability, rotation and seals, crash recovery, disk errors,
//! permissions, retention and signatures. Disk failures are injected through a `Storage` whose
//! files fail after a byte budget, like a full disk.

mod recorder_fixtures;

use std::cell::Cell;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use modelgate::recorder::format::Piece;
use modelgate::recorder::read::{read_segment, segment_files};
use modelgate::recorder::sink::{FileStorage, Sink, Storage};
use modelgate::recorder::{sign, verify_dir, Durability, Retention, SegmentWriter};
use recorder_fixtures::*;

// === a disk that fills up ===

/// Fails every write once `budget` bytes have been written (all files together), after writing
/// what still fits, like ENOSPC in the middle of a record.
struct FullDisk {
    budget: Rc<Cell<u64>>,
    torn_writes: bool,
}

struct FullFile {
    inner: Box<dyn Sink>,
    budget: Rc<Cell<u64>>,
    torn_writes: bool,
    /// Refuse to truncate, as a read-only or broken file system would.
    allow_truncate: bool,
}

impl Storage for FullDisk {
    fn create(&mut self, path: &Path) -> io::Result<Box<dyn Sink>> {
        let inner = FileStorage.create(path)?;
        Ok(Box::new(FullFile {
            inner,
            budget: self.budget.clone(),
            torn_writes: self.torn_writes,
            allow_truncate: !self.torn_writes,
        }))
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        FileStorage.sync_dir(dir)
    }
}

impl Sink for FullFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let left = self.budget.get();
        if (buf.len() as u64) <= left {
            self.budget.set(left - buf.len() as u64);
            return self.inner.write_all(buf);
        }
        if self.torn_writes {
            self.inner.write_all(&buf[..left as usize])?;
        }
        self.budget.set(0);
        Err(io::Error::from_raw_os_error(28)) // ENOSPC
    }

    fn sync(&mut self) -> io::Result<()> {
        self.inner.sync()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        if self.allow_truncate {
            self.inner.truncate(len)
        } else {
            Err(io::Error::from_raw_os_error(30)) // EROFS
        }
    }
}

fn fill_until_failure(torn_writes: bool) {
    let dir = tempfile::tempdir().unwrap();
    let budget = Rc::new(Cell::new(20_000));
    let storage = FullDisk {
        budget: budget.clone(),
        torn_writes,
    };
    let mut w = SegmentWriter::open_with(settings(dir.path()), 0, Box::new(storage)).unwrap();
    // ~1 MB of SSE events: about 70 KB compressed, well past the 20 KB budget.
    let events = sse_events(3, 4000);
    let sid = w.start_session(&start("big", "alice", 1)).unwrap();
    let mut delivered = 0;
    let mut err = None;
    for (i, e) in events.iter().enumerate() {
        match w.response_chunk(sid, i as u64, e.as_bytes()) {
            Ok(()) => delivered += 1,
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let err = err.expect("the disk filled up");
    assert_eq!(err.raw_os_error(), Some(28));
    assert!(w.is_failed());
    assert_eq!(w.failure().unwrap().os_error, Some(28));
    // Everything after the failure is refused, and the budget being back changes nothing.
    budget.set(1 << 30);
    let again = w.response_chunk(sid, 999, b"late").unwrap_err();
    assert!(again.to_string().contains("earlier error"), "{again}");
    assert!(w.maybe_flush(Instant::now()).is_err());
    drop(w);

    // Every chunk `append` acknowledged is on disk, in order, and verifies.
    let path = &segment_files(dir.path()).unwrap()[0];
    let seg = read_segment(path).unwrap();
    let body: Vec<Vec<u8>> = seg
        .events
        .iter()
        .skip(1)
        .map(|e| match &e.event {
            modelgate::recorder::Event::ResponseChunk(c) => c.data.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(body.len(), delivered);
    assert!(body.iter().zip(&events).all(|(a, b)| a == b.as_bytes()));
    let report = verify_dir(dir.path(), None).unwrap();
    if torn_writes {
        // The partial record could not be cut off: reported as truncation, nothing else.
        let b = report.first_break().expect("torn tail reported");
        assert_eq!(b.kind, modelgate::recorder::BreakKind::Truncated);
    } else {
        assert!(report.is_ok(), "{:?}", report.first_break());
    }

    // A new writer (after the disk is fixed) links to the last complete record, and the torn
    // tail becomes an acknowledged note.
    let mut w2 = SegmentWriter::open(settings(dir.path()), 0).unwrap();
    record_stream(&mut w2, "after", "bob", 2, &sse_events(4, 3));
    w2.close().unwrap();
    let report = verify_dir(dir.path(), None).unwrap();
    assert!(report.is_ok(), "{:?}", report.first_break());
    assert_eq!(report.chains[0].segments, 2);
}

#[test]
fn a_full_disk_fails_the_writer_and_leaves_earlier_records_intact() {
    fill_until_failure(false);
}

#[test]
fn a_torn_write_that_cannot_be_cut_off_is_reported_as_truncation_only() {
    fill_until_failure(true);
}

// === durability ===

#[test]
fn event_mode_puts_each_chunk_in_the_file_before_append_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = SegmentWriter::open(settings(dir.path()), 0).unwrap();
    let sid = w.start_session(&start("r", "alice", 1)).unwrap();
    let path = w.current_segment().unwrap().to_owned();
    for i in 0..5u64 {
        w.response_chunk(sid, i, b"data: x\n\n").unwrap();
        // Read by another file handle: what a post-crash reader would see.
        assert_eq!(read_segment(&path).unwrap().events.len() as u64, i + 2);
    }
}

#[test]
fn an_open_record_ends_after_a_second_without_events_and_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = SegmentWriter::open(settings(dir.path()), 0).unwrap();
    let path = w.current_segment().unwrap().to_owned();
    let last_is_open = || {
        let bytes = std::fs::read(&path).unwrap();
        let scan = modelgate::recorder::format::scan(&bytes).unwrap();
        matches!(scan.pieces.last(), Some(Piece::Record(r)) if r.open)
    };
    let sid = w.start_session(&start("r", "alice", 1)).unwrap();
    let t0 = Instant::now();
    // A slow stream: an event every 300 ms, upkeep ticks in between.
    for k in 0..5u64 {
        w.response_chunk(sid, k, b"data: x\n\n").unwrap();
        w.maybe_flush(t0 + Duration::from_millis(300 * k)).unwrap();
    }
    assert!(last_is_open(), "one record for the whole slow stream");
    w.maybe_flush(t0 + Duration::from_millis(2000)).unwrap();
    assert!(last_is_open(), "0.8 s without events: still open");
    w.maybe_flush(t0 + Duration::from_millis(2300)).unwrap();
    assert!(!last_is_open(), "1.1 s without events: ended");
    assert_eq!(records(&path).len(), 1);
    let report = verify_dir(dir.path(), None).unwrap();
    assert!(report.is_ok(), "{:?}", report.first_break());
}

#[test]
fn a_trickle_of_events_cannot_keep_a_record_open_past_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = SegmentWriter::open(settings(dir.path()), 0).unwrap();
    let path = w.current_segment().unwrap().to_owned();
    let sid = w.start_session(&start("r", "alice", 1)).unwrap();
    let t0 = Instant::now();
    // One event every 0.9 s (never idle for a second), a tick after each.
    for k in 0..75u64 {
        w.response_chunk(sid, k, b"data: x\n\n").unwrap();
        w.maybe_flush(t0 + Duration::from_millis(900 * k)).unwrap();
    }
    // Ended once at the 60 s tick, then a second record opened for the rest.
    let recs = records(&path);
    assert_eq!(recs.len(), 2, "{recs:?}");
    let bytes = std::fs::read(&path).unwrap();
    let scan = modelgate::recorder::format::scan(&bytes).unwrap();
    assert!(matches!(&scan.pieces[0], Piece::Record(r) if !r.open));
    assert!(matches!(&scan.pieces[1], Piece::Record(r) if r.open));
}

#[test]
fn interval_mode_batches_until_the_interval_or_the_size_is_reached() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.durability = Durability::Interval {
        every: Duration::from_millis(100),
        bytes: 4096,
    };
    let mut w = SegmentWriter::open(s, 0).unwrap();
    let path = w.current_segment().unwrap().to_owned();
    let sid = w.start_session(&start("r", "alice", 1)).unwrap();
    w.response_chunk(sid, 1, b"data: x\n\n").unwrap();
    assert_eq!(
        read_segment(&path).unwrap().events.len(),
        0,
        "still batched"
    );
    w.maybe_flush(Instant::now()).unwrap();
    assert_eq!(
        read_segment(&path).unwrap().events.len(),
        0,
        "interval not yet over"
    );
    w.maybe_flush(Instant::now() + Duration::from_millis(150))
        .unwrap();
    assert_eq!(
        read_segment(&path).unwrap().events.len(),
        2,
        "flushed by time"
    );
    let big = vec![b'x'; 5000];
    w.response_chunk(sid, 2, &big).unwrap();
    assert_eq!(
        read_segment(&path).unwrap().events.len(),
        3,
        "flushed by size"
    );
}

// === rotation, seals, signatures ===

#[test]
fn segments_rotate_by_size_and_age_and_stay_chained_and_signed() {
    let dir = tempfile::tempdir().unwrap();
    let keydir = tempfile::tempdir().unwrap();
    let keyfile = keydir.path().join("seal.key");
    let public = sign::generate_key(&keyfile).unwrap();
    let mut s = settings(dir.path());
    s.segment_max_bytes = 16 * 1024;
    s.signing_key = Some(sign::load_signing_key(&keyfile).unwrap());
    let mut w = SegmentWriter::open(s, 0).unwrap();
    // One long stream across several segments (continuations keep it attributable).
    let events = sse_events(5, 3000);
    let sid = w.start_session(&start("long", "alice", 1)).unwrap();
    for (i, e) in events.iter().enumerate() {
        w.response_chunk(sid, i as u64 * 1000, e.as_bytes())
            .unwrap();
    }
    w.end_session(sid, &end(1, 0)).unwrap();
    record_stream(&mut w, "short", "bob", 2, &sse_events(6, 3));
    // Age: the next maybe_flush after max age seals.
    w.maybe_flush(Instant::now() + Duration::from_secs(7200))
        .unwrap();
    w.close().unwrap();
    let segs = segment_files(dir.path()).unwrap();
    assert!(segs.len() >= 4, "{segs:?}");
    let report = verify_dir(dir.path(), Some(&public)).unwrap();
    assert!(report.is_ok(), "{:?}", report.first_break());
    assert_eq!(report.chains[0].seals, segs.len() as u64);
    assert_eq!(report.chains[0].signatures, segs.len() as u64);
    assert_eq!(report.chains[0].unsigned_records, 0);
    let sessions = modelgate::recorder::read::load_sessions(&segs, &|_| true).unwrap();
    assert_eq!(sessions.len(), 2);
    let body: Vec<u8> = sessions[0]
        .response_body
        .iter()
        .flat_map(|c| c.data.clone())
        .collect();
    assert_eq!(body, events.concat().into_bytes());

    // The wrong key fails, naming the first seal.
    let other = keydir.path().join("other.key");
    let other_pub = sign::generate_key(&other).unwrap();
    let report = verify_dir(dir.path(), Some(&other_pub)).unwrap();
    let b = report.first_break().unwrap();
    assert_eq!(b.kind, modelgate::recorder::BreakKind::BadSignature);
    assert!(b.file.ends_with("w0-000001.mgrec"));
}

#[test]
fn a_missing_middle_segment_breaks_the_chain_but_a_missing_oldest_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = SegmentWriter::open(settings(dir.path()), 0).unwrap();
    for i in 0..4 {
        record_stream(&mut w, &format!("s{i}"), "alice", i, &sse_events(i, 3));
        w.rotate().unwrap();
    }
    w.close().unwrap();
    let segs = segment_files(dir.path()).unwrap();
    std::fs::remove_file(&segs[0]).unwrap();
    let report = verify_dir(dir.path(), None).unwrap();
    assert!(report.is_ok(), "{:?}", report.first_break());
    assert!(report.chains[0]
        .notes
        .iter()
        .any(|n| n.contains("retention")));
    std::fs::remove_file(&segs[2]).unwrap();
    let report = verify_dir(dir.path(), None).unwrap();
    let b = report.first_break().unwrap();
    assert_eq!(b.kind, modelgate::recorder::BreakKind::SegmentLink);
    assert!(b.detail.contains("missing"), "{b}");
}

#[test]
fn a_truncated_sealed_segment_followed_by_another_is_reported_as_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = SegmentWriter::open(settings(dir.path()), 0).unwrap();
    record_stream(&mut w, "a", "alice", 1, &sse_events(1, 10));
    w.rotate().unwrap();
    record_stream(&mut w, "b", "alice", 2, &sse_events(2, 10));
    w.close().unwrap();
    let first = &segment_files(dir.path()).unwrap()[0];
    let recs = records(first);
    // Cut exactly before the seal: no torn bytes, but the next header expects a seal.
    let bytes = std::fs::read(first).unwrap();
    std::fs::write(first, &bytes[..recs[recs.len() - 1].0]).unwrap();
    let report = verify_dir(dir.path(), None).unwrap();
    let b = report.first_break().unwrap();
    assert_eq!(b.kind, modelgate::recorder::BreakKind::Truncated);
    assert!(b.file.ends_with("w0-000001.mgrec"));
}

// === permissions ===

#[test]
fn the_directory_is_0700_and_segments_are_0600_even_if_loosened() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("rec");
    let mut w = SegmentWriter::open(settings(&dir), 0).unwrap();
    record_stream(&mut w, "a", "alice", 1, &sse_events(1, 2));
    w.close().unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let seg = segment_files(&dir).unwrap().remove(0);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&seg), 0o600);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&seg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let w = SegmentWriter::open(settings(&dir), 0).unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&seg), 0o600);
    assert_eq!(mode(w.current_segment().unwrap()), 0o600);
}

// === retention ===

#[test]
fn retention_deletes_the_oldest_segments_first_and_never_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    let mut w = SegmentWriter::open(s.clone(), 0).unwrap();
    for i in 0..6 {
        record_stream(&mut w, &format!("s{i}"), "alice", i, &sse_events(i, 20));
        w.rotate().unwrap();
    }
    let segs = segment_files(dir.path()).unwrap();
    // Age the files: segment k last modified (10 - k) hours ago.
    let now = SystemTime::now();
    for (k, p) in segs.iter().enumerate() {
        let f = std::fs::File::options().append(true).open(p).unwrap();
        f.set_modified(now - Duration::from_secs(3600 * (10 - k as u64)))
            .unwrap();
    }
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    // Another worker's segment counts towards the total too.
    let w2 = SegmentWriter::open_with(s.clone(), 1, Box::new(FileStorage)).unwrap();
    drop(w2);
    let all = segment_files(dir.path()).unwrap();
    let total: u64 = all.iter().map(|p| size(p)).sum();
    // Size: keep all but about two segments' worth.
    s.retention = Retention {
        max_age: None,
        max_bytes: Some(total - size(&segs[0]) - size(&segs[1]) / 2),
    };
    let removed = modelgate::recorder::retention::enforce(dir.path(), &s.retention, now).unwrap();
    assert_eq!(removed.files, vec![segs[0].clone(), segs[1].clone()]);
    // Age: older than 6.5 h goes (segments 2 and 3 are 8 h and 7 h old).
    let policy = Retention {
        max_age: Some(Duration::from_secs(6 * 3600 + 1800)),
        max_bytes: None,
    };
    let removed = modelgate::recorder::retention::enforce(dir.path(), &policy, now).unwrap();
    assert_eq!(removed.files, vec![segs[2].clone(), segs[3].clone()]);
    // Even a zero budget keeps each worker's newest segment.
    let policy = Retention {
        max_age: Some(Duration::ZERO),
        max_bytes: Some(1),
    };
    modelgate::recorder::retention::enforce(dir.path(), &policy, now).unwrap();
    let left = segment_files(dir.path()).unwrap();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().any(|p| p == w.current_segment().unwrap()));
    let report = verify_dir(dir.path(), None).unwrap();
    assert!(report.is_ok(), "{:?}", report.first_break());
}
