//! Probes the NVML GPU sampler: samples every second for about three seconds, then prints the
//! latest readings as JSON and every `vllm_gpu_` line of the Prometheus exposition.
//!
//! `cargo run --example gpu_probe -p vllm-batch-metrics [-- SECONDS]`

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use vllm_batch_metrics::gpu::GpuSampler;
use vllm_batch_metrics::metrics;

#[tokio::main]
async fn main() {
    // Plain stderr logging (RUST_LOG, default info), so the sampler's warning or start-up line shows.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let seconds: f64 = std::env::args().nth(1).map_or(3.0, |s| s.parse().expect("SECONDS is a number"));

    let shutdown = CancellationToken::new();
    let sampler = GpuSampler::start(Duration::from_secs(1), shutdown.clone());
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    shutdown.cancel();

    println!("available: {}", sampler.available());
    println!("{}", serde_json::to_string_pretty(&sampler.latest()).expect("readings serialize"));
    for line in metrics().encode().lines().filter(|l| l.starts_with("vllm_gpu_")) {
        println!("{line}");
    }
}
