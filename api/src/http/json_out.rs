//! JSON strings written straight into a response buffer, escaped exactly as serde_json escapes
//! them (`"` and `\`, the short escapes `\b \t \n \f \r`, other bytes below 0x20 as `\u00xx`,
//! everything else verbatim), but scanning eight bytes at a time: review text is long and
//! almost never needs an escape, and serde_json's byte-by-byte scan was an eighth of a list
//! request's instructions.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of the word is `"`, `\` or below 0x20 (exact: the bit tricks of
/// "Bit Twiddling Hacks", *determine if a word has a byte less than n*).
fn may_need_escape(w: u64) -> bool {
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (zero_byte(w ^ (ONES * b'"' as u64)) | zero_byte(w ^ (ONES * b'\\' as u64)) | below_space) != 0
}

/// The escape of a byte: 0 for none, `u` for `\u00xx`, else the letter after the backslash.
const fn escape(b: u8) -> u8 {
    match b {
        0x08 => b'b',
        0x09 => b't',
        0x0a => b'n',
        0x0c => b'f',
        0x0d => b'r',
        b'"' => b'"',
        b'\\' => b'\\',
        0x00..=0x1f => b'u',
        _ => 0,
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    out.reserve(b.len() + 2);
    out.push(b'"');
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        if let Some(chunk) = b.get(i..i + 8) {
            let w = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            if !may_need_escape(w) {
                i += 8;
                continue;
            }
        }
        let c = b[i];
        let e = escape(c);
        i += 1;
        if e == 0 {
            continue;
        }
        out.extend_from_slice(&b[start..i - 1]);
        start = i;
        if e == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(c >> 4) as usize]);
            out.push(HEX[(c & 0xf) as usize]);
        } else {
            out.extend_from_slice(&[b'\\', e]);
        }
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

/// Appends an integer.
pub fn push_int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ours(s: &str) -> String {
        let mut out = Vec::new();
        push_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_escape_matches_serde_json() {
        let all: String = (0u8..=0x7f).map(char::from).collect();
        for s in [
            "",
            "plain text longer than eight bytes",
            "\"",
            "\\",
            "a\u{0}b",
            "tab\there and a newline\n",
            "ünïcødé and emoji 🦀 stay as they are",
            "\u{7f}\u{1f}\u{20}",
            "1234567\"",
            "12345678\\",
            &all,
        ] {
            assert_eq!(ours(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    proptest! {
        #[test]
        fn any_string_is_escaped_as_serde_json_escapes_it(s in any::<String>()) {
            prop_assert_eq!(ours(&s), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn control_heavy_strings_too(s in "[\\x00-\\x2f\\\\\"a-z]{0,64}") {
            prop_assert_eq!(ours(&s), serde_json::to_string(&s).unwrap());
        }
    }
}
