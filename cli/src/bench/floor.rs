//! The floor of a failover with idle followers on this machine: processes as small as a
//! follower can be (a tokio runtime, as party's followers run on), each connected to a
//! leader that is SIGKILLed, then doing what a follower must do at the least: try a lock
//! file, connect to the next leader, say hello and ask one get, each answered at once. The
//! next leader is already listening: the floor leaves out the election and the opening of
//! the store, which party's figure includes. No follower could be answered sooner here.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use super::{first_line, micros_now, percentile};
use crate::children::{self, Worker};
use crate::failure::Failure;
use crate::out;

/// The worker of the floor: see [`floor`].
pub const FLOOR: &str = "bench-floor";

/// What a party follower sends on a new connection (its hello, then a get) and what its
/// leader answers to each, in bytes.
const HELLO: usize = 35;
const GET: usize = 24;
const ANSWER: usize = 28;

/// `bench-floor serve SOCKET`: answers every read on every connection at once, with a
/// small reply. `bench-floor follow DIR`: connects to DIR/old.sock and prints `ready`; when
/// that connection ends, tries the lock file DIR/floor.lock, connects to DIR/new.sock,
/// sends a hello and a get, each once the one before is answered, and prints `answered
/// MICROS` (the wall-clock microsecond of the last answer); it ends when its input does.
pub async fn floor(args: &[String]) -> Result<ExitCode, Failure> {
    match args {
        [mode, socket] if mode == "serve" => serve(socket.as_ref()).await,
        [mode, dir] if mode == "follow" => {
            let followed = tokio::spawn(follow(dir.into())).await;
            followed.map_err(|e| Failure::from(e.to_string()))?
        }
        _ => Err(Failure::usage(
            "usage: bench-floor serve SOCKET | bench-floor follow DIR",
        )),
    }
}

async fn serve(socket: &Path) -> Result<ExitCode, Failure> {
    let listener = UnixListener::bind(socket).map_err(|e| e.to_string())?;
    out::line("ready")?;
    loop {
        let (mut stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let mut buffer = Vec::with_capacity(4096);
            while let Ok(1..) = stream.read_buf(&mut buffer).await {
                buffer.clear();
                if stream.write_all(&[0; ANSWER]).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn follow(dir: std::path::PathBuf) -> Result<ExitCode, Failure> {
    let io = |e: std::io::Error| e.to_string();
    // Gone with the bench: a thread started now, not one of tokio's when it is answered,
    // where starting it would count.
    std::thread::spawn(|| {
        let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]);
        std::process::exit(0);
    });
    let mut old = UnixStream::connect(dir.join("old.sock"))
        .await
        .map_err(io)?;
    out::line("ready")?;
    let mut buffer = Vec::with_capacity(4096);
    while let Ok(1..) = old.read_buf(&mut buffer).await {}
    drop(old);
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("floor.lock"))
        .map_err(io)?;
    let _ = lock.try_lock();
    drop(lock);
    let mut new = UnixStream::connect(dir.join("new.sock"))
        .await
        .map_err(io)?;
    for request in [HELLO, GET] {
        new.write_all(&vec![0; request]).await.map_err(io)?;
        buffer.clear();
        new.read_buf(&mut buffer).await.map_err(io)?;
    }
    out::line(format_args!("answered {}", micros_now()))?;
    std::future::pending().await
}

/// `followers` floor processes, `kills` times: per kill, the time from the SIGKILL of the
/// leader until every one of them has been answered.
pub(super) fn failover(dir: &Path, followers: usize, kills: usize) -> Result<Value, Failure> {
    let mut recoveries = Vec::new();
    for round in 0..kills {
        let dir = dir.join(round.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let start = |args: &[&Path]| -> Result<Worker, Failure> {
            let mut child = children::spawn(FLOOR, args)?;
            match first_line(&mut child)?.as_str() {
                "ready" => Ok(child),
                said => Err(format!("a floor process said {said:?}").into()),
            }
        };
        let serve = Path::new("serve");
        let mut old = start(&[serve, &dir.join("old.sock")])?;
        let new = start(&[serve, &dir.join("new.sock")])?;
        let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
        let mut waiting = Vec::new();
        for _ in 0..followers {
            let mut follower = start(&[Path::new("follow"), &dir])?;
            follower.forward_lines(&lines_tx, |line| line)?;
            waiting.push(follower);
        }
        let killed_at = micros_now();
        let _ = old.kill();
        let _ = old.wait();
        let mut last = killed_at;
        for _ in 0..followers {
            let line = lines
                .recv_timeout(Duration::from_secs(10))
                .map_err(|_| "floor processes did not answer within 10 s")?;
            let micros = line.strip_prefix("answered ").and_then(|m| m.parse().ok());
            let micros: u64 = micros.ok_or_else(|| format!("a floor process said {line:?}"))?;
            last = last.max(micros);
        }
        recoveries.push(Duration::from_micros(last - killed_at));
        // A worker is killed and reaped when dropped.
        drop((waiting, new));
    }
    recoveries.sort();
    Ok(json!({
        "kills": kills,
        "all_answered_p50_ms": percentile(&recoveries, 0.5) / 1000.0,
        "all_answered_max_ms": percentile(&recoveries, 1.0) / 1000.0,
    }))
}
