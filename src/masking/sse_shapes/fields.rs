//! Reading an event's text fields and end signals (the table in the parent module's docs),
//! and writing masked text back.

use serde_json::Value;

use super::{Field, Key, Loc, DELTA_TEXTS};

/// What an event ends.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum End {
    Choice(u64),
    Responses(String, String, u64),
    Tgi,
    Llama,
}

impl End {
    pub(super) fn ends(&self, key: &Key) -> bool {
        match (self, key) {
            (End::Choice(i), Key::Choice { index, .. }) => i == index,
            (End::Responses(k, it, p), Key::Responses { kind, item, part }) => {
                k == kind && it == item && p == part
            }
            (End::Tgi, Key::Tgi) | (End::Llama, Key::Llama) => true,
            _ => false,
        }
    }
}

/// The text fields of an event and the streams it ends.
pub(super) fn extract(event: &Value) -> (Vec<(Key, Loc, String)>, Vec<End>) {
    let mut items = Vec::new();
    let mut ends = Vec::new();
    let Value::Object(obj) = event else {
        return (items, ends);
    };
    let mut text = |key: Key, loc: Loc, v: Option<&Value>| {
        if let Some(Value::String(s)) = v {
            items.push((key, loc, s.clone()));
        }
    };
    if let Some(Value::Array(choices)) = obj.get("choices") {
        for (pos, choice) in choices.iter().enumerate() {
            let index = choice
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(pos as u64);
            if let Some(delta) = choice.get("delta") {
                for name in DELTA_TEXTS {
                    let field = Field::Delta(name);
                    text(
                        Key::Choice { index, field },
                        Loc::Choice {
                            pos,
                            field,
                            call: 0,
                        },
                        delta.get(name),
                    );
                }
                if let Some(Value::Array(calls)) = delta.get("tool_calls") {
                    for (call, c) in calls.iter().enumerate() {
                        let field = Field::Tool(
                            c.get("index")
                                .and_then(Value::as_u64)
                                .unwrap_or(call as u64),
                        );
                        let args = c.get("function").and_then(|f| f.get("arguments"));
                        text(
                            Key::Choice { index, field },
                            Loc::Choice { pos, field, call },
                            args,
                        );
                    }
                }
            }
            text(
                Key::Choice {
                    index,
                    field: Field::Text,
                },
                Loc::Choice {
                    pos,
                    field: Field::Text,
                    call: 0,
                },
                choice.get("text"),
            );
            if choice.get("finish_reason").is_some_and(|f| !f.is_null()) {
                ends.push(End::Choice(index));
            }
        }
    } else if let Some(kind) = obj.get("type").and_then(Value::as_str) {
        let item = obj
            .get("item_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| {
                obj.get("output_index")
                    .map(Value::to_string)
                    .unwrap_or_default()
            });
        let part = obj
            .get("content_index")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if let Some(kind) = kind.strip_suffix(".delta") {
            text(
                Key::Responses {
                    kind: kind.to_string(),
                    item,
                    part,
                },
                Loc::Delta,
                obj.get("delta"),
            );
        } else if let Some(kind) = kind.strip_suffix(".done") {
            ends.push(End::Responses(kind.to_string(), item, part));
        }
    } else if let Some(token) = obj.get("token") {
        text(Key::Tgi, Loc::TgiToken, token.get("text"));
        let set = |k: &str| obj.get(k).is_some_and(|v| !v.is_null());
        if set("generated_text") || set("details") {
            ends.push(End::Tgi);
        }
    } else if obj.contains_key("content") {
        text(Key::Llama, Loc::Content, obj.get("content"));
        if obj.get("stop").and_then(Value::as_bool) == Some(true) {
            ends.push(End::Llama);
        }
    }
    (items, ends)
}

pub(super) fn set_text(event: &mut Value, loc: Loc, text: String) {
    let slot = match loc {
        Loc::Choice { pos, field, call } => {
            let choice = &mut event["choices"][pos];
            match field {
                Field::Delta(name) => &mut choice["delta"][name],
                Field::Tool(_) => &mut choice["delta"]["tool_calls"][call]["function"]["arguments"],
                Field::Text => &mut choice["text"],
            }
        }
        Loc::Delta => &mut event["delta"],
        Loc::TgiToken => &mut event["token"]["text"],
        Loc::Content => &mut event["content"],
    };
    *slot = Value::String(text);
}
