//! party against the JavaScript anchor: each figure of issue 18's table over level-party's
//! successor rave-level 1.0.0's. rave-level cannot run in this process tree, so its
//! figures are those the issue measured (a 2-core VM like this one); each ratio takes the
//! anchor's best figure of its range, so that a ratio of 10 means at least ten times.

use serde_json::{json, Value};

/// rave-level 1.0.0's figures (issue 18), the best of each range.
const SYNC_GET_OPS_PER_S: f64 = 8_800.0;
const SYNC_PUT_OPS_PER_S: f64 = 7_800.0;
const PIPELINED_64_GET_OPS_PER_S: f64 = 57_000.0;
const PIPELINED_64_PUT_OPS_PER_S: f64 = 52_000.0;
const FULL_SCAN_ENTRIES_PER_S: f64 = 191_000.0;
/// From the SIGKILL of the leader to its followers served again.
const FAILOVER_MS: f64 = 19.0;

/// The goal set for every ratio.
pub const TARGET: f64 = 10.0;

/// Times rave-level, each of the rows measured in `report`: null where this run did
/// not measure it (`--only`). Sequential rows in both modes: the default one, and
/// low-latency mode, which is the mode that reaches the floor the issue sets.
pub fn times_anchor(report: &Value) -> Value {
    let number = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let follower = &report["one_follower"];
    let spinning = &report["low_latency"]["spinning"];
    json!({
        "sync_get": number(&follower["sync_get"]["ops_per_s"]) / SYNC_GET_OPS_PER_S,
        "sync_put": number(&follower["sync_put"]["ops_per_s"]) / SYNC_PUT_OPS_PER_S,
        "low_latency_sync_get": number(&spinning["sync_get"]["ops_per_s"]) / SYNC_GET_OPS_PER_S,
        "low_latency_sync_put": number(&spinning["sync_put"]["ops_per_s"]) / SYNC_PUT_OPS_PER_S,
        "pipelined_64_get":
            number(&follower["pipelined"]["64"]["get_ops_per_s"]) / PIPELINED_64_GET_OPS_PER_S,
        "pipelined_64_put":
            number(&follower["pipelined"]["64"]["put_ops_per_s"]) / PIPELINED_64_PUT_OPS_PER_S,
        "full_scan": number(&follower["scan_entries_per_s"]) / FULL_SCAN_ENTRIES_PER_S,
        "failover": FAILOVER_MS / number(&report["failover"]["all_followers_back_p50_ms"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_row_is_party_over_the_anchor_and_null_where_not_measured() {
        let report = json!({
            "one_follower": {
                "sync_get": {"ops_per_s": 88_000.0},
                "sync_put": {"ops_per_s": 15_600.0},
                "pipelined": {"64": {"get_ops_per_s": 570_000.0, "put_ops_per_s": 26_000.0}},
                "scan_entries_per_s": 1_910_000.0,
            },
            "failover": {"all_followers_back_p50_ms": 4.75},
        });
        let times = times_anchor(&report);
        assert_eq!(times["sync_get"], 10.0);
        assert_eq!(times["sync_put"], 2.0);
        assert_eq!(times["pipelined_64_get"], 10.0);
        assert_eq!(times["pipelined_64_put"], 0.5);
        assert_eq!(times["full_scan"], 10.0);
        assert_eq!(
            times["failover"], 4.0,
            "a shorter failover is the better one"
        );
        assert!(
            times["low_latency_sync_get"].is_null() && times["low_latency_sync_put"].is_null(),
            "low-latency mode was not measured: {times}"
        );
    }
}
