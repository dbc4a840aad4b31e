//! Known bug classes, re-created on purpose so that the simulator can prove its checks
//! catch them. The flags are in every build's configs (so that a recording reads back the
//! same in every build), but only a build with the cargo feature `bug-injection` acts on
//! them. Never enable it in a build that serves data.

/// Which bugs to re-create; all off by default.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bugs {
    /// Iterators resume from an inclusive bound on the last delivered key, so that key is
    /// delivered again after a failover (level-party's behaviour).
    pub inclusive_resume: bool,
    /// A leader keeps serving after losing the lock.
    pub ignore_lock_loss: bool,
    /// The writer applies re-sent writes again (no dedup).
    pub no_dedup: bool,
    /// The writer retries a failed group one by one without aborting it in the dedup
    /// table, so every write of the group is acknowledged without being applied.
    pub no_abort_before_retry: bool,
    /// The writer commits the dedup records in a batch of their own, after the data.
    pub records_apart: bool,
    /// The client takes iterator messages for an iterator that is no longer open on the
    /// connection (an `IterNext` crossing the leader's `IterEnd` then fails a finished
    /// iterator).
    pub iter_messages_when_closed: bool,
    /// The client re-sends a write however long ago it first sent it, past the time its
    /// dedup record may have expired, and the leader applies it however late it comes.
    pub resend_late: bool,
    /// The writer's sweep removes every client's record, however recently it wrote.
    pub expire_fresh: bool,
    /// The writer applies transactions without checking their reads.
    pub skip_validation: bool,
    /// The writer checks a transaction's reads before asking the dedup table, so a re-sent
    /// transaction the last leader applied is answered as a conflict (its own writes
    /// changed what it read).
    pub dedup_after_validation: bool,
    /// The writer applies only the first write of a transaction.
    pub partial_apply: bool,
    /// A subscription takes a lag report as a mere move of its position and tells its
    /// caller nothing: the lost commits go unnoticed.
    pub hide_lag: bool,
    /// A subscription re-opened on a new leader starts one commit past its position.
    pub resume_past: bool,
    /// The writer keeps counting on after a commit whose outcome is unknown, instead of
    /// reading the log's end again: a commit that did land has its number taken twice.
    pub keep_count_when_unsure: bool,
    /// The writer keeps counting on after a commit the store refused as stale, instead of
    /// reading the log's end again: another host's writer that took the number meanwhile
    /// has it taken twice.
    pub keep_count_when_stale: bool,
    /// A new writer takes its store as checkpointed: what a leader killed before its
    /// checkpoint left is replayed again at every later open, as long as the leaders after
    /// it only read.
    pub saved_at_takeover: bool,
    /// The client opens an iterator ahead of the requests issued before it, so that its
    /// snapshot may lack writes its own handle issued first.
    pub iter_opens_early: bool,
    /// The dedup table applies a failed write re-sent after a later write of its client
    /// landed (or joined the group), so that it lands after that one.
    pub reapply_failed: bool,
    /// An iterator resumed on a new leader takes that opening's commit as the one its
    /// snapshot follows, so a subscription from the next one misses what was written
    /// between the two snapshots to the part of the range it had already read.
    pub iter_at_resumed: bool,
    /// A leader places a big answer's value in its follower's ring without waiting for the
    /// follower to take the values already there, writing over those not yet read.
    pub ring_ignores_room: bool,
}

impl Bugs {
    /// The bug classes by name, as `party-sim --inject NAME` and `PARTY_INJECT` take them.
    pub const NAMES: [&'static str; 20] = [
        "no-dedup",
        "inclusive-resume",
        "ignore-lock-loss",
        "no-abort-before-retry",
        "records-apart",
        "iter-messages-when-closed",
        "resend-late",
        "expire-fresh",
        "skip-validation",
        "dedup-after-validation",
        "partial-apply",
        "hide-lag",
        "resume-past",
        "keep-count-when-unsure",
        "keep-count-when-stale",
        "saved-at-takeover",
        "iter-opens-early",
        "reapply-failed",
        "iter-at-resumed",
        "ring-ignores-room",
    ];

    /// The bug class `name` (one of [`Bugs::NAMES`]) alone.
    pub fn named(name: &str) -> Option<Bugs> {
        let mut bugs = Bugs::default();
        match name {
            "no-dedup" => bugs.no_dedup = true,
            "inclusive-resume" => bugs.inclusive_resume = true,
            "ignore-lock-loss" => bugs.ignore_lock_loss = true,
            "no-abort-before-retry" => bugs.no_abort_before_retry = true,
            "records-apart" => bugs.records_apart = true,
            "iter-messages-when-closed" => bugs.iter_messages_when_closed = true,
            "resend-late" => bugs.resend_late = true,
            "expire-fresh" => bugs.expire_fresh = true,
            "skip-validation" => bugs.skip_validation = true,
            "dedup-after-validation" => bugs.dedup_after_validation = true,
            "partial-apply" => bugs.partial_apply = true,
            "hide-lag" => bugs.hide_lag = true,
            "resume-past" => bugs.resume_past = true,
            "keep-count-when-unsure" => bugs.keep_count_when_unsure = true,
            "keep-count-when-stale" => bugs.keep_count_when_stale = true,
            "saved-at-takeover" => bugs.saved_at_takeover = true,
            "iter-opens-early" => bugs.iter_opens_early = true,
            "reapply-failed" => bugs.reapply_failed = true,
            "iter-at-resumed" => bugs.iter_at_resumed = true,
            "ring-ignores-room" => bugs.ring_ignores_room = true,
            _ => return None,
        }
        Some(bugs)
    }
}
