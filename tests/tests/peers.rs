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

    let mut stranger = Command::new(NODE)
        .arg(dir.path())
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("this test runs a child as nobody: run it as root (CI does)");
    let mut stdin = stranger.stdin.take().unwrap();
    writeln!(stdin, "ready").unwrap();
    let answer = BufReader::new(stranger.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .find(|line| !line.starts_with("role "))
        .expect("an answer to ready");
    assert_eq!(
        answer,
        format!("err other the leader serves only its own user; this process runs as uid {NOBODY}")
    );
    stranger.kill().unwrap();
    stranger.wait().unwrap();

    let follower = open(dir.path(), Options::default()).await.unwrap();
    assert_eq!(follower.ready().await.unwrap(), Role::Follower);
    follower.put("k", "v").await.unwrap();
    assert_eq!(leader.get("k").await.unwrap(), Some(b"v".to_vec()));
}
