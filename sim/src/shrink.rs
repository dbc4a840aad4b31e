//! Shrinking a failing seed: the smallest [`Schedule`] of it found that still shows the
//! same violation. In rounds until a round changes nothing: the fewest processes that
//! still fail, then delta debugging (Zeller's ddmin) over the faults carried out, then over
//! the workload steps.
//!
//! "The same violation" is the first violation of the seed's own run with its numbers
//! blanked out (operation and process numbers change as the run is cut down): a cut-down
//! run shows it when one of its violations reads the same.

use std::collections::BTreeSet;

use crate::schedule::Schedule;
use crate::world::MOST_PROCESSES;
use crate::{run_schedule, Injection};

/// What a shrink found.
#[derive(Debug, Clone)]
pub struct Shrunk {
    pub schedule: Schedule,
    /// The violation kept all along, as the smallest run reports it.
    pub violation: String,
    /// Faults and workload steps carried out: by the seed's own run, and by the smallest.
    pub before: (usize, usize),
    pub after: (usize, usize),
    /// Runs simulated to get there.
    pub runs: usize,
}

/// Shrinks `seed`'s run; `None` when it shows no violation.
pub fn shrink(seed: u64, injection: Injection) -> Option<Shrunk> {
    let own = run_schedule(Schedule::of(seed), injection);
    let target = blank_numbers(own.violations.first()?);
    let mut search = Search {
        injection,
        target,
        runs: 1,
    };
    let all = |turns: u32| Some((0..turns).collect::<BTreeSet<u32>>());
    let mut best = Schedule {
        faults: all(own.fault_turns),
        ops: all(own.op_turns),
        ..Schedule::of(seed)
    };
    loop {
        let before = best.clone();
        let most = best.processes.unwrap_or(MOST_PROCESSES);
        if let Some(fewer) = (1..most)
            .map(|processes| Schedule {
                processes: Some(processes),
                ..best.clone()
            })
            .find(|fewer| search.fails(fewer))
        {
            best = fewer;
        }
        best = search.fewest_turns(&best, |schedule| &mut schedule.faults);
        best = search.fewest_turns(&best, |schedule| &mut schedule.ops);
        if best == before {
            break;
        }
    }
    let smallest = run_schedule(best.clone(), injection);
    let violation = smallest
        .violations
        .iter()
        .find(|v| blank_numbers(v) == search.target)
        .cloned()
        .unwrap_or_default();
    Some(Shrunk {
        before: (own.fault_turns as usize, own.op_turns as usize),
        after: (
            carried_out(&best.faults, smallest.fault_turns),
            carried_out(&best.ops, smallest.op_turns),
        ),
        schedule: best,
        violation,
        runs: search.runs,
    })
}

/// How many of `turns` turns a kept set carries out.
fn carried_out(kept: &Option<BTreeSet<u32>>, turns: u32) -> usize {
    match kept {
        Some(kept) => kept.range(..turns).count(),
        None => turns as usize,
    }
}

struct Search {
    injection: Injection,
    target: String,
    runs: usize,
}

impl Search {
    /// `best` with the fewest of the turns `turns` picks (its faults, or its workload
    /// steps) that still fail, by ddmin.
    fn fewest_turns(
        &mut self,
        best: &Schedule,
        turns: fn(&mut Schedule) -> &mut Option<BTreeSet<u32>>,
    ) -> Schedule {
        let kept_with = |kept: &[u32]| {
            let mut schedule = best.clone();
            *turns(&mut schedule) = Some(kept.iter().copied().collect());
            schedule
        };
        let mut all = best.clone();
        let kept: Vec<u32> = turns(&mut all).iter().flatten().copied().collect();
        let fewest = ddmin(kept, |kept| self.fails(&kept_with(kept)));
        kept_with(&fewest)
    }

    fn fails(&mut self, schedule: &Schedule) -> bool {
        self.runs += 1;
        let result = run_schedule(schedule.clone(), self.injection);
        result
            .violations
            .iter()
            .any(|violation| blank_numbers(violation) == self.target)
    }
}

/// `text` with every run of digits made `#`: two violations are the same when these agree.
pub fn blank_numbers(text: &str) -> String {
    let mut blank = String::with_capacity(text.len());
    let mut in_number = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                blank.push('#');
            }
            in_number = true;
        } else {
            blank.push(c);
            in_number = false;
        }
    }
    blank
}

/// Zeller's ddmin: a subset of `items` for which `fails` holds, from which no single item
/// can be removed (1-minimal), given that `fails(items)` holds.
fn ddmin(mut items: Vec<u32>, mut fails: impl FnMut(&[u32]) -> bool) -> Vec<u32> {
    let mut parts = 2;
    while items.len() >= 2 {
        let size = items.len().div_ceil(parts);
        let chunks: Vec<Vec<u32>> = items.chunks(size).map(<[u32]>::to_vec).collect();
        let mut reduced = false;
        for (i, chunk) in chunks.iter().enumerate() {
            if fails(chunk) {
                items = chunk.clone();
                parts = 2;
                reduced = true;
                break;
            }
            let complement: Vec<u32> = chunks
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .flat_map(|(_, c)| c.iter().copied())
                .collect();
            if fails(&complement) {
                items = complement;
                parts = (parts - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if parts >= items.len() {
                break;
            }
            parts = (parts * 2).min(items.len());
        }
    }
    if items.len() == 1 && fails(&[]) {
        items.clear();
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddmin_finds_the_items_that_matter() {
        let items: Vec<u32> = (0..100).collect();
        let mut calls = 0;
        let kept = ddmin(items, |subset| {
            calls += 1;
            subset.contains(&17) && subset.contains(&64)
        });
        assert_eq!(kept, vec![17, 64]);
        assert!(calls < 100, "{calls} tries");
        assert_eq!(ddmin((0..10).collect(), |_| true), Vec::<u32>::new());
        assert_eq!(ddmin(vec![5], |subset| subset == [5]), vec![5]);
    }

    #[test]
    fn numbers_are_blanked_for_the_comparison() {
        assert_eq!(
            blank_numbers("op12 was acknowledged but never committed (p3)"),
            "op# was acknowledged but never committed (p#)"
        );
    }
}
