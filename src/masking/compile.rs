//! `[masking]` → [`Masker`]: every detector checked, bounded and compiled into one vectorscan
//! streaming database, plus a small block-mode database per regex detector for finding starts.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use super::builtins::{self, BUILTINS};
use super::config::{Action, MaskConfigError, MaskingSection};
use super::hold::{ByteSet, HoldSpec, HoldTable, PrefixSet};
use super::validate::Validator;
use super::{vs, Engine, MaskError, Mode, Verdict};

/// The compiled masking configuration. Immutable; share it with `Arc` across workers.
#[derive(Debug)]
pub struct Masker {
    pub(crate) stream_db: Arc<vs::Database>,
    pub(crate) detectors: Vec<Detector>,
    /// Indexed by vectorscan pattern id.
    pub(crate) patterns: Vec<PatternKind>,
    pub(crate) hold: HoldTable,
    pub(crate) max_hold_bytes: usize,
    pub(crate) hash_key: Option<[u8; 32]>,
    pub(crate) mode: Mode,
}

/// One compiled detector.
#[derive(Debug)]
pub(crate) struct Detector {
    pub id: Arc<str>,
    pub category: Arc<str>,
    pub action: Action,
    pub max_width: usize,
    pub validator: Option<Validator>,
    pub span: Option<Span>,
    /// How to find where a regex match starts (`None` for literal lists).
    pub starts: Option<StartFinder>,
}

/// Finds the leftmost start of a regex match whose end vectorscan reported.
///
/// Vectorscan cannot compile the built-ins with `HS_FLAG_SOM_LEFTMOST` ("Pattern is too
/// large" for the email's bounded repeats), so starts are tested instead: a start `s` is
/// right if the detector's patterns, anchored at `s`, match exactly up to the end. The
/// candidates are few: only bytes in the detector's `first` class, after the last byte
/// outside its `anywhere` class; the leftmost candidate is nearly always the answer.
#[derive(Debug)]
pub(crate) struct StartFinder {
    /// `^[\x00-\xff](?:pattern)`: anchored one byte early, that byte being context for `\b`.
    pub with_context: vs::Database,
    /// `^(?:pattern)`: for a start at offset 0 of the text, which has no byte before it.
    pub at_text_start: vs::Database,
    pub anywhere: ByteSet,
    pub first: ByteSet,
}

/// How a span detector's region ends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Span {
    /// At the end of the detector's end-marker pattern.
    Marker,
    /// At the first byte outside `class`, or where `stop` begins (so a span cannot swallow
    /// the start marker of another span detector).
    WhileIn { class: ByteSet, stop: &'static [u8] },
}

/// What a vectorscan pattern id stands for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PatternKind {
    /// A regex: the start is found with the detector's `StartFinder`.
    Regex { det: u32 },
    /// A literal: the start is `end - len`.
    Literal { det: u32, len: u32 },
    /// The end marker of a span detector.
    SpanEnd { det: u32 },
}

/// A detector before compilation (built-ins here, custom ones in `compile_custom`).
pub(crate) struct Draft {
    /// Dotted config key, for errors.
    pub key: String,
    pub id: Arc<str>,
    pub category: Arc<str>,
    pub action: Action,
    pub patterns: Vec<Pat>,
    pub anywhere: ByteSet,
    pub first: ByteSet,
    pub validator: Option<Validator>,
    /// The span rule, and the end-marker pattern when it has one.
    pub span: Option<(Span, Option<&'static str>)>,
    pub is_literal: bool,
    /// A literal list's strings and caselessness, for exact hold checks.
    pub literal_values: Option<(Vec<Vec<u8>>, bool)>,
}

/// One pattern of a draft: a literal's length is known, a regex's is asked of vectorscan.
pub(crate) struct Pat {
    pub expr: String,
    pub flags: u32,
    pub literal_len: Option<usize>,
}

// === impl Masker ===

impl Masker {
    /// Checks and compiles the section. `base_dir` resolves relative file paths (the config
    /// file's directory).
    pub fn compile(section: &MaskingSection, base_dir: &Path) -> Result<Masker, MaskConfigError> {
        let cap = section.max_hold_bytes;
        if !(16..=65536).contains(&cap) {
            return Err(MaskConfigError::new(
                "masking.max_hold_bytes",
                format!("{cap} is out of range"),
                "use a value between 16 and 65536 (256 fits every built-in)",
            ));
        }
        let hash_key = builtins::hash_key(section, base_dir)?;
        let mut drafts = builtins::drafts(section)?;
        drafts.extend(super::compile_custom::literal_drafts(section, base_dir)?);
        drafts.extend(super::compile_custom::regex_drafts(section)?);

        let mut seen = HashSet::new();
        for d in &drafts {
            if !seen.insert(d.id.clone()) {
                return Err(MaskConfigError::new(
                    format!("{}.id", d.key),
                    format!("detector id `{}` is used twice", d.id),
                    "give every detector a unique id",
                ));
            }
            if d.action == Action::Hash && hash_key.is_none() {
                return Err(MaskConfigError::new(
                    "masking.hash_key",
                    format!("detector `{}` uses action `hash` but no key is set", d.id),
                    "set masking.hash_key (or masking.hash_key_file) to a secret of 16+ bytes",
                ));
            }
        }

        let mut detectors = Vec::with_capacity(drafts.len());
        let mut patterns = Vec::new();
        let mut stream_patterns = Vec::new();
        let mut pattern_keys = Vec::new();
        let mut hold_classes = Vec::with_capacity(drafts.len());
        for (i, mut d) in drafts.into_iter().enumerate() {
            let det = u32::try_from(i).map_err(|_| too_many())?;
            let mut max_width = 0usize;
            for p in &d.patterns {
                let width = match p.literal_len {
                    Some(len) => len,
                    None => regex_width(&d.key, &p.expr, p.flags)?,
                };
                max_width = max_width.max(width);
                patterns.push(match p.literal_len {
                    Some(len) => PatternKind::Literal {
                        det,
                        len: u32::try_from(len).map_err(|_| too_many())?,
                    },
                    None => PatternKind::Regex { det },
                });
                stream_patterns.push(vs::Pattern {
                    expression: p.expr.clone(),
                    flags: p.flags,
                    id: 0,
                });
                pattern_keys.push(d.key.clone());
            }
            if max_width > cap {
                return Err(MaskConfigError::new(
                    d.key.clone(),
                    format!("detector `{}` can match {max_width} bytes, more than max_hold_bytes = {cap}", d.id),
                    format!("raise masking.max_hold_bytes to at least {max_width}, or shorten the pattern's bounds"),
                ));
            }
            if let Some((_, Some(marker))) = d.span {
                patterns.push(PatternKind::SpanEnd { det });
                stream_patterns.push(vs::Pattern {
                    expression: marker.to_string(),
                    flags: 0,
                    id: 0,
                });
                pattern_keys.push(d.key.clone());
            }
            let starts = if d.is_literal {
                None
            } else {
                Some(start_finder(&d)?)
            };
            hold_classes.push(HoldSpec {
                anywhere: d.anywhere,
                first: d.first,
                longest: max_width,
                literals: d
                    .literal_values
                    .take()
                    .map(|(values, caseless)| PrefixSet::new(values, caseless)),
            });
            detectors.push(Detector {
                id: d.id,
                category: d.category,
                action: d.action,
                max_width,
                validator: d.validator,
                span: d.span.map(|(s, _)| s),
                starts,
            });
        }
        for (id, p) in stream_patterns.iter_mut().enumerate() {
            p.id = u32::try_from(id).map_err(|_| too_many())?;
        }
        let stream_db = if stream_patterns.is_empty() {
            // Vectorscan cannot compile an empty set; a pattern that cannot occur in text
            // (a NUL byte run) keeps the code path uniform. It maps to no detector.
            patterns.push(PatternKind::Regex { det: u32::MAX });
            vs::Database::compile(
                &[vs::Pattern {
                    expression: r"\x00\x00\x00\x00\x00\x00\x00\x00".into(),
                    flags: 0,
                    id: 0,
                }],
                vs::MODE_STREAM,
            )
        } else {
            vs::Database::compile(&stream_patterns, vs::MODE_STREAM)
        }
        .map_err(|e| {
            let key = e
                .pattern
                .and_then(|i| pattern_keys.get(i).cloned())
                .unwrap_or_else(|| "masking".into());
            MaskConfigError::new(
                key,
                format!("vectorscan cannot compile it: {}", e.message),
                "fix or simplify the pattern",
            )
        })?;
        Ok(Masker {
            stream_db: Arc::new(stream_db),
            detectors,
            patterns,
            hold: HoldTable::new(&hold_classes),
            max_hold_bytes: cap,
            hash_key,
            mode: section.mode,
        })
    }

    /// The configured default mode (routes may override it).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The configured hold cap.
    pub fn max_hold_bytes(&self) -> usize {
        self.max_hold_bytes
    }

    /// The longest match of any detector: the most any stream is ever held back.
    pub fn longest_match(&self) -> usize {
        self.hold.max_width()
    }

    /// Detector ids, in resolution order (earlier wins ties).
    pub fn detector_ids(&self) -> impl Iterator<Item = &str> {
        self.detectors.iter().map(|d| &*d.id)
    }

    /// The built-in detectors' patterns as `(id, pattern)`, for tools and comparisons
    /// (`bench/mask_bench.rs` feeds them to the `regex` crate).
    pub fn builtin_patterns() -> impl Iterator<Item = (&'static str, &'static str)> {
        BUILTINS
            .iter()
            .flat_map(|b| b.patterns.iter().map(move |p| (b.id, *p)))
    }

    /// A new engine for one text stream.
    pub fn engine(self: &Arc<Self>, mode: Mode) -> Result<Engine, MaskError> {
        Engine::new(self, mode)
    }

    /// Masks one complete text (a convenience over [`Engine`]).
    pub fn mask(
        self: &Arc<Self>,
        text: &[u8],
        mode: Mode,
    ) -> Result<(Vec<u8>, Verdict), MaskError> {
        let mut verdict = Verdict::default();
        let mut out = Vec::with_capacity(text.len());
        let mut engine = self.engine(mode)?;
        let now = std::time::Instant::now();
        engine.feed(text, now, &mut out, &mut verdict)?;
        engine.finish(now, &mut out, &mut verdict)?;
        Ok((out, verdict))
    }
}

fn start_finder(d: &Draft) -> Result<StartFinder, MaskConfigError> {
    let anchored = |prefix: &str| -> Result<vs::Database, MaskConfigError> {
        let patterns: Vec<vs::Pattern> = d
            .patterns
            .iter()
            .map(|p| vs::Pattern {
                expression: format!("^{prefix}(?:{})", p.expr),
                flags: p.flags,
                id: 0,
            })
            .collect();
        vs::Database::compile(&patterns, vs::MODE_BLOCK).map_err(|e| {
            MaskConfigError::new(
                d.key.clone(),
                format!("cannot anchor the pattern: {}", e.message),
                "simplify the pattern",
            )
        })
    };
    Ok(StartFinder {
        with_context: anchored(r"[\x00-\xff]")?,
        at_text_start: anchored("")?,
        anywhere: d.anywhere,
        first: d.first,
    })
}

fn too_many() -> MaskConfigError {
    MaskConfigError::new("masking", "too many patterns", "split the literal lists")
}

/// Vectorscan's longest match for a pattern; unbounded or empty-matching patterns are errors.
pub(crate) fn regex_width(key: &str, expr: &str, flags: u32) -> Result<usize, MaskConfigError> {
    let info = vs::expression_info(expr, flags).map_err(|e| {
        MaskConfigError::new(
            key,
            format!("invalid pattern: {}", e.message),
            "check the syntax (vectorscan / PCRE subset: no lookaround, no backreferences)",
        )
    })?;
    if info.min_width == 0 {
        return Err(MaskConfigError::new(
            key,
            "the pattern can match the empty string",
            "require at least one character",
        ));
    }
    let Some(max) = info.max_width else {
        return Err(MaskConfigError::new(
            key,
            "the pattern has no longest match (it uses `+`, `*` or `{n,}`), so a stream could be held forever",
            "bound every repetition, e.g. `[a-z]{1,64}` instead of `[a-z]+`",
        ));
    };
    usize::try_from(max).map_err(|_| too_many())
}
