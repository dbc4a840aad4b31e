//! The operations the `party` command runs, one shot or line by line in `shell`, and how
//! their outcomes print: as text, or as one JSON object per line.

use std::io::BufRead;
use std::ops::Bound;

use clap::{Args, Subcommand};
use party_core::{BatchOp, Db, Error, IterOptions, KeyRange, Role, Status};
use serde_json::{json, Value};

use crate::encoding::Encoding;

/// An operation on the store.
#[derive(Debug, Subcommand)]
pub enum Op {
    /// Print the value of KEY (exit code 1 when there is none).
    Get {
        #[arg(allow_hyphen_values = true)]
        key: String,
    },
    /// Set KEY to VALUE.
    Put {
        #[arg(allow_hyphen_values = true)]
        key: String,
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Delete KEY.
    Del {
        #[arg(allow_hyphen_values = true)]
        key: String,
    },
    /// Apply the operations on stdin atomically, one per line: `put KEY VALUE` or `del KEY`.
    Batch,
    /// Delete every key in a range (all keys without range options).
    Clear(#[command(flatten)] RangeArgs),
    /// List entries in key order.
    Scan(ScanArgs),
    /// This handle's role, the leader, the backend, the socket, the followers.
    Status,
}

#[derive(Debug, Args)]
pub struct RangeArgs {
    /// Keys greater than K.
    #[arg(long, value_name = "K")]
    gt: Option<String>,
    /// Keys greater than or equal to K.
    #[arg(long, value_name = "K")]
    gte: Option<String>,
    /// Keys less than K.
    #[arg(long, value_name = "K")]
    lt: Option<String>,
    /// Keys less than or equal to K.
    #[arg(long, value_name = "K")]
    lte: Option<String>,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    #[command(flatten)]
    range: RangeArgs,
    /// Last key first.
    #[arg(long)]
    reverse: bool,
    /// At most N entries.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Print keys only.
    #[arg(long, conflicts_with = "values_only")]
    keys_only: bool,
    /// Print values only.
    #[arg(long)]
    values_only: bool,
}

impl ScanArgs {
    pub fn options(&self, encoding: Encoding) -> Result<IterOptions, Failure> {
        Ok(IterOptions::default()
            .range(self.range.range(encoding)?)
            .reverse(self.reverse)
            .limit(self.limit)
            .keys(!self.values_only)
            .values(!self.keys_only))
    }
}

/// Streams a scan to stdout chunk by chunk, so a large one needs no memory for the whole
/// result; on a terminal, a progress count goes to stderr.
pub async fn stream_scan(db: &Db, encoding: Encoding, scan: &ScanArgs) -> Result<(), Failure> {
    use std::io::{IsTerminal, Write};
    let mut iter = db.iter(scan.options(encoding)?).await?;
    let progress = std::io::stderr().is_terminal();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut count = 0u64;
    while let Some(chunk) = iter.next_chunk(1024).await? {
        count += chunk.len() as u64;
        let entries = chunk.into_iter().map(|e| (e.key, e.value)).collect();
        let outcome = Outcome::Entries {
            entries,
            keys: !scan.values_only,
            values: !scan.keys_only,
        };
        for line in text(&outcome, encoding) {
            if writeln!(out, "{line}").is_err() {
                return Ok(()); // the reader went away (`| head`)
            }
        }
        if progress && count % 10_240 < 1024 {
            let _ = out.flush();
            eprint!("\r{count} entries");
        }
    }
    let _ = out.flush();
    if progress && count >= 10_240 {
        eprintln!("\r{count} entries");
    }
    Ok(())
}

/// How an operation ended.
#[derive(Debug)]
pub enum Outcome {
    Done,
    Value(Option<Vec<u8>>),
    Entries {
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        keys: bool,
        values: bool,
    },
    Status(Status),
}

/// A failure, with the kind scripts match on and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub kind: &'static str,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            kind: "usage",
            message: message.into(),
        }
    }

    /// 2 for usage, 3 for everything else (1 is a missing key, which is no failure).
    pub fn exit_code(&self) -> u8 {
        if self.kind == "usage" {
            2
        } else {
            3
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        let kind = match &error {
            Error::Closed => "closed",
            Error::ConnectionLost => "connection_lost",
            Error::ProtocolMismatch { .. } => "protocol_mismatch",
            Error::TimedOut => "timed_out",
            Error::LimitReached { .. } => "limit_reached",
            Error::TooLarge { .. } => "too_large",
            Error::ReplyTooLarge { .. } => "reply_too_large",
            Error::StoreFull { .. } => "store_full",
            Error::StoreReadOnly => "store_read_only",
            Error::OtherUser { .. } => "permission_denied",
            Error::KeyTooLarge { .. } => "key_too_large",
            Error::IteratorGone => "iterator_gone",
            Error::Backend { .. } => "backend",
            Error::Locked { .. } => "locked",
            Error::Open(_) => "open",
            Error::Codec(_) => "codec",
            Error::ElectionFailed(cause) => match cause.as_ref() {
                Error::Locked { .. } => "locked",
                Error::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::PermissionDenied =>
                {
                    "permission_denied"
                }
                _ => "election_failed",
            },
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
                "permission_denied"
            }
            Error::Io { .. } => "io",
            Error::BlockingInRuntime | Error::Protocol(_) => "protocol",
            _ => "other",
        };
        Failure {
            kind,
            message: error.to_string(),
        }
    }
}

fn bound(
    encoding: Encoding,
    inclusive: &Option<String>,
    exclusive: &Option<String>,
) -> Result<Bound<Vec<u8>>, Failure> {
    match (inclusive, exclusive) {
        (Some(_), Some(_)) => Err(Failure::usage(
            "give at most one of --gt/--gte and of --lt/--lte",
        )),
        (Some(key), None) => Ok(Bound::Included(
            encoding.parse_key(key).map_err(Failure::usage)?,
        )),
        (None, Some(key)) => Ok(Bound::Excluded(
            encoding.parse_key(key).map_err(Failure::usage)?,
        )),
        (None, None) => Ok(Bound::Unbounded),
    }
}

impl RangeArgs {
    fn range(&self, encoding: Encoding) -> Result<KeyRange, Failure> {
        Ok(KeyRange {
            start: bound(encoding, &self.gte, &self.gt)?,
            end: bound(encoding, &self.lte, &self.lt)?,
        })
    }
}

/// Runs one operation; `batch` reads its lines from `input`.
pub async fn run(
    db: &Db,
    encoding: Encoding,
    op: &Op,
    input: &mut dyn BufRead,
) -> Result<Outcome, Failure> {
    let key = |text: &str| encoding.parse_key(text).map_err(Failure::usage);
    let value = |text: &str| encoding.parse_value(text).map_err(Failure::usage);
    Ok(match op {
        Op::Get { key: k } => Outcome::Value(db.get(key(k)?).await?),
        Op::Put { key: k, value: v } => {
            db.put(key(k)?, value(v)?).await?;
            Outcome::Done
        }
        Op::Del { key: k } => {
            db.del(key(k)?).await?;
            Outcome::Done
        }
        Op::Batch => {
            let mut ops = Vec::new();
            for line in input.lines() {
                let line =
                    line.map_err(|e| Failure::usage(format!("cannot read the batch: {e}")))?;
                match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                    [] => {}
                    ["put", k, v] => ops.push(BatchOp::Put {
                        key: key(k)?,
                        value: value(v)?,
                    }),
                    ["del", k] => ops.push(BatchOp::Del { key: key(k)? }),
                    _ => {
                        return Err(Failure::usage(format!(
                            "batch line {line:?}: expected `put KEY VALUE` or `del KEY`"
                        )))
                    }
                }
            }
            db.batch(ops).await?;
            Outcome::Done
        }
        Op::Clear(range) => {
            db.clear(range.range(encoding)?).await?;
            Outcome::Done
        }
        Op::Scan(scan) => {
            let entries = db.iter(scan.options(encoding)?).await?.collect().await?;
            Outcome::Entries {
                entries: entries.into_iter().map(|e| (e.key, e.value)).collect(),
                keys: !scan.values_only,
                values: !scan.keys_only,
            }
        }
        Op::Status => Outcome::Status(db.status().await?),
    })
}

pub fn role_name(role: Role) -> &'static str {
    role.name()
}

/// The outcome as text lines.
pub fn text(outcome: &Outcome, encoding: Encoding) -> Vec<String> {
    match outcome {
        Outcome::Done => Vec::new(),
        Outcome::Value(Some(value)) => vec![encoding.show_value(value)],
        Outcome::Value(None) => Vec::new(),
        Outcome::Entries {
            entries,
            keys,
            values,
        } => entries
            .iter()
            .map(|(k, v)| match (keys, values) {
                (true, true) => format!("{}\t{}", encoding.show_key(k), encoding.show_value(v)),
                (true, false) => encoding.show_key(k),
                _ => encoding.show_value(v),
            })
            .collect(),
        Outcome::Status(status) => vec![
            format!("role: {}", role_name(status.role)),
            format!(
                "leader pid: {}",
                status.leader_pid.map_or("-".into(), |p| p.to_string())
            ),
            format!("backend: {}", status.backend.name()),
            format!("socket: {}", status.socket.display()),
            format!("followers: {}", status.followers),
        ],
    }
}

/// The outcome as one JSON object (the `shell --json` schema in the README).
pub fn json(outcome: &Result<Outcome, Failure>, encoding: Encoding) -> Value {
    match outcome {
        Ok(Outcome::Done) => json!({"ok": true}),
        Ok(Outcome::Value(value)) => {
            json!({"ok": true, "value": value.as_deref().map(|v| encoding.json_value(v))})
        }
        Ok(Outcome::Entries {
            entries,
            keys,
            values,
        }) => {
            let rows: Vec<Value> = entries
                .iter()
                .map(|(k, v)| match (keys, values) {
                    (true, true) => json!([encoding.show_key(k), encoding.json_value(v)]),
                    (true, false) => json!(encoding.show_key(k)),
                    _ => encoding.json_value(v),
                })
                .collect();
            json!({"ok": true, "entries": rows})
        }
        Ok(Outcome::Status(status)) => json!({
            "ok": true,
            "role": role_name(status.role),
            "leader_pid": status.leader_pid,
            "backend": status.backend.name(),
            "socket": status.socket.display().to_string(),
            "followers": status.followers,
        }),
        Err(failure) => {
            json!({"ok": false, "error": {"kind": failure.kind, "message": failure.message}})
        }
    }
}
