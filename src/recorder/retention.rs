//! Retention: deleting old segments, oldest first, by age and by the directory's total size.
//!
//! Directory-wide rather than per writer, so one periodic call (from any one thread) keeps the
//! whole directory within bounds however many workers write to it. The newest segment of each
//! worker is never deleted: it may be the one being written, and it is what the next segment
//! links to. Deleting a chain's oldest segments is expected; `verify` notes that a chain starts
//! late instead of calling it a break (a gap in the middle is still a break).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::config::Retention;
use super::segment::list_segments;

/// What one retention pass deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    pub files: Vec<PathBuf>,
    pub bytes: u64,
}

/// Deletes segments (and their index sidecars) older than `max_age`, then the oldest ones
/// while the directory holds more than `max_bytes`.
pub fn enforce(dir: &Path, policy: &Retention, now: SystemTime) -> io::Result<Removed> {
    let segs = list_segments(dir)?;
    let mut newest: HashMap<u32, u64> = HashMap::new();
    for (w, s, _) in &segs {
        let e = newest.entry(*w).or_insert(*s);
        *e = (*e).max(*s);
    }
    // (modified, worker, seq, path, len); segments are append-only, so mtime is the time of the
    // last record, the right clock for "older than".
    let mut candidates = Vec::new();
    let mut total: u64 = 0;
    for (w, s, path) in segs {
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        total += meta.len();
        if newest.get(&w) != Some(&s) {
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            candidates.push((mtime, w, s, path, meta.len()));
        }
    }
    candidates.sort();
    let mut removed = Removed::default();
    for (mtime, _, _, path, len) in candidates {
        let too_old = policy
            .max_age
            .is_some_and(|age| now.duration_since(mtime).is_ok_and(|d| d > age));
        let too_big = policy.max_bytes.is_some_and(|max| total > max);
        if !too_old && !too_big {
            // Sorted oldest first: nothing after this one is older, and the size is within bounds.
            break;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            // Another thread's pass got there first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let _ = std::fs::remove_file(super::index::sidecar_path(&path));
        total = total.saturating_sub(len);
        removed.bytes += len;
        removed.files.push(path);
    }
    Ok(removed)
}
