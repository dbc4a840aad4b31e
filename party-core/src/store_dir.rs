//! The one store of a data directory: which kind it is, recorded in `<dir>/party.store`, and
//! its creation, which a crash cannot leave half done.
//!
//! A handle configured for another kind must never lead from an empty store of its own,
//! where all the data would seem lost (party-proto's [`party_proto::admit_store`] decides).
//! A new store is built beside its place (`<dir>/<kind>.new`) and renamed into it once
//! whole, and the marker is written after that: a first process killed at any moment of
//! its start leaves no store (made afresh by the next), or a whole one; and whichever is
//! there names the directory's kind, marker or not. (etcd keeps nothing in the directory:
//! its marker alone names it, with the key prefix of its store, so that a handle
//! configured for another prefix does not lead from that prefix's store, and the
//! directory's [`Succession`] of leaders, so that each fences the commits of the one before.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use party_backends::{Backend, BackendKind, EtcdConfig, OpenError, Succession};

use crate::error::Error;
use crate::paths::{beside, create_private_dir, sync_parent, write_atomically};

/// Name of the store marker inside the data directory.
pub const STORE_MARKER_NAME: &str = "party.store";

/// The marker's first line; a later format changes it.
const FORMAT: &str = "party-store 1";

/// Opens the store of `dir` for a leader configured for `wanted` (etcd where `etcd`
/// says), creating it if the directory has none yet; `WrongBackend` if the directory holds
/// another kind.
pub(crate) fn open(
    dir: &Path,
    wanted: BackendKind,
    etcd: Option<&EtcdConfig>,
) -> Result<Arc<dyn Backend>, Error> {
    let marker = dir.join(STORE_MARKER_NAME);
    let recorded = read_marker(&marker)?;
    let found = recorded
        .as_ref()
        .map(|marker| marker.kind)
        .or_else(|| store_already_there(dir, wanted));
    party_proto::admit_store(found.map(BackendKind::name), wanted.name())?;
    let recorded_prefix = recorded.as_ref().and_then(|m| m.etcd_prefix.clone());
    if let (Some(found), Some(config)) = (&recorded_prefix, etcd) {
        if *found != config.prefix {
            return Err(Error::WrongEtcdPrefix {
                found: found.clone(),
                wanted: config.prefix.clone(),
            });
        }
    }
    let recorded_succession = recorded.as_ref().and_then(|m| m.etcd_succession);
    let mut etcd_succession = None;
    let store = if wanted.is_local() {
        let path = store_path(dir, wanted);
        if !path.is_dir() {
            create(wanted, &path)?;
        }
        wanted.open(&path)?
    } else {
        let config = etcd.ok_or(OpenError::NotConfigured {
            backend: wanted.name(),
        })?;
        let succession = recorded_succession.unwrap_or_else(Succession::random);
        etcd_succession = Some(succession);
        BackendKind::connect(config, Some(succession))?
    };
    let etcd_prefix = etcd.filter(|_| !wanted.is_local()).map(|c| &c.prefix);
    if recorded.is_none() || (recorded_succession.is_none() && etcd_succession.is_some()) {
        let mut contents = format!("{FORMAT}\nkind {}\n", wanted.name());
        if let (Some(prefix), Some(succession)) = (etcd_prefix, etcd_succession) {
            contents.push_str(&format!("etcd-prefix {}\n", hex(prefix)));
            contents.push_str(&format!(
                "etcd-succession {}\n",
                hex(&succession.0.to_be_bytes())
            ));
        }
        write_atomically(&marker, contents.as_bytes(), true)
            .map_err(|e| io("cannot write the store marker", &marker, e))?;
    }
    Ok(store)
}

/// Where the store of `kind` lives in `dir`.
pub(crate) fn store_path(dir: &Path, kind: BackendKind) -> PathBuf {
    dir.join(kind.name())
}

/// Builds a new store of `kind` aside, closes it, and renames it to `path`. What a crash
/// left aside before is thrown away: it never served anything.
fn create(kind: BackendKind, path: &Path) -> Result<(), Error> {
    let aside = beside(path);
    match std::fs::remove_dir_all(&aside) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(io("cannot remove an unfinished store", &aside, error));
        }
        _ => {}
    }
    create_private_dir(&aside).map_err(|e| io("cannot create the store directory", &aside, e))?;
    drop(kind.open(&aside)?);
    std::fs::rename(&aside, path)
        .and_then(|()| sync_parent(path))
        .map_err(|e| io("cannot put the new store in place", path, e))
}

/// What the marker says: the kind, and for etcd the key prefix and the succession
/// (markers written before they were recorded have none).
struct Marker {
    kind: BackendKind,
    etcd_prefix: Option<Vec<u8>>,
    etcd_succession: Option<Succession>,
}

fn read_marker(path: &Path) -> Result<Option<Marker>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text).map(Some).ok_or_else(|| {
            let garbled =
                std::io::Error::new(std::io::ErrorKind::InvalidData, "not a store marker");
            io("cannot read the store marker", path, garbled)
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(io("cannot read the store marker", path, error)),
    }
}

fn io(context: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        context,
        path: PathBuf::from(path),
        source,
    }
}

fn parse(text: &str) -> Option<Marker> {
    let mut lines = text.lines();
    if lines.next()? != FORMAT {
        return None;
    }
    let kind = lines.next()?.strip_prefix("kind ")?.parse().ok()?;
    let etcd_prefix = match lines.next() {
        None => None,
        Some(line) => Some(unhex(line.strip_prefix("etcd-prefix ")?)?),
    };
    let etcd_succession = match lines.next() {
        None => None,
        Some(line) => {
            let bytes = unhex(line.strip_prefix("etcd-succession ")?)?;
            Some(Succession(u64::from_be_bytes(bytes.try_into().ok()?)))
        }
    };
    Some(Marker {
        kind,
        etcd_prefix,
        etcd_succession,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
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
    .find(|kind| kind.is_local() && store_path(dir, *kind).is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(result: Result<Arc<dyn Backend>, Error>) -> Option<(BackendKind, BackendKind)> {
        match result {
            Err(Error::WrongBackend { found, wanted }) => Some((found, wanted)),
            _ => None,
        }
    }

    #[test]
    fn a_directory_holds_one_kind_and_other_kinds_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path(), BackendKind::Fjall, None).unwrap());
        drop(open(dir.path(), BackendKind::Fjall, None).unwrap());
        assert_eq!(
            refused(open(dir.path(), BackendKind::Sled, None)),
            Some((BackendKind::Fjall, BackendKind::Sled))
        );
        // A directory from before the marker (or whose first leader died before writing
        // it): its store decides.
        let old = tempfile::tempdir().unwrap();
        std::fs::create_dir(old.path().join("sled")).unwrap();
        assert_eq!(
            refused(open(old.path(), BackendKind::Fjall, None)),
            Some((BackendKind::Sled, BackendKind::Fjall))
        );
        assert!(!old.path().join("fjall").exists());
        // A garbled marker is an error, not a fresh claim; so is one of a format this
        // build does not know (a later party's), however familiar its lines.
        for marker in ["what", "party-store 2\nkind fjall\n"] {
            std::fs::write(old.path().join(STORE_MARKER_NAME), marker).unwrap();
            assert!(
                matches!(
                    open(old.path(), BackendKind::Fjall, None),
                    Err(Error::Io { .. })
                ),
                "{marker:?}"
            );
        }
        assert!(!old.path().join("fjall").exists());
    }

    /// A directory whose store is in etcd records the prefix: a handle configured for
    /// another prefix is refused before it connects, one for the same prefix is not.
    #[test]
    fn a_directory_on_etcd_refuses_another_prefix() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(STORE_MARKER_NAME),
            format!("{FORMAT}\nkind etcd\netcd-prefix {}\n", hex(b"app/")),
        )
        .unwrap();
        let config = |prefix: &[u8]| EtcdConfig {
            endpoints: vec!["http://127.0.0.1:1".into()],
            prefix: prefix.to_vec(),
        };
        let other = open(dir.path(), BackendKind::Etcd, Some(&config(b"other/")));
        assert!(
            matches!(&other, Err(Error::WrongEtcdPrefix { found, wanted })
                if found == b"app/" && wanted == b"other/"),
            "{other:?}"
        );
        let same = open(dir.path(), BackendKind::Etcd, Some(&config(b"app/")));
        assert!(
            !matches!(same, Err(Error::WrongEtcdPrefix { .. })),
            "the same prefix goes on (to connect)"
        );
        assert_eq!(unhex(&hex(b"\x00\xffa/")), Some(b"\x00\xffa/".to_vec()));
        assert_eq!(unhex("abc"), None);
    }

    /// The succession of leaders a directory on etcd records reads back; a marker from
    /// before successions were recorded still reads, and a garbled succession is refused.
    #[test]
    fn a_directory_on_etcd_records_its_succession() {
        let on_etcd = format!("{FORMAT}\nkind etcd\netcd-prefix {}\n", hex(b"app/"));
        let with = |succession: &str| format!("{on_etcd}etcd-succession {succession}\n");
        let marker = parse(&with("0102030405060708")).unwrap();
        assert_eq!(marker.etcd_prefix.as_deref(), Some(&b"app/"[..]));
        assert_eq!(
            marker.etcd_succession,
            Some(Succession(0x0102_0304_0506_0708))
        );
        assert_eq!(parse(&on_etcd).unwrap().etcd_succession, None);
        assert!(parse(&with("0102")).is_none());
        assert!(parse(&with("zz02030405060708")).is_none());
    }

    /// What a first leader killed while creating its store left aside is thrown away, and
    /// the store made afresh.
    #[test]
    fn an_unfinished_store_is_made_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let unfinished = dir.path().join("fjall.new");
        std::fs::create_dir(&unfinished).unwrap();
        std::fs::write(unfinished.join("version"), "half").unwrap();
        let store = open(dir.path(), BackendKind::Fjall, None).unwrap();
        assert_eq!(store.get(b"k").unwrap(), None);
        assert!(!unfinished.exists());
        assert!(dir.path().join(STORE_MARKER_NAME).exists());
    }
}
