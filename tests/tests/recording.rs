//! Recorded real runs, replayed by the simulator (`PARTY_RECORD`, `party-sim --replay`):
//! real processes record every call into their machines while a leader is SIGKILLed; the
//! replay must give the very outputs the processes gave and find the history clean; a bug
//! planted in the processes (`PARTY_INJECT`) must show in the replay's checks; outputs
//! changed in a recording must be reported as nondeterminism, at the first that differs
//! when the recording's short digests tell which, and so must a take from an iterator
//! recorded as having given other entries (or a watch other changes), and so must a count of
//! outputs the replay does not reach; a scan is recorded once; and a recording
//! bounded in size keeps only its latest part, which still replays (but not past a segment
//! missing between those it kept).

use std::path::Path;
use std::time::Duration;

use party_proto::recording::{decode_segment, encode_item, Record, Seal};
use party_sim::replay::{replay, ReplayError, Replayed};
use party_tests::Node;

const NODE: &str = env!("CARGO_BIN_EXE_party-node");
const SETTLE: Duration = Duration::from_secs(30);

/// A node of `dir` recording into `recordings`, settled as `role`.
fn recorded(
    dir: &Path,
    recordings: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    role: &str,
) -> Node {
    let recordings = recordings.to_str().unwrap();
    let mut env = env.to_vec();
    env.push(("PARTY_RECORD", recordings));
    let mut node = Node::spawn_with_env(NODE, dir, args, &env);
    assert_eq!(node.send("ready"), format!("ok {role}"));
    node
}

/// The segment files of `dir`, by name.
fn segment_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "rec"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

fn replayed(dir: &Path) -> Replayed {
    replay(&segment_files(dir)).expect("the recordings replay")
}

/// The replay gave the recorded outputs, found the history clean, and checked all of it.
fn assert_replays_clean(replay: &Replayed) {
    assert!(
        replay.nondeterminism.is_empty(),
        "{:?}",
        replay.nondeterminism
    );
    assert!(replay.violations.is_empty(), "{:?}", replay.violations);
    assert!(replay.unchecked.is_empty(), "{:?}", replay.unchecked);
}

/// Closes `follower`, then `leader`, and replays what they recorded into `recordings`:
/// alike, clean and all of it checked.
fn closed_and_replayed_clean(mut leader: Node, mut follower: Node, recordings: &Path) -> Replayed {
    assert_eq!(follower.send("close"), "ok");
    assert_eq!(leader.send("close"), "ok");
    let replay = replayed(recordings);
    assert_replays_clean(&replay);
    replay
}

/// A leader and two followers, recorded: writes, a batch burst, reads and a scan, the
/// leader SIGKILLed, more of the same on the next leader.
fn recorded_failover(dir: &Path, recordings: &Path) {
    let mut leader = recorded(dir, recordings, &[], &[], "leader");
    let first = recorded(dir, recordings, &[], &[], "follower");
    let second = recorded(dir, recordings, &[], &[], "follower");
    let mut followers = [first, second];
    let [first, second] = &mut followers;
    assert_eq!(leader.send("put a 1"), "ok");
    assert_eq!(first.send("burst b 20"), "ok 20");
    assert_eq!(second.send("get a"), "ok 1");
    first.submit("burst c 50");
    leader.kill();
    assert_eq!(first.answer(), "ok 50");
    assert!(Node::wait_any_role(&mut followers, "leader", SETTLE).is_some());
    let [first, second] = &mut followers;
    assert_eq!(second.send("put a 2"), "ok");
    assert_eq!(first.send("get a"), "ok 2");
    assert!(second.send("scan FORWARD 0").starts_with("ok "));
    assert_eq!(first.send("close"), "ok");
    assert_eq!(second.send("close"), "ok");
}

#[test]
fn a_recorded_failover_replays_alike_and_its_history_passes_the_checks() {
    let (dir, recordings) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    recorded_failover(dir.path(), recordings.path());

    let replay = replayed(recordings.path());
    assert_replays_clean(&replay);
    assert_eq!(replay.processes, 3);
    // 2 puts, 70 batches, 2 gets, a scan, each once; at least one commit per put.
    assert!(replay.ops >= 75, "{} operations", replay.ops);
    assert!(replay.commits >= 3, "{} commits", replay.commits);
}

/// A leader killed between a commit and its record of it (`die-after-commit`: the commit
/// landed, the recording never heard of it): the next leader answers the writer's re-sent
/// write from the dedup record that commit left, and the replay must count that commit,
/// not report an acknowledged write that was never committed.
#[test]
fn a_commit_its_leader_died_before_recording_is_counted_by_the_replay() {
    let (dir, recordings) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (dir, recordings) = (dir.path(), recordings.path());
    let dies = [("PARTY_INJECT", "die-after-commit")];
    let mut leader = recorded(dir, recordings, &[], &dies, "leader");
    let mut writer = recorded(dir, recordings, &[], &[], "follower");
    let mut reader = recorded(dir, recordings, &[], &[], "follower");
    assert_eq!(writer.send("put before 1"), "ok");
    assert_eq!(writer.send("put die-after-commit 1"), "ok");
    leader
        .exit_within(SETTLE)
        .expect("the leader did not kill itself at the commit");
    assert_eq!(reader.send("get die-after-commit"), "ok 1");
    assert_eq!(writer.send("put after 1"), "ok");
    assert_eq!(reader.send("close"), "ok");
    assert_eq!(writer.send("close"), "ok");

    let replay = replayed(recordings);
    assert_replays_clean(&replay);
}

/// Big values both ways, recorded: a follower's puts of 1 MiB values (read by the leader
/// straight into its decoder) and its gets of them (read by the follower so). Every byte the
/// follower read is in its recording, or the replay would miss the answers.
#[test]
fn big_values_through_a_follower_replay_alike() {
    let (dir, recordings) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = recorded(dir.path(), recordings.path(), &[], &[], "leader");
    let mut follower = recorded(dir.path(), recordings.path(), &[], &[], "follower");
    const VALUE: usize = 1 << 20;
    assert_eq!(follower.send(&format!("fill-big 3 {VALUE}")), "ok 3");
    assert_eq!(
        follower.send("get-many big/000000 big/000002 big/000001"),
        format!("ok {VALUE},{VALUE},{VALUE}")
    );
    // Gets of big values, one after another as they are answered: a follower that
    // recorded none of their bytes (had it taken them from a ring) would not replay.
    assert_eq!(follower.send("fill-marked 8 65536"), "ok 8");
    assert_eq!(follower.send("check-marked 8 65536"), "ok 24");
    let replay = closed_and_replayed_clean(leader, follower, recordings.path());
    assert_eq!(replay.processes, 2);
    assert!(replay.ops >= 36, "{} operations", replay.ops);
}

/// A real caller's requests over the real limits fail alone: a key longer than fjall
/// takes, an answer over the leader's frame limit, a write over the follower's own. The
/// replay finds no fault in those failures (the errors' own figures and the operations
/// explain them), and the recording replays alike.
#[test]
fn requests_over_the_real_limits_fail_alone_and_replay_clean() {
    let (dir, recordings) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Frames of 70 000 bytes: room for a key just over fjall's limit, not for two values
    // of 40 000.
    let limits = ["--max-frame-len", "70000"];
    let mut leader = recorded(dir.path(), recordings.path(), &limits, &[], "leader");
    let mut follower = recorded(dir.path(), recordings.path(), &limits, &[], "follower");
    assert_eq!(leader.send("fill-big 2 40000"), "ok 2");
    let long_key = "k".repeat(65_600);
    let refused = follower.send(&format!("put {long_key} v"));
    assert!(
        refused.starts_with("err other a key of 65600 bytes is longer than the store allows"),
        "{refused}"
    );
    let too_big = follower.send("get-many big/000000 big/000001");
    assert!(too_big.starts_with("err reply_too_large"), "{too_big}");
    let unsent = follower.send("fill-big 1 80000");
    assert!(
        unsent.starts_with("err other the request needs up to"),
        "{unsent}"
    );
    assert_eq!(follower.send("get-many big/000001"), "ok 40000");
    let replay = closed_and_replayed_clean(leader, follower, recordings.path());
    assert_eq!(replay.processes, 2);
    // The leader's two puts and the follower's four calls, the three that failed among
    // them: judged, not left out.
    assert_eq!(replay.ops, 6);
}

/// A leader whose disk has less free space than it keeps in reserve refuses every write,
/// its own and its followers', with the figures (`StoreFull`); the replay finds no fault in
/// those refusals, and reads go on.
#[test]
fn writes_refused_by_a_full_disk_replay_clean() {
    let (dir, recordings) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // A reserve of a million GiB: more than any disk here has free.
    let full = ["--min-free-space-gib", "1000000"];
    let mut leader = recorded(dir.path(), recordings.path(), &full, &[], "leader");
    let mut follower = recorded(dir.path(), recordings.path(), &[], &[], "follower");
    for node in [&mut leader, &mut follower] {
        let refused = node.send("put k v");
        assert!(
            refused.starts_with("err other the store's disk is full"),
            "{refused}"
        );
        assert_eq!(node.send("get k"), "none");
    }
    let replay = closed_and_replayed_clean(leader, follower, recordings.path());
    assert_eq!(replay.ops, 4);
}

/// A follower's scan is recorded once: as the bytes it read from the leader, while its
/// takes from the iterator are recorded as a digest (in full, they doubled the recording).
#[test]
fn a_scan_is_recorded_once() {
    let (dir, recordings) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = Node::spawn(NODE, dir.path(), &[]);
    assert_eq!(leader.send("ready"), "ok leader");
    const ENTRIES: usize = 200;
    const VALUE: usize = 1024;
    assert_eq!(
        leader.send(&format!("fill-big {ENTRIES} {VALUE}")),
        format!("ok {ENTRIES}")
    );
    let mut follower = recorded(dir.path(), recordings.path(), &[], &[], "follower");
    assert!(follower
        .send("scan FORWARD 0")
        .starts_with(&format!("ok {ENTRIES} ")));
    assert_eq!(follower.send("close"), "ok");
    let recorded: usize = segment_files(recordings.path())
        .iter()
        .map(|(_, bytes)| bytes.len())
        .sum();
    let scanned = ENTRIES * VALUE;
    assert!(
        recorded > scanned && recorded < scanned * 3 / 2,
        "{recorded} bytes recorded for a scan of {scanned} bytes of values"
    );
}

/// `files` with the first record that `change` changes (it says whether it did); the file
/// changed, and the record's step.
fn with_a_record_changed(
    files: &[(String, Vec<u8>)],
    change: impl Fn(&mut Record) -> bool,
) -> (Vec<(String, Vec<u8>)>, String, usize) {
    let mut files = files.to_vec();
    let (file, step) = files
        .iter_mut()
        .find_map(|(name, bytes)| {
            let mut segment = decode_segment(bytes).unwrap();
            let step = segment.records.iter_mut().position(&change)?;
            let mut changed = Vec::new();
            encode_item(&segment.header, &mut changed);
            encode_item(segment.snapshot.as_deref().unwrap(), &mut changed);
            for record in &segment.records {
                encode_item(record, &mut changed);
            }
            Seal::of(&segment.header).append_to(&mut changed);
            *bytes = changed;
            Some((name.clone(), step))
        })
        .expect("a record to change was recorded");
    (files, file, step)
}

/// `files` with the first check of a process's outputs that covers any changed by
/// `change`; the file changed, and the check's step.
fn with_a_check_changed(
    files: &[(String, Vec<u8>)],
    change: impl Fn(&mut u64, &mut Vec<u8>),
) -> (Vec<(String, Vec<u8>)>, String, usize) {
    with_a_record_changed(files, |record| match record {
        Record::Outputs {
            count,
            digest,
            each,
        } if *count > 0 => {
            change(digest, each.0.to_mut());
            true
        }
        _ => false,
    })
}

/// The one difference a replay of `files` reports.
fn the_difference(files: &[(String, Vec<u8>)]) -> String {
    let replay = replay(files).unwrap();
    assert_eq!(
        replay.nondeterminism.len(),
        1,
        "{:?}",
        replay.nondeterminism
    );
    replay.nondeterminism[0].clone()
}

#[test]
fn outputs_changed_in_a_recording_are_reported_as_nondeterminism_at_their_check() {
    let (dir, recordings) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    recorded_failover(dir.path(), recordings.path());
    let files = segment_files(recordings.path());

    // The check's fingerprint tells of other outputs, each output's short digest agrees:
    // the difference is placed at the check.
    let (changed, file, step) = with_a_check_changed(&files, |digest, _| *digest ^= 1);
    let difference = the_difference(&changed);
    assert!(
        difference.contains(&format!("step {step}:")),
        "{difference} ({file})"
    );
    assert!(
        difference.contains("differ from the replayed ones"),
        "{difference}"
    );

    // The first output of the check's window differs too: the difference is placed at
    // that output, found at the check.
    let (changed, file, step) = with_a_check_changed(&files, |digest, each| {
        *digest ^= 1;
        if let Some(first) = each.first_mut() {
            *first ^= 1;
        }
    });
    let difference = the_difference(&changed);
    assert!(
        difference.contains("the replayed machine's output 1 differs from the real one's")
            && difference.contains(&format!("step {step})")),
        "{difference} ({file})"
    );
}

#[test]
fn a_take_from_an_iterator_changed_in_a_recording_is_reported_as_nondeterminism_at_its_step() {
    let (dir, recordings) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    recorded_failover(dir.path(), recordings.path());
    let files = segment_files(recordings.path());
    // What the scan's first take gave, as the recording has it, differs from what the
    // replayed machine gives from the same bytes.
    assert_a_changed_take_is_reported(&files, |record| match record {
        Record::IterTake { gave, .. } if gave.items > 0 => {
            gave.digest ^= 1;
            true
        }
        _ => false,
    });
}

/// A replay of `files` with the first record `change` changes reports one difference: a
/// take's, at that record's step.
fn assert_a_changed_take_is_reported(
    files: &[(String, Vec<u8>)],
    change: impl Fn(&mut Record) -> bool,
) {
    let (changed, file, step) = with_a_record_changed(files, change);
    let difference = the_difference(&changed);
    assert!(
        difference.contains(&format!("step {step}:")) && difference.contains("take gave"),
        "{difference} ({file})"
    );
}

/// A follower watching a prefix while the leader writes under it, both recorded.
fn recorded_watch(dir: &Path, recordings: &Path) {
    let feed = ["--change-feed"];
    let mut leader = recorded(dir, recordings, &feed, &[], "leader");
    let mut watcher = recorded(dir, recordings, &feed, &[], "follower");
    assert!(watcher.send("watch-start w/").starts_with("ok "));
    for n in 0..5 {
        assert_eq!(leader.send(&format!("put w/{n} {n}")), "ok");
    }
    assert_eq!(watcher.send("watch-wait 5"), "ok 5");
    assert_eq!(watcher.send("close"), "ok");
    assert_eq!(leader.send("close"), "ok");
}

#[test]
fn a_take_from_a_watch_changed_in_a_recording_is_reported_as_nondeterminism_at_its_step() {
    let (dir, recordings) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    recorded_watch(dir.path(), recordings.path());
    let files = segment_files(recordings.path());
    assert_replays_clean(&replay(&files).unwrap());
    assert_a_changed_take_is_reported(&files, |record| match record {
        Record::WatchTake { gave, .. } if gave.items > 0 => {
            gave.items += 1;
            true
        }
        _ => false,
    });
}

/// A recording whose check says the real machine had given more outputs than the replayed
/// one gives from the same inputs.
#[test]
fn a_recording_counting_more_outputs_than_the_replay_gives_is_nondeterminism() {
    let (dir, recordings) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    recorded_failover(dir.path(), recordings.path());
    let files = segment_files(recordings.path());
    let (changed, file, step) = with_a_record_changed(&files, |record| match record {
        Record::Outputs { count, .. } if *count > 0 => {
            *count += 1;
            true
        }
        _ => false,
    });
    let difference = the_difference(&changed);
    assert!(
        difference.contains(&format!("step {step}:"))
            && difference.contains("the real machine had given"),
        "{difference} ({file})"
    );
}

/// Iterators of a follower with `inclusive-resume` planted resume from their last key
/// itself after a failover, delivering it twice; the replay of the recorded run, with the
/// same bug in its machines, sees the iterator repeat a key.
#[test]
fn a_bug_planted_in_recorded_processes_shows_in_the_replay() {
    let (dir, recordings) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let bug = [("PARTY_INJECT", "inclusive-resume")];
    let args = ["--iter-window", "4"];
    let mut leader = recorded(dir.path(), recordings.path(), &args, &bug, "leader");
    let mut reader = recorded(dir.path(), recordings.path(), &args, &bug, "follower");
    assert_eq!(leader.send("fill-edge 40"), "ok 48");
    assert_eq!(reader.send("open-iter"), "ok");
    let mut next_chunk = || -> usize {
        let answer = reader.send("next-chunk 100");
        answer.strip_prefix("ok ").unwrap().parse().unwrap()
    };
    let mut read = 0;
    while read < 10 {
        read += next_chunk();
    }
    leader.kill();
    loop {
        match next_chunk() {
            0 => break,
            count => read += count,
        }
    }
    assert_eq!(read, 49, "the real iterator delivered one key twice");
    assert_eq!(reader.send("close"), "ok");

    let replay = replayed(recordings.path());
    assert!(
        replay.nondeterminism.is_empty(),
        "{:?}",
        replay.nondeterminism
    );
    assert!(
        replay
            .violations
            .iter()
            .any(|violation| violation.contains("repeated or reordered keys")),
        "{:?}",
        replay.violations
    );
}

/// With `PARTY_RECORD_MAX_BYTES` small, each stream keeps at most four segments of a
/// quarter of it (one turn's calls over): the oldest go, and what is left, opening with
/// the machine's snapshot, still replays alike; the history is not judged, having lost its
/// start.
#[test]
fn a_bounded_recording_keeps_its_latest_part_and_that_part_replays() {
    const MAX_BYTES: usize = 64 << 10;
    let (dir, recordings) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let bound = MAX_BYTES.to_string();
    let env = [("PARTY_RECORD_MAX_BYTES", bound.as_str())];
    let mut leader = recorded(dir.path(), recordings.path(), &[], &env, "leader");
    let mut follower = recorded(dir.path(), recordings.path(), &[], &env, "follower");
    assert_eq!(follower.send("seq-puts k 3000"), "ok 3000");
    assert_eq!(follower.send("close"), "ok");
    assert_eq!(leader.send("close"), "ok");

    let files = segment_files(recordings.path());
    let stream_of = |name: &str| name.rsplit_once('-').unwrap().0.to_owned();
    let mut streams = std::collections::BTreeMap::<String, (usize, usize)>::new();
    for (name, bytes) in &files {
        let stream = stream_of(name);
        let (count, size) = streams.entry(stream).or_default();
        *count += 1;
        *size += bytes.len();
    }
    assert!(streams.len() >= 3, "{streams:?}");
    for (stream, (count, size)) in &streams {
        assert!(*count <= 4, "{stream}: {count} segments");
        assert!(*size <= MAX_BYTES + MAX_BYTES / 4, "{stream}: {size} bytes");
    }
    let dropped = files.iter().any(|(name, _)| !name.ends_with("-000000.rec"));
    assert!(dropped, "3000 puts outgrow 64 KiB: {:?}", streams);

    let replay = replayed(recordings.path());
    assert!(
        replay.nondeterminism.is_empty(),
        "{:?}",
        replay.nondeterminism
    );
    assert!(replay.steps > 1000, "{} steps", replay.steps);
    assert!(
        replay.unchecked.iter().any(|note| note.contains("dropped")),
        "{:?}",
        replay.unchecked
    );
    assert!(replay.violations.is_empty(), "{:?}", replay.violations);

    // A segment missing between those kept is refused, not replayed past.
    let (stream, _) = streams
        .iter()
        .find(|(_, (count, _))| *count >= 3)
        .expect("a stream kept three segments");
    let middle = files
        .iter()
        .filter(|(name, _)| stream_of(name) == *stream)
        .nth(1)
        .unwrap()
        .0
        .clone();
    let gapped: Vec<_> = files
        .into_iter()
        .filter(|(name, _)| *name != middle)
        .collect();
    assert!(
        matches!(
            party_sim::replay::replay(&gapped),
            Err(ReplayError::Gap { .. })
        ),
        "{middle} left out"
    );
}

/// A follower recorded under a leader that was not: the replay cannot know the leader's
/// commits, says so, and judges no history (else every acknowledged write would look
/// lost).
#[test]
fn a_leader_left_unrecorded_is_named_and_the_history_left_unjudged() {
    let (dir, recordings) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = Node::spawn(NODE, dir.path(), &[]);
    assert_eq!(leader.send("ready"), "ok leader");
    let mut follower = recorded(dir.path(), recordings.path(), &[], &[], "follower");
    assert_eq!(follower.send("put a 1"), "ok");
    assert_eq!(follower.send("get a"), "ok 1");
    assert_eq!(follower.send("close"), "ok");

    assert_unjudged(recordings.path(), |note| {
        note.contains("term 1") && note.contains("not recorded")
    });
}

/// A writer left unrecorded under a recorded leader: the commits name it (its dedup record),
/// so the replay says some writes are unknown and judges no history (else the recorded
/// reader's reads of its values would look like violations).
#[test]
fn a_writer_left_unrecorded_is_counted_and_the_history_left_unjudged() {
    let (dir, recordings) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = recorded(dir.path(), recordings.path(), &[], &[], "leader");
    let mut writer = Node::spawn(NODE, dir.path(), &[]);
    assert_eq!(writer.send("ready"), "ok follower");
    assert_eq!(writer.send("put a 1"), "ok");
    assert_eq!(leader.send("get a"), "ok 1");
    assert_eq!(writer.send("close"), "ok");
    assert_eq!(leader.send("close"), "ok");

    assert_unjudged(recordings.path(), |note| {
        note.starts_with("1 writers") && note.contains("not recorded")
    });
}

/// The recordings of `dir` replay alike, a note of what is missing matches `names`, and no
/// history was judged.
fn assert_unjudged(dir: &Path, names: impl Fn(&str) -> bool) {
    let replay = replayed(dir);
    assert!(
        replay.nondeterminism.is_empty(),
        "{:?}",
        replay.nondeterminism
    );
    assert!(
        replay.unchecked.iter().any(|note| names(note)),
        "{:?}",
        replay.unchecked
    );
    assert!(replay.violations.is_empty(), "{:?}", replay.violations);
}

/// A leader's own writes, many to a turn, in a bounded recording: a new segment starts only
/// between turns, never while the machine still holds outputs of the turn (they would be
/// counted in both segments), so what is kept replays alike.
#[test]
fn a_bounded_recording_of_a_leaders_own_bursts_replays() {
    const MAX_BYTES: usize = 64 << 10;
    let (dir, recordings) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let bound = MAX_BYTES.to_string();
    let env = [("PARTY_RECORD_MAX_BYTES", bound.as_str())];
    let mut leader = recorded(dir.path(), recordings.path(), &[], &env, "leader");
    for burst in 0..40 {
        assert_eq!(leader.send(&format!("burst b{burst} 50")), "ok 50");
    }
    assert_eq!(leader.send("close"), "ok");

    let files = segment_files(recordings.path());
    let dropped = files.iter().any(|(name, _)| !name.ends_with("-000000.rec"));
    assert!(dropped, "2000 writes outgrow 64 KiB");
    let replay = replayed(recordings.path());
    assert!(
        replay.nondeterminism.is_empty(),
        "{:?}",
        replay.nondeterminism
    );
    assert!(replay.steps > 1000, "{} steps", replay.steps);
}
