//! Nothing lost at the CLI's edges: listings that round-trip any bytes through `dump` and
//! `load`, values with spaces, a guarded `clear`, strict hex, and `--json` everywhere.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{party, stdout, PARTY};

fn run_with_input(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(PARTY)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn dump_and_load_round_trip_any_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (from, to) = (dir.path().join("from"), dir.path().join("to"));
    let entries: [(&[u8], &[u8]); 7] = [
        (b"a\tb", b"c\nd"),
        (b"back\\slash", b"\\x41 is not A"),
        (b"\xff\x00", b"\t"),
        (b"plain", b""),
        (b"caf\xc3\xa9", b"\r\n\x7f"),
        (b"x", b"a b  c"),
        (b"\\", b"\\\\"),
    ];
    let mut writes = vec![
        "--encoding".to_owned(),
        "hex".into(),
        text(&from).into(),
        "batch".into(),
    ];
    for (key, value) in entries {
        writes.extend(["put".into(), hex(key), hex(value)]);
    }
    let writes: Vec<&str> = writes.iter().map(String::as_str).collect();
    assert!(party(&writes).status.success());

    let dump = party(&[text(&from), "dump"]);
    assert!(dump.status.success());
    assert_eq!(
        dump.stdout.iter().filter(|b| **b == b'\n').count(),
        entries.len(),
        "one line an entry: {}",
        stdout(&dump)
    );
    assert_eq!(
        dump.stdout,
        party(&[text(&from), "scan"]).stdout,
        "dump is scan's listing"
    );
    let loaded = run_with_input(&["--json", text(&to), "load"], &dump.stdout);
    assert_eq!(stdout(&loaded).trim(), r#"{"loaded":7,"ok":true}"#);
    assert_eq!(party(&[text(&to), "dump"]).stdout, dump.stdout);
    for (key, value) in entries {
        let got = party(&["--encoding", "hex", text(&to), "get", &hex(key)]);
        assert_eq!(stdout(&got).trim_end(), hex(value), "{key:?}");
    }

    let broken = run_with_input(&[text(&to), "load"], b"k1\tv1\nno tab here\nk3\tv3\n");
    assert_eq!(broken.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(stderr.contains("line 2"), "{stderr}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn batch_lines_are_quoted_like_a_shell_so_values_may_hold_spaces() {
    let dir = tempfile::tempdir().unwrap();
    let dir = text(dir.path());
    let batch = run_with_input(
        &[dir, "batch"],
        b"put \"a b\" \"c d  e\"\nput 'it''s' 'x'\n\ndel nothing put k v\n",
    );
    assert!(
        batch.status.success(),
        "{}",
        String::from_utf8_lossy(&batch.stderr)
    );
    assert_eq!(stdout(&party(&[dir, "get", "a b"])), "c d  e\n");
    assert_eq!(stdout(&party(&[dir, "get", "its"])), "x\n");
    assert_eq!(stdout(&party(&[dir, "get", "k"])), "v\n");
    let unbalanced = run_with_input(&[dir, "batch"], b"put a 1\nput \"b 2\n");
    assert_eq!(unbalanced.status.code(), Some(2));
    assert_eq!(
        party(&[dir, "get", "a"]).status.code(),
        Some(1),
        "a batch is all or nothing"
    );
}

#[test]
fn clear_without_a_range_needs_all_and_hex_is_strict() {
    let dir = tempfile::tempdir().unwrap();
    let dir = text(dir.path());
    assert!(party(&[dir, "batch", "put", "a", "1", "put", "b", "2"])
        .status
        .success());
    let refused = party(&[dir, "clear"]);
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(
        stdout(&party(&[dir, "scan", "--keys-only"])),
        "a\nb\n",
        "nothing deleted"
    );
    assert_eq!(
        party(&[dir, "clear", "--all", "--lt", "b"]).status.code(),
        Some(2)
    );
    assert!(party(&[dir, "clear", "--gte", "b"]).status.success());
    assert_eq!(stdout(&party(&[dir, "scan", "--keys-only"])), "a\n");
    assert!(party(&[dir, "clear", "--all"]).status.success());
    assert_eq!(stdout(&party(&[dir, "scan"])), "");

    for not_hex in ["+f+f", "-1", "0x00", "abc"] {
        let output = party(&["--encoding", "hex", dir, "put", not_hex, "00"]);
        assert_eq!(output.status.code(), Some(2), "{not_hex}");
    }
    assert_eq!(stdout(&party(&[dir, "scan"])), "", "nothing written");
}

/// Every one-shot command answers one JSON object with `--json`, failures included.
#[test]
fn json_answers_every_one_shot_command() {
    let dir = tempfile::tempdir().unwrap();
    let dir = text(dir.path());
    let json = |args: &[&str]| -> (Option<i32>, serde_json::Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let output = party(&all);
        let answer = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not one JSON object ({e}): {}", stdout(&output)));
        (output.status.code(), answer)
    };
    let ok = serde_json::json!({"ok": true});
    assert_eq!(json(&[dir, "put", "a", "1"]), (Some(0), ok.clone()));
    assert_eq!(
        json(&[dir, "batch", "put", "b", "2", "put", "c", "3"]),
        (Some(0), ok.clone())
    );
    assert_eq!(json(&[dir, "get", "a"]).1["value"], "1");
    assert_eq!(
        json(&[dir, "get", "zz"]),
        (Some(1), serde_json::json!({"ok": true, "value": null}))
    );
    assert_eq!(json(&[dir, "del", "a"]), (Some(0), ok.clone()));
    assert_eq!(json(&[dir, "clear", "--gte", "c"]), (Some(0), ok.clone()));
    assert_eq!(
        json(&[dir, "scan"]).1["entries"],
        serde_json::json!([["b", "2"]])
    );
    assert_eq!(
        json(&[dir, "dump"]).1["entries"],
        serde_json::json!([["b", "2"]])
    );
    assert_eq!(json(&[dir, "status"]).1["role"], "leader");
    let (code, failure) = json(&["--encoding", "hex", dir, "get", "zz"]);
    assert_eq!(code, Some(2));
    assert_eq!(failure["ok"], false);
    assert_eq!(failure["error"]["kind"], "usage");
    // The option may also follow DIR or the command.
    let after = party(&[dir, "get", "b", "--json"]);
    assert_eq!(stdout(&after).trim(), r#"{"ok":true,"value":"2"}"#);
}
