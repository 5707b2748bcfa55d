//! How much of the tail to hold back.
//!
//! Vectorscan reports a match only once it has seen its last byte (plus one byte for a
//! trailing `\b` or `$`), and says nothing about matches still in progress. So after each chunk
//! the engine asks: what is the earliest position where a match could start that has not ended
//! yet? Bytes before it are final and go out at once.
//!
//! For each detector we know (a) its longest match and (b) two over-approximated byte sets:
//! bytes that can appear anywhere in a match, and bytes a match can start with. A future match
//! that starts at `s` must have only "anywhere" bytes between `s` and the end of the text seen
//! so far, start with a "first" byte, and not be longer than its bound. Walking back from the
//! end with one bitmask of still-possible detector classes finds the earliest such `s` in a few
//! instructions per byte, and usually stops at the first space. Detectors beyond 64 share the
//! last class (a union, still conservative).
//!
//! Literal lists are checked exactly on top of that: a held run must also be a prefix of one of
//! the list's strings (a binary search in the sorted list per candidate start), so a list with
//! multi-word strings does not hold every lowercase word.
//!
//! Over-approximating only ever holds more, never releases a byte that could be masked.

use std::cmp::Ordering;

/// A set of bytes.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ByteSet([u64; 4]);

/// Per-byte bitmasks of detector classes, for the backward walk.
#[derive(Debug, Clone)]
pub(crate) struct HoldTable {
    anywhere: Box<[u64; 256]>,
    first: Box<[u64; 256]>,
    /// Classes whose candidates must also pass a prefix check.
    prefix_mask: u64,
    prefixes: Vec<Option<PrefixSet>>,
    /// `alive_at[k]`: classes whose longest match is at least `k` bytes.
    alive_at: Vec<u64>,
}

/// A literal list, sorted (ASCII-lowercased when caseless), for prefix checks.
#[derive(Debug, Clone)]
pub(crate) struct PrefixSet {
    sorted: Vec<Box<[u8]>>,
    caseless: bool,
}

/// One detector's hold description: byte classes, longest match, optional literal list.
pub(crate) struct HoldSpec {
    pub anywhere: ByteSet,
    pub first: ByteSet,
    pub longest: usize,
    pub literals: Option<PrefixSet>,
}

const CLASSES: usize = 64;

// === impl ByteSet ===

impl ByteSet {
    pub(crate) const ALL: ByteSet = ByteSet([u64::MAX; 4]);

    /// Parses a class body like `A-Za-z0-9._%+-` (a trailing or leading `-` is literal;
    /// `\xHH`, `\s` and `\\` are understood).
    pub(crate) fn parse(spec: &str) -> ByteSet {
        let mut bytes = Vec::new();
        let raw = spec.as_bytes();
        let mut i = 0;
        while i < raw.len() {
            if raw[i] == b'\\' && i + 1 < raw.len() {
                match raw[i + 1] {
                    b's' => bytes.extend_from_slice(b" \t\r\n\x0b\x0c"),
                    b'x' if i + 3 < raw.len() => {
                        let hex = std::str::from_utf8(&raw[i + 2..i + 4]).unwrap_or("00");
                        bytes.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                        i += 2;
                    }
                    other => bytes.push(other),
                }
                i += 2;
                continue;
            }
            if i + 2 < raw.len() && raw[i + 1] == b'-' {
                bytes.extend(raw[i]..=raw[i + 2]);
                i += 3;
                continue;
            }
            bytes.push(raw[i]);
            i += 1;
        }
        ByteSet::of(&bytes)
    }

    pub(crate) fn of(bytes: &[u8]) -> ByteSet {
        let mut set = ByteSet::default();
        for &b in bytes {
            set.insert(b);
        }
        set
    }

    pub(crate) fn insert(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }

    pub(crate) fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }

    /// Adds the other ASCII case of every letter.
    pub(crate) fn caseless(mut self) -> ByteSet {
        for b in b'a'..=b'z' {
            if self.contains(b) || self.contains(b.to_ascii_uppercase()) {
                self.insert(b);
                self.insert(b.to_ascii_uppercase());
            }
        }
        self
    }

    pub(crate) fn union(self, other: ByteSet) -> ByteSet {
        let mut out = self;
        for (a, b) in out.0.iter_mut().zip(other.0) {
            *a |= b;
        }
        out
    }
}

impl std::fmt::Debug for ByteSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = (0..=255u8).filter(|b| self.contains(*b)).count();
        write!(f, "ByteSet({n} bytes)")
    }
}

// === impl HoldTable ===

impl HoldTable {
    /// Builds the table from each detector's description.
    pub(crate) fn new(detectors: &[HoldSpec]) -> HoldTable {
        let mut anywhere = Box::new([0u64; 256]);
        let mut first = Box::new([0u64; 256]);
        let mut longest = [0usize; CLASSES];
        let mut prefixes: Vec<Option<PrefixSet>> = vec![None; CLASSES];
        let mut prefix_mask = 0u64;
        for (i, spec) in detectors.iter().enumerate() {
            let class = i.min(CLASSES - 1);
            let bit = 1u64 << class;
            for b in 0..=255u8 {
                if spec.anywhere.contains(b) {
                    anywhere[usize::from(b)] |= bit;
                }
                if spec.first.contains(b) {
                    first[usize::from(b)] |= bit;
                }
            }
            longest[class] = longest[class].max(spec.longest);
            // The shared last class cannot use one detector's list: classes only, there.
            let shared = class == CLASSES - 1 && detectors.len() > CLASSES;
            if !shared {
                if let Some(set) = &spec.literals {
                    prefixes[class] = Some(set.clone());
                    prefix_mask |= bit;
                }
            }
        }
        let max = longest.iter().copied().max().unwrap_or(0);
        let alive_at = (0..=max)
            .map(|k| {
                (0..CLASSES)
                    .filter(|&c| longest[c] >= k)
                    .fold(0u64, |m, c| m | 1 << c)
            })
            .collect();
        HoldTable {
            anywhere,
            first,
            prefix_mask,
            prefixes,
            alive_at,
        }
    }

    /// The longest match of any detector: the most the engine can ever hold.
    pub(crate) fn max_width(&self) -> usize {
        self.alive_at.len().saturating_sub(1)
    }

    /// How many bytes at the end of `tail` could still begin a match. `tail` is the unreleased
    /// text; the answer is at most `tail.len()` and at most the longest match.
    pub(crate) fn hold_len(&self, tail: &[u8]) -> usize {
        let mut alive = u64::MAX;
        let mut hold = 0;
        for (k, &b) in tail.iter().rev().enumerate() {
            let dist = k + 1;
            let Some(&len_ok) = self.alive_at.get(dist) else {
                break;
            };
            alive &= self.anywhere[usize::from(b)] & len_ok;
            if alive == 0 {
                break;
            }
            let starts = alive & self.first[usize::from(b)];
            if starts != 0 && self.may_start(starts, &tail[tail.len() - dist..]) {
                hold = dist;
            }
        }
        hold
    }
}

// === impl PrefixSet ===

impl PrefixSet {
    pub(crate) fn new(values: impl IntoIterator<Item = Vec<u8>>, caseless: bool) -> PrefixSet {
        let mut sorted: Vec<Box<[u8]>> = values
            .into_iter()
            .map(|v| if caseless { v.to_ascii_lowercase() } else { v }.into_boxed_slice())
            .collect();
        sorted.sort_unstable();
        sorted.dedup();
        PrefixSet { sorted, caseless }
    }

    /// Whether some string of the list starts with `text`.
    pub(crate) fn has_prefix(&self, text: &[u8]) -> bool {
        let fold = |b: u8| {
            if self.caseless {
                b.to_ascii_lowercase()
            } else {
                b
            }
        };
        // The first string not below `text` starts with it, if any string does.
        let at = self.sorted.partition_point(|lit| {
            let common = lit
                .iter()
                .zip(text)
                .map(|(&a, &b)| a.cmp(&fold(b)))
                .find(|o| *o != Ordering::Equal);
            common.unwrap_or(lit.len().cmp(&text.len())) == Ordering::Less
        });
        self.sorted.get(at).is_some_and(|lit| {
            lit.len() >= text.len() && lit.iter().zip(text).all(|(&a, &b)| a == fold(b))
        })
    }
}

impl HoldTable {
    /// Whether a match of one of the `starts` classes could begin with `run`.
    fn may_start(&self, starts: u64, run: &[u8]) -> bool {
        if starts & !self.prefix_mask != 0 {
            return true;
        }
        let mut classes = starts;
        while classes != 0 {
            let class = classes.trailing_zeros() as usize;
            classes &= classes - 1;
            if self.prefixes[class]
                .as_ref()
                .is_none_or(|set| set.has_prefix(run))
            {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email_like() -> HoldTable {
        HoldTable::new(&[HoldSpec {
            anywhere: ByteSet::parse("A-Za-z0-9.@"),
            first: ByteSet::parse("A-Za-z0-9"),
            longest: 20,
            literals: None,
        }])
    }

    #[test]
    fn the_hold_stops_at_a_byte_no_match_can_contain() {
        let t = email_like();
        assert_eq!(t.hold_len(b"write to bob@exa"), 7);
        assert_eq!(t.hold_len(b"write to "), 0);
    }

    #[test]
    fn the_hold_never_exceeds_the_longest_match() {
        let t = email_like();
        assert_eq!(t.hold_len(&[b'a'; 100]), 20);
    }

    #[test]
    fn a_held_run_must_begin_with_a_first_byte() {
        let t = email_like();
        assert_eq!(t.hold_len(b" .@.x"), 1);
    }

    #[test]
    fn a_literal_list_holds_only_prefixes_of_its_strings() {
        let set = PrefixSet::new([b"Project Nightingale".to_vec(), b"blue".to_vec()], true);
        let t = HoldTable::new(&[HoldSpec {
            anywhere: ByteSet::parse("A-Za-z\\x20"),
            first: ByteSet::parse("PpBb"),
            longest: 19,
            literals: Some(set),
        }]);
        assert_eq!(t.hold_len(b"see the project nig"), "project nig".len());
        assert_eq!(t.hold_len(b"a bright blu"), 3);
        assert_eq!(t.hold_len(b"a bright boat"), 0);
    }

    #[test]
    fn class_specs_parse_ranges_escapes_and_literal_dashes() {
        let s = ByteSet::parse("a-c\\x20-");
        assert!(s.contains(b'b') && s.contains(b' ') && s.contains(b'-'));
        assert!(!s.contains(b'd'));
    }
}
