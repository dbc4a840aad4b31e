//! The CPU time the threads of some processes have run, from the scheduler's own count
//! (Linux's `/proc/PID/task/TID/schedstat`).

use std::collections::HashMap;
use std::time::Duration;

/// The CPU time each thread of some processes has run, from the scheduler's own count.
pub(super) struct ThreadCpu(HashMap<(u32, String), u64>);

impl ThreadCpu {
    pub(super) fn of(pids: &[u32]) -> ThreadCpu {
        let mut threads = HashMap::new();
        for &pid in pids {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for task in tasks.flatten() {
                let stat = std::fs::read_to_string(task.path().join("schedstat"));
                let ran = stat
                    .ok()
                    .and_then(|stat| stat.split_whitespace().next()?.parse().ok());
                if let Some(ran) = ran {
                    let tid = task.file_name().to_string_lossy().into_owned();
                    threads.insert((pid, tid), ran);
                }
            }
        }
        ThreadCpu(threads)
    }

    /// What the threads alive now ran since `before`. A thread that ended meanwhile (a
    /// blocking-pool thread idle for 10 s, say) is not counted: a sum over the threads
    /// alive at each end would go back by its whole run.
    pub(super) fn since(&self, before: &ThreadCpu) -> Duration {
        let nanos = self
            .0
            .iter()
            .map(|(thread, ran)| ran.saturating_sub(before.0.get(thread).copied().unwrap_or(0)));
        Duration::from_nanos(nanos.sum())
    }
}

/// Whether this system tells threads' CPU times ([`ThreadCpu`] reads nothing otherwise).
pub(super) fn readable() -> bool {
    std::fs::read_to_string("/proc/thread-self/schedstat").is_ok()
}
