//! Validators: checks that run on a candidate match before it counts, so that masking does
//! not fire on every 16-digit number or every `AB12…` word.
//!
//! Each takes the matched bytes and answers yes or no; none allocates.

/// A validator: the matched bytes → is it real?
pub(crate) type Validator = fn(&[u8]) -> bool;

/// Tokens whose alphabet has `-` (GitLab, Slack, OpenAI): a candidate running into a PEM
/// armour line (`…abc-----BEGIN RSA PRIVATE KEY-----`) is not the token; the shorter match
/// that ends before the dashes is, and the key's own detector then sees its start marker.
/// Without this the token swallowed the marker and the key went out in clear (found by the
/// mask_split fuzz target).
pub(crate) fn no_armour_line(candidate: &[u8]) -> bool {
    !candidate.windows(5).any(|w| w == b"-----")
}

/// Card numbers: 13–19 digits (spaces and dashes ignored) passing the Luhn check.
pub(crate) fn luhn(candidate: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut digits = 0usize;
    for &b in candidate.iter().rev() {
        if !b.is_ascii_digit() {
            continue;
        }
        let mut d = u32::from(b - b'0');
        if digits % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        digits += 1;
    }
    (13..=19).contains(&digits) && sum % 10 == 0
}

/// IBAN: country letters, check digits, 11–30 alphanumerics (spaces ignored), mod 97 == 1.
pub(crate) fn iban(candidate: &[u8]) -> bool {
    let compact = candidate.iter().copied().filter(|b| *b != b' ');
    let len = compact.clone().count();
    if !(15..=34).contains(&len) {
        return false;
    }
    // Move the first four characters to the end, letters become 10..35, then mod 97.
    let rotated = compact.clone().skip(4).chain(compact.take(4));
    let mut rem = 0u32;
    for b in rotated {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            b'a'..=b'z' => u32::from(b - b'a') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// US SSN `AAA-GG-SSSS`: area not 000, 666 or 9xx; group not 00; serial not 0000.
pub(crate) fn us_ssn(candidate: &[u8]) -> bool {
    let digits: Vec<u8> = candidate
        .iter()
        .copied()
        .filter(u8::is_ascii_digit)
        .collect();
    if digits.len() != 9 {
        return false;
    }
    let area = &digits[0..3];
    area != b"000"
        && area != b"666"
        && area[0] != b'9'
        && &digits[3..5] != b"00"
        && &digits[5..9] != b"0000"
}

/// IPv4: four decimal octets, each at most 255 (the pattern only bounds their length,
/// which vectorscan scans several times faster than octet ranges).
pub(crate) fn ipv4(candidate: &[u8]) -> bool {
    std::str::from_utf8(candidate).is_ok_and(|t| t.parse::<std::net::Ipv4Addr>().is_ok())
}

/// IPv6: must parse, and have at least three groups written (so `ab::cd` in prose is left).
pub(crate) fn ipv6(candidate: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(candidate) else {
        return false;
    };
    let groups = text.split(':').filter(|g| !g.is_empty()).count();
    groups >= 3 && text.parse::<std::net::Ipv6Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_test_cards_and_rejects_neighbours() {
        assert!(luhn(b"4111 1111 1111 1111"));
        assert!(luhn(b"5500-0000-0000-0004"));
        assert!(luhn(b"378282246310005"));
        assert!(!luhn(b"4111 1111 1111 1112"));
        assert!(!luhn(b"1234567890123456"));
        assert!(!luhn(b"000000000000")); // too short
    }

    #[test]
    fn iban_checks_the_mod_97_sum() {
        assert!(iban(b"GB82 WEST 1234 5698 7654 32"));
        assert!(iban(b"DE89370400440532013000"));
        assert!(!iban(b"GB82 WEST 1234 5698 7654 33"));
        assert!(!iban(b"DE00370400440532013000"));
    }

    #[test]
    fn ssn_rejects_reserved_areas() {
        assert!(us_ssn(b"123-45-6789"));
        assert!(!us_ssn(b"000-45-6789"));
        assert!(!us_ssn(b"666-45-6789"));
        assert!(!us_ssn(b"923-45-6789"));
        assert!(!us_ssn(b"123-00-6789"));
    }

    #[test]
    fn ipv4_octets_stay_below_256() {
        assert!(ipv4(b"192.168.10.42"));
        assert!(!ipv4(b"192.168.10.420"));
        assert!(!ipv4(b"300.1.1.1"));
    }

    #[test]
    fn ipv6_needs_three_groups() {
        assert!(ipv6(b"2001:db8::8a2e:370:7334"));
        assert!(ipv6(b"fe80:0:0:0:0:0:0:1"));
        assert!(!ipv6(b"ab::cd"));
        assert!(!ipv6(b"1:2:3:4:5:6:7:8:9"));
    }
}
