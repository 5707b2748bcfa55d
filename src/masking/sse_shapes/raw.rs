//! The same table as [`super::fields`], read from the event's bytes instead of a parsed tree.
//!
//! Parsing every token's event into a `serde_json::Value` and serialising it again was ~70 % of
//! the SSE filter's time. Here the event is deserialised into borrowed `RawValue`s (validated
//! by serde_json, nothing allocated but a `Vec` per array), so each text field is known by its
//! byte range and the masked text can be spliced into the original bytes: everything else in
//! the event stays byte-identical. Whatever this reader cannot take exactly like `fields`
//! (duplicate keys, a text that does not decode, an event that ends a TGI or `/v1/responses`
//! stream, which is rewritten as a whole) returns `None`, and the event takes the parsed path.
//!
//! One difference is deliberate: values that carry no text are only skipped, so a number beyond
//! `f64` or a lone surrogate escape there does not make the event "not JSON" (which the parsed
//! path would then scan whole as text). Such fields pass unscanned, like every field that
//! carries no text in a well-formed event.

use std::borrow::Cow;
use std::ops::Range;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::fields::End;
use super::{Field, Key, DELTA_TEXTS};

/// A text field: its stream, its bytes (quotes included) in the event, and its text.
pub(super) struct Item<'a> {
    pub key: Key,
    pub span: Range<usize>,
    pub text: Cow<'a, str>,
}

type Raw<'a> = Option<&'a RawValue>;

/// Keeps a JSON `null` as `Some("null")`: a key that is present matters to some shapes.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Raw<'de>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct Top<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    choices: Raw<'a>,
    #[serde(rename = "type", borrow, default, deserialize_with = "present")]
    kind: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "present")]
    item_id: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "present")]
    output_index: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "present")]
    content_index: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "present")]
    delta: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "present")]
    token: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "present")]
    generated_text: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "present")]
    details: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "present")]
    content: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "present")]
    stop: Raw<'a>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    index: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "present")]
    delta: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "present")]
    text: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "present")]
    finish_reason: Raw<'a>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    content: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "present")]
    reasoning_content: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "present")]
    reasoning: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "present")]
    refusal: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "present")]
    tool_calls: Raw<'a>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    index: Raw<'a>,
    #[serde(borrow, default, deserialize_with = "present")]
    function: Raw<'a>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    arguments: Raw<'a>,
}

#[derive(Deserialize)]
struct Token<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    text: Raw<'a>,
}

/// The text fields of `data` and the streams it ends, or `None` to take the parsed path.
pub(super) fn extract(data: &str) -> Option<(Vec<Item<'_>>, Vec<End>)> {
    // serde's derived structs also read arrays, by position.
    if !data.trim_start().starts_with('{') {
        return None;
    }
    let top: Top = serde_json::from_str(data).ok()?;
    let mut found = Found {
        data,
        items: Vec::new(),
        ends: Vec::new(),
    };
    if let Some(choices) = top.choices.filter(|c| is_array(c)) {
        let choices: Vec<&RawValue> = serde_json::from_str(choices.get()).ok()?;
        for (pos, choice) in choices.into_iter().enumerate() {
            if !is_object(choice) {
                continue;
            }
            found.choice(pos, serde_json::from_str(choice.get()).ok()?)?;
        }
    } else if let Some(kind) = top.kind.and_then(string) {
        let kind = kind?;
        let item = match top.item_id.and_then(string) {
            Some(id) => id?.into_owned(),
            None => match top.output_index {
                Some(raw) => serde_json::from_str::<serde_json::Value>(raw.get())
                    .ok()?
                    .to_string(),
                None => String::new(),
            },
        };
        let part = top.content_index.and_then(u64_of).unwrap_or(0);
        if let Some(kind) = kind.strip_suffix(".delta") {
            let key = Key::Responses {
                kind: kind.to_string(),
                item,
                part,
            };
            found.text(key, top.delta)?;
        } else if kind.ends_with(".done") {
            // Ends a stream, and the event repeats the full text: rewritten whole.
            return None;
        }
    } else if let Some(token) = top.token {
        if is_object(token) {
            let token: Token = serde_json::from_str(token.get()).ok()?;
            found.text(Key::Tgi, token.text)?;
        }
        if [top.generated_text, top.details].iter().any(|v| set(*v)) {
            // The last event repeats the whole text in `generated_text`: rewritten whole.
            return None;
        }
    } else if top.content.is_some() {
        found.text(Key::Llama, top.content)?;
        if top.stop.is_some_and(|s| s.get() == "true") {
            found.ends.push(End::Llama);
        }
    }
    Some((found.items, found.ends))
}

struct Found<'a> {
    data: &'a str,
    items: Vec<Item<'a>>,
    ends: Vec<End>,
}

impl<'a> Found<'a> {
    fn choice(&mut self, pos: usize, choice: Choice<'a>) -> Option<()> {
        let index = choice.index.and_then(u64_of).unwrap_or(pos as u64);
        if let Some(delta) = choice.delta.filter(|d| is_object(d)) {
            let delta: Delta = serde_json::from_str(delta.get()).ok()?;
            let key = |field| Key::Choice { index, field };
            // In the order of `DELTA_TEXTS`.
            let texts = [
                delta.content,
                delta.reasoning_content,
                delta.reasoning,
                delta.refusal,
            ];
            for (name, text) in DELTA_TEXTS.into_iter().zip(texts) {
                self.text(key(Field::Delta(name)), text)?;
            }
            if let Some(calls) = delta.tool_calls.filter(|c| is_array(c)) {
                let calls: Vec<&RawValue> = serde_json::from_str(calls.get()).ok()?;
                for (pos, call) in calls.into_iter().enumerate() {
                    if !is_object(call) {
                        continue;
                    }
                    let call: ToolCall = serde_json::from_str(call.get()).ok()?;
                    let field = Field::Tool(call.index.and_then(u64_of).unwrap_or(pos as u64));
                    let arguments = match call.function.filter(|f| is_object(f)) {
                        Some(f) => serde_json::from_str::<Function>(f.get()).ok()?.arguments,
                        None => None,
                    };
                    self.text(key(field), arguments)?;
                }
            }
        }
        let text = Key::Choice {
            index,
            field: Field::Text,
        };
        self.text(text, choice.text)?;
        if set(choice.finish_reason) {
            self.ends.push(End::Choice(index));
        }
        Some(())
    }

    /// Notes `value` as the text of `key` if it is a string; `None` if it does not decode.
    fn text(&mut self, key: Key, value: Raw<'a>) -> Option<()> {
        let Some(value) = value else {
            return Some(());
        };
        let Some(text) = string(value) else {
            return Some(());
        };
        let raw = value.get();
        let start = raw.as_ptr() as usize - self.data.as_ptr() as usize;
        self.items.push(Item {
            key,
            span: start..start + raw.len(),
            text: text?,
        });
        Some(())
    }
}

fn is_array(v: &RawValue) -> bool {
    v.get().starts_with('[')
}

fn is_object(v: &RawValue) -> bool {
    v.get().starts_with('{')
}

/// Present and not `null`.
fn set(v: Raw<'_>) -> bool {
    v.is_some_and(|v| v.get() != "null")
}

fn u64_of(v: &RawValue) -> Option<u64> {
    serde_json::from_str(v.get()).ok()
}

/// `None`: not a string. `Some(None)`: a string that does not decode (a lone surrogate).
fn string(v: &RawValue) -> Option<Option<Cow<'_, str>>> {
    let raw = v.get();
    if !raw.starts_with('"') {
        return None;
    }
    // serde_json has checked the quotes and that no control character is inside.
    Some(if raw.contains('\\') {
        serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(&raw[1..raw.len() - 1]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(data: &str) -> Option<Vec<(Key, String, String)>> {
        let (items, _) = extract(data)?;
        Some(
            items
                .into_iter()
                .map(|i| (i.key, data[i.span].to_string(), i.text.into_owned()))
                .collect(),
        )
    }

    #[test]
    fn spans_cover_the_quoted_value_and_texts_are_decoded() {
        let data = r#"{"id":"x","choices":[{"index":2,"delta":{"content":"a\"b\u00e9"},"finish_reason":null}]}"#;
        let key = Key::Choice {
            index: 2,
            field: Field::Delta("content"),
        };
        assert_eq!(
            texts(data),
            Some(vec![(key, r#""a\"b\u00e9""#.into(), "a\"bé".into())])
        );
    }

    #[test]
    fn what_the_parsed_path_must_take_is_refused() {
        // duplicate keys, a lone surrogate, events rewritten whole, not JSON
        for data in [
            r#"{"choices":[],"choices":[]}"#,
            r#"{"choices":[{"delta":{"content":"\ud800"}}]}"#,
            r#"{"type":"response.output_text.done","text":"x"}"#,
            r#"{"token":{"text":"x"},"generated_text":"x"}"#,
            r#"{"choices":[{"delta":{"content":"x"}}]} trailing"#,
            "not json",
        ] {
            assert!(extract(data).is_none(), "{data}");
        }
    }

    #[test]
    fn null_and_absent_keys_are_told_apart_like_the_parsed_path() {
        // `token: null` is still a TGI event (no text); `content: null` a llama.cpp one.
        let (items, ends) = extract(r#"{"token":null,"content":"x"}"#).unwrap();
        assert!(items.is_empty() && ends.is_empty());
        let (items, ends) = extract(r#"{"content":null,"stop":true}"#).unwrap();
        assert!(items.is_empty());
        assert!(matches!(ends[..], [End::Llama]));
    }
}
