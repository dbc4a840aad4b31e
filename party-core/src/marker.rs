//! The store a data directory holds, recorded in `<dir>/party.store` by the first leader,
//! before it creates the store: a handle configured for another store must never lead
//! from an empty store of its own, where all the data would seem lost.

use std::path::Path;

use party_backends::BackendKind;

use crate::error::Error;

/// Name of the store marker inside the data directory.
pub const STORE_MARKER_NAME: &str = "party.store";

/// The marker's first line; a later format changes it.
const FORMAT: &str = "party-store 1";

/// Claims `dir` for a store of kind `wanted`, as a leader is about to open it: fine if the
/// directory holds that kind or none yet (then it is recorded), `WrongBackend` if it holds
/// another.
pub(crate) fn claim(dir: &Path, wanted: BackendKind) -> Result<(), Error> {
    let path = dir.join(STORE_MARKER_NAME);
    let io = |context, source| Error::Io {
        context,
        path: path.clone(),
        source,
    };
    let recorded = match std::fs::read_to_string(&path) {
        Ok(text) => Some(parse(&text).ok_or_else(|| {
            let garbled =
                std::io::Error::new(std::io::ErrorKind::InvalidData, "not a store marker");
            io("cannot read the store marker", garbled)
        })?),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(io("cannot read the store marker", error)),
    };
    let found = recorded.or_else(|| store_already_there(dir, wanted));
    party_proto::admit_store(found.map(BackendKind::name), wanted.name())?;
    if recorded.is_none() {
        // Written aside and renamed: a crash leaves no marker or a whole one.
        let written = path.with_extension("store.new");
        std::fs::write(&written, format!("{FORMAT}\nkind {}\n", wanted.name()))
            .and_then(|()| std::fs::rename(&written, &path))
            .map_err(|e| io("cannot write the store marker", e))?;
    }
    Ok(())
}

fn parse(text: &str) -> Option<BackendKind> {
    let mut lines = text.lines();
    if lines.next()? != FORMAT {
        return None;
    }
    lines.next()?.strip_prefix("kind ")?.parse().ok()
}

/// For a directory from before the marker: the store in it, `wanted` first.
fn store_already_there(dir: &Path, wanted: BackendKind) -> Option<BackendKind> {
    [
        wanted,
        BackendKind::Fjall,
        BackendKind::Sled,
        BackendKind::Rocksdb,
    ]
    .into_iter()
    .find(|kind| dir.join(kind.name()).is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_claimed_once_and_other_kinds_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        claim(dir.path(), BackendKind::Fjall).unwrap();
        claim(dir.path(), BackendKind::Fjall).unwrap();
        assert!(matches!(
            claim(dir.path(), BackendKind::Sled),
            Err(Error::WrongBackend {
                found: BackendKind::Fjall,
                wanted: BackendKind::Sled
            })
        ));
        // A directory from before the marker: its store decides.
        let old = tempfile::tempdir().unwrap();
        std::fs::create_dir(old.path().join("sled")).unwrap();
        assert!(matches!(
            claim(old.path(), BackendKind::Fjall),
            Err(Error::WrongBackend {
                found: BackendKind::Sled,
                ..
            })
        ));
        claim(old.path(), BackendKind::Sled).unwrap();
        // A garbled marker is an error, not a fresh claim.
        std::fs::write(old.path().join(STORE_MARKER_NAME), "what").unwrap();
        assert!(matches!(
            claim(old.path(), BackendKind::Sled),
            Err(Error::Io { .. })
        ));
    }
}
