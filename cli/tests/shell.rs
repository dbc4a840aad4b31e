//! `party DIR shell` through real processes: every line answered, quoting, batch, help,
//! and at a terminal Ctrl-C, history and completion.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Shell, PARTY};
use serde_json::json;

/// No line is ever dropped: one that cannot be read as a command (bad quoting, not UTF-8,
/// unknown) gets an error and the lines after it still run.
#[test]
fn a_json_shell_answers_every_line_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut shell = Shell::start(dir.path().to_str().unwrap());
    assert_eq!(shell.send(r#"put "a b" 'c d'"#), json!({"ok": true}));
    assert_eq!(shell.send(r#"get "a b""#)["value"], "c d");
    // `--help` asks for help, as in the one-shot form; after `--` it is a key.
    let help = shell.send("put --help x");
    assert!(
        help["help"].as_str().unwrap().contains("put <KEY> <VALUE>"),
        "{help}"
    );
    assert_eq!(
        shell.send("get -- --help"),
        json!({"ok": true, "value": null})
    );
    // A line that is not UTF-8 is bytes like any other.
    assert_eq!(shell.send_bytes(b"put k\xff v\xfe"), json!({"ok": true}));
    assert_eq!(
        shell.send_bytes(b"get k\xff")["value"],
        json!({"hex": "76fe"})
    );
    // A first word that is not UTF-8 names no command, and is answered as such: sent with
    // the line after it, so that a line left unanswered shows as that line's answer.
    let stdin = shell.child.stdin.as_mut().unwrap();
    stdin.write_all(b"g\xffet k\nget \"a b\"\n").unwrap();
    stdin.flush().unwrap();
    let answer = shell.answer();
    assert_eq!(answer["error"]["kind"], "usage", "{answer}");
    assert_eq!(shell.answer()["value"], "c d");
    for bad in [
        "put \"unclosed",
        "frobnicate",
        "get",
        "batch",
        "batch put a",
    ] {
        let answer = shell.send(bad);
        assert_eq!(answer["ok"], false, "{bad}: {answer}");
        assert_eq!(answer["error"]["kind"], "usage", "{bad}: {answer}");
    }
    assert_eq!(
        shell.send(r#"batch put x "1 2" del "a b" put -y -3"#),
        json!({"ok": true})
    );
    let help = shell.send("help");
    assert_eq!(help["ok"], true);
    assert!(help["help"].as_str().unwrap().contains("batch"), "{help}");
    assert_eq!(
        shell.send("scan"),
        json!({"ok": true, "entries": [["-y", "-3"], [{"hex": "6bff"}, {"hex": "76fe"}], ["x", "1 2"]]})
    );
    let stdin = shell.child.stdin.take().unwrap();
    drop(stdin);
    assert!(shell.child.wait().unwrap().success());
}

/// Runs `party DIR shell` at a terminal (`script` gives it one) and types each group of
/// `keys` at a fresh prompt; gives what the terminal showed.
fn at_a_terminal(dir: &std::path::Path, history: &std::path::Path, keys: &[&[u8]]) -> String {
    let command = format!("{PARTY} {} shell", dir.display());
    let mut script = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env("PARTY_HISTORY", history)
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux");
    let mut stdin = script.stdin.take().unwrap();
    let mut output = script.stdout.take().unwrap();
    let (chunks, shown) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n @ 1..) = std::io::Read::read(&mut output, &mut buffer) {
            if chunks.send(buffer[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let mut screen = String::new();
    for (typed, group) in keys.iter().enumerate() {
        // Keys typed while a command runs would meet the terminal in its ordinary mode,
        // where Ctrl-C is a signal: type only at a prompt.
        while screen.matches("party> ").count() <= typed {
            let chunk = shown.recv().unwrap_or_else(|_| {
                panic!("no prompt for {:?}; the terminal showed: {screen}", group)
            });
            screen.push_str(&String::from_utf8_lossy(&chunk));
        }
        stdin.write_all(group).unwrap();
        stdin.flush().unwrap();
    }
    drop(stdin);
    assert!(script.wait().unwrap().success(), "{screen}");
    while let Ok(chunk) = shown.recv() {
        screen.push_str(&String::from_utf8_lossy(&chunk));
    }
    screen
}

#[test]
fn at_a_terminal_ctrl_c_drops_the_line_and_history_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    let data = dir.path().join("data");
    let shown = at_a_terminal(
        &data,
        &history,
        &[
            b"put kept 1\r",
            b"put dropped 2\x03",
            b"sta\t\r",
            b"get dropped\r",
            b"\x04",
        ],
    );
    assert!(
        shown.contains("role: leader"),
        "completion gave status: {shown}"
    );
    assert!(
        shown.contains("(not found)"),
        "Ctrl-C dropped the put: {shown}"
    );
    let kept = std::fs::read_to_string(&history).unwrap();
    assert!(kept.contains("put kept 1"), "{kept}");
    assert!(!kept.contains("dropped 2"), "{kept}");
    // A new session starts with that history: the up arrow brings the last line back.
    let again = at_a_terminal(&data, &history, &[b"\x1b[A\r", b"\x04"]);
    assert!(again.contains("(not found)"), "{again}");
}

/// SIGTERM to a shell that leads: it hands over and exits 143 (it handled the signal);
/// the follower's writes, sent before, during and after, all succeed, also without
/// retries: a closing leader answers what it was sent before it lets its followers go.
#[test]
fn sigterm_to_a_leading_shell_hands_over_without_failing_an_operation() {
    for retry in [&[][..], &["--no-retry"]] {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().to_str().unwrap();
        let mut leader = Shell::start(dir);
        assert_eq!(leader.send("status")["role"], "leader");
        let mut args = vec![dir, "shell", "--json"];
        args.extend_from_slice(retry);
        let mut follower = Shell::start_with(&args);
        assert_eq!(follower.send("status")["role"], "follower");

        let writes = 300;
        let stdin = follower.child.stdin.as_mut().unwrap();
        for n in 0..writes {
            writeln!(stdin, "put k{n:04} v{n}").unwrap();
        }
        stdin.flush().unwrap();
        assert_eq!(follower.answer(), json!({"ok": true}));
        let terminated = Command::new("kill")
            .args(["-TERM", &leader.child.id().to_string()])
            .status()
            .unwrap();
        assert!(terminated.success());
        for n in 1..writes {
            assert_eq!(
                follower.answer(),
                json!({"ok": true}),
                "put k{n:04} {retry:?}"
            );
        }
        let status = leader.child.wait().unwrap();
        assert_eq!(status.code(), Some(143), "the leader handled SIGTERM");
        let status = follower.send("status");
        assert_eq!(status["role"], "leader");
        assert_eq!(status["last_takeover"]["cause"], "hand_over", "{status}");
        assert_eq!(
            (status["term"].as_u64(), status["failovers"].as_u64()),
            (Some(2), Some(1))
        );
        let scan = follower.send("scan --keys-only");
        assert_eq!(scan["entries"].as_array().map(Vec::len), Some(writes));
    }
}

/// The text shell marks what a refused `cas` answers: the value the key holds, after
/// `(not swapped) ` (so that it does not read as a `get`'s answer), or
/// `(not swapped: absent)`.
#[test]
fn a_text_shell_marks_a_refused_cas() {
    let dir = tempfile::tempdir().unwrap();
    let mut shell = Command::new(PARTY)
        .args([dir.path().to_str().unwrap(), "shell"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    shell
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"put k held\ncas k --old other --new new\ncas absent --old other --new new\nget k\n",
        )
        .unwrap();
    let output = shell.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "ok\n(not swapped) held\n(not swapped: absent)\nheld\n"
    );
}

/// level-party's own election test (its test/election.js), replayed through shells: six
/// handles on one directory with JSON values; while any is open, each puts its key and the
/// next one round reads it back, then one closes, here always the leader, by `exit` (a
/// hand-over) and by SIGKILL (a crash) in turns, until none is left. Each close makes
/// one new leader, whom the next round's reads already went through.
#[test]
fn level_partys_election_test_six_shells_whose_leaders_close_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_str().unwrap();
    let json_shell = ["--encoding", "json", dir, "shell", "--json"];
    let mut shells: Vec<(&str, Shell)> = ["a", "b", "c", "e", "f", "g"]
        .into_iter()
        .map(|key| (key, Shell::start_with(&json_shell)))
        .collect();
    let mut reads = 0;
    for round in 0_u64.. {
        let open = shells.len();
        for writer in 0..open {
            let key = shells[writer].0;
            let value = json!([round, writer]);
            let put = shells[writer].1.send(&format!("put {key} {value}"));
            assert_eq!(put, json!({"ok": true}), "round {round}");
            let get = shells[(writer + 1) % open].1.send(&format!("get {key}"));
            assert_eq!(get, json!({"ok": true, "value": value}), "round {round}");
            reads += 1;
        }
        let statuses: Vec<_> = shells.iter_mut().map(|(_, s)| s.send("status")).collect();
        let leaders: Vec<_> = (0..open)
            .filter(|&i| statuses[i]["role"] == "leader")
            .collect();
        assert_eq!(leaders.len(), 1, "round {round}: {statuses:?}");
        assert_eq!(
            statuses[leaders[0]]["term"],
            round + 1,
            "round {round}: one new leader a close"
        );
        let (_, mut leader) = shells.remove(leaders[0]);
        if round % 2 == 0 {
            let mut stdin = leader.child.stdin.take().unwrap();
            stdin.write_all(b"exit\n").unwrap();
        } else {
            leader.child.kill().unwrap();
        }
        let status = leader.child.wait().unwrap();
        assert_eq!(status.success(), round % 2 == 0, "round {round}: {status}");
        if shells.is_empty() {
            break;
        }
    }
    assert_eq!(reads, 6 * 7 / 2, "as many reads as election.js plans");
}
