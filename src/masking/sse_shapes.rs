//! Which JSON fields of an SSE event carry text, and which events end a text.
//!
//! | server / endpoint            | text field (one stream per key)                 | ends at                 |
//! |------------------------------|-------------------------------------------------|-------------------------|
//! | `/v1/chat/completions`       | `choices[i].delta.content`, `.reasoning_content`, `.reasoning`, `.refusal`, `.tool_calls[k].function.arguments` | `finish_reason` set |
//! | `/v1/completions`            | `choices[i].text`                               | `finish_reason` set     |
//! | `/v1/responses`              | `delta` of `*.delta` events, per item + part    | the matching `*.done`   |
//! | TGI                          | `token.text`                                    | `generated_text`/`details` set |
//! | llama.cpp                    | `content`                                       | `stop: true`            |
//!
//! Every stream key has its own [`Engine`], so text is scanned across events per choice. Text
//! still held when a stream ends goes into the ending event if that event carries text for the
//! stream, otherwise into a synthesized event placed just before it (built from the last event
//! that carried the stream's text; for `/v1/responses` it repeats that event's
//! `sequence_number`). Any other JSON event has each string value masked on its own (the
//! `*.done` events' full texts, `response.completed`, TGI's `generated_text`): identical bytes
//! when nothing matches.
//!
//! Events are read twice over: a token's event by [`raw`] from its bytes, its masked text
//! spliced back in (the hot path, one event per token); anything `raw` declines by [`fields`]
//! from a parsed tree that is serialised again. `readers_agree` pins the two to each other.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::{Engine, MaskError, Masker, Mode, Verdict};

mod fields;
mod raw;

use fields::{extract, set_text, End};

/// The streams of one SSE response.
pub(crate) struct Shapes {
    masker: Arc<Masker>,
    mode: Mode,
    streams: Vec<TextStream>,
    /// For strings masked on their own.
    single: Option<Engine>,
    out: Vec<u8>,
}

struct TextStream {
    key: Key,
    engine: Engine,
    /// The `data` of the last event that carried this stream's text (parsed again only if
    /// an event has to be synthesized from it, which is rare).
    /// Its buffer is reused: one copy per event, no allocation.
    template: String,
    event_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Choice {
        index: u64,
        field: Field,
    },
    Responses {
        kind: String,
        item: String,
        part: u64,
    },
    Tgi,
    Llama,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// A text of the choice's `delta`, by key (one of [`DELTA_TEXTS`]).
    Delta(&'static str),
    Tool(u64),
    Text,
}

/// The `delta` keys that carry text: the answer, reasoning (vLLM's older and newer key, also
/// OpenRouter's and Ollama's), and a refusal. Every one is its own stream.
const DELTA_TEXTS: [&str; 4] = ["content", "reasoning_content", "reasoning", "refusal"];

/// Where a text field sits in the event, to write the masked text back.
#[derive(Debug, Clone, Copy)]
enum Loc {
    Choice {
        pos: usize,
        field: Field,
        call: usize,
    },
    Delta,
    TgiToken,
    Content,
}

/// An event to insert before the current one.
pub(crate) struct Synth {
    pub event: Option<String>,
    pub data: String,
}

/// What to do with one event.
pub(crate) enum Outcome {
    Pass,
    Rewrite {
        before: Vec<Synth>,
        data: Option<String>,
    },
}

// === impl Shapes ===

impl Shapes {
    pub(crate) fn new(masker: &Arc<Masker>, mode: Mode) -> Shapes {
        Shapes {
            masker: Arc::clone(masker),
            mode,
            streams: Vec::new(),
            single: None,
            out: Vec::new(),
        }
    }

    /// Handles one event's `data` (and `event:` name).
    pub(crate) fn event(
        &mut self,
        name: Option<&str>,
        data: &str,
        now: Instant,
        verdict: &mut Verdict,
    ) -> Result<Outcome, MaskError> {
        match raw::extract(data) {
            Some((items, ends)) if !(items.is_empty() && ends.is_empty()) => {
                self.spliced(name, data, items, &ends, now, verdict)
            }
            _ => self.parsed(name, data, now, verdict),
        }
    }

    /// The common case, a token's event: masked texts spliced into the event's own bytes.
    fn spliced(
        &mut self,
        name: Option<&str>,
        data: &str,
        items: Vec<raw::Item<'_>>,
        ends: &[End],
        now: Instant,
        verdict: &mut Verdict,
    ) -> Result<Outcome, MaskError> {
        let texts = items.iter().map(|i| (&i.key, &*i.text));
        let (masked, before) = self.streams_step(name, data, texts, ends, now, verdict)?;
        // Fields are listed in the table's order, not the event's (a server may put `text`
        // before `delta`): splice in byte order. Spans never overlap.
        let mut changed: Vec<_> = items
            .iter()
            .zip(masked)
            .filter(|(item, masked)| *masked != item.text)
            .map(|(item, masked)| (item.span.clone(), masked))
            .collect();
        changed.sort_unstable_by_key(|(span, _)| span.start);
        let data = (!changed.is_empty()).then(|| {
            let mut out = String::with_capacity(data.len() + 64);
            let mut copied = 0;
            for (span, masked) in changed {
                out.push_str(&data[copied..span.start]);
                out.push_str(&serde_json::to_string(&masked).unwrap_or_default());
                copied = span.end;
            }
            out.push_str(&data[copied..]);
            out
        });
        Ok(match (before.is_empty(), data) {
            (true, None) => Outcome::Pass,
            (_, data) => Outcome::Rewrite { before, data },
        })
    }

    /// Any other event: parsed into a tree, masked, serialised again.
    fn parsed(
        &mut self,
        name: Option<&str>,
        data: &str,
        now: Instant,
        verdict: &mut Verdict,
    ) -> Result<Outcome, MaskError> {
        let Ok(mut event) = serde_json::from_str::<Value>(data) else {
            // Not JSON: mask the data as one text of its own.
            let masked = self.mask_single(data, now, verdict)?;
            return Ok(if masked == data {
                Outcome::Pass
            } else {
                Outcome::Rewrite {
                    before: Vec::new(),
                    data: Some(masked),
                }
            });
        };
        let (items, ends) = extract(&event);
        if items.is_empty() && ends.is_empty() {
            let changed = self.mask_all_strings(&mut event, now, verdict)?;
            return Ok(if changed {
                Outcome::Rewrite {
                    before: Vec::new(),
                    data: Some(event.to_string()),
                }
            } else {
                Outcome::Pass
            });
        }
        let texts = items.iter().map(|(key, _, text)| (key, text.as_str()));
        let (masked, before) = self.streams_step(name, data, texts, &ends, now, verdict)?;
        for ((_, loc, _), text) in items.into_iter().zip(masked) {
            set_text(&mut event, loc, text);
        }
        if ends.iter().any(|e| matches!(e, End::Tgi)) {
            // TGI's last event repeats the whole text.
            if let Some(Value::String(full)) = event.get_mut("generated_text") {
                *full = self.mask_single(full, now, verdict)?;
            }
        }
        if ends.iter().any(|e| matches!(e, End::Responses(..))) {
            // `*.done` carries the full text again: masked on its own, same result.
            self.mask_all_strings(&mut event, now, verdict)?;
        }
        Ok(Outcome::Rewrite {
            before,
            data: Some(event.to_string()),
        })
    }

    /// Feeds each text to its stream's engine, then ends the streams `ends` names. Returns the
    /// masked output for each text (an ending stream's held tail appended to its text in this
    /// event) and the events to insert before this one for tails with no text to ride on.
    fn streams_step<'k>(
        &mut self,
        name: Option<&str>,
        data: &str,
        texts: impl Iterator<Item = (&'k Key, &'k str)>,
        ends: &[End],
        now: Instant,
        verdict: &mut Verdict,
    ) -> Result<(Vec<String>, Vec<Synth>), MaskError> {
        let mut masked: Vec<(&Key, String)> = Vec::new();
        for (key, text) in texts {
            let i = self.stream(key)?;
            let stream = &mut self.streams[i];
            self.out.clear();
            stream
                .engine
                .feed(text.as_bytes(), now, &mut self.out, verdict)?;
            stream.template.clear();
            stream.template.push_str(data);
            stream.event_name = name.map(str::to_string);
            masked.push((key, String::from_utf8_lossy(&self.out).into_owned()));
        }
        let mut before = Vec::new();
        let mut i = 0;
        while i < self.streams.len() {
            if !ends.iter().any(|end| end.ends(&self.streams[i].key)) {
                i += 1;
                continue;
            }
            let mut stream = self.streams.remove(i);
            let tail = flush(&mut stream, now, verdict, &mut self.out)?;
            if tail.is_empty() {
                continue;
            }
            // The last text of the stream in this event: the tail follows it.
            match masked.iter_mut().rfind(|(key, _)| **key == stream.key) {
                Some((_, text)) => text.push_str(&tail),
                None => before.extend(synthesize(&stream, &tail)),
            }
        }
        Ok((masked.into_iter().map(|(_, text)| text).collect(), before))
    }

    /// Ends every open stream (`[DONE]` or end of body); returns the events carrying what was held.
    pub(crate) fn finish_all(
        &mut self,
        now: Instant,
        verdict: &mut Verdict,
    ) -> Result<Vec<Synth>, MaskError> {
        let mut synths = Vec::new();
        for mut stream in std::mem::take(&mut self.streams) {
            let tail = flush(&mut stream, now, verdict, &mut self.out)?;
            if !tail.is_empty() {
                synths.extend(synthesize(&stream, &tail));
            }
        }
        Ok(synths)
    }

    fn stream(&mut self, key: &Key) -> Result<usize, MaskError> {
        if let Some(i) = self.streams.iter().position(|s| s.key == *key) {
            return Ok(i);
        }
        let engine = self.masker.engine(self.mode)?;
        self.streams.push(TextStream {
            key: key.clone(),
            engine,
            template: String::new(),
            event_name: None,
        });
        Ok(self.streams.len() - 1)
    }

    fn mask_single(
        &mut self,
        text: &str,
        now: Instant,
        verdict: &mut Verdict,
    ) -> Result<String, MaskError> {
        let engine = match self.single.take() {
            Some(engine) => engine,
            None => self.masker.engine(self.mode)?,
        };
        let engine = self.single.insert(engine);
        self.out.clear();
        engine.feed(text.as_bytes(), now, &mut self.out, verdict)?;
        engine.finish(now, &mut self.out, verdict)?;
        Ok(String::from_utf8_lossy(&self.out).into_owned())
    }

    /// Masks every string value (not keys) on its own; true if any changed.
    fn mask_all_strings(
        &mut self,
        value: &mut Value,
        now: Instant,
        verdict: &mut Verdict,
    ) -> Result<bool, MaskError> {
        match value {
            Value::String(s) => {
                let masked = self.mask_single(s, now, verdict)?;
                let changed = masked != *s;
                *s = masked;
                Ok(changed)
            }
            Value::Array(items) => items.iter_mut().try_fold(false, |acc, v| {
                Ok(self.mask_all_strings(v, now, verdict)? | acc)
            }),
            Value::Object(map) => map.values_mut().try_fold(false, |acc, v| {
                Ok(self.mask_all_strings(v, now, verdict)? | acc)
            }),
            _ => Ok(false),
        }
    }
}

/// Both readers of an event agree wherever both answer: same texts, same streams, same ends,
/// and each span holds a JSON string that decodes to its text. Fuzzed
/// (`fuzz/fuzz_targets/sse_fields.rs`) and tested below.
pub(crate) fn readers_agree(data: &str) -> Result<(), String> {
    let Some((items, ends)) = raw::extract(data) else {
        return Ok(());
    };
    let Ok(event) = serde_json::from_str::<Value>(data) else {
        // Out-of-range numbers or lone surrogates where no text is (see `raw`).
        return Ok(());
    };
    let (parsed, parsed_ends) = extract(&event);
    let raw: Vec<(&Key, &str)> = items.iter().map(|i| (&i.key, &*i.text)).collect();
    let tree: Vec<(&Key, &str)> = parsed.iter().map(|(k, _, t)| (k, t.as_str())).collect();
    if raw != tree || ends != parsed_ends {
        return Err(format!(
            "raw {raw:?} {ends:?} vs parsed {tree:?} {parsed_ends:?}"
        ));
    }
    for item in &items {
        let decoded: String = serde_json::from_str(&data[item.span.clone()])
            .map_err(|e| format!("span {:?} is no JSON string ({e})", item.span))?;
        if decoded != item.text {
            return Err(format!("span {:?} decodes to {decoded:?}", item.span));
        }
    }
    Ok(())
}

fn flush(
    stream: &mut TextStream,
    now: Instant,
    verdict: &mut Verdict,
    out: &mut Vec<u8>,
) -> Result<String, MaskError> {
    out.clear();
    stream.engine.finish(now, out, verdict)?;
    Ok(String::from_utf8_lossy(out).into_owned())
}

/// An event carrying `text` for `stream`, shaped like the last event that carried its text.
fn synthesize(stream: &TextStream, text: &str) -> Option<Synth> {
    // A template the parsed path refuses (the byte reader took it, see `raw`) still gets its
    // held text out, in an event of the stream's canonical shape.
    let mut event: Value = serde_json::from_str(&stream.template)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    match stream.key {
        Key::Choice { index, field } => {
            let choice = match field {
                Field::Delta(name) => {
                    let delta = Map::from_iter([(name.to_string(), Value::from(text))]);
                    json!({"index": index, "delta": delta, "finish_reason": null})
                }
                Field::Tool(k) => {
                    json!({"index": index, "delta": {"tool_calls": [{"index": k, "function": {"arguments": text}}]}, "finish_reason": null})
                }
                Field::Text => {
                    json!({"index": index, "text": text, "logprobs": null, "finish_reason": null})
                }
            };
            let obj: &mut Map<String, Value> = event.as_object_mut()?;
            obj.insert("choices".into(), Value::Array(vec![choice]));
            obj.remove("usage");
        }
        Key::Responses { .. } => event["delta"] = Value::String(text.to_string()),
        Key::Tgi => {
            event["token"]["text"] = Value::String(text.to_string());
            event["generated_text"] = Value::Null;
            event["details"] = Value::Null;
        }
        Key::Llama => {
            event["content"] = Value::String(text.to_string());
            event["stop"] = Value::Bool(false);
        }
    }
    Some(Synth {
        event: stream.event_name.clone(),
        data: event.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape in the table, and the edges where the two readers could part ways.
    const EVENTS: &[&str] = &[
        r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":1,"delta":{"content":"jane.doe@","reasoning_content":"hm"},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{"refusal":"no","reasoning":"think","content":null}}]}"#,
        r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"total_tokens":3}}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":2,"function":{"name":"f","arguments":"{\"a\":"}},{"function":{"arguments":"x"}},7,{"function":null}]}}]}"#,
        r#"{"choices":[{"index":"3","delta":null,"text":"x"},{"index":1.0,"text":"y","finish_reason":"length"},5]}"#,
        r#"{"choices":[{"text":"a\u00e9\"\\\n","logprobs":null,"finish_reason":null}]}"#,
        r#"{"choices":{"not":"an array"},"type":"response.output_text.delta","item_id":"msg_1","content_index":0,"delta":"x"}"#,
        r#"{"type":"response.output_text.delta","output_index":1,"delta":"y","sequence_number":4}"#,
        r#"{"type":7,"token":{"id":1,"text":" tok","special":false},"generated_text":null,"details":null}"#,
        r#"{"token":null}"#,
        r#"{"content":"llama","stop":false,"id_slot":0}"#,
        r#"{"content":null,"stop":true}"#,
        r#"{"content":5}"#,
        r#"{"choices":[{"delta":{"content":"a"},"delta":{"content":"b"}}]}"#,
        r#"{"choices":[{"delta":{"content":"\ud800"}}]}"#,
        r#"  {"choices":[{"delta":{"content":"spaced"}}]}  "#,
        r#"{"cho\u0069ces":[{"delta":{"content":"escaped key"}}]}"#,
        r#"[1,2]"#,
        r#""just a string""#,
    ];

    #[test]
    fn the_raw_reader_agrees_with_the_parsed_one() {
        for data in EVENTS {
            readers_agree(data).unwrap_or_else(|e| panic!("{data}: {e}"));
        }
    }

    #[test]
    fn common_events_take_the_raw_reader() {
        for data in &EVENTS[..12] {
            assert!(raw::extract(data).is_some(), "{data}");
        }
    }
}
