//! The built-in detectors.
//!
//! Every pattern has a bounded longest match (vectorscan computes it; a unit test checks they
//! all fit the default `max_hold_bytes` of 256), and hand-written byte classes for the hold
//! walk ([`super::hold`]): `anywhere` must contain every byte a match can contain, `first` every
//! byte a match can start with. Too wide only costs latency; too narrow would leak, which is
//! why the differential tests plant every built-in split at every offset.
//!
//! PEM private keys and JWTs can be kilobytes long, far more than anyone wants to hold, so
//! they are *spans*: a short bounded start marker is matched like any pattern, and from there
//! the text is redacted as it arrives until the span ends (an end marker, or the first byte
//! outside a class). Spans support `redact`, `mask` and `block` only.

use std::path::Path;

use super::compile::{Draft, Pat, Span};
use super::config::{Action, MaskConfigError, MaskingSection};
use super::hold::ByteSet;
use super::validate::{self, Validator};
use super::{action, vs};

/// One built-in detector, as data.
pub(crate) struct Builtin {
    pub id: &'static str,
    pub category: &'static str,
    pub action: Action,
    /// Vectorscan patterns; a match of any of them is a match of the detector.
    pub patterns: &'static [&'static str],
    pub caseless: bool,
    /// Class spec (see `ByteSet::parse`) of bytes that may appear anywhere in a match.
    pub anywhere: &'static str,
    /// Class spec of bytes a match may start with.
    pub first: &'static str,
    pub validator: Option<Validator>,
    pub span: Option<SpanEnd>,
}

/// Where a span detector's redaction ends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SpanEnd {
    /// At the end of a match of this pattern (inclusive).
    Marker(&'static str),
    /// At the first byte outside this class spec, or where `stop` begins.
    WhileIn {
        class: &'static str,
        stop: &'static str,
    },
}

const HEX: &str = "0-9A-Fa-f";

pub(crate) const BUILTINS: &[Builtin] = &[
    Builtin {
        id: "email",
        category: "email",
        action: Action::Redact,
        patterns: &[
            r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,120}[A-Za-z0-9])?\.[A-Za-z]{2,24}\b",
        ],
        caseless: false,
        anywhere: "A-Za-z0-9._%+@-",
        first: "A-Za-z0-9._%+-",
        validator: None,
        span: None,
    },
    Builtin {
        id: "phone",
        category: "phone",
        action: Action::Redact,
        patterns: &[
            // E.164 and international shapes: +44 20 7946 0958, +1-415-555-2671, +4915123456789
            r"\+[1-9][0-9]{0,2}[ .-]?(?:\([0-9]{1,4}\)[ .-]?)?[0-9]{1,4}(?:[ .-]?[0-9]{2,4}){2,4}\b",
            // North American with separators: (415) 555-2671, 415-555-2671, 415.555.2671
            r"(?:\([2-9][0-9]{2}\) ?|\b[2-9][0-9]{2}[.-])[2-9][0-9]{2}[.-][0-9]{4}\b",
            // Common European national shapes: 030 1234567, 0171 2345678, 020 7946 0958
            r"\b0[1-9][0-9]{1,3}[ /-][0-9]{3,4}[ -]?[0-9]{3,4}\b",
        ],
        caseless: false,
        anywhere: r"0-9+()\x20./-",
        first: "0-9+(",
        validator: None,
        span: None,
    },
    Builtin {
        id: "credit_card",
        category: "credit_card",
        action: Action::Partial,
        patterns: &[r"\b[0-9](?:[ -]?[0-9]){12,18}\b"],
        caseless: false,
        anywhere: r"0-9\x20-",
        first: "0-9",
        validator: Some(validate::luhn),
        span: None,
    },
    Builtin {
        id: "iban",
        category: "iban",
        action: Action::Partial,
        patterns: &[r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"],
        caseless: false,
        anywhere: r"A-Z0-9\x20",
        first: "A-Z",
        validator: Some(validate::iban),
        span: None,
    },
    Builtin {
        id: "us_ssn",
        category: "ssn",
        action: Action::Redact,
        patterns: &[r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b"],
        caseless: false,
        anywhere: "0-9-",
        first: "0-9",
        validator: Some(validate::us_ssn),
        span: None,
    },
    Builtin {
        id: "ipv4",
        category: "ip_address",
        action: Action::Redact,
        patterns: &[r"\b(?:[0-9]{1,3}\.){3}[0-9]{1,3}\b"],
        caseless: false,
        anywhere: "0-9.",
        first: "0-9",
        validator: Some(validate::ipv4),
        span: None,
    },
    Builtin {
        id: "ipv6",
        category: "ip_address",
        action: Action::Redact,
        patterns: &[
            // No leading `\b`: with it vectorscan runs this at 0.7 GB/s instead of 13.
            r"[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){7}\b",
            r"\b(?:[0-9A-Fa-f]{1,4}:){1,6}(?::[0-9A-Fa-f]{1,4}){1,6}\b",
        ],
        caseless: false,
        anywhere: "0-9A-Fa-f:",
        first: HEX,
        validator: Some(validate::ipv6),
        span: None,
    },
    Builtin {
        id: "aws_access_key",
        category: "credential",
        action: Action::Redact,
        patterns: &[r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}\b"],
        caseless: false,
        anywhere: "A-Z0-9",
        first: "A",
        validator: None,
        span: None,
    },
    Builtin {
        id: "github_token",
        category: "credential",
        action: Action::Redact,
        patterns: &[
            r"\bgh[pousr]_[A-Za-z0-9]{36,76}\b",
            r"\bgithub_pat_[A-Za-z0-9_]{22,120}\b",
        ],
        caseless: false,
        anywhere: "A-Za-z0-9_",
        first: "g",
        validator: None,
        span: None,
    },
    Builtin {
        id: "gitlab_token",
        category: "credential",
        action: Action::Redact,
        patterns: &[r"\bgl(?:pat|ptt|rt|dt|soat|cbt)-[A-Za-z0-9_-]{20,64}\b"],
        caseless: false,
        anywhere: "A-Za-z0-9_-",
        first: "g",
        validator: Some(validate::no_armour_line),
        span: None,
    },
    Builtin {
        id: "slack_token",
        category: "credential",
        action: Action::Redact,
        patterns: &[r"\bxox[abposr]-[A-Za-z0-9-]{10,200}\b"],
        caseless: false,
        anywhere: "A-Za-z0-9-",
        first: "x",
        validator: Some(validate::no_armour_line),
        span: None,
    },
    Builtin {
        id: "openai_key",
        category: "credential",
        action: Action::Redact,
        patterns: &[r"\bsk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,200}\b"],
        caseless: false,
        anywhere: "A-Za-z0-9_-",
        first: "s",
        validator: Some(validate::no_armour_line),
        span: None,
    },
    Builtin {
        id: "jwt",
        category: "jwt",
        action: Action::Redact,
        // Header, dot, start of payload: both base64url of a JSON object (`{"` → `eyJ`).
        patterns: &[r"\beyJ[A-Za-z0-9_-]{4,200}\.eyJ"],
        caseless: false,
        anywhere: "A-Za-z0-9_.-",
        first: "e",
        validator: None,
        // A PEM armour line glued to a token ("…eyJzdWIi-----BEGIN RSA PRIVATE KEY-----") is
        // all in the token's class: without the stop the token's span would swallow the key's
        // start marker and the key itself would go out unmasked (found by the mask_split fuzz
        // target). Five dashes do not occur in real tokens.
        span: Some(SpanEnd::WhileIn {
            class: "A-Za-z0-9_.-",
            stop: "-----",
        }),
    },
    Builtin {
        id: "private_key",
        category: "private_key",
        action: Action::Redact,
        patterns: &[r"-----BEGIN (?:[A-Z0-9]{1,12} ){0,3}PRIVATE KEY(?: BLOCK)?-----"],
        caseless: false,
        anywhere: r"A-Z0-9\x20-",
        first: "-",
        validator: None,
        span: Some(SpanEnd::Marker(
            r"-----END (?:[A-Z0-9]{1,12} ){0,3}PRIVATE KEY(?: BLOCK)?-----",
        )),
    },
];

/// The ids of all built-ins, for error messages.
pub(crate) fn ids() -> String {
    BUILTINS.iter().map(|b| b.id).collect::<Vec<_>>().join(", ")
}

/// The `hash` key from `hash_key` or `hash_key_file`, derived to 32 bytes.
pub(crate) fn hash_key(
    section: &MaskingSection,
    base_dir: &Path,
) -> Result<Option<[u8; 32]>, MaskConfigError> {
    let secret = match (&section.hash_key, &section.hash_key_file) {
        (Some(_), Some(_)) => {
            return Err(MaskConfigError::new(
                "masking.hash_key_file",
                "both hash_key and hash_key_file are set",
                "keep one of them",
            ))
        }
        (Some(key), None) => key.clone().into_bytes(),
        (None, Some(file)) => {
            let path = base_dir.join(file);
            let mut bytes = std::fs::read(&path).map_err(|e| {
                MaskConfigError::new(
                    "masking.hash_key_file",
                    format!("cannot read {}: {e}", path.display()),
                    "point it at a readable file",
                )
            })?;
            while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
                bytes.pop();
            }
            bytes
        }
        (None, None) => return Ok(None),
    };
    if secret.is_empty() {
        return Err(MaskConfigError::new(
            "masking.hash_key",
            "the hash key is empty",
            "use a secret of 16+ bytes",
        ));
    }
    Ok(Some(action::derive_key(&secret)))
}

/// The enabled built-ins as drafts, with the section's action overrides.
pub(crate) fn drafts(section: &MaskingSection) -> Result<Vec<Draft>, MaskConfigError> {
    for name in section.builtins.keys() {
        if !BUILTINS.iter().any(|b| b.id == name) {
            return Err(MaskConfigError::new(
                format!("masking.builtins.{name}"),
                format!("there is no built-in detector `{name}`"),
                format!("use one of: {}", ids()),
            ));
        }
    }
    let mut drafts = Vec::new();
    for b in BUILTINS {
        let key = format!("masking.builtins.{}", b.id);
        let action = match section.builtins.get(b.id) {
            Some(setting) => match setting.action() {
                Some(action) => action,
                None => continue,
            },
            None => b.action,
        };
        if b.span.is_some() && matches!(action, Action::Partial | Action::Hash) {
            return Err(MaskConfigError::new(
                key,
                format!("`{}` redacts a span of unknown length as it streams, so it cannot keep or hash the value", b.id),
                "use redact, mask or block",
            ));
        }
        let flags = if b.caseless { vs::CASELESS } else { 0 };
        drafts.push(Draft {
            key,
            id: b.id.into(),
            category: b.category.into(),
            action,
            patterns: b
                .patterns
                .iter()
                .map(|p| Pat {
                    expr: (*p).to_string(),
                    flags,
                    literal_len: None,
                })
                .collect(),
            anywhere: ByteSet::parse(b.anywhere),
            first: ByteSet::parse(b.first),
            validator: b.validator,
            span: b.span.map(|s| match s {
                SpanEnd::Marker(m) => (Span::Marker, Some(m)),
                SpanEnd::WhileIn { class, stop } => (
                    Span::WhileIn {
                        class: ByteSet::parse(class),
                        stop: stop.as_bytes(),
                    },
                    None,
                ),
            }),
            is_literal: false,
            literal_values: None,
        });
    }
    Ok(drafts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::masking::vs;

    #[test]
    fn every_builtin_is_bounded_and_fits_the_default_hold() {
        for b in BUILTINS {
            for p in b.patterns {
                let info = vs::expression_info(p, 0).unwrap_or_else(|e| panic!("{}: {e:?}", b.id));
                let max = info
                    .max_width
                    .unwrap_or_else(|| panic!("{} is unbounded", b.id));
                assert!(max <= 256, "{} can match {max} bytes", b.id);
            }
        }
    }
}
