//! Value codecs, chosen per handle like level's `valueEncoding`: raw bytes, UTF-8 strings,
//! or any serde type as JSON. Keys stay bytes.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::data::IterOptions;
use crate::db::{Db, Iter};
use crate::error::Error;

/// Turns values into bytes and back.
pub trait Codec: Send + Sync + 'static {
    type Value;
    fn encode(&self, value: &Self::Value) -> Result<Vec<u8>, Error>;
    fn decode(&self, bytes: &[u8]) -> Result<Self::Value, Error>;
}

/// Values as they are stored.
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl Codec for Raw {
    type Value = Vec<u8>;
    fn encode(&self, value: &Vec<u8>) -> Result<Vec<u8>, Error> {
        Ok(value.clone())
    }
    fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(bytes.to_vec())
    }
}

/// Values as UTF-8 strings; a stored value that is not UTF-8 is a codec error.
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8;

impl Codec for Utf8 {
    type Value = String;
    fn encode(&self, value: &String) -> Result<Vec<u8>, Error> {
        Ok(value.as_bytes().to_vec())
    }
    fn decode(&self, bytes: &[u8]) -> Result<String, Error> {
        String::from_utf8(bytes.to_vec()).map_err(|e| Error::Codec(Box::new(e)))
    }
}

/// Values of type `T` as JSON.
#[derive(Debug)]
pub struct Json<T>(PhantomData<fn() -> T>);

impl<T> Default for Json<T> {
    fn default() -> Self {
        Json(PhantomData)
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Codec for Json<T> {
    type Value = T;
    fn encode(&self, value: &T) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(value).map_err(|e| Error::Codec(Box::new(e)))
    }
    fn decode(&self, bytes: &[u8]) -> Result<T, Error> {
        serde_json::from_slice(bytes).map_err(|e| Error::Codec(Box::new(e)))
    }
}

/// A [`Db`] whose values go through a codec. Made with [`Db::with_codec`].
#[derive(Debug, Clone)]
pub struct Typed<C> {
    db: Db,
    codec: C,
}

impl<C: Codec> Typed<C> {
    pub(crate) fn new(db: Db, codec: C) -> Self {
        Typed { db, codec }
    }

    /// The untyped handle underneath.
    pub fn db(&self) -> &Db {
        &self.db
    }

    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<C::Value>, Error> {
        match self.db.get(key).await? {
            Some(bytes) => self.codec.decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    pub async fn put(&self, key: impl AsRef<[u8]>, value: &C::Value) -> Result<(), Error> {
        let bytes = self.codec.encode(value)?;
        self.db.put(key, bytes).await
    }

    /// The entries `options` select, values decoded.
    pub async fn entries(&self, options: IterOptions) -> Result<Vec<(Vec<u8>, C::Value)>, Error> {
        let iter: Iter = self.db.iter(options).await?;
        iter.collect()
            .await?
            .into_iter()
            .map(|entry| Ok((entry.key, self.codec.decode(&entry.value)?)))
            .collect()
    }
}
