//! Masking must not depend on where the text is cut: for any input, masking it in pieces
//! (sizes drawn from the first bytes) gives exactly the bytes of masking it whole, for the
//! plain engine and for the SSE filter. And it never panics.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use modelgate::masking::{filter_for, Action, LiteralList, Masker, MaskingSection, Mode, Verdict};

fn masker() -> &'static Arc<Masker> {
    static MASKER: OnceLock<Arc<Masker>> = OnceLock::new();
    MASKER.get_or_init(|| {
        let section = MaskingSection {
            hash_key: Some("fuzz".into()),
            literals: vec![LiteralList {
                id: "codenames".into(),
                category: None,
                action: Action::Hash,
                caseless: true,
                values: vec!["Project Nightingale".into(), "acme".into(), "a b".into()],
                file: None,
            }],
            ..MaskingSection::default()
        };
        Arc::new(Masker::compile(&section, Path::new(".")).expect("fuzz config compiles"))
    })
}

fn engine(text: &[u8], sizes: &[u8]) -> Vec<u8> {
    let mut engine = masker().engine(Mode::Enforce).expect("opens");
    let (mut out, mut verdict, now) = (Vec::new(), Verdict::default(), Instant::now());
    let mut rest = text;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(usize::from(size).max(1).min(rest.len()));
        engine
            .feed(piece, now, &mut out, &mut verdict)
            .expect("no block detector");
        rest = tail;
    }
    engine
        .finish(now, &mut out, &mut verdict)
        .expect("no block detector");
    out
}

fn sse(body: &[u8], sizes: &[u8]) -> Vec<u8> {
    let mut filter = filter_for(masker(), Some(b"text/event-stream"), Mode::Enforce);
    let mut out = BytesMut::new();
    let mut rest = body;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(usize::from(size).max(1).min(rest.len()));
        filter.on_chunk(piece, &mut out).expect("no block detector");
        rest = tail;
    }
    filter.on_end(&mut out).expect("no block detector");
    out.to_vec()
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (sizes, text) = rest.split_at(usize::from(n % 8).min(rest.len()));
    if sizes.is_empty() {
        return;
    }
    assert_eq!(
        engine(text, sizes),
        engine(text, &[255]),
        "engine output depends on the cut"
    );
    // The text as the content of chat events, one event per piece.
    let mut body = Vec::new();
    for piece in text.chunks(usize::from(sizes[0] % 16) + 1) {
        let content = String::from_utf8_lossy(piece);
        let event = serde_json::json!({"choices": [{"index": 0, "delta": {"content": content}}]});
        body.extend_from_slice(format!("data: {event}\n\n").as_bytes());
    }
    assert_eq!(
        sse(&body, sizes),
        sse(&body, &[255]),
        "SSE output depends on the cut"
    );
});
