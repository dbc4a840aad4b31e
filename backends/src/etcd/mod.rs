//! etcd v3, shared by the leaders of several hosts.
//!
//! Everything lives under one key prefix `P`: data at `P d <key>`, dedup records at
//! `P r <client id>`, the change log at `P l <commit sequence number>`, each writer's commit
//! marker at `P c <writer>` (a leader's: its data directory's [`Succession`]). A write group is
//! one etcd transaction with its dedup records and its change log entry, so it
//! commits whole or not at all, and an acknowledged write is on a quorum of members. An
//! iterator pages through the revision it was opened at: a real snapshot, as long as that
//! revision is not compacted.
//!
//! The `Backend` trait blocks (see the crate documentation), and so does this store: each
//! call runs the etcd client on a runtime of its own, on the calling store thread. Those
//! threads exist to block, so no async worker of party-core ever waits on the network.

#[cfg(feature = "etcd")]
mod cluster;
#[cfg(feature = "etcd")]
mod store;

#[cfg(feature = "etcd")]
pub use cluster::LocalCluster;
#[cfg(feature = "etcd")]
pub use store::EtcdBackend;

/// The leaders of one data directory, one after another. They share one commit marker in
/// etcd, and each moves it before it first reads the log's ends or dedup records, or
/// commits: a commit its predecessor sent and never saw answered (the predecessor was
/// killed with it on the network) lands before that or never, so that what the new leader
/// reads there is final.
/// Without it a commit of a dead leader could land after its successor had committed a
/// re-send of the same write, and overwrite what was acknowledged since.
///
/// Random, recorded in the data directory by its first leader; two directories never
/// share one (a copied directory would), or their leaders take turns failing each other's
/// next commit as another writer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Succession(pub u64);

impl Succession {
    /// A succession no other directory has.
    pub fn random() -> Succession {
        Succession(unique_id())
    }
}

/// A number no other caller draws: a seed the OS chose for std's hasher.
fn unique_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// Where a party store lives in etcd. Plain data, there with or without the `etcd`
/// feature, so that options can carry it whatever the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs of the cluster's members, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Every key of the store starts with this; two stores need two prefixes that are not
    /// prefixes of one another.
    pub prefix: Vec<u8>,
}
