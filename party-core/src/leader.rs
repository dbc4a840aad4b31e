//! Serving as leader: the store thread, the accept loop, and one task per follower
//! connection running a [`ServerSession`].

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::tokio::{Listener, Stream};
use party_backends::Backend;
use party_proto::wire::LeaveCause;
use party_proto::wire::{
    ClientMessage, FrameDecoder, Outgoing, ServerMessage, DEFAULT_MAX_FRAME_LEN,
};
use party_proto::{admit_peer, ErrorCode, PeerFacts, ServerConfig, ServerInput, ServerSession};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::{Accesses, Sent, StoreAccess};
use crate::clock;
use crate::headroom::Headroom;
use crate::lock::ElectionLock;
use crate::send_buffer::SendBuffer;
use crate::socket_now::{recv_now, send_now, write_rest};
use crate::spin::Spinner;
use crate::store::{self, StoreJob, StoreQueue};
use crate::sync::{ConnIds, Followers};
use crate::value_ring::{LeaderRing, RingOffer};

/// Most bytes a read takes into a connection's buffer (a follower's and the leader's
/// alike); a frame with at least this much still missing is read straight into the decoder
/// instead, as much of it as has arrived (see [`read_next`]).
pub(crate) const READ_BUFFER: usize = 64 * 1024;

/// What a connection's read buffer holds at first: most connections only ever carry small
/// messages, and a small buffer is a cheap allocation where one of [`READ_BUFFER`] is a
/// costly one (64 new connections at once in a failover, each of whose followers also
/// freed one and took another).
const FIRST_READ_BUFFER: usize = 4 * 1024;

/// A connection's read buffer; see [`grow_when_filled`].
pub(crate) fn read_buffer() -> Vec<u8> {
    Vec::with_capacity(FIRST_READ_BUFFER)
}

/// After a read into `buffer`'s spare capacity: a read that filled it grows it to
/// [`READ_BUFFER`], for a connection that carries more than small messages.
pub(crate) fn grow_when_filled(buffer: &mut Vec<u8>) {
    if buffer.len() == buffer.capacity() && buffer.capacity() < READ_BUFFER {
        buffer.reserve_exact(READ_BUFFER - buffer.len());
    }
}

/// How a leader serves: its limits, and its store's disk.
pub(crate) struct Serving {
    pub connection: ConnectionConfig,
    pub headroom: Headroom,
    /// How long the writer keeps clients' dedup records.
    pub dedup_retention: std::time::Duration,
    /// Whether the writer keeps a change feed, and how much of its log.
    pub change_feed: bool,
    pub change_retention: party_proto::ChangeRetention,
    /// The stream of this leadership's commits, if the handle records.
    pub recorder: Option<crate::recording::Recorder>,
}

/// What every follower connection is served with.
#[derive(Clone)]
pub(crate) struct ConnectionConfig {
    pub session: ServerConfig,
    pub max_frame_len: u32,
    pub max_connections: u32,
    /// The user the leader runs as; followers of other users are refused. The socket's
    /// owner-only mode already keeps them out; this holds if the mode is loosened.
    pub owner: Option<u32>,
    /// In low-latency mode, how long a connection polls for its follower's next request
    /// after an exchange before it parks.
    pub spin: Option<std::time::Duration>,
}

/// A running leadership: stop it with [`Leader::stop`].
pub(crate) struct Leader {
    accesses: Accesses,
    store_thread: std::thread::JoinHandle<()>,
    /// Tells that the store thread has done its last job (and closes the store next).
    drained: tokio::sync::oneshot::Receiver<()>,
    cancel: CancellationToken,
    /// Told when the store thread panicked: nothing can be served any more. A oneshot,
    /// polled at every turn of the driver's loop without a lock; `None` once its sender
    /// went without a word (the thread ended as it should).
    store_failed: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Why the leader stops, for the connections to tell their followers; set before
    /// `cancel`.
    leaving: Leaving,
    tasks: TaskTracker,
}

/// Why the leader stops, once it does.
type Leaving = Arc<std::sync::OnceLock<LeaveCause>>;

impl Leader {
    /// Starts the store thread and accepts followers on `listener`, after serving those
    /// already connected (the seats taken from the waiting room). The store thread takes
    /// `lock` and holds it until it has closed the store; if it cannot start, the lock
    /// stays where it was.
    pub fn start(
        store: Arc<dyn Backend>,
        lock: &mut Option<Arc<ElectionLock>>,
        (listener, seated): (Listener, Vec<Stream>),
        serving: Serving,
    ) -> std::io::Result<Leader> {
        let followers = Followers::default();
        let (done, drained) = tokio::sync::oneshot::channel();
        let (hold, held) = std::sync::mpsc::channel();
        let writing = store::Writing {
            headroom: serving.headroom,
            dedup_retention: serving.dedup_retention,
            change_feed: serving.change_feed,
            change_retention: serving.change_retention,
            recorder: serving.recorder,
        };
        let scans = crate::scans::Scans::default();
        let (queue, thread) = store::open(store.clone(), followers.clone(), writing, scans);
        let (failed, store_failed) = tokio::sync::oneshot::channel();
        let store_thread = std::thread::Builder::new()
            .name("party-store".into())
            .spawn(move || {
                let ran =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| thread.run(done)));
                let lock = held.recv();
                if ran.is_err() {
                    // The store may still be open through the leader's other handles to
                    // it: the lock stays taken until this process exits.
                    tracing::error!("the store thread panicked; the store stays locked");
                    std::mem::forget(lock);
                    let _ = failed.send(());
                }
            })?;
        let _ = hold.send(lock.take());
        let cancel = CancellationToken::new();
        let leaving = Leaving::default();
        let tasks = TaskTracker::new();
        tasks.spawn(tick(queue.clone(), cancel.clone()));
        let accesses = Accesses {
            backend: store,
            queue,
            conn_ids: ConnIds::default(),
        };
        tasks.spawn(accept_loop(
            (listener, seated),
            accesses.clone(),
            serving.connection,
            cancel.clone(),
            leaving.clone(),
            tasks.clone(),
            followers,
        ));
        Ok(Leader {
            accesses,
            store_thread,
            drained,
            cancel,
            store_failed: Some(store_failed),
            leaving,
            tasks,
        })
    }

    /// Resolves once the store thread has panicked (a bug of the store or of party): the
    /// leader can serve nothing more, and its process keeps the store locked until it
    /// exits.
    pub async fn store_failed(&mut self) {
        if let Some(failed) = &mut self.store_failed {
            if failed.await.is_ok() {
                return;
            }
            self.store_failed = None;
        }
        std::future::pending().await
    }

    /// A way to the store for the leader's own handle.
    pub fn access(&self) -> StoreAccess {
        self.accesses.open()
    }

    /// Stops accepting, closes every follower connection, and waits for the store thread
    /// to finish its queue. The socket file is removed when the listener drops.
    ///
    /// Before it finishes, the store thread checkpoints the store for whoever opens it
    /// next (`Backend::checkpoint_before_close`: fjall and RocksDB flush their memtables,
    /// waiting at most 2 s), so a follower taking over waits for that flush instead of
    /// replaying the same writes. Closing the store can take a while after that (fjall's
    /// background threads need up to 250 ms to notice), so it is left to the store
    /// thread, which releases the lock only once the store is closed: until then no other
    /// process may open it (RocksDB, which a process may not exit while it closes, is
    /// closed before this returns: `Backend::may_exit_while_closing`). A process
    /// that exits meanwhile loses nothing, since every commit is already with the OS, and
    /// its exit releases the lock at once. Gives the store thread at once, to wait for
    /// the release (even if the stop is never awaited to its end), and the stop to await.
    pub fn stop(
        self,
        cause: LeaveCause,
    ) -> (
        std::thread::JoinHandle<()>,
        impl std::future::Future<Output = ()>,
    ) {
        tell_leaving(&self.leaving, &self.cancel, cause);
        self.tasks.close();
        let Leader {
            accesses,
            store_thread,
            drained,
            tasks,
            ..
        } = self;
        let stopped = async move {
            tasks.wait().await;
            drop(accesses);
            // An error here is a panic, which the store thread reports itself.
            let _ = drained.await;
        };
        (store_thread, stopped)
    }

    /// The store thread, for a handle dropped before it stopped this leader: the rest goes
    /// (the connections are told to stop), and the store thread closes the store once
    /// every way to it is gone.
    pub fn abandon(self) -> std::thread::JoinHandle<()> {
        self.cancel.cancel();
        self.store_thread
    }
}

/// Tells every task of the leader to stop, and why. The cause is set before they are
/// woken: a connection reads it as it wakes, and one that found none would tell its
/// follower `LockLost` (cut at once) where a close lets it drain.
fn tell_leaving(leaving: &Leaving, cancel: &CancellationToken, cause: LeaveCause) {
    let _ = leaving.set(cause);
    cancel.cancel();
}

/// Paces the store thread's checkpoints.
async fn tick(queue: StoreQueue, cancel: CancellationToken) {
    let mut ticks = tokio::time::interval(store::TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticks.tick() => {
                if !queue.send(StoreJob::Tick) {
                    return;
                }
            }
        }
    }
}

/// The first and the longest pause after a failed accept.
const FIRST_ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);
const LONGEST_ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);
/// At most one warning about failing accepts in this long: a leader at its descriptor limit
/// runs out again each time a few connections end, and each of those would say so.
const ACCEPT_WARNING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves the followers connected already (`seated`), then accepts more on `listener`.
async fn accept_loop(
    (listener, seated): (Listener, Vec<Stream>),
    accesses: Accesses,
    config: ConnectionConfig,
    cancel: CancellationToken,
    leaving: Leaving,
    tasks: TaskTracker,
    followers: Followers,
) {
    let admit = |stream: Stream| {
        let peer = PeerFacts {
            uid: peer_uid(&stream),
            owner: config.owner,
            connected: u32::try_from(followers.count()).unwrap_or(u32::MAX),
            max_connections: config.max_connections,
        };
        if let Err(refusal) = admit_peer(peer) {
            tasks.spawn(refuse(stream, refusal, cancel.clone()));
            return;
        }
        let follower = followers.join();
        let served = serve(
            stream,
            accesses.open(),
            config.clone(),
            cancel.clone(),
            leaving.clone(),
        );
        tasks.spawn(async move {
            served.await;
            drop(follower);
        });
    };
    seated.into_iter().for_each(admit);
    // While accepting fails (out of file descriptors, say, which fails again at once).
    let mut pause: Option<std::time::Duration> = None;
    let mut last_warning: Option<std::time::Instant> = None;
    let mut failed_unsaid: u64 = 0;
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    pause = None;
                    stream
                }
                Err(error) => {
                    // Not again at once, which would take a core and flood the log: a
                    // pause, longer each time, and few warnings.
                    let wait = pause.map_or(FIRST_ACCEPT_PAUSE, |last| {
                        (last * 2).min(LONGEST_ACCEPT_PAUSE)
                    });
                    pause = Some(wait);
                    failed_unsaid += 1;
                    if last_warning.is_none_or(|said| said.elapsed() >= ACCEPT_WARNING_INTERVAL) {
                        tracing::warn!(
                            "accept failed: {error} ({failed_unsaid} failed accepts since the \
                             last warning); trying again in {wait:?}, then less often; said at \
                             most once every {ACCEPT_WARNING_INTERVAL:?}"
                        );
                        last_warning = Some(std::time::Instant::now());
                        failed_unsaid = 0;
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        () = tokio::time::sleep(wait) => continue,
                    }
                }
            },
        };
        admit(stream);
    }
}

/// The peer's effective user, where the platform tells.
pub(crate) fn peer_uid(stream: &Stream) -> Option<u32> {
    #[cfg(unix)]
    {
        stream.peer_creds().ok()?.euid()
    }
    #[cfg(not(unix))]
    {
        let _ = stream;
        None
    }
}

/// The ring the follower at the other end of `stream` offered, if this process can open
/// it; big answers go through the socket otherwise.
fn open_ring(stream: &Stream, offer: RingOffer) -> Option<LeaderRing> {
    #[cfg(unix)]
    let pid = stream.peer_creds().ok()?.pid()?;
    #[cfg(not(unix))]
    let pid = {
        let _ = stream;
        return None;
    };
    LeaderRing::open(pid, offer)
        .inspect_err(|error| tracing::debug!("a follower's ring left unused: {error}"))
        .ok()
}

/// Tells a follower why it is turned away, and hangs up.
async fn refuse(stream: Stream, reason: ErrorCode, cancel: CancellationToken) {
    tracing::warn!("refused a follower: {reason}");
    let mut out = Outgoing::default();
    if out
        .push_server(&ServerMessage::Rejected(reason), DEFAULT_MAX_FRAME_LEN)
        .is_ok()
    {
        tokio::select! {
            _ = write_rest(&stream, &out, 0) => {}
            _ = cancel.cancelled() => {}
        }
    }
}

/// Serves one follower until it leaves, breaks the protocol, or the leader stops.
async fn serve(
    stream: Stream,
    mut access: StoreAccess,
    config: ConnectionConfig,
    cancel: CancellationToken,
    leaving: Leaving,
) {
    let conn = access.conn();
    let mut session = ServerSession::new(clock::now(), config.session);
    let mut decoder = FrameDecoder::new(config.max_frame_len);
    // Read into its spare capacity, never zeroed: memory is touched only as far as a
    // follower's messages reach.
    let mut buffer = read_buffer();
    // How much of `buffer` the session has been handed: the rest waits for the next turn.
    let mut taken = 0;
    // Since when the task has worked without waiting (see YIELD_AFTER).
    let mut ran_from = std::time::Instant::now();
    let mut out = Outgoing::default();
    let mut send_buffer = SendBuffer::default();
    // Set once the leader stops while closing: until then the follower is served as ever.
    let mut draining: Option<tokio::time::Instant> = None;
    let mut spinner = config.spin.map(Spinner::new);
    // Whether the last turn heard from the follower or the store, not just a timer.
    let mut exchanged = false;
    let mut timer = clock::Timer::new();
    // The follower's ring for big answers, once it offers one, and the bytes of values a
    // turn placed there.
    let mut ring: Option<LeaderRing> = None;
    let mut in_ring = 0;
    loop {
        // Neither a long read's turns (a burst's commits among them) nor a run of exchanges
        // answered at once may keep the other connections from the worker they wait for.
        if ran_from.elapsed() >= YIELD_AFTER {
            tokio::task::yield_now().await;
            ran_from = std::time::Instant::now();
        }
        let ran = access.run_outputs(&mut session, |message| {
            let message = match &mut ring {
                Some(ring) => {
                    let (message, placed) = ring.place(message);
                    in_ring += placed;
                    message
                }
                None => message,
            };
            match out.push_server(&message, config.max_frame_len) {
                Err(error) => {
                    tracing::warn!("connection {conn}: cannot send: {error}");
                    Sent::Failed
                }
                // Answers whose values went to the ring count as much as those lent to
                // the socket: sent a few at a time, the follower copies the first values
                // out while the leader places the next.
                Ok(()) if out.len() + in_ring >= SEND_AT => Sent::Full,
                Ok(()) => Sent::Taken,
            }
        });
        // At once where the socket takes it, as it does almost always (and a new
        // connection's first write need not wait for tokio to see it writable).
        send_buffer.before_sending(&stream, out.len());
        let sent = send_now(&stream, &out, 0);
        if sent < out.len() {
            // A follower that stops reading fills its socket; the leader must still be
            // able to stop. A write that is ready goes first: cut short, it would leave
            // half a frame, after which nothing more may be said. The rest is written from
            // where the socket stopped taking it, not moved to the front: a turn's answers
            // to big gets are megabytes. A leader that stops meanwhile drains: the write
            // goes on until the drain's time is up.
            let mut rest = std::pin::pin!(write_rest(&stream, &out, sent));
            let written = loop {
                tokio::select! {
                    biased;
                    written = &mut rest => break written.is_ok(),
                    _ = cancel.cancelled(), if draining.is_none() => {
                        draining = Some(leave(&mut session, &leaving));
                    }
                    _ = until(draining) => break false,
                }
            };
            if !written {
                return;
            }
        }
        out.clear(OUT_KEPT);
        in_ring = 0;
        if ran.closing {
            return;
        }
        if let Some(offer) = ran.ring_offered {
            ring = open_ring(&stream, offer);
        }
        // A leader that stops is heard first (the wait below tells the session), then the
        // session's next answers (big ones, then), then the rest of a read.
        let stopping = cancel.is_cancelled() && draining.is_none();
        if ran.full && !stopping {
            continue;
        }
        if taken > 0 && !stopping {
            // The store's answers that came meanwhile go out with this turn's.
            access.hand_waiting_replies(&mut session);
            take_turn(&mut buffer, &mut taken, &mut decoder, &mut session);
            continue;
        }
        let timeout = session.poll_timeout();
        // Right after an exchange the follower's next request is likely close behind. Not
        // while a write runs: the store thread needs a core more than this wait does.
        let spinning = exchanged && draining.is_none() && !session.writes_running();
        if let Some(spinner) = spinner.as_mut().filter(|_| spinning) {
            let polled = spinner
                .spin(|| {
                    if cancel.is_cancelled() {
                        return Some(Heard::Stopping);
                    }
                    match recv_now(&stream, &mut buffer) {
                        Some(read) => Some(Heard::Read(read)),
                        None => access.try_next_reply().map(Heard::Reply),
                    }
                })
                .await;
            match polled {
                Some(Heard::Read(read)) => {
                    if !take_messages(read, &mut buffer, &mut taken, &mut decoder, &mut session) {
                        return;
                    }
                    // A peer that trickles an unfinished hello never gets to the wait
                    // below, whose timer would close it.
                    session.handle_timeout(clock::now());
                    continue;
                }
                Some(Heard::Reply(event)) => {
                    take_replies(event, &mut access, &mut session);
                    continue;
                }
                Some(Heard::Stopping) | None => {}
            }
        }
        exchanged = false;
        // Whether a read or an answer had to be waited for (the others always are).
        let waited = AtomicBool::new(false);
        tokio::select! {
            biased;
            _ = cancel.cancelled(), if draining.is_none() => {
                draining = Some(leave(&mut session, &leaving));
            }
            _ = until(draining) => return,
            (read, _) = noting_wait(read_next(&stream, &mut buffer, &mut decoder, false), &waited) => {
                if !take_messages(read, &mut buffer, &mut taken, &mut decoder, &mut session) {
                    return;
                }
                exchanged = true;
            }
            Some(event) = noting_wait(access.next_reply(), &waited) => {
                take_replies(event, &mut access, &mut session);
                exchanged = true;
            }
            _ = timer.until(timeout) => {
                session.handle_timeout(clock::now());
                waited.store(true, Relaxed);
            }
        }
        if waited.load(Relaxed) {
            ran_from = std::time::Instant::now();
        }
    }
}

/// `future`, noting in `waited` whether it ever had to wait (only this task's own flag: an
/// atomic because the task moves between threads, not because threads share it).
async fn noting_wait<F: std::future::Future>(future: F, waited: &AtomicBool) -> F::Output {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|context| {
        let poll = future.as_mut().poll(context);
        if poll.is_pending() {
            waited.store(true, Relaxed);
        }
        poll
    })
    .await
}

/// Reads what the peer sends next: the rest of a big frame under way (at least
/// [`READ_BUFFER`] bytes of it missing) straight into the decoder, which saves copying a big
/// value from `buffer` into it; anything else into `buffer`, where a read takes many small
/// frames at once. Says whether the read went into the decoder; with `keep_reads` what it
/// read is copied into `buffer` too (a recording keeps every byte read).
pub(crate) async fn read_next(
    mut stream: &Stream,
    buffer: &mut Vec<u8>,
    decoder: &mut FrameDecoder,
    keep_reads: bool,
) -> (std::io::Result<usize>, bool) {
    match decoder.unfinished_frame(READ_BUFFER) {
        Some(mut frame) => {
            let read = stream.read_buf(&mut frame).await;
            if let (Ok(read), true) = (&read, keep_reads) {
                let frame = frame.into_inner();
                buffer.extend_from_slice(&frame[frame.len() - read..]);
            }
            (read, true)
        }
        None => (stream.read_buf(buffer).await, false),
    }
}

/// What a spinning connection heard first.
enum Heard {
    Read(std::io::Result<usize>),
    Reply(ServerInput),
    /// The leader stops: the wait below handles it.
    Stopping,
}

/// Hands the session the first turn of what a read brought (see [`take_turn`]); false when
/// the connection ended.
fn take_messages(
    read: std::io::Result<usize>,
    buffer: &mut Vec<u8>,
    taken: &mut usize,
    decoder: &mut FrameDecoder,
    session: &mut ServerSession,
) -> bool {
    if matches!(read, Ok(0) | Err(_)) {
        return false;
    }
    grow_when_filled(buffer);
    take_turn(buffer, taken, decoder, session);
    true
}

/// Most messages a connection handles before it sends what they answered. A follower with
/// many requests in flight sends them in bursts: answered a whole burst at a time, the two
/// processes settle into taking turns, each idle while the other works through a burst
/// (64 gets in flight ran at half the rate of 256). Answered a few at a time, the follower
/// sends its next requests while the leader still works on the rest.
const TURN: usize = 16;

/// Bytes of answers (lent values counted) a connection encodes before it sends them, then
/// the rest: the answers to a turn of 16 gets of 1 MiB values were all encoded before the
/// first was sent, 16 MiB at once, and the buffer kept them for the connection's life.
const SEND_AT: usize = 256 * 1024;

/// Most room a connection's send buffer keeps from a turn to the next: a bigger one held a
/// frame bigger than most (a `get_many` of big values), not worth holding on to.
const OUT_KEPT: usize = 2 * 1024 * 1024;

/// How long a connection works without waiting (the turns of a long read, exchanges the
/// socket or the store answered at once) before it lets the worker's other tasks run: a
/// follower's burst of 2000 writes committed in one go kept another follower's get waiting
/// for all of it (~25 ms). Letting them run after every turn cost a third of the rate of
/// 64 gets in flight (each yield wakes an idle worker to steal), and every 500 us a tenth
/// of 64 puts' (whose exchanges never wait).
const YIELD_AFTER: std::time::Duration = std::time::Duration::from_millis(2);

/// Hands the session the next messages of `buffer` from `taken` on, at most [`TURN`] of
/// them; `taken` is left at the first message not handed, or 0 with `buffer` emptied once
/// every byte is (the start of an unfinished frame stays with the decoder).
fn take_turn(
    buffer: &mut Vec<u8>,
    taken: &mut usize,
    decoder: &mut FrameDecoder,
    session: &mut ServerSession,
) {
    let mut input = &buffer[*taken..];
    for _ in 0..TURN {
        match decoder.decode::<ClientMessage>(&mut input) {
            Ok(Some(message)) => {
                session.handle_input(clock::now(), ServerInput::Message(message));
            }
            Ok(None) => break,
            Err(error) => {
                session.handle_input(clock::now(), ServerInput::BadFrame(error));
                input = &[];
                break;
            }
        }
    }
    if input.is_empty() {
        buffer.clear();
        *taken = 0;
    } else {
        *taken = buffer.len() - input.len();
    }
}

/// Hands the session the store's answer, and every other one already waiting.
fn take_replies(first: ServerInput, access: &mut StoreAccess, session: &mut ServerSession) {
    session.handle_input(clock::now(), first);
    access.hand_waiting_replies(session);
}

/// How long a closing leader serves a follower's last requests at most.
const DRAIN_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Tells the session that the leader stops, and why; the end of the drain. The session
/// says whether to serve on until the follower lets go (a close) or to go at once (a lost
/// lock); either way the drain is bounded here.
fn leave(session: &mut ServerSession, leaving: &Leaving) -> tokio::time::Instant {
    let cause = leaving.get().copied().unwrap_or(LeaveCause::LockLost);
    session.handle_input(clock::now(), ServerInput::Leave(cause));
    tokio::time::Instant::now() + DRAIN_WITHIN
}

/// Resolves when the drain's time is up; never, before a drain.
async fn until(draining: Option<tokio::time::Instant>) {
    match draining {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use party_proto::wire::{encode_frame, Hello, ProtocolId, ReadOp};
    use party_proto::{ClientId, RequestId, ServerConfig, ServerOutput};

    fn frame(message: &ClientMessage, into: &mut Vec<u8>) {
        encode_frame(message, DEFAULT_MAX_FRAME_LEN, into).unwrap();
    }

    /// A read buffer holding a follower's hello and `requests` gets, numbered from 0.
    fn hello_and_gets(requests: u64) -> Vec<u8> {
        let mut buffer = read_buffer();
        let hello = Hello {
            protocol: ProtocolId::CURRENT,
            client_id: ClientId(7),
            store: "fjall".into(),
        };
        frame(&ClientMessage::Hello(hello), &mut buffer);
        for id in 0..requests {
            let op = ReadOp::Get { key: vec![1] };
            frame(
                &ClientMessage::Read {
                    id: RequestId(id),
                    op,
                },
                &mut buffer,
            );
        }
        buffer
    }

    /// A new connection's session, decoder and place in `buffer` once handed its first
    /// turn of `buffer`, as if one read brought all of it.
    fn first_turn(buffer: &mut Vec<u8>) -> (ServerSession, FrameDecoder, usize) {
        let mut session = ServerSession::new(clock::now(), ServerConfig::default());
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
        let mut taken = 0;
        let read = Ok(buffer.len());
        assert!(take_messages(
            read,
            buffer,
            &mut taken,
            &mut decoder,
            &mut session
        ));
        (session, decoder, taken)
    }

    /// The reads a session was handed since last asked, by their ids.
    fn reads_asked(session: &mut ServerSession) -> Vec<u64> {
        std::iter::from_fn(|| session.poll_output())
            .filter_map(|output| match output {
                ServerOutput::Read { id, .. } => Some(id.0),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_read_of_many_requests_is_handed_to_the_session_a_turn_at_a_time() {
        let requests = 2 * TURN as u64 + 3;
        let mut buffer = hello_and_gets(requests);
        let mut unfinished = Vec::new();
        let op = ReadOp::Get { key: vec![2] };
        frame(
            &ClientMessage::Read {
                id: RequestId(99),
                op,
            },
            &mut unfinished,
        );
        buffer.extend_from_slice(&unfinished[..3]);

        let (mut session, mut decoder, mut taken) = first_turn(&mut buffer);
        let first: Vec<u64> = (0..TURN as u64 - 1).collect();
        assert_eq!(
            reads_asked(&mut session),
            first,
            "the hello and the first requests"
        );
        assert!(taken > 0, "the rest waits");
        take_turn(&mut buffer, &mut taken, &mut decoder, &mut session);
        let second: Vec<u64> = (TURN as u64 - 1..2 * TURN as u64 - 1).collect();
        assert_eq!(reads_asked(&mut session), second);
        take_turn(&mut buffer, &mut taken, &mut decoder, &mut session);
        let last: Vec<u64> = (2 * TURN as u64 - 1..requests).collect();
        assert_eq!(reads_asked(&mut session), last);
        assert_eq!((taken, buffer.len()), (0, 0), "every byte handed on");
        assert_eq!(
            decoder.buffered_len(),
            3,
            "the unfinished frame waits for its rest"
        );
    }

    #[test]
    fn bytes_that_do_not_decode_end_the_turns_after_the_requests_before_them() {
        let requests = TURN as u64 + 4;
        let mut buffer = hello_and_gets(requests);
        // A frame whose body is not a message, then one that is: never handed on.
        buffer.extend_from_slice(&[1, 0, 0, 0, 0xff]);
        let op = ReadOp::Get { key: vec![2] };
        frame(
            &ClientMessage::Read {
                id: RequestId(99),
                op,
            },
            &mut buffer,
        );

        let (mut session, mut decoder, mut taken) = first_turn(&mut buffer);
        assert_eq!(reads_asked(&mut session).len(), TURN - 1);
        take_turn(&mut buffer, &mut taken, &mut decoder, &mut session);
        let outputs: Vec<ServerOutput> = std::iter::from_fn(|| session.poll_output()).collect();
        let reads: Vec<u64> = outputs
            .iter()
            .filter_map(|output| match output {
                ServerOutput::Read { id, .. } => Some(id.0),
                _ => None,
            })
            .collect();
        assert_eq!(reads, (TURN as u64 - 1..requests).collect::<Vec<_>>());
        assert!(
            matches!(outputs.last(), Some(ServerOutput::Close(_))),
            "the connection closes: {outputs:?}"
        );
        assert_eq!((taken, buffer.len()), (0, 0), "nothing more is handed on");
    }

    #[test]
    fn a_read_buffer_grows_once_a_read_fills_it_and_not_before() {
        let mut buffer = read_buffer();
        let first = buffer.capacity();
        assert!(first < READ_BUFFER);
        buffer.resize(first - 1, 7);
        grow_when_filled(&mut buffer);
        assert_eq!(buffer.capacity(), first, "a read that left room");
        buffer.push(7);
        grow_when_filled(&mut buffer);
        assert!(buffer.capacity() >= READ_BUFFER, "a read that filled it");
        assert_eq!(buffer, vec![7; first], "what was read stays");
        let grown = buffer.capacity();
        buffer.resize(grown, 7);
        grow_when_filled(&mut buffer);
        assert_eq!(buffer.capacity(), grown, "never past READ_BUFFER");
    }

    /// A waker that reads the leave cause as it is woken, as a connection does.
    struct ReadsCause {
        leaving: Leaving,
        read: std::sync::Mutex<Option<Option<LeaveCause>>>,
    }

    impl std::task::Wake for ReadsCause {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            *self.read.lock().unwrap() = Some(self.leaving.get().copied());
        }
    }

    #[test]
    fn a_connection_woken_by_the_stop_finds_why() {
        use std::future::Future;
        let leaving = Leaving::default();
        let cancel = CancellationToken::new();
        let reader = Arc::new(ReadsCause {
            leaving: leaving.clone(),
            read: Default::default(),
        });
        let waker = std::task::Waker::from(reader.clone());
        let mut cancelled = std::pin::pin!(cancel.cancelled());
        let polled = cancelled
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker));
        assert!(polled.is_pending());
        tell_leaving(&leaving, &cancel, LeaveCause::Closing);
        // Woken within the cancel, on this thread: the cause must be there already.
        assert_eq!(
            *reader.read.lock().unwrap(),
            Some(Some(LeaveCause::Closing))
        );
    }
}
