//! `vllm-batch-bench`: the benchmark driver of bench/README.md. It builds nothing: it starts
//! the release binaries `vllm-batch` and `upstream-sim` (by default the ones next to itself,
//! i.e. `target/release/`) as separate processes, drives them over HTTP like a user, reads
//! their CPU time and peak RSS from `/proc`, and writes a JSON result to `bench/results/`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use upstream_sim::CostModel;

mod api;
mod coexist;
mod input;
mod machine;
mod procs;
mod saturation;
mod scaleout;
mod stack;
mod start_latency;
mod throughput;
mod wrk;

use input::Shape;
use stack::Ctx;

/// Benchmarks of vllm-batch (see bench/README.md).
#[derive(Parser, Debug)]
#[command(name = "vllm-batch-bench")]
struct Cli {
    /// Folder holding the release binaries `vllm-batch` and `upstream-sim` (default: this
    /// binary's folder).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    /// Scratch folder for inputs, data folders and logs.
    #[arg(long, global = true, default_value = "/tmp/vllm-batch-bench")]
    work_dir: PathBuf,
    /// Where result files go.
    #[arg(long, global = true, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    results_dir: PathBuf,
    /// Suffix of the result file name (`<benchmark>-<tag>.json`).
    #[arg(long, global = true)]
    tag: Option<String>,
    /// Seed of the input generator.
    #[arg(long, global = true, default_value_t = 1)]
    seed: u64,
    /// Extra argument passed to `vllm-batch serve` (repeatable; none by default: the
    /// benchmarks run the server as shipped).
    #[arg(long = "server-arg", global = true, allow_hyphen_values = true)]
    server_args: Vec<String>,
    #[command(subcommand)]
    benchmark: Benchmark,
}

/// The engine the saturation runs use (documented in bench/README.md).
#[derive(clap::Args, Debug, Clone)]
struct CostArgs {
    /// Fixed time of every engine step, in milliseconds.
    #[arg(long, default_value_t = 1.0)]
    step_base_ms: f64,
    /// Extra step time per running sequence, in milliseconds.
    #[arg(long, default_value_t = 0.01)]
    step_per_seq_ms: f64,
    /// Extra step time per prompt token admitted in the step, in milliseconds.
    #[arg(long, default_value_t = 0.001)]
    prefill_ms_per_token: f64,
}

impl CostArgs {
    fn model(&self) -> CostModel {
        CostModel {
            step_base_ms: self.step_base_ms,
            step_per_seq_ms: self.step_per_seq_ms,
            prefill_ms_per_token: self.prefill_ms_per_token,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Benchmark {
    /// 1. A chat batch through `serve` vs. the simulator's capacity bound, with the Python
    ///    asyncio + openai baseline.
    Saturation {
        #[arg(long, default_value_t = 20_000)]
        requests: u64,
        /// Simulator capacities (`max_num_seqs`), comma separated.
        #[arg(long, value_delimiter = ',', default_value = "64,256,1024")]
        max_num_seqs: Vec<usize>,
        #[command(flatten)]
        cost: CostArgs,
        /// Skip the Python baseline.
        #[arg(long)]
        no_baseline: bool,
        /// Python with the `openai` package (tests/run.sh makes `.venv-test`).
        #[arg(long, env = "BENCH_PYTHON")]
        python: Option<PathBuf>,
        /// The baseline's semaphore.
        #[arg(long, default_value_t = 256)]
        baseline_concurrency: usize,
    },
    /// 2. End-to-end requests/s and server CPU per request against a zero-latency simulator.
    Overhead {
        #[arg(long, default_value_t = 200_000)]
        requests: u64,
        /// Input shape: `chat` (prompts median 300 words) or `compact` (median 120 words).
        #[arg(long, default_value = "chat")]
        shape: String,
        /// Record the server with `perf record --call-graph dwarf` into bench/results/perf-overhead.data.
        #[arg(long)]
        perf: bool,
    },
    /// 3. Upload + validation throughput and peak RSS for a large file.
    Ingest {
        /// Input size, e.g. `1GiB`, `200MiB`, `1000000000`.
        #[arg(long, default_value = "1GiB")]
        bytes: String,
    },
    /// 4. Peak RSS of `serve` per batch size.
    Memory {
        #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
        requests: Vec<u64>,
        /// Batches of each size run one after another through the same server (its peak RSS
        /// is reported after each; with more than one, each batch's input and output files are
        /// deleted through the API once it is done).
        #[arg(long, default_value_t = 1)]
        batches: usize,
    },
    /// 5. `wrk` on `GET /v1/batches/{id}` while a saturation run goes on.
    ApiLoad {
        #[arg(long, default_value_t = 20_000)]
        requests: u64,
        #[arg(long, default_value_t = 256)]
        max_num_seqs: usize,
        #[command(flatten)]
        cost: CostArgs,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 30)]
        duration_s: u64,
    },
    /// 6. One `api` and N `worker`s on PostgreSQL against a zero-latency simulator.
    Scaleout {
        #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
        workers: Vec<usize>,
        #[arg(long, default_value_t = 100_000)]
        requests: u64,
        /// PostgreSQL server URL without a database (default: start tests/pg/start.sh's).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// 7. Batch creation → `in_progress` and → first upstream request, on an idle `serve`.
    StartLatency {
        #[arg(long, default_value_t = 50)]
        rounds: usize,
        /// Idle time before each creation, in milliseconds (after the previous batch completed
        /// and the next input was uploaded).
        #[arg(long, default_value_t = 200)]
        idle_ms: u64,
    },
    /// 8. Interactive TTFT with the upstream idle, beside a default batch and beside a
    ///    background one (`--background --upstream-priority 10`), and each batch's share of the
    ///    capacity the interactive load leaves.
    Coexist {
        /// Simulator capacity (`max_num_seqs`).
        #[arg(long, default_value_t = 64)]
        max_num_seqs: usize,
        /// GPU-like step costs by default: a step reads the weights once (12 ms), each running
        /// sequence adds 0.04 ms, each admitted prompt token 0.02 ms of prefill.
        #[arg(long, default_value_t = 12.0)]
        step_base_ms: f64,
        #[arg(long, default_value_t = 0.04)]
        step_per_seq_ms: f64,
        #[arg(long, default_value_t = 0.02)]
        prefill_ms_per_token: f64,
        /// Interactive requests per second (Poisson arrivals).
        #[arg(long, default_value_t = 2.0)]
        rate: f64,
        /// Seconds each phase's interactive load runs.
        #[arg(long, default_value_t = 60)]
        duration_s: u64,
        /// Completion tokens of an interactive request.
        #[arg(long, default_value_t = 32)]
        interactive_tokens: u64,
        /// A real vLLM (`http://host:port/v1`, started with `--scheduling-policy priority`)
        /// instead of the simulator.
        #[arg(long)]
        upstream: Option<String>,
        /// The real upstream's model name.
        #[arg(long, default_value = "smollm2-135m-instruct")]
        model: String,
    },
    /// Prints the capacity bound of a generated input (no processes started).
    Ideal {
        #[arg(long, default_value_t = 20_000)]
        requests: u64,
        #[arg(long, value_delimiter = ',', default_value = "64,256,1024")]
        max_num_seqs: Vec<usize>,
        #[command(flatten)]
        cost: CostArgs,
    },
}

fn parse_bytes(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => bail!("unknown size unit {other:?}"),
    };
    Ok((num.parse::<f64>().with_context(|| format!("size {s:?}"))? * factor) as u64)
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let bin_dir = match cli.bin_dir {
        Some(d) => d,
        None => std::env::current_exe()?.parent().context("binary has no folder")?.to_path_buf(),
    };
    for bin in ["vllm-batch", "upstream-sim"] {
        if !bin_dir.join(bin).exists() {
            bail!(
                "{} missing: build the release binaries first (cargo build --release -p vllm-batch -p upstream-sim)",
                bin_dir.join(bin).display()
            );
        }
    }
    let repo_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().context("no repository root")?.to_path_buf();
    let ctx = Ctx { bin_dir, work_dir: cli.work_dir, results_dir: cli.results_dir, repo_root, tag: cli.tag };
    std::fs::create_dir_all(&ctx.work_dir)?;
    // One benchmark at a time on this machine, and a record of what else ran meanwhile.
    let _lock = match cli.benchmark {
        Benchmark::Ideal { .. } => None,
        _ => Some(machine::RunLock::acquire(std::env::temp_dir().join("vllm-batch-bench.lock"))?),
    };
    let stop_watch = tokio_util::sync::CancellationToken::new();
    let background = tokio::spawn(machine::watch_background(stop_watch.clone()));
    let zero =
        |perf: Option<PathBuf>| throughput::Options { seed: cli.seed, server_args: cli.server_args.clone(), perf };

    let (name, result) = match cli.benchmark {
        Benchmark::Saturation { requests, max_num_seqs, cost, no_baseline, python, baseline_concurrency } => {
            let python = python.unwrap_or_else(|| ctx.repo_root.join(".venv-test/bin/python"));
            if !no_baseline && !python.exists() {
                bail!("{} missing: run tests/run.sh once, or pass --python / --no-baseline", python.display());
            }
            let opts = saturation::Options {
                requests,
                capacities: max_num_seqs,
                cost: cost.model(),
                seed: cli.seed,
                baseline: !no_baseline,
                python,
                baseline_concurrency,
                server_args: cli.server_args.clone(),
                wrk: None,
            };
            ("saturation", saturation::run(&ctx, "saturation", &opts).await?)
        }
        Benchmark::ApiLoad { requests, max_num_seqs, cost, connections, duration_s } => {
            let opts = saturation::Options {
                requests,
                capacities: vec![max_num_seqs],
                cost: cost.model(),
                seed: cli.seed,
                baseline: false,
                python: PathBuf::new(),
                baseline_concurrency: 0,
                server_args: cli.server_args.clone(),
                wrk: Some((connections, Duration::from_secs(duration_s))),
            };
            ("api-load", saturation::run(&ctx, "api-load", &opts).await?)
        }
        Benchmark::Coexist {
            max_num_seqs,
            step_base_ms,
            step_per_seq_ms,
            prefill_ms_per_token,
            rate,
            duration_s,
            interactive_tokens,
            upstream,
            model,
        } => {
            let opts = coexist::Options {
                cost: CostModel { step_base_ms, step_per_seq_ms, prefill_ms_per_token },
                max_num_seqs,
                rate,
                duration: Duration::from_secs(duration_s),
                interactive_tokens,
                upstream: upstream.map(|u| (u, model)),
                seed: cli.seed,
            };
            ("coexist", coexist::run(&ctx, "coexist", &opts).await?)
        }
        Benchmark::Overhead { requests, shape, perf } => {
            let shape = match shape.as_str() {
                "chat" => Shape::CHAT,
                "compact" => Shape::COMPACT,
                other => bail!("unknown shape {other:?} (chat, compact)"),
            };
            let perf_file = perf.then(|| ctx.results_dir.join(format!("perf-overhead{}.data", tag_suffix(&ctx))));
            ("overhead", throughput::overhead(&ctx, "overhead", requests, shape, &zero(perf_file)).await?)
        }
        Benchmark::Ingest { bytes } => {
            ("ingest", throughput::ingest(&ctx, "ingest", parse_bytes(&bytes)?, &zero(None)).await?)
        }
        Benchmark::Memory { requests, batches } => {
            ("memory", throughput::memory(&ctx, "memory", &requests, batches, &zero(None)).await?)
        }
        Benchmark::Scaleout { workers, requests, database_url } => {
            let opts = scaleout::Options { requests, workers, seed: cli.seed, database_url };
            ("scaleout", scaleout::run(&ctx, "scaleout", &opts).await?)
        }
        Benchmark::StartLatency { rounds, idle_ms } => {
            let opts = start_latency::Options {
                rounds,
                idle: Duration::from_millis(idle_ms),
                seed: cli.seed,
                server_args: cli.server_args.clone(),
            };
            ("start-latency", start_latency::run(&ctx, "start-latency", &opts).await?)
        }
        Benchmark::Ideal { requests, max_num_seqs, cost } => {
            let dir = ctx.scratch("ideal")?;
            let input = input::generate(&dir.join("input.jsonl"), Shape::CHAT, cli.seed, Some(requests), None)?;
            println!("{}", input.summary());
            for cap in max_num_seqs {
                let r = upstream_sim::cost::ideal(&cost.model(), cap, &input.jobs);
                println!(
                    "max_num_seqs {cap}: {:.2} s, {} steps ({:.3} ms/step), mean occupancy {:.3}",
                    r.seconds,
                    r.steps,
                    1000.0 * r.seconds / r.steps as f64,
                    r.occupancy_seconds / r.seconds
                );
            }
            return Ok(());
        }
    };
    stop_watch.cancel();
    let mut result = result;
    result["background"] = background.await?;
    stack::write_result(&ctx, name, &result)?;
    Ok(())
}

fn tag_suffix(ctx: &Ctx) -> String {
    ctx.tag.as_ref().map(|t| format!("-{t}")).unwrap_or_default()
}
