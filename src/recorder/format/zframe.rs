//! Walking a zstd frame's block headers (RFC 8878 §3.1) without decoding anything: where a
//! streamed record's frame ends, or, when the file ends first, how much of it is whole blocks.
//!
//! A streamed record has no length field (it is written while its length is still unknown), so
//! its end is the frame's own end: the block marked last, then the checksum. Pure and total.

/// zstd caps a block's content at 128 KiB whatever the window.
const MAX_BLOCK: usize = 128 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// The frame ends within the input; its length.
    Complete(usize),
    /// The input ends inside the frame. `whole`: bytes up to the end of the last complete
    /// block (0 when not even the first block is complete); `need`: the input length that
    /// would complete the next piece (header, block or checksum).
    Open { whole: usize, need: usize },
    /// Not a frame we wrote: `whole` bytes of complete blocks come before the problem (0 when
    /// the header is the problem).
    Invalid { whole: usize, why: &'static str },
}

pub fn extent(buf: &[u8]) -> Extent {
    let have = buf.len().min(4);
    if buf[..have] != super::ZSTD_MAGIC[..have] {
        return invalid(0, "not a zstd frame");
    }
    let Some(&fhd) = buf.get(4) else {
        return Extent::Open { whole: 0, need: 5 };
    };
    if fhd & 0x08 != 0 {
        return invalid(0, "reserved bit set in the frame header");
    }
    if fhd & 0x04 == 0 {
        // Ours always carry one; without it an edited block would go unnoticed.
        return invalid(0, "frame without a content checksum");
    }
    let single_segment = fhd & 0x20 != 0;
    let checksum = 4;
    let dict_id = [0, 1, 2, 4][usize::from(fhd & 3)];
    let content_size = match fhd >> 6 {
        0 => usize::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let mut pos = 5 + usize::from(!single_segment) + dict_id + content_size;
    let mut whole = 0;
    loop {
        let Some(h) = buf.get(pos..pos + 3) else {
            return Extent::Open {
                whole,
                need: pos + 3,
            };
        };
        let header = u32::from(h[0]) | u32::from(h[1]) << 8 | u32::from(h[2]) << 16;
        let size = (header >> 3) as usize;
        let last = header & 1 == 1;
        let body = match (header >> 1) & 3 {
            // zstd never writes an empty block except to end a frame; a run of them is what a
            // zero-filled tail (power loss) looks like.
            0 | 1 if size == 0 && !last => return invalid(whole, "empty block"),
            0 | 2 if size <= MAX_BLOCK => size,
            1 if size <= MAX_BLOCK => 1,
            3 => return invalid(whole, "reserved block type"),
            _ => return invalid(whole, "block larger than zstd allows"),
        };
        let end = pos + 3 + body;
        if last {
            // The last block counts only with its checksum: a frame cut between them was cut
            // in the middle of the write that ended it.
            let end = end + checksum;
            return if buf.len() < end {
                Extent::Open { whole, need: end }
            } else {
                Extent::Complete(end)
            };
        }
        if buf.len() < end {
            return Extent::Open { whole, need: end };
        }
        pos = end;
        whole = end;
    }
}

fn invalid(whole: usize, why: &'static str) -> Extent {
    Extent::Invalid { whole, why }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streamed(parts: &[&[u8]]) -> (Vec<u8>, Vec<usize>) {
        use zstd::zstd_safe::{zstd_sys::ZSTD_EndDirective, CCtx, CParameter, InBuffer, OutBuffer};
        let mut cctx = CCtx::create();
        cctx.set_parameter(CParameter::ChecksumFlag(true)).unwrap();
        let mut out: Vec<u8> = Vec::with_capacity(1 << 16);
        let mut ends = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let op = if i + 1 == parts.len() {
                ZSTD_EndDirective::ZSTD_e_end
            } else {
                ZSTD_EndDirective::ZSTD_e_flush
            };
            let mut input = InBuffer::around(p);
            let at = out.len();
            let mut o = OutBuffer::around_pos(&mut out, at);
            assert_eq!(cctx.compress_stream2(&mut o, &mut input, op).unwrap(), 0);
            ends.push(out.len());
        }
        (out, ends)
    }

    #[test]
    fn finds_the_end_of_a_frame_written_in_flushed_pieces() {
        let (frame, ends) = streamed(&[b"hello ", b"world, hello ", b"world", b""]);
        assert_eq!(extent(&frame), Extent::Complete(frame.len()));
        let mut more = frame.clone();
        more.extend_from_slice(b"MGR\x02 and what follows");
        assert_eq!(extent(&more), Extent::Complete(frame.len()));
        // Cut anywhere: the complete flushed pieces are what is whole.
        for cut in 0..frame.len() {
            let Extent::Open { whole, need } = extent(&frame[..cut]) else {
                panic!("cut at {cut}: {:?}", extent(&frame[..cut]));
            };
            assert!(need > cut, "cut at {cut}");
            // Blocks end where the flushes ended; the last block counts only with the checksum.
            let expect = ends.iter().rev().find(|&&e| e <= cut).copied().unwrap_or(0);
            assert_eq!(whole, expect, "cut at {cut}");
        }
    }

    #[test]
    fn a_zero_filled_tail_is_not_a_run_of_empty_blocks() {
        let (frame, ends) = streamed(&[b"hello ", b"world, hello ", b"world", b""]);
        let mut torn = frame[..ends[1]].to_vec();
        torn.extend_from_slice(&[0; 12]);
        assert_eq!(extent(&torn), invalid(ends[1], "empty block"));
    }

    #[test]
    fn garbage_is_invalid_not_a_panic() {
        assert_eq!(extent(b"abcd"), invalid(0, "not a zstd frame"));
        assert_eq!(
            extent(&[0x28, 0xb5, 0x2f, 0xfd, 0x08]),
            invalid(0, "reserved bit set in the frame header")
        );
        // A header (checksum flag set), then a block of the reserved type.
        assert_eq!(
            extent(&[0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x00, 0x06, 0x00, 0x00]),
            invalid(0, "reserved block type")
        );
        assert_eq!(
            extent(&[0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00, 0x02, 0x00, 0x00]),
            invalid(0, "frame without a content checksum")
        );
        assert_eq!(extent(&[]), Extent::Open { whole: 0, need: 5 });
    }
}
