//! Session recording: a tamper-evident, per-worker log of every exchange, and the tools that
//! read it back (list, show, replay, export, verify).
//!
//! After a breach the question is who asked which model what, and what came back. The pipeline
//! tees each exchange into its worker's [`SegmentWriter`] as events (start, head, each body
//! chunk with its time offset, end) while the stream flows; nothing waits for the exchange to
//! finish, and with `event` durability each chunk is in the kernel before the client gets it.
//!
//! ```text
//!  pipeline ──start_session / response_chunk / end_session──▶ SegmentWriter   (writer.rs)
//!                                                             │ one per worker thread
//!                        event (model.rs) ─▶ payload (codec.rs) ─▶ zstd frame + link
//!                                          (event durability: one frame streamed across writes)
//!                                                             ▼
//!  DIR/w{worker}-{seq:06}.mgrec   header │ record │ record │ … │ seal      (format.rs)
//!        each record: SHA-256 of the previous one; each header: hash of the previous seal
//!                                                             │
//!  read.rs / index.rs (sessions list|show|export) ◀───────────┤
//!  verify.rs (modelgate verify: first broken record)  ◀───────┘
//! ```
//!
//! Files: `model` (what is recorded), `codec` (payload bytes), `format` (segment bytes and the
//! pure scanner), `dict` (zstd dictionary), `segment` and `sink` (files), `writer`, `read`,
//! `index`, `verify`, `sign`, `retention`, `replay`, `render`, `time`, `config`, `cli`.
//!
//! Nothing here does async I/O: the writer's `write(2)`s are synchronous by design (see
//! `sink.rs`), and the readers are CLI code. Parsing never panics on any input (fuzzed by
//! `fuzz/fuzz_targets/record_reader.rs`).

pub mod cli;
pub mod codec;
pub mod config;
mod dict;
pub mod format;
pub mod index;
pub mod model;
pub mod read;
mod render;
pub mod replay;
pub mod retention;
pub mod segment;
pub mod sign;
pub mod sink;
pub mod time;
pub mod verify;
pub mod writer;

pub use config::{
    Durability, FsyncPolicy, OnDiskError, RecorderConfig, RecordingSection, Retention,
    WriterSettings,
};
pub use dict::DEFAULT as DEFAULT_DICTIONARY;
pub use model::{
    Action, Chunk, EndReason, Event, Head, Identity, PolicyDecision, ResponseHead, SessionEnd,
    SessionStart, Timing, Trailers,
};
pub use read::Session;
pub use verify::{verify_dir, Break, BreakKind, VerifyReport};
pub use writer::{offset_us, Failure, SegmentWriter, SessionId};
