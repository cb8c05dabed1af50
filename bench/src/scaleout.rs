//! Benchmark 6 (scale-out): one `vllm-batch api` and N `vllm-batch worker`s on PostgreSQL,
//! sharing a data folder, against a zero-latency simulator; throughput per worker count.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::api::Api;
use crate::input::{self, Shape};
use crate::procs::{free_port, wait_ready, Proc};
use crate::stack::{self, Ctx, SimMode};

pub struct Options {
    pub requests: u64,
    pub workers: Vec<usize>,
    pub seed: u64,
    /// `postgres://USER:PASSWORD@HOST:PORT` (no database); `tests/pg/start.sh` when absent.
    pub database_url: Option<String>,
}

pub async fn run(ctx: &Ctx, name: &str, opts: &Options) -> Result<Value> {
    let server = match &opts.database_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => start_postgres(ctx)?,
    };
    let dir = ctx.scratch(name)?;
    let input = input::generate(&dir.join("input.jsonl"), Shape::CHAT, opts.seed, Some(opts.requests), None)?;
    eprintln!("{name}: {} requests, {} bytes", input.requests, input.bytes);
    let mut runs = Vec::new();
    for &n in &opts.workers {
        let run_dir = dir.join(format!("workers-{n}"));
        std::fs::create_dir_all(&run_dir)?;
        let db = format!("bench_scaleout_{n}");
        psql(&server, &format!("DROP DATABASE IF EXISTS {db}"))?;
        psql(&server, &format!("CREATE DATABASE {db}"))?;
        let database_url = format!("{server}/{db}");
        let data_dir = run_dir.join("data").display().to_string();
        let common = ["--database-url".to_string(), database_url.clone(), "--data-dir".into(), data_dir];

        let migrate = std::process::Command::new(ctx.bin("vllm-batch")).arg("migrate").args(&common).output()?;
        if !migrate.status.success() {
            bail!("migrate failed: {}", String::from_utf8_lossy(&migrate.stderr));
        }
        let (sim_proc, sim) = stack::start_sim(ctx, &run_dir, "sim", SimMode::ZeroLatency).await?;
        let upstream = ["--upstream".to_string(), sim.base_url()];
        let port = free_port()?;
        let mut api_args = vec!["api".to_string(), "--port".into(), port.to_string()];
        api_args.extend(common.iter().cloned().chain(upstream.iter().cloned()));
        let mut api_proc =
            Proc::spawn("vllm-batch api", &ctx.bin("vllm-batch"), &api_args, &[], &run_dir.join("api.log"))?;
        wait_ready(&mut api_proc, &format!("http://127.0.0.1:{port}/health"), Duration::from_secs(30)).await?;
        let mut workers = Vec::new();
        for i in 0..n {
            let mut args = vec!["worker".to_string(), "--metrics-port".into(), "0".into()];
            args.extend(["--worker-id".into(), format!("bench-worker-{i}")]);
            args.extend(common.iter().cloned().chain(upstream.iter().cloned()));
            let log = run_dir.join(format!("worker-{i}.log"));
            workers.push(Proc::spawn(&format!("worker {i}"), &ctx.bin("vllm-batch"), &args, &[], &log)?);
        }
        let api = Api::new(format!("http://127.0.0.1:{port}/v1"));

        let cpu0: Vec<f64> = workers.iter().map(Proc::cpu_seconds).collect::<Result<_>>()?;
        let api_cpu0 = api_proc.cpu_seconds()?;
        let run = api.run_batch(&input.path).await?;
        for w in &mut workers {
            w.check_alive()?;
        }
        let worker_cpu: Vec<f64> =
            workers.iter().zip(&cpu0).map(|(w, c0)| w.cpu_seconds().map(|c| c - c0)).collect::<Result<_>>()?;
        let api_cpu = api_proc.cpu_seconds()? - api_cpu0;
        let batch = &run.batch;
        if batch["status"] != "completed" {
            bail!("batch {} ended {}: {batch}", run.batch_id, batch["status"]);
        }
        let (total_s, run_s) = (run.total_s(), run.run_s());
        let requests = input.requests as f64;
        eprintln!(
            "  {n} worker(s): {:.0} requests/s end to end, {:.0} requests/s while in progress",
            requests / total_s,
            requests / run_s
        );
        runs.push(json!({
            "workers": n,
            "upload_seconds": run.upload_s(),
            "validation_seconds": run.validate_s(),
            "processing_seconds": run_s,
            "end_to_end_seconds": total_s,
            "requests_per_second_end_to_end": requests / total_s,
            "requests_per_second_processing": requests / run_s,
            "request_counts": batch["request_counts"],
            "worker_cpu_seconds": worker_cpu,
            "api_cpu_seconds": api_cpu,
        }));
        for w in workers {
            w.stop(Duration::from_secs(40)).await;
        }
        api_proc.stop(Duration::from_secs(30)).await;
        sim_proc.stop(Duration::from_secs(5)).await;
        std::fs::remove_dir_all(run_dir.join("data"))?;
        psql(&server, &format!("DROP DATABASE IF EXISTS {db}"))?;
    }
    std::fs::remove_file(&input.path)?;
    Ok(json!({
        "benchmark": name,
        "machine": stack::machine(),
        "input": input.summary(),
        "input_shape": Shape::CHAT,
        "seed": opts.seed,
        "runs": runs,
    }))
}

/// The PostgreSQL the tests use. When a cluster is already online its URL is built from
/// `pg_lsclusters` and the password `tests/pg/start.sh` sets, without running the script: the
/// script drops the `vbt_*` databases of earlier test runs, which could be a test suite running
/// right now on this shared machine. Otherwise `bash tests/pg/start.sh` starts it and prints the
/// URL on its last stdout line.
fn start_postgres(ctx: &Ctx) -> Result<String> {
    const TEST_PASSWORD: &str = "vllm-batch-test";
    let clusters = std::process::Command::new("pg_lsclusters").arg("-h").output();
    if let Ok(out) = clusters {
        let text = String::from_utf8_lossy(&out.stdout);
        let online =
            text.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|f| f.get(3) == Some(&"online"));
        if let Some(port) = online.and_then(|f| f.get(2).map(|p| p.to_string())) {
            let url = format!("postgres://postgres:{TEST_PASSWORD}@127.0.0.1:{port}");
            if psql(&url, "SELECT 1").is_ok() {
                return Ok(url);
            }
        }
    }
    let script: PathBuf = ctx.repo_root.join("tests/pg/start.sh");
    let out = std::process::Command::new("bash").arg(&script).output().context("running tests/pg/start.sh")?;
    if !out.status.success() {
        bail!("tests/pg/start.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(stdout.lines().last().context("tests/pg/start.sh printed no URL")?.trim().to_string())
}

/// Runs one statement on the server's `postgres` database.
fn psql(server: &str, sql: &str) -> Result<()> {
    let out = std::process::Command::new("psql")
        .args([&format!("{server}/postgres"), "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .context("running psql")?;
    if !out.status.success() {
        bail!("psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
