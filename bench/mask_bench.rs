//! mask-bench: masking throughput per core (load `mask` in /work/shared/BENCH.md).
//!
//! ```text
//! cargo run --release --example mask-bench [-- --mib 2 --secs 0.4]
//! ```
//!
//! Built-in detectors + 1000 literals, chunk sizes 16 B / 256 B / 4 KiB / 64 KiB, on English
//! text and on OpenAI SSE JSON, one thread. Columns:
//! - `engine`: modelgate's streaming engine (vectorscan streaming, hold-back, starts found
//!   afterwards, masking applied) — the real per-byte cost of masking a plain body.
//! - `vs raw`: the vectorscan stream scan alone (the floor of `engine`).
//! - `vs SOM`: the same scan with start-of-match tracking in streaming mode
//!   (`HS_FLAG_SOM_LEFTMOST` + `HS_MODE_SOM_HORIZON_LARGE`) — the alternative to finding starts
//!   afterwards. Patterns vectorscan refuses to compile with SOM are dropped (and listed).
//! - `regex+ac`: the pure-Rust way to do the same job: `regex::bytes::RegexSet` for the
//!   built-ins + `aho-corasick` for the literals, re-scanning a 256-byte overlap with each
//!   chunk (they cannot carry state across chunks), `find_iter` on the patterns the set hit.
//! - `sse filter`: the whole SSE path (event parsing, JSON, per-choice engines), SSE corpus only.
//!
//! Figures are MB/s (10^6 bytes of input per second). Benchmarks print; they never fail.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aho_corasick::AhoCorasick;
use bytes::BytesMut;
use modelgate::masking::{
    filter_for, vs, Action, LiteralList, Masker, MaskingSection, Mode, Verdict,
};
use regex::bytes::{Regex, RegexSet};

const CHUNKS: [usize; 4] = [16, 256, 4096, 65536];
const OVERLAP: usize = 256;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: f64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let size = (arg("--mib", 2.0) * 1024.0 * 1024.0) as usize;
    let budget = Duration::from_secs_f64(arg("--secs", 0.4));

    let uptime = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("mask-bench  loadavg: {}", uptime.trim());
    let literals = literals(1000);
    let masker = masker(&literals);
    println!(
        "detectors: {} (built-ins + 1000 literals), longest match {} B",
        masker.detector_ids().count(),
        masker.longest_match()
    );

    let mut patterns: Vec<(String, u32)> = Masker::builtin_patterns()
        .map(|(_, p)| (p.to_string(), 0))
        .collect();
    patterns.extend(literals.iter().map(|l| (escape(l), 0)));
    let raw_db = Arc::new(compile(&patterns, vs::MODE_STREAM, 0).0);
    let (som_db, refused) = compile(
        &patterns,
        vs::MODE_STREAM | vs::MODE_SOM_HORIZON_LARGE,
        vs::SOM_LEFTMOST,
    );
    let som_db = Arc::new(som_db);
    println!(
        "vs SOM: vectorscan refused SOM for {} pattern(s): {}",
        refused.len(),
        refused.join(" | ")
    );

    let set = RegexSet::new(Masker::builtin_patterns().map(|(_, p)| p))
        .expect("built-ins are valid regex-crate syntax");
    let regexes: Vec<Regex> = Masker::builtin_patterns()
        .map(|(_, p)| Regex::new(p).expect("valid"))
        .collect();
    let ac = AhoCorasick::new(&literals).expect("literals build");

    if args.iter().any(|a| a == "--try-db") {
        // Candidate database layouts, each with the 1000 literals, 4 KiB chunks, English and
        // SSE JSON: MASK_DB holds layouts separated by blank lines, one pattern per line.
        let layouts = std::env::var("MASK_DB").unwrap_or_default();
        let lits: Vec<(String, u32)> = literals.iter().map(|l| (escape(l), 0)).collect();
        let mut dbs = vec![("today".to_string(), patterns.clone())];
        for (i, layout) in layouts.split("\n\n").enumerate() {
            let mut pats: Vec<(String, u32)> = layout
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| (l.to_string(), 0))
                .collect();
            pats.extend(lits.iter().cloned());
            dbs.push((format!("layout {}", i + 1), pats));
        }
        let en = english(size, &literals);
        let js = sse(size, &literals);
        for (name, pats) in dbs {
            let (db, refused) = compile(&pats, vs::MODE_STREAM, 0);
            let db = Arc::new(db);
            println!(
                "{name:>10}: {} patterns, English {:>6.0} MB/s, SSE JSON {:>6.0} MB/s {}",
                pats.len(),
                rate(budget, &en, 4096, || scan_only(&db)),
                rate(budget, &js, 4096, || scan_only(&db)),
                if refused.is_empty() {
                    String::new()
                } else {
                    format!("refused: {}", refused.join(" | "))
                }
            );
        }
        return;
    }

    if args.iter().any(|a| a == "--per-pattern") {
        // Where the scan time goes: each built-in alone, and the literals alone, 4 KiB chunks.
        let corpus = english(size, &literals);
        let mut singles: Vec<(String, Vec<(String, u32)>)> = Masker::builtin_patterns()
            .map(|(id, p)| (id.to_string(), vec![(p.to_string(), 0)]))
            .collect();
        let builtins: Vec<(String, u32)> = Masker::builtin_patterns()
            .map(|(_, p)| (p.to_string(), 0))
            .collect();
        for skip in 0..builtins.len() {
            let mut without = builtins.clone();
            let gone = without.remove(skip);
            singles.push((
                format!("all but {}", &gone.0[..gone.0.len().min(8)]),
                without,
            ));
        }
        singles.push(("all built-ins".into(), builtins));
        singles.push((
            "1000 literals".into(),
            literals.iter().map(|l| (escape(l), 0)).collect(),
        ));
        // Candidate rewrites to try, one per line.
        for p in std::env::var("MASK_TRY")
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
        {
            singles.push((p.chars().take(16).collect(), vec![(p.to_string(), 0)]));
        }
        let all: Vec<(String, u32)> = singles
            .iter()
            .take(singles.len())
            .flat_map(|(_, p)| p.clone())
            .collect();
        singles.push(("everything".into(), all));
        for (id, pats) in singles {
            let db = Arc::new(compile(&pats, vs::MODE_STREAM, 0).0);
            println!(
                "{id:>16} {:>8.0} MB/s",
                rate(budget, &corpus, 4096, || scan_only(&db))
            );
        }
        return;
    }

    for (name, corpus) in [
        ("English text", english(size, &literals)),
        ("SSE JSON", sse(size, &literals)),
    ] {
        println!(
            "\n{name}, {:.1} MiB, MB/s on one core",
            corpus.len() as f64 / 1048576.0
        );
        println!(
            "{:>7} {:>9} {:>9} {:>9} {:>9} {:>11} {:>9}",
            "chunk", "engine", "vs raw", "vs SOM", "regex+ac", "sse filter", "engine÷"
        );
        for chunk in CHUNKS {
            let engine = rate(budget, &corpus, chunk, || engine_run(&masker));
            let raw = rate(budget, &corpus, chunk, || scan_only(&raw_db));
            let som = rate(budget, &corpus, chunk, || scan_only(&som_db));
            let pure = rate(budget, &corpus, chunk, || pure_rust(&set, &regexes, &ac));
            let filter = if name == "SSE JSON" {
                format!(
                    "{:>11.0}",
                    rate(budget, &corpus, chunk, || sse_run(&masker))
                )
            } else {
                format!("{:>11}", "-")
            };
            println!(
                "{chunk:>7} {engine:>9.0} {raw:>9.0} {som:>9.0} {pure:>9.0} {filter} {:>8.1}×",
                engine / pure
            );
        }
    }
}

/// Feeds `corpus` in `chunk`-byte pieces to a fresh state from `fresh` until `budget` is
/// spent (whole passes, at least one); returns MB/s.
fn rate<S>(budget: Duration, corpus: &[u8], chunk: usize, mut fresh: impl FnMut() -> S) -> f64
where
    S: Feeder,
{
    let started = Instant::now();
    let mut bytes = 0usize;
    while bytes == 0 || started.elapsed() < budget {
        let mut state = fresh();
        for piece in corpus.chunks(chunk) {
            state.feed(piece);
            bytes += piece.len();
        }
        state.end();
    }
    bytes as f64 / started.elapsed().as_secs_f64() / 1e6
}

trait Feeder {
    fn feed(&mut self, piece: &[u8]);
    fn end(&mut self) {}
}

struct EngineRun(modelgate::masking::Engine, Vec<u8>, Verdict);
impl Feeder for EngineRun {
    fn feed(&mut self, piece: &[u8]) {
        self.1.clear();
        self.0
            .feed(piece, Instant::now(), &mut self.1, &mut self.2)
            .expect("no block detectors");
    }
    fn end(&mut self) {
        self.0
            .finish(Instant::now(), &mut self.1, &mut self.2)
            .expect("no block detectors");
    }
}
fn engine_run(masker: &Arc<Masker>) -> EngineRun {
    EngineRun(
        masker.engine(Mode::Enforce).expect("opens"),
        Vec::new(),
        Verdict::default(),
    )
}

struct ScanRun(vs::Stream, u64);
impl Feeder for ScanRun {
    fn feed(&mut self, piece: &[u8]) {
        let count = &mut self.1;
        self.0.scan(piece, |_, _, _| *count += 1).expect("scans");
    }
}
fn scan_only(db: &Arc<vs::Database>) -> ScanRun {
    ScanRun(vs::Stream::open(db).expect("opens"), 0)
}

struct PureRun<'a> {
    set: &'a RegexSet,
    regexes: &'a [Regex],
    ac: &'a AhoCorasick,
    window: Vec<u8>,
    found: usize,
}
impl Feeder for PureRun<'_> {
    fn feed(&mut self, piece: &[u8]) {
        // Keep the last OVERLAP bytes so matches across the seam are seen (and re-scanned).
        let keep = self.window.len().min(OVERLAP);
        self.window.drain(..self.window.len() - keep);
        self.window.extend_from_slice(piece);
        for i in self.set.matches(&self.window).iter() {
            self.found += self.regexes[i].find_iter(&self.window).count();
        }
        self.found += self.ac.find_iter(&self.window).count();
    }
}
fn pure_rust<'a>(set: &'a RegexSet, regexes: &'a [Regex], ac: &'a AhoCorasick) -> PureRun<'a> {
    PureRun {
        set,
        regexes,
        ac,
        window: Vec::new(),
        found: 0,
    }
}

struct SseRun(Box<dyn modelgate::masking::BodyFilter>, BytesMut);
impl Feeder for SseRun {
    fn feed(&mut self, piece: &[u8]) {
        self.1.clear();
        self.0
            .on_chunk(piece, &mut self.1)
            .expect("no block detectors");
    }
    fn end(&mut self) {
        self.0.on_end(&mut self.1).expect("no block detectors");
    }
}
fn sse_run(masker: &Arc<Masker>) -> SseRun {
    SseRun(
        filter_for(masker, Some(b"text/event-stream"), Mode::Enforce),
        BytesMut::new(),
    )
}

fn masker(literals: &[String]) -> Arc<Masker> {
    let section = MaskingSection {
        literals: vec![LiteralList {
            id: "codenames".into(),
            category: Some("internal".into()),
            action: Action::Redact,
            caseless: false,
            values: literals.to_vec(),
            file: None,
        }],
        ..MaskingSection::default()
    };
    Arc::new(Masker::compile(&section, Path::new(".")).expect("bench config compiles"))
}

/// Compiles what vectorscan accepts; returns the refused patterns' prefixes.
fn compile(patterns: &[(String, u32)], mode: u32, flags: u32) -> (vs::Database, Vec<String>) {
    let mut accepted: Vec<vs::Pattern> = patterns
        .iter()
        .enumerate()
        .map(|(i, (p, _))| vs::Pattern {
            expression: p.clone(),
            flags,
            id: i as u32,
        })
        .collect();
    let mut refused = Vec::new();
    loop {
        match vs::Database::compile(&accepted, mode) {
            Ok(db) => return (db, refused),
            Err(e) => {
                let Some(i) = e.pattern.filter(|&i| i < accepted.len()) else {
                    panic!("compile failed: {e:?}")
                };
                let p = accepted.remove(i);
                refused.push(format!(
                    "{}… ({})",
                    &p.expression[..p.expression.len().min(24)],
                    e.message
                ));
            }
        }
    }
}

fn escape(literal: &str) -> String {
    literal
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

/// Deterministic pseudo-random source (splitmix64).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
    "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there",
    "been", "if", "more", "when", "will", "would", "who", "so", "no", "model", "response",
    "gateway", "request", "token", "stream", "server", "answer", "question", "example", "number",
    "2024",
];

fn literals(n: usize) -> Vec<String> {
    let mut rng = Rng(1);
    let syll = [
        "ka", "lo", "mi", "ne", "ru", "ta", "vo", "zen", "qua", "rix", "dor", "fel",
    ];
    (0..n)
        .map(|i| {
            let word: String = (0..3 + rng.below(3))
                .map(|_| syll[rng.below(syll.len())])
                .collect();
            if i % 3 == 0 {
                format!("Project {word}")
            } else {
                format!("{word}-{i}")
            }
        })
        .collect()
}

fn sentence(rng: &mut Rng, literals: &[String], out: &mut String) {
    for _ in 0..8 + rng.below(10) {
        out.push_str(WORDS[rng.below(WORDS.len())]);
        out.push(' ');
    }
    // About one secret per 2 KiB.
    match rng.below(24) {
        0 => out.push_str("jane.doe@example.com "),
        1 => out.push_str("4111 1111 1111 1111 "),
        2 => {
            out.push_str(&literals[rng.below(literals.len())]);
            out.push(' ');
        }
        _ => {}
    }
    out.push_str(". ");
}

fn english(size: usize, literals: &[String]) -> Vec<u8> {
    let mut rng = Rng(2);
    let mut text = String::with_capacity(size + 256);
    while text.len() < size {
        sentence(&mut rng, literals, &mut text);
    }
    text.into_bytes()
}

fn sse(size: usize, literals: &[String]) -> Vec<u8> {
    let mut rng = Rng(3);
    let mut body = String::with_capacity(size + 512);
    let mut text = String::new();
    while body.len() < size {
        if text.is_empty() {
            sentence(&mut rng, literals, &mut text);
        }
        let take = text
            .char_indices()
            .map(|(i, _)| i)
            .nth(2 + rng.below(5))
            .unwrap_or(text.len());
        let piece: String = text.drain(..take).collect();
        let event = serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]});
        body.push_str(&format!("data: {event}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    body.into_bytes()
}
