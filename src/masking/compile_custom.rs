//! Custom detectors from the config: literal lists and regexes, checked and turned into drafts.
//!
//! Literals are escaped byte by byte into vectorscan patterns (vectorscan recognises them as
//! literals and uses its fast literal matchers); their hold classes are exact. A custom regex's
//! hold classes are not analysed in depth: if the pattern cannot match whitespace (no `.`,
//! `\s`, negated class, space, …) the hold walk stops at whitespace, otherwise it holds the
//! pattern's full bound.

use std::path::Path;
use std::sync::Arc;

use super::compile::{Draft, Pat};
use super::config::{MaskConfigError, MaskingSection};
use super::hold::ByteSet;
use super::vs;

pub(crate) fn literal_drafts(
    section: &MaskingSection,
    base_dir: &Path,
) -> Result<Vec<Draft>, MaskConfigError> {
    let mut drafts = Vec::new();
    for (i, list) in section.literals.iter().enumerate() {
        let key = format!("masking.literals[{i}]");
        check_id(&key, &list.id)?;
        let mut values: Vec<(String, String)> = list
            .values
            .iter()
            .enumerate()
            .map(|(j, v)| (format!("{key}.values[{j}]"), v.clone()))
            .collect();
        if let Some(file) = &list.file {
            let path = base_dir.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                MaskConfigError::new(
                    format!("{key}.file"),
                    format!("cannot read {}: {e}", path.display()),
                    "point it at a readable UTF-8 file, one string per line",
                )
            })?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim_end_matches('\r');
                if line.trim().is_empty() || line.starts_with('#') {
                    continue;
                }
                values.push((
                    format!("{key}.file ({}:{})", path.display(), n + 1),
                    line.to_string(),
                ));
            }
        }
        if values.is_empty() {
            return Err(MaskConfigError::new(
                format!("{key}.values"),
                "the list has no strings",
                "add `values = [...]` or a `file`",
            ));
        }
        let flags = if list.caseless { vs::CASELESS } else { 0 };
        let mut anywhere = ByteSet::default();
        let mut first = ByteSet::default();
        let mut patterns = Vec::with_capacity(values.len());
        let mut raw_values = Vec::with_capacity(values.len());
        for (vkey, value) in values {
            let bytes = value.as_bytes();
            let Some(&head) = bytes.first() else {
                return Err(MaskConfigError::new(vkey, "empty string", "remove it"));
            };
            if bytes.len() > section.max_hold_bytes {
                return Err(MaskConfigError::new(
                    vkey,
                    format!(
                        "{} bytes long, more than max_hold_bytes = {}",
                        bytes.len(),
                        section.max_hold_bytes
                    ),
                    "shorten it or raise masking.max_hold_bytes",
                ));
            }
            raw_values.push(bytes.to_vec());
            anywhere = anywhere.union(ByteSet::of(bytes));
            first.insert(head);
            patterns.push(Pat {
                expr: escape_literal(bytes),
                flags,
                literal_len: Some(bytes.len()),
            });
        }
        if list.caseless {
            anywhere = anywhere.caseless();
            first = first.caseless();
        }
        drafts.push(Draft {
            key,
            id: Arc::from(list.id.as_str()),
            category: Arc::from(list.category.as_deref().unwrap_or(&list.id)),
            action: list.action,
            patterns,
            anywhere,
            first,
            validator: None,
            span: None,
            is_literal: true,
            literal_values: Some((raw_values, list.caseless)),
        });
    }
    Ok(drafts)
}

pub(crate) fn regex_drafts(section: &MaskingSection) -> Result<Vec<Draft>, MaskConfigError> {
    let mut drafts = Vec::new();
    for (i, r) in section.regex.iter().enumerate() {
        let key = format!("masking.regex[{i}]");
        check_id(&key, &r.id)?;
        let flags = if r.caseless { vs::CASELESS } else { 0 };
        // Checked here for a precise key; compile re-reads the width.
        super::compile::regex_width(&format!("{key}.pattern"), &r.pattern, flags)?;
        let class = if might_match_whitespace(&r.pattern) {
            ByteSet::ALL
        } else {
            let mut non_space = ByteSet::default();
            for b in 0..=255u8 {
                if !b.is_ascii_whitespace() && b != 0x0b {
                    non_space.insert(b);
                }
            }
            non_space
        };
        drafts.push(Draft {
            key: format!("{key}.pattern"),
            id: Arc::from(r.id.as_str()),
            category: Arc::from(r.category.as_deref().unwrap_or(&r.id)),
            action: r.action,
            patterns: vec![Pat {
                expr: r.pattern.clone(),
                flags,
                literal_len: None,
            }],
            anywhere: class,
            first: class,
            validator: None,
            span: None,
            is_literal: false,
            literal_values: None,
        });
    }
    Ok(drafts)
}

fn check_id(key: &str, id: &str) -> Result<(), MaskConfigError> {
    let ok = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(MaskConfigError::new(
            format!("{key}.id"),
            format!("`{id}` is not a valid detector id"),
            "use letters, digits, `_` and `-`",
        ))
    }
}

/// `\xHH` for every byte that is not an ASCII letter or digit, so no byte is special.
fn escape_literal(bytes: &[u8]) -> String {
    let mut expr = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        if b.is_ascii_alphanumeric() {
            expr.push(char::from(b));
        } else {
            expr.push_str(&format!("\\x{b:02x}"));
        }
    }
    expr
}

/// Conservative: true unless the pattern clearly cannot match a whitespace byte.
fn might_match_whitespace(pattern: &str) -> bool {
    let p = pattern.as_bytes();
    let mut in_class = false;
    let mut i = 0;
    while i < p.len() {
        let b = p[i];
        match b {
            b'\\' => {
                let Some(&next) = p.get(i + 1) else {
                    return true;
                };
                // Escapes that can denote whitespace or arbitrary bytes.
                if b"sSWDHVNhvtnrfxeacpPQ0123456789o".contains(&next) {
                    return true;
                }
                i += 2;
                continue;
            }
            b'[' if !in_class => {
                in_class = true;
                if p.get(i + 1) == Some(&b'^') {
                    return true;
                }
            }
            b']' if in_class => in_class = false,
            // A range whose low end is a space or control character.
            b'-' if in_class && i > 0 && p[i - 1] <= b' ' => return true,
            b'.' if !in_class => return true,
            b'(' if !in_class && p.get(i + 1) == Some(&b'?') => {
                // Inline flags such as (?x) or (?s) change what bytes mean.
                let flags = p[i + 2..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphabetic() || **c == b'-');
                if flags.clone().any(|c| *c == b'x' || *c == b's') {
                    return true;
                }
            }
            _ if b <= b' ' || b >= 0x7f => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_token_patterns_cannot_match_whitespace() {
        assert!(!might_match_whitespace(r"EMP-[0-9]{6}"));
        assert!(!might_match_whitespace(r"\bacme_[A-Za-z0-9_]{8,40}\b"));
        assert!(!might_match_whitespace(r"(?i)secret-[a-f0-9]{32}"));
    }

    #[test]
    fn anything_that_could_match_whitespace_is_treated_as_such() {
        for p in [
            r"a.{1,9}",
            r"a\s",
            r"[^x]{2}",
            r"a b",
            r"[\x00-z]{3}",
            r"(?x)a b",
            r"\x20",
        ] {
            assert!(might_match_whitespace(p), "{p}");
        }
    }

    #[test]
    fn literals_are_escaped_byte_by_byte() {
        assert_eq!(escape_literal(b"a.b c"), r"a\x2eb\x20c");
    }
}
