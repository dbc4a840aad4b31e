//! The report as a table for people.

use serde_json::Value;

/// The report as a table for people, one measurement a line.
pub(super) fn table(report: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    let number = |v: &Value| v.as_f64().map_or("-".into(), |n| format!("{n:.1}"));
    let number2 = |v: &Value| v.as_f64().map_or("-".into(), |n| format!("{n:.2}"));
    let rate = |v: &Value| v.as_f64().map_or("-".into(), |n| format!("{:.0}", n));
    // `--only` leaves the other measurements out of the report, and out of the table.
    let measured = |key: &str| !report[key].is_null();
    lines.push(format!(
        "party bench on {}",
        report["backend"].as_str().unwrap_or("?")
    ));
    if measured("baseline") {
        let b = &report["baseline"];
        lines.push(format!(
            "raw socket ping-pong        p50 {} µs  p99 {} µs  pipelined {} msg/s",
            number(&b["rtt_p50_us"]),
            number(&b["rtt_p99_us"]),
            rate(&b["pipelined_msgs_per_s"])
        ));
        lines.push(format!(
            "raw socket, spinning ends   p50 {} µs  p99 {} µs",
            number(&b["spinning_rtt_p50_us"]),
            number(&b["spinning_rtt_p99_us"])
        ));
    }
    if measured("in_process") {
        let l = &report["in_process"];
        lines.push(format!(
            "leader in-process           get {} ops/s  put {} ops/s; full scan {} entries/s",
            rate(&l["get_ops_per_s"]),
            rate(&l["put_ops_per_s"]),
            rate(&l["scan_entries_per_s"])
        ));
        let alone = &l["store_alone"]["put_ops_per_s_in_groups_of"];
        lines.push(format!(
            "store alone, no party       put {} ops/s in groups of 16, {} in groups of 64",
            rate(&alone["16"]),
            rate(&alone["64"])
        ));
    }
    if measured("one_follower") {
        let f = &report["one_follower"];
        lines.push(format!(
            "follower sync get           p50 {} µs  p99 {} µs  {} ops/s",
            number(&f["sync_get"]["p50_us"]),
            number(&f["sync_get"]["p99_us"]),
            rate(&f["sync_get"]["ops_per_s"])
        ));
        lines.push(format!(
            "follower sync put           p50 {} µs  p99 {} µs  {} ops/s",
            number(&f["sync_put"]["p50_us"]),
            number(&f["sync_put"]["p99_us"]),
            rate(&f["sync_put"]["ops_per_s"])
        ));
        lines.push(format!(
            "follower sync get, caller on the block_on thread  p50 {} µs",
            number(&f["sync_get_from_block_on_thread_p50_us"])
        ));
        for depth in ["16", "64", "256"] {
            let d = &f["pipelined"][depth];
            lines.push(format!(
                "follower pipelined {depth:>3}      get {} ops/s  put {} ops/s",
                rate(&d["get_ops_per_s"]),
                rate(&d["put_ops_per_s"])
            ));
        }
    }
    if measured("low_latency") {
        let l = &report["low_latency"];
        for (name, mode) in [("default", "default mode"), ("spinning", "low-latency ")] {
            for (op, what) in [("sync_get", "get"), ("sync_put", "put")] {
                let m = &l[name][op];
                lines.push(format!(
                    "{mode} sync {what}        p50 {} µs  p99 {} µs  {} ops/s  CPU {} µs/op",
                    number(&m["p50_us"]),
                    number(&m["p99_us"]),
                    rate(&m["ops_per_s"]),
                    number(&m["cpu_us_per_op"])
                ));
            }
            lines.push(format!(
                "{mode} pipelined 64   get {} ops/s  put {} ops/s; full scan {} entries/s",
                rate(&l[name]["pipelined_64_get_ops_per_s"]),
                rate(&l[name]["pipelined_64_put_ops_per_s"]),
                rate(&l[name]["scan_entries_per_s"])
            ));
            lines.push(format!(
                "{mode} idle share of a core: follower {}, leader {}",
                number2(&l[name]["idle_follower_cpu_share"]),
                number2(&l[name]["idle_leader_cpu_share"])
            ));
        }
        lines.push(format!(
            "low-latency sync get p50 vs spinning socket p50: {}",
            number2(&report["ratios"]["follower_spinning_sync_p50_vs_spinning_socket_p50"])
        ));
    }
    if measured("recording") {
        let r = &report["recording"];
        for depth in [64, 256] {
            for op in ["get", "put"] {
                let figure = format!("pipelined_{depth}_{op}");
                let per_s = format!("{figure}_ops_per_s");
                let cpu = format!("{figure}_cpu_us_per_op");
                lines.push(format!(
                    "recording, pipelined {depth:>3} {op}  {} ops/s ({} without), CPU {} µs/op ({} without)",
                    rate(&r["on"][&per_s]),
                    rate(&r["off"][&per_s]),
                    number2(&r["on"][&cpu]),
                    number2(&r["off"][&cpu])
                ));
            }
        }
        lines.push(format!(
            "recording, full scan       {} entries/s ({} without), CPU {} µs/entry ({} without)",
            rate(&r["on"]["full_scan_entries_per_s"]),
            rate(&r["off"]["full_scan_entries_per_s"]),
            number2(&r["on"]["full_scan_cpu_us_per_entry"]),
            number2(&r["off"]["full_scan_cpu_us_per_entry"])
        ));
    }
    if measured("big_values") {
        for size in super::values::SIZES.map(|size| size.to_string()) {
            let values = &report["big_values"];
            let side = |name: &str, what: &str| rate(&values[name][&size][what]);
            let ratio = |name: &str, what: &str| number2(&report["ratios"][name][&size][what]);
            let in_process = "big_values_follower_vs_in_process";
            let socket = "big_values_follower_vs_socket";
            lines.push(format!(
                "{:>7} B values, 16 in flight  follower put {} MB/s get {} MB/s; in-process put {} MB/s get {} MB/s; raw socket put {} MB/s get {} MB/s; follower / in-process put {} get {}, / socket put {} get {}",
                size,
                side("follower", "put_mb_per_s"),
                side("follower", "get_mb_per_s"),
                side("in_process", "put_mb_per_s"),
                side("in_process", "get_mb_per_s"),
                side("socket", "put_mb_per_s"),
                side("socket", "get_mb_per_s"),
                ratio(in_process, "put"),
                ratio(in_process, "get"),
                ratio(socket, "put"),
                ratio(socket, "get"),
            ));
        }
    }
    if measured("one_follower") {
        lines.push(format!(
            "follower full scan          {} entries/s",
            rate(&report["one_follower"]["scan_entries_per_s"])
        ));
    }
    if measured("four_followers_get_ops_per_s") {
        lines.push(format!(
            "four followers              {} get ops/s",
            rate(&report["four_followers_get_ops_per_s"])
        ));
    }
    if measured("writes_during_scans") {
        let w = &report["writes_during_scans"];
        lines.push(format!(
            "puts during full scans      p50 {} µs  p99 {} µs ({} scans/s); with no scan p50 {} µs  p99 {} µs",
            number(&w["during_scans_put_p50_us"]),
            number(&w["during_scans_put_p99_us"]),
            number(&w["scans_per_s"]),
            number(&w["quiet_put_p50_us"]),
            number(&w["quiet_put_p99_us"])
        ));
    }
    if measured("hot_keys") {
        let h = &report["hot_keys"];
        lines.push(format!(
            "scans of 16 hot keys        p50 {} µs  p99 {} µs while overwritten ({} puts/s); right after p50 {} µs; left alone p50 {} µs, while other keys are overwritten ({} puts/s) p50 {} µs",
            number(&h["during_overwrites_scan_p50_us"]),
            number(&h["during_overwrites_scan_p99_us"]),
            rate(&h["overwrites_per_s"]),
            number(&h["after_overwrites_scan_p50_us"]),
            number(&h["quiet_scan_p50_us"]),
            rate(&h["other_overwrites_per_s"]),
            number(&h["during_other_overwrites_scan_p50_us"])
        ));
    }
    if measured("failover") {
        let o = &report["failover"];
        lines.push(format!(
            "failover ×{}                 all followers back p50 {} ms  p99 {} ms; new leader's store open p50 {} ms  p99 {} ms",
            o["kills"],
            number(&o["all_followers_back_p50_ms"]),
            number(&o["all_followers_back_p99_ms"]),
            number(&o["new_leader_store_open_p50_ms"]),
            number(&o["new_leader_store_open_p99_ms"])
        ));
        let o = &report["failover_after_past_clients"];
        lines.push(format!(
            "failover, {} past clients   all followers back p50 {} ms  p99 {} ms; new leader's store open p50 {} ms  p99 {} ms",
            report["failover_past_clients"],
            number(&o["all_followers_back_p50_ms"]),
            number(&o["all_followers_back_p99_ms"]),
            number(&o["new_leader_store_open_p50_ms"]),
            number(&o["new_leader_store_open_p99_ms"])
        ));
    }
    if measured("transactions") {
        for processes in ["1", "4", "16"] {
            let t = &report["transactions"][processes];
            lines.push(format!(
                "increments, {processes:>2} processes    contended {} txn/s  uncontended {} txn/s  (plain puts {} ops/s)",
                rate(&t["contended_txn_per_s"]),
                rate(&t["uncontended_txn_per_s"]),
                rate(&t["put_ops_per_s"])
            ));
        }
    }
    if measured("feed") {
        for subscribers in ["1", "8"] {
            let f = &report["feed"][subscribers];
            lines.push(format!(
                "change feed, {subscribers} subscriber{}  put → delivery p50 {} µs  p99 {} µs; delivered {} changes/s each (puts {} ops/s, 64 in flight)",
                if subscribers == "1" { " " } else { "s" },
                number(&f["issue_to_delivery_p50_us"]),
                number(&f["issue_to_delivery_p99_us"]),
                rate(&f["delivered_changes_per_s_slowest"]),
                rate(&f["written_ops_per_s"])
            ));
        }
    }
    if measured("one_shot") {
        let c = &report["one_shot"];
        lines.push(format!(
            "one-shot put                leading, as a new process: p50 {} ms (the process alone: {} ms); ten at once: {} ms",
            number(&c["put_as_leader_p50_ms"]),
            number(&c["process_start_p50_ms"]),
            number(&c["ten_concurrent_puts_p50_ms"])
        ));
    }
    if measured("failover_idle_followers") {
        for followers in ["1", "16", "64"] {
            let o = &report["failover_idle_followers"][followers];
            lines.push(format!(
                "failover, {followers:>2} idle followers  all answered p50 {} ms  max {} ms; the new leader answered p50 {} ms, its store open p50 {} ms; CPU per process p50 {} µs (×{})",
                number(&o["all_answered_p50_ms"]),
                number(&o["all_answered_max_ms"]),
                number(&o["new_leader_answered_p50_ms"]),
                number(&o["new_leader_store_open_p50_ms"]),
                number(&o["cpu_per_process_p50_us"]),
                o["kills"]
            ));
        }
        let floor = &report["failover_idle_floor"]["64"];
        lines.push(format!(
            "failover floor, 64 minimal processes, the next leader listening  p50 {} ms  max {} ms; party's 64 ÷ floor {}",
            number(&floor["all_answered_p50_ms"]),
            number(&floor["all_answered_max_ms"]),
            number(&report["ratios"]["failover_64_idle_vs_floor"])
        ));
        let waiting = &report["followers_waiting_for_a_held_store"];
        if !waiting.is_null() {
            lines.push(format!(
                "waiting for a leader whose store another program holds  {} followers, CPU {} µs per follower-second",
                waiting["followers"],
                number(&waiting["cpu_us_per_follower_second"])
            ));
        }
    }
    if measured("four_followers_get_ops_per_s") || measured("failover_idle_followers") {
        let m = &report["memory_kib"];
        lines.push(format!(
            "memory                      follower after 64 gets in flight {} KiB  idle follower {} KiB ({} KiB its own)  fresh leader {} KiB, with 64 idle followers {} KiB ({} KiB each)",
            m["loaded_follower_rss"],
            m["idle_follower_rss"],
            m["idle_follower_private"],
            m["fresh_leader_rss"],
            m["leader_rss_with_64_idle_followers"],
            number(&m["leader_rss_per_idle_follower"])
        ));
    }
    if measured("in_process") && measured("one_follower") {
        let r = &report["ratios"];
        lines.push(format!("ratios                      pipelined get follower/in-process {}  put {}  full scan {}  sync p50 follower/socket {}  64 puts follower/store alone (groups of 16) {}", number(&r["follower_pipelined_get_vs_in_process"]), number(&r["follower_pipelined_put_vs_in_process"]), number(&r["follower_scan_vs_in_process"]), number(&r["follower_sync_p50_vs_socket_p50"]), number(&r["follower_pipelined_64_put_vs_store_alone_16"])));
    }
    let anchor = &report["ratios"]["times_rave_level"];
    if anchor
        .as_object()
        .is_some_and(|rows| rows.values().any(|v| !v.is_null()))
    {
        lines.push(format!(
            "× rave-level 1.0.0 (issue 18's figures; target {}×)  sync get {} put {}; low-latency sync get {} put {}; 64 in flight get {} put {}; full scan {}; failover {}",
            super::anchor::TARGET,
            number(&anchor["sync_get"]),
            number(&anchor["sync_put"]),
            number(&anchor["low_latency_sync_get"]),
            number(&anchor["low_latency_sync_put"]),
            number(&anchor["pipelined_64_get"]),
            number(&anchor["pipelined_64_put"]),
            number(&anchor["full_scan"]),
            number(&anchor["failover"])
        ));
    }
    lines
}
