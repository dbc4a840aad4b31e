//! `party demo`: level-party's README scenario, live, with a leader killed mid-run.
//!
//! Four writer processes and one reader process of this same binary open one directory.
//! Each writer commits `w<N>/<seq>` and `w<N>/last` together every 20 ms and reports each
//! acknowledged write; the reader prints the writers' `last` values every 100 ms. After a
//! second the demo kills the leader with SIGKILL, shows who took over and how long writes
//! paused, lets the survivors go on, stops them, and checks with a fresh handle that every
//! acknowledged write is there. Exit code 0 only if none is missing.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

use party_core::BatchOp;

use crate::children::{self, Worker};
use crate::failure::Failure;
use crate::out;
use crate::tool_store::ToolStore;

const WRITERS: usize = 4;
const WRITE_EVERY: Duration = Duration::from_millis(20);
const READ_EVERY: Duration = Duration::from_millis(100);
const BEFORE_KILL: Duration = Duration::from_millis(1200);
/// How long the writers may take to elect one of them (starting processes and opening the
/// store; etcd's client is the slowest).
const FIRST_LEADER_WITHIN: Duration = Duration::from_secs(10);
const AFTER_KILL: Duration = Duration::from_millis(1200);

/// The worker that writes.
pub const WRITER: &str = "demo-writer";
/// The worker that reads.
pub const READER: &str = "demo-reader";

/// `party demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Run in this data directory (kept afterwards) instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// The writer `DIR ID BACKEND`: writes until killed, one line per acknowledged write:
/// `acked ID SEQ ROLE`.
pub async fn writer(args: &[String]) -> Result<ExitCode, Failure> {
    let [dir, id, backend] = args else {
        return Err(Failure::usage("usage: demo-writer DIR ID BACKEND"));
    };
    let db = crate::open_child(dir, backend).await?;
    for seq in 1u64.. {
        let value = seq.to_string().into_bytes();
        let ops = vec![
            BatchOp::Put {
                key: format!("w{id}/{seq:06}").into_bytes(),
                value: value.clone(),
            },
            BatchOp::Put {
                key: format!("w{id}/last").into_bytes(),
                value,
            },
        ];
        db.batch(ops).await.map_err(|e| e.to_string())?;
        out::line(format_args!("acked {id} {seq} {}", db.role().name()))?;
        tokio::time::sleep(WRITE_EVERY).await;
    }
    Ok(ExitCode::SUCCESS)
}

/// The reader `DIR BACKEND`: prints the writers' last values, like level-party's get.js.
pub async fn reader(args: &[String]) -> Result<ExitCode, Failure> {
    let [dir, backend] = args else {
        return Err(Failure::usage("usage: demo-reader DIR BACKEND"));
    };
    let db = crate::open_child(dir, backend).await?;
    let keys: Vec<String> = (0..WRITERS).map(|id| format!("w{id}/last")).collect();
    loop {
        let values = db.get_many(&keys).await.map_err(|e| e.to_string())?;
        let shown: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(id, v)| {
                format!(
                    "w{id}={}",
                    v.as_deref()
                        .map_or("-".into(), |v| String::from_utf8_lossy(v).into_owned())
                )
            })
            .collect();
        out::line(format_args!("read {}", shown.join(" ")))?;
        tokio::time::sleep(READ_EVERY).await;
    }
}

/// One line from a child, when it arrived.
struct Line {
    from: usize,
    at: Instant,
    text: String,
}

fn spawn(name: &str, args: &[&str], from: usize, lines: &Sender<Line>) -> Result<Worker, Failure> {
    let mut worker = children::spawn(name, args)?;
    worker.forward_lines(lines, move |text| Line {
        from,
        at: Instant::now(),
        text,
    })?;
    Ok(worker)
}

#[derive(Default)]
struct Writer {
    pid: u32,
    acked: Vec<u64>,
    role: String,
    killed: bool,
    /// Has acknowledged a write since the leader was killed.
    resumed: bool,
}

/// Reads the children's lines until `until`, or until `enough` says the writers have
/// told enough: records each writer's acknowledged writes and role, prints the reader's
/// lines, and — after a kill at `killed_at` — each writer's pause until its first
/// acknowledged write.
fn take_lines(
    lines: &Receiver<Line>,
    writers: &mut [Writer],
    until: Instant,
    killed_at: Option<Instant>,
    pauses: &mut Vec<Duration>,
    enough: impl Fn(&[Writer]) -> bool,
) -> Result<(), Failure> {
    while let Ok(line) = lines.recv_timeout(until.saturating_duration_since(Instant::now())) {
        let words: Vec<&str> = line.text.split_whitespace().collect();
        match words.as_slice() {
            ["acked", _, seq, role] if line.from < WRITERS => {
                let writer = &mut writers[line.from];
                writer.role = (*role).to_owned();
                if let Ok(seq) = seq.parse() {
                    writer.acked.push(seq);
                }
                if let Some(killed_at) = killed_at.filter(|at| line.at > *at && !writer.resumed) {
                    writer.resumed = true;
                    pauses.push(line.at - killed_at);
                }
            }
            ["read", ..] => out::line(format_args!("  {}", line.text))?,
            _ => {}
        }
        if Instant::now() >= until || enough(writers) {
            break;
        }
    }
    Ok(())
}

/// Whether a writer leads.
fn a_writer_leads(writers: &[Writer]) -> bool {
    writers.iter().any(|writer| writer.role == "leader")
}

pub async fn orchestrate(store: &ToolStore, args: DemoArgs) -> Result<ExitCode, Failure> {
    let word = store.word();
    children::clean_up_when_interrupted()?;
    let temporary;
    let dir: PathBuf = match args.dir {
        Some(dir) => dir,
        None => {
            temporary = children::TempDir::new("party-demo-")?;
            temporary.path().to_owned()
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let dir_text = dir.to_str().ok_or("the directory is not UTF-8")?.to_owned();
    out::line(format_args!(
        "party demo in {} on {}: {WRITERS} writers, 1 reader",
        dir.display(),
        store.kind().name()
    ))?;

    let (sender, lines) = channel();
    let mut children = Vec::new();
    let mut writers: Vec<Writer> = (0..WRITERS).map(|_| Writer::default()).collect();
    for (id, writer) in writers.iter_mut().enumerate() {
        let child = spawn(WRITER, &[&dir_text, &id.to_string(), &word], id, &sender)?;
        writer.pid = child.id();
        children.push(child);
    }
    let mut pauses = Vec::new();
    // The reader starts once a writer leads, as in level-party's scenario: started with the
    // writers, on a busy machine it sometimes took the lock first.
    take_lines(
        &lines,
        &mut writers,
        Instant::now() + FIRST_LEADER_WITHIN,
        None,
        &mut pauses,
        a_writer_leads,
    )?;
    let Some(leader) = writers.iter().position(|w| w.role == "leader") else {
        return Err(format!("no writer became leader within {FIRST_LEADER_WITHIN:?}").into());
    };
    children.push(spawn(READER, &[&dir_text, &word], WRITERS, &sender)?);
    take_lines(
        &lines,
        &mut writers,
        Instant::now() + BEFORE_KILL,
        None,
        &mut pauses,
        |_| false,
    )?;
    let killed_at = Instant::now();
    children[leader]
        .kill()
        .map_err(|e| format!("cannot kill the leader: {e}"))?;
    let _ = children[leader].wait();
    writers[leader].killed = true;
    out::line(format_args!(
        "  >>> SIGKILL to the leader: writer {leader} (pid {})",
        writers[leader].pid
    ))?;

    take_lines(
        &lines,
        &mut writers,
        Instant::now() + AFTER_KILL,
        Some(killed_at),
        &mut pauses,
        |_| false,
    )?;
    drop(children);
    let took_over = writers.iter().position(|w| !w.killed && w.role == "leader");
    drop(lines);

    // Every acknowledged write must be in the store, as a fresh handle sees it.
    let db = crate::open_on(&dir, store).await?;
    let mut acked = 0;
    let mut missing = Vec::new();
    for (id, writer) in writers.iter().enumerate() {
        for seq in &writer.acked {
            acked += 1;
            if db
                .get(format!("w{id}/{seq:06}"))
                .await
                .map_err(|e| e.to_string())?
                .is_none()
            {
                missing.push(format!("w{id}/{seq:06}"));
            }
        }
    }
    db.close().await.map_err(|e| e.to_string())?;
    pauses.sort();
    out::line("")?;
    match took_over {
        Some(new) => out::line(format_args!(
            "leader killed: writer {leader}; writer {new} (pid {}) took over",
            writers[new].pid
        ))?,
        None => out::line(format_args!(
            "leader killed: writer {leader}; the reader took over"
        ))?,
    }
    if let (Some(first), Some(last)) = (pauses.first(), pauses.last()) {
        out::line(format_args!(
            "writes paused after the kill: {:.1} ms to {:.1} ms (writers write every {} ms)",
            first.as_secs_f64() * 1e3,
            last.as_secs_f64() * 1e3,
            WRITE_EVERY.as_millis()
        ))?;
    }
    out::line(format_args!(
        "acknowledged writes: {acked}; missing after the failover: {}",
        missing.len()
    ))?;
    if missing.is_empty() && acked > 0 {
        out::line("OK: nothing acknowledged was lost")?;
        Ok(ExitCode::SUCCESS)
    } else {
        out::line(format_args!(
            "FAILED: missing {:?}",
            &missing[..missing.len().min(10)]
        ))?;
        Ok(ExitCode::from(3))
    }
}
