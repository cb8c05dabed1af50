//! Benchmark 1 (saturation) and 5 (API under load): a chat batch through `vllm-batch serve`
//! against the simulator's continuous-batching engine, timed from batch creation to
//! completion and compared with the engine's capacity bound (`cost::ideal`); the simulator's
//! occupancy sampled every 100 ms; the Python asyncio + `openai` baseline on the same jobs;
//! optionally `wrk` on `GET /v1/batches/{id}` while the batch runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use upstream_sim::cost::{ideal, Ideal};
use upstream_sim::CostModel;

use crate::api::{Api, Sim};
use crate::input::{self, Input, Shape};
use crate::stack::{self, Ctx, SimMode};
use crate::wrk;

/// Options of a saturation run.
pub struct Options {
    pub requests: u64,
    pub capacities: Vec<usize>,
    pub cost: CostModel,
    pub seed: u64,
    pub baseline: bool,
    pub python: PathBuf,
    pub baseline_concurrency: usize,
    pub server_args: Vec<String>,
    /// Run `wrk` with this many connections for this long once the batch is in progress.
    pub wrk: Option<(usize, Duration)>,
}

/// Occupancy below this, while at least `max_num_seqs` requests remain, is a dip.
const DIP_BELOW: f64 = 0.9;
/// The occupancy timeline's sampling period.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

pub async fn run(ctx: &Ctx, name: &str, opts: &Options) -> Result<Value> {
    let dir = ctx.scratch(name)?;
    let input = input::generate(&dir.join("input.jsonl"), Shape::CHAT, opts.seed, Some(opts.requests), None)?;
    eprintln!("{name}: {} requests, {} bytes", input.requests, input.bytes);
    let mut runs = Vec::new();
    for &cap in &opts.capacities {
        let expect = ideal(&opts.cost, cap, &input.jobs);
        eprintln!("{name}: max_num_seqs {cap}: ideal {:.2} s in {} steps", expect.seconds, expect.steps);
        let served = through_server(ctx, &dir, &input, cap, &expect, opts).await?;
        let baseline = if opts.baseline { Some(baseline(ctx, &dir, &input, cap, &expect, opts).await?) } else { None };
        runs.push(json!({
            "max_num_seqs": cap,
            "ideal_seconds": expect.seconds,
            "ideal_steps": expect.steps,
            "ideal_mean_occupancy": expect.occupancy_seconds / expect.seconds,
            "vllm_batch": served,
            "baseline_python_openai": baseline,
        }));
    }
    Ok(json!({
        "benchmark": name,
        "machine": stack::machine(),
        "cost_model": {
            "step_base_ms": opts.cost.step_base_ms,
            "step_per_seq_ms": opts.cost.step_per_seq_ms,
            "prefill_ms_per_token": opts.cost.prefill_ms_per_token,
        },
        "input": input.summary(),
        "input_shape": Shape::CHAT,
        "seed": opts.seed,
        "server_args": opts.server_args,
        "runs": runs,
    }))
}

async fn through_server(
    ctx: &Ctx,
    dir: &Path,
    input: &Input,
    cap: usize,
    expect: &Ideal,
    opts: &Options,
) -> Result<Value> {
    let run_dir = dir.join(format!("serve-{cap}"));
    std::fs::create_dir_all(&run_dir)?;
    let (sim_proc, sim) =
        stack::start_sim(ctx, &run_dir, "sim", SimMode::Engine { cost: opts.cost, max_num_seqs: cap }).await?;
    let (serve, api) = stack::start_serve(ctx, &run_dir, &sim.base_url(), &opts.server_args).await?;

    let file_id = api.upload(&input.path).await?;
    let cpu_before = serve.cpu_seconds()?;
    let stop = CancellationToken::new();
    let sampler = tokio::spawn(sample_timeline(sim.clone(), api.clone(), stop.clone()));
    let created = Instant::now();
    let created_unix_ms = unix_ms();
    let batch_id = api.create_batch(&file_id).await?;

    let load = match opts.wrk {
        Some((connections, duration)) => {
            let (b, _) = api.wait_status(&batch_id, &["in_progress"], Duration::from_millis(20)).await?;
            if b["status"] != "in_progress" {
                bail!("batch {batch_id} ended before wrk could start: {b}");
            }
            let url = format!("{}/batches/{batch_id}", api.base);
            Some(tokio::spawn(wrk::run(url, connections, duration, run_dir.join("wrk.txt"))))
        }
        None => None,
    };

    let (batch, done) = api.wait_status(&batch_id, &["completed"], Duration::from_millis(50)).await?;
    let completion = done.duration_since(created).as_secs_f64();
    stop.cancel();
    let timeline = sampler.await??;
    let sim_stats = sim.stats().await?;
    let cpu = serve.cpu_seconds()? - cpu_before;
    let peak_rss_kib = serve.peak_rss_kib()?;
    let wrk_result = match load {
        Some(task) => Some(task.await??),
        None => None,
    };
    if batch["status"] != "completed" {
        bail!("batch {batch_id} ended {}: {batch}", batch["status"]);
    }
    let counts = &batch["request_counts"];
    let output = batch["output_file_id"].as_str().context("no output file")?;
    let (out_bytes, out_lines) = api.download(output, &run_dir.join("output.jsonl")).await?;
    std::fs::remove_file(run_dir.join("output.jsonl"))?;
    serve.stop(Duration::from_secs(30)).await;
    sim_proc.stop(Duration::from_secs(5)).await;

    let active = (sim_stats.last_finish_unix_ms.saturating_sub(sim_stats.first_arrival_unix_ms)) as f64 / 1000.0;
    let analysis = analyse(&timeline, cap, input.requests);
    let series = stack::result_path(ctx, &format!("{}-timeline-{cap}", dir_name(dir)), ".csv")?;
    write_series(&series, &timeline)?;
    let efficiency = expect.seconds / completion;
    eprintln!(
        "  vllm-batch: {completion:.2} s, {:.1} % of ideal; occupancy {:.3} (active window); ramp {} s, then min sampled {}, {} dips",
        100.0 * efficiency,
        sim_stats.occupancy_seconds / active,
        analysis["startup_ramp_seconds"],
        analysis["min_occupancy_after_ramp"],
        analysis["dips_after_ramp"].as_array().map_or(0, Vec::len),
    );
    Ok(json!({
        "completion_seconds": completion,
        "efficiency_vs_ideal": efficiency,
        "request_counts": counts,
        "output_lines": out_lines,
        "output_bytes": out_bytes,
        "startup_seconds": (sim_stats.first_arrival_unix_ms as f64 - created_unix_ms as f64) / 1000.0,
        "sim": sim_stats,
        "sim_extra_steps_vs_ideal": sim_stats.steps as i64 - expect.steps as i64,
        "mean_occupancy_over_batch": sim_stats.occupancy_seconds / completion,
        "mean_occupancy_active_window": sim_stats.occupancy_seconds / active,
        "timeline": analysis,
        "timeline_csv": series.file_name().map(|f| f.to_string_lossy().to_string()),
        "server_cpu_seconds": cpu,
        "server_peak_rss_mib": peak_rss_kib as f64 / 1024.0,
        "wrk": wrk_result,
    }))
}

/// One sample of the simulator's gauges, `t` seconds after batch creation.
#[derive(Clone, Copy, Debug)]
struct Sample {
    t: f64,
    running: u64,
    waiting: u64,
    succeeded: u64,
    /// The server's requests in flight and in-flight limit (its `/metrics`), when it answered.
    server: Option<(u64, u64)>,
}

/// The benchmark's name: its scratch folder's.
fn dir_name(dir: &Path) -> String {
    dir.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default()
}

/// `t_s,running,waiting,succeeded,server_in_flight,server_limit` per sample (t from batch
/// creation; the server's columns are empty where its `/metrics` did not answer).
fn write_series(path: &Path, samples: &[Sample]) -> Result<()> {
    let mut text = String::from("t_s,running,waiting,succeeded,server_in_flight,server_limit\n");
    for s in samples {
        let (n, l) = s.server.map(|(n, l)| (n.to_string(), l.to_string())).unwrap_or_default();
        text.push_str(&format!("{:.3},{},{},{},{n},{l}\n", s.t, s.running, s.waiting, s.succeeded));
    }
    Ok(std::fs::write(path, text)?)
}

async fn sample_timeline(sim: Sim, api: Api, stop: CancellationToken) -> Result<Vec<Sample>> {
    let start = Instant::now();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples = Vec::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(samples),
            _ = tick.tick() => {}
        }
        let (g, server) = tokio::join!(sim.gauges(), api.in_flight());
        let g = g?;
        samples.push(Sample {
            t: start.elapsed().as_secs_f64(),
            running: g.running,
            waiting: g.waiting,
            succeeded: g.succeeded,
            server: server.ok().map(|(limit, n)| (n, limit)),
        });
    }
}

/// Occupancy while work remains: from the first sample with a request running, as long as at
/// least `cap` requests of the batch are unanswered (after that the tail must empty the engine,
/// as it does in the ideal schedule too). The start-up ramp (until occupancy first reaches
/// [`DIP_BELOW`]) is reported apart; after it, dips are runs of samples below [`DIP_BELOW`].
fn analyse(samples: &[Sample], cap: usize, total: u64) -> Value {
    let occupancy = |s: &Sample| s.running as f64 / cap as f64;
    let Some(first) = samples.iter().position(|s| s.running > 0) else {
        return json!({"samples": samples.len(), "error": "no sample saw a running request"});
    };
    let busy: Vec<&Sample> =
        samples[first..].iter().take_while(|s| total.saturating_sub(s.succeeded) >= cap as u64).collect();
    let ramp_end = busy.iter().position(|s| occupancy(s) >= DIP_BELOW).unwrap_or(busy.len());
    let ramp_seconds = busy.get(ramp_end).map(|s| s.t - busy[0].t);
    let steady = &busy[ramp_end..];
    let min = |set: &[&Sample]| set.iter().map(|s| occupancy(s)).reduce(f64::min);
    let mean =
        |set: &[&Sample], f: &dyn Fn(&Sample) -> f64| set.iter().map(|s| f(s)).sum::<f64>() / set.len().max(1) as f64;
    let mut dips: Vec<Value> = Vec::new();
    let mut current: Option<(f64, f64, f64)> = None;
    for s in steady {
        let occ = occupancy(s);
        if occ < DIP_BELOW {
            let c = current.get_or_insert((s.t, s.t, occ));
            c.1 = s.t;
            c.2 = c.2.min(occ);
        } else if let Some((from, to, low)) = current.take() {
            dips.push(json!({"from_s": from, "to_s": to, "min_occupancy": low}));
        }
    }
    if let Some((from, to, low)) = current {
        dips.push(json!({"from_s": from, "to_s": to, "min_occupancy": low}));
    }
    json!({
        "sample_period_ms": SAMPLE_EVERY.as_millis() as u64,
        "samples": samples.len(),
        "samples_while_work_remains": busy.len(),
        "min_occupancy_while_work_remains": min(&busy),
        "mean_sampled_occupancy_while_work_remains": mean(&busy, &occupancy),
        "mean_waiting_while_work_remains": mean(&busy, &|s| s.waiting as f64),
        // From the first sample with a request running to the first at >= 90 % (null: never).
        "startup_ramp_seconds": ramp_seconds,
        "min_occupancy_after_ramp": min(steady),
        "mean_sampled_occupancy_after_ramp": mean(steady, &occupancy),
        "dips_after_ramp": dips,
    })
}

/// The Python baseline (`bench/baseline.py`) against a fresh simulator of the same capacity.
async fn baseline(ctx: &Ctx, dir: &Path, input: &Input, cap: usize, expect: &Ideal, opts: &Options) -> Result<Value> {
    let run_dir = dir.join(format!("baseline-{cap}"));
    std::fs::create_dir_all(&run_dir)?;
    let (sim_proc, sim) =
        stack::start_sim(ctx, &run_dir, "sim", SimMode::Engine { cost: opts.cost, max_num_seqs: cap }).await?;
    let output = run_dir.join("output.jsonl");
    let script = ctx.repo_root.join("bench/baseline.py");
    let started = Instant::now();
    let out = tokio::process::Command::new(&opts.python)
        .arg(&script)
        .args(["--base-url", &sim.base_url(), "--concurrency", &opts.baseline_concurrency.to_string()])
        .arg("--input")
        .arg(&input.path)
        .arg("--output")
        .arg(&output)
        .output()
        .await
        .with_context(|| format!("running {} {}", opts.python.display(), script.display()))?;
    let wall = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("baseline failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    let report: Value = serde_json::from_slice(&out.stdout).context("baseline.py's report")?;
    let sim_stats = sim.stats().await?;
    sim_proc.stop(Duration::from_secs(5)).await;
    let _ = std::fs::remove_file(&output);
    let elapsed = report["elapsed_seconds"].as_f64().context("no elapsed_seconds")?;
    let active = (sim_stats.last_finish_unix_ms.saturating_sub(sim_stats.first_arrival_unix_ms)) as f64 / 1000.0;
    eprintln!("  baseline: {elapsed:.2} s, {:.1} % of ideal", 100.0 * expect.seconds / elapsed);
    Ok(json!({
        "concurrency": opts.baseline_concurrency,
        "report": report,
        "elapsed_seconds": elapsed,
        "efficiency_vs_ideal": expect.seconds / elapsed,
        "process_wall_seconds": wall,
        "sim": sim_stats,
        "mean_occupancy_active_window": sim_stats.occupancy_seconds / active,
    }))
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
