//! The follower's session: everything a handle decides about its requests, whoever serves
//! them.
//!
//! Requests and iterators are accepted at any time — before a leader is known, while
//! connected, during a failover — and each request completes exactly once from the caller's
//! point of view. The driver reports the connection (`Connected`, `Message`, `Disconnected`)
//! and carries out [`ClientOutput::Send`]; it must report every message of a connection
//! before that connection's `Disconnected`.
//!
//! Writes carry this client's id (sent once, in the handshake) and a sequence number that
//! stays the same when the write is re-sent, so a leader applies it at most once.

mod cursor;
mod pending;
mod subscription;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use cursor::Cursor;
pub use cursor::IterPoll;
use pending::{PendingTable, RequestOp};
use subscription::Subscription;
pub use subscription::{WatchEvent, WatchPoll};

use crate::error::ErrorCode;
use crate::feed::CommitSeq;
use crate::ids::{ClientId, IterId, RequestId, WatchId, WriteSeq};
use crate::range::{IterOptions, KeyRange};
use crate::time::Timestamp;
use crate::wire::{
    ClientMessage, Hello, LeaderLimits, LeaveCause, ProtocolId, ReadOp, Response, ServerMessage,
    Welcome, WriteOp, DEFAULT_MAX_FRAME_LEN,
};

/// How a client session behaves.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct ClientConfig {
    /// Re-send in-flight requests and resume iterators after a lost connection (true), or
    /// fail them with [`ErrorCode::ConnectionLost`] (false). Requests issued while no
    /// connection is up wait for one either way.
    pub retry: bool,
    /// Fail a request with [`ErrorCode::TimedOut`] once it has waited this long, and an
    /// iterator once its caller has waited as long for its next entries (see
    /// [`ClientSession::iter_take`]).
    pub request_timeout: Option<Duration>,
    /// How many entries an iterator may have buffered or on their way at once (at most
    /// what the leader allows, [`LeaderLimits::max_iter_credits`]).
    pub iter_window: u32,
    /// How many bytes of entries ([`crate::wire::Entry::len_bound`]) an iterator may have
    /// buffered or on their way at once, but for one entry per pull the leader has out
    /// (`ServerConfig::max_pulls_out`, 4): a pull passes its bytes by the entry that
    /// crosses them, so that an entry bigger than the window still comes.
    pub iter_window_bytes: u64,
    /// How many committed groups a change feed subscription may have waiting for the
    /// caller or on their way at once (at most what the leader allows,
    /// [`LeaderLimits::max_iter_credits`]): what a subscriber that reads slowly costs.
    pub watch_window: u32,
    /// The largest request frame this client sends: a bigger request fails at once with
    /// [`ErrorCode::FrameTooLarge`]. The leader's own limit, told in its welcome, applies
    /// too.
    pub max_frame_len: u32,
    /// A peer that has not welcomed this client by then after it connected is no leader
    /// (it may not speak party at all): the connection is dropped and the election
    /// tries again after a while, as after a refusal.
    pub welcome_timeout: Duration,
    /// The kind of store this process is configured for, said in the hello: a leader
    /// serving another refuses it.
    pub store: std::borrow::Cow<'static, str>,
    /// A write first sent this long ago is not sent again after a lost connection: it
    /// fails with [`ErrorCode::OutcomeUnknown`], since the leader's record of it may have
    /// expired by then. Half the leaders' dedup retention
    /// (`WriterConfig::dedup_retention`), leaving the other half for clocks that differ.
    pub resend_window: Duration,
    /// The wall clock at the machine's epoch (`Timestamp` zero), as a duration since the
    /// Unix epoch: writes tell the leader when they were first sent by it. Kept current
    /// with [`crate::Process::set_wall_clock`] (a machine's monotonic clock stops while the
    /// computer sleeps; the wall clock does not). Leaders refuse writes that look older
    /// than their resend window, so a zero here fails every write to a real leader.
    pub wall_clock_at_epoch: Duration,
    /// Bugs to re-create, for the simulator.
    pub bugs: crate::bugs::Bugs,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            retry: true,
            request_timeout: None,
            iter_window: 256,
            iter_window_bytes: 4 << 20,
            watch_window: 64,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            welcome_timeout: Duration::from_secs(2),
            store: std::borrow::Cow::Borrowed("fjall"),
            resend_window: crate::writer::DEFAULT_DEDUP_RETENTION / 2,
            wall_clock_at_epoch: Duration::ZERO,
            bugs: crate::bugs::Bugs::default(),
        }
    }
}

/// What happened on the connection to the leader.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ClientInput {
    /// A connection to the leader is up; nothing has been sent on it yet.
    Connected,
    /// A message arrived on the current connection.
    Message(ServerMessage),
    /// The current connection is gone.
    Disconnected,
    /// The current connection is gone because the leader broke the protocol (bytes that do
    /// not decode): what is pending fails with this, as when a leader refuses the client,
    /// rather than waiting for, or being re-sent to, the same leader.
    Broken(ErrorCode),
    /// The handle is closing: everything outstanding fails with [`ErrorCode::Closed`].
    Close,
    /// The handle cannot go on (its election failed): everything pending fails with this
    /// error, but a write a leader may have taken, whose outcome is unknown.
    Failed(ErrorCode),
}

/// What the driver must do or tell the caller.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ClientOutput {
    /// Send this on the current connection.
    Send(ClientMessage),
    /// The one and only outcome of a request.
    Completed {
        id: RequestId,
        result: Result<Response, ErrorCode>,
    },
    /// The iterator has something new for [`ClientSession::iter_take`]: entries, its end or
    /// its failure.
    IterReady { iter: IterId },
    /// The subscription has something new: its start ([`ClientSession::watch_position`]),
    /// or events or its failure for [`ClientSession::watch_take`].
    WatchReady { watch: WatchId },
}

/// The follower's session. See the module documentation.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct ClientSession {
    client_id: ClientId,
    config: ClientConfig,
    next_request: u64,
    next_seq: u64,
    next_iter: u64,
    next_watch: u64,
    connected: bool,
    /// The leader said it is closing: nothing more is sent on this connection, and once
    /// everything sent is answered the session is drained (see [`ClientSession::drained`]).
    draining: bool,
    /// The welcome of the current connection, once it came.
    leader: Option<Welcome>,
    pending: PendingTable,
    cursors: BTreeMap<IterId, Cursor>,
    /// The iterators whose caller waits for entries, by when it gives up.
    iter_deadlines: BTreeSet<(Timestamp, IterId)>,
    subscriptions: BTreeMap<WatchId, Subscription>,
    closed: bool,
    /// The time of the latest input.
    now: Timestamp,
    outputs: VecDeque<ClientOutput>,
}

impl ClientSession {
    pub fn new(client_id: ClientId, config: ClientConfig) -> Self {
        ClientSession {
            client_id,
            config,
            next_request: 0,
            next_seq: 0,
            next_iter: 0,
            next_watch: 0,
            connected: false,
            draining: false,
            leader: None,
            pending: PendingTable::default(),
            cursors: BTreeMap::new(),
            iter_deadlines: BTreeSet::new(),
            subscriptions: BTreeMap::new(),
            closed: false,
            now: Timestamp::ZERO,
            outputs: VecDeque::new(),
        }
    }

    /// The id this session's writes carry.
    pub fn client_id(&self) -> ClientId {
        self.client_id
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The wall clock is `wall` (since the Unix epoch) at `now`.
    pub fn set_wall_clock(&mut self, now: Timestamp, wall: Duration) {
        self.config.wall_clock_at_epoch = wall.saturating_sub(now.since_epoch());
    }

    /// The process id the current leader gave in its welcome.
    pub fn leader_pid(&self) -> Option<u32> {
        self.leader.as_ref().map(|welcome| welcome.leader_pid)
    }

    /// The leader is closing and has answered every request sent to it: the connection can
    /// be let go without failing a request, even without retries (an iterator or a
    /// subscription open on it cannot go on there either way: with retries it resumes on
    /// the next leader, without them it fails `ConnectionLost`).
    pub fn drained(&self) -> bool {
        self.connected && self.draining && self.pending.in_flight() == 0
    }

    /// The current leader's generation, once it has welcomed this session.
    pub fn leader_term(&self) -> Option<u64> {
        self.leader.as_ref().map(|welcome| welcome.term)
    }

    /// The kind of store the current leader serves, once it has welcomed this session.
    pub fn leader_store(&self) -> Option<&str> {
        self.leader.as_ref().map(|welcome| welcome.store.as_str())
    }

    /// The limits the current leader gave in its welcome.
    pub fn leader_limits(&self) -> Option<LeaderLimits> {
        self.leader.as_ref().map(|welcome| welcome.limits)
    }

    /// The largest frame this session takes from its leader: its own limit, or the
    /// leader's once it has welcomed the session, if larger, since a leader sizes its
    /// answers and its iterators' data by its own. (Requests keep to the smaller.)
    pub fn incoming_frame_limit(&self) -> u32 {
        let own = self.config.max_frame_len;
        self.leader_limits()
            .map_or(own, |limits| limits.max_frame_len.max(own))
    }

    /// Whether the pending request `id` is a write a leader may have taken (sent on this
    /// connection or an earlier one): failed for a cause not its own, its outcome is
    /// unknown.
    pub fn write_sent(&self, id: RequestId) -> bool {
        self.pending.write_sent(id)
    }

    /// Requests that have not completed yet.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// Issues a read; its outcome comes as [`ClientOutput::Completed`].
    pub fn read(&mut self, now: Timestamp, op: ReadOp) -> RequestId {
        self.submit(now, RequestOp::Read(op))
    }

    /// Issues a write with the next sequence number of this client.
    pub fn write(&mut self, now: Timestamp, op: WriteOp) -> RequestId {
        self.next_seq += 1;
        self.submit(now, RequestOp::Write(WriteSeq(self.next_seq), op.into()))
    }

    /// Opens an iterator; ask for its entries with [`ClientSession::iter_take`].
    pub fn open_iter(&mut self, options: IterOptions) -> IterId {
        let iter = IterId(self.next_iter);
        self.next_iter += 1;
        #[cfg_attr(not(feature = "bug-injection"), allow(unused_mut))]
        let mut cursor = Cursor::new(
            options,
            self.config.iter_window,
            self.config.iter_window_bytes,
            RequestId(self.next_request),
        );
        #[cfg(feature = "bug-injection")]
        cursor.inject(self.config.bugs);
        if self.closed {
            cursor.fail(ErrorCode::Closed);
        }
        self.cursors.insert(iter, cursor);
        self.send_ready();
        iter
    }

    /// Takes up to `max` entries from an iterator. An iterator that is done or failed is
    /// forgotten after saying so once. A take that finds nothing starts the caller's wait:
    /// with a [`ClientConfig::request_timeout`], an iterator that has shown the caller
    /// nothing new by its end fails with [`ErrorCode::TimedOut`].
    pub fn iter_take(&mut self, now: Timestamp, iter: IterId, max: usize) -> IterPoll {
        self.now = self.now.max(now);
        let welcomed = self.welcomed();
        let Some(cursor) = self.cursors.get_mut(&iter) else {
            return IterPoll::Failed(ErrorCode::NotFound);
        };
        let (poll, grant) = cursor.take(max);
        match (&poll, self.config.request_timeout) {
            (IterPoll::Pending, Some(timeout)) if cursor.deadline.is_none() => {
                let deadline = now + timeout;
                cursor.deadline = Some(deadline);
                self.iter_deadlines.insert((deadline, iter));
            }
            (IterPoll::Pending, _) => {}
            _ => {
                if let Some(deadline) = cursor.deadline.take() {
                    self.iter_deadlines.remove(&(deadline, iter));
                }
            }
        }
        let open_here = welcomed && cursor.is_open();
        let finished = cursor.is_finished();
        if let (Some((credits, bytes)), true, false) = (grant, open_here, finished) {
            self.send(ClientMessage::IterNext {
                iter,
                credits,
                bytes,
            });
        }
        if matches!(poll, IterPoll::Done | IterPoll::Failed(_)) {
            self.cursors.remove(&iter);
        }
        if finished && open_here {
            // The caller has all it asked for; the leader can drop its side now.
            self.send(ClientMessage::IterClose { iter });
            if let Some(cursor) = self.cursors.get_mut(&iter) {
                cursor.end();
            }
        }
        poll
    }

    /// The caller is done with an iterator before its end.
    pub fn close_iter(&mut self, iter: IterId) {
        if let Some(cursor) = self.cursors.remove(&iter) {
            if let Some(deadline) = cursor.deadline {
                self.iter_deadlines.remove(&(deadline, iter));
            }
            if self.welcomed() && cursor.is_open() {
                self.send(ClientMessage::IterClose { iter });
            }
        }
    }

    /// The commit an iterator's store snapshot was taken after, once the leader said: a
    /// subscription from the next one follows the range from where the iterator read it.
    /// After a failover the iterator reads the rest from a later snapshot, and this stays
    /// the first one's, so that such a subscription misses nothing (it may see again a
    /// change the rest of the iteration already showed).
    pub fn iter_at(&self, iter: IterId) -> Option<CommitSeq> {
        self.cursors.get(&iter).and_then(Cursor::at)
    }

    /// Subscribes to the changes of `range` in the groups committed from `from` on (`None`:
    /// from the leader's next commit); its start comes as [`ClientOutput::WatchReady`].
    pub fn open_watch(&mut self, range: KeyRange, from: Option<CommitSeq>) -> WatchId {
        let watch = WatchId(self.next_watch);
        self.next_watch += 1;
        #[cfg_attr(not(feature = "bug-injection"), allow(unused_mut))]
        let mut subscription = Subscription::new(range, from, self.config.watch_window);
        #[cfg(feature = "bug-injection")]
        subscription.inject(self.config.bugs);
        if self.closed {
            subscription.fail(ErrorCode::Closed);
        } else if let Some(limits) = self.leader_limits() {
            if let Some(message) = subscription.open(watch, limits.max_iter_credits) {
                self.send(message);
            }
        }
        self.subscriptions.insert(watch, subscription);
        watch
    }

    /// The next commit the subscription will hand over, once a leader has said where it
    /// starts (`None` before, from a given commit too: it may still be refused): every
    /// group from there on reaches the caller (or is reported lost to a lag).
    pub fn watch_position(&self, watch: WatchId) -> Option<CommitSeq> {
        self.subscriptions
            .get(&watch)
            .and_then(Subscription::position)
    }

    /// Takes up to `max` events from a subscription. A failed one is forgotten after
    /// saying so once.
    pub fn watch_take(&mut self, watch: WatchId, max: usize) -> WatchPoll {
        let welcomed = self.welcomed();
        let Some(subscription) = self.subscriptions.get_mut(&watch) else {
            return WatchPoll::Failed(ErrorCode::NotFound);
        };
        let (poll, grant) = subscription.take(max);
        if let (Some(credits), true) = (grant, welcomed && subscription.is_open()) {
            self.send(ClientMessage::WatchNext { watch, credits });
        }
        if matches!(poll, WatchPoll::Failed(_)) {
            self.subscriptions.remove(&watch);
        }
        poll
    }

    /// The caller is done with a subscription.
    pub fn close_watch(&mut self, watch: WatchId) {
        if let Some(subscription) = self.subscriptions.remove(&watch) {
            if self.welcomed() && subscription.is_open() {
                self.send(ClientMessage::WatchClose { watch });
            }
        }
    }

    pub fn handle_input(&mut self, now: Timestamp, input: ClientInput) {
        self.handle_timeout(now);
        if self.closed {
            return;
        }
        match input {
            ClientInput::Connected => self.connected(),
            ClientInput::Message(message) => self.receive(message),
            ClientInput::Disconnected => self.disconnected(),
            ClientInput::Broken(error) => {
                self.refused(error);
                self.disconnected();
            }
            ClientInput::Close => self.close(),
            ClientInput::Failed(error) => {
                self.closed = true;
                self.connected = false;
                self.refused(error);
            }
        }
    }

    /// Fails requests whose time is up, and iterators whose caller waited as long.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
        for id in self.pending.take_expired(now) {
            self.complete(id, Err(ErrorCode::TimedOut));
        }
        while let Some(&(deadline, iter)) = self.iter_deadlines.first() {
            if deadline > now {
                break;
            }
            self.iter_deadlines.pop_first();
            self.iter_timed_out(iter);
        }
    }

    /// The caller of `iter` waited its request timeout: the iterator fails, unless entries
    /// came meanwhile (they are the caller's, and its next take hands them over). Came
    /// means handed to this session: entries the driver reads only after the deadline are
    /// too late, as a request's answer is.
    fn iter_timed_out(&mut self, iter: IterId) {
        let Some(cursor) = self.cursors.get_mut(&iter) else {
            return;
        };
        cursor.deadline = None;
        if cursor.would_wait() {
            self.fail_iter(iter, ErrorCode::TimedOut);
        }
    }

    /// Fails an iterator here, and tells the leader to drop its side if it holds one.
    fn fail_iter(&mut self, iter: IterId, error: ErrorCode) {
        let welcomed = self.welcomed();
        let Some(cursor) = self.cursors.get_mut(&iter) else {
            return;
        };
        if let Some(deadline) = cursor.deadline.take() {
            self.iter_deadlines.remove(&(deadline, iter));
        }
        let open_here = welcomed && cursor.is_open();
        cursor.fail(error);
        if open_here {
            self.send(ClientMessage::IterClose { iter });
        }
        self.outputs.push_back(ClientOutput::IterReady { iter });
    }

    /// Fails a subscription here, and tells the leader to drop its side if it holds one.
    fn fail_watch(&mut self, watch: WatchId, error: ErrorCode) {
        let welcomed = self.welcomed();
        let Some(subscription) = self.subscriptions.get_mut(&watch) else {
            return;
        };
        let open_here = welcomed && subscription.is_open();
        subscription.fail(error);
        if open_here {
            self.send(ClientMessage::WatchClose { watch });
        }
        self.outputs.push_back(ClientOutput::WatchReady { watch });
    }

    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        self.outputs.pop_front()
    }

    /// When [`ClientSession::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let iter_deadline = self.iter_deadlines.first().map(|(deadline, _)| *deadline);
        [self.pending.next_deadline(), iter_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    fn submit(&mut self, now: Timestamp, op: RequestOp) -> RequestId {
        self.now = self.now.max(now);
        let id = RequestId(self.next_request);
        self.next_request += 1;
        if self.closed {
            self.complete(id, Err(ErrorCode::Closed));
            return id;
        }
        let (len, max) = (op.len_bound(), u64::from(self.config.max_frame_len));
        if len > max {
            self.complete(id, Err(ErrorCode::FrameTooLarge { len, max }));
            return id;
        }
        let deadline = self.config.request_timeout.map(|timeout| now + timeout);
        self.pending.insert(id, op, deadline);
        self.send_ready();
        id
    }

    /// Sends waiting requests in issue order, as many as the leader allows in flight, and
    /// opens waiting iterators in their place among them (each after the requests issued
    /// before it, before those issued after); a request too large for the leader's frames
    /// fails here instead of being sent to be refused, and a write first sent longer ago
    /// than the resend window fails instead of being sent again (see
    /// [`ClientConfig::resend_window`]).
    fn send_ready(&mut self) {
        let Some(limits) = self.leader_limits() else {
            return;
        };
        if self.draining {
            return;
        }
        // In the order opened, which is the order of their places among the requests.
        let mut openings = self
            .cursors
            .iter()
            .filter_map(|(iter, cursor)| cursor.awaits_opening().map(|before| (before, *iter)))
            .collect::<Vec<_>>()
            .into_iter()
            .peekable();
        loop {
            let next = self.pending.next_unsent();
            if let Some(&(before, iter)) = openings.peek() {
                if next.is_none_or(|(id, ..)| before <= id) {
                    openings.next();
                    let cursor = self.cursors.get_mut(&iter);
                    let opening = cursor.and_then(|c| c.open(iter, limits.max_iter_credits));
                    if let Some(message) = opening {
                        self.send(message);
                    }
                    continue;
                }
            }
            if self.pending.in_flight() >= limits.max_in_flight as usize {
                return;
            }
            let Some((id, len, first_sent)) = next else {
                return;
            };
            let max = u64::from(limits.max_frame_len);
            #[cfg_attr(not(feature = "bug-injection"), allow(unused_mut))]
            let mut too_old =
                first_sent.is_some_and(|first| first + self.config.resend_window <= self.now);
            #[cfg(feature = "bug-injection")]
            {
                too_old &= !self.config.bugs.resend_late;
            }
            if len > max {
                self.pending.remove(id);
                let too_large = ErrorCode::FrameTooLarge { len, max };
                // Sent before, to a leader with a larger limit: it may have been applied.
                let error = match first_sent {
                    Some(_) => ErrorCode::OutcomeUnknown(format!(
                        "sent to a leader, then too large for the next one: {too_large}"
                    )),
                    None => too_large,
                };
                self.complete(id, Err(error));
            } else if too_old {
                self.pending.remove(id);
                let cause = "in flight longer than the resend window when its connection \
                             was lost; not sent again";
                self.complete(id, Err(ErrorCode::OutcomeUnknown(cause.into())));
            } else if let Some(message) =
                self.pending
                    .mark_sent(id, self.now, self.config.wall_clock_at_epoch)
            {
                self.send(message);
            }
        }
    }

    fn connected(&mut self) {
        if self.connected {
            // A second Connected without a Disconnected: treat the first as lost.
            self.disconnected();
        }
        self.connected = true;
        self.draining = false;
        // Requests wait for the welcome: a connection that ends before it (a leader dying
        // with our connect in its backlog, or one that refuses us) never had them, so
        // they are not lost with it.
        self.send(ClientMessage::Hello(Hello {
            protocol: ProtocolId::CURRENT,
            client_id: self.client_id,
            store: self.config.store.to_string(),
        }));
    }

    fn welcomed(&self) -> bool {
        self.connected && self.leader.is_some()
    }

    fn welcome(&mut self, welcome: Welcome) {
        let limits = welcome.limits;
        self.leader = Some(welcome);
        self.send_ready();
        let mut subscriptions = std::mem::take(&mut self.subscriptions);
        for (watch, subscription) in &mut subscriptions {
            if let Some(message) = subscription.open(*watch, limits.max_iter_credits) {
                self.send(message);
            }
        }
        self.subscriptions = subscriptions;
    }

    fn receive(&mut self, message: ServerMessage) {
        if !self.connected {
            return;
        }
        match message {
            ServerMessage::Welcome(welcome) => self.welcome(welcome),
            ServerMessage::Rejected(error) => self.refused(error),
            ServerMessage::Reply { id, result } => {
                if self.pending.answered(id) {
                    self.complete(id, result);
                }
                self.send_ready();
            }
            ServerMessage::IterData { iter, entries } => {
                let mut refused = None;
                self.with_open_cursor(iter, |cursor| refused = cursor.receive(entries).err());
                if let Some(error) = refused {
                    self.fail_iter(iter, error);
                }
            }
            ServerMessage::IterEnd { iter } => {
                self.with_open_cursor(iter, Cursor::end);
            }
            ServerMessage::IterFailed { iter, error } => {
                self.with_open_cursor(iter, |cursor| cursor.fail(error));
            }
            ServerMessage::IterAt { iter, seq } => {
                if let Some(cursor) = self.cursors.get_mut(&iter) {
                    cursor.opened_at(seq);
                }
            }
            ServerMessage::WatchStarted { watch, from } => {
                self.with_open_subscription(watch, |s| s.started(from));
            }
            ServerMessage::WatchData {
                watch,
                seq,
                changes,
                complete,
            } => {
                let mut refused = None;
                self.with_open_subscription(watch, |s| {
                    refused = s.data(seq, changes, complete).err();
                });
                if let Some(error) = refused {
                    self.fail_watch(watch, error);
                }
            }
            ServerMessage::WatchProgress { watch, through } => {
                if let Some(subscription) = self.subscriptions.get_mut(&watch) {
                    subscription.progress(through);
                }
            }
            ServerMessage::WatchLagged {
                watch,
                missed,
                resume,
            } => self.with_open_subscription(watch, |s| s.lagged(missed, resume)),
            ServerMessage::WatchFailed { watch, error } => {
                self.with_open_subscription(watch, |s| s.fail(error));
            }
            // A leader that closes answers what it was sent before it goes, so nothing more
            // is sent to it; one that lost its lock or its store goes at once, and what is
            // in flight is settled when the connection ends, as after a crash.
            ServerMessage::Leaving(LeaveCause::Closing) => self.draining = true,
            ServerMessage::Leaving(LeaveCause::LockLost | LeaveCause::StoreFailed) => {}
            // The transport takes every value out of the ring before a message reaches the
            // session (or drops the connection); this one had no value to give.
            ServerMessage::ReplyInRing { .. } => {}
        }
    }

    fn with_open_cursor(&mut self, iter: IterId, f: impl FnOnce(&mut Cursor)) {
        #[cfg(feature = "bug-injection")]
        let any_state = self.config.bugs.iter_messages_when_closed;
        #[cfg(not(feature = "bug-injection"))]
        let any_state = false;
        if let Some(cursor) = self.cursors.get_mut(&iter) {
            if any_state || cursor.is_open() {
                f(cursor);
                self.outputs.push_back(ClientOutput::IterReady { iter });
            }
        }
    }

    fn with_open_subscription(&mut self, watch: WatchId, f: impl FnOnce(&mut Subscription)) {
        if let Some(subscription) = self.subscriptions.get_mut(&watch) {
            if subscription.is_open() {
                f(subscription);
                self.outputs.push_back(ClientOutput::WatchReady { watch });
            }
        }
    }

    /// The leader refuses this client on every connection alike (or the handle cannot go
    /// on at all): fail what is pending rather than send it into the same refusal. A write
    /// a leader may have taken before (on this connection or an earlier one) may have
    /// been applied: its outcome is unknown, whatever ended this connection.
    fn refused(&mut self, error: ErrorCode) {
        for id in self.pending.ids() {
            let result = if self.pending.write_sent(id) {
                ErrorCode::OutcomeUnknown(format!("sent to a leader, then: {error}"))
            } else {
                error.clone()
            };
            self.pending.remove(id);
            self.complete(id, Err(result));
        }
        self.fail_live_cursors(error);
    }

    fn fail_live_cursors(&mut self, error: ErrorCode) {
        for (iter, cursor) in &mut self.cursors {
            if cursor.is_live() {
                cursor.fail(error.clone());
                self.outputs
                    .push_back(ClientOutput::IterReady { iter: *iter });
            }
        }
        self.fail_subscriptions(error);
    }

    fn fail_subscriptions(&mut self, error: ErrorCode) {
        for (watch, subscription) in &mut self.subscriptions {
            if !subscription.is_failed() {
                subscription.fail(error.clone());
                self.outputs
                    .push_back(ClientOutput::WatchReady { watch: *watch });
            }
        }
    }

    fn disconnected(&mut self) {
        if !std::mem::take(&mut self.connected) {
            return;
        }
        self.draining = false;
        self.leader = None;
        if !self.config.retry {
            for id in self.pending.sent() {
                self.pending.remove(id);
                self.complete(id, Err(ErrorCode::ConnectionLost));
            }
        }
        self.pending.mark_all_unsent();
        let retry = self.config.retry;
        let mut affected = Vec::new();
        for (iter, cursor) in &mut self.cursors {
            if cursor.is_open() {
                cursor.connection_lost(retry);
                affected.push(*iter);
            }
        }
        if !retry {
            for iter in affected {
                self.outputs.push_back(ClientOutput::IterReady { iter });
            }
        }
        for (watch, subscription) in &mut self.subscriptions {
            if subscription.is_open() {
                subscription.connection_lost(retry);
                if !retry {
                    self.outputs
                        .push_back(ClientOutput::WatchReady { watch: *watch });
                }
            }
        }
    }

    fn close(&mut self) {
        self.closed = true;
        self.connected = false;
        for id in self.pending.ids() {
            self.pending.remove(id);
            self.complete(id, Err(ErrorCode::Closed));
        }
        for (iter, cursor) in &mut self.cursors {
            cursor.fail(ErrorCode::Closed);
            self.outputs
                .push_back(ClientOutput::IterReady { iter: *iter });
        }
        self.fail_subscriptions(ErrorCode::Closed);
    }

    fn complete(&mut self, id: RequestId, result: Result<Response, ErrorCode>) {
        self.outputs
            .push_back(ClientOutput::Completed { id, result });
    }

    fn send(&mut self, message: ClientMessage) {
        self.outputs.push_back(ClientOutput::Send(message));
    }
}
