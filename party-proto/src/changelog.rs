//! The leader's writer's view of the store's change log ([`crate::feed`]): the number the
//! next group takes, where the next entry starts, and which of the oldest entries to trim.
//!
//! Trimming reads nothing from the store: entries are named by their numbers, so the writer
//! says which to delete. By count that is exact. By bytes the writer knows where each entry
//! it appended starts; for the entries before it took over it knows only the oldest's and
//! where its own begin, and places the ones between as if all were of the same size. A log
//! of entries of very different sizes may then be trimmed a little early or late, once,
//! until the entries the writer appended itself reach the budget.

use std::collections::VecDeque;

use crate::feed::{ChangeRetention, CommitSeq, LogEnds, LogSpan, TRIM_PAGE};

/// Entries whose place the writer remembers, at most: beyond, the oldest are placed by
/// their average size as those from before the takeover are.
const REMEMBERED: usize = 1 << 20;

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub(crate) struct ChangeLog {
    next: CommitSeq,
    /// Where the next entry starts.
    bytes_through: u64,
    /// The oldest entry kept and where it starts; `None` for an empty log.
    first: Option<(CommitSeq, u64)>,
    /// Where the newest entry starts: it is never trimmed.
    last: Option<(CommitSeq, u64)>,
    /// Where the entries appended since the takeover start, oldest first.
    appended: VecDeque<(CommitSeq, u64)>,
}

impl ChangeLog {
    pub fn new(ends: Option<LogEnds>) -> Self {
        let start = |span: LogSpan| (span.seq, span.bytes_before);
        ChangeLog {
            next: LogEnds::next_commit(ends),
            bytes_through: ends.map_or(0, |ends| ends.last.bytes_through),
            first: ends.map(|ends| start(ends.first)),
            last: ends.map(|ends| start(ends.last)),
            appended: VecDeque::new(),
        }
    }

    /// The number the next group takes.
    pub fn next(&self) -> CommitSeq {
        self.next
    }

    /// Where the next entry starts.
    pub fn bytes_through(&self) -> u64 {
        self.bytes_through
    }

    /// A group's entry landed.
    pub fn appended(&mut self, span: LogSpan) {
        self.next = span.seq.next();
        self.bytes_through = span.bytes_through;
        self.last = Some((span.seq, span.bytes_before));
        self.first.get_or_insert((span.seq, span.bytes_before));
        self.appended.push_back((span.seq, span.bytes_before));
        if self.appended.len() > REMEMBERED {
            self.appended.pop_front();
        }
    }

    /// The next page of a trim: the oldest entries `[from, to)` to delete, once the log is
    /// an eighth past `keep` by count or by bytes (past it at all while `running`), down to
    /// it; never the newest entry.
    pub fn trim(&self, keep: ChangeRetention, running: bool) -> Option<(CommitSeq, CommitSeq)> {
        let (first, first_bytes) = self.first?;
        let (last, _) = self.last?;
        let (groups, bytes) = (keep.groups.max(1), keep.bytes.max(1));
        let held_groups = self.next.0 - first.0;
        let held_bytes = self.bytes_through.saturating_sub(first_bytes);
        // Saturating: a retention of u64::MAX is "keep everything".
        let slack = |budget: u64| match running {
            true => budget,
            false => budget.saturating_add(budget / 8),
        };
        if held_groups <= slack(groups) && held_bytes <= slack(bytes) {
            return None;
        }
        let by_count = CommitSeq(self.next.0.saturating_sub(groups));
        // The first entry from which the rest fits the budget.
        let (mut low, mut high) = (first.0, last.0);
        while low < high {
            let middle = low + (high - low) / 2;
            // Saturating: the positions come from stored entries, which need not agree.
            if self
                .bytes_through
                .saturating_sub(self.bytes_before(CommitSeq(middle)))
                <= bytes
            {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        let cut = by_count.max(CommitSeq(low)).min(last);
        (cut > first).then(|| (first, cut.min(CommitSeq(first.0 + TRIM_PAGE as u64))))
    }

    /// The oldest entry kept; `None` for an empty log.
    pub fn first(&self) -> Option<CommitSeq> {
        self.first.map(|(seq, _)| seq)
    }

    /// The entries before `to` are gone.
    pub fn trimmed(&mut self, to: CommitSeq) {
        if self.first.is_some_and(|(first, _)| first < to) {
            self.first = Some((to, self.bytes_before(to)));
        }
        while self.appended.front().is_some_and(|(seq, _)| *seq < to) {
            self.appended.pop_front();
        }
    }

    /// Where the entry `seq` starts: known for those appended since the takeover, placed
    /// by the average size between the oldest and those for the ones before.
    fn bytes_before(&self, seq: CommitSeq) -> u64 {
        let (front, front_bytes) = self
            .appended
            .front()
            .copied()
            .unwrap_or((self.next, self.bytes_through));
        if seq >= front {
            let at = usize::try_from(seq.0 - front.0).unwrap_or(usize::MAX);
            return self
                .appended
                .get(at)
                .map_or(self.bytes_through, |(_, bytes)| *bytes);
        }
        let Some((first, first_bytes)) = self.first else {
            return front_bytes;
        };
        if seq <= first || front <= first {
            return first_bytes;
        }
        let share = u128::from(seq.0 - first.0)
            * u128::from(front_bytes.saturating_sub(first_bytes))
            / u128::from(front.0 - first.0);
        first_bytes.saturating_add(u64::try_from(share).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(seq: u64, bytes_before: u64, len: u64) -> LogSpan {
        LogSpan {
            seq: CommitSeq(seq),
            bytes_before,
            bytes_through: bytes_before.saturating_add(len),
        }
    }

    /// Sizes read from a log written by something else, or damaged, need not agree (the
    /// oldest entry may claim to start after the newest, or sizes may be near the end of
    /// u64): a trim then still never overflows, nor takes the newest entry.
    #[test]
    fn ends_that_disagree_about_sizes_trim_without_overflow() {
        let keep = ChangeRetention {
            groups: 4,
            bytes: 100,
        };
        for (first, last) in [
            (span(1, 1_000, 10), span(10, 5, 10)),
            (span(1, 0, 10), span(10, u64::MAX - 3, 10)),
            (span(1, u64::MAX, 10), span(10, 0, 10)),
        ] {
            let mut log = ChangeLog::new(Some(LogEnds { first, last }));
            for seq in 11..20 {
                log.appended(span(seq, log.bytes_through(), 10));
                if let Some((from, to)) = log.trim(keep, true) {
                    assert!(from < to && to <= CommitSeq(seq), "{from:?}..{to:?}");
                    log.trimmed(to);
                }
            }
        }
    }

    #[test]
    fn by_count_the_oldest_go_past_an_eighth_over_and_never_the_newest() {
        let keep = ChangeRetention {
            groups: 8,
            bytes: 1 << 30,
        };
        let mut log = ChangeLog::new(Some(LogEnds {
            first: span(3, 20, 10),
            last: span(10, 90, 10),
        }));
        assert_eq!(log.next(), CommitSeq(11));
        assert_eq!(log.trim(keep, false), None, "8 held");
        log.appended(span(11, 100, 10));
        assert_eq!(log.trim(keep, false), None, "9 held: within the slack");
        assert_eq!(log.trim(keep, true), Some((CommitSeq(3), CommitSeq(4))));
        log.appended(span(12, 110, 10));
        assert_eq!(log.trim(keep, false), Some((CommitSeq(3), CommitSeq(5))));
        log.trimmed(CommitSeq(5));
        assert_eq!(log.trim(keep, true), None);
        let one = ChangeRetention {
            groups: 1,
            bytes: 1,
        };
        assert_eq!(
            log.trim(one, true),
            Some((CommitSeq(5), CommitSeq(12))),
            "the newest stays"
        );
        let everything = ChangeRetention {
            groups: u64::MAX,
            bytes: u64::MAX,
        };
        assert_eq!(log.trim(everything, false), None, "all kept, no overflow");
        assert_eq!(log.trim(everything, true), None);
    }

    #[test]
    fn by_bytes_its_own_entries_exactly_the_older_ones_by_their_average_size() {
        let keep = ChangeRetention {
            groups: 1_000,
            bytes: 100,
        };
        // Ten entries of 10 bytes from before the takeover: 0..100.
        let mut log = ChangeLog::new(Some(LogEnds {
            first: span(1, 0, 10),
            last: span(10, 90, 10),
        }));
        assert_eq!(log.trim(keep, false), None);
        // One of 50: 150 held, the first 50 bytes (five entries) go.
        log.appended(span(11, 100, 50));
        assert_eq!(log.trim(keep, false), Some((CommitSeq(1), CommitSeq(6))));
        log.trimmed(CommitSeq(6));
        assert_eq!(log.trim(keep, true), None);
        // Its own entries are placed exactly: after one of 80, only it and the one of 50
        // would pass 100, so everything before the newest goes.
        log.appended(span(12, 150, 80));
        assert_eq!(log.trim(keep, false), Some((CommitSeq(6), CommitSeq(12))));
    }
}
