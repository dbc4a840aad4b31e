//! How keys and values are written on the command line and printed: UTF-8 text, hex, or
//! JSON values (keys stay text with JSON).
//!
//! Arguments are taken as the bytes they are (a key need not be UTF-8). Listings (`scan`,
//! `dump`) print one entry per line, so there text escapes what would break the line:
//! `\\`, `\t`, `\n`, `\r`, other control characters and bytes that are not UTF-8 (`\xNN`);
//! `load` reads that form back, so any bytes round-trip.

use std::ffi::OsStr;

use clap::ValueEnum;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Encoding {
    Utf8,
    Json,
    Hex,
}

impl Encoding {
    /// A key given as an argument.
    pub fn parse_key(self, arg: &OsStr) -> Result<Vec<u8>, String> {
        match self {
            Encoding::Hex => from_hex(text(arg)?),
            Encoding::Utf8 | Encoding::Json => Ok(bytes(arg)),
        }
    }

    /// A value given as an argument.
    pub fn parse_value(self, arg: &OsStr) -> Result<Vec<u8>, String> {
        match self {
            Encoding::Hex => from_hex(text(arg)?),
            Encoding::Utf8 => Ok(bytes(arg)),
            Encoding::Json => checked_json(text(arg)?),
        }
    }

    /// A key as a listing prints it.
    pub fn show_key(self, key: &[u8]) -> String {
        match self {
            Encoding::Hex => hex::encode(key),
            Encoding::Utf8 | Encoding::Json => escape(key),
        }
    }

    /// A value as a listing prints it.
    pub fn show_value(self, value: &[u8]) -> String {
        match self {
            Encoding::Hex => hex::encode(value),
            Encoding::Utf8 | Encoding::Json => escape(value),
        }
    }

    /// A key as a listing printed it.
    pub fn read_key(self, shown: &str) -> Result<Vec<u8>, String> {
        match self {
            Encoding::Hex => from_hex(shown),
            Encoding::Utf8 | Encoding::Json => unescape(shown),
        }
    }

    /// A value as a listing printed it.
    pub fn read_value(self, shown: &str) -> Result<Vec<u8>, String> {
        match self {
            Encoding::Hex => from_hex(shown),
            Encoding::Utf8 => unescape(shown),
            Encoding::Json => {
                let text = unescape(shown)?;
                checked_json(std::str::from_utf8(&text).map_err(|_| "value is not JSON")?)
            }
        }
    }

    /// Bytes in a JSON answer: a string when they are UTF-8 (hex: the hex string), else
    /// `{"hex": "..."}`, so that no byte is lost.
    pub fn json_bytes(self, bytes: &[u8]) -> Value {
        match (self, std::str::from_utf8(bytes)) {
            (Encoding::Hex, _) => Value::String(hex::encode(bytes)),
            (_, Ok(text)) => Value::String(text.to_owned()),
            (_, Err(_)) => serde_json::json!({ "hex": hex::encode(bytes) }),
        }
    }

    /// A value in a JSON answer: with the JSON encoding the value itself, else as bytes.
    pub fn json_value(self, value: &[u8]) -> Value {
        match self {
            Encoding::Json => {
                serde_json::from_slice(value).unwrap_or_else(|_| self.json_bytes(value))
            }
            _ => self.json_bytes(value),
        }
    }
}

/// The bytes of an argument, as the operating system gave them.
pub fn bytes(arg: &OsStr) -> Vec<u8> {
    arg.as_encoded_bytes().to_vec()
}

fn text(arg: &OsStr) -> Result<&str, String> {
    arg.to_str()
        .ok_or_else(|| format!("{} is not UTF-8 text", arg.display()))
}

fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    hex::decode(text).map_err(|e| format!("{text:?} is not hex: {e}"))
}

/// JSON text, checked and kept as written: rewriting it would reorder object keys. Only
/// its syntax is checked, so no number is refused for being beyond a double; JSON answers
/// give every digit of it too (serde_json's `arbitrary_precision`).
fn checked_json(text: &str) -> Result<Vec<u8>, String> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| format!("value is not JSON: {e}"))?;
    Ok(text.as_bytes().to_vec())
}

/// Bytes as one line of text that [`unescape`] reads back exactly.
pub fn escape(bytes: &[u8]) -> String {
    let mut shown = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => shown.push_str("\\\\"),
                '\t' => shown.push_str("\\t"),
                '\n' => shown.push_str("\\n"),
                '\r' => shown.push_str("\\r"),
                c if c.is_control() => {
                    let mut utf8 = [0u8; 4];
                    for byte in c.encode_utf8(&mut utf8).bytes() {
                        shown.push_str(&format!("\\x{byte:02x}"));
                    }
                }
                c => shown.push(c),
            }
        }
        for byte in chunk.invalid() {
            shown.push_str(&format!("\\x{byte:02x}"));
        }
    }
    shown
}

/// The bytes [`escape`] showed.
pub fn unescape(shown: &str) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::with_capacity(shown.len());
    let mut rest = shown.as_bytes();
    while let Some((&byte, after)) = rest.split_first() {
        rest = after;
        if byte != b'\\' {
            bytes.push(byte);
            continue;
        }
        let (escaped, after) = rest
            .split_first()
            .ok_or_else(|| format!("{shown:?} ends in a lone backslash"))?;
        rest = after;
        match escaped {
            b'\\' => bytes.push(b'\\'),
            b't' => bytes.push(b'\t'),
            b'n' => bytes.push(b'\n'),
            b'r' => bytes.push(b'\r'),
            b'x' => {
                let digits = rest
                    .get(..2)
                    .and_then(|digits| std::str::from_utf8(digits).ok())
                    .ok_or_else(|| format!("{shown:?}: \\x needs two hex digits"))?;
                bytes.extend(from_hex(digits)?);
                rest = &rest[2..];
            }
            other => {
                return Err(format!(
                    "{shown:?}: unknown escape \\{}",
                    char::from(*other)
                ))
            }
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hex_is_strict() {
        let hex = |text: &str| Encoding::Hex.parse_key(OsStr::new(text));
        assert_eq!(hex("00ff61"), Ok(vec![0x00, 0xff, 0x61]));
        assert_eq!(hex(""), Ok(vec![]));
        for garbage in ["abc", "zz", "+f+f", "-1", " f", "é1"] {
            assert!(hex(garbage).is_err(), "{garbage:?} must not pass as hex");
        }
    }

    #[test]
    fn json_values_are_checked_and_kept_as_written() {
        let json = |text: &str| Encoding::Json.parse_value(OsStr::new(text));
        for written in [
            r#"{ "z" : 1, "a": 2 }"#,
            "123456789012345678901234567890",
            "-0",
        ] {
            assert_eq!(json(written), Ok(written.as_bytes().to_vec()));
        }
        assert!(json("not json").is_err());
        assert_eq!(
            Encoding::Json.json_value(b"[1,2]"),
            serde_json::json!([1, 2])
        );
    }

    #[test]
    fn escaping_keeps_a_listing_line_whole() {
        assert_eq!(
            escape(b"a\tb\\c\nd\r\x00\x7f\xff\xc3\xa9"),
            "a\\tb\\\\c\\nd\\r\\x00\\x7f\\xffé"
        );
        assert!(unescape("ends\\").is_err());
        assert!(unescape("\\q").is_err());
        assert!(unescape("\\x4").is_err());
        assert!(unescape("\\x+f").is_err());
    }

    proptest! {
        #[test]
        fn any_bytes_round_trip_through_a_listing(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let shown = escape(&bytes);
            prop_assert!(!shown.contains(['\t', '\n', '\r']));
            prop_assert_eq!(unescape(&shown), Ok(bytes.clone()));
            prop_assert_eq!(Encoding::Hex.read_value(&Encoding::Hex.show_value(&bytes)), Ok(bytes));
        }
    }
}
