//! Which model a request names: the top-level `"model"` of a JSON body (streamed), the model
//! segment of a KServe or OpenAI path, or the `model_name` of a KServe v2 gRPC infer request.
//!
//! Policy allows or denies by model, so the model found here must be the model the server will
//! use. Wherever parsers could disagree on that — a key given twice, a key spelled with escapes,
//! a lone surrogate, a second JSON value after the object, a UTF-16 body that Python servers
//! would still decode — the answer is `Invalid`, never a guess. Nothing here does I/O. The JSON
//! scan takes the body a chunk at a time, keeps O(1) state besides one key (64 bytes at most)
//! or the model value (256 at most), and its verdict does not depend on where chunks are cut.

use crate::grpc::wire::{next_field, Field, Value};
use crate::policy::classes::segments;

/// Longest top-level key accumulated; longer keys cannot be `model`.
const MAX_KEY: usize = 64;
/// Longest model name accepted in a JSON body.
pub const MAX_MODEL: usize = 256;
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// Streaming finder for the top-level "model" member of a JSON object body, fed in chunks.
///
/// Only the top level is parsed: keys and the model value are decoded and checked, other
/// values are skipped (nested containers with a depth counter, strings up to their closing
/// quote). A skipped value is not validated beyond what it takes to find its end; a body that
/// is broken inside it is the server's to reject.
pub struct ModelScan {
    state: State,
    /// Decoded bytes of the top-level key or the model value being read.
    buf: Vec<u8>,
    /// The key being read outgrew [`MAX_KEY`]: it is not `model`, and `buf` stopped growing.
    overflow: bool,
    /// Escape in progress in the key or model value being read (it may span chunks).
    esc: Esc,
    model: Option<String>,
}

/// The verdict so far ([`ModelScan::feed`]) or final ([`ModelScan::finish`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// Nothing decided yet.
    NeedMore,
    /// The top-level `model`; later bytes can still turn this into `Invalid`.
    Found(String),
    /// No model: the object has no top-level `model`, or the body is not a JSON object.
    Absent,
    /// The body cannot be trusted to name one model; the reason is for logs and errors.
    Invalid(&'static str),
}

/// Where the scan is in the body. Top level only; a nested value is one `Nested` state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing read: a BOM may come.
    Start,
    /// `n` bytes of the UTF-8 BOM read.
    Bom(u8),
    /// Whitespace before the `{`.
    Lead,
    /// After `{`: a key or `}`.
    KeyOrClose,
    /// After `,`: a key.
    Key,
    /// Reading a top-level key.
    InKey,
    /// After a key: `:`. `model`: the key was `model`.
    Colon {
        model: bool,
    },
    /// After `:`: the value.
    Value {
        model: bool,
    },
    /// Reading the model's string value.
    InModel,
    /// Skipping a top-level string value.
    InString {
        escaped: bool,
    },
    /// Skipping a top-level number or literal.
    InScalar,
    /// Skipping a nested value: `depth` containers open, maybe inside a string.
    Nested {
        depth: u32,
        in_string: bool,
        escaped: bool,
    },
    /// After a top-level value: `,` or `}`.
    CommaOrClose,
    /// The object closed; only whitespace may follow.
    Closed,
    /// Not a JSON object: no model, nothing more to read.
    NotObject,
    Failed(&'static str),
}

/// Escape decoding inside a key or the model value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Esc {
    None,
    /// After `\`.
    Backslash,
    /// In `\uXXXX`: `n` digits read into `acc`; `high` is the surrogate this one must complete.
    Unicode {
        n: u8,
        acc: u32,
        high: Option<u32>,
    },
    /// A high surrogate was read: `\u` and a low surrogate must follow (`backslash`: `\` seen).
    Low {
        high: u32,
        backslash: bool,
    },
}

/// What one byte did to the string being decoded.
enum Str {
    More,
    End,
    Fail(&'static str),
}

// === impl ModelScan ===

impl ModelScan {
    pub fn new() -> Self {
        ModelScan {
            state: State::Start,
            buf: Vec::new(),
            overflow: false,
            esc: Esc::None,
            model: None,
        }
    }

    /// Feeds the next decoded body bytes. Returns Found as soon as the complete string value of a
    /// top-level "model" key has been seen (may be before the object ends). After Found, further
    /// feeding continues scanning: if a SECOND top-level "model" key appears (duplicate keys:
    /// parsers disagree which wins, a policy bypass) it returns Invalid("duplicate model").
    /// Absent when the top-level object closed without a model, or the body is not a JSON object
    /// (then Absent, not Invalid — the gateway treats it as "no model"). Invalid for broken JSON
    /// structure noticed, a non-string model value, a model longer than 256 bytes, or invalid
    /// escapes in the key/value.
    ///
    /// One exception to "not an object is Absent": a body starting with a NUL or a UTF-16/32
    /// byte-order mark is Invalid, because Python servers (`json.loads` on bytes) detect
    /// UTF-16/32 and would find a model this scan cannot see.
    pub fn feed(&mut self, chunk: &[u8]) -> Scan {
        for &b in chunk {
            if matches!(self.state, State::Failed(_) | State::NotObject) {
                break;
            }
            self.state = self.next(b);
        }
        self.verdict()
    }

    /// End of body: the final verdict (Found(model) if it was found and nothing later
    /// contradicted it). A body that ends inside the object is Invalid; an empty or
    /// whitespace-only body is Absent.
    pub fn finish(&mut self) -> Scan {
        self.state = match self.state {
            State::Start | State::Bom(_) | State::Lead => State::NotObject,
            s @ (State::Closed | State::NotObject | State::Failed(_)) => s,
            _ => State::Failed("body ends inside the JSON object"),
        };
        self.verdict()
    }

    fn verdict(&self) -> Scan {
        match (self.state, &self.model) {
            (State::Failed(why), _) => Scan::Invalid(why),
            (State::NotObject, _) => Scan::Absent,
            (_, Some(model)) => Scan::Found(model.clone()),
            (State::Closed, None) => Scan::Absent,
            _ => Scan::NeedMore,
        }
    }

    /// The state after byte `b`.
    fn next(&mut self, b: u8) -> State {
        use State::*;
        let ws = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        match self.state {
            Start if b == BOM[0] => Bom(1),
            Bom(n) => match BOM.get(usize::from(n)) {
                Some(&want) if want == b && n == 2 => Lead,
                Some(&want) if want == b => Bom(n + 1),
                _ => NotObject,
            },
            Start | Lead => match b {
                _ if ws => Lead,
                b'{' => KeyOrClose,
                0x00 | 0xFE | 0xFF => Failed("body is UTF-16 or UTF-32, not UTF-8"),
                _ => NotObject,
            },
            KeyOrClose | Key if ws => self.state,
            KeyOrClose | Key if b == b'"' => {
                self.begin_string();
                InKey
            }
            KeyOrClose if b == b'}' => Closed,
            KeyOrClose | Key => Failed("expected a string key"),
            InKey => match self.string_byte(b, false) {
                Str::More => InKey,
                Str::Fail(why) => Failed(why),
                Str::End => {
                    let model = !self.overflow && self.buf == b"model";
                    if model && self.model.is_some() {
                        Failed("duplicate model")
                    } else {
                        Colon { model }
                    }
                }
            },
            Colon { .. } if ws => self.state,
            Colon { model } if b == b':' => Value { model },
            Colon { .. } => Failed("expected ':' after a key"),
            Value { .. } if ws => self.state,
            Value { .. } if matches!(b, b'}' | b']' | b',' | b':') => Failed("expected a value"),
            Value { model: true } if b == b'"' => {
                self.begin_string();
                InModel
            }
            Value { model: true } => Failed("model is not a string"),
            Value { model: false } => match b {
                b'"' => InString { escaped: false },
                b'{' | b'[' => Nested {
                    depth: 1,
                    in_string: false,
                    escaped: false,
                },
                _ => InScalar,
            },
            InModel => match self.string_byte(b, true) {
                Str::More => InModel,
                Str::Fail(why) => Failed(why),
                Str::End => match String::from_utf8(std::mem::take(&mut self.buf)) {
                    Ok(model) => {
                        self.model = Some(model);
                        CommaOrClose
                    }
                    Err(_) => Failed("model is not UTF-8"),
                },
            },
            InString { escaped: true } => InString { escaped: false },
            InString { escaped: false } => match b {
                b'\\' => InString { escaped: true },
                b'"' => CommaOrClose,
                _ => self.state,
            },
            InScalar => match b {
                _ if ws => CommaOrClose,
                b',' => Key,
                b'}' => Closed,
                b'"' | b'{' | b'[' | b']' | b':' => Failed("malformed value"),
                _ => InScalar,
            },
            Nested {
                depth,
                in_string: true,
                escaped,
            } => Nested {
                depth,
                in_string: escaped || b != b'"',
                escaped: !escaped && b == b'\\',
            },
            Nested { depth, .. } => match b {
                b'"' => Nested {
                    depth,
                    in_string: true,
                    escaped: false,
                },
                b'{' | b'[' => match depth.checked_add(1) {
                    Some(depth) => Nested {
                        depth,
                        in_string: false,
                        escaped: false,
                    },
                    None => Failed("nesting too deep"),
                },
                b'}' | b']' if depth == 1 => CommaOrClose,
                b'}' | b']' => Nested {
                    depth: depth - 1,
                    in_string: false,
                    escaped: false,
                },
                _ => self.state,
            },
            CommaOrClose => match b {
                _ if ws => CommaOrClose,
                b',' => Key,
                b'}' => Closed,
                _ => Failed("expected ',' or '}' after a value"),
            },
            Closed if ws => Closed,
            Closed => Failed("data after the JSON object"),
            NotObject | Failed(_) => self.state,
        }
    }

    fn begin_string(&mut self) {
        self.buf.clear();
        self.overflow = false;
        self.esc = Esc::None;
    }

    /// One byte of the key (`model == false`) or the model value, after its opening quote.
    fn string_byte(&mut self, b: u8, model: bool) -> Str {
        let pushed = match self.esc {
            Esc::None => match b {
                b'"' => return Str::End,
                b'\\' => {
                    self.esc = Esc::Backslash;
                    return Str::More;
                }
                0x00..=0x1F => return Str::Fail("control character in a string"),
                _ => self.push(&[b], model),
            },
            Esc::Backslash => {
                let decoded = match b {
                    b'"' | b'\\' | b'/' => b,
                    b'b' => 0x08,
                    b'f' => 0x0C,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'u' => {
                        self.esc = Esc::Unicode {
                            n: 0,
                            acc: 0,
                            high: None,
                        };
                        return Str::More;
                    }
                    _ => return Str::Fail("invalid escape"),
                };
                self.esc = Esc::None;
                self.push(&[decoded], model)
            }
            Esc::Unicode { n, acc, high } => {
                let Some(digit) = char::from(b).to_digit(16) else {
                    return Str::Fail("invalid \\u escape");
                };
                let acc = (acc << 4) | digit;
                if n < 3 {
                    self.esc = Esc::Unicode {
                        n: n + 1,
                        acc,
                        high,
                    };
                    return Str::More;
                }
                let code = match (high, acc) {
                    (None, 0xD800..=0xDBFF) => {
                        self.esc = Esc::Low {
                            high: acc,
                            backslash: false,
                        };
                        return Str::More;
                    }
                    (Some(high), 0xDC00..=0xDFFF) => {
                        0x10000 + ((high - 0xD800) << 10) + (acc - 0xDC00)
                    }
                    (None, code) if !(0xDC00..=0xDFFF).contains(&code) => code,
                    _ => return Str::Fail("lone surrogate in \\u escape"),
                };
                self.esc = Esc::None;
                let Some(c) = char::from_u32(code) else {
                    return Str::Fail("invalid \\u escape");
                };
                self.push(c.encode_utf8(&mut [0; 4]).as_bytes(), model)
            }
            Esc::Low { high, backslash } => {
                self.esc = match (backslash, b) {
                    (false, b'\\') => Esc::Low {
                        high,
                        backslash: true,
                    },
                    (true, b'u') => Esc::Unicode {
                        n: 0,
                        acc: 0,
                        high: Some(high),
                    },
                    _ => return Str::Fail("lone surrogate in \\u escape"),
                };
                return Str::More;
            }
        };
        match pushed {
            Ok(()) => Str::More,
            Err(why) => Str::Fail(why),
        }
    }

    /// Appends decoded bytes, within the bound for a key or the model.
    fn push(&mut self, bytes: &[u8], model: bool) -> Result<(), &'static str> {
        let limit = if model { MAX_MODEL } else { MAX_KEY };
        if self.overflow {
            return Ok(());
        }
        if self.buf.len() + bytes.len() > limit {
            if model {
                return Err("model longer than 256 bytes");
            }
            self.overflow = true;
            self.buf.clear();
            return Ok(());
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }
}

impl Default for ModelScan {
    fn default() -> Self {
        ModelScan::new()
    }
}

/// The verdict for a body prefix in one call: `ModelScan::new()` then `feed(buf)`
/// (`NeedMore` if the prefix does not decide it).
pub fn model_from_json_prefix(buf: &[u8]) -> Scan {
    ModelScan::new().feed(buf)
}

/// Model named in a KServe v2 / Triton path: /v2/models/{name}[/versions/{v}]/... (percent-decoded;
/// None if absent/invalid UTF-8).
///
/// Also, folded in here: `/v2/repository/models/{name}/load|unload`; OpenAI `/v1/models/{id}`
/// (retrieve, delete), where the id is the rest of the path since ids may contain `/`
/// (`meta-llama/Llama-3-8B`); and KServe v1 `/v1/models/{name}:predict|:explain`, whose verb is
/// cut off. Triton's `/v2/models/stats` names no model. Paths that [`classify`] would not match
/// (`..`, `//`, an encoded `/`) give `None`.
///
/// [`classify`]: crate::policy::classes::classify
pub fn model_from_path(path: &str) -> Option<String> {
    // Most paths cannot name a model; only a path with escapes needs decoding to tell.
    if !path.contains('%') && !path.starts_with("/v2/") && !path.starts_with("/v1/models/") {
        return None;
    }
    let segs = segments(path)?;
    let segs: Vec<&str> = segs.iter().map(|s| s.as_ref()).collect();
    match segs.as_slice() {
        ["v2", "models", "stats"] => None,
        ["v2", "models", name, ..] | ["v2", "repository", "models", name, ..] => {
            Some((*name).to_owned())
        }
        ["v1", "models", name] => {
            let name = name
                .strip_suffix(":predict")
                .or_else(|| name.strip_suffix(":explain"))
                .unwrap_or(name);
            (!name.is_empty()).then(|| name.to_owned())
        }
        ["v1", "models", id @ ..] if !id.is_empty() => Some(id.join("/")),
        _ => None,
    }
}

/// What the start of a gRPC request body says about its first message's model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcPrefix {
    /// The first `model_name` field of the first message. A later field 1 in the same message
    /// would win at the server: the request stage's model guard sees the whole message and
    /// stops it before its last byte is forwarded if the final name differs.
    Named(String),
    /// The first message names no model: complete without one, compressed, or malformed.
    Unknown,
    /// More bytes are needed.
    NeedMore,
    /// Not gRPC framing (a flag byte other than 0 or 1).
    Invalid,
}

/// Reads the model from the front of a gRPC request body without needing the whole first
/// message: `model_name` is field 1 and serialisers write fields in order, so it is normally in
/// the first bytes even when the message carries megabytes of tensors.
pub fn model_from_grpc_prefix(buf: &[u8]) -> GrpcPrefix {
    let Some((&flag, rest)) = buf.split_first() else {
        return GrpcPrefix::NeedMore;
    };
    let Some(len) = rest.get(..4) else {
        return GrpcPrefix::NeedMore;
    };
    match flag {
        0 => {}
        1 => return GrpcPrefix::Unknown,
        _ => return GrpcPrefix::Invalid,
    }
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let body = &rest[4..];
    if body.len() >= len {
        return match model_from_grpc_infer(&body[..len]) {
            Some(name) => GrpcPrefix::Named(name),
            None => GrpcPrefix::Unknown,
        };
    }
    // Incomplete: walk the whole fields there are; a field cut off by the end of what arrived
    // just means more is needed.
    let mut rest = body;
    while let Some(field) = next_field(&mut rest) {
        match field {
            Ok(Field {
                number: 1,
                value: Value::Len(value),
                ..
            }) => {
                return match std::str::from_utf8(value) {
                    Ok(name) => GrpcPrefix::Named(name.to_owned()),
                    Err(_) => GrpcPrefix::Unknown,
                }
            }
            Ok(_) => {}
            Err(_) => return GrpcPrefix::NeedMore,
        }
    }
    GrpcPrefix::NeedMore
}

/// The model_name (field 1, string) of a KServe v2 gRPC `ModelInferRequest` protobuf message
/// (the message bytes after the 5-byte gRPC prefix). A pure wire-format walk: every field is
/// skipped by its wire type (varint, i64, len, i32); groups (3, 4) and the undefined wire types
/// 6 and 7 are malformed for this message, as are a truncated field and a field number of 0.
///
/// A repeated field 1 is legal protobuf and the LAST one wins (a singular field is overwritten
/// by each occurrence), which is what the server's parser will use; so it is what is returned.
/// The server's proto3 parser rejects a `string` that is not UTF-8, so any field-1 occurrence
/// that is not UTF-8 makes the whole message `None`. A field 1 of another wire type is an
/// unknown field to the server and is skipped here too. `Some("")` is an explicit empty name.
pub fn model_from_grpc_infer(msg: &[u8]) -> Option<String> {
    let mut rest = msg;
    let mut name = None;
    while let Some(field) = next_field(&mut rest) {
        if let Field {
            number: 1,
            value: Value::Len(value),
            ..
        } = field.ok()?
        {
            name = Some(std::str::from_utf8(value).ok()?);
        }
    }
    name.map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grpc_model_is_read_from_the_front_of_a_large_first_message() {
        let mut msg = vec![0x0a, 4];
        msg.extend_from_slice(b"echo");
        msg.extend_from_slice(&[0x3a, 0x80, 0x80, 0x04]); // field 7, 65536 bytes of tensor
        msg.extend(std::iter::repeat_n(0u8, 65536));
        let mut body = vec![0];
        body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        body.extend_from_slice(&msg);
        // A few bytes in, the model is known; before that, more is needed.
        assert_eq!(model_from_grpc_prefix(&body[..8]), GrpcPrefix::NeedMore);
        assert_eq!(
            model_from_grpc_prefix(&body[..11]),
            GrpcPrefix::Named("echo".into())
        );
        assert_eq!(
            model_from_grpc_prefix(&body[..20]),
            GrpcPrefix::Named("echo".into())
        );
        // Whole message: the server's rule (last field 1 wins) decides.
        let mut twice = msg.clone();
        twice.extend_from_slice(&[0x0a, 6]);
        twice.extend_from_slice(b"secret");
        let mut whole = vec![0];
        whole.extend_from_slice(&(twice.len() as u32).to_be_bytes());
        whole.extend_from_slice(&twice);
        assert_eq!(
            model_from_grpc_prefix(&whole),
            GrpcPrefix::Named("secret".into())
        );
        // Compressed, bad flag, no name.
        let mut compressed = body.clone();
        compressed[0] = 1;
        assert_eq!(model_from_grpc_prefix(&compressed), GrpcPrefix::Unknown);
        compressed[0] = 2;
        assert_eq!(model_from_grpc_prefix(&compressed), GrpcPrefix::Invalid);
        assert_eq!(
            model_from_grpc_prefix(&[0, 0, 0, 0, 0]),
            GrpcPrefix::Unknown
        );
    }

    fn whole(body: &[u8]) -> Scan {
        let mut scan = ModelScan::new();
        scan.feed(body);
        scan.finish()
    }

    fn found(model: &str) -> Scan {
        Scan::Found(model.to_owned())
    }

    #[test]
    fn the_top_level_model_is_found_with_escapes_decoded() {
        let cases: &[(&[u8], Scan)] = &[
            (br#"{"model":"llama"}"#, found("llama")),
            (br#" {"stream":true,"model" : "m1" , "n":2}"#, found("m1")),
            (br#"{"mod\u0065l":"x"}"#, found("x")),
            (br#"{"\u006d\u006f\u0064\u0065\u006c":"x"}"#, found("x")),
            (
                br#"{"model":"a\"b\\c\/\u00e9\n"}"#,
                found("a\"b\\c/\u{e9}\n"),
            ),
            (br#"{"model":"\ud83d\ude00"}"#, found("\u{1F600}")),
            ("{\"model\":\"caf\u{e9}\"}".as_bytes(), found("caf\u{e9}")),
            (b"\xEF\xBB\xBF \r\n\t{\"model\":\"x\"}\n", found("x")),
            (br#"{"model":""}"#, found("")),
        ];
        for (body, want) in cases {
            assert_eq!(&whole(body), want, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn models_inside_nested_values_are_not_the_model() {
        let cases: &[(&[u8], Scan)] = &[
            (
                br#"{"a":{"model":"x"},"b":["model",{"model":"y"}]}"#,
                Scan::Absent,
            ),
            (
                br#"{"messages":[{"content":"\"model\":\"x\"}"}]}"#,
                Scan::Absent,
            ),
            (
                br#"{"a":"}\"{[","b":{"c":"\\\"}]"},"model":"m"}"#,
                found("m"),
            ),
            (br#"{"a":[[[{"b":[]}]]],"model":"m","c":{}}"#, found("m")),
            (br#"{"prompt":"model","x":"model"}"#, Scan::Absent),
            (
                br#"{"a":1,"b":-2.5e3,"c":true,"d":null,"model":"m"}"#,
                found("m"),
            ),
            (br#"{}"#, Scan::Absent),
            (br#"{ }"#, Scan::Absent),
        ];
        for (body, want) in cases {
            assert_eq!(&whole(body), want, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn bodies_that_are_not_objects_have_no_model() {
        for body in [
            &b""[..],
            b"   ",
            br#"[{"model":"x"}]"#,
            br#""model""#,
            b"model=x",
            b"\xEF\xBB",
            b"\xEF\xBBx{\"model\":\"x\"}",
        ] {
            assert_eq!(
                whole(body),
                Scan::Absent,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn ambiguous_or_broken_bodies_are_invalid() {
        let long_key = format!(r#"{{"{}":1,"model":"m"}}"#, "k".repeat(100));
        let at_limit = format!(r#"{{"model":"{}"}}"#, "m".repeat(MAX_MODEL));
        let too_long = format!(r#"{{"model":"{}"}}"#, "m".repeat(MAX_MODEL + 1));
        let too_long_escaped = format!(r#"{{"model":"{}"}}"#, r"\u00e9".repeat(129));
        assert_eq!(whole(long_key.as_bytes()), found("m"));
        assert_eq!(whole(at_limit.as_bytes()), found(&"m".repeat(MAX_MODEL)));
        let cases: &[(&[u8], &str)] = &[
            (br#"{"model":"a","model":"b"}"#, "duplicate model"),
            (
                br#"{"model":"a","x":{},"mod\u0065l":"a"}"#,
                "duplicate model",
            ),
            (br#"{"model":1}"#, "model is not a string"),
            (br#"{"model":null}"#, "model is not a string"),
            (br#"{"model":{"name":"x"}}"#, "model is not a string"),
            (br#"{"model":["x"]}"#, "model is not a string"),
            (too_long.as_bytes(), "model longer than 256 bytes"),
            (too_long_escaped.as_bytes(), "model longer than 256 bytes"),
            (br#"{"model":"\ude00"}"#, "lone surrogate in \\u escape"),
            (br#"{"model":"\ud83d"}"#, "lone surrogate in \\u escape"),
            (br#"{"model":"\ud83dx"}"#, "lone surrogate in \\u escape"),
            (br#"{"model":"\ud83d\n"}"#, "lone surrogate in \\u escape"),
            (
                br#"{"model":"\ud83d\u0041"}"#,
                "lone surrogate in \\u escape",
            ),
            (br#"{"mod\ud800el":"x"}"#, "lone surrogate in \\u escape"),
            (br#"{"model":"\x"}"#, "invalid escape"),
            (br#"{"mo\qdel":"x"}"#, "invalid escape"),
            (br#"{"model":"\u00zz"}"#, "invalid \\u escape"),
            (b"{\"model\":\"a\x01\"}", "control character in a string"),
            (b"{\"mo\ndel\":\"a\"}", "control character in a string"),
            (b"{\"model\":\"\xff\"}", "model is not UTF-8"),
            (
                br#"{"model":"x"} {"model":"y"}"#,
                "data after the JSON object",
            ),
            (br#"{"model":"x"}x"#, "data after the JSON object"),
            (br#"{"model" "x"}"#, "expected ':' after a key"),
            (br#"{model:"x"}"#, "expected a string key"),
            (br#"{"a":1,}"#, "expected a string key"),
            (br#"{,}"#, "expected a string key"),
            (br#"{"a":}"#, "expected a value"),
            (br#"{"a":1 "b":2}"#, "expected ',' or '}' after a value"),
            (br#"{"a":"x""b":2}"#, "expected ',' or '}' after a value"),
            (br#"{"a":tru"e"}"#, "malformed value"),
            (br#"{"model":"x""#, "body ends inside the JSON object"),
            (br#"{"model":"x"#, "body ends inside the JSON object"),
            (br#"{"a":[1,2"#, "body ends inside the JSON object"),
            (b"\x00{\x00\"\x00m", "body is UTF-16 or UTF-32, not UTF-8"),
            (b"\xff\xfe{\x00", "body is UTF-16 or UTF-32, not UTF-8"),
            (b" \x00{\x00", "body is UTF-16 or UTF-32, not UTF-8"),
            (b"{\x00\"\x00", "expected a string key"),
        ];
        for (body, why) in cases {
            assert_eq!(
                whole(body),
                Scan::Invalid(why),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn found_is_reported_before_the_object_ends_and_kept_until_contradicted() {
        let mut scan = ModelScan::new();
        assert_eq!(scan.feed(br#"{"model":"a"#), Scan::NeedMore);
        assert_eq!(scan.feed(br#"","messages":[{"role":"#), found("a"));
        assert_eq!(scan.feed(br#""user"}],"#), found("a"));
        assert_eq!(
            scan.feed(br#""model":"b"}"#),
            Scan::Invalid("duplicate model")
        );
        assert_eq!(scan.feed(b"}"), Scan::Invalid("duplicate model"));
        assert_eq!(scan.finish(), Scan::Invalid("duplicate model"));

        assert_eq!(model_from_json_prefix(br#"{"model":"m","#), found("m"));
        assert_eq!(model_from_json_prefix(br#"{"x":"#), Scan::NeedMore);
        assert_eq!(model_from_json_prefix(b"[1,"), Scan::Absent);
    }

    #[test]
    fn the_verdict_does_not_depend_on_where_the_body_is_cut() {
        let long = format!(
            r#"{{"{}":1,"model":"{}"}}"#,
            "k".repeat(70),
            "m".repeat(300)
        );
        let bodies: Vec<&[u8]> = vec![
            br#"{"model":"llama"}"#,
            br#"{"mod\u0065l":"\ud83d\ude00 caf\u00e9","x":[{"model":"n"}]}"#,
            br#"{"a":"}\"{[","b":{"c":"\\\"}]"},"model":"m","d":-1.5}"#,
            br#"{"model":"a","x":{},"mod\u0065l":"a"}"#,
            br#"{"model":"\ud83d\u0041"}"#,
            br#"{"model":"x"} {"model":"y"}"#,
            br#"{"model":"x""#,
            b"\xEF\xBB\xBF  {\"model\":\"x\"}  ",
            b"\xEF\xBBx",
            b"\x00{\x00\"",
            br#"[{"model":"x"}]"#,
            br#"{"a":tru"e","model":"m"}"#,
            long.as_bytes(),
        ];
        for body in bodies {
            let mut all = ModelScan::new();
            let fed = all.feed(body);
            let end = all.finish();
            for cut in 0..=body.len() {
                let (a, b) = body.split_at(cut);
                let mut scan = ModelScan::new();
                scan.feed(a);
                assert_eq!(
                    scan.feed(b),
                    fed,
                    "cut at {cut}: {}",
                    String::from_utf8_lossy(body)
                );
                assert_eq!(scan.finish(), end, "cut at {cut}");
            }
            let mut scan = ModelScan::new();
            let mut last = scan.feed(b"");
            for byte in body.chunks(1) {
                last = scan.feed(byte);
            }
            assert_eq!(last, fed, "bytewise: {}", String::from_utf8_lossy(body));
            assert_eq!(scan.finish(), end, "bytewise");
        }
    }

    #[test]
    fn paths_name_their_model() {
        let cases: &[(&str, Option<&str>)] = &[
            ("/v2/models/resnet/infer", Some("resnet")),
            ("/v2/models/resnet/versions/3/infer", Some("resnet")),
            ("/v2/models/my%20model/ready", Some("my model")),
            ("/v2/models/resnet", Some("resnet")),
            ("/v2/models/resnet/", Some("resnet")),
            ("/v2/repository/models/resnet/load", Some("resnet")),
            ("/v1/models/gpt-4o", Some("gpt-4o")),
            (
                "/v1/models/meta-llama/Llama-3-8B",
                Some("meta-llama/Llama-3-8B"),
            ),
            ("/v1/models/llama3:8b", Some("llama3:8b")),
            ("/v1/models/sklearn:predict", Some("sklearn")),
            ("/v1/models/sklearn:explain", Some("sklearn")),
            ("/v2/models/stats", None),
            ("/v2/models", None),
            ("/v1/models", None),
            ("/v1/models/:predict", None),
            ("/v1/chat/completions", None),
            ("/v2/models/a/../repository/index", None),
            ("/v2/models//infer", None),
            ("/v2/models/a%2Fb/infer", None),
            ("/v2/models/%ff/infer", None),
            ("/v2/models/%zz/infer", None),
            ("v2/models/x/infer", None),
            // Escapes cannot hide a model path from the fast path for paths without one.
            ("/%762/models/resnet/infer", Some("resnet")),
            ("/v1/%6dodels/gpt-4o", Some("gpt-4o")),
            ("/v2/models/resnet/infer?x=1", Some("resnet")),
            ("/1k", None),
        ];
        for &(path, want) in cases {
            assert_eq!(model_from_path(path).as_deref(), want, "{path}");
        }
    }

    /// A protobuf field: `(field, wire type, payload already encoded for that wire type)`.
    fn field(num: u64, wire: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = encode_varint(num << 3 | wire);
        if wire == 2 {
            out.extend(encode_varint(payload.len() as u64));
        }
        out.extend_from_slice(payload);
        out
    }

    fn encode_varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
        out
    }

    #[test]
    fn the_grpc_model_name_is_the_last_field_one() {
        let simple = field(1, 2, b"resnet");
        assert_eq!(model_from_grpc_infer(&simple).as_deref(), Some("resnet"));

        let mut mixed = field(3, 2, b"req-1");
        mixed.extend(field(9, 0, &encode_varint(300)));
        mixed.extend(field(10, 1, &[0; 8]));
        mixed.extend(field(11, 5, &[0; 4]));
        mixed.extend(field(1, 0, &encode_varint(7)));
        mixed.extend(field(1, 2, b"llm"));
        mixed.extend(field(5, 2, &field(1, 2, b"nested-input-name")));
        mixed.extend(field(2, 2, b"1"));
        assert_eq!(model_from_grpc_infer(&mixed).as_deref(), Some("llm"));

        let mut twice = field(1, 2, b"allowed");
        twice.extend(field(1, 2, b"secret"));
        assert_eq!(model_from_grpc_infer(&twice).as_deref(), Some("secret"));

        assert_eq!(
            model_from_grpc_infer(&field(1, 2, b"")).as_deref(),
            Some("")
        );
        assert_eq!(model_from_grpc_infer(&field(2, 2, b"1")), None);
        assert_eq!(model_from_grpc_infer(&field(1, 0, &[5])), None);
        assert_eq!(model_from_grpc_infer(&[]), None);

        // The longest varint: ten bytes, the last carrying the 64th bit.
        let mut max = field(1, 2, b"m");
        max.extend(field(9, 0, &encode_varint(u64::MAX)));
        assert_eq!(encode_varint(u64::MAX).len(), 10);
        assert_eq!(model_from_grpc_infer(&max).as_deref(), Some("m"));
    }

    #[test]
    fn malformed_grpc_messages_name_no_model() {
        let name = field(1, 2, b"m");
        let with = |tail: &[u8]| [&name[..], tail].concat();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated varint value", with(&[0x48, 0x80])),
            ("truncated key", vec![0x80]),
            (
                "eleven-byte varint",
                with(&[
                    0x48, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01,
                ]),
            ),
            (
                "tenth varint byte overflows",
                with(&[
                    0x48, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02,
                ]),
            ),
            ("length past end", vec![0x0A, 0x05, b'a', b'b']),
            (
                "huge length",
                [&[0x0A][..], &encode_varint(u64::MAX)].concat(),
            ),
            ("truncated i64", with(&[0x49, 0, 0, 0])),
            ("truncated i32", with(&[0x4D, 0])),
            ("wire type 3", with(&[0x4B])),
            ("wire type 4", with(&[0x4C])),
            ("wire type 6", with(&[0x4E])),
            ("wire type 7", with(&[0x4F])),
            ("field 0", with(&[0x02, 0x00])),
            ("field number past 2^29", with(&encode_varint(1 << 32 | 2))),
            ("model not UTF-8", field(1, 2, b"\xff")),
            (
                "an earlier model not UTF-8",
                [field(1, 2, b"\xff"), field(1, 2, b"ok")].concat(),
            ),
        ];
        for (what, msg) in cases {
            assert_eq!(model_from_grpc_infer(&msg), None, "{what}");
        }
    }
}
