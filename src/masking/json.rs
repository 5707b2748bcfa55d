//! JSON bodies (non-streamed completions): mask inside string values, keep the JSON valid.
//!
//! Streaming, not per document: a small tokenizer tracks only what it must (inside a string or
//! not, object key or value), so memory stays bounded whatever the document size and bytes go
//! out as soon as the engine releases them. Each string value is one text for the engine:
//! escapes are decoded first (a secret written `bob\u0040example.com` is still found), the
//! masked text is re-escaped. A string that had no escapes and no match comes out byte-identical;
//! one with escapes comes out with the minimal escaping (still the same JSON value). Object
//! keys and everything outside strings pass through untouched. Malformed input is passed
//! through as well (the tokenizer never fails); its strings are still masked.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::filter::{BodyFilter, LazyEngine};
use super::{MaskError, Masker, Mode, Verdict};

pub(crate) struct JsonFilter {
    lazy: LazyEngine,
    verdict: Verdict,
    /// Open containers, `{` or `[`.
    stack: Vec<u8>,
    /// In an object, before the `:` of the current member.
    expect_key: bool,
    state: State,
    /// Decoded text of the current value string not yet fed.
    text: Vec<u8>,
    /// A backslash escape in progress (split across chunks).
    esc: Vec<u8>,
    /// A decoded high surrogate waiting for its low half.
    high: Option<u32>,
    masked: Vec<u8>,
    failed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Outside,
    Key { escaped: bool },
    Value,
}

// === impl JsonFilter ===

impl JsonFilter {
    pub(crate) fn new(masker: &Arc<Masker>, mode: Mode) -> JsonFilter {
        JsonFilter {
            lazy: LazyEngine::new(masker, mode),
            verdict: Verdict::default(),
            stack: Vec::new(),
            expect_key: false,
            state: State::Outside,
            text: Vec::new(),
            esc: Vec::new(),
            high: None,
            masked: Vec::new(),
            failed: false,
        }
    }

    fn run(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), MaskError> {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            i += 1;
            match self.state {
                State::Outside => {
                    out.extend_from_slice(&[b]);
                    self.structural(b);
                }
                State::Key { escaped } => {
                    out.extend_from_slice(&[b]);
                    self.state = match (escaped, b) {
                        (true, _) => State::Key { escaped: false },
                        (false, b'\\') => State::Key { escaped: true },
                        (false, b'"') => State::Outside,
                        (false, _) => State::Key { escaped: false },
                    };
                }
                State::Value if !self.esc.is_empty() => {
                    self.esc.push(b);
                    self.escape_step();
                }
                State::Value => match b {
                    b'\\' => self.esc.push(b),
                    b'"' => {
                        self.end_string(out)?;
                        out.extend_from_slice(b"\"");
                        self.state = State::Outside;
                    }
                    _ => {
                        self.flush_high();
                        self.text.push(b);
                    }
                },
            }
        }
        if self.state == State::Value {
            self.feed(out)?;
        }
        Ok(())
    }

    /// Tracks containers so that object keys are told apart from values.
    fn structural(&mut self, b: u8) {
        match b {
            b'"' => {
                let in_object = self.stack.last() == Some(&b'{');
                self.state = if in_object && self.expect_key {
                    State::Key { escaped: false }
                } else {
                    State::Value
                };
            }
            b'{' => {
                self.stack.push(b);
                self.expect_key = true;
            }
            b'[' => {
                self.stack.push(b);
                self.expect_key = false;
            }
            b'}' | b']' => {
                self.stack.pop();
                self.expect_key = false;
            }
            b':' => self.expect_key = false,
            b',' => self.expect_key = self.stack.last() == Some(&b'{'),
            _ => {}
        }
    }

    /// Decodes the escape in `esc` once it is complete.
    fn escape_step(&mut self) {
        let simple = match self.esc.get(1) {
            Some(b'"') => Some(b'"'),
            Some(b'\\') => Some(b'\\'),
            Some(b'/') => Some(b'/'),
            Some(b'b') => Some(0x08),
            Some(b'f') => Some(0x0c),
            Some(b'n') => Some(b'\n'),
            Some(b'r') => Some(b'\r'),
            Some(b't') => Some(b'\t'),
            Some(b'u') => None,
            // Not a JSON escape: keep the character itself.
            Some(&other) => Some(other),
            None => return,
        };
        if let Some(byte) = simple {
            self.flush_high();
            self.text.push(byte);
            self.esc.clear();
            return;
        }
        if self.esc.len() < 6 {
            return;
        }
        let unit = std::str::from_utf8(&self.esc[2..6])
            .ok()
            .and_then(|h| u32::from_str_radix(h, 16).ok());
        self.esc.clear();
        match (unit, self.high.take()) {
            (Some(lo @ 0xDC00..=0xDFFF), Some(hi)) => {
                let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                self.push_char(c);
            }
            (Some(hi @ 0xD800..=0xDBFF), pending) => {
                if pending.is_some() {
                    self.push_char(0xFFFD);
                }
                self.high = Some(hi);
            }
            (Some(c), pending) => {
                if pending.is_some() {
                    self.push_char(0xFFFD);
                }
                self.push_char(c);
            }
            (None, _) => self.push_char(0xFFFD),
        }
    }

    fn flush_high(&mut self) {
        if self.high.take().is_some() {
            self.push_char(0xFFFD);
        }
    }

    fn push_char(&mut self, c: u32) {
        let c = char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER);
        let mut utf8 = [0u8; 4];
        self.text
            .extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
    }

    fn feed(&mut self, out: &mut BytesMut) -> Result<(), MaskError> {
        self.masked.clear();
        let engine = self.lazy.get(&mut self.verdict)?;
        let result = engine.feed(
            &self.text,
            Instant::now(),
            &mut self.masked,
            &mut self.verdict,
        );
        self.text.clear();
        escape_into(&self.masked, out);
        result
    }

    fn end_string(&mut self, out: &mut BytesMut) -> Result<(), MaskError> {
        self.flush_high();
        self.esc.clear();
        self.feed(out)?;
        self.masked.clear();
        let engine = self.lazy.get(&mut self.verdict)?;
        let result = engine.finish(Instant::now(), &mut self.masked, &mut self.verdict);
        escape_into(&self.masked, out);
        result
    }
}

impl BodyFilter for JsonFilter {
    fn on_chunk(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), MaskError> {
        if self.failed {
            return Err(MaskError::Poisoned);
        }
        let result = self.run(data, out);
        self.failed = result.is_err();
        result
    }

    fn on_end(&mut self, out: &mut BytesMut) -> Result<(), MaskError> {
        if self.failed {
            return Err(MaskError::Poisoned);
        }
        // An unterminated string still gets its held text, masked.
        let result = if self.state == State::Value {
            self.end_string(out)
        } else {
            Ok(())
        };
        self.failed = result.is_err();
        result
    }

    fn verdict(&self) -> &Verdict {
        &self.verdict
    }
}

/// Appends `text` as the inside of a JSON string.
pub(crate) fn escape_into(text: &[u8], out: &mut BytesMut) {
    let mut start = 0;
    for (i, &b) in text.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&text[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&text[start..]);
}
