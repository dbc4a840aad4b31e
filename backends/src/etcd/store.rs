//! The etcd store itself: requests, transactions, paged iterators.

use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, KvClient, SortOrder, SortTarget, Txn,
    TxnOp, TxnOpResponse, TxnResponse,
};
use party_proto::feed::LogEnds;
use party_proto::txn::{CheckRead, CheckValue};
use party_proto::wire::{BatchOp, Entry, ReadCheck, WriteOp};
use party_proto::{ClientId, CommitSeq, DedupRecord, KeyRange};

use crate::batch::{resolve, WriteBatch};
use crate::error::{BackendError, OpenError};
use crate::iter::EntryIter;
use crate::{changes, records, Backend};

use super::{unique_id, EtcdConfig, Succession};

const NAME: &str = "etcd";

/// Why a commit is refused when another store instance moved its marker under it: a
/// leader before this one, whose move of the marker the network delivered late, or a
/// leader of another data directory with the same succession.
const MARKER_MOVED: &str = "the store's commit marker moved: a late copy of an earlier leader's \
                            move, or another writer commits under it (a data directory copied \
                            with its party.store?); nothing of the commit applied";

/// Entries the first page of an iterator asks etcd for; each page after it asks for as
/// many as fit in [`PAGE_BYTES`] at the sizes the page before it read, at most four times
/// as many as that page.
const FIRST_PAGE: i64 = 32;
/// Entries a page asks for at most.
const MAX_PAGE: i64 = 512;
/// What a page aims to hold (keys and values), so that a scan of big values holds a few of
/// them at once, not hundreds. An estimate from the page before: where small values give
/// way to big ones, one page can hold up to [`MAX_PAGE`] of them.
const PAGE_BYTES: usize = 1 << 20;

/// Bytes an answer may take: what etcd sends at most (`math.MaxInt32`), instead of the
/// client's default of 4 MiB, which a `get_many` of 128 values of 32 KiB would exceed. How
/// much a read holds is bounded by what it asks for.
const MAX_ANSWER_BYTES: usize = i32::MAX as usize;

/// How long a request is tried again while members cannot be reached (one down, or the
/// cluster electing its leader): longer than an etcd election takes.
const UNREACHABLE_PATIENCE: Duration = Duration::from_secs(10);

/// How long one try of a request waits for its answer: a member cut off without a word
/// (no reset, as behind a partition) would otherwise hold it until TCP gives up, minutes
/// later, and the store thread with it. Far longer than etcd takes to sync a commit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Operations in one etcd transaction: the server's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;

/// Bytes in one etcd request: the server's default `--max-request-bytes` (1.5 MiB), less
/// room for what a transaction adds around keys and values.
const MAX_REQUEST_BYTES: usize = 1_572_864 - 16 * 1024;

/// A party store in an etcd cluster.
pub struct EtcdBackend {
    client: KvClient,
    /// One worker drives the client's connections; store threads and iterators block on it
    /// at once.
    runtime: Arc<ClientRuntime>,
    data: Vec<u8>,
    records: Vec<u8>,
    /// `P l`: the change log, each entry under its commit sequence number (8 bytes,
    /// big-endian). A commit that keeps its writes (a change feed) creates its entry's key
    /// only if it is absent and the one before is there (the first number: only if the log
    /// is empty), so two hosts' writers never take the same number, nor one trimmed. A marker (no feed) takes its number without that
    /// compare: two hosts without the feed do not contend on the log, and nobody subscribes
    /// to them (the hosts of one prefix must agree on the feed).
    changes: Vec<u8>,
    /// `P c <writer>`: the commit marker of this store's writer, a data directory's
    /// [`Succession`] of leaders or this instance alone. Each commit compares that it was
    /// last set at the revision this writer last knew of it and sets it to a token never
    /// used before, so that a commit tried again (etcd's leader died with it) applies at
    /// most once, one whose reply was lost has landed if the marker holds its token (once
    /// the marker moved on, that cannot be told), and a commit of a leader before this one
    /// never lands after this one moved the marker. The compare is on the revision, not the
    /// token: a fence puts its token with no compare, and a try of it held up in the
    /// network may put it again later.
    marker_key: Vec<u8>,
    marker: Mutex<Marker>,
    /// The revision the leader's writer last read its transactions' reads at
    /// ([`Backend::read_for_checks`]): a commit of those transactions compares that no key
    /// of a range they read changed after it (another host's leader may have written).
    checks_read_at: Mutex<Option<i64>>,
}

/// What this instance knows of its commit marker.
#[derive(Debug, Clone)]
struct Marker {
    /// The marker as this instance last knew it (`None`: never set), or `Err(())` when not
    /// known: after a commit whose outcome could not be settled, or whose answer did not
    /// tell the revision, and before a leader's first read of the log's ends or dedup
    /// records, or commit (its predecessor's commit may still land). Moved before the next
    /// of those.
    last: Result<Option<MarkerValue>, ()>,
    /// Unique to this instance, first in each of its tokens: leaders of one succession
    /// share the marker, and a token of one must never be mistaken for another's.
    instance: u64,
    /// Tokens used so far (commits and fences).
    tried: u64,
}

/// A value of the commit marker, and the revision that set it.
#[derive(Debug, Clone, PartialEq)]
struct MarkerValue {
    token: Vec<u8>,
    set_at: i64,
}

impl Marker {
    /// A token no instance ever used.
    fn next_token(&mut self) -> Vec<u8> {
        self.tried += 1;
        [self.instance.to_be_bytes(), self.tried.to_be_bytes()].concat()
    }

    /// Whether this instance made `token`.
    fn made(&self, token: &[u8]) -> bool {
        token.len() == 16 && token.starts_with(&self.instance.to_be_bytes())
    }
}

/// How fencing a commit ended.
enum Fence {
    /// The marker moved past what the commit compares with: it never lands.
    Fenced,
    /// The commit had landed already, at this revision.
    Landed(i64),
    /// Neither could be told.
    Unknown(BackendError),
}

/// Whether a commit landed, once known.
enum Settled {
    /// At this revision, if the answer told it.
    Landed(Option<i64>),
    Unknown(BackendError),
}

/// The client's runtime, shut down without waiting when the store goes: a store may be
/// dropped on an async task, where waiting for a runtime's threads is not allowed.
struct ClientRuntime(Option<tokio::runtime::Runtime>);

impl ClientRuntime {
    fn runtime(&self) -> &tokio::runtime::Runtime {
        // Taken only by drop.
        self.0
            .as_ref()
            .expect("the runtime lives as long as the store")
    }
}

impl Drop for ClientRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("data", &self.data.escape_ascii().to_string())
            .finish_non_exhaustive()
    }
}

fn store_error(error: etcd_client::Error) -> BackendError {
    BackendError::Store {
        backend: NAME,
        source: Box::new(error),
    }
}

impl EtcdBackend {
    /// Connects to the cluster as a writer of its own (a commit marker no other store
    /// instance uses); fails if no member answers. Blocks, like every call of the store:
    /// call it where blocking is allowed (a thread of its own, `spawn_blocking`), never on
    /// an async task.
    pub fn connect(config: &EtcdConfig) -> Result<Self, OpenError> {
        let instance = unique_id();
        Self::connect_with_marker(config, instance, Ok(None), instance)
    }

    /// Connects to the cluster as the next leader of `succession`, whose commit marker it
    /// moves before it first reads the log's ends or dedup records, or commits: a commit an
    /// earlier leader of it left on the network has landed by then or never will. (Not as
    /// it connects: the move is a write etcd syncs to disk, about 2 ms of every store open;
    /// the store's first job, the read of the log's ends that the first writes wait for
    /// anyway, does it in the same transaction.) Only one store of a succession may be open
    /// at once (the data directory's lock sees to it); blocks, as [`EtcdBackend::connect`].
    pub fn connect_as_leader(
        config: &EtcdConfig,
        succession: Succession,
    ) -> Result<Self, OpenError> {
        Self::connect_with_marker(config, succession.0, Err(()), unique_id())
    }

    /// Connects with the marker `P c <writer>`, whose value is `last` as far as this
    /// instance knows.
    fn connect_with_marker(
        config: &EtcdConfig,
        writer: u64,
        last: Result<Option<MarkerValue>, ()>,
        instance: u64,
    ) -> Result<Self, OpenError> {
        let open_error = |source: Box<dyn std::error::Error + Send + Sync>| OpenError::Store {
            backend: NAME,
            path: config.endpoints.join(",").into(),
            source,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("party-etcd")
            .enable_all()
            .build()
            .map_err(|e| open_error(Box::new(e)))?;
        let client = runtime
            .block_on(async {
                let mut client = Client::connect(&config.endpoints, None).await?;
                // A member answering proves the endpoints; an empty read costs nothing.
                client
                    .get(config.prefix.clone(), Some(GetOptions::new().with_limit(1)))
                    .await?;
                Ok::<_, etcd_client::Error>(
                    client
                        .kv_client()
                        .max_decoding_message_size(MAX_ANSWER_BYTES),
                )
            })
            .map_err(|e| open_error(Box::new(e)))?;
        Ok(EtcdBackend {
            client,
            runtime: Arc::new(ClientRuntime(Some(runtime))),
            data: [config.prefix.as_slice(), b"d"].concat(),
            records: [config.prefix.as_slice(), b"r"].concat(),
            changes: [config.prefix.as_slice(), b"l"].concat(),
            marker_key: [config.prefix.as_slice(), b"c", &writer.to_be_bytes()].concat(),
            marker: Mutex::new(Marker {
                last,
                instance,
                tried: 0,
            }),
            checks_read_at: Mutex::new(None),
        })
    }

    /// The marker's value, settled: when it is not known (after a commit whose outcome is
    /// unknown, or a predecessor's), the marker is moved to a fresh token, so that such a
    /// commit, had it not landed yet, never will: what the store holds is then final, and
    /// the records read next tell the truth about it.
    fn settle(&self, marker: &mut Marker) -> Result<Option<MarkerValue>, BackendError> {
        if let Ok(last) = &marker.last {
            return Ok(last.clone());
        }
        let token = marker.next_token();
        let response = self.send(Txn::new().and_then([self.put_marker(&token)]))?;
        let last = MarkerValue {
            token,
            set_at: revision(&response)?,
        };
        marker.last = Ok(Some(last.clone()));
        Ok(Some(last))
    }

    /// Sets the marker to `token`, a fence when what it holds is not known. The put compares
    /// nothing: whatever the marker held, no commit comparing with that lands after it. (A
    /// try of it held up in the network and put again later moves the marker once more,
    /// which fences the commits under way then: they compare the revision the marker was
    /// set at, not its token.)
    fn put_marker(&self, token: &[u8]) -> TxnOp {
        TxnOp::put(self.marker_key.clone(), token, None)
    }

    /// Sends one transaction (tried again as [`EtcdBackend::block_on`] says).
    fn send(&self, txn: Txn) -> Result<TxnResponse, BackendError> {
        self.send_telling_tries(txn).0
    }

    /// Sends one transaction, as [`EtcdBackend::send`], and tells whether it was sent more
    /// than once: a try before the one answered may have landed.
    fn send_telling_tries(&self, txn: Txn) -> (Result<TxnResponse, BackendError>, bool) {
        let tries = std::cell::Cell::new(0_u32);
        let answer = self.block_on(|| {
            tries.set(tries.get() + 1);
            let mut client = self.client.clone();
            let txn = txn.clone();
            async move { client.txn(txn).await }
        });
        (answer, tries.get() > 1)
    }

    /// About how many bytes the transaction of `batch` takes: its keys (with their prefix)
    /// and values, a few bytes of framing each.
    fn request_bytes(&self, batch: &WriteBatch) -> usize {
        let key = |key: &[u8]| self.data.len() + key.len() + 8;
        let steps = |ops: &[BatchOp]| -> usize {
            ops.iter()
                .map(|op| match op {
                    BatchOp::Put { key: k, value } => key(k) + value.len(),
                    BatchOp::Del { key: k } => key(k),
                })
                .sum()
        };
        let writes: usize = batch
            .ops
            .iter()
            .map(|op| match op {
                WriteOp::Put { key: k, value } => key(k) + value.len(),
                WriteOp::Del { key: k } => key(k),
                WriteOp::Batch { ops } => steps(ops),
                // Its reads travel as compares.
                WriteOp::Transaction { reads, writes } => {
                    steps(writes)
                        + reads
                            .iter()
                            .map(|read| match read {
                                ReadCheck::Key { key: k, value } => {
                                    key(k) + value.as_ref().map_or(0, Vec::len)
                                }
                                ReadCheck::Range { entries, .. } => {
                                    2 * key(&[])
                                        + entries.iter().map(|e| key(&e.key)).sum::<usize>()
                                }
                            })
                            .sum::<usize>()
                }
                WriteOp::Clear { range } => {
                    let bound = |b: &Bound<Vec<u8>>| match b {
                        Bound::Included(k) | Bound::Excluded(k) => k.len(),
                        Bound::Unbounded => 0,
                    };
                    2 * (self.data.len() + 8) + bound(&range.start) + bound(&range.end)
                }
            })
            .sum();
        let records: usize = batch
            .records
            .iter()
            .map(|(_, record)| self.records.len() + 24 + records::value(record).len())
            .sum();
        let log = batch
            .log
            .as_ref()
            .map_or(0, |append| self.changes.len() + 24 + append.entry.len());
        writes + records + log + 2 * (self.marker_key.len() + 24)
    }

    fn change_key(&self, seq: CommitSeq) -> Vec<u8> {
        [self.changes.as_slice(), &seq.key()].concat()
    }

    /// The compare of a commit: nothing set the marker since `last` (`None`: was never set).
    fn marker_unchanged(&self, last: &Option<MarkerValue>) -> Compare {
        match last {
            None => Compare::version(self.marker_key.clone(), CompareOp::Equal, 0),
            Some(last) => {
                Compare::mod_revision(self.marker_key.clone(), CompareOp::Equal, last.set_at)
            }
        }
    }

    fn data_key(&self, key: &[u8]) -> Vec<u8> {
        [self.data.as_slice(), key].concat()
    }

    /// `range` as etcd's `[key, range_end)` under the data prefix; `None` if empty.
    fn etcd_range(&self, range: &KeyRange) -> Option<(Vec<u8>, Vec<u8>)> {
        if range.is_empty() {
            return None;
        }
        let start = match &range.start {
            Bound::Included(key) => self.data_key(key),
            Bound::Excluded(key) => [self.data_key(key), vec![0]].concat(),
            Bound::Unbounded => self.data.clone(),
        };
        let end = match &range.end {
            Bound::Excluded(key) => self.data_key(key),
            Bound::Included(key) => [self.data_key(key), vec![0]].concat(),
            Bound::Unbounded => prefix_end(&self.data),
        };
        (start < end).then_some((start, end))
    }

    /// Runs one request, tried again for a while if it did not get through (see
    /// [`retryable`]).
    fn block_on<T, F>(&self, call: impl Fn() -> F) -> Result<T, BackendError>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        block_on(self.runtime.runtime(), call)
    }

    /// The writes of a group as etcd operations: each key it writes, put or deleted, then
    /// each range it clears deleted around those keys (etcd refuses a key in two
    /// operations of one transaction). A clear so costs a few operations however many keys
    /// it removes, and removes what its range holds when the group commits, even keys
    /// another host wrote a moment before.
    fn group_ops(&self, writes: &[WriteOp]) -> Result<Vec<TxnOp>, BackendError> {
        // The keys the group itself writes, as the writes leave them (a clear turns the
        // earlier ones into deletes); the other keys of the cleared ranges are left to
        // the range deletes.
        let effect = resolve(writes, |_| Ok(Vec::new()))?;
        let mut ops: Vec<TxnOp> = effect
            .iter()
            .map(|(key, value)| match value {
                Some(value) => TxnOp::put(self.data_key(key), value.to_vec(), None),
                None => TxnOp::delete(self.data_key(key), None::<DeleteOptions>),
            })
            .collect();
        let written: Vec<Vec<u8>> = effect.keys().map(|key| self.data_key(key)).collect();
        for (start, end) in merged(writes.iter().filter_map(|write| match write {
            WriteOp::Clear { range } => self.etcd_range(range),
            _ => None,
        })) {
            let inside: Vec<&Vec<u8>> = written
                .iter()
                .filter(|key| **key >= start && **key < end)
                .collect();
            let mut from = start;
            for key in inside {
                if from < *key {
                    ops.push(delete_range(from, key.clone()));
                }
                from = [key.as_slice(), &[0]].concat();
            }
            if from < end {
                ops.push(delete_range(from, end));
            }
        }
        Ok(ops)
    }

    /// Whole etcd keys read at one revision (`revision`, or now if 0): one transaction for
    /// up to [`MAX_TXN_OPS`] keys, the next ones at the revision the first read.
    fn get_raw_many(
        &self,
        keys: &[Vec<u8>],
        revision: i64,
    ) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let mut values = Vec::with_capacity(keys.len());
        let mut revision = revision;
        for chunk in keys.chunks(MAX_TXN_OPS) {
            let at = (revision > 0).then(|| GetOptions::new().with_revision(revision));
            let reads: Vec<TxnOp> = chunk
                .iter()
                .map(|key| TxnOp::get(key.clone(), at.clone()))
                .collect();
            let response = self.send(Txn::new().and_then(reads))?;
            if revision == 0 {
                revision = response.header().map_or(0, |header| header.revision());
            }
            values.extend(
                response
                    .op_responses()
                    .into_iter()
                    .map(|answer| match answer {
                        etcd_client::TxnOpResponse::Get(got) => {
                            got.kvs().first().map(|kv| kv.value().to_vec())
                        }
                        _ => None,
                    }),
            );
        }
        Ok(values)
    }

    fn record_key(&self, client: ClientId) -> Vec<u8> {
        [self.records.as_slice(), &records::key(client)].concat()
    }

    /// Removes records that still hold what the sweep read (`mod_revision`s unchanged): a
    /// record another host's leader rewrote meanwhile stays. One transaction for the lot;
    /// if one of them moved, each alone.
    fn remove_unchanged(&self, stale: &[(Vec<u8>, i64)]) -> Result<(), BackendError> {
        let remove = |stale: &[(Vec<u8>, i64)]| {
            let unchanged: Vec<Compare> = stale
                .iter()
                .map(|(key, revision)| {
                    Compare::mod_revision(key.clone(), CompareOp::Equal, *revision)
                })
                .collect();
            let deletes: Vec<TxnOp> = stale
                .iter()
                .map(|(key, _)| TxnOp::delete(key.clone(), None::<DeleteOptions>))
                .collect();
            self.send(Txn::new().when(unchanged).and_then(deletes))
                .map(|response| response.succeeded())
        };
        for chunk in stale.chunks(MAX_TXN_OPS) {
            if !remove(chunk)? && chunk.len() > 1 {
                for one in chunk {
                    remove(std::slice::from_ref(one))?;
                }
            }
        }
        Ok(())
    }

    /// Moves the marker from `last` to a token never used, so that no try of the commit
    /// `token` can land any more, unless one already has. One transaction: the move, or if
    /// the marker no longer holds `last`, a read of what it holds.
    fn fence(&self, marker: &mut Marker, last: &Option<MarkerValue>, token: &[u8]) -> Fence {
        let fence = marker.next_token();
        let txn = Txn::new()
            .when([self.marker_unchanged(last)])
            .and_then([self.put_marker(&fence)])
            .or_else([TxnOp::get(self.marker_key.clone(), None)]);
        match self.send(txn) {
            Ok(response) if response.succeeded() => {
                marker.last = revision(&response)
                    .map(|set_at| {
                        Some(MarkerValue {
                            token: fence,
                            set_at,
                        })
                    })
                    .map_err(drop);
                Fence::Fenced
            }
            Ok(response) => match marker_read(&response) {
                Some(now) if now.token == token => Fence::Landed(now.set_at),
                // A try of this move landed, its answer lost: the try sent again finds the
                // marker moved by it, from `last`, so the commit had not landed then.
                Some(now) if now.token == fence => {
                    marker.last = Ok(Some(now));
                    Fence::Fenced
                }
                _ => Fence::Unknown(BackendError::Store {
                    backend: NAME,
                    source: MARKER_MOVED.into(),
                }),
            },
            Err(error) => Fence::Unknown(error),
        }
    }

    /// The store's revision now.
    fn revision_now(&self) -> Result<i64, BackendError> {
        let now = self.block_on(|| {
            let mut client = self.client.clone();
            let key = self.marker_key.clone();
            async move { client.get(key, None).await }
        })?;
        Ok(now.header().map_or(0, |header| header.revision()))
    }

    /// The etcd keys `[start, end)` as they were at `revision`, a page at a time.
    fn pages(&self, start: Vec<u8>, end: Vec<u8>, reverse: bool, revision: i64) -> Pages {
        Pages {
            client: self.client.clone(),
            runtime: self.runtime.clone(),
            strip: self.data.len(),
            revision,
            start,
            end,
            reverse,
            limit: FIRST_PAGE,
            page: Vec::new().into_iter(),
            done: false,
        }
    }

    /// The compares that make a commit of `writes` land only while the reads of its
    /// transactions still hold: a key read holds its value (or is still absent); a range
    /// read still has each key it saw, and no key of it changed or appeared since the
    /// revision the writer read it at. The writer checked the same a moment before, but
    /// another host's leader may write in between.
    fn read_compares(&self, writes: &[WriteOp]) -> Result<Vec<Compare>, BackendError> {
        let mut compares = Vec::new();
        let stale = || BackendError::Stale { backend: NAME };
        for write in writes {
            let WriteOp::Transaction { reads, .. } = write else {
                continue;
            };
            for read in reads {
                match read {
                    ReadCheck::Key { key, value: None } => {
                        compares.push(Compare::version(self.data_key(key), CompareOp::Equal, 0));
                    }
                    ReadCheck::Key {
                        key,
                        value: Some(value),
                    } => compares.push(Compare::value(
                        self.data_key(key),
                        CompareOp::Equal,
                        value.clone(),
                    )),
                    ReadCheck::Range { range, entries } => {
                        let Some((start, end)) = self.etcd_range(range) else {
                            continue;
                        };
                        let read_at = self
                            .checks_read_at
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .ok_or_else(stale)?;
                        compares.extend(entries.iter().map(|entry| {
                            Compare::version(self.data_key(&entry.key), CompareOp::Greater, 0)
                        }));
                        compares.push(
                            Compare::mod_revision(start, CompareOp::Less, read_at + 1)
                                .with_range(end),
                        );
                    }
                }
            }
        }
        Ok(compares)
    }

    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        let response = self.block_on(|| {
            let mut client = self.client.clone();
            let key = key.to_vec();
            async move { client.get(key, None).await }
        })?;
        Ok(response.kvs().first().map(|kv| kv.value().to_vec()))
    }
}

/// Whether `error` says the request may not have reached a quorum (a member down, a
/// connection broken, etcd's leader lost with the request, no answer in
/// [`REQUEST_TIMEOUT`]): then it is tried again. Safe for reads, and for commits because
/// each compares the writer's commit marker first; a move of the marker without a compare
/// (a fence) may land twice, the second time late, which the commits' compare of the
/// revision the marker was set at, and [`Marker::made`], allow for.
fn retryable(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            let broken = std::error::Error::source(status)
                .is_some_and(|source| source.is::<tonic::transport::Error>());
            broken
                || matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                )
        }
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

fn block_on<T, F>(
    runtime: &tokio::runtime::Runtime,
    call: impl Fn() -> F,
) -> Result<T, BackendError>
where
    F: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + UNREACHABLE_PATIENCE;
    runtime.block_on(async {
        loop {
            // Timed here, not by the client's option, which sends etcd the deadline with
            // each request: that cost in-process gets on etcd a seventh of their rate
            // (docs/benchmarks.md). A try given up on is cancelled (its stream reset).
            let answer = tokio::time::timeout(REQUEST_TIMEOUT, call())
                .await
                .unwrap_or_else(|_| {
                    let late = format!("no answer within {REQUEST_TIMEOUT:?}");
                    Err(etcd_client::Error::GRpcStatus(
                        tonic::Status::deadline_exceeded(late),
                    ))
                });
            match answer {
                Err(error) if retryable(&error) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                result => return result.map_err(store_error),
            }
        }
    })
}

/// The marker as the read in the answer of a transaction that failed its compares gave it
/// (the marker's read is all its other branch does).
fn marker_read(response: &TxnResponse) -> Option<MarkerValue> {
    response
        .op_responses()
        .into_iter()
        .find_map(|op| match op {
            TxnOpResponse::Get(read) => Some(read.kvs().first().map(|kv| MarkerValue {
                token: kv.value().to_vec(),
                set_at: kv.mod_revision(),
            })),
            _ => None,
        })
        .flatten()
}

/// The revision a transaction that wrote was applied at: each key it wrote was set at it.
fn revision(response: &TxnResponse) -> Result<i64, BackendError> {
    response
        .header()
        .map(|header| header.revision())
        .ok_or_else(|| BackendError::Store {
            backend: NAME,
            source: "etcd answered a transaction without its revision".into(),
        })
}

/// Deletes every key in `[start, end)`.
fn delete_range(start: Vec<u8>, end: Vec<u8>) -> TxnOp {
    TxnOp::delete(start, Some(DeleteOptions::new().with_range(end)))
}

/// The union of `[start, end)` ranges, as ranges that neither overlap nor touch, in order.
fn merged(ranges: impl Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut ranges: Vec<_> = ranges.collect();
    ranges.sort();
    let mut union: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match union.last_mut() {
            Some((_, last_end)) if start <= *last_end => {
                if end > *last_end {
                    *last_end = end;
                }
            }
            _ => union.push((start, end)),
        }
    }
    union
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // A prefix of only 0xff bytes: etcd's "to the end of the key space".
    vec![0]
}

impl Backend for EtcdBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        self.get_raw(&self.data_key(key))
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let keys: Vec<Vec<u8>> = keys.iter().map(|key| self.data_key(key)).collect();
        self.get_raw_many(&keys, 0)
    }

    /// The net effect of the group and its dedup records, as one transaction.
    fn write(&self, batch: &WriteBatch) -> Result<(), BackendError> {
        let mut ops = self.group_ops(&batch.ops)?;
        ops.extend(batch.records.iter().map(|(client, record)| {
            TxnOp::put(self.record_key(*client), records::value(record), None)
        }));
        if ops.is_empty() && batch.log.is_none() {
            return Ok(());
        }
        let bytes = self.request_bytes(batch);
        if bytes > MAX_REQUEST_BYTES {
            return Err(BackendError::RequestTooLarge {
                backend: NAME,
                bytes,
                max: MAX_REQUEST_BYTES,
            });
        }
        let mut compares = self.read_compares(&batch.ops)?;
        // Room is kept for the change log entry and the commit marker, an operation and a
        // compare each.
        let most = self.max_batch_ops().unwrap_or(MAX_TXN_OPS);
        if ops.len() > most || compares.len() > most {
            return Err(BackendError::BatchTooLarge {
                backend: NAME,
                ops: ops.len().max(compares.len()),
                max: most,
            });
        }
        if let Some(append) = &batch.log {
            let key = self.change_key(append.seq);
            let kept = party_proto::feed::decode_entry(&append.entry).is_ok_and(|c| c.is_some());
            if kept {
                compares.push(Compare::version(key.clone(), CompareOp::Equal, 0));
                if append.seq > CommitSeq::FIRST {
                    let before = self.change_key(CommitSeq(append.seq.0 - 1));
                    compares.push(Compare::version(before, CompareOp::Greater, 0));
                } else {
                    // The first number only on an empty log: another host's writer may
                    // have taken it and trimmed it since (its key absent again) while
                    // this one's ends still said the log was empty.
                    let log = Compare::version(self.changes.clone(), CompareOp::Equal, 0);
                    compares.push(log.with_range(prefix_end(&self.changes)));
                }
            }
            ops.push(TxnOp::put(key, append.entry.clone(), None));
        }
        let mut marker = self.marker.lock().unwrap_or_else(|e| e.into_inner());
        let last = self.settle(&mut marker)?;
        let token = marker.next_token();
        ops.push(self.put_marker(&token));
        compares.push(self.marker_unchanged(&last));
        let txn = Txn::new()
            .when(compares)
            .and_then(ops)
            .or_else([TxnOp::get(self.marker_key.clone(), None)]);
        let (answer, tried_again) = self.send_telling_tries(txn);
        let settled = match answer {
            Ok(response) if response.succeeded() => Settled::Landed(revision(&response).ok()),
            // A compare failed: an earlier try of this very commit landed (its reply lost,
            // the marker holds its token), a transaction's read or the log's number no
            // longer holds (the marker is unchanged), or the marker moved: another
            // process's move, or a late copy of this one's own.
            Ok(response) => match marker_read(&response) {
                Some(now) if now.token == token => Settled::Landed(Some(now.set_at)),
                // A read no longer holds, and the one try sent was refused: nothing of it
                // is on its way.
                now if now == last && !tried_again => {
                    return Err(BackendError::Stale { backend: NAME })
                }
                // A read no longer holds. An earlier try of this commit (sent again after
                // no answer) may still be on its way, and land once the value is back:
                // fenced, it never will.
                now if now == last => match self.fence(&mut marker, &last, &token) {
                    Fence::Fenced => return Err(BackendError::Stale { backend: NAME }),
                    Fence::Landed(set_at) => Settled::Landed(Some(set_at)),
                    Fence::Unknown(error) => Settled::Unknown(error),
                },
                // An earlier try may have landed before the marker moved: nobody can tell
                // any more (and the next commit moves the marker before it compares).
                _ if tried_again => Settled::Unknown(BackendError::Store {
                    backend: NAME,
                    source: MARKER_MOVED.into(),
                }),
                // The one try sent, refused whole: nothing landed. This store's own move of
                // the marker (a fence held up in the network, its try sent again) reached
                // etcd late: committed again, the writes land.
                Some(now) if marker.made(&now.token) => {
                    marker.last = Ok(Some(now));
                    return Err(BackendError::Stale { backend: NAME });
                }
                now => {
                    marker.last = Ok(now);
                    return Err(BackendError::Store {
                        backend: NAME,
                        source: MARKER_MOVED.into(),
                    });
                }
            },
            // No answer: the transaction may land now or later. Moving the marker past
            // what it compares with settles that: if the move succeeds it never will.
            Err(error) => match self.fence(&mut marker, &last, &token) {
                Fence::Fenced => return Err(error),
                Fence::Landed(set_at) => Settled::Landed(Some(set_at)),
                Fence::Unknown(_) => Settled::Unknown(error),
            },
        };
        match settled {
            // Landed where the answer does not tell: the marker is moved before it is
            // compared with again.
            Settled::Landed(set_at) => {
                marker.last = set_at
                    .map(|set_at| Some(MarkerValue { token, set_at }))
                    .ok_or(());
                Ok(())
            }
            Settled::Unknown(error) => {
                marker.last = Err(());
                Err(BackendError::Unsettled {
                    backend: NAME,
                    source: Box::new(error),
                })
            }
        }
    }

    fn iter(&self, range: &KeyRange, reverse: bool) -> Result<EntryIter, BackendError> {
        let Some((start, end)) = self.etcd_range(range) else {
            return Ok(Box::new(std::iter::empty()));
        };
        // The revision every page reads: the store as it is now.
        let revision = self.revision_now()?;
        Ok(Box::new(self.pages(start, end, reverse, revision)))
    }

    fn read_for_checks(&self, reads: &[CheckRead]) -> Result<Vec<CheckValue>, BackendError> {
        let revision = self.revision_now()?;
        let keys: Vec<Vec<u8>> = reads
            .iter()
            .filter_map(|read| match read {
                CheckRead::Key(key) => Some(self.data_key(key)),
                CheckRead::Range { .. } => None,
            })
            .collect();
        let mut values = self.get_raw_many(&keys, revision)?.into_iter();
        let answers = reads
            .iter()
            .map(|read| match read {
                CheckRead::Key(_) => Ok(CheckValue::Value(values.next().flatten())),
                CheckRead::Range { range, limit } => match self.etcd_range(range) {
                    None => Ok(CheckValue::Entries(Vec::new())),
                    Some((start, end)) => self
                        .pages(start, end, false, revision)
                        .take(*limit)
                        .collect::<Result<_, _>>()
                        .map(CheckValue::Entries),
                },
            })
            .collect::<Result<_, _>>()?;
        *self
            .checks_read_at
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(revision);
        Ok(answers)
    }

    /// A read is a round trip to a quorum.
    fn reads_fast(&self) -> bool {
        false
    }

    /// Less the commit marker and the change log entry.
    fn max_batch_ops(&self) -> Option<usize> {
        Some(MAX_TXN_OPS - 2)
    }

    fn change_entries(
        &self,
        from: CommitSeq,
        newest_first: bool,
        max: usize,
    ) -> Result<Vec<(CommitSeq, Vec<u8>)>, BackendError> {
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let (start, options) = if newest_first {
            let end = [self.change_key(from), vec![0]].concat();
            let options = GetOptions::new()
                .with_range(end)
                .with_limit(limit)
                .with_sort(SortTarget::Key, SortOrder::Descend);
            (self.changes.clone(), options)
        } else {
            let options = GetOptions::new()
                .with_range(prefix_end(&self.changes))
                .with_limit(limit);
            (self.change_key(from), options)
        };
        let response = self.block_on(|| {
            let mut client = self.client.clone();
            let (start, options) = (start.clone(), options.clone());
            async move { client.get(start, Some(options)).await }
        })?;
        let strip = self.changes.len();
        response
            .kvs()
            .iter()
            .map(|kv| changes::stored(&kv.key()[strip..], kv.value().to_vec()))
            .collect()
    }

    /// One transaction, one round trip: the log's oldest entry and its newest, read after
    /// the marker is moved if its value is not known (a new leader's first read, or after a
    /// commit of unknown outcome): such a commit lands before the ends are read or never,
    /// so the number they give the next commit is not one it took meanwhile. The move needs
    /// no compare: whatever the marker held, no commit comparing with it lands after.
    fn change_log_ends(&self) -> Result<Option<LogEnds>, BackendError> {
        let mut marker = self.marker.lock().unwrap_or_else(|e| e.into_inner());
        let fence = marker.last.is_err().then(|| marker.next_token());
        let log = || {
            GetOptions::new()
                .with_range(prefix_end(&self.changes))
                .with_limit(1)
        };
        let mut ops: Vec<TxnOp> = fence.iter().map(|token| self.put_marker(token)).collect();
        ops.push(TxnOp::get(self.changes.clone(), Some(log())));
        ops.push(TxnOp::get(
            self.changes.clone(),
            Some(log().with_sort(SortTarget::Key, SortOrder::Descend)),
        ));
        let response = self.send(Txn::new().and_then(ops))?;
        if let Some(token) = fence {
            let set_at = revision(&response)?;
            marker.last = Ok(Some(MarkerValue { token, set_at }));
        }
        let strip = self.changes.len();
        let mut entries = response
            .op_responses()
            .into_iter()
            .filter_map(|op| match op {
                TxnOpResponse::Get(read) => Some(
                    read.kvs()
                        .first()
                        .map(|kv| changes::stored(&kv.key()[strip..], kv.value().to_vec())),
                ),
                _ => None,
            });
        match (entries.next().flatten(), entries.next().flatten()) {
            (Some(oldest), Some(newest)) => {
                let ((first, oldest), (last, newest)) = (oldest?, newest?);
                Ok(Some(LogEnds {
                    first: changes::span(first, &oldest)?,
                    last: changes::span(last, &newest)?,
                }))
            }
            _ => Ok(None),
        }
    }

    fn remove_changes(&self, seqs: &[CommitSeq]) -> Result<(), BackendError> {
        for chunk in seqs.chunks(MAX_TXN_OPS) {
            let deletes: Vec<TxnOp> = chunk
                .iter()
                .map(|seq| TxnOp::delete(self.change_key(*seq), None::<DeleteOptions>))
                .collect();
            self.send(Txn::new().and_then(deletes))?;
        }
        Ok(())
    }

    fn dedup_records_of(
        &self,
        clients: &[ClientId],
    ) -> Result<Vec<Option<DedupRecord>>, BackendError> {
        // A commit of this instance whose outcome is unknown must not land after the
        // records are read: they would then deny a write that did land. (The marker is
        // held through the read, so that no commit becomes such a one meanwhile.)
        let mut marker = self.marker.lock().unwrap_or_else(|e| e.into_inner());
        self.settle(&mut marker)?;
        let keys: Vec<Vec<u8>> = clients.iter().map(|c| self.record_key(*c)).collect();
        self.get_raw_many(&keys, 0)?
            .into_iter()
            .zip(clients)
            .map(|(value, client)| {
                value
                    .map(|value| records::decode(&records::key(*client), &value))
                    .transpose()
                    .map(|found| found.map(|(_, record)| record))
            })
            .collect()
    }

    fn expire_dedup_records(
        &self,
        written_before_ms: u64,
        after: Option<ClientId>,
        max: usize,
    ) -> Result<Option<ClientId>, BackendError> {
        let options = GetOptions::new()
            .with_range(prefix_end(&self.records))
            .with_limit(i64::try_from(max).unwrap_or(i64::MAX));
        let strip = self.records.len();
        records::expire_page(
            written_before_ms,
            after,
            max,
            |first| {
                let start = [self.records.as_slice(), first].concat();
                let response = self.block_on(|| {
                    let mut client = self.client.clone();
                    let (start, options) = (start.clone(), options.clone());
                    async move { client.get(start, Some(options)).await }
                })?;
                let stored: Vec<_> = response
                    .kvs()
                    .iter()
                    .map(|kv| {
                        let key = Revisioned {
                            key: kv.key()[strip..].to_vec(),
                            revision: kv.mod_revision(),
                        };
                        Ok((key, kv.value().to_vec()))
                    })
                    .collect();
                Ok(stored.into_iter())
            },
            |expired| {
                let stale: Vec<(Vec<u8>, i64)> = expired
                    .into_iter()
                    .map(|found| {
                        let key = [self.records.as_slice(), &found.key].concat();
                        (key, found.revision)
                    })
                    .collect();
                self.remove_unchanged(&stale)
            },
        )
    }
}

/// A record's key under the records prefix, and the revision it was read at.
struct Revisioned {
    key: Vec<u8>,
    revision: i64,
}

impl AsRef<[u8]> for Revisioned {
    fn as_ref(&self) -> &[u8] {
        &self.key
    }
}

/// An iterator reading one revision of a range, a page at a time.
struct Pages {
    client: KvClient,
    runtime: Arc<ClientRuntime>,
    strip: usize,
    revision: i64,
    /// What is left to read: `[start, end)`.
    start: Vec<u8>,
    end: Vec<u8>,
    reverse: bool,
    /// Entries the next page asks for.
    limit: i64,
    page: std::vec::IntoIter<Entry>,
    done: bool,
}

impl Pages {
    fn next_page(&mut self) -> Result<(), BackendError> {
        let mut options = GetOptions::new()
            .with_range(self.end.clone())
            .with_limit(self.limit)
            .with_revision(self.revision);
        if self.reverse {
            options = options.with_sort(SortTarget::Key, SortOrder::Descend);
        }
        let response = block_on(self.runtime.runtime(), || {
            let mut client = self.client.clone();
            let (start, options) = (self.start.clone(), options.clone());
            async move { client.get(start, Some(options)).await }
        })?;
        let kvs = response.kvs();
        match (kvs.last(), self.reverse) {
            (Some(last), false) => self.start = [last.key(), &[0]].concat(),
            (Some(last), true) => self.end = last.key().to_vec(),
            (None, _) => {}
        }
        self.done = !response.more();
        let bytes = kvs.iter().map(|kv| kv.key().len() + kv.value().len()).sum();
        self.limit = next_page_limit(self.limit, kvs.len(), bytes);
        self.page = kvs
            .iter()
            .map(|kv| Entry {
                key: kv.key()[self.strip..].to_vec(),
                value: kv.value().to_vec(),
            })
            .collect::<Vec<_>>()
            .into_iter();
        Ok(())
    }
}

/// Entries the page after one of `limit` asked for, which read `entries` of `bytes`.
fn next_page_limit(limit: i64, entries: usize, bytes: usize) -> i64 {
    if entries == 0 {
        return limit;
    }
    let fit = PAGE_BYTES / bytes.div_ceil(entries).max(1);
    i64::try_from(fit)
        .unwrap_or(MAX_PAGE)
        .clamp(1, MAX_PAGE.min(limit.saturating_mul(4)))
}

impl Iterator for Pages {
    type Item = Result<Entry, BackendError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(entry) = self.page.next() {
                return Some(Ok(entry));
            }
            if self.done {
                return None;
            }
            if let Err(error) = self.next_page() {
                self.done = true;
                return Some(Err(error));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::LocalCluster;
    use party_proto::wire::WriteOp;

    fn put(key: &[u8]) -> WriteBatch {
        WriteBatch {
            ops: vec![WriteOp::Put {
                key: key.to_vec(),
                value: b"v".to_vec(),
            }],
            records: Vec::new(),
            log: None,
        }
    }

    fn mod_revision(store: &EtcdBackend, key: &[u8]) -> i64 {
        etcd_mod_revision(store, &store.data_key(key))
    }

    /// The revision that last set the etcd key `key` (the store's prefix included).
    fn etcd_mod_revision(store: &EtcdBackend, key: &[u8]) -> i64 {
        let read = TxnOp::get(key, None);
        let response = store.send(Txn::new().and_then([read])).unwrap();
        match &response.op_responses()[0] {
            TxnOpResponse::Get(read) => read.kvs()[0].mod_revision(),
            _ => unreachable!("a read answers a read"),
        }
    }

    /// A batch of `key` that appends its change log entry as number `seq`.
    fn logged(seq: u64, key: &[u8]) -> WriteBatch {
        let ops = put(key).ops;
        WriteBatch {
            log: Some(party_proto::LogAppend {
                seq: CommitSeq(seq),
                entry: party_proto::feed::encode_entry(0, &ops),
            }),
            ops,
            records: Vec::new(),
        }
    }

    /// Sets the commit marker behind the store's back, as a try whose reply was lost (or
    /// another process) would, along with `also`.
    fn move_marker(store: &EtcdBackend, token: &[u8], also: Option<&[u8]>) {
        let mut ops = vec![store.put_marker(token)];
        ops.extend(also.map(|key| TxnOp::put(store.data_key(key), "v", None)));
        store.send(Txn::new().and_then(ops)).unwrap();
    }

    #[test]
    fn cleared_ranges_are_merged_where_they_overlap_or_touch() {
        let range = |a: &[u8], b: &[u8]| (a.to_vec(), b.to_vec());
        let ranges = [
            range(b"m", b"p"),
            range(b"a", b"c"),
            range(b"b", b"d"),
            range(b"d", b"e"),
        ];
        assert_eq!(
            merged(ranges.into_iter()),
            [range(b"a", b"e"), range(b"m", b"p")]
        );
        assert!(merged(std::iter::empty()).is_empty());
    }

    /// Two stores on one prefix of `cluster`, as the leaders of two hosts.
    fn two_hosts(cluster: &LocalCluster) -> (EtcdBackend, EtcdBackend) {
        let config = EtcdConfig {
            endpoints: cluster.endpoints(),
            prefix: b"shared/".to_vec(),
        };
        let connect = || EtcdBackend::connect(&config).unwrap();
        (connect(), connect())
    }

    /// Two stores on one prefix, as the leaders of two hosts: a transaction one checked
    /// is refused (nothing applied) if the other changed what it read, a value or a key
    /// new in a range, after the first read it; and lands if nothing did.
    #[test]
    fn a_transaction_another_host_changed_the_reads_of_is_stale_and_applies_nothing() {
        let cluster = LocalCluster::start(1).unwrap();
        let (here, other) = two_hosts(&cluster);
        here.write(&put(b"k")).unwrap();
        let range = KeyRange {
            start: std::ops::Bound::Included(b"r/".to_vec()),
            end: std::ops::Bound::Excluded(b"r0".to_vec()),
        };
        let txn = |reads: Vec<ReadCheck>| WriteBatch {
            ops: vec![WriteOp::Transaction {
                reads,
                writes: vec![BatchOp::Put {
                    key: b"out".to_vec(),
                    value: b"1".to_vec(),
                }],
            }],
            records: Vec::new(),
            log: None,
        };
        let key_read = || ReadCheck::Key {
            key: b"k".to_vec(),
            value: Some(b"v".to_vec()),
        };
        let range_read = || ReadCheck::Range {
            range: range.clone(),
            entries: Vec::new(),
        };
        let checks = [
            CheckRead::Key(b"k".to_vec()),
            CheckRead::Range {
                range: range.clone(),
                limit: 1,
            },
        ];
        here.read_for_checks(&checks).unwrap();
        other.write(&put(b"r/phantom")).unwrap();
        let refused = here.write(&txn(vec![key_read(), range_read()]));
        assert!(
            matches!(refused, Err(BackendError::Stale { .. })),
            "{refused:?}"
        );
        assert_eq!(here.get(b"out").unwrap(), None);
        here.read_for_checks(&checks).unwrap();
        other
            .write(&WriteBatch {
                ops: vec![WriteOp::Put {
                    key: b"k".to_vec(),
                    value: b"changed".to_vec(),
                }],
                records: Vec::new(),
                log: None,
            })
            .unwrap();
        let refused = here.write(&txn(vec![key_read()]));
        assert!(
            matches!(refused, Err(BackendError::Stale { .. })),
            "{refused:?}"
        );
        other.write(&put(b"k")).unwrap();
        here.read_for_checks(&checks).unwrap();
        let seen = vec![Entry {
            key: b"r/phantom".to_vec(),
            value: b"v".to_vec(),
        }];
        let range_read_seeing = || ReadCheck::Range {
            range: range.clone(),
            entries: seen.clone(),
        };
        here.write(&txn(vec![key_read(), range_read_seeing()]))
            .unwrap();
        assert_eq!(here.get(b"out").unwrap(), Some(b"1".to_vec()));
        // A key the range read saw is gone.
        here.read_for_checks(&checks).unwrap();
        other
            .write(&WriteBatch {
                ops: vec![WriteOp::Del {
                    key: b"r/phantom".to_vec(),
                }],
                records: Vec::new(),
                log: None,
            })
            .unwrap();
        let refused = here.write(&txn(vec![range_read_seeing()]));
        assert!(
            matches!(refused, Err(BackendError::Stale { .. })),
            "{refused:?}"
        );
    }

    /// A clear and a write of its range's first key in one group: the key is written, not
    /// deleted by the clear's range delete (etcd refuses a key in two operations of one
    /// transaction, so the range delete must start after it), and the rest is cleared.
    #[test]
    fn a_group_that_clears_a_range_and_writes_its_first_key_keeps_that_key() {
        let (_cluster, store) = store_on_one_member(b"clear/");
        store.write(&put(b"b")).unwrap();
        store.write(&put(b"c")).unwrap();
        let clear = WriteOp::Clear {
            range: KeyRange {
                start: std::ops::Bound::Included(b"a".to_vec()),
                end: std::ops::Bound::Excluded(b"z".to_vec()),
            },
        };
        let batch = WriteBatch {
            ops: vec![clear, put(b"a").ops.remove(0)],
            records: Vec::new(),
            log: None,
        };
        store.write(&batch).unwrap();
        assert_eq!(store.get(b"a").unwrap(), Some(b"v".to_vec()));
        assert_eq!(
            store.get_many(&[b"b".to_vec(), b"c".to_vec()]).unwrap(),
            [None, None]
        );
    }

    /// A `get_many` of more keys than one etcd transaction reads is still one snapshot:
    /// its later transactions read at the revision of the first, so two keys that every
    /// write sets together are read alike however the writes fall between them.
    #[test]
    fn reads_of_more_keys_than_one_transaction_are_one_snapshot() {
        let (_cluster, store) = store_on_one_member(b"snapshot/");
        let keys: Vec<Vec<u8>> = (0..=MAX_TXN_OPS)
            .map(|n| format!("k{n:03}").into_bytes())
            .collect();
        let (first, last) = (keys[0].clone(), keys[MAX_TXN_OPS].clone());
        let set_both = |generation: u32| WriteBatch {
            ops: [&first, &last]
                .map(|key| WriteOp::Put {
                    key: key.clone(),
                    value: generation.to_be_bytes().to_vec(),
                })
                .to_vec(),
            records: Vec::new(),
            log: None,
        };
        store.write(&set_both(0)).unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        let reads = std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                let mut generation = 1;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    store.write(&set_both(generation))?;
                    generation += 1;
                }
                Ok::<_, BackendError>(())
            });
            let reads: Result<Vec<_>, _> = (0..200).map(|_| store.get_many(&keys)).collect();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            writer.join().unwrap().unwrap();
            reads.unwrap()
        });
        for values in reads {
            assert_eq!(values[0], values[MAX_TXN_OPS], "two snapshots in one read");
        }
    }

    /// A transaction whose range read saw the store's newest write (the key was set at the
    /// very revision the reads were made at) lands: that write is part of what it read,
    /// not a change after it (were it taken for one, the transaction would be refused as
    /// stale every time it was checked again, while nothing else was written).
    #[test]
    fn a_range_read_that_saw_the_newest_write_holds() {
        let (_cluster, store) = store_on_one_member(b"newest/");
        store.write(&put(b"r/newest")).unwrap();
        let range = KeyRange {
            start: std::ops::Bound::Included(b"r/".to_vec()),
            end: std::ops::Bound::Excluded(b"r0".to_vec()),
        };
        let read = CheckRead::Range {
            range: range.clone(),
            limit: 10,
        };
        store.read_for_checks(&[read]).unwrap();
        let seen = vec![Entry {
            key: b"r/newest".to_vec(),
            value: b"v".to_vec(),
        }];
        let txn = WriteBatch {
            ops: vec![WriteOp::Transaction {
                reads: vec![ReadCheck::Range {
                    range,
                    entries: seen,
                }],
                writes: vec![BatchOp::Put {
                    key: b"out".to_vec(),
                    value: b"1".to_vec(),
                }],
            }],
            records: Vec::new(),
            log: None,
        };
        store.write(&txn).unwrap();
        assert_eq!(store.get(b"out").unwrap(), Some(b"1".to_vec()));
    }

    /// Two hosts' writers on one log: one that read the log's ends while it was empty
    /// cannot append the first number once the other has used it, whether that entry is
    /// still there or was trimmed since (its key absent again): the commit is refused as
    /// stale, nothing applied, and the log keeps every number from its oldest to its newest.
    #[test]
    fn the_first_number_of_the_log_is_taken_once_even_after_a_trim() {
        let cluster = LocalCluster::start(1).unwrap();
        let (here, other) = two_hosts(&cluster);
        other.write(&logged(1, b"a")).unwrap();
        let taken = here.write(&logged(1, b"b"));
        assert!(
            matches!(taken, Err(BackendError::Stale { .. })),
            "{taken:?}"
        );
        other.write(&logged(2, b"c")).unwrap();
        other.remove_changes(&[CommitSeq(1)]).unwrap();
        let trimmed = here.write(&logged(1, b"b"));
        assert!(
            matches!(trimmed, Err(BackendError::Stale { .. })),
            "{trimmed:?}"
        );
        assert_eq!(here.get(b"b").unwrap(), None, "nothing of it applied");
        let ends = here.change_log_ends().unwrap().unwrap();
        assert_eq!(
            (ends.first.seq, ends.last.seq),
            (CommitSeq(2), CommitSeq(2))
        );
        here.write(&logged(3, b"b")).unwrap();
    }

    /// Two hosts' writers on one log: one whose ends are behind cannot append a number the
    /// other has taken, nor one past the log's end (a hole no subscriber could tell from a
    /// trim): refused as stale, nothing applied, the other's entry kept.
    #[test]
    fn a_log_number_taken_or_past_the_end_is_refused() {
        let cluster = LocalCluster::start(1).unwrap();
        let (here, other) = two_hosts(&cluster);
        other.write(&logged(1, b"a")).unwrap();
        other.write(&logged(2, b"b")).unwrap();
        for seq in [2, 4] {
            let refused = here.write(&logged(seq, b"mine"));
            assert!(
                matches!(refused, Err(BackendError::Stale { .. })),
                "{seq}: {refused:?}"
            );
        }
        assert_eq!(here.get(b"mine").unwrap(), None, "nothing of them applied");
        assert_eq!(
            here.get_raw(&here.marker_key).unwrap(),
            None,
            "a commit refused at its one try has nothing on its way to fence"
        );
        let ends = here.change_log_ends().unwrap().unwrap();
        assert_eq!(
            (ends.first.seq, ends.last.seq),
            (CommitSeq(1), CommitSeq(2))
        );
        let kept = here.change_entries(CommitSeq(2), false, 1).unwrap();
        assert_eq!(kept, [(CommitSeq(2), logged(2, b"b").log.unwrap().entry)]);
        here.write(&logged(3, b"mine")).unwrap();
    }

    /// Two leaders of one succession (a data directory copied with its `party.store`), their
    /// tokens counted alike: one's commit, refused because the other moved the marker,
    /// finds there a token with its own count, which is not its own (each token begins with
    /// its instance), and fails as another writer's instead of passing for landed.
    #[test]
    fn a_token_of_another_leader_of_the_succession_is_never_taken_for_ones_own() {
        let (_cluster, config, succession) = directory_on_one_member(b"copied/");
        let here = EtcdBackend::connect_as_leader(&config, succession).unwrap();
        let copy = EtcdBackend::connect_as_leader(&config, succession).unwrap();
        here.change_log_ends().unwrap();
        here.write(&put(b"a")).unwrap();
        copy.change_log_ends().unwrap();
        copy.write(&put(b"b")).unwrap();
        copy.write(&put(b"b2")).unwrap();
        // Here's next token counts 3, as the one the copy set last.
        let refused = here.write(&put(b"c"));
        assert!(
            matches!(refused, Err(BackendError::Store { .. })),
            "{refused:?}"
        );
        assert_eq!(here.get(b"c").unwrap(), None);
    }

    /// A transaction with more reads than etcd takes compares in one request fails whole
    /// with `BatchTooLarge` before it is sent, however few its writes.
    #[test]
    fn a_transaction_of_more_reads_than_etcd_compares_is_too_large() {
        let (_cluster, store) = store_on_one_member(b"compares/");
        let most = store.max_batch_ops().unwrap();
        let reads = (0..=most)
            .map(|n| ReadCheck::Key {
                key: format!("k{n}").into_bytes(),
                value: None,
            })
            .collect();
        let writes = vec![BatchOp::Put {
            key: b"out".to_vec(),
            value: b"1".to_vec(),
        }];
        let batch = WriteBatch {
            ops: vec![WriteOp::Transaction { reads, writes }],
            records: Vec::new(),
            log: None,
        };
        let refused = store.write(&batch);
        assert!(
            matches!(refused, Err(BackendError::BatchTooLarge { ops, max, .. }) if ops == most + 1 && max == most),
            "{refused:?}"
        );
        assert_eq!(store.get(b"out").unwrap(), None);
    }

    /// A client's dedup record is rewritten by each of its writes; once expired it is swept
    /// all the same (the sweep compares the revision that last set it).
    #[test]
    fn an_expired_record_written_more_than_once_is_swept() {
        let (_cluster, store) = store_on_one_member(b"expiry/");
        let client = ClientId(3);
        for applied in 1..=2 {
            let record = DedupRecord {
                applied_through: party_proto::WriteSeq(applied),
                failed: Vec::new(),
                last_write_ms: 1_000,
            };
            store
                .write(&WriteBatch {
                    records: vec![(client, record)],
                    ..put(b"k")
                })
                .unwrap();
        }
        assert!(store.dedup_records_of(&[client]).unwrap()[0].is_some());
        store.expire_dedup_records(2_000, None, 10).unwrap();
        assert_eq!(store.dedup_records_of(&[client]).unwrap(), [None]);
    }

    /// A sweep of expired dedup records removes one only if nobody rewrote it since the
    /// sweep read it (another host's leader may have): the others of its transaction go.
    #[test]
    fn a_record_rewritten_after_the_sweep_read_it_stays() {
        let (_cluster, store) = store_on_one_member(b"sweep/");
        let (rewritten, expired) = (store.record_key(ClientId(1)), store.record_key(ClientId(2)));
        let set = |key: &[u8], value: &str| {
            let put = TxnOp::put(key, value, None);
            store.send(Txn::new().and_then([put])).unwrap();
            etcd_mod_revision(&store, key)
        };
        let read_at = set(&rewritten, "old");
        let expired_at = set(&expired, "old");
        set(&rewritten, "new");
        store
            .remove_unchanged(&[(rewritten.clone(), read_at), (expired.clone(), expired_at)])
            .unwrap();
        assert_eq!(store.get_raw(&rewritten).unwrap(), Some(b"new".to_vec()));
        assert_eq!(store.get_raw(&expired).unwrap(), None);
    }

    /// A store under `prefix` on a cluster of its own, of one member (kept while the
    /// cluster lives).
    fn store_on_one_member(prefix: &[u8]) -> (LocalCluster, EtcdBackend) {
        let (cluster, config, _) = directory_on_one_member(prefix);
        let store = EtcdBackend::connect(&config).unwrap();
        (cluster, store)
    }

    /// A data directory's configuration, under `prefix` on a cluster of its own of one
    /// member (which lives as long as the cluster is kept), and a succession for the
    /// directory's leaders.
    fn directory_on_one_member(prefix: &[u8]) -> (LocalCluster, EtcdConfig, Succession) {
        let cluster = LocalCluster::start(1).unwrap();
        let config = EtcdConfig {
            endpoints: cluster.endpoints(),
            prefix: prefix.to_vec(),
        };
        (cluster, config, Succession::random())
    }

    /// A scan of big values asks for about a mebibyte of them a page after the first; one of
    /// small values grows its pages fourfold up to 512.
    #[test]
    fn pages_ask_for_about_a_mebibyte() {
        let (_cluster, store) = store_on_one_member(b"pages/");
        let fill = |prefix: u8, count: u8, value: usize| {
            let ops: Vec<WriteOp> = (0..count)
                .map(|n| WriteOp::Put {
                    key: vec![prefix, n],
                    value: vec![n; value],
                })
                .collect();
            for ops in ops.chunks(8) {
                store
                    .write(&WriteBatch {
                        ops: ops.to_vec(),
                        records: Vec::new(),
                        log: None,
                    })
                    .unwrap();
            }
        };
        fill(b'b', 40, 128 * 1024);
        fill(b's', 255, 8);
        let page_sizes = |prefix: u8, reverse: bool| {
            let range = KeyRange {
                start: std::ops::Bound::Included(vec![prefix]),
                end: std::ops::Bound::Excluded(vec![prefix + 1]),
            };
            let (start, end) = store.etcd_range(&range).unwrap();
            let mut pages = store.pages(start, end, reverse, store.revision_now().unwrap());
            let (mut sizes, mut keys) = (Vec::new(), Vec::new());
            while !pages.done {
                pages.next_page().unwrap();
                sizes.push(pages.page.len());
                keys.extend(pages.page.by_ref().map(|entry| entry.key[1]));
            }
            (sizes, keys)
        };
        for reverse in [false, true] {
            let (sizes, keys) = page_sizes(b'b', reverse);
            // Each entry is a little over 128 KiB: 7 fit in a mebibyte.
            assert_eq!(sizes, [32, 7, 1], "reverse={reverse}");
            let mut want: Vec<u8> = (0..40).collect();
            if reverse {
                want.reverse();
            }
            assert_eq!(keys, want, "reverse={reverse}");
        }
        let (sizes, keys) = page_sizes(b's', false);
        assert_eq!(sizes, [32, 128, 95]);
        assert_eq!(keys, (0..255).collect::<Vec<u8>>());
    }

    /// A leader of a directory killed with its next commit on the network: the commit
    /// compares the marker with what that leader set last, and reaches etcd (twice, as a
    /// try sent again would) once the next leader read the log's ends, and again once that
    /// one committed too. It applies nothing: the successor moved the marker before that
    /// read, and its tokens are never its predecessor's. What the predecessor committed
    /// before is there.
    #[test]
    fn a_commit_of_a_dead_leader_never_lands_after_its_successor_read_the_logs_ends() {
        let (_cluster, config, succession) = directory_on_one_member(b"directory/");
        let dead = EtcdBackend::connect_as_leader(&config, succession).unwrap();
        dead.write(&put(b"before")).unwrap();
        let on_the_network = {
            let mut marker = dead.marker.lock().unwrap();
            let last = marker.last.clone().unwrap();
            let token = marker.next_token();
            Txn::new().when([dead.marker_unchanged(&last)]).and_then([
                dead.put_marker(&token),
                TxnOp::put(dead.data_key(b"late"), "v", None),
            ])
        };
        let successor = EtcdBackend::connect_as_leader(&config, succession).unwrap();
        let lands = || successor.send(on_the_network.clone()).unwrap().succeeded();
        successor.change_log_ends().unwrap();
        assert!(!lands(), "landed after the successor read the log's ends");
        successor.write(&put(b"after")).unwrap();
        assert!(!lands(), "landed after the successor's first commit");
        assert_eq!(successor.get(b"late").unwrap(), None);
        assert_eq!(successor.get(b"before").unwrap(), Some(b"v".to_vec()));
        // A writer of its own commits beside them, under a marker of its own.
        let alone = EtcdBackend::connect(&config).unwrap();
        alone.write(&put(b"alone")).unwrap();
        successor.write(&put(b"next")).unwrap();
    }

    /// A commit whose outcome is unknown (its answer lost, the marker not moved since):
    /// once the writer has read the log's ends, to number its next commit, the commit
    /// cannot land any more, so the number it took is not taken twice.
    #[test]
    fn a_commit_of_unknown_outcome_never_lands_after_the_logs_ends_are_read() {
        let (_cluster, store) = store_on_one_member(b"unsettled/");
        store.write(&logged(1, b"k")).unwrap();
        let on_the_network = {
            let mut marker = store.marker.lock().unwrap();
            let last = marker.last.clone().unwrap();
            let token = marker.next_token();
            marker.last = Err(());
            Txn::new().when([store.marker_unchanged(&last)]).and_then([
                store.put_marker(&token),
                TxnOp::put(store.change_key(CommitSeq(2)), "late", None),
            ])
        };
        let ends = store.change_log_ends().unwrap().unwrap();
        assert_eq!(ends.last.seq, CommitSeq(1));
        let landed = store.send(on_the_network).unwrap().succeeded();
        assert!(!landed, "landed after the log's ends were read");
        store.write(&logged(2, b"k")).unwrap();
        let ends = store.change_log_ends().unwrap().unwrap();
        assert_eq!(ends.last.seq, CommitSeq(2));
    }

    /// The fence of a commit of unknown outcome whose first try landed, its answer lost:
    /// the try sent again finds the marker at the fence's own token. That says the commit
    /// was fenced (the fence moved the marker from what the commit compares with, so the
    /// commit had not landed), not that another writer moved the marker.
    #[test]
    fn a_fence_tried_again_after_its_answer_was_lost_knows_it_fenced() {
        let (_cluster, store) = store_on_one_member(b"fence/");
        store.write(&put(b"a")).unwrap();
        let mut marker = store.marker.lock().unwrap();
        let last = marker.last.clone().unwrap();
        let commit = marker.next_token();
        let first_try = marker.clone().next_token();
        move_marker(&store, &first_try, None);
        let fenced = store.fence(&mut marker, &last, &commit);
        assert!(matches!(fenced, Fence::Fenced), "not known to be fenced");
        assert_eq!(marker.last.clone().unwrap().unwrap().token, first_try);
        drop(marker);
        store.write(&put(b"b")).unwrap();
        assert_eq!(store.get(b"b").unwrap(), Some(b"v".to_vec()));
    }

    /// The fence of a commit of unknown outcome that had landed (its answer lost, and every
    /// try sent again refused): the fence finds the marker at the commit's token, set where
    /// the commit landed.
    #[test]
    fn a_fence_finds_a_commit_that_landed() {
        let (_cluster, store) = store_on_one_member(b"landed/");
        store.write(&put(b"a")).unwrap();
        let mut marker = store.marker.lock().unwrap();
        let last = marker.last.clone().unwrap();
        let commit = marker.next_token();
        move_marker(&store, &commit, Some(b"b"));
        let landed = store.fence(&mut marker, &last, &commit);
        let Fence::Landed(set_at) = landed else {
            panic!("not known to have landed");
        };
        assert_eq!(set_at, mod_revision(&store, b"b"), "landed elsewhere");
    }

    /// A commit whose outcome is unknown (its answer lost, the marker not moved since):
    /// once the writer has read dedup records, it cannot land any more, so the records read
    /// tell what the store holds.
    #[test]
    fn a_commit_of_unknown_outcome_never_lands_after_dedup_records_are_read() {
        let (_cluster, store) = store_on_one_member(b"records/");
        store.write(&put(b"k")).unwrap();
        let on_the_network = {
            let mut marker = store.marker.lock().unwrap();
            let last = marker.last.clone().unwrap();
            let token = marker.next_token();
            marker.last = Err(());
            Txn::new().when([store.marker_unchanged(&last)]).and_then([
                store.put_marker(&token),
                TxnOp::put(store.data_key(b"late"), "v", None),
            ])
        };
        store.dedup_records_of(&[ClientId(7)]).unwrap();
        let landed = store.send(on_the_network).unwrap().succeeded();
        assert!(!landed, "landed after dedup records were read");
        assert_eq!(store.get(b"late").unwrap(), None);
        store.write(&put(b"next")).unwrap();
    }

    /// A leader's fence (the move of the marker when its value is not known) is held up in
    /// the network, sent again and lands; the leader dies with its first commit, which
    /// compares the marker with that fence, on the network too. Its successor moves the
    /// marker and commits; then the held fence reaches etcd and puts the dead leader's
    /// token back, and then the commit arrives. It applies nothing: it compares the
    /// revision the marker was set at, which the late fence moved, not the token.
    #[test]
    fn a_late_copy_of_a_fence_lets_no_commit_under_it_land() {
        let (_cluster, config, succession) = directory_on_one_member(b"late-fence/");
        let dead = EtcdBackend::connect_as_leader(&config, succession).unwrap();
        let held_fence = {
            let fence = dead.marker.lock().unwrap().clone().next_token();
            Txn::new().and_then([dead.put_marker(&fence)])
        };
        dead.change_log_ends().unwrap();
        let on_the_network = {
            let mut marker = dead.marker.lock().unwrap();
            let last = marker.last.clone().unwrap();
            let token = marker.next_token();
            Txn::new().when([dead.marker_unchanged(&last)]).and_then([
                dead.put_marker(&token),
                TxnOp::put(dead.data_key(b"late"), "v", None),
            ])
        };
        let successor = EtcdBackend::connect_as_leader(&config, succession).unwrap();
        successor.change_log_ends().unwrap();
        successor.write(&put(b"k")).unwrap();
        assert!(successor.send(held_fence).unwrap().succeeded());
        let landed = successor.send(on_the_network).unwrap().succeeded();
        assert!(
            !landed,
            "the dead leader's commit landed after its successor's fence"
        );
        assert_eq!(successor.get(b"late").unwrap(), None);
    }

    /// A leader's fence is held up in the network and sent again; its first try reaches
    /// etcd after the leader's commits under the second: the next commit, refused, finds
    /// the leader's own token there and is refused as stale (committed again, it lands),
    /// not as another writer's.
    #[test]
    fn a_late_copy_of_a_stores_own_fence_makes_its_next_commit_stale() {
        let (_cluster, config, succession) = directory_on_one_member(b"own-late-fence/");
        let store = EtcdBackend::connect_as_leader(&config, succession).unwrap();
        let held_fence = {
            let fence = store.marker.lock().unwrap().clone().next_token();
            Txn::new().and_then([store.put_marker(&fence)])
        };
        store.change_log_ends().unwrap();
        store.write(&put(b"a")).unwrap();
        assert!(store.send(held_fence).unwrap().succeeded());
        let refused = store.write(&put(b"b"));
        assert!(
            matches!(refused, Err(BackendError::Stale { .. })),
            "{refused:?}"
        );
        assert_eq!(store.get(b"b").unwrap(), None);
        store.write(&put(b"b")).unwrap();
        assert_eq!(store.get(b"b").unwrap(), Some(b"v".to_vec()));
    }

    /// A batch of nothing but its change log entry (a group whose writes change nothing
    /// still takes its number) appends the entry.
    #[test]
    fn a_batch_of_only_a_log_entry_appends_it() {
        let (_cluster, store) = store_on_one_member(b"entry-only/");
        let entry = party_proto::feed::encode_unlogged(0);
        let batch = WriteBatch {
            ops: Vec::new(),
            records: Vec::new(),
            log: Some(party_proto::LogAppend {
                seq: CommitSeq(1),
                entry: entry.clone(),
            }),
        };
        store.write(&batch).unwrap();
        assert_eq!(
            store.change_entries(CommitSeq(1), false, 1).unwrap(),
            [(CommitSeq(1), entry)]
        );
    }

    #[test]
    fn a_commit_tried_again_applies_once_and_a_foreign_marker_refuses() {
        let (_cluster, store) = store_on_one_member(b"marker/");
        store.write(&put(b"a")).unwrap();
        // The next commit's first try landed, its reply lost: trying it again is
        // recognised by the marker, and applies nothing more.
        let next_token = store.marker.lock().unwrap().clone().next_token();
        move_marker(&store, &next_token, Some(b"b"));
        let landed = mod_revision(&store, b"b");
        store.write(&put(b"b")).unwrap();
        assert_eq!(mod_revision(&store, b"b"), landed, "applied once");
        // Someone else moves the marker: the commit is refused whole, and the store then
        // goes on from the marker it reads.
        move_marker(&store, b"another writer", None);
        let refused = store.write(&put(b"c"));
        assert!(
            matches!(refused, Err(BackendError::Store { .. })),
            "not refused as another writer's: {refused:?}"
        );
        assert_eq!(store.get(b"c").unwrap(), None);
        store.write(&put(b"d")).unwrap();
        assert_eq!(store.get(b"d").unwrap(), Some(b"v".to_vec()));
    }
}
