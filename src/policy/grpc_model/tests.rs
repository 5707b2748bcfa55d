use bytes::Bytes;

use super::*;
use crate::grpc::frame::MessageReader;
use crate::policy::model::model_from_grpc_infer;

/// What the scan must report for one framed message: `model_from_grpc_infer` on the whole of it.
fn expected(compressed: bool, msg: &[u8]) -> Named {
    if compressed {
        return Named::Compressed;
    }
    model_from_grpc_infer(msg).map_or(Named::Unknown, Named::Model)
}

/// Feeds `pieces` in order; the messages reported and the first error or the end result.
fn scan<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]>,
    max_message: u32,
    max_name: usize,
) -> (Vec<Named>, Result<(), FrameError>) {
    let mut scan = GrpcModelScan::new(max_message, max_name);
    let mut named = Vec::new();
    for piece in pieces {
        if let Err(e) = scan.feed(piece, |n| named.push(n)) {
            return (named, Err(e));
        }
    }
    let end = scan.finish();
    (named, end)
}

/// Scans `body` whole, with the limits the differential tests use (none that bite).
fn whole(body: &[u8]) -> (Vec<Named>, Result<(), FrameError>) {
    scan([body], u32::MAX, usize::MAX)
}

fn framed(msgs: &[(bool, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (compressed, msg) in msgs {
        out.push(u8::from(*compressed));
        out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        out.extend_from_slice(msg);
    }
    out
}

fn varint(v: u64) -> Vec<u8> {
    padded_varint(v, 0)
}

/// `v` in `extra` more bytes than it needs (non-minimal but legal while at most 10 bytes).
fn padded_varint(mut v: u64, extra: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    for _ in 0..extra.min(10 - out.len()) {
        *out.last_mut().unwrap() |= 0x80; // out is never empty: one byte was pushed above.
        out.push(0);
    }
    out
}

/// A protobuf field: `(field, wire type, payload already encoded for that wire type)`.
fn field(num: u64, wire: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = varint(num << 3 | wire);
    if wire == 2 {
        out.extend(varint(payload.len() as u64));
    }
    out.extend_from_slice(payload);
    out
}

/// A tiny deterministic PRNG (xorshift64), so the tests need no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    fn bytes(&mut self, len: u64) -> Vec<u8> {
        (0..len).map(|_| self.below(256) as u8).collect()
    }
}

/// One well-formed field: model names good and bad, field 1 of other wire types, and other
/// fields of every wire type, some of them a few KB long.
fn random_field(rng: &mut Rng) -> Vec<u8> {
    let names: &[&[u8]] = &[
        b"resnet",
        b"",
        b"llm-7b",
        "\u{e9}\u{6a21}\u{578b}".as_bytes(),
        b"a-name-that-is-thirty-two-bytes!",
        b"\xff",
        b"ab\xc3",
    ];
    let num = rng.pick(&[2, 3, 8, 15, 16, 2047, (1 << 29) - 1]);
    match rng.below(11) {
        0 | 1 => field(1, 2, rng.pick(names)),
        2 => {
            // A field-1 name whose key and length take more bytes than they need.
            let name = rng.pick(names);
            let mut out = padded_varint(1 << 3 | 2, rng.below(4) as usize);
            out.extend(padded_varint(name.len() as u64, rng.below(9) as usize));
            out.extend_from_slice(name);
            out
        }
        3 => match rng.below(3) {
            // Field 1 of another wire type: an unknown field to the server, skipped.
            0 => field(1, 0, &varint(7)),
            1 => field(1, 1, &rng.bytes(8)),
            _ => field(1, 5, &rng.bytes(4)),
        },
        4 => {
            let v = rng.pick(&[0, 1, 300, u64::MAX, 1 << 63]);
            field(num, 0, &varint(v))
        }
        5 => field(num, 1, &rng.bytes(8)),
        6 => field(num, 5, &rng.bytes(4)),
        7 => {
            let len = rng.below(20);
            field(num, 2, &rng.bytes(len))
        }
        8 => {
            let len = 1000 + rng.below(4000);
            field(num, 2, &rng.bytes(len))
        }
        9 => field(5, 2, &field(1, 2, b"nested-input-name")),
        _ => field(
            num,
            0,
            &padded_varint(rng.below(1 << 20), rng.below(6) as usize),
        ),
    }
}

/// An ending that makes a message malformed.
fn malformed_tail(rng: &mut Rng) -> Vec<u8> {
    let tails: &[&[u8]] = &[
        &[0x48, 0x80], // truncated varint value
        &[0x80],       // truncated key
        &[
            0x48, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01,
        ], // 11-byte varint
        &[
            0x48, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02,
        ], // 10th overflows
        &[0x0A, 0x05, b'a', b'b'], // name past end
        &[0x12, 0x7F, 1, 2, 3], // value past end
        &[
            0x12, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01,
        ], // huge length
        &[0x49, 0, 0, 0], // truncated i64
        &[0x4D, 0],    // truncated i32
        &[0x4B],
        &[0x4C],
        &[0x4E],
        &[0x4F],                         // wire types 3, 4, 6, 7
        &[0x02, 0x00],                   // field 0
        &[0x82, 0x80, 0x80, 0x80, 0x10], // field 2^29 + …
    ];
    rng.pick(tails).to_vec()
}

fn random_message(rng: &mut Rng) -> Vec<u8> {
    let mut msg = Vec::new();
    for _ in 0..rng.below(7) {
        msg.extend(random_field(rng));
    }
    if rng.below(4) == 0 {
        msg.extend(malformed_tail(rng));
        if rng.below(2) == 0 {
            msg.extend(random_field(rng));
        }
    }
    msg
}

fn random_body(rng: &mut Rng) -> (Vec<u8>, Vec<Named>) {
    let msgs: Vec<(bool, Vec<u8>)> = (0..1 + rng.below(5))
        .map(|_| (rng.below(8) == 0, random_message(rng)))
        .collect();
    let want = msgs.iter().map(|(c, m)| expected(*c, m)).collect();
    (framed(&msgs), want)
}

/// `body` cut into pieces of random sizes, mostly small, some larger than any field.
fn random_pieces<'a>(rng: &mut Rng, body: &'a [u8]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let max = rng.pick(&[3, 17, 300, 6000]);
        let (piece, tail) = rest.split_at((1 + rng.below(max) as usize).min(rest.len()));
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

#[test]
fn every_cut_of_generated_bodies_names_what_model_from_grpc_infer_names() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut seen = [0usize; 3];
    for round in 0..400 {
        let (body, want) = random_body(&mut rng);
        for n in &want {
            seen[match n {
                Named::Model(_) => 0,
                Named::Unknown => 1,
                Named::Compressed => 2,
            }] += 1;
        }
        let want = (want, Ok(()));
        assert_eq!(whole(&body), want, "whole, round {round}");
        assert_eq!(
            scan(body.chunks(1), u32::MAX, usize::MAX),
            want,
            "byte by byte, round {round}"
        );
        for _ in 0..4 {
            let pieces = random_pieces(&mut rng, &body);
            assert_eq!(scan(pieces, u32::MAX, usize::MAX), want, "round {round}");
        }
        if round < 200 {
            for at in 0..=body.len() {
                let (a, b) = body.split_at(at);
                assert_eq!(
                    scan([a, b], u32::MAX, usize::MAX),
                    want,
                    "cut at {at}, round {round}"
                );
            }
        }
    }
    // The generator must reach every verdict often, or the comparison proves little.
    assert!(seen.iter().all(|&n| n > 100), "verdicts seen: {seen:?}");
}

/// The framing half of the fuzz target's property: on valid bodies with a byte changed or the
/// tail cut off, the scan reports one verdict per message `MessageReader` reads, and fails or
/// ends exactly as it does.
#[test]
fn corrupted_bodies_fail_exactly_as_the_message_reader_does() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for round in 0..2000 {
        let (mut body, _) = random_body(&mut rng);
        match rng.below(3) {
            0 => {
                let at = rng.below(body.len() as u64) as usize;
                body[at] = rng.below(256) as u8;
            }
            1 => body.truncate(rng.below(body.len() as u64 + 1) as usize),
            _ => {}
        }
        let max = rng.pick(&[0, 20, 3000, u32::MAX]);
        let mut reader = MessageReader::new(max);
        reader.push(Bytes::copy_from_slice(&body));
        let mut want = (Vec::new(), Ok(()));
        loop {
            match reader.next_message() {
                Ok(Some(m)) => want.0.push(expected(m.compressed, &m.data)),
                Ok(None) => break want.1 = reader.finish(),
                Err(e) => break want.1 = Err(e),
            }
        }
        assert_eq!(scan([&body[..]], max, usize::MAX), want, "round {round}");
        let pieces = random_pieces(&mut rng, &body);
        assert_eq!(scan(pieces, max, usize::MAX), want, "round {round}");
    }
}

#[test]
fn a_small_max_name_only_ever_turns_a_name_into_unknown() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for _ in 0..500 {
        let (body, want) = random_body(&mut rng);
        let (got, end) = scan(random_pieces(&mut rng, &body), u32::MAX, 6);
        assert_eq!(end, Ok(()));
        assert_eq!(got.len(), want.len());
        for (got, want) in got.iter().zip(&want) {
            match want {
                Named::Model(s) if s.len() > 6 => assert_eq!(got, &Named::Unknown),
                _ => assert!(
                    got == want || *got == Named::Unknown,
                    "{got:?} for {want:?}"
                ),
            }
        }
    }
}

#[test]
fn a_name_longer_than_max_name_makes_its_message_unknown_wherever_it_is() {
    let short = field(1, 2, b"ok");
    let long = field(1, 2, b"much-too-long");
    let cases = [
        (field(1, 2, b"exactly8"), Named::Model("exactly8".into())),
        (field(1, 2, b"nine-long"), Named::Unknown),
        ([&long[..], &short[..]].concat(), Named::Unknown),
        ([&short[..], &long[..]].concat(), Named::Unknown),
        // Other fields may be of any length.
        (
            [&short[..], &field(2, 2, &[7; 100])[..]].concat(),
            Named::Model("ok".into()),
        ),
    ];
    for (msg, want) in cases {
        let body = framed(&[(false, msg)]);
        assert_eq!(scan(body.chunks(3), 1024, 8), (vec![want], Ok(())));
    }
}

#[test]
fn a_value_overrunning_its_message_is_malformed_and_the_next_message_still_reads() {
    // Field 1 declares 9 bytes, field 2 declares 127 and an i64 wants 8: each message has fewer.
    let overruns = [
        vec![0x0A, 0x09, b'a', b'b', b'c'],
        [&field(1, 2, b"m")[..], &[0x12, 0x7F, 1, 2]].concat(),
        [&field(1, 2, b"m")[..], &[0x49, 1, 2, 3]].concat(),
    ];
    for bad in overruns {
        let body = framed(&[
            (false, bad),
            (false, field(1, 2, b"next")),
            (false, field(1, 2, b"last")),
        ]);
        let want = vec![
            Named::Unknown,
            Named::Model("next".into()),
            Named::Model("last".into()),
        ];
        assert_eq!(whole(&body), (want.clone(), Ok(())));
        assert_eq!(scan(body.chunks(1), 64, 64), (want, Ok(())));
    }
}

#[test]
fn each_message_is_reported_as_soon_as_its_last_byte_is_fed() {
    let body = framed(&[
        (false, field(1, 2, b"a")),
        (false, Vec::new()),
        (true, field(1, 2, b"b")),
        (false, field(1, 2, b"c")),
    ]);
    let ends = [
        PREFIX_LEN + 3,
        2 * PREFIX_LEN + 3,
        3 * PREFIX_LEN + 6,
        body.len(),
    ];
    let mut scanner = GrpcModelScan::new(64, 64);
    let mut named = Vec::new();
    for (i, &b) in body.iter().enumerate() {
        scanner.feed(&[b], |n| named.push(n)).unwrap();
        let done = ends.iter().filter(|&&end| end <= i + 1).count();
        assert_eq!(named.len(), done, "after byte {i}");
    }
    assert_eq!(
        named,
        [
            Named::Model("a".into()),
            Named::Unknown,
            Named::Compressed,
            Named::Model("c".into())
        ]
    );
    assert_eq!(scanner.finish(), Ok(()));
}

#[test]
fn compressed_messages_are_compressed_whatever_they_hold() {
    let body = framed(&[
        (true, field(1, 2, b"hidden")),
        (true, Vec::new()),
        (true, vec![0xFF; 40]),
        (false, field(1, 2, b"plain")),
    ]);
    let want = vec![
        Named::Compressed,
        Named::Compressed,
        Named::Compressed,
        Named::Model("plain".into()),
    ];
    assert_eq!(scan(body.chunks(7), 64, 64), (want, Ok(())));
}

#[test]
fn bad_flags_and_oversized_lengths_fail_and_stay_failed() {
    for flag in [2u8, 0x80, 0xFF] {
        let mut body = framed(&[(false, field(1, 2, b"ok")), (false, field(1, 2, b"no"))]);
        body[PREFIX_LEN + 4] = flag;
        let mut scanner = GrpcModelScan::new(64, 64);
        let mut named = Vec::new();
        let err = scanner.feed(&body, |n| named.push(n));
        assert_eq!(err, Err(FrameError::BadFlag(flag)));
        assert_eq!(named, [Named::Model("ok".into())]);
        let later = framed(&[(false, field(1, 2, b"later"))]);
        assert_eq!(scanner.feed(&later, |n| named.push(n)), err);
        assert_eq!(scanner.finish(), err);
        assert_eq!(named.len(), 1);
    }
    // The flag is judged on its own byte, before the length arrives.
    assert_eq!(
        scan([&[9u8][..]], 64, 64),
        (vec![], Err(FrameError::BadFlag(9)))
    );

    let at_limit = framed(&[(false, vec![0x10, 0x01]), (false, vec![0; 17])]);
    let (named, end) = scan(at_limit.chunks(2), 16, 64);
    assert_eq!(named, [Named::Unknown]);
    let too_large = FrameError::TooLarge {
        declared: 17,
        max: 16,
    };
    assert_eq!(end, Err(too_large));
    // Only the prefix is needed to refuse it.
    let prefix = &at_limit[PREFIX_LEN + 2..2 * PREFIX_LEN + 2];
    assert_eq!(scan([prefix], 16, 64), (vec![], Err(too_large)));
}

#[test]
fn a_body_ending_inside_a_message_is_truncated_and_one_ending_between_is_not() {
    let body = framed(&[(false, field(1, 2, b"one")), (false, field(1, 2, b"two"))]);
    let first = PREFIX_LEN + 5;
    for (len, want) in [
        (0, Ok(())),
        (first, Ok(())),
        (body.len(), Ok(())),
        (
            3,
            Err(FrameError::Truncated {
                received: 3,
                expected: None,
            }),
        ),
        (
            first + PREFIX_LEN,
            Err(FrameError::Truncated {
                received: PREFIX_LEN,
                expected: Some(PREFIX_LEN + 5),
            }),
        ),
        (
            body.len() - 1,
            Err(FrameError::Truncated {
                received: PREFIX_LEN + 4,
                expected: Some(PREFIX_LEN + 5),
            }),
        ),
    ] {
        assert_eq!(scan(body[..len].chunks(2), 64, 64).1, want, "length {len}");
    }
}

#[test]
fn a_16_mib_tensor_is_skipped_in_64_kib_chunks_without_buffering() {
    const TENSOR: usize = 16 << 20;
    const CHUNK: usize = 64 << 10;
    // model_name, then raw_input_contents (field 7) holding the tensor, then the name again.
    let mut head = field(1, 2, b"big-model");
    head.extend(varint(7 << 3 | 2));
    head.extend(varint(TENSOR as u64));
    let tail = field(1, 2, b"big-model-2");
    let len = (head.len() + TENSOR + tail.len()) as u32;

    let mut scanner = GrpcModelScan::new(u32::MAX, 256);
    let mut named = Vec::new();
    let mut on = |n| named.push(n);
    scanner.feed(&[0], &mut on).unwrap();
    scanner.feed(&len.to_be_bytes(), &mut on).unwrap();
    scanner.feed(&head, &mut on).unwrap();
    let zeros = vec![0u8; CHUNK];
    for _ in 0..TENSOR / CHUNK {
        scanner.feed(&zeros, &mut on).unwrap();
        assert!(scanner.fields.name.capacity() <= 256);
    }
    scanner.feed(&tail, &mut on).unwrap();
    assert_eq!(scanner.finish(), Ok(()));
    assert_eq!(named, [Named::Model("big-model-2".into())]);
    assert!(scanner.fields.name.capacity() <= 256);
}
