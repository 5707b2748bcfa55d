//! Config errors that point at the file, line, column and key, and say how to fix it.

use std::fmt;
use std::ops::Range;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
    pub fix: String,
}

impl ConfigError {
    /// An error located at byte range `span` of `source`.
    pub fn at(
        file: &Path,
        source: &str,
        span: Option<Range<usize>>,
        message: &str,
        fix: &str,
    ) -> Self {
        let offset = span.map_or(0, |s| s.start).min(source.len());
        let before = &source[..offset];
        let line = before.matches('\n').count() + 1;
        let column = offset - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        ConfigError {
            file: file.display().to_string(),
            line,
            column,
            key: key_at(source, offset),
            message: message.to_owned(),
            fix: fix.to_owned(),
        }
    }

    /// An error about a dotted key (`masking.regex[2].pattern`) reported by a later compile
    /// step that has no source positions; the key's line is found by walking table headers.
    pub fn at_key(file: &Path, source: &str, dotted: &str, message: &str, fix: &str) -> Self {
        let offset = locate(source, dotted);
        let mut e = ConfigError::at(file, source, offset.map(|o| o..o), message, fix);
        e.key = dotted.to_owned();
        if offset.is_none() {
            (e.line, e.column) = (0, 0);
        }
        e
    }

    /// An error about the file as a whole (unreadable, missing sections).
    pub fn whole_file(file: &Path, message: String, fix: &str) -> Self {
        ConfigError {
            file: file.display().to_string(),
            line: 0,
            column: 0,
            key: String::new(),
            message,
            fix: fix.to_owned(),
        }
    }

    /// Splits a deserializer message of the form `what | fix: how` (see `config::values`) and
    /// supplies a fix for serde's own messages.
    pub fn from_toml(file: &Path, source: &str, e: &toml::de::Error) -> Self {
        // toml's messages can span lines ("invalid string\nexpected ..."): keep one line.
        let flat = e.message().trim().replace('\n', "; ");
        let raw = flat.as_str();
        let (message, fix) = match raw.split_once(" | fix: ") {
            Some((m, f)) => (m.to_owned(), f.to_owned()),
            None if raw.starts_with("unknown field") => (
                raw.to_owned(),
                "remove the key or correct its spelling; config/modelgate.toml lists every key"
                    .to_owned(),
            ),
            None if raw.starts_with("missing field") => (
                raw.to_owned(),
                "add the key; config/modelgate.toml shows it with an example".to_owned(),
            ),
            None if raw.starts_with("invalid type") => (
                raw.to_owned(),
                "use the value type shown in config/modelgate.toml".to_owned(),
            ),
            None => (
                raw.to_owned(),
                "check the TOML syntax at this position".to_owned(),
            ),
        };
        ConfigError::at(file, source, e.span(), &message, &fix)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)?;
        } else {
            write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
            if !self.key.is_empty() {
                write!(f, "key `{}`: ", self.key)?;
            }
            f.write_str(&self.message)?;
        }
        write!(f, "\n  fix: {}", self.fix)
    }
}

impl std::error::Error for ConfigError {}

/// A section's validation error before it is placed in the file: the dotted key, what is wrong
/// and how to fix it. [`ConfigError::at_key`] turns it into a located error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    pub key: String,
    pub message: String,
    pub fix: String,
}

impl KeyError {
    pub fn new(key: &str, message: &str, fix: &str) -> Self {
        KeyError {
            key: key.to_owned(),
            message: message.to_owned(),
            fix: fix.to_owned(),
        }
    }
}

/// Byte offset of `dotted`'s line: the longest table prefix that has a header (`[t]`, or the
/// n-th `[[t]]` for `t[n]`), then the first remaining key inside that table, else the header.
fn locate(source: &str, dotted: &str) -> Option<usize> {
    let parts: Vec<&str> = dotted.split('.').collect();
    for split in (1..parts.len()).rev() {
        let (table, rest) = parts.split_at(split);
        let table = table.join(".");
        let (name, index) = match table.rsplit_once('[') {
            Some((n, i)) => (n.to_owned(), i.trim_end_matches(']').parse::<usize>().ok()),
            None => (table.clone(), None),
        };
        let header = match index {
            Some(_) => format!("[[{name}]]"),
            None => format!("[{name}]"),
        };
        let mut seen = 0;
        let mut offset = 0;
        let mut found = None;
        for line in source.split_inclusive('\n') {
            if line.trim() == header {
                if index.is_none_or(|i| i == seen) {
                    found = Some(offset);
                    break;
                }
                seen += 1;
            }
            offset += line.len();
        }
        let Some(start) = found else { continue };
        let key = rest[0].split('[').next().unwrap_or(rest[0]);
        let mut lines = source[start..].split_inclusive('\n');
        let mut at = start + lines.next().map_or(0, str::len);
        for line in lines {
            let trimmed = line.trim_start();
            if trimmed.starts_with('[') {
                break;
            }
            if trimmed.split(['=', ' ']).next() == Some(key) {
                return Some(at + (line.len() - trimmed.len()));
            }
            at += line.len();
        }
        return Some(start);
    }
    None
}

/// The dotted key at `offset`: the enclosing table header (with the index of an array-of-tables
/// entry) plus the key on that line, e.g. `route[1].upstream`.
fn key_at(source: &str, offset: usize) -> String {
    let line_start = source[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = source[line_start..].lines().next().unwrap_or("");
    let key = line.split_once('=').map(|(k, _)| k.trim()).unwrap_or("");
    let mut table = String::new();
    let mut counts: Vec<(String, usize)> = Vec::new();
    for l in source[..line_start].lines() {
        let l = l.trim();
        if let Some(name) = l.strip_prefix("[[").and_then(|r| r.split_once("]]")) {
            let name = name.0.trim().to_owned();
            let n = match counts.iter_mut().find(|(c, _)| *c == name) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    counts.push((name.clone(), 0));
                    0
                }
            };
            table = format!("{name}[{n}]");
        } else if let Some(name) = l.strip_prefix('[').and_then(|r| r.split_once(']')) {
            table = name.0.trim().to_owned();
        }
    }
    match (table.is_empty(), key.is_empty()) {
        (_, true) if line.trim_start().starts_with('[') => String::new(),
        (true, _) => key.to_owned(),
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_line_of_a_dotted_key_inside_an_array_of_tables() {
        let src = "[masking]\nmax_hold_bytes = 9\n[[masking.regex]]\nid = \"a\"\n[[masking.regex]]\nid = \"b\"\npattern = \"x\"\n";
        let e = ConfigError::at_key(Path::new("f"), src, "masking.regex[1].pattern", "m", "f");
        assert_eq!(e.line, 7);
        let e = ConfigError::at_key(Path::new("f"), src, "masking.max_hold_bytes", "m", "f");
        assert_eq!(e.line, 2);
    }

    #[test]
    fn names_the_key_with_its_array_index() {
        let src = "[server]\nworkers = 1\n[[route]]\nid = \"a\"\n[[route]]\nid = \"b\"\nupstream = \"x\"\n";
        let off = src.find("upstream").unwrap();
        let e = ConfigError::at(
            Path::new("f.toml"),
            src,
            Some(off..off + 3),
            "bad",
            "fix it",
        );
        assert_eq!((e.line, e.column), (7, 1));
        assert_eq!(e.key, "route[1].upstream");
    }
}
