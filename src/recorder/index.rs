//! The session index: a small JSON sidecar per segment (`w0-000001.mgidx`) summarizing the
//! sessions seen in it, so `sessions list` reads kilobytes instead of decompressing gigabytes.
//!
//! The index is a cache, never a source of truth: it is not chained or signed, it is rebuilt
//! whenever it is missing or stale (its recorded segment length and modification time differ
//! from the file's), and `sessions reindex` rebuilds it outright. A session that spans segments
//! has a partial summary in each; [`merge`] joins them. If the directory is not writable (an
//! auditor's read-only copy) the index is built in memory and not saved.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::model::{Action, EndReason, Event};
use super::read::{read_segment, SegmentEvents};

const INDEX_VERSION: u32 = 1;

/// What one segment says about one session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub request_id: String,
    pub worker: u32,
    /// Segment file name and byte offset of the session's first event in it.
    pub file: String,
    pub offset: u64,
    pub has_start: bool,
    pub has_end: bool,
    pub started_us: Option<u64>,
    pub subject: Option<String>,
    pub groups: Vec<String>,
    pub model: Option<String>,
    pub route: Option<String>,
    pub decision: Option<Action>,
    pub status: Option<u16>,
    pub end: Option<EndReason>,
    /// Masking hid something from the client.
    pub sensitive: bool,
    pub response_bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct SegmentIndex {
    version: u32,
    len: u64,
    mtime_ns: i64,
    sessions: Vec<Summary>,
}

/// `w0-000001.mgrec` → `w0-000001.mgidx`
pub fn sidecar_path(segment: &Path) -> PathBuf {
    segment.with_extension("mgidx")
}

/// The summaries of one segment, from its sidecar when fresh, else rebuilt (and saved when
/// possible).
pub fn segment_summaries(segment: &Path, force: bool) -> io::Result<Vec<Summary>> {
    let meta = std::fs::metadata(segment)?;
    let (len, mtime_ns) = (meta.len(), meta.mtime() * 1_000_000_000 + meta.mtime_nsec());
    let side = sidecar_path(segment);
    if !force {
        if let Ok(bytes) = std::fs::read(&side) {
            if let Ok(ix) = serde_json::from_slice::<SegmentIndex>(&bytes) {
                if ix.version == INDEX_VERSION && ix.len == len && ix.mtime_ns == mtime_ns {
                    return Ok(ix.sessions);
                }
            }
        }
    }
    let sessions = summarize(&read_segment(segment)?);
    let ix = SegmentIndex {
        version: INDEX_VERSION,
        len,
        mtime_ns,
        sessions,
    };
    if let Err(e) = save(&side, &ix) {
        tracing::debug!(file = %side.display(), error = %e, "index not saved");
    }
    Ok(ix.sessions)
}

fn save(path: &Path, ix: &SegmentIndex) -> io::Result<()> {
    let tmp = path.with_extension("mgidx.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec(ix).map_err(io::Error::other)?)?;
    drop(f);
    std::fs::rename(tmp, path)
}

/// Summarizes the sessions of a segment's events.
pub fn summarize(seg: &SegmentEvents) -> Vec<Summary> {
    let file = seg
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out: Vec<Summary> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for ev in &seg.events {
        let Some(id) = ev.request_id.as_deref() else {
            continue;
        };
        let i = *at.entry(id).or_insert_with(|| {
            out.push(Summary {
                request_id: id.to_owned(),
                worker: seg.worker,
                file: file.clone(),
                offset: ev.offset,
                ..Summary::default()
            });
            out.len() - 1
        });
        let s = &mut out[i];
        match &ev.event {
            Event::SessionStart(st) => {
                s.has_start = true;
                s.started_us = Some(st.wall_time_us);
                s.subject = st.identity.as_ref().map(|i| i.subject.clone());
                s.groups = st
                    .identity
                    .as_ref()
                    .map(|i| i.groups.clone())
                    .unwrap_or_default();
                s.model = st.model.clone();
                s.route = st.route.clone();
                s.decision = st.decision.as_ref().map(|d| d.action);
            }
            Event::ResponseHead(h) => s.status = s.status.or(Some(h.status)),
            Event::ResponseChunk(c) => s.response_bytes += c.data.len() as u64,
            Event::SessionEnd(e) => {
                s.has_end = true;
                s.status = e.status.or(s.status);
                s.end = Some(e.reason);
                s.sensitive = e.contained_sensitive();
            }
            Event::SessionContinue { .. }
            | Event::RequestChunk(_)
            | Event::UpstreamChunk(_)
            | Event::Trailers(_) => {}
        }
    }
    out
}

/// Joins the partial summaries of sessions that span segments (inputs in chain order).
pub fn merge(parts: Vec<Summary>) -> Vec<Summary> {
    let mut out: Vec<Summary> = Vec::new();
    let mut at: HashMap<(u32, String), usize> = HashMap::new();
    for p in parts {
        match at.get(&(p.worker, p.request_id.clone())) {
            None => {
                at.insert((p.worker, p.request_id.clone()), out.len());
                out.push(p);
            }
            Some(&i) => {
                let s = &mut out[i];
                s.response_bytes += p.response_bytes;
                if p.has_start && !s.has_start {
                    let (file, offset, bytes) = (s.file.clone(), s.offset, s.response_bytes);
                    *s = Summary {
                        file,
                        offset,
                        response_bytes: bytes,
                        ..p.clone()
                    };
                }
                if p.has_end {
                    s.has_end = true;
                    s.status = p.status.or(s.status);
                    s.end = p.end;
                    s.sensitive = p.sensitive;
                }
            }
        }
    }
    out
}

/// Per-segment summaries of every session in `dir`, unmerged, in chain order (a session that
/// spans segments appears once per segment, which says which files to read for it).
pub fn parts(dir: &Path, force: bool) -> io::Result<Vec<Summary>> {
    let mut parts = Vec::new();
    for path in super::read::segment_files(dir)? {
        parts.extend(segment_summaries(&path, force)?);
    }
    Ok(parts)
}

/// Summaries of every session in `dir`, merged, in chain order.
pub fn list(dir: &Path, force: bool) -> io::Result<Vec<Summary>> {
    Ok(merge(parts(dir, force)?))
}
