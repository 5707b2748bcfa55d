//! The protobuf wire format, as far as the gateway reads and rewrites it: fields one at a time
//! (key, wire type, value), and the encoding of varints and length-delimited fields. No schema,
//! no allocation: callers know which field numbers they care about and copy the rest verbatim.

/// A field's value by wire type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    /// 8 bytes (wire type 1) or 4 bytes (wire type 5), uninterpreted.
    Fixed(&'a [u8]),
    /// Wire type 2: strings, bytes, nested messages, packed repeated fields.
    Len(&'a [u8]),
}

/// One field as it appears in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    pub number: u32,
    pub value: Value<'a>,
    /// The field's bytes, key included: what to copy to keep it unchanged.
    pub raw: &'a [u8],
}

/// The message is not valid protobuf: a bad varint, a truncated field, field number 0 or
/// above 2^29 − 1, or a group / undefined wire type (3, 4, 6, 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Takes the next field from the front of `rest`; `None` at the end of the message.
pub fn next_field<'a>(rest: &mut &'a [u8]) -> Option<Result<Field<'a>, Malformed>> {
    if rest.is_empty() {
        return None;
    }
    let start: &'a [u8] = rest;
    Some(
        field(rest)
            .inspect_err(|_| *rest = &[])
            .map(|(number, value)| {
                let used = start.len() - rest.len();
                Field {
                    number,
                    value,
                    raw: &start[..used],
                }
            }),
    )
}

fn field<'a>(rest: &mut &'a [u8]) -> Result<(u32, Value<'a>), Malformed> {
    let key = varint(rest).ok_or(Malformed)?;
    let number = u32::try_from(key >> 3).map_err(|_| Malformed)?;
    if number == 0 || number > (1 << 29) - 1 {
        return Err(Malformed);
    }
    let value = match key & 7 {
        0 => Value::Varint(varint(rest).ok_or(Malformed)?),
        1 => Value::Fixed(take(rest, 8)?),
        2 => {
            let len = usize::try_from(varint(rest).ok_or(Malformed)?).map_err(|_| Malformed)?;
            Value::Len(take(rest, len)?)
        }
        5 => Value::Fixed(take(rest, 4)?),
        _ => return Err(Malformed),
    };
    Ok((number, value))
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], Malformed> {
    let (value, tail) = rest.split_at_checked(n).ok_or(Malformed)?;
    *rest = tail;
    Ok(value)
}

/// A base-128 varint of at most 10 bytes that fits in 64 bits, consumed from `buf`.
pub fn varint(buf: &mut &[u8]) -> Option<u64> {
    let bytes: &[u8] = buf;
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        if i == 9 && b > 1 {
            return None;
        }
        value |= u64::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            *buf = &bytes[i + 1..];
            return Some(value);
        }
    }
    None
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-delimited field.
pub fn put_len(out: &mut Vec<u8>, number: u32, value: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | 2);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_through_their_raw_bytes() {
        let mut msg = Vec::new();
        put_len(&mut msg, 1, b"echo");
        msg.extend_from_slice(&[0x18, 0xAC, 0x02]); // field 3 varint 300
        msg.extend_from_slice(&[0x21, 1, 2, 3, 4, 5, 6, 7, 8]); // field 4 fixed64
        put_len(&mut msg, 6, &[0u8; 200]);
        let mut rest = &msg[..];
        let mut fields = Vec::new();
        let mut copy = Vec::new();
        while let Some(f) = next_field(&mut rest) {
            let f = f.unwrap();
            copy.extend_from_slice(f.raw);
            fields.push((f.number, f.value));
        }
        assert_eq!(copy, msg);
        assert_eq!(fields[0], (1, Value::Len(b"echo")));
        assert_eq!(fields[1], (3, Value::Varint(300)));
        assert_eq!(fields[2].0, 4);
        assert_eq!(fields[3], (6, Value::Len(&[0u8; 200])));
    }

    #[test]
    fn malformed_messages_are_refused_and_end_the_walk() {
        for bad in [
            &[0x0A, 5, b'a'][..], // truncated length-delimited
            &[0x00, 1],           // field number 0
            &[0x0B],              // wire type 3 (group)
            &[
                0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F,
            ], // overlong varint
        ] {
            let mut rest = bad;
            assert_eq!(next_field(&mut rest), Some(Err(Malformed)), "{bad:?}");
            assert_eq!(next_field(&mut rest), None);
        }
    }
}
