//! What a match is replaced with.
//!
//! `mask` and `partial` count characters, not bytes (a UTF-8 continuation byte adds no `*`),
//! so the masked text has the length the reader saw. `hash` is keyed BLAKE3: equal values
//! under one key give equal tags (correlation across responses), and without the key a tag
//! reveals nothing, not even for short values like card numbers that could be brute-forced
//! from an unkeyed hash.

use super::config::Action;

/// Writes the replacement for `value` into `out`. `Block` writes nothing (the caller stops).
pub(crate) fn render(
    action: Action,
    category: &str,
    value: &[u8],
    hash_key: Option<&[u8; 32]>,
    out: &mut Vec<u8>,
) {
    match action {
        Action::Redact => {
            out.extend_from_slice(b"[REDACTED:");
            out.extend_from_slice(category.as_bytes());
            out.push(b']');
        }
        Action::Mask => stars(chars(value), out),
        Action::Partial => {
            let total = chars(value);
            if total <= 4 {
                stars(total, out);
            } else {
                stars(total - 4, out);
                out.extend_from_slice(last_chars(value, 4));
            }
        }
        Action::Hash => {
            // Compile refuses `hash` without a key; an absent key here would be a bug, and
            // redacting is the safe thing to do about it.
            let Some(key) = hash_key else {
                return render(Action::Redact, category, value, None, out);
            };
            let digest = blake3::keyed_hash(key, value);
            out.extend_from_slice(b"[HASH:");
            out.extend_from_slice(&digest.to_hex().as_bytes()[..12]);
            out.push(b']');
        }
        Action::Block => {}
    }
}

/// Number of characters in (possibly invalid) UTF-8: every byte that does not continue one.
pub(crate) fn chars(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| !is_continuation(b)).count()
}

pub(crate) fn stars(n: usize, out: &mut Vec<u8>) {
    out.resize(out.len() + n, b'*');
}

fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

/// The last `n` characters of `bytes`.
fn last_chars(bytes: &[u8], n: usize) -> &[u8] {
    let mut seen = 0;
    for (i, &b) in bytes.iter().enumerate().rev() {
        if !is_continuation(b) {
            seen += 1;
            if seen == n {
                return &bytes[i..];
            }
        }
    }
    bytes
}

/// Derives the 32-byte hash key from the configured secret.
pub(crate) fn derive_key(secret: &[u8]) -> [u8; 32] {
    blake3::derive_key("modelgate masking hash key v1", secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(action: Action, value: &str) -> String {
        let key = derive_key(b"k");
        let mut out = Vec::new();
        render(action, "email", value.as_bytes(), Some(&key), &mut out);
        String::from_utf8(out).expect("ascii or the input's own characters")
    }

    #[test]
    fn each_action_renders_its_documented_shape() {
        assert_eq!(run(Action::Redact, "bob@x.io"), "[REDACTED:email]");
        assert_eq!(run(Action::Mask, "bob@x.io"), "********");
        assert_eq!(
            run(Action::Partial, "4111 1111 1111 1111"),
            "***************1111"
        );
        assert_eq!(run(Action::Partial, "abc"), "***");
        assert!(run(Action::Hash, "bob@x.io").starts_with("[HASH:"));
        assert_eq!(run(Action::Hash, "bob@x.io").len(), "[HASH:]".len() + 12);
    }

    #[test]
    fn masking_counts_characters_not_bytes() {
        assert_eq!(run(Action::Mask, "jösé"), "****");
        assert_eq!(run(Action::Partial, "ééééé"), "*éééé");
    }

    #[test]
    fn equal_values_hash_equally_and_keys_matter() {
        assert_eq!(run(Action::Hash, "a@b.co"), run(Action::Hash, "a@b.co"));
        assert_ne!(run(Action::Hash, "a@b.co"), run(Action::Hash, "c@b.co"));
        let mut other = Vec::new();
        render(
            Action::Hash,
            "e",
            b"a@b.co",
            Some(&derive_key(b"other")),
            &mut other,
        );
        assert_ne!(String::from_utf8_lossy(&other), run(Action::Hash, "a@b.co"));
    }
}
