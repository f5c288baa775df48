//! What a run measured and how runs are summarised: requests/s, MiB/s, latency percentiles and
//! the back-end's CPU per 1 000 requests (read from `/proc` for its whole process tree, so a
//! sandboxed daemon's forked server counts: each task's run time in nanoseconds, or whole clock
//! ticks when a task ended during the run; a task that both began and ended within the run is
//! seen by neither sample, which the back-ends measured here never do: their serving threads
//! start with the rings), medians over rounds and round-by-round ratios, as a table and as JSON.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

/// One run of one workload on one target.
#[derive(Clone, Debug, Default)]
pub(crate) struct Figures {
    /// Requests answered.
    pub(crate) requests: u64,
    /// Data bytes moved.
    pub(crate) bytes: u64,
    /// From the first request sent to the last reply seen.
    pub(crate) elapsed: Duration,
    /// Back-end CPU (user and system) over that time.
    pub(crate) cpu: Duration,
    /// Each request's latency, in nanoseconds ([`nanos`]).
    pub(crate) latencies: Vec<u64>,
}

/// The numbers a run is reported by.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Summary {
    /// Requests the run made (the median of the rounds', in [`medians`]).
    pub(crate) requests: f64,
    pub(crate) rate: f64,
    pub(crate) mib: f64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    /// Back-end CPU milliseconds per 1 000 requests (microseconds per request).
    pub(crate) cpu: f64,
}

/// A latency as [`Figures::latencies`] keeps it (microseconds would round a host call of a
/// few hundred nanoseconds to 0, and a request of 15.9 us to 15).
pub(crate) fn nanos(latency: Duration) -> u64 {
    u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX)
}

impl Figures {
    pub(crate) fn summary(&self) -> Summary {
        let secs = self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let pick = |q: f64| -> f64 {
            if sorted.is_empty() {
                return 0.0;
            }
            let at = ((sorted.len() - 1) as f64 * q).round() as usize;
            sorted[at.min(sorted.len() - 1)] as f64 / 1000.0
        };
        Summary {
            requests: self.requests as f64,
            rate: self.requests as f64 / secs,
            mib: self.bytes as f64 / secs / f64::from(1u32 << 20),
            p50: pick(0.5),
            p99: pick(0.99),
            cpu: self.cpu.as_secs_f64() * 1e6 / (self.requests.max(1) as f64),
        }
    }
}

/// The middle value; of an even number, the mean of the two in the middle.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let half = values.len() / 2;
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[half],
        _ => (values[half - 1] + values[half]) / 2.0,
    }
}

/// Per-metric medians over rounds.
pub(crate) fn medians(runs: &[Summary]) -> Summary {
    let of = |f: fn(&Summary) -> f64| median(runs.iter().map(f).collect());
    Summary {
        requests: of(|s| s.requests),
        rate: of(|s| s.rate),
        mib: of(|s| s.mib),
        p50: of(|s| s.p50),
        p99: of(|s| s.p99),
        cpu: of(|s| s.cpu),
    }
}

/// Medians of the round-by-round ratios a/b: (requests/s, CPU per request).
pub(crate) fn ratios(a: &[Summary], b: &[Summary]) -> (f64, f64) {
    let pairs: Vec<(&Summary, &Summary)> = a.iter().zip(b).collect();
    let rate = median(pairs.iter().map(|(a, b)| a.rate / b.rate.max(f64::MIN_POSITIVE)).collect());
    // A target whose CPU was below the clock's resolution has no ratio.
    let cpu = median(
        pairs.iter().map(|(a, b)| if b.cpu > 0.0 { a.cpu / b.cpu } else { f64::NAN }).collect(),
    );
    (rate, cpu)
}

/// What [`cpu_sample`] read of a process tree: each task's CPU time so far, by task id (its
/// `schedstat`, in nanoseconds), and the tree's clock ticks (`stat`'s user and system times,
/// which keep what ended threads and reaped children spent, in whole ticks of 10 ms).
#[derive(Debug, Default)]
pub(crate) struct CpuSample {
    tasks: HashMap<u32, u64>,
    ticks: Duration,
}

/// Samples the CPU time of `pid` and every process below it.
pub(crate) fn cpu_sample(pid: u32) -> CpuSample {
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    let mut sample = CpuSample::default();
    let mut ticks = 0u64;
    let mut pending = vec![pid];
    let mut seen = std::collections::HashSet::new();
    while let Some(pid) = pending.pop() {
        // A child listed by its parent's task and found again by its parent pid counts once.
        if !seen.insert(pid) {
            continue;
        }
        ticks += own_ticks(pid);
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        let mut listed = true;
        for task in tasks.flatten() {
            let tid = task.file_name().to_str().and_then(|t| t.parse::<u32>().ok());
            let ran = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()));
            if let (Some(tid), Some(ran)) = (tid, ran) {
                sample.tasks.insert(tid, ran);
            }
            match std::fs::read_to_string(task.path().join("children")) {
                Ok(list) => {
                    pending.extend(list.split_whitespace().filter_map(|p| p.parse::<u32>().ok()))
                }
                Err(_) => listed = false,
            }
        }
        // A kernel without CONFIG_PROC_CHILDREN lists no children: they are found by their
        // parent (a forking back-end serves from its child).
        if !listed {
            pending.extend(children_by_parent(pid));
        }
    }
    sample.ticks = Duration::from_secs_f64(ticks as f64 / per_second as f64);
    sample
}

/// The CPU the tree spent from `before` to `after`: to the nanosecond from its tasks' run
/// times when every task of `before` is still there, else in whole ticks (a task that ended
/// took its run time with it; the ticks keep it).
pub(crate) fn cpu_between(before: &CpuSample, after: &CpuSample) -> Duration {
    let kept = before.tasks.keys().all(|tid| after.tasks.contains_key(tid));
    if !kept || after.tasks.is_empty() {
        return after.ticks.saturating_sub(before.ticks);
    }
    let ran = after
        .tasks
        .iter()
        .map(|(tid, ns)| ns.saturating_sub(before.tasks.get(tid).copied().unwrap_or(0)));
    Duration::from_nanos(ran.sum())
}

/// The processes whose parent is `pid`, from every `/proc/<pid>/stat`.
fn children_by_parent(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()))
        .filter(|&child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            // Field 4, after the command's closing parenthesis and the state.
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            after.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid)
        })
        .collect()
}

/// utime + stime + cutime + cstime of one process, in clock ticks.
fn own_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    // The command name may hold spaces: the fields that count follow its closing parenthesis.
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of stat(5), so utime (14) is at 11 here.
    fields.get(11..15).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
}

/// The CPU time the calling thread has spent, to the nanosecond.
pub(crate) fn thread_cpu() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a timespec the call fills; the clock always exists on Linux.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } != 0 {
        return Duration::ZERO;
    }
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    Duration::new(secs, u32::try_from(now.tv_nsec).unwrap_or(0))
}

/// One target's rounds of one workload, for the JSON report.
pub(crate) struct Entry<'a> {
    pub(crate) workload: &'a str,
    pub(crate) target: &'a str,
    pub(crate) runs: &'a [Summary],
}

fn summary_json(out: &mut String, s: &Summary) {
    let _ = write!(
        out,
        "{{\"requests\":{:.0},\"requests_per_s\":{:.1},\"mib_per_s\":{:.2},\"p50_us\":{:.1},\"p99_us\":{:.1},\
         \"cpu_ms_per_1000_requests\":{:.3}}}",
        s.requests, s.rate, s.mib, s.p50, s.p99, s.cpu
    );
}

/// The whole report as JSON.
pub(crate) fn json(queues: u16, depth: u16, requests: u64, entries: &[Entry<'_>]) -> String {
    let mut out =
        format!("{{\"queues\":{queues},\"depth\":{depth},\"requests\":{requests},\"results\":[");
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"workload\":\"{}\",\"target\":{:?},\"median\":",
            entry.workload, entry.target
        );
        summary_json(&mut out, &medians(entry.runs));
        out.push_str(",\"rounds\":[");
        for (j, run) in entry.runs.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            summary_json(&mut out, run);
        }
        out.push_str("]}");
    }
    out.push_str("]}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(tasks: &[(u32, u64)], ticks_ms: u64) -> CpuSample {
        CpuSample { tasks: tasks.iter().copied().collect(), ticks: Duration::from_millis(ticks_ms) }
    }

    /// Nanoseconds from the tasks when all stayed, ticks when one ended in between.
    #[test]
    fn cpu_between_samples() {
        let before = sample(&[(1, 1_000), (2, 5_000)], 10);
        let after = sample(&[(1, 4_000), (2, 5_500), (3, 700)], 20);
        assert_eq!(cpu_between(&before, &after), Duration::from_nanos(3_000 + 500 + 700));
        let ended = sample(&[(1, 4_000)], 30);
        assert_eq!(cpu_between(&before, &ended), Duration::from_millis(20));
    }

    /// The median of an even number of rounds is the mean of the middle two (the upper one
    /// biased every figure up).
    #[test]
    fn medians_of_odd_and_even_rounds() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![5.0, 1.0]), 3.0);
        assert_eq!(median(Vec::new()), 0.0);
    }

    /// A child is found by its parent as the kernel's children lists find it.
    #[test]
    fn children_are_found_by_their_parent() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().expect("sleep");
        let found = children_by_parent(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&child.id()), "{found:?}");
    }

    /// This thread's clock moves with work, and a tree sample sees this process's tasks.
    #[test]
    fn this_threads_cpu_and_this_process_sample() {
        let start = thread_cpu();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(thread_cpu() > start);
        let here = cpu_sample(std::process::id());
        assert!(!here.tasks.is_empty(), "schedstat of this process's threads");
    }
}
