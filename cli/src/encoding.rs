//! How keys and values are written on the command line and printed: UTF-8 text, hex, or
//! JSON values (keys stay text with JSON).

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Encoding {
    Utf8,
    Json,
    Hex,
}

impl Encoding {
    pub fn parse_key(self, text: &str) -> Result<Vec<u8>, String> {
        match self {
            Encoding::Hex => from_hex(text),
            Encoding::Utf8 | Encoding::Json => Ok(text.as_bytes().to_vec()),
        }
    }

    pub fn parse_value(self, text: &str) -> Result<Vec<u8>, String> {
        match self {
            Encoding::Hex => from_hex(text),
            Encoding::Utf8 => Ok(text.as_bytes().to_vec()),
            Encoding::Json => {
                let value: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| format!("value is not JSON: {e}"))?;
                Ok(value.to_string().into_bytes())
            }
        }
    }

    pub fn show_key(self, key: &[u8]) -> String {
        match self {
            Encoding::Hex => to_hex(key),
            Encoding::Utf8 | Encoding::Json => String::from_utf8_lossy(key).into_owned(),
        }
    }

    pub fn show_value(self, value: &[u8]) -> String {
        match self {
            Encoding::Hex => to_hex(value),
            Encoding::Utf8 | Encoding::Json => String::from_utf8_lossy(value).into_owned(),
        }
    }

    /// The value as JSON for `shell --json`: a JSON value as itself, otherwise a string.
    pub fn json_value(self, value: &[u8]) -> serde_json::Value {
        match self {
            Encoding::Json => serde_json::from_slice(value)
                .unwrap_or_else(|_| serde_json::Value::String(self.show_value(value))),
            _ => serde_json::Value::String(self.show_value(value)),
        }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!("{text:?} is not hex: odd length"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("{text:?} is not hex"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let bytes = vec![0x00, 0xff, 0x61];
        assert_eq!(
            Encoding::Hex.parse_key(&Encoding::Hex.show_key(&bytes)),
            Ok(bytes)
        );
        assert_eq!(Encoding::Hex.parse_key(""), Ok(vec![]));
        assert!(Encoding::Hex.parse_key("abc").is_err());
        assert!(Encoding::Hex.parse_key("zz").is_err());
        assert!(
            Encoding::Hex.parse_key("é1").is_err(),
            "multi-byte text must not panic"
        );
    }

    #[test]
    fn json_values_are_validated_and_normalised() {
        assert_eq!(
            Encoding::Json.parse_value(r#"{ "a" : 1 }"#),
            Ok(br#"{"a":1}"#.to_vec())
        );
        assert!(Encoding::Json.parse_value("not json").is_err());
        assert_eq!(
            Encoding::Json.json_value(b"[1,2]"),
            serde_json::json!([1, 2])
        );
    }
}
