//! The model named by every `ModelInferRequest` of a gRPC request body, read as the body streams.
//!
//! A streaming call (`ModelStreamInfer`) carries many messages on one request body, and the
//! gateway admits it by the model of the first. A client could name another model in a later
//! message, so the request-body stage runs every chunk through [`GrpcModelScan`], which reports
//! what each message names as soon as its last byte has passed.
//!
//! Nothing is buffered but the model name: the gRPC framing ([`crate::grpc::frame`]) is tracked
//! by counting, and inside a message the protobuf wire format is walked one field at a time,
//! skipping every value except field 1 by counting. Tensors of many megabytes cost O(1) work per
//! chunk and no memory; the only buffer is the name, bounded by `max_name`.
//!
//! The verdict per message is exactly [`model_from_grpc_infer`] on the whole message (so a
//! repeated `model_name` means the last one, and anything malformed means no model), whatever
//! the chunking; a message whose fields are malformed still ends where its gRPC prefix says, so
//! the next one is read correctly. Framing errors are [`FrameError`]s, the same as
//! [`MessageReader`](crate::grpc::frame::MessageReader) gives at the same byte, and stick.
//!
//! [`model_from_grpc_infer`]: crate::policy::model::model_from_grpc_infer

use crate::grpc::frame::{FrameError, PREFIX_LEN};

/// What one complete message named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// The message's `model_name` (the last field 1, valid UTF-8).
    Model(String),
    /// No valid model_name: absent, not UTF-8, malformed protobuf, or over `max_name`.
    Unknown,
    /// A compressed message (flag 1): its fields cannot be read without decompressing it.
    Compressed,
}

/// Streaming scanner of a gRPC request body for the model each message names.
///
/// ```text
///            ┌──────────────── message done: on_message(..) ◀───────────────┐
///            ▼                                                              │
/// Prefix { got: 0..5 } ──5th byte──▶ Body { left: len..0 } ──left == 0──────┘
///     │ flag ∉ {0,1}, len > max           (uncompressed bytes go to Fields)
///     ▼
///  Failed(e): every later feed and finish return e
/// ```
pub struct GrpcModelScan {
    max_message: u32,
    frame: Frame,
    fields: Fields,
}

/// Where the scan is in the gRPC framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// Reading a prefix: `got` of its bytes are in `bytes`.
    Prefix { got: usize, bytes: [u8; PREFIX_LEN] },
    /// Inside a message of `len` bytes, `left` of them still to come.
    Body {
        compressed: bool,
        len: usize,
        left: usize,
    },
    /// The framing is lost: nothing after it can be trusted.
    Failed(FrameError),
}

/// The protobuf walk through one uncompressed message.
struct Fields {
    state: Field,
    max_name: usize,
    /// The model_name being copied, or the last one read; never longer than `max_name`.
    name: Vec<u8>,
    /// A complete, valid field 1 is in `name`.
    named: bool,
}

/// Where the walk is inside a message. Only `Key` at a varint's first byte is a field boundary,
/// where the message may end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// Reading a field's key (tag and wire type).
    Key(Varint),
    /// Reading a varint (wire type 0) value.
    Value(Varint),
    /// Reading the length of a LEN (wire type 2) value; `name`: it is field 1.
    Len { name: bool, varint: Varint },
    /// Skipping this many bytes of a value, all of them inside the message.
    Skip(usize),
    /// Copying this many more bytes of a model_name, all of them inside the message.
    Name(usize),
    /// The message names no usable model; its remaining bytes are only counted.
    Bad,
}

/// A base-128 varint in progress: `n` bytes read so far, their bits in `value`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Varint {
    value: u64,
    n: u8,
}

/// What one byte did to a varint.
enum Step {
    More(Varint),
    Done(u64),
    /// Over 10 bytes or over 64 bits: malformed, as in `model_from_grpc_infer`.
    Overflow,
}

const BOUNDARY: Field = Field::Key(Varint { value: 0, n: 0 });
const EMPTY_PREFIX: Frame = Frame::Prefix {
    got: 0,
    bytes: [0; PREFIX_LEN],
};

// === impl GrpcModelScan ===

impl GrpcModelScan {
    /// `max_message`: largest declared gRPC message length accepted (larger →
    /// [`FrameError::TooLarge`], as in [`crate::grpc::frame`]); `max_name`: longest model_name
    /// kept (a longer field-1 value makes the message [`Named::Unknown`]).
    pub fn new(max_message: u32, max_name: usize) -> Self {
        GrpcModelScan {
            max_message,
            frame: EMPTY_PREFIX,
            fields: Fields {
                state: BOUNDARY,
                max_name,
                name: Vec::new(),
                named: false,
            },
        }
    }

    /// Feeds the next body bytes; calls `on_message` once per complete message, in order, as
    /// soon as its last byte is fed (a zero-length message: as soon as its prefix is).
    ///
    /// # Errors
    /// A flag byte other than 0 or 1 ([`FrameError::BadFlag`], judged on that byte alone) or a
    /// declared length over `max_message` ([`FrameError::TooLarge`]). Messages that completed
    /// earlier in the same chunk have been reported; later feeds return the same error.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        mut on_message: impl FnMut(Named),
    ) -> Result<(), FrameError> {
        let mut rest = chunk;
        loop {
            match self.frame {
                Frame::Failed(e) => return Err(e),
                Frame::Prefix { mut got, mut bytes } => {
                    let Some((&b, tail)) = rest.split_first() else {
                        return Ok(());
                    };
                    rest = tail;
                    bytes[got] = b;
                    got += 1;
                    self.frame = self.after_prefix_byte(got, bytes);
                }
                Frame::Body {
                    compressed,
                    len,
                    left,
                } => {
                    let (now, tail) = rest.split_at(left.min(rest.len()));
                    rest = tail;
                    let left = left - now.len();
                    if !compressed {
                        self.fields.feed(now, left);
                    }
                    if left > 0 {
                        // `now` took the whole chunk.
                        self.frame = Frame::Body {
                            compressed,
                            len,
                            left,
                        };
                        return Ok(());
                    }
                    on_message(if compressed {
                        Named::Compressed
                    } else {
                        self.fields.end()
                    });
                    self.frame = EMPTY_PREFIX;
                }
            }
        }
    }

    /// The body ended: `Err(FrameError::Truncated { .. })` if it ended inside a message
    /// (prefix or payload; `received` counts that message's bytes, prefix included), the
    /// sticky error if there was one, else `Ok`.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.frame {
            Frame::Failed(e) => Err(e),
            Frame::Prefix { got: 0, .. } => Ok(()),
            Frame::Prefix { got, .. } => Err(FrameError::Truncated {
                received: got,
                expected: None,
            }),
            Frame::Body { len, left, .. } => Err(FrameError::Truncated {
                received: PREFIX_LEN + len - left,
                expected: Some(PREFIX_LEN + len),
            }),
        }
    }

    /// The framing state once `got` prefix bytes are in: the flag is judged on its own byte so
    /// a bad stream fails at the same byte as in [`crate::grpc::frame`], whatever the chunking.
    fn after_prefix_byte(&self, got: usize, bytes: [u8; PREFIX_LEN]) -> Frame {
        let compressed = match bytes[0] {
            0 => false,
            1 => true,
            flag => return Frame::Failed(FrameError::BadFlag(flag)),
        };
        if got < PREFIX_LEN {
            return Frame::Prefix { got, bytes };
        }
        let declared = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        if declared > self.max_message {
            return Frame::Failed(FrameError::TooLarge {
                declared,
                max: self.max_message,
            });
        }
        // u32 → usize is lossless on every target this gateway builds for (64-bit Linux).
        let len = declared as usize;
        Frame::Body {
            compressed,
            len,
            left: len,
        }
    }
}

// === impl Fields ===

impl Fields {
    /// Walks `bytes` of the current message; `after` more bytes of it follow them. Knowing
    /// where the message ends lets a value that overruns it be judged malformed at its length,
    /// before any of it is skipped or copied.
    fn feed(&mut self, bytes: &[u8], after: usize) {
        let mut i = 0;
        while i < bytes.len() {
            // Bytes of the message from `bytes[i]` on (this one included).
            let room = bytes.len() - i + after;
            self.state = match self.state {
                Field::Bad => return,
                Field::Skip(n) => {
                    let k = n.min(bytes.len() - i);
                    i += k;
                    if k == n {
                        BOUNDARY
                    } else {
                        Field::Skip(n - k)
                    }
                }
                Field::Name(n) => {
                    let k = n.min(bytes.len() - i);
                    self.name.extend_from_slice(&bytes[i..i + k]);
                    i += k;
                    if k < n {
                        Field::Name(n - k)
                    } else if std::str::from_utf8(&self.name).is_ok() {
                        self.named = true;
                        BOUNDARY
                    } else {
                        // The server rejects a non-UTF-8 string, so no name can be trusted.
                        Field::Bad
                    }
                }
                Field::Key(v) | Field::Value(v) | Field::Len { varint: v, .. } => {
                    let step = v.push(bytes[i]);
                    i += 1;
                    self.varint_step(step, room - 1)
                }
            };
        }
    }

    /// The state after a varint byte; `room` bytes of the message follow that byte.
    fn varint_step(&mut self, step: Step, room: usize) -> Field {
        let value = match step {
            Step::Overflow => return Field::Bad,
            Step::More(v) => {
                return match self.state {
                    Field::Key(_) => Field::Key(v),
                    Field::Len { name, .. } => Field::Len { name, varint: v },
                    _ => Field::Value(v),
                }
            }
            Step::Done(value) => value,
        };
        match self.state {
            Field::Key(_) => {
                let (field, wire) = (value >> 3, value & 7);
                if field == 0 || field > (1 << 29) - 1 {
                    return Field::Bad;
                }
                match wire {
                    0 => Field::Value(Varint::default()),
                    1 => skip(8, room),
                    2 => Field::Len {
                        name: field == 1,
                        varint: Varint::default(),
                    },
                    5 => skip(4, room),
                    // Groups (3, 4) and the undefined 6 and 7.
                    _ => Field::Bad,
                }
            }
            Field::Len { name: true, .. } => match usize::try_from(value) {
                Ok(len) if len <= room && len <= self.max_name => {
                    self.name.clear();
                    self.named = false;
                    if len == 0 {
                        // `Some("")`: an explicit empty name.
                        self.named = true;
                        BOUNDARY
                    } else {
                        Field::Name(len)
                    }
                }
                _ => Field::Bad,
            },
            Field::Len { name: false, .. } => {
                usize::try_from(value).map_or(Field::Bad, |len| skip(len, room))
            }
            _ => BOUNDARY,
        }
    }

    /// The message ended: what it named. Resets the walk for the next message.
    fn end(&mut self) -> Named {
        let named = match self.state {
            // Ended on a field boundary with a name read (validated as it completed).
            Field::Key(Varint { n: 0, .. }) if self.named => std::str::from_utf8(&self.name)
                .map_or(Named::Unknown, |s| Named::Model(s.to_owned())),
            // No name, malformed, or cut inside a varint (values never outrun the message).
            _ => Named::Unknown,
        };
        self.state = BOUNDARY;
        self.name.clear();
        self.named = false;
        named
    }
}

/// Skipping `n` bytes of a value when `room` bytes of the message are left.
fn skip(n: usize, room: usize) -> Field {
    match n {
        0 => BOUNDARY,
        n if n <= room => Field::Skip(n),
        _ => Field::Bad,
    }
}

// === impl Varint ===

impl Varint {
    /// Adds a byte with the rules of `model_from_grpc_infer`'s `varint`: at most 10 bytes,
    /// the 10th carrying only the 64th bit.
    fn push(self, b: u8) -> Step {
        if self.n == 9 && b > 1 {
            return Step::Overflow;
        }
        let value = self.value | u64::from(b & 0x7F) << (7 * self.n);
        if b & 0x80 == 0 {
            Step::Done(value)
        } else {
            Step::More(Varint {
                value,
                n: self.n + 1,
            })
        }
    }
}

#[cfg(test)]
mod tests;
