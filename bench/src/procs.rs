//! The processes a benchmark starts (`vllm-batch`, `upstream-sim`, `wrk`, Python) and what
//! Linux says about them: CPU seconds from `/proc/<pid>/stat`, resident memory from
//! `/proc/<pid>/status`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

/// A child process whose output goes to a log file; stopped with SIGTERM by [`Proc::stop`],
/// killed if dropped while still running.
pub struct Proc {
    pub name: String,
    pub pid: u32,
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    /// Starts `program args…` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, program: &Path, args: &[String], envs: &[(&str, String)], log: &Path) -> Result<Proc> {
        let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err).kill_on_drop(true);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().with_context(|| format!("starting {}", program.display()))?;
        let pid = child.id().context("child has no pid")?;
        Ok(Proc { name: name.to_string(), pid, log: log.to_path_buf(), child })
    }

    /// User + system CPU seconds the process has used so far.
    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds(self.pid)
    }

    /// Peak resident set size (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        status_kib(self.pid, "VmHWM")
    }

    /// Fails when the process has already exited (with the tail of its log).
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early ({status}); log {}:\n{}", self.name, self.log.display(), tail(&self.log));
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub async fn stop(mut self, grace: Duration) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        if tokio::time::timeout(grace, self.child.wait()).await.is_err() {
            eprintln!("{} did not stop within {grace:?}; killing it", self.name);
            let _ = self.child.kill().await;
        }
    }
}

/// The last lines of a log file, for error messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, 100 on Linux).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// `utime + stime` of `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; fields after its closing parenthesis start
    // at field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    let rest = stat.rsplit_once(')').context("malformed /proc/pid/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / clock_ticks())
}

/// A `kB` line of `/proc/<pid>/status`.
fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

/// A TCP port free right now on 127.0.0.1 (the OS picks it).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `url` until it answers 2xx, failing after `within` or when `proc` exits.
pub async fn wait_ready(proc: &mut Proc, url: &str, within: Duration) -> Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let start = Instant::now();
    loop {
        proc.check_alive()?;
        if let Ok(resp) = http.get(url).send().await {
            if resp.status().is_success() {
                return Ok(());
            }
        }
        if start.elapsed() > within {
            bail!("{} not ready at {url} after {within:?}; log:\n{}", proc.name, tail(&proc.log));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
