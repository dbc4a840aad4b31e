//! The store the tools (`demo`, `bench`, `chaos`) run on, and how their worker processes
//! are told of it: one word, a local store's name or, for etcd, its endpoints and prefix.
//!
//! Each data directory of a tool run is a store of its own: on etcd, the directory's path
//! goes into the key prefix. Without `--etcd-endpoints`, `--backend etcd` starts a cluster
//! of three members on this machine for the run (Debian's `etcd-server`), stopped with it.

use std::path::Path;
use std::sync::Arc;

use party_backends::{Backend, EtcdConfig};
use party_core::{BackendKind, Options};

use crate::failure::Failure;

/// What separates the parts of an etcd store's word.
const SEPARATOR: char = '|';

#[derive(Debug, Clone)]
pub(crate) struct ToolStore {
    kind: BackendKind,
    /// For etcd: the cluster's endpoints and the prefix every directory's prefix starts with.
    etcd: Option<(Vec<String>, String)>,
}

/// A cluster started for the run, if one was: dropping it stops it.
#[cfg(feature = "etcd")]
pub(crate) type RunCluster = Option<party_core::LocalCluster>;
#[cfg(not(feature = "etcd"))]
pub(crate) type RunCluster = Option<std::convert::Infallible>;

impl ToolStore {
    /// The store the command line names; for etcd without endpoints, a cluster started
    /// for the run.
    pub(crate) fn start(
        kind: BackendKind,
        endpoints: &[String],
        prefix: Option<&str>,
    ) -> Result<(ToolStore, RunCluster), Failure> {
        if kind != BackendKind::Etcd {
            return Ok((ToolStore { kind, etcd: None }, None));
        }
        let prefix = prefix.unwrap_or("party/").to_owned();
        if !endpoints.is_empty() {
            let store = ToolStore {
                kind,
                etcd: Some((endpoints.to_vec(), prefix)),
            };
            return Ok((store, None));
        }
        #[cfg(feature = "etcd")]
        {
            // Starting waits for the members, blocking: not on an async worker.
            let cluster = tokio::task::block_in_place(|| party_core::LocalCluster::start(3))
                .map_err(|error| {
                    format!("cannot start a local etcd cluster (package etcd-server): {error}")
                })?;
            let store = ToolStore {
                kind,
                etcd: Some((cluster.endpoints(), prefix)),
            };
            Ok((store, Some(cluster)))
        }
        #[cfg(not(feature = "etcd"))]
        Err(Failure::usage(
            "the etcd backend is not compiled in; build with the `etcd` feature",
        ))
    }

    pub(crate) fn kind(&self) -> BackendKind {
        self.kind
    }

    /// The word that names this store to a worker.
    pub(crate) fn word(&self) -> String {
        match &self.etcd {
            None => self.kind.name().to_owned(),
            Some((endpoints, prefix)) => format!(
                "{}{SEPARATOR}{}{SEPARATOR}{prefix}",
                self.kind.name(),
                endpoints.join(",")
            ),
        }
    }

    /// The store a worker was told of by [`ToolStore::word`].
    pub(crate) fn from_word(word: &str) -> Result<ToolStore, String> {
        let mut parts = word.splitn(3, SEPARATOR);
        let kind = crate::backend_named(parts.next().unwrap_or_default())?;
        let etcd = match (parts.next(), parts.next()) {
            (Some(endpoints), Some(prefix)) => Some((
                endpoints.split(',').map(str::to_owned).collect(),
                prefix.to_owned(),
            )),
            _ => None,
        };
        Ok(ToolStore { kind, etcd })
    }

    /// Where `dir`'s store lives in etcd, if it is there.
    fn etcd_config(&self, dir: &Path) -> Option<EtcdConfig> {
        let (endpoints, prefix) = self.etcd.as_ref()?;
        Some(EtcdConfig {
            endpoints: endpoints.clone(),
            prefix: format!("{prefix}{}/", dir.display()).into_bytes(),
        })
    }

    /// Options for a handle on `dir`.
    pub(crate) fn options(&self, dir: &Path) -> Options {
        match self.etcd_config(dir) {
            Some(config) => Options::default().etcd(config.endpoints, config.prefix),
            None => Options::default().backend(self.kind),
        }
    }

    /// The `party` options that open `dir` on this store, for a one-shot command.
    pub(crate) fn command_options(&self, dir: &Path) -> Vec<String> {
        let mut options = vec!["--backend".to_owned(), self.kind.name().to_owned()];
        if let Some(config) = self.etcd_config(dir) {
            options.push("--etcd-endpoints".into());
            options.push(config.endpoints.join(","));
            options.push("--etcd-prefix".into());
            options.push(String::from_utf8_lossy(&config.prefix).into_owned());
        }
        options
    }

    /// `dir`'s store itself, opened directly (after a handle created it), for a setup a
    /// handle cannot make. Blocks, as the store's calls do: call it where blocking is
    /// allowed.
    pub(crate) fn open_store(&self, dir: &Path) -> Result<Arc<dyn Backend>, String> {
        let opened = match self.etcd_config(dir) {
            Some(config) => BackendKind::connect(&config, None),
            None => self.kind.open(&dir.join(self.kind.name())),
        };
        opened.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_goes_to_a_worker_and_back_as_one_word() {
        let local = ToolStore {
            kind: BackendKind::Fjall,
            etcd: None,
        };
        assert_eq!(local.word(), "fjall");
        assert_eq!(ToolStore::from_word("fjall").unwrap().word(), "fjall");
        let etcd = ToolStore {
            kind: BackendKind::Etcd,
            etcd: Some((
                vec!["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()],
                "p/".into(),
            )),
        };
        let back = ToolStore::from_word(&etcd.word()).unwrap();
        assert_eq!(back.word(), etcd.word());
        let dir = Path::new("/tmp/run/shared");
        assert_eq!(
            back.etcd_config(dir).unwrap().prefix,
            b"p//tmp/run/shared/".to_vec(),
            "each directory a store of its own"
        );
        assert!(ToolStore::from_word("nonsense").is_err());
    }
}
