//! What a run measured and how runs are summarised: requests/s, MiB/s, latency percentiles and
//! the back-end's CPU per 1 000 requests (read from `/proc` for its whole process tree, so a
//! sandboxed daemon's forked server counts), medians over rounds and round-by-round ratios, as a
//! table and as JSON.

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
    /// Each request's latency, in microseconds.
    pub(crate) latencies: Vec<u32>,
}

/// The numbers a run is reported by.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Summary {
    pub(crate) rate: f64,
    pub(crate) mib: f64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    /// Back-end CPU milliseconds per 1 000 requests (microseconds per request).
    pub(crate) cpu: f64,
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
            f64::from(sorted[at.min(sorted.len() - 1)])
        };
        Summary {
            rate: self.requests as f64 / secs,
            mib: self.bytes as f64 / secs / f64::from(1u32 << 20),
            p50: pick(0.5),
            p99: pick(0.99),
            cpu: self.cpu.as_secs_f64() * 1e6 / (self.requests.max(1) as f64),
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Per-metric medians over rounds.
pub(crate) fn medians(runs: &[Summary]) -> Summary {
    let of = |f: fn(&Summary) -> f64| median(runs.iter().map(f).collect());
    Summary {
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

/// CPU time of `pid` and every process below it (reaped children included).
pub(crate) fn tree_cpu(pid: u32) -> Duration {
    let ticks = rustix::param::clock_ticks_per_second().max(1);
    let mut total = 0u64;
    let mut pending = vec![pid];
    while let Some(pid) = pending.pop() {
        total += own_ticks(pid);
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for task in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
                pending.extend(list.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    Duration::from_secs_f64(total as f64 / ticks as f64)
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

/// One target's rounds of one workload, for the JSON report.
pub(crate) struct Entry<'a> {
    pub(crate) workload: &'a str,
    pub(crate) target: &'a str,
    pub(crate) runs: &'a [Summary],
}

fn summary_json(out: &mut String, s: &Summary) {
    let _ = write!(
        out,
        "{{\"requests_per_s\":{:.1},\"mib_per_s\":{:.2},\"p50_us\":{:.0},\"p99_us\":{:.0},\
         \"cpu_ms_per_1000_requests\":{:.3}}}",
        s.rate, s.mib, s.p50, s.p99, s.cpu
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
