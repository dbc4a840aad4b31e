//! `party DIR watch`: one line per committed change of a range, in commit order, until
//! interrupted (or `--count` changes). Lines are in the lossless form of the other
//! commands, their fields separated by tabs (shown here as spaces):
//!
//! - `SEQ put KEY VALUE`
//! - `SEQ del KEY`
//! - `SEQ clear START END`, each bound `>=KEY`, `>KEY`, `<KEY`, `<=KEY` or `*` (a key after
//!   `>` or `<` that starts with `=` shows it as `\x3d`)
//! - `lagged MISSED`: the subscription fell behind the leader's change log and lost
//!   MISSED commits; it goes on after them.
//!
//! With `--json`, one object per line: `{"seq":N,"op":"put","key":…,"value":…}`, `"del"`,
//! `"clear"` with `"range"`, or `{"lagged":MISSED}`. Where it starts goes to stderr
//! (`watching from commit N`), so that a later `watch --from N` goes on from there.

use std::ops::Bound;
use std::time::Duration;

use clap::Args;
use party_core::{Change, CommitSeq, Db, Error};
use serde_json::json;

use crate::command::RangeArgs;
use crate::encoding::Encoding;
use crate::failure::Failure;
use crate::{out, within};

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    range: RangeArgs,
    /// Start at commit N (a number an earlier watch printed) instead of the next commit.
    #[arg(long, value_name = "N")]
    from: Option<u64>,
    /// Stop after N changes.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

/// Prints the changes `args` asks for; `timeout` bounds the wait for its start, not for
/// the changes.
pub async fn run(
    db: &Db,
    encoding: Encoding,
    json: bool,
    args: &WatchArgs,
    timeout: Option<Duration>,
) -> Result<(), Failure> {
    let range = args.range.range(encoding)?;
    let mut watch = match args.from {
        Some(from) => within(timeout, db.watch_from(range, CommitSeq(from))).await?,
        None => within(timeout, db.watch(range)).await?,
    };
    out::note(format_args!("watching from commit {}", watch.position().0));
    let mut printed = 0;
    while args.count.is_none_or(|count| printed < count) {
        let Some(next) = watch.next().await else {
            return Ok(());
        };
        let line = match next {
            Ok(change) => {
                printed += 1;
                if json {
                    json_line(encoding, &change)
                } else {
                    text_line(encoding, &change)
                }
            }
            Err(Error::Lagged { missed }) if json => json!({ "lagged": missed }).to_string(),
            Err(Error::Lagged { missed }) => format!("lagged\t{missed}"),
            Err(error) => return Err(error.into()),
        };
        out::line(line)?;
    }
    Ok(())
}

fn text_line(encoding: Encoding, change: &Change) -> String {
    match change {
        Change::Put { seq, key, value } => format!(
            "{}\tput\t{}\t{}",
            seq.0,
            encoding.show_key(key),
            encoding.show_value(value)
        ),
        Change::Del { seq, key } => format!("{}\tdel\t{}", seq.0, encoding.show_key(key)),
        Change::Clear { seq, range } => format!(
            "{}\tclear\t{}\t{}",
            seq.0,
            shown_bound(encoding, &range.start, ">=", ">"),
            shown_bound(encoding, &range.end, "<=", "<")
        ),
    }
}

fn shown_bound(
    encoding: Encoding,
    bound: &Bound<Vec<u8>>,
    included: &str,
    excluded: &str,
) -> String {
    match bound {
        Bound::Included(key) => format!("{included}{}", encoding.show_key(key)),
        Bound::Excluded(key) => {
            let shown = encoding.show_key(key);
            // `>` before a key that starts with `=` would read as `>=` and the rest.
            match shown.strip_prefix('=') {
                Some(rest) => format!("{excluded}\\x3d{rest}"),
                None => format!("{excluded}{shown}"),
            }
        }
        Bound::Unbounded => "*".into(),
    }
}

fn json_line(encoding: Encoding, change: &Change) -> String {
    let line = match change {
        // Written out, as `command::json` writes answers that hold stored values.
        Change::Put { seq, key, value } => {
            let (key, value) = (encoding.json_bytes(key), encoding.json_value(value));
            return format!(
                r#"{{"key":{key},"op":"put","seq":{},"value":{value}}}"#,
                seq.0
            );
        }
        Change::Del { seq, key } => json!({
            "seq": seq.0,
            "op": "del",
            "key": encoding.json_bytes(key),
        }),
        Change::Clear { seq, range } => {
            let mut bounds = serde_json::Map::new();
            for (name, bound) in [
                ("gte", &range.start),
                ("gt", &range.start),
                ("lte", &range.end),
                ("lt", &range.end),
            ] {
                let key = match (name, bound) {
                    ("gte" | "lte", Bound::Included(key)) | ("gt" | "lt", Bound::Excluded(key)) => {
                        key
                    }
                    _ => continue,
                };
                bounds.insert(name.into(), encoding.json_bytes(key));
            }
            json!({ "seq": seq.0, "op": "clear", "range": bounds })
        }
    };
    line.to_string()
}
