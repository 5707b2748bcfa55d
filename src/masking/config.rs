//! The `[masking]` section of the config file, as written (serde layer), and its error type.
//!
//! [`super::Masker::compile`] turns it into the compiled form; every error it raises names the
//! dotted key, what is wrong, and how to fix it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Mode;

/// `[masking]`: detectors, actions and limits.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskingSection {
    /// Master switch; when false, `filter_for` should not be called (the owner's pipeline
    /// skips masking) and compile still validates the rest.
    pub enabled: bool,
    /// Default mode for routes that do not set one: `enforce` or `detect`.
    pub mode: Mode,
    /// Upper bound on bytes held back per text stream. Every detector's longest possible match
    /// must fit; a config that needs more does not compile.
    pub max_hold_bytes: usize,
    /// Key for the `hash` action (any string; 16+ bytes recommended). Equal values hash equally
    /// under one key, so logs correlate without revealing the value.
    pub hash_key: Option<String>,
    /// Same, read from a file (relative to the config file's directory); trailing newline trimmed.
    pub hash_key_file: Option<PathBuf>,
    /// Per built-in detector: its action, or `off`. Built-ins not named keep their default.
    pub builtins: BTreeMap<String, BuiltinSetting>,
    /// `[[masking.literals]]`: lists of exact strings.
    pub literals: Vec<LiteralList>,
    /// `[[masking.regex]]`: custom regular expressions (vectorscan syntax, bounded length).
    pub regex: Vec<RegexDetector>,
}

/// What to do with a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Replace with `[REDACTED:<category>]`.
    Redact,
    /// Replace each character with `*` (same length).
    Mask,
    /// Replace all but the last four characters with `*`.
    Partial,
    /// Replace with `[HASH:<12 hex>]`, a keyed hash of the value.
    Hash,
    /// End the response with an error.
    Block,
}

/// A built-in's setting: one of the actions, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BuiltinSetting {
    Off,
    Redact,
    Mask,
    Partial,
    Hash,
    Block,
}

/// `[[masking.literals]]`: one detector made of many exact strings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LiteralList {
    /// Detector id (in verdicts and logs). Unique across all detectors.
    pub id: String,
    /// Category shown in `[REDACTED:<category>]`; defaults to the id.
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default = "default_action")]
    pub action: Action,
    /// Match regardless of ASCII case.
    #[serde(default)]
    pub caseless: bool,
    /// The strings, inline.
    #[serde(default)]
    pub values: Vec<String>,
    /// And/or a file with one string per line (blank lines and lines starting with `#`
    /// skipped), relative to the config file's directory.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// `[[masking.regex]]`: one custom pattern.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegexDetector {
    pub id: String,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default = "default_action")]
    pub action: Action,
    /// Vectorscan (PCRE-like) syntax. Must have a bounded longest match (`{m,n}`, not `+`/`*`)
    /// that fits in `max_hold_bytes`.
    pub pattern: String,
    #[serde(default)]
    pub caseless: bool,
}

/// A config error: the dotted key, what is wrong, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskConfigError {
    /// e.g. `masking.regex[2].pattern`.
    pub key: String,
    pub message: String,
    pub fix: String,
}

fn default_action() -> Action {
    Action::Redact
}

// === impl MaskingSection ===

impl Default for MaskingSection {
    fn default() -> Self {
        MaskingSection {
            enabled: true,
            mode: Mode::Enforce,
            max_hold_bytes: 256,
            hash_key: None,
            hash_key_file: None,
            builtins: BTreeMap::new(),
            literals: Vec::new(),
            regex: Vec::new(),
        }
    }
}

// === impl BuiltinSetting ===

impl BuiltinSetting {
    /// The action, or `None` for `off`.
    pub fn action(self) -> Option<Action> {
        match self {
            BuiltinSetting::Off => None,
            BuiltinSetting::Redact => Some(Action::Redact),
            BuiltinSetting::Mask => Some(Action::Mask),
            BuiltinSetting::Partial => Some(Action::Partial),
            BuiltinSetting::Hash => Some(Action::Hash),
            BuiltinSetting::Block => Some(Action::Block),
        }
    }
}

// === impl MaskConfigError ===

impl MaskConfigError {
    pub(crate) fn new(
        key: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        MaskConfigError {
            key: key.into(),
            message: message.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for MaskConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (fix: {})", self.key, self.message, self.fix)
    }
}

impl std::error::Error for MaskConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_section_parses_from_toml() {
        let section: MaskingSection = toml::from_str(
            r#"
            max_hold_bytes = 300
            hash_key = "k"
            [builtins]
            ipv4 = "off"
            credit_card = "block"
            [[literals]]
            id = "codenames"
            values = ["Nightingale"]
            caseless = true
            [[regex]]
            id = "employee"
            pattern = "EMP-[0-9]{6}"
            action = "hash"
            "#,
        )
        .expect("valid section");
        assert_eq!(section.max_hold_bytes, 300);
        assert_eq!(section.builtins["credit_card"], BuiltinSetting::Block);
        assert_eq!(section.regex[0].action, Action::Hash);
        assert_eq!(section.literals[0].action, Action::Redact);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<MaskingSection>("max_hold = 3").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
