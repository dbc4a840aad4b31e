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

    /// A value in a JSON answer: with the JSON encoding the stored JSON text itself, else
    /// (or if the stored bytes are not JSON) as bytes.
    pub fn json_value(self, value: &[u8]) -> JsonValue {
        let stored = match self {
            Encoding::Json => std::str::from_utf8(value).ok().filter(|text| is_json(text)),
            _ => None,
        };
        match stored {
            Some(text) => JsonValue::Json(without_whitespace(text)),
            None => JsonValue::Bytes(self.json_bytes(value)),
        }
    }
}

/// A stored value as a JSON answer gives it.
#[derive(Debug, PartialEq, Eq)]
pub enum JsonValue {
    /// JSON text, answered as written but for the whitespace between its tokens, which
    /// would break the answer's line: its object keys in their order (repeated ones too),
    /// its numbers with every digit, its nesting at any depth. Parsed into a [`Value`]
    /// it would lose each of these.
    Json(String),
    /// Bytes, as [`Encoding::json_bytes`] gives them.
    Bytes(Value),
}

impl std::fmt::Display for JsonValue {
    /// The value as it goes into an answer's JSON text.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JsonValue::Json(text) => f.write_str(text),
            JsonValue::Bytes(bytes) => write!(f, "{bytes}"),
        }
    }
}

/// Whether `text` is JSON: its syntax alone, so no number is refused for being beyond a
/// double, and no nesting for its depth (serde's `IgnoredAny` reads it without recursion).
fn is_json(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// JSON text without the whitespace between its tokens (strings kept whole); only for
/// text that is JSON, since it would join the tokens of text that is not (`1 2`).
fn without_whitespace(json: &str) -> String {
    let mut kept = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if matches!(c, ' ' | '\t' | '\n' | '\r') {
            continue;
        }
        kept.push(c);
    }
    kept
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
/// its syntax is checked, so no number is refused for being beyond a double, and no
/// nesting for its depth; JSON answers give it as written too ([`JsonValue`]).
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
    }

    #[test]
    fn json_answers_give_stored_json_as_written_and_anything_else_as_bytes() {
        let answered = |encoding: Encoding, stored: &[u8]| encoding.json_value(stored).to_string();
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        for (stored, answer) in [
            (
                " {\n\t\"z\" : 1,\r\n \"a\": [2, 1e5], \"z\": \"x y\\\"\\n\" } ",
                r#"{"z":1,"a":[2,1e5],"z":"x y\"\n"}"#,
            ),
            (
                "123456789012345678901234567890",
                "123456789012345678901234567890",
            ),
            ("\n\t-0.10\r\n", "-0.10"),
            (
                r#"{"$serde_json::private::Number":"12"}"#,
                r#"{"$serde_json::private::Number":"12"}"#,
            ),
            (&deep, &deep),
        ] {
            assert_eq!(answered(Encoding::Json, stored.as_bytes()), answer);
        }
        for not_json in ["not json", "1 2", "[1 2]", "n u l l", "- 5", "\"a\" \"b\""] {
            let as_a_string = serde_json::to_string(not_json).unwrap();
            assert_eq!(answered(Encoding::Json, not_json.as_bytes()), as_a_string);
        }
        assert_eq!(answered(Encoding::Json, b"[1,"), r#""[1,""#);
        assert_eq!(answered(Encoding::Json, b"\xff"), r#"{"hex":"ff"}"#);
        assert_eq!(answered(Encoding::Utf8, b"[1]"), r#""[1]""#);
        assert_eq!(answered(Encoding::Hex, b"[1]"), r#""5b315d""#);
    }

    #[test]
    fn escaping_keeps_a_listing_line_whole() {
        assert_eq!(
            escape(b"a\tb\\c\nd\r\x00\x7f\xff\xc3\xa9"),
            "a\\tb\\\\c\\nd\\r\\x00\\x7f\\xffé"
        );
        // A control character past ASCII too (NEL ends a line for some readers).
        assert_eq!(escape("a\u{85}b".as_bytes()), "a\\xc2\\x85b");
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
