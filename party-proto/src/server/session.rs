//! The leader's session with one follower connection: the handshake, requests handed to the
//! driver to run against the store, iterators paced by the follower's credits, and change
//! feed subscriptions ([`super::subscriptions`]). Answers to reads and iterators go out after
//! the answers of the connection's writes issued before them (`server/answer_order.rs`).
//!
//! The session never holds entries of its own: it asks the driver to pull at most as many
//! entries, and bytes of them, from a store iterator as the follower has granted credits
//! for, in a few pulls out at once so that the store reads while the entries before are on
//! their way, and passes them on as they come, so a slow or stalled follower costs the
//! leader at most its credits per iterator: entries (capped by
//! [`ServerConfig::max_iter_credits`]) and bytes (not capped: a follower that grants
//! unbounded bytes is bounded by its entries), and the one entry each pull out may pass its
//! bytes by.
//!
//! Driver contract: carry out [`ServerOutput::Write`]s of one connection in the order they
//! are emitted (writes of one client must reach the dedup table in sequence order), answer
//! an iterator's [`ServerOutput::IterPull`]s in the order they are emitted, and after
//! [`ServerOutput::Close`] drop the connection and every store iterator it had.

use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use std::time::Duration;

use super::answer_order::{AnswerOrder, Fence};
use super::dedup::WriteStamp;
use super::subscriptions::{Limits, Subscriptions, Verdict};
use crate::error::ErrorCode;
use crate::feed::{CommitSeq, LogRead};
use crate::ids::{ClientId, IterId, RequestId, WatchId};
use crate::range::IterOptions;
use crate::store_kind::admit_store;
use crate::time::Timestamp;
use crate::wire::{
    ClientMessage, Entry, FrameError, Hello, LeaderLimits, LeaveCause, ProtocolId, ReadOp,
    Response, ServerMessage, Welcome, WriteOp, DEFAULT_MAX_FRAME_LEN,
};

/// Limits and identity of the leader's sessions.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct ServerConfig {
    /// The leader's process id, given to followers in the welcome.
    pub leader_pid: u32,
    /// The leader's generation, given to followers in the welcome.
    pub term: u64,
    /// The kind of store served (`fjall`, `sled`, …): a follower configured for another is
    /// refused, and the others are told it in the welcome.
    pub store: std::borrow::Cow<'static, str>,
    /// A connection that has not said hello by then is closed.
    pub handshake_timeout: Duration,
    /// Requests one connection may have running at once; more are refused one by one.
    pub max_in_flight: u32,
    /// Iterators one connection may have open at once.
    pub max_iterators: u32,
    /// The most entries one iterator may have granted and not yet received.
    pub max_iter_credits: u32,
    /// The most entries one pull of an iterator reads from the store.
    pub max_pull_entries: u32,
    /// The most bytes of entries ([`Entry::len_bound`]) one pull reads, passed by at most
    /// the entry that crosses it.
    pub max_pull_bytes: u64,
    /// How many pulls of one iterator may be out at once: the store reads the next
    /// entries while the connection sends the ones before and the follower reads them,
    /// instead of each waiting for the others (with a follower window of 4096 entries, a
    /// full scan ran 1.7-2.2 M entries/s with 4 pulls of 512 out, 1.1-1.4 M with one pull
    /// of every credit and a window of 1024).
    pub max_pulls_out: u32,
    /// The largest frame body read or sent: answers and iterator chunks are cut to fit.
    pub max_frame_len: u32,
    /// Change feed subscriptions one connection may have open at once. Each may have
    /// granted as many groups as an iterator entries ([`ServerConfig::max_iter_credits`]).
    pub max_watches: u32,
    /// Whether this leader keeps a change feed (`WriterConfig::change_feed`): without, a
    /// subscription is refused with [`ErrorCode::FeedOff`].
    pub change_feed: bool,
}

impl ServerConfig {
    /// The limits a client is told in the welcome.
    pub fn limits(&self) -> LeaderLimits {
        LeaderLimits {
            max_frame_len: self.max_frame_len,
            max_in_flight: self.max_in_flight,
            max_iter_credits: self.max_iter_credits,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            leader_pid: 0,
            term: 0,
            store: std::borrow::Cow::Borrowed("fjall"),
            handshake_timeout: Duration::from_secs(10),
            max_in_flight: 4096,
            max_iterators: 256,
            max_iter_credits: 4096,
            max_pull_entries: 512,
            max_pull_bytes: 1 << 20,
            max_pulls_out: 4,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_watches: 64,
            change_feed: true,
        }
    }
}

/// What happened on the connection or in the store.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ServerInput {
    /// A message from the follower.
    Message(ClientMessage),
    /// The bytes from the follower do not decode; the connection cannot go on.
    BadFrame(FrameError),
    /// The store finished a [`ServerOutput::Read`] or [`ServerOutput::Write`].
    Completed {
        id: RequestId,
        result: Result<Response, ErrorCode>,
    },
    /// Answer to [`ServerOutput::IterPull`]: the next entries, and whether the store
    /// iterator is exhausted.
    IterChunk {
        iter: IterId,
        entries: Vec<Entry>,
        exhausted: bool,
    },
    /// A store iterator failed.
    IterFailed { iter: IterId, error: ErrorCode },
    /// A store iterator opened after this commit: it reads the store as of it.
    IterAt { iter: IterId, seq: CommitSeq },
    /// Answer to [`ServerOutput::WatchPull`].
    WatchRead {
        watch: WatchId,
        result: Result<LogRead, ErrorCode>,
    },
    /// The leader stops leading: the follower is told why. Closing, the session serves on
    /// until the follower lets go (the driver bounds the wait); its lock lost, it closes.
    Leave(LeaveCause),
}

/// What the driver must do.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ServerOutput {
    /// Send this to the follower.
    Send(ServerMessage),
    /// Run a read against the store; answer with `Completed`. With `behind_writes` false
    /// no write of this connection is still running, so the read sees everything the
    /// connection wrote even if it runs at once, ahead of other connections' queued work;
    /// with it true it must wait for those writes.
    Read {
        id: RequestId,
        op: ReadOp,
        behind_writes: bool,
    },
    /// Run a write through the dedup table and the store; answer with `Completed`.
    Write {
        id: RequestId,
        stamp: WriteStamp,
        op: WriteOp,
    },
    /// Open a store iterator (on a snapshot where the store has them).
    IterOpen { iter: IterId, options: IterOptions },
    /// Read up to `max` more entries from a store iterator, and past `max_bytes` bytes of
    /// them ([`Entry::len_bound`]) no further entry (the one that crosses it included);
    /// answer with `IterChunk`, an iterator's pulls in the order they came. Pulls after
    /// the chunk that exhausted the iterator, or after it failed, need no answer.
    IterPull {
        iter: IterId,
        max: u32,
        max_bytes: u64,
    },
    /// Drop a store iterator.
    IterDrop { iter: IterId },
    /// Read up to `max` groups of the store's change log from `from` on, then answer
    /// [`ServerInput::WatchRead`]. When the log has none from `from` on yet, because
    /// `from` is the number the next commit takes, answer once that commit has landed;
    /// otherwise at once (with none when `from` is past it). With `from` `None`, answer at
    /// once, with none, from the next commit's number.
    WatchPull {
        watch: WatchId,
        from: Option<CommitSeq>,
        max: u32,
    },
    /// Forget a subscription's read of the log, if one is out.
    WatchDrop { watch: WatchId },
    /// Close the connection after sending what was queued; the error says why, for the log.
    Close(ErrorCode),
    /// The follower shares memory for big answers (see [`ClientMessage::OfferRing`]).
    RingOffered { fd: u32, len: u64, token: u64 },
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingHello { deadline: Timestamp },
    Ready { client: ClientId },
    Closed,
}

#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct ServedIter {
    values: bool,
    /// Entries the follower has granted and not yet been sent.
    credits: u32,
    /// Bytes of entries the follower has granted less those sent: below zero when a pull
    /// passed them by its last entry, owed back from the next grant (the follower counts
    /// alike, in whatever order a grant and the entries cross).
    credit_bytes: i128,
    /// What each pull out asked for, entries and bytes, oldest first: their chunks come
    /// back in that order.
    pulls: VecDeque<(u32, u64)>,
    /// Entries still allowed by the iterator's limit.
    remaining: Option<u64>,
    /// The writes issued before it whose answers go first.
    fence: Option<Fence>,
    /// Entries taken from the store and held behind those writes: until sent, they count
    /// against the cap on credits, as entries out.
    held_entries: u32,
}

/// The leader's session with one connection. See the module documentation.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct ServerSession {
    config: ServerConfig,
    phase: Phase,
    in_flight: FxHashSet<RequestId>,
    /// The writes among them, and the answers that wait for them.
    writes: AnswerOrder,
    /// The reads among them that came behind writes: the writes issued before each.
    read_fences: FxHashMap<RequestId, Fence>,
    /// The reads among them whose reply is held: in flight until it is sent.
    held_reads: FxHashSet<RequestId>,
    iters: FxHashMap<IterId, ServedIter>,
    watches: Subscriptions,
    /// The leader stops leading, for this cause: a follower that says hello afterwards is
    /// told so right after its welcome.
    leaving: Option<LeaveCause>,
    outputs: VecDeque<ServerOutput>,
}

impl ServerSession {
    /// A session for a connection accepted at `now`.
    pub fn new(now: Timestamp, config: ServerConfig) -> Self {
        let deadline = now + config.handshake_timeout;
        ServerSession {
            config,
            phase: Phase::AwaitingHello { deadline },
            in_flight: FxHashSet::default(),
            writes: AnswerOrder::default(),
            read_fences: FxHashMap::default(),
            held_reads: FxHashSet::default(),
            iters: FxHashMap::default(),
            watches: Subscriptions::default(),
            leaving: None,
            outputs: VecDeque::new(),
        }
    }

    /// The client this connection speaks for, once it has said hello.
    pub fn client_id(&self) -> Option<ClientId> {
        match self.phase {
            Phase::Ready { client } => Some(client),
            _ => None,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether a write of this connection is at the store, not yet answered.
    pub fn writes_running(&self) -> bool {
        self.writes.writes_running()
    }

    pub fn handle_input(&mut self, now: Timestamp, input: ServerInput) {
        self.handle_timeout(now);
        if self.phase == Phase::Closed {
            return;
        }
        match input {
            ServerInput::Message(message) => self.receive(message),
            ServerInput::BadFrame(error) => {
                // Tell the follower why before hanging up: its requests in flight fail with
                // this instead of being re-sent into the same refusal.
                let error = ErrorCode::from(error);
                self.send(ServerMessage::Rejected(error.clone()));
                self.close(error);
            }
            ServerInput::Completed { id, result } => {
                let released = self.writes.write_answered(id);
                if self.in_flight.contains(&id) && !self.held_reads.contains(&id) {
                    let result = self.fitted(result);
                    let fence = self.read_fences.remove(&id);
                    if self.writes.holds(fence) {
                        self.held_reads.insert(id);
                    }
                    self.send_behind(fence, ServerMessage::Reply { id, result });
                }
                for output in released {
                    self.release(output);
                }
            }
            ServerInput::IterChunk {
                iter,
                entries,
                exhausted,
            } => self.chunk(iter, entries, exhausted),
            ServerInput::IterFailed { iter, error } => {
                if let Some(served) = self.iters.remove(&iter) {
                    self.send_behind(served.fence, ServerMessage::IterFailed { iter, error });
                    self.drop_behind(served.fence, iter);
                }
            }
            ServerInput::IterAt { iter, seq } => {
                if let Some(served) = self.iters.get(&iter) {
                    self.send_behind(served.fence, ServerMessage::IterAt { iter, seq });
                }
            }
            ServerInput::WatchRead { watch, result } => {
                let limits = self.watch_limits();
                self.watches
                    .read_done(watch, result, limits, &mut self.outputs);
            }
            ServerInput::Leave(cause) => {
                self.leaving = Some(cause);
                if matches!(self.phase, Phase::Ready { .. }) {
                    self.send(ServerMessage::Leaving(cause));
                }
                // A leader that closes answers what its follower sent until the follower
                // lets go; one that lost its lock may no longer touch the store, and one
                // whose store failed has nothing to answer with.
                if cause != LeaveCause::Closing {
                    self.close(ErrorCode::Closed);
                }
            }
        }
    }

    /// Closes a connection that has not said hello in time.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if let Phase::AwaitingHello { deadline } = self.phase {
            if now >= deadline {
                self.close(ErrorCode::TimedOut);
            }
        }
    }

    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        self.outputs.pop_front().map(with_short_errors)
    }

    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self.phase {
            Phase::AwaitingHello { deadline } => Some(deadline),
            _ => None,
        }
    }

    fn receive(&mut self, message: ClientMessage) {
        match (self.phase, message) {
            (Phase::AwaitingHello { .. }, ClientMessage::Hello(hello)) => {
                if let Err(refusal) = self.greet(&hello) {
                    self.send(ServerMessage::Rejected(refusal.clone()));
                    self.close(refusal);
                    return;
                }
                self.phase = Phase::Ready {
                    client: hello.client_id,
                };
                self.send(ServerMessage::Welcome(Welcome {
                    protocol: ProtocolId::CURRENT,
                    leader_pid: self.config.leader_pid,
                    term: self.config.term,
                    store: self.config.store.to_string(),
                    limits: self.config.limits(),
                }));
                if let Some(cause) = self.leaving {
                    self.send(ServerMessage::Leaving(cause));
                }
            }
            (Phase::Ready { client }, message) => self.serve(client, message),
            (_, message) => self.close(protocol_violation(&message, "before hello")),
        }
    }

    fn serve(&mut self, client: ClientId, message: ClientMessage) {
        match message {
            ClientMessage::Hello(_) => self.close(protocol_violation(&message, "a second time")),
            ClientMessage::Read { id, op } => {
                if self.admit(id) {
                    let fence = self.writes.fence();
                    let behind_writes = fence.is_some();
                    if let Some(fence) = fence {
                        self.read_fences.insert(id, fence);
                    }
                    self.outputs.push_back(ServerOutput::Read {
                        id,
                        op,
                        behind_writes,
                    });
                }
            }
            ClientMessage::Write {
                id,
                seq,
                oldest_pending,
                first_sent_ms,
                op,
            } => {
                if self.admit(id) {
                    self.writes.write_admitted(id);
                    let stamp = WriteStamp {
                        client,
                        seq,
                        oldest_pending,
                        first_sent_ms,
                    };
                    // Unshared once decoded; the leader's own handle's shares it with the
                    // handle's copy kept for a re-send, and is copied here.
                    let op = Arc::unwrap_or_clone(op);
                    self.outputs
                        .push_back(ServerOutput::Write { id, stamp, op });
                }
            }
            ClientMessage::IterOpen {
                iter,
                options,
                credits,
                bytes,
            } => self.open_iter(iter, options, credits, bytes),
            ClientMessage::IterNext {
                iter,
                credits,
                bytes,
            } => match self.iters.get_mut(&iter) {
                Some(served) => {
                    served.credits = served.credits.saturating_add(credits).min(
                        self.config
                            .max_iter_credits
                            .saturating_sub(served.held_entries),
                    );
                    served.credit_bytes += i128::from(bytes);
                    self.pull(iter);
                }
                // It may have ended while the credits were on their way; the follower
                // ignores this for an iterator it already saw end, and it must not
                // overtake that end if it is held.
                None => {
                    let failed = ServerOutput::Send(ServerMessage::IterFailed {
                        iter,
                        error: ErrorCode::NotFound,
                    });
                    if let Some(failed) = self.writes.pass_after_end_of(iter, failed) {
                        self.outputs.push_back(failed);
                    }
                }
            },
            ClientMessage::IterClose { iter } => {
                if self.iters.remove(&iter).is_some() {
                    self.writes.forget_messages_of(iter);
                    self.outputs.push_back(ServerOutput::IterDrop { iter });
                }
            }
            ClientMessage::WatchOpen {
                watch,
                range,
                from,
                credits,
            } => {
                let limits = self.watch_limits();
                let opened =
                    self.watches
                        .open(watch, range, from, credits, limits, &mut self.outputs);
                if let Verdict::Close(error) = opened {
                    self.close(error);
                }
            }
            ClientMessage::WatchNext { watch, credits } => {
                let limits = self.watch_limits();
                self.watches
                    .grant(watch, credits, limits, &mut self.outputs);
            }
            ClientMessage::WatchClose { watch } => self.watches.close(watch, &mut self.outputs),
            ClientMessage::OfferRing { fd, len, token } => {
                let offer = ServerOutput::RingOffered { fd, len, token };
                self.outputs.push_back(offer);
            }
        }
    }

    fn watch_limits(&self) -> Limits {
        Limits {
            max_watches: self.config.max_watches,
            max_credits: self.config.max_iter_credits,
            feed: self.config.change_feed,
            max_frame_len: self.config.max_frame_len,
        }
    }

    /// Whether a hello is one this leader serves: its protocol, and its store.
    fn greet(&self, hello: &Hello) -> Result<(), ErrorCode> {
        if hello.protocol != ProtocolId::CURRENT {
            return Err(ErrorCode::ProtocolMismatch {
                expected: ProtocolId::CURRENT,
                got: hello.protocol,
            });
        }
        admit_store(Some(&self.config.store), &hello.store)
    }

    /// Takes a request into flight, or refuses it.
    fn admit(&mut self, id: RequestId) -> bool {
        if self.in_flight.contains(&id) {
            self.close(ErrorCode::Malformed(format!(
                "request id {} reused while in flight",
                id.0
            )));
            false
        } else if self.in_flight.len() >= self.config.max_in_flight as usize {
            let limit = self.config.max_in_flight;
            self.send(ServerMessage::Reply {
                id,
                result: Err(ErrorCode::TooManyRequests { limit }),
            });
            false
        } else {
            self.in_flight.insert(id);
            true
        }
    }

    fn open_iter(&mut self, iter: IterId, options: IterOptions, credits: u32, bytes: u64) {
        // One whose end is held behind writes is still open for its follower.
        if self.iters.contains_key(&iter) || self.writes.holds_drop_of(iter) {
            self.close(ErrorCode::Malformed(format!(
                "iterator {} opened twice",
                iter.0
            )));
            return;
        }
        if self.iters.len() + self.writes.held_drops() >= self.config.max_iterators as usize {
            let limit = self.config.max_iterators;
            self.send(ServerMessage::IterFailed {
                iter,
                error: ErrorCode::TooManyIterators { limit },
            });
            return;
        }
        if options.limit == Some(0) {
            self.send(ServerMessage::IterEnd { iter });
            return;
        }
        let served = ServedIter {
            values: options.values,
            credits: credits.min(self.config.max_iter_credits),
            credit_bytes: i128::from(bytes),
            pulls: VecDeque::new(),
            remaining: options.limit,
            fence: self.writes.fence(),
            held_entries: 0,
        };
        self.iters.insert(iter, served);
        self.outputs
            .push_back(ServerOutput::IterOpen { iter, options });
        self.pull(iter);
    }

    /// Pulls what the credits and the limit allow and no pull out has asked for yet, in
    /// pulls of at most [`ServerConfig::max_pull_entries`] and
    /// [`ServerConfig::max_pull_bytes`], up to [`ServerConfig::max_pulls_out`] out at once.
    fn pull(&mut self, iter: IterId) {
        let Some(served) = self.iters.get_mut(&iter) else {
            return;
        };
        let mut asked: u64 = served.pulls.iter().map(|(max, _)| u64::from(*max)).sum();
        let mut asked_bytes: i128 = served.pulls.iter().map(|(_, b)| i128::from(*b)).sum();
        while served.pulls.len() < self.config.max_pulls_out.max(1) as usize {
            let allowed = served
                .remaining
                .unwrap_or(u64::MAX)
                .min(u64::from(served.credits))
                .saturating_sub(asked);
            let max = allowed.min(u64::from(self.config.max_pull_entries.max(1))) as u32;
            let max_bytes = (served.credit_bytes - asked_bytes)
                .clamp(0, i128::from(self.config.max_pull_bytes.max(1)))
                as u64;
            if max == 0 || max_bytes == 0 {
                return;
            }
            asked += u64::from(max);
            asked_bytes += i128::from(max_bytes);
            served.pulls.push_back((max, max_bytes));
            self.outputs.push_back(ServerOutput::IterPull {
                iter,
                max,
                max_bytes,
            });
        }
    }

    fn chunk(&mut self, iter: IterId, mut entries: Vec<Entry>, exhausted: bool) {
        let Some(served) = self.iters.get_mut(&iter) else {
            // Closed by the follower while the pull was out.
            return;
        };
        let Some((asked, _)) = served.pulls.pop_front() else {
            // Not asked for.
            return;
        };
        let fence = served.fence;
        if entries.len() > asked as usize {
            // The store read past the pull: the entries it skipped would be lost.
            self.iters.remove(&iter);
            let error = ErrorCode::Backend(format!(
                "the store gave {} entries for a pull of {asked}",
                entries.len()
            ));
            self.send_behind(fence, ServerMessage::IterFailed { iter, error });
            self.drop_behind(fence, iter);
            return;
        }
        // The pulls out never ask for more than the credits and the limit allow.
        let count = entries.len();
        served.credits -= count as u32;
        if let Some(remaining) = &mut served.remaining {
            *remaining -= count as u64;
        }
        if !served.values {
            for entry in &mut entries {
                entry.value = Vec::new();
            }
        }
        // As the follower counts them, as they arrive.
        let bytes: u64 = entries.iter().map(Entry::len_bound).sum();
        served.credit_bytes -= i128::from(bytes);
        if self.writes.holds(fence) {
            served.held_entries += count as u32;
        }
        let finished = exhausted || served.remaining == Some(0);
        if let Err(error) = self.send_entries(iter, fence, entries) {
            self.iters.remove(&iter);
            self.send_behind(fence, ServerMessage::IterFailed { iter, error });
            self.drop_behind(fence, iter);
        } else if finished {
            self.iters.remove(&iter);
            self.send_behind(fence, ServerMessage::IterEnd { iter });
            self.drop_behind(fence, iter);
        } else {
            self.pull(iter);
        }
    }

    /// An answer as it can be sent: one that would not fit in a frame becomes
    /// [`ErrorCode::ReplyTooLarge`], so the request fails alone instead of the connection.
    fn fitted(&self, result: Result<Response, ErrorCode>) -> Result<Response, ErrorCode> {
        let max = u64::from(self.config.max_frame_len);
        match result {
            Ok(response) if response.reply_len_bound() > max => Err(ErrorCode::ReplyTooLarge {
                len: response.reply_len_bound(),
                max,
            }),
            other => other,
        }
    }

    /// Sends entries in as many `IterData` frames as the frame limit needs; fails at the
    /// first entry that cannot fit in a frame of its own (after sending those before it).
    fn send_entries(
        &mut self,
        iter: IterId,
        fence: Option<Fence>,
        entries: Vec<Entry>,
    ) -> Result<(), ErrorCode> {
        let max = u64::from(self.config.max_frame_len);
        // The entry count's varint is part of every frame.
        let empty_frame = Entry::DATA_OVERHEAD + 10;
        let total: u64 = entries.iter().map(Entry::len_bound).sum();
        if empty_frame + total <= max {
            // The usual case: one frame, sent as it came from the store.
            self.send_data(iter, fence, entries);
            return Ok(());
        }
        let mut frame = Vec::new();
        let mut frame_len = empty_frame;
        for entry in entries {
            let len = entry.len_bound();
            if empty_frame + len > max {
                self.send_data(iter, fence, frame);
                return Err(ErrorCode::ReplyTooLarge {
                    len: empty_frame + len,
                    max,
                });
            }
            if frame_len + len > max {
                self.send_data(iter, fence, std::mem::take(&mut frame));
                frame_len = empty_frame;
            }
            frame_len += len;
            frame.push(entry);
        }
        self.send_data(iter, fence, frame);
        Ok(())
    }

    fn send_data(&mut self, iter: IterId, fence: Option<Fence>, entries: Vec<Entry>) {
        if !entries.is_empty() {
            self.send_behind(fence, ServerMessage::IterData { iter, entries });
        }
    }

    fn close(&mut self, error: ErrorCode) {
        self.phase = Phase::Closed;
        self.in_flight.clear();
        self.writes = AnswerOrder::default();
        self.read_fences.clear();
        self.held_reads.clear();
        self.iters.clear();
        self.watches.clear();
        self.outputs.push_back(ServerOutput::Close(error));
    }

    fn send(&mut self, message: ServerMessage) {
        self.outputs.push_back(ServerOutput::Send(message));
    }

    /// Sends the answer of a read or an iterator once the writes issued before it are
    /// answered ([`super::answer_order`]).
    fn send_behind(&mut self, fence: Option<Fence>, message: ServerMessage) {
        self.answer_behind(fence, ServerOutput::Send(message));
    }

    /// Drops a store iterator after the answers it gave: until then it counts toward the
    /// connection's iterators.
    fn drop_behind(&mut self, fence: Option<Fence>, iter: IterId) {
        self.answer_behind(fence, ServerOutput::IterDrop { iter });
    }

    fn answer_behind(&mut self, fence: Option<Fence>, output: ServerOutput) {
        if let Some(output) = self.writes.pass(fence, output) {
            self.answer(output);
        }
    }

    /// Gives an output that is not held; a read stays in flight until its reply is sent.
    fn answer(&mut self, output: ServerOutput) {
        if let ServerOutput::Send(ServerMessage::Reply { id, .. }) = &output {
            self.in_flight.remove(id);
            self.held_reads.remove(id);
        }
        self.outputs.push_back(output);
    }

    /// Gives an output held until now.
    fn release(&mut self, output: ServerOutput) {
        if let ServerOutput::Send(ServerMessage::IterData { iter, entries }) = &output {
            if let Some(served) = self.iters.get_mut(iter) {
                served.held_entries = served.held_entries.saturating_sub(entries.len() as u32);
            }
        }
        self.answer(output);
    }
}

/// An output as it may be sent: an error's text cut to [`crate::error::MAX_ERROR_TEXT`], so
/// that it fits in the smallest frame a leader allows, whatever its store said.
fn with_short_errors(output: ServerOutput) -> ServerOutput {
    let ServerOutput::Send(message) = output else {
        return output;
    };
    ServerOutput::Send(match message {
        ServerMessage::Reply {
            id,
            result: Err(error),
        } => ServerMessage::Reply {
            id,
            result: Err(error.shortened()),
        },
        ServerMessage::IterFailed { iter, error } => ServerMessage::IterFailed {
            iter,
            error: error.shortened(),
        },
        ServerMessage::WatchFailed { watch, error } => ServerMessage::WatchFailed {
            watch,
            error: error.shortened(),
        },
        ServerMessage::Rejected(error) => ServerMessage::Rejected(error.shortened()),
        other => other,
    })
}

fn protocol_violation(message: &ClientMessage, when: &str) -> ErrorCode {
    let name = match message {
        ClientMessage::Hello(_) => "Hello",
        ClientMessage::Read { .. } => "Read",
        ClientMessage::Write { .. } => "Write",
        ClientMessage::IterOpen { .. } => "IterOpen",
        ClientMessage::IterNext { .. } => "IterNext",
        ClientMessage::IterClose { .. } => "IterClose",
        ClientMessage::WatchOpen { .. } => "WatchOpen",
        ClientMessage::WatchNext { .. } => "WatchNext",
        ClientMessage::WatchClose { .. } => "WatchClose",
        ClientMessage::OfferRing { .. } => "OfferRing",
    };
    ErrorCode::Malformed(format!("{name} {when}"))
}
