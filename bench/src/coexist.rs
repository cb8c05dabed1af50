//! Benchmark 8 (coexist): a batch sharing an upstream with interactive users. An interactive
//! client sends streaming chats at Poisson arrivals and measures each one's time to first token
//! (TTFT); the same load runs with the upstream idle, beside a batch through `serve` with its
//! defaults, and beside one with `--background --upstream-priority 10`. Each batch's throughput
//! while the interactive load runs is compared with the capacity that load leaves: the batch
//! alone's throughput times the share of the engine's slot-time the interactive requests did
//! not use (measured in the idle phase).
//!
//! Against the simulator (priority scheduling on, as `vllm serve --scheduling-policy priority`)
//! by default, or against a real vLLM given with `--upstream` (its own capacity and costs).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use upstream_sim::CostModel;

use crate::api::Sim;
use crate::input::{self, Shape};
use crate::stack::{self, Ctx, SimMode};

/// Options of a coexist run.
pub struct Options {
    pub cost: CostModel,
    pub max_num_seqs: usize,
    /// Interactive requests per second (Poisson arrivals).
    pub rate: f64,
    /// How long each phase's interactive load runs.
    pub duration: Duration,
    /// Completion tokens of an interactive request.
    pub interactive_tokens: u64,
    /// A real upstream (`http://host:port/v1`) instead of the simulator, and its model.
    pub upstream: Option<(String, String)>,
    pub seed: u64,
}

/// What one phase's interactive client saw.
#[derive(Default)]
struct Interactive {
    ttft_ms: Vec<f64>,
    failed: usize,
}

impl Interactive {
    fn summary(&mut self) -> Value {
        self.ttft_ms.sort_by(f64::total_cmp);
        let q = |p: f64| -> f64 {
            if self.ttft_ms.is_empty() {
                return f64::NAN;
            }
            let i = ((self.ttft_ms.len() as f64 - 1.0) * p).round() as usize;
            (self.ttft_ms[i] * 10.0).round() / 10.0
        };
        json!({"requests": self.ttft_ms.len(), "failed": self.failed,
               "ttft_ms": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99)}})
    }

    fn p90(&mut self) -> f64 {
        self.ttft_ms.sort_by(f64::total_cmp);
        self.ttft_ms.get(((self.ttft_ms.len() as f64 - 1.0) * 0.9).round() as usize).copied().unwrap_or(f64::NAN)
    }
}

/// Streams interactive chats at Poisson arrivals of `rate` per second for `duration`.
async fn interactive(base: &str, model: &str, opts: &Options, seed: u64) -> Interactive {
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().expect("a reqwest client");
    let mut rng = StdRng::seed_from_u64(seed);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<f64>>();
    let start = Instant::now();
    let mut next = Duration::ZERO;
    let mut n = 0;
    while next < opts.duration {
        tokio::time::sleep_until((start + next).into()).await;
        let words: usize = rng.random_range(50..200);
        let prompt =
            (0..words).map(|i| ["how", "do", "I", "ship", "this", "today"][i % 6]).collect::<Vec<_>>().join(" ");
        let body = json!({"model": model, "messages": [{"role": "user", "content": prompt}],
                          "max_tokens": opts.interactive_tokens, "stream": true});
        let (http, tx, url) = (http.clone(), tx.clone(), format!("{base}/chat/completions"));
        tokio::spawn(async move {
            let sent = Instant::now();
            let ttft = async {
                let mut resp = http.post(url).json(&body).send().await.ok()?.error_for_status().ok()?;
                resp.chunk().await.ok()??;
                let ttft = sent.elapsed().as_secs_f64() * 1000.0;
                while resp.chunk().await.ok()?.is_some() {}
                Some(ttft)
            };
            let _ = tx.send(ttft.await);
        });
        n += 1;
        // Exponential gaps: Poisson arrivals.
        let u: f64 = 1.0 - rng.random::<f64>();
        next += Duration::from_secs_f64(-u.ln() / opts.rate);
    }
    drop(tx);
    let mut out = Interactive::default();
    for _ in 0..n {
        match rx.recv().await.flatten() {
            Some(ms) => out.ttft_ms.push(ms),
            None => out.failed += 1,
        }
    }
    out
}

/// One phase: `serve` with `server_args` (none: no batch) running a batch that lasts past the
/// window, the interactive load (if `with_interactive`) for the window; returns the client's
/// view and the batch requests answered per second during the window.
async fn phase(
    ctx: &Ctx,
    dir: &Path,
    name: &str,
    (upstream, model): (&str, &str),
    batch: Option<(&Path, &[&str])>,
    with_interactive: bool,
    opts: &Options,
) -> Result<(Interactive, f64, Value)> {
    let sim = Sim::new(upstream.trim_end_matches("/v1").to_string());
    let served = match batch {
        Some((input, args)) => {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            let pdir = dir.join(name);
            std::fs::create_dir_all(&pdir)?;
            let (proc, api) = stack::start_serve(ctx, &pdir, upstream, &args).await?;
            let file = api.upload(input).await?;
            let id = api.create_batch(&file).await?;
            api.wait_status(&id, &["in_progress"], Duration::from_millis(50)).await?;
            // Let the controller find its footing before measuring.
            tokio::time::sleep(Duration::from_secs(5)).await;
            Some((proc, api, id))
        }
        None => None,
    };
    let completed = |b: &Value| b["request_counts"]["completed"].as_u64().unwrap_or(0);
    let start_count = match &served {
        Some((_, api, id)) => completed(&api.batch(id).await?),
        None => 0,
    };
    let before = sim.stats().await.ok();
    let started = Instant::now();
    let client = if with_interactive {
        interactive(upstream, model, opts, opts.seed ^ name.len() as u64).await
    } else {
        tokio::time::sleep(opts.duration).await;
        Interactive::default()
    };
    let window = started.elapsed().as_secs_f64();
    let mut batch_rate = 0.0;
    let mut batch_info = Value::Null;
    if let Some((proc, api, id)) = served {
        let b = api.batch(&id).await?;
        let done = completed(&b) - start_count;
        batch_rate = done as f64 / window;
        batch_info = json!({"server_args": batch.map(|b| b.1).unwrap_or_default(), "requests_in_window": done,
                            "requests_per_second": (batch_rate * 100.0).round() / 100.0});
        if b["status"] != "in_progress" {
            eprintln!("coexist: {name}: the batch ended ({}) before the window did; lengthen it", b["status"]);
        }
        let _ = api.cancel(&id).await;
        proc.stop(Duration::from_secs(10)).await;
    }
    let after = sim.stats().await.ok();
    let occupancy = match (before, after) {
        (Some(b), Some(a)) => Some((a.occupancy_seconds - b.occupancy_seconds) / window),
        _ => None,
    };
    let mut view = json!({"phase": name, "window_seconds": (window * 10.0).round() / 10.0, "batch": batch_info});
    if let Some(o) = occupancy {
        view["engine_mean_occupancy"] = json!((o * 1000.0).round() / 1000.0);
    }
    eprintln!("coexist: {name}: {view}");
    Ok((client, batch_rate, view))
}

pub async fn run(ctx: &Ctx, name: &str, opts: &Options) -> Result<Value> {
    let dir = ctx.scratch(name)?;
    let (mut sim_proc, upstream, model) = match &opts.upstream {
        Some((url, model)) => (None, url.clone(), model.clone()),
        None => {
            let mode = SimMode::Engine { cost: opts.cost, max_num_seqs: opts.max_num_seqs };
            let (proc, sim) =
                stack::start_sim_with(ctx, &dir, "upstream-sim", mode, &["--scheduling-policy", "priority"]).await?;
            (Some(proc), sim.base_url(), input::MODEL.to_string())
        }
    };
    // Enough batch work to outlast a phase at the engine's full speed, several times over.
    let requests = match &opts.upstream {
        Some(_) => 3_000,
        None => {
            let sample = input::generate(&dir.join("sample.jsonl"), Shape::CHAT, opts.seed, Some(2_000), None)?;
            let ideal = upstream_sim::cost::ideal(&opts.cost, opts.max_num_seqs, &sample.jobs);
            let per_second = 2_000.0 / ideal.seconds;
            ((per_second * (opts.duration.as_secs_f64() + 10.0) * 2.0) as u64).max(2_000)
        }
    };
    let input = input::generate(&dir.join("input.jsonl"), Shape::CHAT, opts.seed, Some(requests), None)?;
    let input = if opts.upstream.is_some() { retarget(&input.path, &model, &dir)? } else { input.path };
    let defaults: &[&str] = &[];
    let background: &[&str] = &["--background", "--upstream-priority", "10"];
    let (mut idle, _, idle_view) = phase(ctx, &dir, "idle", (&upstream, &model), None, true, opts).await?;
    let (_, alone, alone_view) =
        phase(ctx, &dir, "batch-alone", (&upstream, &model), Some((&input, defaults)), false, opts).await?;
    let (_, alone_bg, alone_bg_view) =
        phase(ctx, &dir, "background-alone", (&upstream, &model), Some((&input, background)), false, opts).await?;
    let (mut default, default_rate, default_view) =
        phase(ctx, &dir, "default-batch", (&upstream, &model), Some((&input, defaults)), true, opts).await?;
    let (mut bg, bg_rate, bg_view) =
        phase(ctx, &dir, "background-batch", (&upstream, &model), Some((&input, background)), true, opts).await?;
    if let Some(p) = sim_proc.take() {
        p.stop(Duration::from_secs(5)).await;
    }
    // The capacity the interactive load leaves: the batch alone's rate, less the share of the
    // engine's slot-time the interactive load used (idle phase; a real vLLM reports none: 0).
    let interactive_share = idle_view["engine_mean_occupancy"].as_f64().unwrap_or(0.0);
    let leftover = alone * (1.0 - interactive_share);
    let idle_p90 = idle.p90();
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    Ok(json!({
        "benchmark": name,
        "machine": stack::machine(),
        "upstream": if opts.upstream.is_some() { json!(upstream) } else { json!("upstream-sim --scheduling-policy priority") },
        "cost_model": {"step_base_ms": opts.cost.step_base_ms, "step_per_seq_ms": opts.cost.step_per_seq_ms,
                       "prefill_ms_per_token": opts.cost.prefill_ms_per_token, "max_num_seqs": opts.max_num_seqs},
        "interactive": {"rate_per_second": opts.rate, "max_tokens": opts.interactive_tokens,
                        "window_seconds": opts.duration.as_secs_f64()},
        "input": {"requests": requests, "shape": Shape::CHAT},
        "phases": [idle_view, alone_view, alone_bg_view, default_view, bg_view],
        "ttft": {"idle": idle.summary(), "default_batch": default.summary(), "background_batch": bg.summary()},
        "ttft_p90_vs_idle": {"default_batch": round(default.p90() / idle_p90), "background_batch": round(bg.p90() / idle_p90)},
        "batch_share_of_leftover_capacity": {"default_batch": round(default_rate / leftover), "background_batch": round(bg_rate / leftover)},
        "background_alone_vs_default_alone": round(alone_bg / alone),
    }))
}

/// The input for a real upstream: every line's model replaced (it serves another name), and
/// prompts cut to 120 words and answers to 64 tokens (the small CPU model's 1,024-token context
/// and speed).
fn retarget(path: &Path, model: &str, dir: &Path) -> Result<std::path::PathBuf> {
    let text = std::fs::read_to_string(path)?;
    let out = dir.join("input-retargeted.jsonl");
    let mut lines = String::with_capacity(text.len());
    for line in text.lines() {
        let mut v: Value = serde_json::from_str(line).context("input line")?;
        v["body"]["model"] = json!(model);
        let content = v["body"]["messages"][0]["content"].as_str().unwrap_or_default().to_string();
        let words: Vec<&str> = content.split_whitespace().take(120).collect();
        v["body"]["messages"][0]["content"] = json!(words.join(" "));
        let tokens = v["body"]["max_tokens"].as_u64().unwrap_or(64).min(64);
        v["body"]["max_tokens"] = json!(tokens);
        lines.push_str(&v.to_string());
        lines.push('\n');
    }
    std::fs::write(&out, lines)?;
    Ok(out)
}
