//! One-shot commands: `party DIR put` run as a new process each time, as a script would.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::percentile;
use crate::failure::Failure;
use crate::tool_store::ToolStore;

/// `party DIR put` as a shell script runs it: a new process that leads, writes, and exits;
/// against the same program asked only for its version. Then ten at once on one directory.
pub(super) fn one_shot_commands(
    base: &Path,
    store: &ToolStore,
    runs: usize,
) -> Result<Value, Failure> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let dir = base.join("one-shot");
    let command = |args: &[&str]| {
        let mut command = std::process::Command::new(&exe);
        command
            .args(store.command_options(&dir))
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        command
    };
    let dir_text = dir.to_str().ok_or("path")?;
    let timed = |args: &[&str]| -> Result<Duration, Failure> {
        let started = Instant::now();
        let status = command(args)
            .status()
            .map_err(|e| format!("cannot run {args:?}: {e}"))?;
        if !status.success() {
            return Err(format!("{args:?} failed: {status}").into());
        }
        Ok(started.elapsed())
    };
    timed(&[dir_text, "put", "created", "first"])?;
    let mut starts = Vec::new();
    let mut puts = Vec::new();
    for run in 0..runs {
        starts.push(timed(&["--version"])?);
        puts.push(timed(&[dir_text, "put", "k", &run.to_string()])?);
    }
    let mut together = Vec::new();
    for _ in 0..runs.min(5) {
        let started = Instant::now();
        let children = (0..10)
            .map(|n| command(&[dir_text, "put", &format!("k{n}"), "v"]).spawn())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cannot start a one-shot put: {e}"))?;
        for mut child in children {
            let status = child.wait().map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!("a concurrent one-shot put failed: {status}").into());
            }
        }
        together.push(started.elapsed());
    }
    starts.sort();
    puts.sort();
    together.sort();
    Ok(json!({
        "process_start_p50_ms": percentile(&starts, 0.5) / 1000.0,
        "put_as_leader_p50_ms": percentile(&puts, 0.5) / 1000.0,
        "ten_concurrent_puts_p50_ms": percentile(&together, 0.5) / 1000.0,
    }))
}
