//! The recording format read back and attacked: round trips of every event kind, cuts at every
//! byte offset, and `verify` against flipped bytes, deleted, swapped and truncated records, for
//! length-prefixed records and for streamed ones (event durability).

mod recorder_fixtures;

use std::collections::BTreeMap;

use modelgate::recorder::format::{self, Piece, Tail};
use modelgate::recorder::read::{load_sessions, read_segment, segment_files};
use modelgate::recorder::{
    verify_dir, BreakKind, Chunk, EndReason, Event, ResponseHead, SegmentWriter, SessionEnd,
    Timing, Trailers,
};
use recorder_fixtures::*;

fn all_kinds_session(w: &mut SegmentWriter) -> Vec<Event> {
    let mut st = start("req-all", "alice", 1_718_000_000_000_000);
    st.record_request_body = true;
    st.record_upstream_body = true;
    st.approval_id = Some("appr-9".into());
    let sid = w.start_session(&st).unwrap();
    let events = vec![
        Event::RequestChunk(Chunk {
            offset_us: 5,
            data: br#"{"model":"m","stream":true}"#.to_vec(),
        }),
        Event::RequestChunk(Chunk {
            offset_us: 9,
            data: vec![0, 159, 146, 150, 255],
        }),
        Event::ResponseHead(ResponseHead {
            offset_us: 10_000,
            status: 200,
            headers: vec![
                ("set-cookie".into(), "[redacted]".into()),
                ("grpc-encoding".into(), "identity".into()),
            ],
            upstream: Some("grpc/10.0.0.1:50051".into()),
        }),
        Event::ResponseChunk(Chunk {
            offset_us: 11_000,
            data: b"data: hello\n\n".to_vec(),
        }),
        Event::ResponseChunk(Chunk {
            offset_us: 11_500,
            data: Vec::new(),
        }),
        Event::UpstreamChunk(Chunk {
            offset_us: 11_600,
            data: b"data: hello jane@example.com\n\n".to_vec(),
        }),
        Event::Trailers(Trailers {
            offset_us: 12_000,
            headers: vec![("grpc-status".into(), "0".into())],
        }),
        Event::SessionEnd(SessionEnd {
            offset_us: 12_345,
            reason: EndReason::UpstreamDied,
            status: Some(200),
            masking: BTreeMap::from([("email".to_owned(), 2), ("iban".to_owned(), 0)]),
            timing: Timing {
                gateway_us: Some(1),
                upstream_ttfb_us: Some(2),
                total_us: Some(3),
            },
            bytes_in: 10,
            bytes_out: 20,
            error: Some("upstream reset".into()),
        }),
    ];
    for e in &events {
        w.append(sid, e).unwrap();
    }
    let mut all = vec![Event::SessionStart(Box::new(st))];
    all.extend(events);
    all
}

#[test]
fn every_event_kind_round_trips_through_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = SegmentWriter::open(settings(dir.path()), 0).unwrap();
    let mut written = all_kinds_session(&mut w);
    w.close().unwrap();
    let seg = read_segment(&segment_files(dir.path()).unwrap()[0]).unwrap();
    assert!(seg.problems.is_empty(), "{:?}", seg.problems);
    let read: Vec<Event> = seg.events.iter().map(|e| e.event.clone()).collect();
    // The writer redacts the start's authorization header; the fixture already did.
    if let Event::SessionStart(s) = &mut written[0] {
        assert_eq!(s.request.headers[1].1, "Bearer [redacted]");
    }
    assert_eq!(read, written);
    assert!(seg
        .events
        .iter()
        .all(|e| e.request_id.as_deref() == Some("req-all")));
}

#[test]
fn every_event_kind_round_trips_in_interval_mode_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.durability = modelgate::recorder::Durability::Interval {
        every: std::time::Duration::from_secs(60),
        bytes: 1 << 20,
    };
    let mut w = SegmentWriter::open(s, 0).unwrap();
    let written = all_kinds_session(&mut w);
    w.close().unwrap();
    let path = &segment_files(dir.path()).unwrap()[0];
    // One batch record and the seal.
    assert_eq!(records(path).len(), 2);
    let read: Vec<Event> = read_segment(path)
        .unwrap()
        .events
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(read, written);
}

#[test]
fn sessions_assemble_from_interleaved_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = SegmentWriter::open(settings(dir.path()), 0).unwrap();
    let a = w.start_session(&start("a", "alice", 1)).unwrap();
    let b = w.start_session(&start("b", "bob", 2)).unwrap();
    w.response_chunk(a, 1, b"a1").unwrap();
    w.response_chunk(b, 1, b"b1").unwrap();
    w.response_chunk(a, 2, b"a2").unwrap();
    w.end_session(b, &end(3, 0)).unwrap();
    w.end_session(a, &end(3, 1)).unwrap();
    w.close().unwrap();
    let sessions = load_sessions(&segment_files(dir.path()).unwrap(), &|_| true).unwrap();
    let bodies: Vec<(String, Vec<u8>)> = sessions
        .iter()
        .map(|s| {
            (
                s.request_id.clone(),
                s.response_body
                    .iter()
                    .flat_map(|c| c.data.clone())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        bodies,
        vec![("a".into(), b"a1a2".to_vec()), ("b".into(), b"b1".to_vec())]
    );
    assert!(sessions[0].end.as_ref().unwrap().contained_sensitive());
}

/// A closed segment with one 20-event stream, one length-prefixed record per event: header,
/// 23 records (start, head, 20 chunks, end), seal.
fn sample(dir: &std::path::Path) -> std::path::PathBuf {
    let mut w = SegmentWriter::open(one_record_per_event(dir), 0).unwrap();
    record_stream(
        &mut w,
        "s1",
        "alice",
        1_718_000_000_000_000,
        &sse_events(1, 20),
    );
    w.close().unwrap();
    segment_files(dir).unwrap().remove(0)
}

#[test]
fn a_segment_cut_at_every_byte_offset_yields_every_complete_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let recs = records(&path);
    let header_len = recs[0].0;
    let cut_dir = tempfile::tempdir().unwrap();
    let cut_path = cut_dir.path().join("w0-000001.mgrec");
    for cut in header_len..=bytes.len() {
        let part = &bytes[..cut];
        let scan = format::scan(part).unwrap();
        let complete = recs.iter().filter(|(o, l)| o + l <= cut).count();
        assert_eq!(scan.pieces.len(), complete, "cut at {cut}");
        assert!(scan
            .pieces
            .iter()
            .all(|p| matches!(p, Piece::Record(r) if r.payload.is_ok())));
        let at_boundary = recs.iter().any(|(o, _)| *o == cut) || cut == bytes.len();
        assert_eq!(
            matches!(scan.tail, Tail::Clean),
            at_boundary,
            "cut at {cut}"
        );
        // Every 97th cut, check the whole path through verify too (it is slower).
        if cut % 97 == 0 || cut == bytes.len() - 1 {
            std::fs::write(&cut_path, part).unwrap();
            let report = verify_dir(cut_dir.path(), None).unwrap();
            let chain = &report.chains[0];
            assert_eq!(chain.records, complete as u64, "cut at {cut}");
            match &chain.first_break {
                None => assert!(at_boundary, "cut at {cut} not reported"),
                Some(b) => {
                    assert_eq!(b.kind, BreakKind::Truncated, "cut at {cut}");
                    assert_eq!(b.record, complete as u64);
                    assert_eq!(b.offset, recs[complete].0 as u64);
                }
            }
        }
    }
}

#[test]
fn a_cut_header_is_reported_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(sample(dir.path())).unwrap();
    for cut in 0..200.min(bytes.len()) {
        assert!(format::scan(&bytes[..cut]).is_err());
    }
}

fn break_after<F: FnOnce(&mut Vec<u8>, &[(usize, usize)])>(edit: F) -> modelgate::recorder::Break {
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path());
    let recs = records(&path);
    let mut bytes = std::fs::read(&path).unwrap();
    edit(&mut bytes, &recs);
    std::fs::write(&path, &bytes).unwrap();
    let report = verify_dir(dir.path(), None).unwrap();
    assert!(!report.is_ok());
    report.first_break().unwrap().clone()
}

/// Flips each byte of `path` in `range` in turn and hands verify's report to `check`.
fn flip_each_byte(
    path: &std::path::Path,
    range: std::ops::Range<usize>,
    check: impl Fn(usize, &modelgate::recorder::VerifyReport, &modelgate::recorder::Break),
) {
    let clean = std::fs::read(path).unwrap();
    for i in range {
        let mut bytes = clean.clone();
        bytes[i] ^= 0x01;
        std::fs::write(path, &bytes).unwrap();
        let report = verify_dir(path.parent().unwrap(), None).unwrap();
        let b = report
            .first_break()
            .unwrap_or_else(|| panic!("flip at {i} not detected"));
        check(i, &report, b);
    }
}

#[test]
fn verify_pins_a_flipped_byte_to_its_record_wherever_it_is() {
    // Flip every byte of record 5 in turn (envelope, link and frame).
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path());
    let (off, len) = records(&path)[5];
    flip_each_byte(&path, off..off + len, |i, report, b| {
        assert_eq!((b.record, b.offset), (5, off as u64), "flip at {i}: {b}");
        assert!(
            matches!(b.kind, BreakKind::Corrupt | BreakKind::Edited),
            "flip at {i}: {b}"
        );
        assert_eq!(
            report.chains[0].records, 5,
            "records before the flip still verify"
        );
    });
}

#[test]
fn verify_detects_a_flipped_header_byte() {
    let b = break_after(|bytes, _| bytes[20] ^= 0x80);
    assert_eq!(b.offset, 0);
}

#[test]
fn verify_reports_a_deleted_record_as_deleted() {
    let b = break_after(|bytes, recs| {
        let (o, l) = recs[7];
        bytes.drain(o..o + l);
    });
    assert_eq!(
        (b.kind, b.record, b.offset),
        (BreakKind::Deleted, 7, records_offset(7))
    );
}

fn records_offset(k: usize) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    records(&sample(dir.path()))[k].0 as u64
}

#[test]
fn verify_reports_a_swapped_pair_as_reordered() {
    let b = break_after(|bytes, recs| {
        let (o3, l3) = recs[3];
        let (o4, l4) = recs[4];
        let r3 = bytes[o3..o3 + l3].to_vec();
        let r4 = bytes[o4..o4 + l4].to_vec();
        let swapped = [r4, r3].concat();
        bytes.splice(o3..o4 + l4, swapped);
    });
    assert_eq!((b.kind, b.record), (BreakKind::Reordered, 3));
}

#[test]
fn verify_reports_a_deleted_last_record_before_the_seal() {
    let b = break_after(|bytes, recs| {
        let (o, l) = recs[recs.len() - 2];
        bytes.drain(o..o + l);
    });
    assert_eq!(b.kind, BreakKind::Deleted);
}

#[test]
fn verify_reports_a_truncated_segment_as_truncation_with_earlier_records_verified() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path());
    let recs = records(&path);
    let bytes = std::fs::read(&path).unwrap();
    let (o, _) = recs[10];
    std::fs::write(&path, &bytes[..o + 17]).unwrap();
    let report = verify_dir(dir.path(), None).unwrap();
    let b = report.first_break().unwrap();
    assert_eq!(
        (b.kind, b.record, b.offset),
        (BreakKind::Truncated, 10, o as u64)
    );
    assert_eq!(report.chains[0].records, 10);
    assert!(
        b.to_string().contains("the 10 records before it verify"),
        "{b}"
    );
    // And the reader still returns those 10 records' events (start, head, 8 chunks).
    let seg = read_segment(&path).unwrap();
    assert_eq!(seg.events.len(), 10);
    assert_eq!(seg.problems.len(), 1);
}

#[test]
fn a_corrupt_middle_is_skipped_by_the_reader_which_resyncs_on_the_next_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample(dir.path());
    let recs = records(&path);
    let total = read_segment(&path).unwrap().events.len();
    let mut bytes = std::fs::read(&path).unwrap();
    // Overwrite record 4's envelope and the start of its frame.
    for b in &mut bytes[recs[4].0..recs[4].0 + 50] {
        *b = 0xAA;
    }
    std::fs::write(&path, &bytes).unwrap();
    let seg = read_segment(&path).unwrap();
    assert_eq!(
        seg.events.len(),
        total - 1,
        "all but the damaged record's one event"
    );
    assert_eq!(seg.problems.len(), 1);
}

// === streamed records (event durability) ===

/// An event-mode segment with one 40-event stream, closed: the streamed record, then the seal.
/// Also returns (file length, events written) after every call that wrote.
fn streamed_sample(dir: &std::path::Path) -> (std::path::PathBuf, Vec<(usize, usize)>) {
    let mut w = SegmentWriter::open(settings(dir), 0).unwrap();
    let path = w.current_segment().unwrap().to_owned();
    let len = || std::fs::metadata(&path).unwrap().len() as usize;
    let mut marks = vec![(len(), 0)];
    let sid = w.start_session(&start("s1", "alice", 1)).unwrap();
    w.response_head(sid, &response_head()).unwrap();
    let events = sse_events(2, 40);
    for (k, e) in events.iter().enumerate() {
        w.response_chunk(sid, 1000 * k as u64, e.as_bytes())
            .unwrap();
        // Start and head rode along with the first chunk.
        marks.push((len(), k + 3));
    }
    w.end_session(sid, &end(99_000, 0)).unwrap();
    marks.push((len(), events.len() + 3));
    w.close().unwrap();
    (path, marks)
}

fn session_items(scan: &format::Scan) -> usize {
    scan.pieces
        .iter()
        .map(|p| match p {
            Piece::Record(r) => r
                .payload
                .as_ref()
                .expect("whole blocks decode")
                .items
                .iter()
                .filter(|i| matches!(i, modelgate::recorder::codec::Item::Session { .. }))
                .count(),
            Piece::Corrupt { offset, why, .. } => panic!("corrupt at {offset}: {why}"),
        })
        .sum()
}

#[test]
fn a_streamed_record_cut_at_every_byte_offset_keeps_every_event_written_before_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (path, marks) = streamed_sample(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let recs = records(&path);
    assert_eq!(recs.len(), 2, "one streamed record, then the seal");
    let stream_end = recs[0].0 + recs[0].1;
    let cut_dir = tempfile::tempdir().unwrap();
    let cut_path = cut_dir.path().join("w0-000001.mgrec");
    for cut in marks[0].0..=bytes.len() {
        let scan = format::scan(&bytes[..cut]).unwrap();
        let written = marks.iter().rev().find(|m| m.0 <= cut).unwrap().1;
        assert_eq!(session_items(&scan), written, "cut at {cut}");
        let at_write_boundary =
            marks.iter().any(|m| m.0 == cut) || cut == stream_end || cut == bytes.len();
        assert_eq!(
            matches!(scan.tail, Tail::Clean),
            at_write_boundary,
            "cut at {cut}: {:?}",
            scan.tail
        );
        let open = scan
            .pieces
            .first()
            .is_some_and(|p| matches!(p, Piece::Record(r) if r.open));
        // Open from the first whole write until the record's end is whole.
        assert_eq!(open, cut >= marks[1].0 && cut < stream_end, "cut at {cut}");
        if cut % 53 == 0 || cut == bytes.len() - 1 {
            std::fs::write(&cut_path, &bytes[..cut]).unwrap();
            let report = verify_dir(cut_dir.path(), None).unwrap();
            match &report.chains[0].first_break {
                None => assert!(at_write_boundary, "cut at {cut} not reported"),
                Some(b) => {
                    assert!(!at_write_boundary, "cut at {cut}: {b}");
                    assert_eq!(b.kind, BreakKind::Truncated, "cut at {cut}");
                }
            }
            let seg = read_segment(&cut_path).unwrap();
            assert_eq!(seg.events.len(), written, "cut at {cut}");
        }
    }
}

#[test]
fn flipping_any_byte_of_a_streamed_record_is_detected_at_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = streamed_sample(dir.path());
    let recs = records(&path);
    let (off, len) = recs[0];
    flip_each_byte(&path, off..off + len, |i, _, b| {
        // The record itself is corrupt (block walk, zstd checksum) or its bytes no longer hash
        // to the link the seal holds.
        let at_record = (b.record, b.offset) == (0, off as u64)
            && matches!(b.kind, BreakKind::Corrupt | BreakKind::Edited);
        let at_seal = (b.record, b.offset) == (1, recs[1].0 as u64) && b.kind == BreakKind::Edited;
        assert!(at_record || at_seal, "flip at {i}: {b}");
    });
}

#[test]
fn an_open_record_reads_and_verifies_and_a_writer_after_a_crash_links_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = SegmentWriter::open(settings(dir.path()), 0).unwrap();
    let path = w.current_segment().unwrap().to_owned();
    let events = sse_events(3, 10);
    record_stream(&mut w, "before", "alice", 1, &events);
    // The live file, as a crash would leave it: the record is still open.
    let crashed = tempfile::tempdir().unwrap();
    std::fs::copy(&path, crashed.path().join("w0-000001.mgrec")).unwrap();
    drop(w);
    let report = verify_dir(crashed.path(), None).unwrap();
    assert!(report.is_ok(), "{:?}", report.first_break());
    assert!(
        report.chains[0]
            .notes
            .iter()
            .any(|n| n.contains("open streamed record")),
        "{:?}",
        report.chains[0].notes
    );
    let sessions = load_sessions(&segment_files(crashed.path()).unwrap(), &|_| true).unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].response_body.len(), events.len());
    assert!(sessions[0].end.is_some(), "the end was written at once");

    let mut w2 = SegmentWriter::open(settings(crashed.path()), 0).unwrap();
    record_stream(&mut w2, "after", "bob", 2, &sse_events(4, 3));
    w2.close().unwrap();
    let report = verify_dir(crashed.path(), None).unwrap();
    assert!(report.is_ok(), "{:?}", report.first_break());
    assert_eq!(report.chains[0].segments, 2);
    // Editing the open record's bytes now breaks the link the second segment holds.
    let first = crashed.path().join("w0-000001.mgrec");
    let mut bytes = std::fs::read(&first).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x40;
    std::fs::write(&first, &bytes).unwrap();
    let report = verify_dir(crashed.path(), None).unwrap();
    assert!(!report.is_ok(), "an edited open record went unnoticed");
}

#[test]
fn recorded_bytes_that_spell_a_record_magic_do_not_break_an_open_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = SegmentWriter::open(settings(dir.path()), 0).unwrap();
    let path = w.current_segment().unwrap().to_owned();
    // Incompressible bytes with both record magics and a zstd magic inside: stored as they are
    // in the frame's blocks.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect()
    };
    let mut body = noise(100);
    body.extend_from_slice(b"MGR\x02");
    body.extend_from_slice(&noise(32));
    body.extend_from_slice(&[0x28, 0xb5, 0x2f, 0xfd]);
    body.extend_from_slice(b"MGR\x01");
    body.extend_from_slice(&noise(60));
    let sid = w.start_session(&start("magic", "mallory", 1)).unwrap();
    w.request_chunk(sid, 1, &body).unwrap();
    w.response_chunk(sid, 2, &body).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert!(
        bytes.windows(4).filter(|w| *w == b"MGR\x02").count() >= 2,
        "the magic is in the file as written"
    );
    let scan = format::scan(&bytes).unwrap();
    assert_eq!(scan.pieces.len(), 1, "{:?}", scan.pieces);
    assert!(matches!(&scan.pieces[0], Piece::Record(r) if r.open && r.payload.is_ok()));
    assert_eq!(scan.tail, Tail::Clean);
    let report = verify_dir(dir.path(), None).unwrap();
    assert!(report.is_ok(), "{:?}", report.first_break());
    let s = &load_sessions(&[path], &|_| true).unwrap()[0];
    assert_eq!(s.response_body[0].data, body);
    drop(w);
}
