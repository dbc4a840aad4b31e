//! The operations the `party` command runs, one shot or line by line in `shell`, and how
//! their outcomes print: as text, or as one JSON object.

use std::ffi::OsString;
use std::io::BufRead;
use std::ops::Bound;

use clap::{Args, Subcommand};
use party_core::{BatchOp, Db, Error, IterOptions, KeyRange, Status};
use serde_json::json;

use crate::encoding::Encoding;
use crate::failure::Failure;
use crate::out;

/// An operation on the store.
#[derive(Debug, Subcommand)]
pub enum Op {
    /// Print the value of KEY as it is stored (exit code 1 when there is none).
    Get {
        #[arg(allow_hyphen_values = true)]
        key: OsString,
    },
    /// Set KEY to VALUE.
    Put {
        #[arg(allow_hyphen_values = true)]
        key: OsString,
        #[arg(allow_hyphen_values = true)]
        value: OsString,
    },
    /// Delete KEY.
    Del {
        #[arg(allow_hyphen_values = true)]
        key: OsString,
    },
    /// Apply writes atomically: `put KEY VALUE` and `del KEY`, given as arguments
    /// (`batch put a 1 del b`) or, with none, read from stdin, quoted as in a shell.
    Batch {
        #[arg(allow_hyphen_values = true, value_name = "WRITE")]
        writes: Vec<OsString>,
    },
    /// Delete every key in a range; every key at all only with --all.
    Clear(ClearArgs),
    /// List entries in key order, one per line: KEY, a tab, VALUE, each escaped so that
    /// any bytes fit on the line (`load` reads it back).
    Scan(ScanArgs),
    /// This handle's role, the leader, the backend, the socket, the followers.
    Status,
    /// Compare-and-swap: set KEY to --new (or delete it, --delete) only if it holds --old
    /// (or is absent, --old-absent), in one step at the leader. When it does not, nothing
    /// changes, what KEY holds is printed, and the exit code is 1.
    Cas(CasArgs),
    /// List the sublevels (namespaces) that hold keys, one name per line.
    Sublevels,
    /// Delete every key of the sublevel NAME, its own sublevels included.
    DropSublevel { name: String },
    /// Add BY (default 1, may be negative) to the decimal integer KEY holds (absent: 0) in
    /// a transaction, and print the result: increments by many processes at once lose
    /// nothing.
    Incr {
        #[arg(allow_hyphen_values = true)]
        key: OsString,
        #[arg(allow_hyphen_values = true, default_value = "1")]
        by: i64,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("expected").required(true).args(["old", "old_absent"])))]
#[command(group(clap::ArgGroup::new("replacement").required(true).args(["new", "delete"])))]
pub struct CasArgs {
    #[arg(allow_hyphen_values = true)]
    key: OsString,
    /// The value KEY must hold.
    #[arg(long, value_name = "VALUE", allow_hyphen_values = true)]
    old: Option<OsString>,
    /// KEY must be absent.
    #[arg(long)]
    old_absent: bool,
    /// The value to set.
    #[arg(long, value_name = "VALUE", allow_hyphen_values = true)]
    new: Option<OsString>,
    /// Delete KEY instead.
    #[arg(long)]
    delete: bool,
}

#[derive(Debug, Default, Args)]
pub struct RangeArgs {
    /// Keys greater than K.
    #[arg(long, value_name = "K", allow_hyphen_values = true)]
    gt: Option<OsString>,
    /// Keys greater than or equal to K.
    #[arg(long, value_name = "K", allow_hyphen_values = true)]
    gte: Option<OsString>,
    /// Keys less than K.
    #[arg(long, value_name = "K", allow_hyphen_values = true)]
    lt: Option<OsString>,
    /// Keys less than or equal to K.
    #[arg(long, value_name = "K", allow_hyphen_values = true)]
    lte: Option<OsString>,
}

#[derive(Debug, Args)]
pub struct ClearArgs {
    #[command(flatten)]
    range: RangeArgs,
    /// Delete every key of the store.
    #[arg(long, conflicts_with_all = ["gt", "gte", "lt", "lte"])]
    all: bool,
}

#[derive(Debug, Default, Args)]
pub struct ScanArgs {
    #[command(flatten)]
    range: RangeArgs,
    /// Last key first.
    #[arg(long)]
    reverse: bool,
    /// At most N entries (-1: no limit, as level's `limit`).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_limit)]
    limit: Option<Limit>,
    /// Print keys only.
    #[arg(long, conflicts_with = "values_only")]
    keys_only: bool,
    /// Print values only.
    #[arg(long)]
    values_only: bool,
}

impl ScanArgs {
    /// Whether keys and values are listed.
    fn shows(&self) -> (bool, bool) {
        (!self.values_only, !self.keys_only)
    }

    fn options(&self, encoding: Encoding) -> Result<IterOptions, Failure> {
        let (keys, values) = self.shows();
        Ok(IterOptions::default()
            .range(self.range.range(encoding)?)
            .reverse(self.reverse)
            .limit(self.limit.and_then(|Limit(limit)| limit))
            .keys(keys)
            .values(values))
    }
}

/// A scan's `--limit`: a number of entries, or none (-1).
#[derive(Debug, Clone, Copy)]
struct Limit(Option<u64>);

fn parse_limit(text: &str) -> Result<Limit, String> {
    if text == "-1" {
        return Ok(Limit(None));
    }
    text.parse()
        .map(|count| Limit(Some(count)))
        .map_err(|_| format!("{text:?}: a limit is a number of entries, or -1 for none"))
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
        for entry in chunk {
            let line = entry_line(encoding, &entry.key, &entry.value, scan.shows());
            writeln!(out, "{line}").map_err(out::written)?;
        }
        if progress && count % 10_240 < 1024 {
            out.flush().map_err(out::written)?;
            out::progress(format_args!("{count} entries"));
        }
    }
    if progress && count >= 10_240 {
        out::note(format_args!("\r{count} entries"));
    }
    out.flush().map_err(out::written)?;
    Ok(())
}

/// One entry of a listing; `shows` says whether keys and values are listed.
fn entry_line(encoding: Encoding, key: &[u8], value: &[u8], shows: (bool, bool)) -> String {
    match shows {
        (true, true) => format!("{}\t{}", encoding.show_key(key), encoding.show_value(value)),
        (true, false) => encoding.show_key(key),
        _ => encoding.show_value(value),
    }
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
    /// `load` wrote this many entries.
    Loaded(u64),
    /// `cas` did not swap: the key holds this (`None`: absent).
    Conflict(Option<Vec<u8>>),
    /// `incr`: the key's new number.
    Number(i64),
    /// `sublevels`: their names.
    Names(Vec<String>),
}

fn bound(
    encoding: Encoding,
    inclusive: &Option<OsString>,
    exclusive: &Option<OsString>,
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
    pub(crate) fn range(&self, encoding: Encoding) -> Result<KeyRange, Failure> {
        Ok(KeyRange {
            start: bound(encoding, &self.gte, &self.gt)?,
            end: bound(encoding, &self.lte, &self.lt)?,
        })
    }
}

impl ClearArgs {
    fn range(&self, encoding: Encoding) -> Result<KeyRange, Failure> {
        let range = self.range.range(encoding)?;
        // From the empty key on is from the first key on: every key.
        let from_first = match &range.start {
            Bound::Unbounded => true,
            Bound::Included(key) => key.is_empty(),
            Bound::Excluded(_) => false,
        };
        let everything = from_first && range.end == Bound::Unbounded;
        if everything && !self.all {
            return Err(Failure::usage(
                "clear without a range (or from the empty key on) would delete every key: \
                 give --all alone to mean it",
            ));
        }
        Ok(range)
    }
}

/// Writes given as words: `put KEY VALUE` and `del KEY`, any number of them.
pub fn parse_writes(encoding: Encoding, words: &[OsString]) -> Result<Vec<BatchOp>, Failure> {
    let key = |word: &OsString| encoding.parse_key(word).map_err(Failure::usage);
    let value = |word: &OsString| encoding.parse_value(word).map_err(Failure::usage);
    let mut writes = Vec::new();
    let mut rest = words;
    while let Some((verb, after)) = rest.split_first() {
        rest = match (verb.to_str(), after) {
            (Some("put"), [k, v, after @ ..]) => {
                writes.push(BatchOp::Put {
                    key: key(k)?,
                    value: value(v)?,
                });
                after
            }
            (Some("del"), [k, after @ ..]) => {
                writes.push(BatchOp::Del { key: key(k)? });
                after
            }
            _ => {
                return Err(Failure::usage(format!(
                    "at {}: expected `put KEY VALUE` or `del KEY`",
                    verb.display()
                )))
            }
        };
    }
    Ok(writes)
}

/// Splits a line into words as a POSIX shell would (quotes, backslashes), bytes kept.
pub fn split_words(line: &[u8]) -> Result<Vec<OsString>, Failure> {
    let words = shlex::bytes::split(line)
        .ok_or_else(|| Failure::usage("unbalanced quotes or a trailing backslash"))?;
    Ok(words.into_iter().map(os_string).collect())
}

#[cfg(unix)]
fn os_string(bytes: Vec<u8>) -> OsString {
    std::os::unix::ffi::OsStringExt::from_vec(bytes)
}

#[cfg(not(unix))]
fn os_string(bytes: Vec<u8>) -> OsString {
    String::from_utf8_lossy(&bytes).into_owned().into()
}

/// The writes of `batch` read from `input`, one or more per line.
fn read_writes(encoding: Encoding, input: &mut dyn BufRead) -> Result<Vec<BatchOp>, Failure> {
    let mut writes = Vec::new();
    for (number, line) in input.split(b'\n').enumerate() {
        let mut line = line.map_err(|e| Failure::usage(format!("cannot read the batch: {e}")))?;
        // A carriage return ends no word: one at the end came with a CRLF file.
        if line.ends_with(b"\r") {
            line.pop();
        }
        let at_line = |failure: Failure| Failure {
            message: format!("batch line {}: {}", number + 1, failure.message),
            ..failure
        };
        let words = split_words(&line).map_err(at_line)?;
        writes.extend(parse_writes(encoding, &words).map_err(at_line)?);
    }
    Ok(writes)
}

/// Runs one operation; `batch` without arguments reads its writes from `input`.
pub async fn run(
    db: &Db,
    encoding: Encoding,
    op: &Op,
    input: &mut dyn BufRead,
) -> Result<Outcome, Failure> {
    let key = |arg: &OsString| encoding.parse_key(arg).map_err(Failure::usage);
    let value = |arg: &OsString| encoding.parse_value(arg).map_err(Failure::usage);
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
        Op::Batch { writes } => {
            let writes = if writes.is_empty() {
                read_writes(encoding, input)?
            } else {
                parse_writes(encoding, writes)?
            };
            db.batch(writes).await?;
            Outcome::Done
        }
        Op::Clear(clear) => {
            db.clear(clear.range(encoding)?).await?;
            Outcome::Done
        }
        Op::Scan(scan) => {
            let entries = db.iter(scan.options(encoding)?).await?.collect().await?;
            let (keys, values) = scan.shows();
            Outcome::Entries {
                entries: entries.into_iter().map(|e| (e.key, e.value)).collect(),
                keys,
                values,
            }
        }
        Op::Status => Outcome::Status(db.status().await?),
        Op::Cas(cas) => {
            let old = cas.old.as_ref().map(value).transpose()?;
            let new = cas.new.as_ref().map(value).transpose()?;
            match db.compare_and_swap(key(&cas.key)?, old, new).await? {
                Ok(()) => Outcome::Done,
                Err(conflict) => Outcome::Conflict(conflict.current),
            }
        }
        Op::Incr { key: k, by } => Outcome::Number(increment(db, key(k)?, *by).await?),
        Op::Sublevels => Outcome::Names(db.sublevels().await?),
        Op::DropSublevel { name } => {
            db.drop_sublevel(name).await?;
            Outcome::Done
        }
    })
}

/// Adds `by` to the decimal integer `key` holds (absent: 0), in a transaction.
pub async fn increment(db: &Db, key: Vec<u8>, by: i64) -> Result<i64, Failure> {
    let key = &key;
    let result: Result<i64, party_core::TransactionError<Failure>> = db
        .transaction(|tx| async move {
            let held = tx.get(key).await.map_err(Failure::from)?;
            let now = held.as_deref().map_or(Ok(0), parse_number)?;
            let next = now.checked_add(by).ok_or_else(|| {
                Failure::not_a_number(format!("{now} + {by} does not fit in 64 bits"))
            })?;
            tx.put(key, next.to_string());
            Ok::<_, Failure>(next)
        })
        .await;
    Ok(result?)
}

fn parse_number(value: &[u8]) -> Result<i64, Failure> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| {
            Failure::not_a_number(format!(
                "the key holds {:?}, not a decimal integer",
                String::from_utf8_lossy(value)
            ))
        })
}

/// Writes about this many bytes in one batch of `load`, each write counted with its keys,
/// its value and what framing it costs.
const LOAD_BATCH_BYTES: usize = 1 << 20;
const LOAD_WRITE_COST: usize = 32;

/// `load`: the lines of a listing (`KEY<tab>VALUE`, as `scan` and `dump` print them) from
/// `input`, put in batches; gives the number of entries written.
pub async fn load(db: &Db, encoding: Encoding, input: &mut dyn BufRead) -> Result<u64, Failure> {
    let mut batches = LoadBatches::new(db);
    for (number, line) in input.split(b'\n').enumerate() {
        let mut line = line.map_err(|e| format!("cannot read the input: {e}"))?;
        // A listing escapes every carriage return: one at the end came with a CRLF file.
        if line.ends_with(b"\r") {
            line.pop();
        }
        if line.is_empty() {
            continue;
        }
        let loaded = batches.loaded;
        let bad = |why: String| {
            Failure::usage(format!(
                "line {}: {why}; the {loaded} entries before it were loaded",
                number + 1
            ))
        };
        let text =
            std::str::from_utf8(&line).map_err(|_| bad("not a listing line (not UTF-8)".into()))?;
        let (key, value) = text
            .split_once('\t')
            .ok_or_else(|| bad("expected KEY, a tab, VALUE".into()))?;
        let key = encoding.read_key(key).map_err(bad)?;
        let value = encoding.read_value(value).map_err(bad)?;
        batches.push(BatchOp::Put { key, value }).await?;
    }
    batches.commit().await?;
    Ok(batches.loaded)
}

/// The batches of `load`: about [`LOAD_BATCH_BYTES`] each, committed in order, and cut
/// smaller once the store says it commits fewer writes at once (etcd: 127 operations).
struct LoadBatches<'a> {
    db: &'a Db,
    batch: Vec<BatchOp>,
    bytes: usize,
    /// Entries committed so far.
    loaded: u64,
    /// Most writes the store takes in one batch, once it has refused more.
    most: usize,
    /// Most writes a batch has held that the store took: a batch no longer than that is
    /// sent without a copy kept in case the store refuses it.
    taken: usize,
}

impl<'a> LoadBatches<'a> {
    fn new(db: &'a Db) -> Self {
        LoadBatches {
            db,
            batch: Vec::new(),
            bytes: 0,
            loaded: 0,
            most: usize::MAX,
            taken: 0,
        }
    }

    async fn push(&mut self, write: BatchOp) -> Result<(), Failure> {
        if let BatchOp::Put { key, value } = &write {
            self.bytes += key.len() + value.len() + LOAD_WRITE_COST;
        }
        self.batch.push(write);
        if self.bytes >= LOAD_BATCH_BYTES || self.batch.len() >= self.most {
            self.commit().await?;
        }
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), Failure> {
        let mut batch = std::mem::take(&mut self.batch);
        self.bytes = 0;
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(self.most));
            let len = batch.len();
            let kept = (len > self.taken).then(|| batch.clone());
            match (self.db.batch(batch).await, kept) {
                (Ok(()), _) => {
                    self.loaded += len as u64;
                    self.taken = self.taken.max(len);
                    batch = rest;
                }
                // Cut smaller until the store takes it: `max` may count writes of the
                // store's own besides these.
                (Err(Error::BatchTooLarge { max, .. }), Some(mut kept)) if len > 1 => {
                    let max = usize::try_from(max).unwrap_or(usize::MAX);
                    self.most = max.min(len - 1).max(1);
                    kept.extend(rest);
                    batch = kept;
                }
                (Err(error), _) => {
                    let failure = Failure::from(error);
                    return Err(Failure {
                        message: format!(
                            "{}; the {} entries before this batch were loaded",
                            failure.message, self.loaded
                        ),
                        ..failure
                    });
                }
            }
        }
        Ok(())
    }
}

/// The outcome as text: a value as it is stored (hex with `--encoding hex`), listings one
/// entry per line.
pub fn text(outcome: &Outcome, encoding: Encoding) -> Vec<u8> {
    let mut text = Vec::new();
    match outcome {
        Outcome::Done | Outcome::Value(None) | Outcome::Loaded(_) | Outcome::Conflict(None) => {}
        Outcome::Number(number) => text.extend(format!("{number}\n").into_bytes()),
        Outcome::Names(names) => {
            for name in names {
                text.extend(name.as_bytes());
                text.push(b'\n');
            }
        }
        Outcome::Value(Some(value)) | Outcome::Conflict(Some(value)) => {
            match encoding {
                Encoding::Hex => text.extend(hex::encode(value).into_bytes()),
                Encoding::Utf8 | Encoding::Json => text.extend_from_slice(value),
            }
            text.push(b'\n');
        }
        Outcome::Entries {
            entries,
            keys,
            values,
        } => {
            for (key, value) in entries {
                text.extend(entry_line(encoding, key, value, (*keys, *values)).into_bytes());
                text.push(b'\n');
            }
        }
        Outcome::Status(status) => {
            let lines = [
                format!("role: {}", status.role.name()),
                format!(
                    "leader pid: {}",
                    status.leader_pid.map_or("-".into(), |p| p.to_string())
                ),
                format!("backend: {}", status.backend.name()),
                format!("socket: {}", status.socket.display()),
                format!("followers: {}", status.followers),
                format!(
                    "term: {}",
                    status.term.map_or("-".into(), |t| t.to_string())
                ),
                format!("failovers: {}", status.failovers),
                format!(
                    "last take-over: {}",
                    status.last_takeover.map_or("-".into(), |t| format!(
                        "after {}, served again in {:.1} ms",
                        t.cause.name(),
                        t.paused.as_secs_f64() * 1e3
                    ))
                ),
            ];
            for line in lines {
                text.extend(line.into_bytes());
                text.push(b'\n');
            }
        }
    }
    text
}

/// The outcome as one JSON object (the schema in the README), on one line. Answers that
/// hold stored values are written out here rather than built as a [`serde_json::Value`],
/// which would rebuild those (see [`crate::encoding::JsonValue`]); their fields in the
/// order a `Value` prints them.
pub fn json(outcome: &Result<Outcome, Failure>, encoding: Encoding) -> String {
    let stored = |value: &Option<Vec<u8>>| {
        value
            .as_deref()
            .map_or_else(|| "null".to_owned(), |v| encoding.json_value(v).to_string())
    };
    let answer = match outcome {
        Ok(Outcome::Done) => json!({"ok": true}),
        Ok(Outcome::Loaded(entries)) => json!({"ok": true, "loaded": entries}),
        Ok(Outcome::Conflict(current)) => {
            let current = stored(current);
            return format!(r#"{{"current":{current},"ok":true,"swapped":false}}"#);
        }
        Ok(Outcome::Number(number)) => json!({"ok": true, "value": number}),
        Ok(Outcome::Names(names)) => json!({"ok": true, "sublevels": names}),
        Ok(Outcome::Value(value)) => return format!(r#"{{"ok":true,"value":{}}}"#, stored(value)),
        Ok(Outcome::Entries {
            entries,
            keys,
            values,
        }) => {
            let rows: Vec<String> = entries
                .iter()
                .map(|(k, v)| match (keys, values) {
                    (true, true) => {
                        format!("[{},{}]", encoding.json_bytes(k), encoding.json_value(v))
                    }
                    (true, false) => encoding.json_bytes(k).to_string(),
                    _ => encoding.json_value(v).to_string(),
                })
                .collect();
            return format!(r#"{{"entries":[{}],"ok":true}}"#, rows.join(","));
        }
        Ok(Outcome::Status(status)) => json!({
            "ok": true,
            "role": status.role.name(),
            "leader_pid": status.leader_pid,
            "backend": status.backend.name(),
            "socket": status.socket.display().to_string(),
            "followers": status.followers,
            "term": status.term,
            "failovers": status.failovers,
            "last_takeover": status.last_takeover.map(|t| json!({
                "cause": t.cause.name(),
                "paused_ms": t.paused.as_secs_f64() * 1e3,
            })),
        }),
        Err(failure) => {
            json!({"ok": false, "error": {"kind": failure.kind.name(), "message": failure.message}})
        }
    };
    answer.to_string()
}
