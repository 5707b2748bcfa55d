//! `text/event-stream` bodies: events parsed across arbitrary chunk splits, text fields
//! masked per stream ([`super::sse_shapes`]), everything else byte-identical and in order.
//!
//! An event is complete at its blank line (`\n`, `\r\n` or `\r` line ends, as the SSE spec
//! allows). Events without `data:`, comments, `[DONE]` and JSON events carrying no text pass
//! through exactly as received. A rewritten event keeps its other lines (`id:`, `event:`, …) in
//! place and its data lines where the first one was (one per line of the data); within them, a token's masked text is spliced into the
//! event's own bytes ([`super::sse_shapes`]). Before `[DONE]` (and at the end of the body) streams
//! still holding text are flushed into synthesized events. On a block or scan error the filter
//! writes an `event: error` event and fails; nothing more is emitted.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::filter::BodyFilter;
use super::sse_shapes::{Outcome, Shapes, Synth};
use super::{MaskError, Masker, Mode, Verdict};

/// Bytes one event may reach before its blank line. An event is scanned whole, so it is held
/// whole: without a cap a model server sending one endless event would grow the gateway's
/// memory without bound. Token events are tens of bytes; the largest legitimate ones (a
/// `/v1/responses` `response.completed` repeating a long answer) are well under this.
const MAX_EVENT_BYTES: usize = 4 << 20;

pub(crate) struct SseFilter {
    shapes: Shapes,
    /// Bytes of the event being received.
    pending: Vec<u8>,
    /// How far `pending` has been searched for the blank line, and where its current line starts.
    searched: usize,
    line_start: usize,
    verdict: Verdict,
    failed: bool,
}

// === impl SseFilter ===

impl SseFilter {
    pub(crate) fn new(masker: &Arc<Masker>, mode: Mode) -> SseFilter {
        SseFilter {
            shapes: Shapes::new(masker, mode),
            pending: Vec::new(),
            searched: 0,
            line_start: 0,
            verdict: Verdict::default(),
            failed: false,
        }
    }

    /// Length of the first complete event in `buf` (what is left of `pending`), if there is
    /// one. `searched` and `line_start` carry the search across chunks.
    fn complete_event(buf: &[u8], searched: &mut usize, line_start: &mut usize) -> Option<usize> {
        let mut i = *searched;
        while let Some(at) = memchr::memchr2(b'\n', b'\r', &buf[i..]) {
            i += at;
            let term = match buf[i] {
                b'\n' => 1,
                b'\r' if i + 1 < buf.len() => 1 + usize::from(buf[i + 1] == b'\n'),
                // A trailing `\r` may be the first half of `\r\n`: wait for the next byte.
                _ => {
                    *searched = i;
                    return None;
                }
            };
            let empty = i == *line_start;
            i += term;
            *line_start = i;
            if empty {
                *searched = 0;
                *line_start = 0;
                return Some(i);
            }
        }
        *searched = buf.len();
        None
    }

    fn process(&mut self, event: &[u8], now: Instant, out: &mut BytesMut) -> Result<(), MaskError> {
        let lines = split_lines(event);
        let mut data: Option<String> = None;
        let mut name = None;
        for (line, _) in &lines {
            let (field, value) = field(line);
            match field {
                b"data" => {
                    let value = String::from_utf8_lossy(value);
                    match &mut data {
                        Some(d) => {
                            d.push('\n');
                            d.push_str(&value);
                        }
                        None => data = Some(value.into_owned()),
                    }
                }
                b"event" => name = Some(String::from_utf8_lossy(value).into_owned()),
                _ => {}
            }
        }
        let Some(data) = data else {
            out.extend_from_slice(event);
            return Ok(());
        };
        let eol: &[u8] = lines.first().map_or(b"\n", |(_, eol)| eol);
        if data.trim() == "[DONE]" {
            let synths = self.shapes.finish_all(now, &mut self.verdict)?;
            write_synths(&synths, eol, out);
            out.extend_from_slice(event);
            return Ok(());
        }
        match self
            .shapes
            .event(name.as_deref(), &data, now, &mut self.verdict)?
        {
            Outcome::Pass => out.extend_from_slice(event),
            Outcome::Rewrite { before, data } => {
                write_synths(&before, eol, out);
                match data {
                    Some(data) => write_rewritten(&lines, &data, out),
                    None => out.extend_from_slice(event),
                }
            }
        }
        Ok(())
    }

    fn run(&mut self, data: &[u8], end: bool, out: &mut BytesMut) -> Result<(), MaskError> {
        let now = Instant::now();
        self.pending.extend_from_slice(data);
        // Events are processed in place and the buffer shifted once per chunk: a chunk holding
        // many events must not move its tail once per event.
        let mut buf = std::mem::take(&mut self.pending);
        let mut start = 0;
        while let Some(len) =
            Self::complete_event(&buf[start..], &mut self.searched, &mut self.line_start)
        {
            self.process(&buf[start..start + len], now, out)?;
            start += len;
        }
        buf.drain(..start);
        self.pending = buf;
        if self.pending.len() > MAX_EVENT_BYTES {
            return Err(MaskError::EventTooLarge {
                cap: MAX_EVENT_BYTES,
            });
        }
        if end {
            if !self.pending.is_empty() {
                // An unterminated last event: processed as if complete, so its text is masked.
                let event = std::mem::take(&mut self.pending);
                self.process(&event, now, out)?;
            }
            let synths = self.shapes.finish_all(now, &mut self.verdict)?;
            write_synths(&synths, b"\n", out);
        }
        Ok(())
    }

    fn guarded(&mut self, data: &[u8], end: bool, out: &mut BytesMut) -> Result<(), MaskError> {
        if self.failed {
            return Err(MaskError::Poisoned);
        }
        let result = self.run(data, end, out);
        if let Err(err) = &result {
            self.failed = true;
            self.verdict.note_error(err);
            write_error(err, out);
        }
        result
    }
}

impl BodyFilter for SseFilter {
    fn on_chunk(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), MaskError> {
        self.guarded(data, false, out)
    }

    fn on_end(&mut self, out: &mut BytesMut) -> Result<(), MaskError> {
        self.guarded(&[], true, out)
    }

    fn verdict(&self) -> &Verdict {
        &self.verdict
    }
}

/// Lines of an event with their line ends (the blank line included, as an empty line).
fn split_lines(event: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while let Some(at) = memchr::memchr2(b'\n', b'\r', &event[i..]) {
        i += at;
        let term = match event[i] {
            b'\n' => 1,
            _ => 1 + usize::from(event.get(i + 1) == Some(&b'\n')),
        };
        lines.push((&event[start..i], &event[i..i + term]));
        i += term;
        start = i;
    }
    if start < event.len() {
        lines.push((&event[start..], &b""[..]));
    }
    lines
}

/// `name: value` → (name, value without the one optional leading space).
fn field(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&b| b == b':') {
        Some(colon) => {
            let value = &line[colon + 1..];
            (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
        }
        None => (line, &[]),
    }
}

fn write_rewritten(lines: &[(&[u8], &[u8])], data: &str, out: &mut BytesMut) {
    let mut wrote_data = false;
    for (line, eol) in lines {
        if field(line).0 == b"data" && !line.is_empty() {
            if !wrote_data {
                // One `data:` line per line of the data (a multi-line event stays one).
                for part in data.split('\n') {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(part.as_bytes());
                    out.extend_from_slice(eol);
                }
                wrote_data = true;
            }
            continue;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(eol);
    }
}

fn write_synths(synths: &[Synth], eol: &[u8], out: &mut BytesMut) {
    for synth in synths {
        if let Some(name) = &synth.event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(eol);
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(synth.data.as_bytes());
        out.extend_from_slice(eol);
        out.extend_from_slice(eol);
    }
}

/// The terminal event of a failed stream.
fn write_error(err: &MaskError, out: &mut BytesMut) {
    let kind = match err {
        MaskError::Blocked { .. } => "blocked",
        _ => "masking_error",
    };
    let body = serde_json::json!({"error": {"type": kind, "message": err.to_string()}});
    out.extend_from_slice(b"event: error\ndata: ");
    out.extend_from_slice(body.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_their_own_line_ends() {
        let lines = split_lines(b"id: 1\r\ndata: x\n\r\n");
        assert_eq!(
            lines,
            vec![
                (&b"id: 1"[..], &b"\r\n"[..]),
                (&b"data: x"[..], &b"\n"[..]),
                (&b""[..], &b"\r\n"[..])
            ]
        );
    }

    #[test]
    fn fields_lose_one_leading_space_only() {
        assert_eq!(field(b"data:  x"), (&b"data"[..], &b" x"[..]));
        assert_eq!(field(b": comment"), (&b""[..], &b"comment"[..]));
    }
}
