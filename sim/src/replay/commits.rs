//! The commits the leaders' stores made, read from the recordings' commit streams.
//!
//! A leader records each commit as asked before its store is asked, and the store's answer
//! after it: a leader killed in between leaves a commit that may have landed or not. The
//! next leadership tells which: its leader numbers commits on from the last that landed
//! (it reads the number as it starts, [`Record::StoreNext`], and each commit it asks
//! carries its own). A commit the store answered with an unknown outcome is told the same
//! way by its own leader, which reads the number again at once (the store settles the
//! commit first: it has landed by then or never will).

use std::collections::BTreeMap;

use party_proto::recording::Record;
use party_proto::{CommitResult, CommitSeq, WriteBatch};

use super::StreamSegments;

/// One commit a leader asked of its store, on the host's clock from the run's origin.
pub(super) struct StoreCommit<'a> {
    pub stream: &'a str,
    pub issued: u64,
    pub batch: &'a WriteBatch,
    pub landing: Landing<'a>,
}

/// What became of a commit.
pub(super) enum Landing<'a> {
    /// The store answered `result` at `answered`.
    Answered {
        answered: u64,
        result: &'a CommitResult,
    },
    /// Its leader died before the answer, or the store answered that it could not tell;
    /// the leader that next read the store's number found it landed, at `found`.
    Landed { found: u64 },
    /// As [`Landing::Landed`], but found not landed.
    Lost,
    /// Its leader died before the answer, and no recorded leadership after it tells.
    Untold,
}

impl std::fmt::Display for Landing<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Landing::Answered { result, .. } => write!(f, "{result:?}"),
            Landing::Landed { .. } => f.write_str("no answer told; it landed"),
            Landing::Lost => f.write_str("no answer told; it did not land"),
            Landing::Untold => f.write_str("its leader died unanswered; landed or not, untold"),
        }
    }
}

/// The commits of every stream of `streams` (commit streams), in the order they were asked.
pub(super) fn store_commits(streams: &[StreamSegments], origin: u64) -> Vec<StoreCommit<'_>> {
    // The first number each leadership found the store at, and when (`None`: lost with
    // the first segments its ring dropped). One that asked no commit and recorded no
    // number took none, and is passed over.
    let mut first_numbers: BTreeMap<u64, Option<(u64, CommitSeq)>> = BTreeMap::new();
    let mut commits: Vec<StoreCommit> = Vec::new();
    // Each stream's commits left without an answer, with their leadership.
    let mut unanswered = Vec::new();
    for stream in streams {
        let mut first_number = None;
        let mut asked: Option<StoreCommit> = None;
        // The last commit answered with an unknown outcome, until the number is read again.
        let mut unsure: Option<usize> = None;
        for record in stream.segments.iter().flat_map(|s| &s.records) {
            match record {
                Record::StoreNext { at, next } => {
                    let at = stream.time(*at, origin);
                    first_number.get_or_insert((at, *next));
                    if let Some(index) = unsure.take() {
                        let commit = &mut commits[index];
                        let asked = commit.batch.log.as_ref().map(|log| log.seq);
                        if let Some(landing) = told_by(asked, Some((at, *next))) {
                            commit.landing = landing;
                        }
                    }
                }
                Record::Committing { issued, batch } => {
                    let issued = stream.time(*issued, origin);
                    unsure = None;
                    if let Some(log) = &batch.log {
                        first_number.get_or_insert((issued, log.seq));
                    }
                    if let Some(before) = asked.replace(StoreCommit {
                        stream: &stream.name,
                        issued,
                        batch,
                        landing: Landing::Untold,
                    }) {
                        unanswered.push((commits.len(), stream.header.term));
                        commits.push(before);
                    }
                }
                Record::Committed { answered, result } => {
                    // A stream whose ring dropped the asking holds the answer alone.
                    if let Some(mut commit) = asked.take() {
                        commit.landing = Landing::Answered {
                            answered: stream.time(*answered, origin),
                            result,
                        };
                        if matches!(result.as_ref(), CommitResult::Unsettled(_)) {
                            unsure = Some(commits.len());
                        }
                        commits.push(commit);
                    }
                }
                _ => {}
            }
        }
        if let Some(last) = asked {
            unanswered.push((commits.len(), stream.header.term));
            commits.push(last);
        }
        if let Some(term) = stream.header.term {
            if stream.truncated() {
                first_numbers.insert(term, None);
            } else if first_number.is_some() {
                first_numbers.insert(term, first_number);
            }
        }
    }
    for (index, term) in unanswered {
        let commit = &mut commits[index];
        let asked = commit.batch.log.as_ref().map(|log| log.seq);
        // The first number of the next leadership that took one. A leadership between
        // without a commit stream never served (its stream starts as it begins to): one
        // that did served its own handle, whose recording names it, and the replay then
        // leaves the history unjudged.
        let found = term
            .and_then(|term| first_numbers.range(term + 1..).next())
            .and_then(|(_, first)| *first);
        commit.landing = told_by(asked, found).unwrap_or(Landing::Untold);
    }
    commits.sort_by_key(|commit| commit.issued);
    commits
}

/// What the number the store's next commit takes, read at a time `found`, tells of a
/// commit asked as number `asked`; `None` without a number, or if the numbers went back.
fn told_by<'a>(asked: Option<CommitSeq>, found: Option<(u64, CommitSeq)>) -> Option<Landing<'a>> {
    match (asked?, found?) {
        (asked, (at, next)) if next > asked => Some(Landing::Landed { found: at }),
        (asked, (_, next)) if next == asked => Some(Landing::Lost),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::Duration;

    use party_proto::recording::{Header, Segment, Stream, FORMAT};
    use party_proto::{ClientId, LogAppend, Timestamp};

    use super::*;

    fn at(micros: u64) -> Timestamp {
        Timestamp::from_epoch(Duration::from_micros(micros))
    }

    /// A commit stream of leadership `term`, with these records, all on one clock.
    fn leadership(term: u64, records: Vec<Record<'static>>) -> StreamSegments {
        let header = Header {
            format: FORMAT,
            stream: Stream::Commits,
            pid: 1,
            client: ClientId(u128::from(term)),
            epoch_us: 0,
            segment: 0,
            term: Some(term),
        };
        StreamSegments {
            name: format!("term {term}"),
            header: header.clone(),
            segments: vec![Segment {
                header,
                snapshot: None,
                records,
                torn: false,
            }],
        }
    }

    fn asked(issued: u64, seq: u64) -> Record<'static> {
        Record::Committing {
            issued: at(issued),
            batch: Cow::Owned(WriteBatch {
                log: Some(LogAppend {
                    seq: CommitSeq(seq),
                    entry: Vec::new(),
                }),
                ..WriteBatch::default()
            }),
        }
    }

    fn answered(answered: u64) -> Record<'static> {
        Record::Committed {
            answered: at(answered),
            result: Cow::Owned(CommitResult::Committed),
        }
    }

    fn found(at_micros: u64, next: u64) -> Record<'static> {
        Record::StoreNext {
            at: at(at_micros),
            next: CommitSeq(next),
        }
    }

    /// Each commit's time asked and what became of it, in short.
    fn landings(streams: &[StreamSegments]) -> Vec<(u64, String)> {
        store_commits(streams, 0)
            .iter()
            .map(|commit| {
                let landing = match commit.landing {
                    Landing::Answered { answered, .. } => format!("answered at {answered}"),
                    Landing::Landed { found } => format!("landed, found at {found}"),
                    Landing::Lost => "lost".to_owned(),
                    Landing::Untold => "untold".to_owned(),
                };
                (commit.issued, landing)
            })
            .collect()
    }

    #[test]
    fn a_commit_left_unanswered_landed_if_the_next_leader_numbered_past_it() {
        let first = leadership(
            1,
            vec![found(1, 1), asked(10, 1), answered(12), asked(20, 2)],
        );
        let landed = leadership(2, vec![found(30, 3), asked(40, 3), answered(41)]);
        assert_eq!(
            landings(&[first, landed]),
            [
                (10, "answered at 12".to_owned()),
                (20, "landed, found at 30".to_owned()),
                (40, "answered at 41".to_owned()),
            ]
        );
    }

    #[test]
    fn a_commit_left_unanswered_was_lost_if_the_next_leader_took_its_number() {
        let first = leadership(1, vec![asked(20, 2)]);
        // No look at the store recorded: its first commit's number tells.
        let lost = leadership(2, vec![asked(40, 2), answered(41)]);
        assert_eq!(
            landings(&[first, lost]),
            [(20, "lost".to_owned()), (40, "answered at 41".to_owned())]
        );
    }

    #[test]
    fn a_leadership_between_that_took_no_number_is_passed_over() {
        // Leadership 2 took the lock and died before it served.
        let first = || leadership(1, vec![asked(20, 2)]);
        let third = leadership(3, vec![found(30, 3)]);
        assert_eq!(landings(&[first(), third])[0].1, "landed, found at 30");
        // Leadership 2 served and asked nothing; 3 found the number 1 had taken.
        let (second, third) = (leadership(2, Vec::new()), leadership(3, vec![found(30, 2)]));
        assert_eq!(landings(&[first(), second, third])[0].1, "lost");
    }

    /// The next leadership that took a number tells, not a later one: here the next took
    /// the commit's own number (it was lost) and a later one found the store past it.
    #[test]
    fn only_the_next_leadership_with_a_number_tells() {
        let first = leadership(1, vec![asked(20, 2)]);
        let next = leadership(2, vec![found(30, 2), asked(31, 2), answered(32)]);
        let later = leadership(3, vec![found(40, 3)]);
        assert_eq!(landings(&[first, next, later])[0].1, "lost");
    }

    #[test]
    fn a_commit_left_unanswered_is_untold_without_a_number_after_it() {
        let untold = |streams: &[StreamSegments]| landings(streams)[0].1 == "untold";
        let first = || leadership(1, vec![asked(20, 2)]);
        assert!(untold(&[first()]), "no leadership after it");
        assert!(
            untold(&[first(), leadership(2, Vec::new())]),
            "the leadership after it took no number"
        );
        assert!(
            untold(&[first(), leadership(2, vec![found(30, 1)])]),
            "the numbers went back"
        );
        let mut truncated = leadership(2, vec![found(30, 3)]);
        truncated.header.segment = 1;
        assert!(
            untold(&[first(), truncated]),
            "the next leader's first number dropped by its ring"
        );
    }

    fn unsettled(answered: u64) -> Record<'static> {
        Record::Committed {
            answered: at(answered),
            result: Cow::Owned(CommitResult::Unsettled("no answer".into())),
        }
    }

    /// A commit the store could not tell the outcome of is told by the number its leader
    /// reads at once after it: past it, it landed; its own, it did not; no number read
    /// before the next commit, it stays unknown.
    #[test]
    fn a_commit_of_unknown_outcome_is_told_by_the_number_read_after_it() {
        let after = |records: Vec<Record<'static>>| {
            let mut all = vec![found(1, 1), asked(10, 1), unsettled(12)];
            all.extend(records);
            landings(&[leadership(1, all)])[0].1.clone()
        };
        assert_eq!(after(vec![found(13, 2)]), "landed, found at 13");
        assert_eq!(after(vec![found(13, 1)]), "lost");
        assert_eq!(after(Vec::new()), "answered at 12");
        assert_eq!(
            after(vec![asked(20, 1), answered(21), found(30, 2)]),
            "answered at 12",
            "a number read after a later commit tells nothing of this one"
        );
    }

    #[test]
    fn an_answer_whose_asking_the_ring_dropped_is_left_out() {
        let streams = [leadership(1, vec![answered(5), asked(10, 1), answered(12)])];
        assert_eq!(landings(&streams), [(10, "answered at 12".to_owned())]);
    }
}
