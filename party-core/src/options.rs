//! How a handle is opened.

use std::path::PathBuf;
use std::time::Duration;

use crate::watch::ChangeRetention;
use crate::Error;
use party_backends::{BackendKind, EtcdConfig};

/// Options for [`crate::open`]. `Options::default()` is what most programs want; the
/// setters chain: `Options::default().retry(false).iter_window(256)`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// The store the leader serves from (must be compiled in by its cargo feature). All
    /// processes of one data directory must use the same.
    pub backend: BackendKind,
    /// Where the etcd store lives, for [`BackendKind::Etcd`] (set by [`Options::etcd`]).
    pub etcd: Option<EtcdConfig>,
    /// Re-send in-flight operations and resume iterators on the new leader after a
    /// failover (true, the default), or fail them with [`crate::Error::ConnectionLost`].
    pub retry: bool,
    /// Fail an operation with [`crate::Error::TimedOut`] once it has waited this long, and
    /// an iterator once its caller has waited as long for its next entries (see
    /// [`Options::request_timeout`]).
    pub request_timeout: Option<Duration>,
    /// Where the leader's socket lives, instead of `<dir>/party.sock` (or the short
    /// fallback used when that path is too long for a Unix socket). The waiting room of a
    /// leader still opening its store is beside it, at `<path>.room`.
    pub socket_path: Option<PathBuf>,
    /// How many entries an iterator may have buffered or on their way at once (the
    /// leader allows at most 4096).
    pub iter_window: u32,
    /// How many bytes of entries (keys and values, and ~20 bytes each) an iterator may
    /// have buffered or on their way at once, but for one entry per pull the leader has
    /// out (it reads at most 1 MiB a pull, four pulls ahead): a pull passes its bytes by the
    /// entry that crosses them, so that an entry bigger than the window still comes.
    pub iter_window_bytes: u64,
    /// What this handle allows while it leads, and the largest message it sends. All
    /// processes of one data directory should use the same.
    pub limits: Limits,
    /// How long the leader keeps a client's dedup record after the client's last write
    /// (a day by default). A write whose answer was lost in a failover is re-sent only
    /// within half of it, so it is never applied twice; one in flight longer fails with
    /// [`crate::Error::OutcomeUnknown`] instead (so it must be at least 2 ms). All
    /// processes of one data directory (and of one etcd prefix) should use the same.
    pub dedup_retention: Duration,
    /// How many times [`crate::Db::transaction`] runs a transaction that meets conflicts
    /// before it gives up with [`crate::TransactionError::Conflict`] (32 by default).
    /// Conflicts are not dealt out fairly: a transaction of a follower that contends for a
    /// key with one of the leader's process is a socket round trip behind it, and can lose
    /// many races in a row while that one commits without pause (most of all on sled,
    /// whose reads wait for the flush of the commit before them; measured: up to 27 in a
    /// row on a quiet machine). Raise it where such contention is expected.
    pub transaction_attempts: u32,
    /// Whether this handle, while it leads, keeps a change feed for [`crate::Db::watch`]:
    /// each commit's writes stored again in the store's change log, in the same commit.
    /// Off by default, since it writes every value twice; then a leader stores only each
    /// commit's number, and subscriptions fail with [`crate::Error::FeedOff`]. Turn it on
    /// in every process of a directory that subscribes (the leader's option applies; the
    /// commits of a leader without it reach subscribers as [`crate::Error::Lagged`]).
    pub change_feed: bool,
    /// How much of the change log the leader keeps for [`crate::Db::watch`] (100 000
    /// commits and 64 MiB by default, whichever is less): a subscriber that falls further
    /// behind gets [`crate::Error::Lagged`]. The leader's own option applies.
    pub change_retention: ChangeRetention,
    /// How many commits a [`crate::Watch`] may have waiting for the caller or on their way
    /// at once (64 by default): all a subscriber that reads slowly costs its leader.
    pub watch_window: u32,
    /// Low-latency mode: how long a waiting end polls its socket before it parks (off,
    /// `None`, by default). A follower with requests in flight polls for the leader's
    /// answer, and a leader's connection, right after an exchange, for the follower's next
    /// request. Parking and waking cost far more than a local round trip on most machines:
    /// measured here (`party bench --only low-latency`), a follower's sequential get takes
    /// ~5 µs instead of 30–60, and less CPU per get; a sequential put ~9 µs instead of
    /// ~50 on fjall and RocksDB, whose small writes sent alone commit on the leader's
    /// connection task (sled's stay on the store thread). An idle handle
    /// never polls, and a wait the other end does not end in time halves the next one's
    /// bound. Each process's own option applies to what it waits for (its leadership's
    /// connections, its requests); 50–200 µs suits a program that asks one thing at a time.
    /// A bound over 10 ms counts as 10 ms.
    pub spin: Option<Duration>,
    /// Record this handle for `party-sim --replay` (see [`crate::Recording`]). Off by
    /// default, unless the environment variable [`crate::RECORD_ENV`] names a directory
    /// when `Options::default()` is called.
    pub record: Option<crate::Recording>,
}

/// Bounds on what a leader accepts, each with a default that suits most programs. Going
/// past one fails that request, iterator or connection with a typed error
/// ([`crate::Error::LimitReached`], [`crate::Error::TooLarge`], [`crate::Error::StoreFull`])
/// and the leader goes on serving everything else. The setters chain:
/// `Limits::default().max_frame_len(1 << 20)`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// The largest message (one request, reply or iterator chunk), in bytes. Default 64 MiB;
    /// at least [`MIN_FRAME_LEN`], or [`crate::open`] fails with
    /// [`crate::Error::InvalidOption`].
    pub max_frame_len: u32,
    /// Follower connections served at once; one more is refused. Default 1024.
    pub max_connections: u32,
    /// Requests one connection may have running at once. Default 4096; at least 1.
    pub max_in_flight: u32,
    /// Iterators one connection may have open at once. Default 256.
    pub max_iterators: u32,
    /// Change feed subscriptions ([`crate::Db::watch`]) one connection may have open at
    /// once. Default 64.
    pub max_watches: u32,
    /// Free space kept on the store's disk: below it, writes fail with
    /// [`crate::Error::StoreFull`] instead of reaching the store. Default 64 MiB.
    pub min_free_space: u64,
}

impl Default for Limits {
    fn default() -> Self {
        let server = party_proto::ServerConfig::default();
        Limits {
            max_frame_len: party_proto::wire::DEFAULT_MAX_FRAME_LEN,
            max_connections: 1024,
            max_in_flight: server.max_in_flight,
            max_iterators: server.max_iterators,
            max_watches: server.max_watches,
            min_free_space: 64 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// The largest message, in bytes.
    pub fn max_frame_len(mut self, bytes: u32) -> Self {
        self.max_frame_len = bytes;
        self
    }

    /// Follower connections served at once.
    pub fn max_connections(mut self, connections: u32) -> Self {
        self.max_connections = connections;
        self
    }

    /// Requests one connection may have running at once.
    pub fn max_in_flight(mut self, requests: u32) -> Self {
        self.max_in_flight = requests;
        self
    }

    /// Iterators one connection may have open at once.
    pub fn max_iterators(mut self, iterators: u32) -> Self {
        self.max_iterators = iterators;
        self
    }

    /// Subscriptions one connection may have open at once.
    pub fn max_watches(mut self, watches: u32) -> Self {
        self.max_watches = watches;
        self
    }

    /// Free space kept on the store's disk, in bytes.
    pub fn min_free_space(mut self, bytes: u64) -> Self {
        self.min_free_space = bytes;
        self
    }
}

impl Options {
    /// The store the leader serves from.
    pub fn backend(mut self, backend: BackendKind) -> Self {
        self.backend = backend;
        self
    }

    /// Serve from an etcd cluster (the `etcd` feature): the store under `prefix` at those
    /// endpoints. The data directories of several hosts may share one prefix: each elects
    /// its own leader, and every leader serves the same data.
    pub fn etcd(mut self, endpoints: Vec<String>, prefix: impl Into<Vec<u8>>) -> Self {
        self.backend = BackendKind::Etcd;
        self.etcd = Some(EtcdConfig {
            endpoints,
            prefix: prefix.into(),
        });
        self
    }

    /// Whether in-flight operations survive a failover (true) or fail with `ConnectionLost`.
    pub fn retry(mut self, retry: bool) -> Self {
        self.retry = retry;
        self
    }

    /// How long an operation may wait before it fails with `TimedOut`; `None` for ever. Zero
    /// is refused at open ([`crate::Error::InvalidOption`]). An iterator keeps to it too:
    /// a caller that waits this long for its next entries (through one call or several
    /// given up on) gets `TimedOut`, which ends the iterator. It holds while this handle's
    /// own store is still opening as it takes over (a journal to replay, an etcd cluster
    /// slow to answer). A [`crate::Watch`] waits for the next change however long it takes
    /// (wrap `Watch::next`, which is cancel-safe, in a timeout of your own).
    pub fn request_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Where the leader's socket lives, instead of `<dir>/party.sock`; its waiting room
    /// beside it, at `<path>.room`.
    pub fn socket_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket_path = Some(path.into());
        self
    }

    /// How many entries an iterator may have buffered or on their way at once.
    pub fn iter_window(mut self, entries: u32) -> Self {
        self.iter_window = entries;
        self
    }

    /// How many bytes of entries an iterator may have buffered or on their way at once.
    pub fn iter_window_bytes(mut self, bytes: u64) -> Self {
        self.iter_window_bytes = bytes;
        self
    }

    /// What this handle allows while it leads, and the largest message it sends.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How many times a transaction is run at most (at least once).
    pub fn transaction_attempts(mut self, attempts: u32) -> Self {
        self.transaction_attempts = attempts;
        self
    }

    /// How long a client's dedup record is kept after its last write.
    pub fn dedup_retention(mut self, retention: Duration) -> Self {
        self.dedup_retention = retention;
        self
    }

    /// Whether this handle keeps a change feed while it leads.
    pub fn change_feed(mut self, on: bool) -> Self {
        self.change_feed = on;
        self
    }

    /// How much of the change log the leader keeps.
    pub fn change_retention(mut self, retention: ChangeRetention) -> Self {
        self.change_retention = retention;
        self
    }

    /// How many commits a subscription may have waiting or on their way.
    pub fn watch_window(mut self, window: u32) -> Self {
        self.watch_window = window;
        self
    }

    /// Low-latency mode: how long a waiting end polls before it parks; `None` turns it off.
    pub fn spin(mut self, bound: Option<Duration>) -> Self {
        self.spin = bound;
        self
    }

    pub fn record(mut self, recording: Option<crate::Recording>) -> Self {
        self.record = recording;
        self
    }
}

/// The smallest [`Limits::max_frame_len`]: every message that is not data (a hello, a
/// welcome, a refusal, an error, whose text the leader cuts to 256 bytes) fits in it.
pub const MIN_FRAME_LEN: u32 = 1024;

/// The shortest [`Options::dedup_retention`]: a write must reach the leader within half of
/// it, counted in whole milliseconds, so below 2 ms every write would fail
/// [`crate::Error::OutcomeUnknown`].
const MIN_DEDUP_RETENTION: Duration = Duration::from_millis(2);

impl Options {
    /// Refuses, before anything is opened, a setting no handle could work with: below it,
    /// errors and refusals could not be sent ([`Limits::max_frame_len`]), every request
    /// would wait forever ([`Limits::max_in_flight`]) or time out at once
    /// ([`Options::request_timeout`] of zero), or every write would fail
    /// [`crate::Error::OutcomeUnknown`] ([`Options::dedup_retention`]).
    pub(crate) fn check(&self) -> Result<(), Error> {
        let invalid = |option, reason| Err(Error::InvalidOption { option, reason });
        if self.limits.max_frame_len < MIN_FRAME_LEN {
            return invalid(
                "limits.max_frame_len",
                "at least MIN_FRAME_LEN (1024 bytes)",
            );
        }
        if self.limits.max_in_flight == 0 {
            return invalid("limits.max_in_flight", "at least 1");
        }
        if self.request_timeout == Some(Duration::ZERO) {
            // As std's socket timeouts refuse a zero: it would not mean "no limit".
            return invalid(
                "request_timeout",
                "more than zero (None waits for ever; with zero every operation would time out)",
            );
        }
        if self.dedup_retention < MIN_DEDUP_RETENTION {
            return invalid(
                "dedup_retention",
                "at least 2 ms (a write must reach the leader within half of it, in whole \
                 milliseconds, or it fails)",
            );
        }
        Ok(())
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backend: default_backend(),
            etcd: None,
            retry: true,
            request_timeout: None,
            socket_path: None,
            // With the leader's pulls overlapping, a full scan through a follower ran
            // 1.7-2.2 M entries/s with 4096, 1.1-1.4 M with 1024 and one pull at a time;
            // the bytes keep big values from filling memory.
            iter_window: 4096,
            iter_window_bytes: 4 << 20,
            limits: Limits::default(),
            dedup_retention: party_proto::DEFAULT_DEDUP_RETENTION,
            transaction_attempts: 32,
            change_feed: false,
            change_retention: ChangeRetention::default(),
            watch_window: 64,
            spin: None,
            record: crate::Recording::from_env(),
        }
    }
}

fn default_backend() -> BackendKind {
    if cfg!(feature = "fjall") {
        BackendKind::Fjall
    } else if cfg!(feature = "rocksdb") {
        BackendKind::Rocksdb
    } else {
        BackendKind::Sled
    }
}
