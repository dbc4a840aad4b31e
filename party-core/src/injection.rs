//! The bug class a test asks a real process to re-create (`PARTY_INJECT=NAME`),
//! acted on only in a build with the cargo feature `bug-injection`: see party-proto's
//! `bugs`; `store-thread-panic`, a panic of the leader's store thread;
//! `store-open-hangs`, a store whose open never ends; `store-close-hangs`, a store whose
//! close never ends; and `die-after-commit`, a leader killed between a commit and its
//! answers. Any other build re-creates none, whatever the environment says.

use party_proto::bugs::Bugs;

/// The environment variable that names the bug class to re-create.
#[cfg(feature = "bug-injection")]
const INJECT_ENV: &str = "PARTY_INJECT";

/// What `PARTY_INJECT` names (empty if nothing), read once: some faults are looked for at
/// every write.
#[cfg(feature = "bug-injection")]
fn injected() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| std::env::var(INJECT_ENV).unwrap_or_default())
}

/// The bugs to re-create: those `PARTY_INJECT` names in a `bug-injection` build, else none.
pub(crate) fn bugs() -> Bugs {
    #[cfg(feature = "bug-injection")]
    {
        static BUGS: std::sync::OnceLock<Bugs> = std::sync::OnceLock::new();
        *BUGS.get_or_init(|| {
            let name = injected();
            if name.is_empty() {
                return Bugs::default();
            }
            // Said for these too, so that a test can tell its fault was re-created.
            let faults = [
                STORE_PANIC,
                STORE_OPEN_HANGS,
                STORE_CLOSE_HANGS,
                DIE_AFTER_COMMIT,
            ];
            if faults.contains(&name) {
                tracing::warn!("{INJECT_ENV}: re-creating the fault {name}");
                return Bugs::default();
            }
            match Bugs::named(name) {
                Some(bugs) => {
                    tracing::warn!("{INJECT_ENV}: re-creating the bug class {name}");
                    bugs
                }
                None => {
                    tracing::warn!("{INJECT_ENV}: no bug class is named {name}");
                    Bugs::default()
                }
            }
        })
    }
    #[cfg(not(feature = "bug-injection"))]
    {
        Bugs::default()
    }
}

/// The name under `PARTY_INJECT` that makes the store thread panic (a bug of a store, or of
/// party, re-created) when it writes the key [`PANIC_KEY`].
#[cfg(feature = "bug-injection")]
const STORE_PANIC: &str = "store-thread-panic";

/// The key whose write panics the store thread where [`STORE_PANIC`] is injected.
#[cfg(feature = "bug-injection")]
const PANIC_KEY: &[u8] = b"store-thread-panic";

/// Panics if `PARTY_INJECT` asks for it and `op` writes [`PANIC_KEY`] (in a
/// `bug-injection` build; never in any other).
pub(crate) fn panic_at(op: &party_proto::wire::WriteOp) {
    #[cfg(feature = "bug-injection")]
    if injected() == STORE_PANIC
        && matches!(op, party_proto::wire::WriteOp::Put { key, .. } if key == PANIC_KEY)
    {
        panic!("{INJECT_ENV}={STORE_PANIC}: the store thread panics");
    }
    #[cfg(not(feature = "bug-injection"))]
    let _ = op;
}

/// The name under `PARTY_INJECT` that makes every store open of the process hang (a store
/// that takes for ever to open, re-created: an etcd cluster that does not answer, say).
#[cfg(feature = "bug-injection")]
const STORE_OPEN_HANGS: &str = "store-open-hangs";

/// Never returns if `PARTY_INJECT` asks for it (in a `bug-injection` build; never in any
/// other). Called on the thread that opens the store, before it does.
pub(crate) fn hold_store_open() {
    #[cfg(feature = "bug-injection")]
    hang_if_injected(STORE_OPEN_HANGS);
}

/// The name under `PARTY_INJECT` that makes every store close of the process hang, once
/// the handle was told the store is checkpointed (fjall's threads take up to 250 ms to
/// stop; a flush stuck on a slow disk, longer).
#[cfg(feature = "bug-injection")]
const STORE_CLOSE_HANGS: &str = "store-close-hangs";

/// Never returns if `PARTY_INJECT` asks for it (in a `bug-injection` build; never in any
/// other). Called on the store thread before it drops a store the process may exit
/// without closing.
pub(crate) fn hold_store_close() {
    #[cfg(feature = "bug-injection")]
    hang_if_injected(STORE_CLOSE_HANGS);
}

/// Parks the calling thread for ever if `PARTY_INJECT` names `fault`, saying so on stderr
/// first: a test waits for that line to know the fault was met, not just named.
#[cfg(feature = "bug-injection")]
fn hang_if_injected(fault: &str) {
    if injected() == fault {
        eprintln!("{INJECT_ENV}={fault}: this thread hangs for ever");
        loop {
            std::thread::park();
        }
    }
}

/// The name under `PARTY_INJECT` that kills the leader's process (SIGKILL, by itself) right
/// after its store committed a group writing the key [`DIE_KEY`], before any answer of the
/// group leaves: the crash after which a follower sends writes that did land again, to
/// the next leader.
#[cfg(feature = "bug-injection")]
const DIE_AFTER_COMMIT: &str = "die-after-commit";

/// The key whose commit kills the leader where [`DIE_AFTER_COMMIT`] is injected.
#[cfg(feature = "bug-injection")]
const DIE_KEY: &[u8] = b"die-after-commit";

/// Kills this process if `PARTY_INJECT` asks for it and the committed `ops` write
/// [`DIE_KEY`] (in a `bug-injection` build; never in any other).
pub(crate) fn die_after_commit_of(ops: &[party_proto::wire::WriteOp]) {
    #[cfg(feature = "bug-injection")]
    if injected() == DIE_AFTER_COMMIT && commits_die_key(ops) {
        kill_this_process();
    }
    #[cfg(not(feature = "bug-injection"))]
    let _ = ops;
}

/// Ends this process as `kill -9` would: no destructor, no flush, no answer on the way.
#[cfg(feature = "bug-injection")]
fn kill_this_process() -> ! {
    #[cfg(unix)]
    {
        use rustix::process::{getpid, kill_process, Signal};
        kill_process(getpid(), Signal::KILL).expect("a process may signal itself");
    }
    // Where there is no SIGKILL (or, never seen, should the call return before the signal
    // ends the process): as abrupt an end.
    std::process::abort()
}

/// Whether a committed group writes [`DIE_KEY`], alone or among other writes (of this
/// connection's or others'): the crash matters most where a group's many writers lose
/// their answers at once.
#[cfg(feature = "bug-injection")]
fn commits_die_key(ops: &[party_proto::wire::WriteOp]) -> bool {
    ops.iter().any(writes_die_key)
}

#[cfg(feature = "bug-injection")]
fn writes_die_key(op: &party_proto::wire::WriteOp) -> bool {
    use party_proto::wire::{BatchOp, WriteOp};
    let in_steps = |steps: &[BatchOp]| steps.iter().any(|step| step.key() == DIE_KEY);
    match op {
        WriteOp::Put { key, .. } | WriteOp::Del { key } => key == DIE_KEY,
        WriteOp::Batch { ops } => in_steps(ops),
        WriteOp::Transaction { writes, .. } => in_steps(writes),
        WriteOp::Clear { range } => range.contains(DIE_KEY),
    }
}

#[cfg(all(test, feature = "bug-injection"))]
mod tests {
    use super::*;
    use party_proto::wire::{BatchOp, WriteOp};

    fn put(key: &[u8]) -> WriteOp {
        WriteOp::Put {
            key: key.to_vec(),
            value: b"1".to_vec(),
        }
    }

    #[test]
    fn a_group_commits_the_die_key_alone_or_among_other_writes() {
        assert!(commits_die_key(&[put(DIE_KEY)]));
        assert!(commits_die_key(&[put(b"a"), put(DIE_KEY), put(b"b")]));
        let steps = vec![
            BatchOp::Del { key: b"a".to_vec() },
            BatchOp::Del {
                key: DIE_KEY.to_vec(),
            },
        ];
        assert!(commits_die_key(&[put(b"a"), WriteOp::Batch { ops: steps }]));
        assert!(!commits_die_key(&[put(b"a"), put(b"die-after-commit!")]));
        assert!(!commits_die_key(&[]));
    }
}
