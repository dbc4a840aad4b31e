//! etcd v3, shared by the leaders of several hosts.
//!
//! Everything lives under one key prefix `P`: data at `P d <key>`, dedup records at
//! `P r <client id>`, the change log at `P l <commit sequence number>`. A write group is
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
