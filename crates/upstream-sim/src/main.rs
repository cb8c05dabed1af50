//! The `upstream-sim` binary: parses flags (or `UPSTREAM_SIM_*` env vars),
//! serves the simulated vLLM server and stops on SIGINT/SIGTERM.

use clap::Parser;
use upstream_sim::{FaultRates, SimConfig};

/// A simulated vLLM OpenAI-compatible server.
#[derive(Parser, Debug)]
#[command(name = "upstream-sim", version, about)]
struct Args {
    /// Address to bind.
    #[arg(long, env = "UPSTREAM_SIM_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port to bind (0 picks a free one).
    #[arg(long, env = "UPSTREAM_SIM_PORT", default_value_t = 8000)]
    port: u16,
    /// Served model names, comma separated.
    #[arg(long, env = "UPSTREAM_SIM_MODELS", value_delimiter = ',', default_value = "sim-model")]
    models: Vec<String>,
    /// Maximum number of concurrently running requests; the rest wait FIFO.
    #[arg(long, env = "UPSTREAM_SIM_MAX_NUM_SEQS", default_value_t = 256)]
    max_num_seqs: usize,
    /// Fixed time per running request, in milliseconds.
    #[arg(long, env = "UPSTREAM_SIM_BASE_LATENCY_MS", default_value_t = 0)]
    base_latency_ms: u64,
    /// Extra time per completion token, in milliseconds.
    #[arg(long, env = "UPSTREAM_SIM_PER_TOKEN_MS", default_value_t = 0.0)]
    per_token_ms: f64,
    /// Continuous-batching mode (on when above 0): fixed time of every engine step, in
    /// milliseconds; replaces --base-latency-ms / --per-token-ms.
    #[arg(long, env = "UPSTREAM_SIM_STEP_BASE_MS", default_value_t = 0.0)]
    step_base_ms: f64,
    /// Continuous-batching mode: extra step time per running sequence, in milliseconds.
    #[arg(long, env = "UPSTREAM_SIM_STEP_PER_SEQ_MS", default_value_t = 0.0)]
    step_per_seq_ms: f64,
    /// Continuous-batching mode: extra step time per prompt token of the requests admitted in
    /// that step, in milliseconds.
    #[arg(long, env = "UPSTREAM_SIM_PREFILL_MS_PER_TOKEN", default_value_t = 0.0)]
    prefill_ms_per_token: f64,
    /// Probability of a 500 response.
    #[arg(long, env = "UPSTREAM_SIM_FAULT_500", default_value_t = 0.0)]
    fault_500: f64,
    /// Probability of a 429 response with `Retry-After: 1`.
    #[arg(long, env = "UPSTREAM_SIM_FAULT_429", default_value_t = 0.0)]
    fault_429: f64,
    /// Probability of breaking the connection mid-response.
    #[arg(long, env = "UPSTREAM_SIM_FAULT_RESET", default_value_t = 0.0)]
    fault_reset: f64,
    /// Probability of never answering.
    #[arg(long, env = "UPSTREAM_SIM_FAULT_HANG", default_value_t = 0.0)]
    fault_hang: f64,
    /// Fraction of request bodies answered with the context-length 400 (by body hash).
    #[arg(long, env = "UPSTREAM_SIM_FAULT_400", default_value_t = 0.0)]
    fault_400: f64,
    /// Seed of the fault-injection RNG.
    #[arg(long, env = "UPSTREAM_SIM_SEED", default_value_t = 42)]
    seed: u64,
    /// Answer `GET /v1/models` only between generations, as a single-threaded server does.
    #[arg(long, env = "UPSTREAM_SIM_MODELS_WAIT_FOR_SLOT")]
    models_wait_for_slot: bool,
    /// Answer `/metrics` with 404, as a server without vLLM's metrics does.
    #[arg(long, env = "UPSTREAM_SIM_NO_METRICS")]
    no_metrics: bool,
    /// vLLM's --scheduling-policy: `fcfs`, or `priority` (requests' `priority` orders the
    /// waiting queue; under fcfs it is ignored, as by vLLM 0.32).
    #[arg(long, env = "UPSTREAM_SIM_SCHEDULING_POLICY", default_value = "fcfs", value_parser = ["fcfs", "priority"])]
    scheduling_policy: String,
    /// Under fcfs, answer a nonzero `priority` with the 400 of older vLLM releases ("Priority
    /// scheduling is not enabled").
    #[arg(long, env = "UPSTREAM_SIM_REFUSE_PRIORITY")]
    refuse_priority: bool,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let config = SimConfig {
        models: args.models.iter().map(|m| m.trim().to_owned()).filter(|m| !m.is_empty()).collect(),
        max_num_seqs: args.max_num_seqs,
        base_latency_ms: args.base_latency_ms,
        per_token_ms: args.per_token_ms,
        step_base_ms: args.step_base_ms,
        step_per_seq_ms: args.step_per_seq_ms,
        prefill_ms_per_token: args.prefill_ms_per_token,
        faults: FaultRates {
            error_500: args.fault_500,
            error_429: args.fault_429,
            reset: args.fault_reset,
            hang: args.fault_hang,
            error_400: args.fault_400,
        },
        seed: args.seed,
        models_wait_for_slot: args.models_wait_for_slot,
        serve_metrics: !args.no_metrics,
        priority_scheduling: args.scheduling_policy == "priority",
        refuse_priority_without_policy: args.refuse_priority,
    };
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
    let handle = upstream_sim::serve(listener, config).await?;
    let host = if args.host.contains(':') { format!("[{}]", args.host) } else { args.host.clone() };
    println!("upstream-sim listening on http://{host}:{}/v1", handle.addr.port());
    use std::io::Write;
    std::io::stdout().flush()?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

/// Resolves on SIGINT or (on Unix) SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
