//! A follower that opens an iterator over a big store and then stops reading must not
//! make the leader buffer the store: the leader sends no more than the iterator's credits
//! and its memory stays flat while the follower stalls; nor the follower, whose credits
//! count bytes too. Real processes; memory is the resident size from /proc.

#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use party_tests::Node;

const NODE: &str = env!("CARGO_BIN_EXE_party-node");

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in /proc status")
}

/// CPU time the process has used, in clock ticks: utime + stime of /proc/<pid>/stat.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name (field 2) is in parentheses and may hold spaces: count after it,
    // from field 3; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Waits until the process has gone quiet: under a tenth of a core (clock ticks are 10 ms
/// on Linux) in each of two windows of 200 ms in a row.
fn wait_until_quiet(pid: u32) {
    const WINDOW: Duration = Duration::from_millis(200);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet_windows = 0;
    let mut ticks = cpu_ticks(pid);
    while quiet_windows < 2 {
        assert!(Instant::now() < deadline, "the process never went quiet");
        std::thread::sleep(WINDOW);
        let now = cpu_ticks(pid);
        quiet_windows = if now - ticks <= 2 {
            quiet_windows + 1
        } else {
            0
        };
        ticks = now;
    }
}

#[test]
fn leader_memory_stays_flat_while_a_follower_stalls_mid_scan() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = Node::spawn(NODE, dir.path(), &[]);
    assert_eq!(leader.send("ready"), "ok leader");
    let mut writer = Node::spawn(NODE, dir.path(), &[]);
    assert_eq!(writer.send("ready"), "ok follower");
    // 48 MiB of entries: far more than a window of them.
    assert_eq!(writer.send("fill-big 48000 1024"), "ok 48000");
    // The writes are all acknowledged, but the leader still has work they left: the
    // checkpoint once writes pause, the store's flushes and compactions. Memory that work
    // takes must not count as the stall's, so the baseline is taken once the leader is idle.
    wait_until_quiet(leader.pid());
    let before = resident_kib(leader.pid());

    let mut staller = Node::spawn(NODE, dir.path(), &[]);
    assert_eq!(staller.send("ready"), "ok follower");
    assert_eq!(staller.send("open-iter"), "ok");
    assert_eq!(staller.send("next-chunk 1"), "ok 1");
    // From here the staller reads nothing more.
    let mut highest = before;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        highest = highest.max(resident_kib(leader.pid()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let grown_mib = (highest - before.min(highest)) / 1024;
    assert!(
        grown_mib < 16,
        "the leader grew by {grown_mib} MiB while a follower stalled mid-scan of 48 MiB"
    );
    // And it serves everyone else meanwhile.
    assert_eq!(writer.send("put after stall"), "ok");
    assert_eq!(leader.send("get after"), "ok stall");
    // The stalled iterator resumes where it stopped.
    let resumed = staller.send("next-chunk 1000000");
    assert!(resumed.starts_with("ok ") && resumed != "ok 0", "{resumed}");
}

/// Credits count bytes as well as entries: a follower that stalls mid-scan of big values
/// holds about its byte window (4 MiB, and one entry per pull the leader has out), not its
/// window of 4096 entries, which would be the whole 48 MiB here.
#[test]
fn a_follower_stalled_mid_scan_of_big_values_holds_about_its_byte_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = Node::spawn(NODE, dir.path(), &[]);
    assert_eq!(leader.send("ready"), "ok leader");
    // 48 values of 1 MiB.
    assert_eq!(leader.send("fill-big 48 1048576"), "ok 48");
    let mut staller = Node::spawn(NODE, dir.path(), &[]);
    assert_eq!(staller.send("ready"), "ok follower");
    wait_until_quiet(staller.pid());
    let before = resident_kib(staller.pid());
    assert_eq!(staller.send("open-iter"), "ok");
    assert_eq!(staller.send("next-chunk 1"), "ok 1");
    // From here the staller reads nothing more: it goes quiet once the leader has sent all
    // its credits allow.
    wait_until_quiet(staller.pid());
    wait_until_quiet(leader.pid());
    let grown_mib = resident_kib(staller.pid()).saturating_sub(before) / 1024;
    assert!(
        grown_mib < 20,
        "the follower grew by {grown_mib} MiB, stalled mid-scan of 48 MiB"
    );
    let resumed = staller.send("next-chunk 1000000");
    assert!(resumed.starts_with("ok ") && resumed != "ok 0", "{resumed}");
}
