//! A process of another user is refused by the leader, even when the directory, the lock
//! file and the socket have been opened up to everyone (their default is owner-only). It
//! runs a child as `nobody`, so it needs root (as CI has); it says so and fails otherwise.

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use party_core::{open, Options, Role};

const NODE: &str = env!("CARGO_BIN_EXE_party-node");
const NOBODY: u32 = 65534;

/// Opens `dir` in a child running as nobody and asks it `ready`; gives the child and its
/// answer.
fn ready_as_nobody(dir: &std::path::Path) -> (std::process::Child, String) {
    let mut stranger = Command::new(NODE)
        .arg(dir)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("this test runs a child as nobody: run it as root (CI does)");
    let mut stdin = stranger.stdin.take().unwrap();
    writeln!(stdin, "ready").unwrap();
    let mut stdout = BufReader::new(stranger.stdout.take().unwrap());
    let answer = loop {
        let mut line = String::new();
        assert_ne!(
            stdout.read_line(&mut line).unwrap(),
            0,
            "an answer to ready"
        );
        if !line.starts_with("role ") {
            break line.trim_end().to_owned();
        }
    };
    // Its pipes stay open, so the child lives on, and may still print, until it is killed.
    stranger.stdin = Some(stdin);
    stranger.stdout = Some(stdout.into_inner());
    (stranger, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_running_as_another_user_is_refused_and_the_rest_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let open_to_all = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    open_to_all(dir.path(), 0o777);
    let leader = open(dir.path(), Options::default()).await.unwrap();
    assert_eq!(leader.ready().await.unwrap(), Role::Leader);
    open_to_all(&dir.path().join("party.lock"), 0o666);
    open_to_all(leader.socket_path(), 0o666);

    let (mut stranger, answer) = ready_as_nobody(dir.path());
    // Both sides refuse: the follower first, as it checks the leader's user before it says
    // a word (the leader's own check of its followers, `admit_peer`, has tests of its own).
    assert_eq!(
        answer,
        "err other the process serving the socket runs as uid 0, another user: refused as leader"
    );
    stranger.kill().unwrap();
    stranger.wait().unwrap();

    let follower = open(dir.path(), Options::default()).await.unwrap();
    assert_eq!(follower.ready().await.unwrap(), Role::Follower);
    follower.put("k", "v").await.unwrap();
    assert_eq!(leader.get("k").await.unwrap(), Some(b"v".to_vec()));
}

/// A follower refuses a leader that runs as another user before it says a word, with a
/// typed error, even where the socket lets it in (root may connect to anyone's socket).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_running_as_another_user_is_refused_by_its_follower() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (mut stranger, answer) = ready_as_nobody(dir.path());
    assert_eq!(answer, "ok leader");

    let handle = open(dir.path(), Options::default()).await.unwrap();
    let refused = handle.get("k").await;
    assert!(
        matches!(refused, Err(party_core::Error::LeaderOfOtherUser { uid }) if uid == NOBODY),
        "{refused:?}"
    );
    assert!(matches!(
        handle.ready().await,
        Err(party_core::Error::LeaderOfOtherUser { .. })
    ));
    stranger.kill().unwrap();
    stranger.wait().unwrap();
}

const SQUATTER: &str = env!("CARGO_BIN_EXE_party-squatter");

/// A user of its own for the next test (no account has it), so that its private socket
/// directories in `/tmp` are the test's alone.
const OWNER: u32 = 4242;

/// A child killed when dropped, so that a failing test leaves no process behind.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn remove_private_dirs_of_owner() {
    let prefix = format!("party-{OWNER}-");
    for entry in std::fs::read_dir("/tmp").unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            std::fs::remove_dir_all(entry.path()).unwrap();
        }
    }
}

/// Another user can neither block a directory's socket nor hear a byte of its processes. A
/// data directory too deep for a socket path has its socket in its user's private
/// directory, `/tmp/party-<uid>-N`; another user who takes that name first (a directory
/// open to everyone, with a socket listening at the very path the processes would use) is
/// passed over, and cannot reach the socket they use instead.
#[test]
fn another_user_squatting_the_socket_place_in_tmp_neither_blocks_nor_hears_the_party() {
    use party_tests::Node;
    remove_private_dirs_of_owner();
    let base = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(base.path(), Some(OWNER), Some(OWNER)).unwrap();
    let deep = base.path().join("a-long-directory-name/".repeat(6));

    // Where the socket would go: asked of a first process, then its place given up.
    let mut first = Node::spawn_as(OWNER, NODE, &deep, &[]);
    assert_eq!(first.send("ready"), "ok leader");
    let answer = first.send("socket");
    let place = answer.strip_prefix("ok ").unwrap().to_owned();
    assert!(
        place.starts_with(&format!("/tmp/party-{OWNER}-0/")),
        "{place}"
    );
    first.kill();
    remove_private_dirs_of_owner();

    // The other user takes that very place.
    let mut squatter = Killed(
        Command::new(SQUATTER)
            .args(["listen", &place])
            .uid(NOBODY)
            .gid(NOBODY)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut heard = BufReader::new(squatter.0.stdout.take().unwrap()).lines();
    assert_eq!(heard.next().unwrap().unwrap(), "listening");

    // The owner's processes pass it over, and serve each other as ever.
    let mut leader = Node::spawn_as(OWNER, NODE, &deep, &[]);
    assert_eq!(leader.send("ready"), "ok leader");
    let mut follower = Node::spawn_as(OWNER, NODE, &deep, &[]);
    assert_eq!(follower.send("ready"), "ok follower");
    assert_eq!(follower.send("put k v"), "ok");
    assert_eq!(leader.send("get k"), "ok v");
    let answer = leader.send("socket");
    let used = answer.strip_prefix("ok ").unwrap();
    assert!(
        used.starts_with(&format!("/tmp/party-{OWNER}-1/")),
        "{used}"
    );

    // The other user cannot reach the socket they use.
    let reach = Command::new(SQUATTER)
        .args(["connect", used])
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&reach.stdout),
        "refused PermissionDenied\n"
    );

    // And heard nothing: a connection of the test's own, three bytes, is its first.
    let mut knock = std::os::unix::net::UnixStream::connect(&place).unwrap();
    knock.write_all(b"abc").unwrap();
    drop(knock);
    assert_eq!(heard.next().unwrap().unwrap(), "connection 1 3");
    drop((squatter, leader, follower));
    remove_private_dirs_of_owner();
}
