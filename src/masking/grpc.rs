//! gRPC responses: the text in KServe v2 `BYTES` tensors, masked message by message.
//!
//! A gRPC body is a sequence of length-prefixed protobuf messages ([`MessageReader`]). For
//! `ModelInfer` each is a `ModelInferResponse`; for `ModelStreamInfer` a
//! `ModelStreamInferResponse` wrapping one (and an `error_message` string). The text a user sees
//! is in the outputs whose `datatype` is `BYTES`: either `raw_output_contents[i]` (elements
//! framed as a 4-byte little-endian length, then the bytes; what Triton sends) or
//! `outputs[i].contents.bytes_contents` (one element per entry). Each element is masked as one
//! text, and the message is re-encoded with the new lengths, all other fields copied byte for
//! byte. A message is the unit a gRPC peer acts on, so each is held until complete (bounded by
//! the largest message accepted), never the whole stream.
//!
//! Requests (`ModelInferRequest`, the prompt side, on routes with `mask_requests`) are masked
//! the same way in their `BYTES` inputs.
//!
//! Fails closed: a compressed message (the gateway strips `grpc-accept-encoding` on masked
//! routes, so a server that compresses anyway is misbehaving), malformed protobuf or framing
//! ends the call rather than letting unscanned text through. Other gRPC methods carry no model
//! output and pass through unchanged.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::filter::{BodyFilter, LazyEngine};
use super::{MaskError, Masker, Mode, Verdict};
use crate::grpc::frame::{encode, MessageReader};
use crate::grpc::wire::{next_field, put_len, Field, Value};

/// Largest gRPC message masked: gRPC's own default receive limit. Each message is held until
/// complete, so this bounds what one masked stream holds (a larger one ends the call).
const MAX_MESSAGE: u32 = 4 * 1024 * 1024;

/// What all masked gRPC streams of one worker may hold at once, waiting for their messages to
/// complete. Many streams each holding a message just under `MAX_MESSAGE` would otherwise add
/// up without bound; past this, the stream that asks for more ends (fail closed).
const WORKER_BUDGET: usize = 64 * 1024 * 1024;

thread_local! {
    /// Bytes held by this worker's gRPC filters (each worker is one thread).
    static HELD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Which message a body carries, for the KServe methods whose messages hold text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcMethod {
    /// `ModelInferResponse` (`…/ModelInfer` responses).
    Infer,
    /// `ModelStreamInferResponse` (`…/ModelStreamInfer` responses).
    StreamInfer,
    /// `ModelInferRequest` (requests of both methods): the prompt side.
    InferRequest,
    /// Anything else: passed through.
    Other,
}

impl GrpcMethod {
    /// The messages of the request (`request`) or the response of the method at `path`.
    pub fn of(path: &str, request: bool) -> GrpcMethod {
        let infer = path.ends_with("/ModelInfer");
        let stream = path.ends_with("/ModelStreamInfer");
        match (infer || stream, request) {
            (false, _) => GrpcMethod::Other,
            (true, true) => GrpcMethod::InferRequest,
            (true, false) if stream => GrpcMethod::StreamInfer,
            (true, false) => GrpcMethod::Infer,
        }
    }
}

/// Field numbers of the tensors and their raw contents: `ModelInferResponse` has `outputs` = 5
/// and `raw_output_contents` = 6, `ModelInferRequest` has `inputs` = 5 and
/// `raw_input_contents` = 7. Both tensor messages keep `datatype` in 2 and `contents` in 5.
const RESPONSE_FIELDS: (u32, u32) = (5, 6);
const REQUEST_FIELDS: (u32, u32) = (5, 7);

/// Masks the `BYTES` tensors of each response message.
pub(crate) struct GrpcFilter {
    method: GrpcMethod,
    reader: MessageReader,
    lazy: LazyEngine,
    verdict: Verdict,
    /// One masked element.
    text: Vec<u8>,
    /// This filter's share of the worker's `HELD`.
    held: usize,
}

impl GrpcFilter {
    pub(crate) fn new(masker: &Arc<Masker>, mode: Mode, method: GrpcMethod) -> GrpcFilter {
        GrpcFilter {
            method,
            reader: MessageReader::new(MAX_MESSAGE),
            lazy: LazyEngine::new(masker, mode),
            verdict: Verdict::default(),
            text: Vec::new(),
            held: 0,
        }
    }

    /// Brings this filter's share of the worker budget up to date; `Err` when holding what the
    /// reader holds now would take the worker past it.
    fn account(&mut self) -> Result<(), MaskError> {
        let now = self.reader.buffered();
        let total = HELD.with(|h| {
            let total = h.get().saturating_sub(self.held) + now;
            h.set(total);
            total
        });
        self.held = now;
        match total > WORKER_BUDGET {
            true => Err(MaskError::HoldExceeded {
                held: total,
                cap: WORKER_BUDGET,
            }),
            false => Ok(()),
        }
    }

    /// Masks one text (a tensor element, an error message) into `self.text`.
    fn mask(&mut self, text: &[u8]) -> Result<&[u8], MaskError> {
        self.text.clear();
        let now = Instant::now();
        let engine = self.lazy.get(&mut self.verdict)?;
        engine.feed(text, now, &mut self.text, &mut self.verdict)?;
        engine.finish(now, &mut self.text, &mut self.verdict)?;
        Ok(&self.text)
    }

    /// A `ModelInferResponse` (or, with `REQUEST_FIELDS`, a `ModelInferRequest`) with its
    /// `BYTES` tensors masked.
    fn infer_message(
        &mut self,
        msg: &[u8],
        (tensors, raws): (u32, u32),
    ) -> Result<Vec<u8>, MaskError> {
        // Which tensors are BYTES, in order: raw contents [i] belong to tensor [i].
        let mut bytes_outputs = Vec::new();
        for field in fields(msg) {
            let f = field?;
            if let Value::Len(tensor) = f.value {
                if f.number == tensors {
                    bytes_outputs.push(is_bytes_tensor(tensor)?);
                }
            }
        }
        let mut out = Vec::with_capacity(msg.len());
        // The next tensor, and the next raw contents, by position: each pairs with its tensor.
        let (mut tensor_index, mut raw_index) = (0, 0);
        for field in fields(msg) {
            let f = field?;
            let Value::Len(value) = f.value else {
                out.extend_from_slice(f.raw);
                continue;
            };
            let index = match f.number {
                n if n == tensors => &mut tensor_index,
                n if n == raws => &mut raw_index,
                _ => {
                    out.extend_from_slice(f.raw);
                    continue;
                }
            };
            let bytes = bytes_outputs.get(*index).copied().unwrap_or(false);
            *index += 1;
            if !bytes {
                out.extend_from_slice(f.raw);
                continue;
            }
            let masked = match f.number == tensors {
                true => self.output_tensor(value)?,
                false => self.raw_bytes(value)?,
            };
            put_len(&mut out, f.number, &masked);
        }
        Ok(out)
    }

    /// A tensor (`InferOutputTensor`, `InferInputTensor`) of type `BYTES`: its
    /// `contents.bytes_contents` masked.
    fn output_tensor(&mut self, tensor: &[u8]) -> Result<Vec<u8>, MaskError> {
        let mut out = Vec::with_capacity(tensor.len());
        for field in fields(tensor) {
            match field? {
                Field {
                    number: 5,
                    value: Value::Len(contents),
                    ..
                } => {
                    let mut masked = Vec::with_capacity(contents.len());
                    for f in fields(contents) {
                        match f? {
                            Field {
                                number: 8,
                                value: Value::Len(element),
                                ..
                            } => put_len(&mut masked, 8, self.mask(element)?),
                            f => masked.extend_from_slice(f.raw),
                        }
                    }
                    put_len(&mut out, 5, &masked);
                }
                f => out.extend_from_slice(f.raw),
            }
        }
        Ok(out)
    }

    /// Raw `BYTES` contents: elements of a 4-byte little-endian length and the bytes.
    fn raw_bytes(&mut self, mut raw: &[u8]) -> Result<Vec<u8>, MaskError> {
        let mut out = Vec::with_capacity(raw.len());
        while !raw.is_empty() {
            let (len, rest) = raw.split_at_checked(4).ok_or_else(malformed)?;
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let (element, rest) = rest.split_at_checked(len).ok_or_else(malformed)?;
            let masked = self.mask(element)?;
            let n = u32::try_from(masked.len()).map_err(|_| malformed())?;
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(masked);
            raw = rest;
        }
        Ok(out)
    }

    /// A `ModelStreamInferResponse`: its error message and its response masked.
    fn stream_response(&mut self, msg: &[u8]) -> Result<Vec<u8>, MaskError> {
        let mut out = Vec::with_capacity(msg.len());
        for field in fields(msg) {
            match field? {
                Field {
                    number: 1,
                    value: Value::Len(text),
                    ..
                } => put_len(&mut out, 1, self.mask(text)?),
                Field {
                    number: 2,
                    value: Value::Len(inner),
                    ..
                } => {
                    let masked = self.infer_message(inner, RESPONSE_FIELDS)?;
                    put_len(&mut out, 2, &masked);
                }
                f => out.extend_from_slice(f.raw),
            }
        }
        Ok(out)
    }

    fn messages(&mut self, out: &mut BytesMut) -> Result<(), MaskError> {
        while let Some(msg) = self.reader.next_message().map_err(framing)? {
            if msg.compressed {
                return Err(MaskError::Scan(
                    "a compressed gRPC message cannot be masked".into(),
                ));
            }
            let masked = match self.method {
                GrpcMethod::Infer => self.infer_message(&msg.data, RESPONSE_FIELDS)?,
                GrpcMethod::InferRequest => self.infer_message(&msg.data, REQUEST_FIELDS)?,
                GrpcMethod::StreamInfer => self.stream_response(&msg.data)?,
                GrpcMethod::Other => msg.data.to_vec(),
            };
            encode(false, &masked, out).map_err(framing)?;
        }
        Ok(())
    }
}

impl BodyFilter for GrpcFilter {
    fn on_chunk(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), MaskError> {
        if self.method == GrpcMethod::Other {
            out.extend_from_slice(data);
            return Ok(());
        }
        self.reader.push(Bytes::copy_from_slice(data));
        let result = self.messages(out).and_then(|()| self.account());
        if let Err(e) = &result {
            self.verdict.note_error(e);
        }
        result
    }

    fn on_end(&mut self, _out: &mut BytesMut) -> Result<(), MaskError> {
        if self.method == GrpcMethod::Other {
            return Ok(());
        }
        self.reader.finish().map_err(framing)
    }

    fn verdict(&self) -> &Verdict {
        &self.verdict
    }
}

impl Drop for GrpcFilter {
    fn drop(&mut self) {
        HELD.with(|h| h.set(h.get().saturating_sub(self.held)));
    }
}

/// The fields of a message, each `Err` if the protobuf is malformed.
fn fields(msg: &[u8]) -> impl Iterator<Item = Result<Field<'_>, MaskError>> {
    let mut rest = msg;
    std::iter::from_fn(move || next_field(&mut rest)).map(|f| f.map_err(|_| malformed()))
}

/// Whether an `InferOutputTensor` has `datatype` `BYTES`.
fn is_bytes_tensor(tensor: &[u8]) -> Result<bool, MaskError> {
    let mut bytes = false;
    for field in fields(tensor) {
        if let Field {
            number: 2,
            value: Value::Len(datatype),
            ..
        } = field?
        {
            bytes = datatype == b"BYTES";
        }
    }
    Ok(bytes)
}

fn malformed() -> MaskError {
    MaskError::Scan("malformed KServe response message".into())
}

fn framing(e: crate::grpc::frame::FrameError) -> MaskError {
    MaskError::Scan(format!("gRPC framing: {e:?}"))
}
