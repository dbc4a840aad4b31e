//! `party-sim --replay DIR` on a real recording: two handles (a leader and a follower)
//! record into DIR while they write and read, and the command replays them, says every
//! output matched and finds nothing wrong; a directory without recordings is an error.

use std::process::Command;

use party_core::{open, Options, Recording, Role};

fn party_sim(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_party-sim"))
        .args(args)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success(), printed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_replays_by_the_command() {
    let (dir, recordings) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let options = || Options::default().record(Some(Recording::new(recordings.path())));
    let leader = open(dir.path(), options()).await.unwrap();
    assert_eq!(leader.ready().await.unwrap(), Role::Leader);
    let follower = open(dir.path(), options()).await.unwrap();
    assert_eq!(follower.ready().await.unwrap(), Role::Follower);
    leader.put("a", "1").await.unwrap();
    follower.put("b", "2").await.unwrap();
    assert_eq!(follower.get("a").await.unwrap(), Some(b"1".to_vec()));
    follower.close().await.unwrap();
    leader.close().await.unwrap();

    let dir_text = recordings.path().to_str().unwrap();
    let (passed, printed) = party_sim(&["--replay", dir_text]);
    assert!(passed, "{printed}");
    assert!(
        printed.contains("2 processes") && printed.contains("3 operations"),
        "{printed}"
    );
    assert!(
        printed.contains("every output matched the recording"),
        "{printed}"
    );
    assert!(printed.contains(" -> Read(Some([49]))"), "{printed}");
    assert!(!printed.contains("VIOLATION"), "{printed}");
}

#[test]
fn a_directory_without_recordings_is_an_error() {
    let empty = tempfile::tempdir().unwrap();
    let (passed, printed) = party_sim(&["--replay", empty.path().to_str().unwrap()]);
    assert!(!passed);
    assert!(printed.contains("no recording"), "{printed}");
}
