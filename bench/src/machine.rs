//! The machine a benchmark runs on is shared: this file keeps two runs of the driver from
//! overlapping (a lock file), and records what else used the CPU while one ran (every process
//! outside the driver's own process tree above a threshold), so each result carries the
//! evidence of how quiet its machine was.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// A machine-wide lock: one benchmark at a time. Removed on drop.
pub struct RunLock {
    path: PathBuf,
}

impl RunLock {
    /// Takes `path`, or fails naming the live process that holds it (a lock left by a dead
    /// process is taken over).
    pub fn acquire(path: PathBuf) -> Result<RunLock> {
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    writeln!(f, "{}", std::process::id())?;
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    let pid: Option<u32> = holder.trim().parse().ok();
                    if let Some(pid) = pid.filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists()) {
                        bail!(
                            "another benchmark is running (pid {pid}, lock {}); two at once would disturb each \
                             other's figures",
                            path.display()
                        );
                    }
                    std::fs::remove_file(&path)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        bail!("could not take {}", path.display())
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Commands using more than this share of one CPU between two samples are recorded.
const BUSY_PERCENT: f64 = 10.0;
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// `(comm, ppid, utime + stime ticks)` of every process.
fn processes() -> HashMap<u32, (String, u32, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = stat[open + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let num = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        out.insert(pid, (comm, num(1) as u32, num(11) + num(12)));
    }
    out
}

/// Whether `pid` is `root` or one of its descendants.
fn descends_from(pid: u32, root: u32, procs: &HashMap<u32, (String, u32, u64)>) -> bool {
    let mut p = pid;
    for _ in 0..64 {
        if p == root {
            return true;
        }
        match procs.get(&p) {
            Some((_, ppid, _)) if *ppid != 0 && *ppid != p => p = *ppid,
            _ => return false,
        }
    }
    false
}

/// Samples the machine every 5 s until `stop` (and once more then): the 1-minute load average,
/// and every command outside this driver's process tree that used more than 10 % of a CPU.
pub async fn watch_background(stop: CancellationToken) -> Value {
    let me = std::process::id();
    let ticks = crate::procs::clock_ticks();
    let start = Instant::now();
    let mut last = (Instant::now(), processes());
    let mut max_load = 0.0f64;
    let mut samples = 0u64;
    // comm -> (max % of a CPU, samples seen busy)
    let mut others: HashMap<String, (f64, u64)> = HashMap::new();
    loop {
        // The last sample is taken when the benchmark ends, so a short run gets one too.
        let last_one = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(SAMPLE_EVERY) => false,
        };
        let now = (Instant::now(), processes());
        let secs = now.0.duration_since(last.0).as_secs_f64();
        if secs < 0.5 {
            break;
        }
        // CPU of the processes outside our tree, summed per command name.
        let mut by_comm: HashMap<&str, f64> = HashMap::new();
        for (pid, (comm, _, t)) in &now.1 {
            let Some((_, _, before)) = last.1.get(pid) else { continue };
            if !descends_from(*pid, me, &now.1) {
                *by_comm.entry(comm).or_default() += 100.0 * (t.saturating_sub(*before)) as f64 / ticks / secs;
            }
        }
        for (comm, percent) in by_comm.into_iter().filter(|(_, p)| *p >= BUSY_PERCENT) {
            let e = others.entry(comm.to_string()).or_insert((0.0, 0));
            e.0 = e.0.max(percent);
            e.1 += 1;
        }
        let load1: f64 = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0.0);
        max_load = max_load.max(load1);
        samples += 1;
        last = now;
        if last_one {
            break;
        }
    }
    let mut list: Vec<(String, (f64, u64))> = others.into_iter().collect();
    list.sort_by_key(|(_, (_, busy))| std::cmp::Reverse(*busy));
    json!({
        "sample_period_s": SAMPLE_EVERY.as_secs(),
        "samples": samples,
        "seconds": start.elapsed().as_secs(),
        "max_loadavg_1m": max_load,
        // Commands outside the benchmark that used >= 10 % of a CPU (all their processes
        // together) between two samples: the highest such share and in how many samples.
        "other_busy_processes": list
            .iter()
            .map(|(comm, (max, n))| json!({"comm": comm, "max_cpu_percent": max.round(), "busy_samples": n}))
            .collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_tree_is_recognised() {
        let procs = processes();
        let me = std::process::id();
        assert!(descends_from(me, me, &procs));
        assert!(!descends_from(1, me, &procs));
    }

    #[test]
    fn one_run_at_a_time() {
        let path = std::env::temp_dir().join(format!("vllm-batch-bench-test-{}.lock", std::process::id()));
        let lock = RunLock::acquire(path.clone()).unwrap();
        assert!(RunLock::acquire(path.clone()).is_err(), "a live holder keeps the lock");
        drop(lock);
        // A lock left by a process that is gone is taken over.
        std::fs::write(&path, "4294967").unwrap();
        drop(RunLock::acquire(path.clone()).unwrap());
        assert!(!path.exists());
    }
}
