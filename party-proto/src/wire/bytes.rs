//! serde helpers that encode byte strings as one length-prefixed run instead of one element
//! per byte, for the collections `serde_bytes` does not cover by itself.

/// `Vec<Vec<u8>>`.
pub mod seq {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(items: &[Vec<u8>], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(items.iter().map(|item| Bytes::new(item)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Vec<u8>>, D::Error> {
        let items = Vec::<ByteBuf>::deserialize(deserializer)?;
        Ok(items.into_iter().map(ByteBuf::into_vec).collect())
    }
}

/// `Vec<Option<Vec<u8>>>`.
pub mod optional_seq {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(
        items: &[Option<Vec<u8>>],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(items.iter().map(|item| item.as_deref().map(Bytes::new)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Option<Vec<u8>>>, D::Error> {
        let items = Vec::<Option<ByteBuf>>::deserialize(deserializer)?;
        Ok(items
            .into_iter()
            .map(|item| item.map(ByteBuf::into_vec))
            .collect())
    }
}
