//! Starting the system under test from the release binaries: an `upstream-sim` (engine or
//! zero-latency mode) and a `vllm-batch serve` on fresh ports and a fresh data folder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use upstream_sim::CostModel;

use crate::api::{Api, Sim};
use crate::procs::{free_port, wait_ready, Proc};

/// Where binaries are, where scratch files and results go.
pub struct Ctx {
    pub bin_dir: PathBuf,
    pub work_dir: PathBuf,
    pub results_dir: PathBuf,
    pub repo_root: PathBuf,
    pub tag: Option<String>,
}

impl Ctx {
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// A fresh (emptied) scratch folder `work_dir/name`.
    pub fn scratch(&self, name: &str) -> Result<PathBuf> {
        let dir = self.work_dir.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}

/// How the simulator is configured.
#[derive(Clone, Copy, Debug)]
pub enum SimMode {
    /// Continuous batching with this cost model and capacity.
    Engine { cost: CostModel, max_num_seqs: usize },
    /// Answers at once; `max_num_seqs` large enough never to queue.
    ZeroLatency,
}

/// Starts `upstream-sim` on a free port; its log goes to `dir/<name>.log`.
pub async fn start_sim(ctx: &Ctx, dir: &Path, name: &str, mode: SimMode) -> Result<(Proc, Sim)> {
    start_sim_with(ctx, dir, name, mode, &[]).await
}

/// Like `start_sim`, with `extra` arguments.
pub async fn start_sim_with(ctx: &Ctx, dir: &Path, name: &str, mode: SimMode, extra: &[&str]) -> Result<(Proc, Sim)> {
    let port = free_port()?;
    let mut args = vec!["--port".to_string(), port.to_string()];
    args.extend(extra.iter().map(|a| a.to_string()));
    match mode {
        SimMode::Engine { cost, max_num_seqs } => args.extend([
            "--max-num-seqs".into(),
            max_num_seqs.to_string(),
            "--step-base-ms".into(),
            cost.step_base_ms.to_string(),
            "--step-per-seq-ms".into(),
            cost.step_per_seq_ms.to_string(),
            "--prefill-ms-per-token".into(),
            cost.prefill_ms_per_token.to_string(),
        ]),
        SimMode::ZeroLatency => args.extend(["--max-num-seqs".into(), "1000000".into()]),
    }
    let envs = [("RUST_LOG", "warn".to_string())];
    let mut proc = Proc::spawn(name, &ctx.bin("upstream-sim"), &args, &envs, &dir.join(format!("{name}.log")))?;
    let sim = Sim::new(format!("http://127.0.0.1:{port}"));
    wait_ready(&mut proc, &format!("{}/health", sim.root), Duration::from_secs(20)).await?;
    Ok((proc, sim))
}

/// Starts `vllm-batch serve` with its defaults, on a free port, data in `dir/data`,
/// upstream `upstream`, plus `extra` arguments.
pub async fn start_serve(ctx: &Ctx, dir: &Path, upstream: &str, extra: &[String]) -> Result<(Proc, Api)> {
    let port = free_port()?;
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--port".into(),
        port.to_string(),
        "--data-dir".into(),
        dir.join("data").display().to_string(),
        "--upstream".into(),
        upstream.into(),
    ];
    args.extend(extra.iter().cloned());
    let mut proc = Proc::spawn("vllm-batch serve", &ctx.bin("vllm-batch"), &args, &[], &dir.join("serve.log"))?;
    wait_ready(&mut proc, &format!("http://127.0.0.1:{port}/health"), Duration::from_secs(30)).await?;
    Ok((proc, Api::new(format!("http://127.0.0.1:{port}/v1"))))
}

/// `results_dir/<name>[-tag]<suffix>` (the folder is created).
pub fn result_path(ctx: &Ctx, name: &str, suffix: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(&ctx.results_dir)?;
    let file = match &ctx.tag {
        Some(tag) => format!("{name}-{tag}{suffix}"),
        None => format!("{name}{suffix}"),
    };
    Ok(ctx.results_dir.join(file))
}

/// Writes a benchmark's result to `results_dir/<name>[-tag].json` and prints it.
pub fn write_result(ctx: &Ctx, name: &str, value: &serde_json::Value) -> Result<PathBuf> {
    let path = result_path(ctx, name, ".json")?;
    let mut text = String::new();
    pretty(value, 0, &mut text);
    std::fs::write(&path, format!("{text}\n"))?;
    println!("{text}");
    eprintln!("result written to {}", path.display());
    Ok(path)
}

/// Pretty JSON, except that arrays of numbers (and arrays of such arrays: time series) stay
/// on one line.
fn pretty(value: &serde_json::Value, indent: usize, out: &mut String) {
    use serde_json::Value;
    let flat = |v: &Value| !matches!(v, Value::Array(_) | Value::Object(_));
    let pad = |n: usize| "  ".repeat(n);
    match value {
        Value::Array(items)
            if items.iter().all(|i| flat(i) || matches!(i, Value::Array(inner) if inner.iter().all(flat))) =>
        {
            out.push_str(&value.to_string())
        }
        Value::Array(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                pretty(item, indent + 1, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            out.push_str("{\n");
            for (i, (k, v)) in map.iter().enumerate() {
                out.push_str(&format!("{}{}: ", pad(indent + 1), Value::String(k.clone())));
                pretty(v, indent + 1, out);
                out.push_str(if i + 1 < map.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Facts about the machine that belong next to every figure.
pub fn machine() -> serde_json::Value {
    let cmd = |c: &str, a: &[&str]| {
        std::process::Command::new(c)
            .args(a)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_total = meminfo.lines().next().unwrap_or_default().to_string();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        .unwrap_or_default();
    serde_json::json!({
        "cpus": cmd("nproc", &[]),
        "cpu_model": model,
        "mem_total": mem_total,
        "kernel": cmd("uname", &["-r"]),
        "loadavg_at_start": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "git_commit": cmd("git", &["rev-parse", "--short", "HEAD"]),
    })
}
