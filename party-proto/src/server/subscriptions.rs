//! The leader's side of one connection's change feed subscriptions: which groups of the
//! change log each has seen, what of them lies in its range, and how many more it may be
//! sent.
//!
//! A subscription only ever reads the store's change log, never the writer's commits as
//! they happen: the log is the one order every leader agrees on, so the same code serves a
//! subscriber that is far behind, one that is live, and one that just came back from a
//! failover. The driver parks a read that reaches the log's end until the next commit
//! (see [`crate::ServerOutput::WatchPull`]), so a live subscription costs nothing between
//! commits; and no group is read before the follower has a credit for it, so a slow
//! follower costs the leader at most its credits' worth of groups, whatever it falls behind.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use super::session::ServerOutput;
use crate::error::ErrorCode;
use crate::feed::{decode_entry, Change, CommitSeq, LogRead};
use crate::ids::WatchId;
use crate::range::KeyRange;
use crate::wire::ServerMessage;

/// Groups one read of the change log asks for at most.
pub const WATCH_READ_GROUPS: u32 = 256;

/// Most bytes a `WatchData` frame adds around its changes: the frame's header, the tags,
/// the subscription, the commit number and the count (varints), the flag.
const DATA_OVERHEAD: u64 = 48;

#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct Served {
    range: KeyRange,
    /// The next group to look at: the asked commit, or (`None` until then) where the
    /// first read found the log's end.
    next: Option<CommitSeq>,
    /// The follower was told where the subscription starts: the first read found it could
    /// be served (not ahead of the log).
    started: bool,
    /// Groups with changes in the range the follower may still be sent.
    credits: u32,
    /// A read of the log is out.
    reading: bool,
    /// Where a run of groups lost to the subscription began, when the last read ended in
    /// it: the run is said once, where it ends, however many reads it takes.
    lost: Option<CommitSeq>,
}

/// The limits a connection's subscriptions live within.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_watches: u32,
    pub max_credits: u32,
    pub max_frame_len: u32,
    /// The leader keeps a change feed.
    pub feed: bool,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Default)]
pub(crate) struct Subscriptions {
    served: FxHashMap<WatchId, Served>,
}

/// What a message about a subscription asks of the connection beyond its outputs.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub(crate) enum Verdict {
    Fine,
    /// The follower broke the protocol: close the connection with this.
    Close(ErrorCode),
}

impl Subscriptions {
    pub fn open(
        &mut self,
        watch: WatchId,
        range: KeyRange,
        from: Option<CommitSeq>,
        credits: u32,
        limits: Limits,
        out: &mut VecDeque<ServerOutput>,
    ) -> Verdict {
        if self.served.contains_key(&watch) {
            return Verdict::Close(ErrorCode::Malformed(format!(
                "subscription {} opened twice",
                watch.0
            )));
        }
        if !limits.feed {
            let error = ErrorCode::FeedOff;
            send(out, ServerMessage::WatchFailed { watch, error });
            return Verdict::Fine;
        }
        if self.served.len() >= limits.max_watches as usize {
            let error = ErrorCode::TooManyWatches {
                limit: limits.max_watches,
            };
            send(out, ServerMessage::WatchFailed { watch, error });
            return Verdict::Fine;
        }
        let served = Served {
            range,
            // Commit 1 is a store's first: from 0 is from there (read as a position, it
            // made a gap of one before commit 1, said as a lag, and an empty store's log
            // was asked again and again, never reaching 0).
            next: from.map(|from| from.max(CommitSeq(1))),
            started: false,
            credits: credits.min(limits.max_credits),
            reading: false,
            lost: None,
        };
        self.served.insert(watch, served);
        self.read(watch, out);
        Verdict::Fine
    }

    pub fn grant(
        &mut self,
        watch: WatchId,
        credits: u32,
        limits: Limits,
        out: &mut VecDeque<ServerOutput>,
    ) {
        match self.served.get_mut(&watch) {
            Some(served) => {
                served.credits = served
                    .credits
                    .saturating_add(credits)
                    .min(limits.max_credits);
                self.read(watch, out);
            }
            // It may have failed while the credits were on their way; the follower
            // ignores this for a subscription it already saw fail.
            None => send(
                out,
                ServerMessage::WatchFailed {
                    watch,
                    error: ErrorCode::NotFound,
                },
            ),
        }
    }

    pub fn close(&mut self, watch: WatchId, out: &mut VecDeque<ServerOutput>) {
        if self.served.remove(&watch).is_some() {
            out.push_back(ServerOutput::WatchDrop { watch });
        }
    }

    pub fn clear(&mut self) {
        self.served.clear();
    }

    /// The driver's answer to a read of the log.
    pub fn read_done(
        &mut self,
        watch: WatchId,
        result: Result<LogRead, ErrorCode>,
        limits: Limits,
        out: &mut VecDeque<ServerOutput>,
    ) {
        let Some(served) = self.served.get_mut(&watch).filter(|s| s.reading) else {
            // Closed by the follower while the read was out.
            return;
        };
        served.reading = false;
        let outcome = result.and_then(|read| deliver(watch, served, read, limits, out));
        if let Err(error) = outcome {
            self.served.remove(&watch);
            send(out, ServerMessage::WatchFailed { watch, error });
            out.push_back(ServerOutput::WatchDrop { watch });
        } else {
            self.read(watch, out);
        }
    }

    /// Reads the log on if the subscription has credits (or has not started yet).
    fn read(&mut self, watch: WatchId, out: &mut VecDeque<ServerOutput>) {
        let Some(served) = self.served.get_mut(&watch) else {
            return;
        };
        if served.reading || (served.credits == 0 && served.started) {
            return;
        }
        served.reading = true;
        // The first read only learns where the log ends, which the driver answers without
        // waiting for a commit, so that even a subscription from the next commit is told it
        // started (or refused as ahead) at once. The next ones ask no more groups than it
        // may be sent (at least one: the first may come while it has no credits), so that
        // what a read holds is bounded by the follower's credits.
        out.push_back(ServerOutput::WatchPull {
            watch,
            from: served.next.filter(|_| served.started),
            max: served.credits.clamp(1, WATCH_READ_GROUPS),
        });
    }
}

/// Sends what a read of the log holds for the subscription, as far as its credits go, and
/// moves it past what it looked at.
fn deliver(
    watch: WatchId,
    served: &mut Served,
    read: LogRead,
    limits: Limits,
    out: &mut VecDeque<ServerOutput>,
) -> Result<(), ErrorCode> {
    let mut next = served.next.unwrap_or(read.from);
    if read.entries.is_empty() && next > read.next {
        return Err(ErrorCode::WatchAhead {
            from: next.0,
            next: read.next.0,
        });
    }
    // Said of every subscription, from a given commit too: its opener waits for this (or
    // the refusal above) rather than learning of a refusal from its first events.
    if !served.started {
        served.started = true;
        send(out, ServerMessage::WatchStarted { watch, from: next });
    }
    let mut quiet = false;
    // Where a run of groups lost to this subscription began: trimmed before it read them,
    // or committed by a leader that kept no feed. Said, never skipped silently.
    let mut lost: Option<CommitSeq> = served.lost.take();
    for (seq, entry) in read.entries {
        if seq < next {
            continue;
        }
        if served.credits == 0 {
            break;
        }
        if seq > next {
            lost.get_or_insert(next);
        }
        let changes = decode_entry(&entry).map_err(|reason| {
            ErrorCode::Backend(format!(
                "change log entry {} does not decode: {reason}",
                seq.0
            ))
        })?;
        next = seq.next();
        let Some(changes) = changes else {
            lost.get_or_insert(seq);
            continue;
        };
        if let Some(from) = lost.take() {
            lagged(watch, from, seq, out);
        }
        let inside: Vec<Change> = changes
            .iter()
            .filter_map(|change| change.within(&served.range))
            .collect();
        if inside.is_empty() {
            quiet = true;
            continue;
        }
        quiet = false;
        send_group(watch, seq, inside, limits, out)?;
        served.credits -= 1;
    }
    // A run that goes on past this read is said once the read that ends it comes (the
    // reads come one after another while the subscription has credits, as lost groups
    // take none): 10 000 commits of a leader without the feed are one lag, not 157.
    let read_to_the_end = next >= read.next;
    if let Some(from) = lost {
        if read_to_the_end {
            lagged(watch, from, next, out);
        } else {
            served.lost = Some(from);
        }
    } else if quiet {
        send(
            out,
            ServerMessage::WatchProgress {
                watch,
                through: next,
            },
        );
    }
    served.next = Some(next);
    Ok(())
}

/// Says the groups `[from, resume)` are lost to the subscription.
fn lagged(watch: WatchId, from: CommitSeq, resume: CommitSeq, out: &mut VecDeque<ServerOutput>) {
    let missed = resume.0 - from.0;
    send(
        out,
        ServerMessage::WatchLagged {
            watch,
            missed,
            resume,
        },
    );
}

/// Sends one group's changes in as many frames as the frame limit needs.
fn send_group(
    watch: WatchId,
    seq: CommitSeq,
    changes: Vec<Change>,
    limits: Limits,
    out: &mut VecDeque<ServerOutput>,
) -> Result<(), ErrorCode> {
    let max = u64::from(limits.max_frame_len);
    let mut frame = Vec::new();
    let mut frame_len = DATA_OVERHEAD;
    for change in changes {
        let len = change.len_bound();
        if DATA_OVERHEAD + len > max {
            return Err(ErrorCode::ReplyTooLarge {
                len: DATA_OVERHEAD + len,
                max,
            });
        }
        if frame_len + len > max {
            let changes = std::mem::take(&mut frame);
            let complete = false;
            send(
                out,
                ServerMessage::WatchData {
                    watch,
                    seq,
                    changes,
                    complete,
                },
            );
            frame_len = DATA_OVERHEAD;
        }
        frame_len += len;
        frame.push(change);
    }
    let complete = true;
    send(
        out,
        ServerMessage::WatchData {
            watch,
            seq,
            changes: frame,
            complete,
        },
    );
    Ok(())
}

fn send(out: &mut VecDeque<ServerOutput>, message: ServerMessage) {
    out.push_back(ServerOutput::Send(message));
}
