//! Big values: puts and gets of 1 KiB, 64 KiB and 1 MiB values, in MB/s, 16 in flight.
//! Measured in-process and through a follower, so that what the way between them costs
//! (framing, the socket, decoding) shows as a ratio; and through a raw socket with party's
//! framing, the ceiling of any follower (a socket carries a big value slower than a store
//! hands it to its own process).

use std::path::Path;
use std::time::Duration;

use party_core::{Db, Role};
use serde_json::{json, Value};

use super::{follow_child_leader, on_runtime, pipelined, Workload};
use crate::failure::Failure;
use crate::tool_store::ToolStore;

/// The sizes measured, in bytes.
pub(super) const SIZES: [usize; 3] = [1 << 10, 64 << 10, 1 << 20];
/// How many times longer puts run than gets: the rate of big puts depends on the store's
/// compactions, which a second of them may or may not meet (1 MiB puts in-process swung
/// twofold from one such run to the next, as compactions fell behind or not; over 6 s they
/// stayed within a fifth).
const PUT_SPANS: u32 = 4;

/// Keys the values are written to and read from, round and round: few, so that the store
/// stays small whatever the rate.
const SLOTS: u64 = 64;

fn slot(n: u64) -> Vec<u8> {
    format!("big/{:02}", n % SLOTS).into_bytes()
}

/// The rates of [`rates`] in-process, then through a follower, each on a store of its own
/// (so that the other measurements' stores stay small).
pub(super) async fn measure(
    base: &Path,
    store: &ToolStore,
    span: Duration,
) -> Result<Value, Failure> {
    let dir = base.join("values-local");
    let db = crate::open_on(&dir, store).await?;
    if db.ready().await.map_err(|e| e.to_string())? != Role::Leader {
        return Err("the in-process handle of the big values bench did not lead".into());
    }
    let in_process = rates(&db, span).await?;
    db.close().await.map_err(|e| e.to_string())?;
    let (_leader, db) = follow_child_leader(&base.join("values-shared"), store).await?;
    let follower = rates(&db, span).await?;
    db.close().await.map_err(|e| e.to_string())?;
    let socket = super::baseline::big_values_ceiling(base, &SIZES, span)?;
    Ok(json!({"in_process": in_process, "follower": follower, "socket": socket}))
}

/// MB/s of puts (over [`PUT_SPANS`] times `span`), then of gets (over `span`), of values
/// of each of [`SIZES`], by `db`.
async fn rates(db: &Db, span: Duration) -> Result<Value, String> {
    let mut report = serde_json::Map::new();
    for size in SIZES {
        let value = vec![b'b'; size];
        for n in 0..SLOTS {
            db.put(slot(n), &value).await.map_err(|e| e.to_string())?;
        }
        let megabytes = |ops: f64| ops * size as f64 / 1e6;
        let puts = Workload::Puts { key: slot, value };
        let put = on_runtime(pipelined(db.clone(), span * PUT_SPANS, 16, puts))
            .await?
            .1;
        let gets = Workload::Gets { key: slot };
        let get = on_runtime(pipelined(db.clone(), span, 16, gets)).await?.1;
        report.insert(
            size.to_string(),
            json!({"put_mb_per_s": megabytes(put), "get_mb_per_s": megabytes(get)}),
        );
    }
    Ok(Value::Object(report))
}

/// `over` against `under` (follower against in-process, say), for each size and direction,
/// of a report of [`measure`].
pub(super) fn ratios(report: &Value, over: &str, under: &str) -> Value {
    let mut ratios = serde_json::Map::new();
    for size in SIZES.map(|size| size.to_string()) {
        let ratio = |what: &str| {
            let of = |side: &str| report[side][&size][what].as_f64().unwrap_or(f64::NAN);
            of(over) / of(under)
        };
        let both = json!({"put": ratio("put_mb_per_s"), "get": ratio("get_mb_per_s")});
        ratios.insert(size, both);
    }
    Value::Object(ratios)
}
