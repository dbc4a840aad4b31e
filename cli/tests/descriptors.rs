//! A leader out of file descriptors: rather than spin on an accept that fails at once, it
//! waits before it tries again, says so at most once a minute, and serves again once
//! descriptors are free.

#![cfg(target_os = "linux")]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use common::PARTY;
use rustix::process::{prlimit, Pid, Resource, Rlimit};

#[test]
fn a_leader_out_of_descriptors_waits_says_so_once_and_serves_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = Command::new(PARTY)
        .arg(dir.path())
        .args(["shell", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = leader.stdin.take().unwrap();
    let mut answers = BufReader::new(leader.stdout.take().unwrap()).lines();
    let mut warnings = BufReader::new(leader.stderr.take().unwrap()).lines();
    writeln!(stdin, "put a 1").unwrap();
    assert_eq!(answers.next().unwrap().unwrap(), r#"{"ok":true}"#);

    // A few descriptors more than it holds: connections past them cannot be accepted.
    let pid = Pid::from_raw(leader.id() as i32).unwrap();
    let open = std::fs::read_dir(format!("/proc/{}/fd", leader.id()))
        .unwrap()
        .count() as u64;
    let limit = Rlimit {
        current: Some(open + 4),
        maximum: Some(open + 4),
    };
    prlimit(Some(pid), Resource::Nofile, limit).unwrap();
    let ran_out = std::time::Instant::now();
    let socket = dir.path().join("party.sock");
    let mut held: Vec<UnixStream> = (0..12)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    let warning = warnings.next().unwrap().unwrap();
    assert!(warning.contains("accept failed"), "{warning}");

    // Descriptors freed: a follower is served again. (The leader runs out again on the way,
    // as it accepts the closed connections still queued: that says nothing more.)
    held.clear();
    let got = Command::new(PARTY)
        .arg(dir.path())
        .args(["get", "a"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "1", "{got:?}");

    drop(stdin);
    leader.kill().unwrap();
    leader.wait().unwrap();
    let more: Vec<String> = warnings.map_while(Result::ok).collect();
    let again = more
        .iter()
        .filter(|line| line.contains("accept failed"))
        .count();
    // A run longer than the warnings' interval may say it once more.
    let allowed = usize::from(ran_out.elapsed() >= std::time::Duration::from_secs(60));
    assert!(
        again <= allowed,
        "at most one warning a minute, not one per failed accept or per time it ran out: {} \
         more ({:?}…)",
        again,
        more.first()
    );
}
