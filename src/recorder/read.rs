//! Reading a recording directory back: segments in chain order, events resolved to their
//! request ids, and sessions assembled from their events.
//!
//! Reading is forgiving where `verify` is strict: corrupt stretches are skipped (the scanner
//! resynchronizes on the next record magic) and a torn tail ends the segment, so an auditor can
//! still see everything that survived. Whether the survivors are authentic is `verify`'s job.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use super::codec::Item;
use super::format::{self, Piece, Tail};
use super::model::{Chunk, Event, ResponseHead, SessionEnd, SessionStart, Trailers};
use super::segment::list_segments;

/// One event and where it was found.
#[derive(Debug, Clone)]
pub struct LocatedEvent {
    /// The request id, when the segment holds the session's start or continuation.
    pub request_id: Option<String>,
    /// Byte offset of the record holding the event.
    pub offset: u64,
    pub event: Event,
}

/// The events of one segment, in order.
#[derive(Debug)]
pub struct SegmentEvents {
    pub path: PathBuf,
    pub worker: u32,
    pub seq: u64,
    pub events: Vec<LocatedEvent>,
    /// Damage skipped while reading, as messages (verify gives the precise account).
    pub problems: Vec<String>,
}

/// Reads every event of one segment file.
pub fn read_segment(path: &Path) -> io::Result<SegmentEvents> {
    let bytes = std::fs::read(path)?;
    let scan = format::scan(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })?;
    let mut out = SegmentEvents {
        path: path.to_owned(),
        worker: scan.header.worker,
        seq: scan.header.seq,
        events: Vec::new(),
        problems: Vec::new(),
    };
    let mut ids: HashMap<u64, String> = HashMap::new();
    for piece in scan.pieces {
        match piece {
            Piece::Record(r) => match r.payload {
                Ok(p) => {
                    for item in p.items {
                        let Item::Session { sid, event } = item else {
                            continue;
                        };
                        if let Some(id) = event.request_id() {
                            ids.insert(sid, id.to_owned());
                        }
                        out.events.push(LocatedEvent {
                            request_id: ids.get(&sid).cloned(),
                            offset: r.offset,
                            event,
                        });
                    }
                }
                Err(e) => out
                    .problems
                    .push(format!("record at byte {}: {e}", r.offset)),
            },
            Piece::Corrupt { offset, len, why } => out
                .problems
                .push(format!("{len} unreadable bytes at byte {offset}: {why}")),
        }
    }
    if let Tail::Truncated { offset, have, need } = scan.tail {
        out.problems.push(format!(
            "truncated record at byte {offset} ({have} of {need} bytes)"
        ));
    }
    Ok(out)
}

/// One exchange, assembled from its events (possibly from several segments).
#[derive(Debug, Clone, Default)]
pub struct Session {
    pub worker: u32,
    pub request_id: String,
    pub start: Option<SessionStart>,
    pub request_body: Vec<Chunk>,
    pub response_head: Option<ResponseHead>,
    pub response_body: Vec<Chunk>,
    /// The model server's unmasked body, when the route recorded it.
    pub upstream_body: Vec<Chunk>,
    pub trailers: Option<Trailers>,
    pub end: Option<SessionEnd>,
    /// Segment file and byte offset of the session's first event.
    pub file: PathBuf,
    pub offset: u64,
}

impl Session {
    fn apply(&mut self, event: Event) {
        match event {
            Event::SessionStart(s) => self.start = Some(*s),
            Event::SessionContinue { .. } => {}
            Event::RequestChunk(c) => self.request_body.push(c),
            Event::ResponseHead(h) => self.response_head = Some(h),
            Event::ResponseChunk(c) => self.response_body.push(c),
            Event::UpstreamChunk(c) => self.upstream_body.push(c),
            Event::Trailers(t) => self.trailers = Some(t),
            Event::SessionEnd(e) => self.end = Some(e),
        }
    }
}

/// Assembles sessions from segments read in chain order; `want` selects request ids.
pub fn assemble(segments: &[SegmentEvents], want: &dyn Fn(&str) -> bool) -> Vec<Session> {
    let mut sessions: Vec<Session> = Vec::new();
    let mut by_key: HashMap<(u32, String), usize> = HashMap::new();
    for seg in segments {
        for ev in &seg.events {
            let Some(id) = ev.request_id.as_deref() else {
                continue;
            };
            if !want(id) {
                continue;
            }
            let key = (seg.worker, id.to_owned());
            let i = *by_key.entry(key).or_insert_with(|| {
                sessions.push(Session {
                    worker: seg.worker,
                    request_id: id.to_owned(),
                    file: seg.path.clone(),
                    offset: ev.offset,
                    ..Session::default()
                });
                sessions.len() - 1
            });
            sessions[i].apply(ev.event.clone());
        }
    }
    sessions
}

/// Reads the given segment files (in chain order) and assembles the sessions `want` selects.
pub fn load_sessions(paths: &[PathBuf], want: &dyn Fn(&str) -> bool) -> io::Result<Vec<Session>> {
    let mut segs = Vec::with_capacity(paths.len());
    for p in paths {
        segs.push(read_segment(p)?);
    }
    Ok(assemble(&segs, want))
}

/// Every segment file of `dir` in chain order (worker, then sequence).
pub fn segment_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    Ok(list_segments(dir)?.into_iter().map(|(_, _, p)| p).collect())
}
