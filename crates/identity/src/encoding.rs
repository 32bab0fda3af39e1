//! Header value encoding: `%XX` (upper case) for every byte outside 0x21–0x7E and for
//! `%` and `,`, so a value can never carry CR/LF, spaces or a list separator.

/// A value that is not in the gatepass header encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodingError {
    /// A raw byte that the encoder never emits (space, control, non-ASCII, `,`).
    #[error("byte {0:#04x} must be percent-encoded")]
    RawByte(u8),
    /// `%` not followed by two hex digits.
    #[error("bad percent escape")]
    BadEscape,
    /// Decoded bytes are not UTF-8.
    #[error("value is not UTF-8")]
    NotUtf8,
    /// An empty item in a list.
    #[error("empty list item")]
    EmptyItem,
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn needs_escape(b: u8) -> bool {
    !(0x21..=0x7E).contains(&b) || b == b'%' || b == b','
}

/// Appends the encoding of `value` to `out`.
pub fn encode_into(value: &str, out: &mut String) {
    // Runs of bytes that need no escape are copied whole. They are ASCII, so each run is
    // UTF-8 on its own (a cut inside a multi-byte character only ever meets escaped bytes).
    let bytes = value.as_bytes();
    fn ascii(r: &[u8]) -> &str {
        std::str::from_utf8(r).unwrap_or_default()
    }
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if needs_escape(b) {
            out.push_str(ascii(&bytes[run..i]));
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0x0F) as usize] as char);
            run = i + 1;
        }
    }
    out.push_str(ascii(&bytes[run..]));
}

/// Encodes one header value.
pub fn encode_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    encode_into(value, &mut out);
    out
}

/// Encodes a list: each item encoded, joined by `,`.
pub fn encode_list<S: AsRef<str>>(items: &[S]) -> String {
    let mut out = String::new();
    encode_list_into(items, &mut out);
    out
}

/// Appends the encoding of a list to `out`.
pub fn encode_list_into<S: AsRef<str>>(items: &[S], out: &mut String) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        encode_into(item.as_ref(), out);
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Decodes one header value; strict: raw bytes the encoder would have escaped are refused.
pub fn decode_value(value: &str) -> Result<String, EncodingError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (h, l) = match (bytes.get(i + 1), bytes.get(i + 2)) {
                (Some(&h), Some(&l)) => (hex(h), hex(l)),
                _ => return Err(EncodingError::BadEscape),
            };
            match (h, l) {
                (Some(h), Some(l)) => out.push(h << 4 | l),
                _ => return Err(EncodingError::BadEscape),
            }
            i += 3;
        } else if needs_escape(b) {
            return Err(EncodingError::RawByte(b));
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| EncodingError::NotUtf8)
}

/// Decodes a list; the empty string is the empty list.
pub fn decode_list(value: &str) -> Result<Vec<String>, EncodingError> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(|item| {
            if item.is_empty() {
                Err(EncodingError::EmptyItem)
            } else {
                decode_value(item)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        assert_eq!(encode_value("alice"), "alice");
        assert_eq!(encode_value("a b"), "a%20b");
        assert_eq!(encode_value("50%,x"), "50%25%2Cx");
        assert_eq!(encode_value("x\r\ny"), "x%0D%0Ay");
        assert_eq!(encode_value("é"), "%C3%A9");
        assert_eq!(encode_list(&["a", "b,c"]), "a,b%2Cc");
        assert_eq!(decode_value("%c3%a9").unwrap(), "é");
        assert_eq!(decode_value("a%2"), Err(EncodingError::BadEscape));
        assert_eq!(decode_value("%FF"), Err(EncodingError::NotUtf8));
        assert_eq!(decode_list(""), Ok(vec![]));
    }

    proptest! {
        #[test]
        fn value_round_trips(s in any::<String>()) {
            let enc = encode_value(&s);
            prop_assert!(enc.bytes().all(|b| (0x21..=0x7E).contains(&b) && b != b','));
            prop_assert!(http::HeaderValue::from_str(&enc).is_ok());
            prop_assert_eq!(decode_value(&enc).unwrap(), s);
        }

        #[test]
        fn value_is_every_byte_escaped_or_kept(s in any::<String>()) {
            let mut want = String::new();
            for b in s.bytes() {
                if needs_escape(b) {
                    want.push_str(&format!("%{b:02X}"));
                } else {
                    want.push(b as char);
                }
            }
            prop_assert_eq!(encode_value(&s), want);
        }

        #[test]
        fn list_round_trips(items in proptest::collection::vec(".+", 0..6)) {
            let enc = encode_list(&items);
            prop_assert_eq!(decode_list(&enc).unwrap(), items);
        }

        #[test]
        fn decode_never_panics(s in any::<String>()) {
            let _ = decode_value(&s);
            let _ = decode_list(&s);
        }
    }
}
