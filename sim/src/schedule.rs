//! A run of one seed, possibly cut down: fewer processes, and only some of the seed's
//! faults and workload steps. The seed still draws everything else (the network's delays,
//! what each step does); a fault or a step left out still takes its turn, at its time, but
//! does nothing. Turns are numbered as they come: a fault left out can change which come
//! after it (a process not crashed keeps taking workload turns), so [`crate::shrink`]
//! checks every cut it tries. What it produces, and what `party-sim --seed N --processes
//! P --faults LIST --ops LIST` replays.

use std::collections::BTreeSet;
use std::fmt::Write;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    pub seed: u64,
    /// At most this many processes; `None`: as many as the seed draws.
    pub processes: Option<usize>,
    /// The faults carried out, by their number in the run (0 first); `None`: every one.
    pub faults: Option<BTreeSet<u32>>,
    /// The workload steps carried out, by their number in the run; `None`: every one.
    pub ops: Option<BTreeSet<u32>>,
}

impl Schedule {
    /// The seed's own run, nothing left out.
    pub fn of(seed: u64) -> Schedule {
        Schedule {
            seed,
            ..Schedule::default()
        }
    }

    /// Whether the run carries out its fault number `index`.
    pub fn keeps_fault(&self, index: u32) -> bool {
        self.faults
            .as_ref()
            .is_none_or(|kept| kept.contains(&index))
    }

    /// Whether the run carries out its workload step number `index`.
    pub fn keeps_op(&self, index: u32) -> bool {
        self.ops.as_ref().is_none_or(|kept| kept.contains(&index))
    }

    /// The `party-sim` arguments that replay this run (after `--inject NAME`, if any).
    pub fn arguments(&self) -> String {
        let mut arguments = format!("--seed {}", self.seed);
        if let Some(processes) = self.processes {
            let _ = write!(arguments, " --processes {processes}");
        }
        if let Some(faults) = &self.faults {
            let _ = write!(arguments, " --faults {}", numbers(faults));
        }
        if let Some(ops) = &self.ops {
            let _ = write!(arguments, " --ops {}", numbers(ops));
        }
        arguments
    }
}

/// Numbers as `party-sim` takes them: `1,4-7,9`, or `none`.
pub fn numbers(set: &BTreeSet<u32>) -> String {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &n in set {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == n => *end = n,
            _ => runs.push((n, n)),
        }
    }
    if runs.is_empty() {
        return "none".into();
    }
    let runs: Vec<String> = runs
        .into_iter()
        .map(|(start, end)| match start == end {
            true => start.to_string(),
            false => format!("{start}-{end}"),
        })
        .collect();
    runs.join(",")
}

/// Reads what [`numbers`] writes.
pub fn parse_numbers(text: &str) -> Result<BTreeSet<u32>, String> {
    let mut set = BTreeSet::new();
    if text == "none" {
        return Ok(set);
    }
    for part in text.split(',') {
        let (start, end) = part.split_once('-').unwrap_or((part, part));
        let number = |n: &str| {
            n.trim()
                .parse::<u32>()
                .map_err(|e| format!("{part:?}: {e}"))
        };
        let (start, end) = (number(start)?, number(end)?);
        if start > end {
            return Err(format!("{part:?}: a range runs upwards"));
        }
        set.extend(start..=end);
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_as_ranges_and_read_back() {
        for text in ["none", "3", "0-2,5,7-9", "1,3,5"] {
            let set = parse_numbers(text).unwrap();
            assert_eq!(numbers(&set), text);
        }
        assert_eq!(numbers(&BTreeSet::from([4, 2, 3, 9])), "2-4,9");
        assert!(parse_numbers("5-2").is_err());
        assert!(parse_numbers("x").is_err());
        assert!(parse_numbers("1,,2").is_err());
    }

    #[test]
    fn the_arguments_name_only_what_is_cut_down() {
        assert_eq!(Schedule::of(7).arguments(), "--seed 7");
        let schedule = Schedule {
            seed: 7,
            processes: Some(2),
            faults: Some(BTreeSet::new()),
            ops: Some(BTreeSet::from([1, 2, 3, 8])),
        };
        assert_eq!(
            schedule.arguments(),
            "--seed 7 --processes 2 --faults none --ops 1-3,8"
        );
    }
}
