//! Failover: the leader SIGKILLed while followers read, and the time until every follower
//! is served again; with three busy followers, and with 1, 16 and 64 idle ones.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::thread_cpu::{self, ThreadCpu};
use super::{
    fill, first_line, leader_child, micros_now, percentile, private_kib, rss_kib, start_leader,
};
use crate::children::Worker;
use crate::failure::Failure;
use crate::tool_store::ToolStore;

/// Leaves in the store of `dir` the dedup records of `count` clients that each wrote once,
/// as months of short-lived processes would: written straight into the store, as their
/// leaders did, after a first leader created it.
pub(super) async fn with_past_clients(
    dir: &Path,
    store: &ToolStore,
    count: u64,
) -> Result<(), Failure> {
    let first = crate::open_on(dir, store).await?;
    first.ready().await.map_err(|e| e.to_string())?;
    first.close().await.map_err(|e| e.to_string())?;
    // The store's calls block: not on an async worker.
    tokio::task::block_in_place(|| -> Result<(), Failure> {
        let store = store.open_store(dir)?;
        let now_ms = micros_now() / 1000;
        let record = party_proto::DedupRecord {
            applied_through: party_proto::WriteSeq(1),
            failed: Vec::new(),
            last_write_ms: now_ms,
        };
        let ids: Vec<u64> = (0..count).collect();
        for chunk in ids.chunks(store.max_batch_ops().unwrap_or(10_000)) {
            let batch = party_backends::WriteBatch {
                ops: Vec::new(),
                records: chunk
                    .iter()
                    .map(|n| (party_proto::ClientId(u128::from(*n) << 64), record.clone()))
                    .collect(),
                log: None,
            };
            store.write(&batch).map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// Notes whether watcher `index` leads, if `line` tells its role.
fn note_role(is_leader: &mut [bool; 3], index: usize, line: &str) {
    if let Some(role) = line.strip_prefix("role ") {
        is_leader[index] = role == "leader";
    }
}

/// Reads the watchers' lines, noting who says it leads, until `done` (given each line's
/// watcher, the line, and who leads) is true; fails if it is not within 10 s.
fn read_until(
    lines: &std::sync::mpsc::Receiver<(usize, String)>,
    is_leader: &mut [bool; 3],
    waiting_for: &str,
    mut done: impl FnMut(usize, &str, &[bool; 3]) -> bool,
) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        let (index, line) = lines
            .recv_timeout(wait)
            .map_err(|_| format!("the failover bench waited 10 s for {waiting_for}"))?;
        note_role(is_leader, index, &line);
        if done(index, &line, is_leader) {
            return Ok(());
        }
    }
}

/// Kills the leader of `dir` `kills` times while three followers read; measures, per kill,
/// the time until every follower has completed a get again.
pub(super) async fn failovers(
    dir: &Path,
    store: &ToolStore,
    kills: usize,
) -> Result<Value, Failure> {
    let dir = dir.to_owned();
    let mut leader = start_leader(&dir, store)?;
    let keys = crate::open_on(&dir, store).await?;
    fill(&keys).await?;
    keys.close().await.map_err(|e| e.to_string())?;
    let (lines_tx, lines) = std::sync::mpsc::channel::<(usize, String)>();
    let mut watchers: Vec<Option<Worker>> = Vec::new();
    let spawn_watcher = |index: usize, watchers: &mut Vec<Option<Worker>>| -> Result<(), Failure> {
        let mut child = leader_child(&dir, store, &["watch"])?;
        child.forward_lines(&lines_tx, move |line| (index, line))?;
        if index < watchers.len() {
            watchers[index] = Some(child);
        } else {
            watchers.push(Some(child));
        }
        Ok(())
    };
    for index in 0..3 {
        spawn_watcher(index, &mut watchers)?;
    }
    let mut is_leader = [false; 3];
    // Each watcher follows before the first kill: one that started after it could lead
    // from its start, and would never say it took over.
    let mut ready = 0;
    read_until(
        &lines,
        &mut is_leader,
        "the watchers to follow",
        |_, line, _| {
            ready += usize::from(line == "ready follower");
            ready == 3
        },
    )?;
    // The figures are for a leader killed while quiet: it checkpoints its fill 100 ms after
    // its last write. Killed before that, the next leaders would replay the fill (store
    // opens of ~40 ms, not ~2) until one lives 100 ms to checkpoint it, longer than a round.
    std::thread::sleep(Duration::from_millis(300));
    let mut recoveries = Vec::new();
    let mut opens = Vec::new();
    let mut current_leader: Option<usize> = None; // None: the first, separate leader process
    for _ in 0..kills {
        while let Ok((index, line)) = lines.try_recv() {
            note_role(&mut is_leader, index, &line);
        }
        let killed_at = micros_now();
        match current_leader {
            None => {
                let _ = leader.kill();
                let _ = leader.wait();
            }
            Some(index) => {
                drop(watchers[index].take());
                is_leader[index] = false;
            }
        }
        let followers: Vec<usize> = (0..3).filter(|i| Some(*i) != current_leader).collect();
        let mut recovered = std::collections::BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while recovered.len() < followers.len() && Instant::now() < deadline {
            let Ok((index, line)) = lines.recv_timeout(Duration::from_millis(100)) else {
                continue;
            };
            note_role(&mut is_leader, index, &line);
            if let Some(micros) = line.strip_prefix("opened ").and_then(|m| m.parse().ok()) {
                opens.push(Duration::from_micros(micros));
            }
            let mut words = line.split_whitespace();
            if let (Some("gap"), Some(_), Some(to)) = (
                words.next(),
                words.next(),
                words.next().and_then(|t| t.parse::<u64>().ok()),
            ) {
                if followers.contains(&index) && to > killed_at {
                    recovered.entry(index).or_insert(to - killed_at);
                }
            }
        }
        // Followers that never stalled recovered at once.
        let worst = followers
            .iter()
            .map(|i| recovered.get(i).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        recoveries.push(Duration::from_micros(worst));
        if let Some(index) = current_leader {
            spawn_watcher(index, &mut watchers)?;
            read_until(
                &lines,
                &mut is_leader,
                "the new watcher to follow",
                |i, line, _| i == index && line == "ready follower",
            )?;
        }
        // The new leader says so after its first get as leader, which may come after the
        // other followers' gaps.
        if !is_leader.contains(&true) {
            read_until(
                &lines,
                &mut is_leader,
                "a follower to take over",
                |_, _, leads| leads.contains(&true),
            )?;
        }
        current_leader = is_leader.iter().position(|l| *l);
    }
    drop(watchers);
    recoveries.sort();
    opens.sort();
    Ok(json!({
        "kills": kills,
        "all_followers_back_p50_ms": percentile(&recoveries, 0.5) / 1000.0,
        "all_followers_back_p99_ms": percentile(&recoveries, 0.99) / 1000.0,
        "new_leader_store_open_p50_ms": percentile(&opens, 0.5) / 1000.0,
        "new_leader_store_open_p99_ms": percentile(&opens, 0.99) / 1000.0,
    }))
}

/// A probe's first answer after a kill.
struct Answer {
    /// The wall-clock microsecond its get completed.
    micros: u64,
    leads: bool,
    term: u64,
    /// Its store's open time in microseconds, if it leads.
    opened: u64,
}

/// Failover with `followers` idle follower processes, `kills` times: per kill, the time from
/// the SIGKILL of the leader until every follower (the new leader among them) has answered
/// the get it asks the moment it sees its leader gone; and where that time goes, until the
/// new leader answers its own (it then serves), and of that the opening of its store. And
/// the honest memory cost of a follower to its leader: the leader's resident size when it
/// has just started, and again once every follower has joined; and an idle follower's own,
/// resident and private.
pub(super) fn failover_at_scale(
    dir: &Path,
    store: &ToolStore,
    followers: usize,
    kills: usize,
) -> Result<Value, Failure> {
    // Each probe's lines, by its process id, from the moment it is ready.
    let (lines_tx, lines) = std::sync::mpsc::channel::<(u32, String)>();
    let probe = |expected: &str| -> Result<Worker, Failure> {
        let mut child = leader_child(dir, store, &["probe"])?;
        if first_line(&mut child)? != expected {
            return Err(format!("a probe of the failover bench did not say {expected:?}").into());
        }
        let pid = child.id();
        child.forward_lines(&lines_tx, move |line| (pid, line))?;
        Ok(child)
    };
    let mut probes = vec![probe("ready leader")?];
    let first_term = lines
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| "the first probe of the failover bench said nothing")?
        .1;
    let mut term: u64 = first_term
        .strip_prefix("term ")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("the first probe of the failover bench said {first_term:?}"))?;
    let fresh_leader_rss = rss_kib(probes[0].id());
    for _ in 0..followers {
        probes.push(probe("ready follower")?);
    }
    let served_leader_rss = rss_kib(probes[0].id());
    let idle_follower_rss = rss_kib(probes[1].id());
    let idle_follower_private = private_kib(probes[1].id());
    let mut leader = probes[0].id();
    let (mut recoveries, mut serving, mut opens) = (Vec::new(), Vec::new(), Vec::new());
    let mut cpu_each = Vec::new();
    // The CPU time of every probe but the leader, before its kill and once all answered.
    let cpu_of = |probes: &[Worker]| {
        ThreadCpu::of(&probes.iter().map(|worker| worker.id()).collect::<Vec<_>>())
    };
    let cpu_counted = thread_cpu::readable();
    let mut last_said = HashMap::new();
    for _ in 0..kills {
        let index = probes
            .iter()
            .position(|p| p.id() == leader)
            .ok_or("no leader")?;
        let mut killed = probes.swap_remove(index);
        let cpu_before = cpu_of(&probes);
        let killed_at = micros_now();
        let _ = killed.kill();
        let _ = killed.wait();
        // Every probe's answer by a term after the killed leader's: when its get
        // completed, and whether it leads. (An answer given before it knew of the new term
        // is passed over; it asks again once it does.)
        let mut answers = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while answers.len() < probes.len() {
            let wait = deadline.saturating_duration_since(Instant::now());
            let Ok((pid, line)) = lines.recv_timeout(wait) else {
                return Err(unanswered(&mut probes, &answers, &last_said).into());
            };
            last_said.insert(pid, line.clone());
            let words: Vec<&str> = line.split(' ').collect();
            if words[0] == "term" {
                continue; // what a probe says when it starts
            }
            let ["answered", micros, role, answered_by, opened] = words[..] else {
                return Err(format!("a probe of the failover bench said {line:?}").into());
            };
            let (Ok(micros), Ok(answered_by), Ok(opened)) = (
                micros.parse::<u64>(),
                answered_by.parse::<u64>(),
                opened.parse::<u64>(),
            ) else {
                return Err(format!("a probe of the failover bench said {line:?}").into());
            };
            if answered_by > term && probes.iter().any(|p| p.id() == pid) {
                answers.entry(pid).or_insert(Answer {
                    micros,
                    leads: role == "leader",
                    term: answered_by,
                    opened,
                });
            }
        }
        let leaders: Vec<(&u32, &Answer)> = answers.iter().filter(|(_, a)| a.leads).collect();
        let &[(&new_leader, leads)] = leaders.as_slice() else {
            return Err(format!("{} probes lead after a failover", leaders.len()).into());
        };
        if leads.opened == 0 {
            return Err("the new leader of the failover bench did not say its store's open".into());
        }
        leader = new_leader;
        serving.push(Duration::from_micros(
            leads.micros.saturating_sub(killed_at),
        ));
        opens.push(Duration::from_micros(leads.opened));
        term = answers.values().map(|a| a.term).max().unwrap_or(term);
        let last = answers.values().map(|a| a.micros).max();
        let last = last.unwrap_or(killed_at).max(killed_at);
        recoveries.push(Duration::from_micros(last - killed_at));
        if cpu_counted {
            let spent = cpu_of(&probes).since(&cpu_before);
            cpu_each.push(spent / probes.len().max(1) as u32);
        }
        probes.push(probe("ready follower")?);
    }
    recoveries.sort();
    serving.sort();
    opens.sort();
    cpu_each.sort();
    let per_follower = served_leader_rss
        .zip(fresh_leader_rss)
        .map(|(served, fresh)| (served as f64 - fresh as f64) / followers as f64);
    Ok(json!({
        "kills": kills,
        "all_answered_p50_ms": percentile(&recoveries, 0.5) / 1000.0,
        "all_answered_max_ms": percentile(&recoveries, 1.0) / 1000.0,
        "new_leader_answered_p50_ms": percentile(&serving, 0.5) / 1000.0,
        "new_leader_store_open_p50_ms": percentile(&opens, 0.5) / 1000.0,
        "cpu_per_process_p50_us": (!cpu_each.is_empty()).then(|| percentile(&cpu_each, 0.5)),
        "fresh_leader_rss_kib": fresh_leader_rss,
        "leader_rss_with_followers_kib": served_leader_rss,
        "leader_rss_per_follower_kib": per_follower,
        "idle_follower_rss_kib": idle_follower_rss,
        "idle_follower_private_kib": idle_follower_private,
    }))
}

/// Why the probes did not all answer after a kill: how many did, and of each of the
/// others whether it still runs and what it said last.
fn unanswered(
    probes: &mut [Worker],
    answers: &HashMap<u32, Answer>,
    last_said: &HashMap<u32, String>,
) -> String {
    let silent: Vec<String> = probes
        .iter_mut()
        .filter(|probe| !answers.contains_key(&probe.id()))
        .map(|probe| {
            let pid = probe.id();
            let state = match probe.try_wait() {
                Ok(Some(status)) => format!("exited ({status})"),
                Ok(None) => "running".to_owned(),
                Err(error) => format!("in an unknown state ({error})"),
            };
            let said = last_said.get(&pid).map_or("nothing", String::as_str);
            format!("probe {pid} {state}, last said {said:?}")
        })
        .collect();
    format!(
        "probes of the failover bench did not answer within 10 s: {} of {} answered; {}",
        answers.len(),
        probes.len(),
        silent.join("; ")
    )
}

/// How long the followers' CPU is counted while their next leader cannot open its store.
/// Short enough that the holder's patience with a locked store (2 s) outlasts the
/// followers' start and the count.
const HELD_FOR: Duration = Duration::from_millis(500);

/// Followers waiting for a leader that cannot serve yet: `followers` processes start while
/// another program holds the store (a lock holder waits for it, up to 2 s), and their CPU
/// time over [`HELD_FOR`] is counted, per follower and second; then the store is let go and
/// every one of them must be served. What they cost the machine (and the next leader,
/// whose store they share the cores with) while a store opens slowly. `None` on a store
/// that another program cannot hold here (etcd), or without Linux's per-thread CPU times.
pub(super) fn waiting_for_a_held_store(
    dir: &Path,
    store: &ToolStore,
    followers: usize,
) -> Result<Value, Failure> {
    if store.kind() == party_core::BackendKind::Etcd || !thread_cpu::readable() {
        return Ok(Value::Null);
    }
    // A party handle makes the store (a worker is killed when dropped), then it is held.
    let mut creator = leader_child(dir, store, &["idle"])?;
    match first_line(&mut creator)?.as_str() {
        "ready leader" => drop(creator),
        said => return Err(format!("the first process said {said:?}").into()),
    }
    let held = store.open_store(dir)?;
    let holder = leader_child(dir, store, &["idle"])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while party_core::lock::ElectionLock::try_acquire(dir)
        .map_err(|e| e.to_string())?
        .is_some()
    {
        if Instant::now() > deadline {
            return Err("the first process did not take the lock within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut waiting = Vec::new();
    for _ in 0..followers {
        waiting.push(leader_child(dir, store, &["idle"])?);
    }
    // Nothing says a process has started waiting: give them time to, then count.
    std::thread::sleep(Duration::from_millis(100));
    let pids: Vec<u32> = waiting.iter().map(|worker| worker.id()).collect();
    let before = ThreadCpu::of(&pids);
    let started = Instant::now();
    std::thread::sleep(HELD_FOR);
    let spent = ThreadCpu::of(&pids).since(&before);
    let counted = started.elapsed();
    drop(held);
    for mut follower in waiting {
        match first_line(&mut follower)?.as_str() {
            "ready follower" => {}
            said => return Err(format!("a waiting follower said {said:?}").into()),
        }
    }
    drop(holder);
    Ok(json!({
        "followers": followers,
        "cpu_us_per_follower_second":
            spent.as_secs_f64() * 1e6 / followers as f64 / counted.as_secs_f64(),
    }))
}
