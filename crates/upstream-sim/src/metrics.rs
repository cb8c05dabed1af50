//! `GET /metrics`: a hand-formatted Prometheus text exposition using vLLM's
//! metric names and labels (`engine`, `model_name`), as vLLM 0.32 exports them.

use std::fmt::Write;

use crate::state::SimState;

/// Content type of the Prometheus text format (as served by vLLM).
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders the current metrics, labelled with the first model's name.
pub(crate) fn render(state: &SimState) -> String {
    let s = state.snapshot();
    let model = escape(&state.models[0]);
    let labels = format!("engine=\"0\",model_name=\"{model}\"");
    let usage = (s.running as f64 / state.max_num_seqs as f64).clamp(0.0, 1.0);
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, labels: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name}{{{labels}}} {value:?}");
    };
    metric(
        "vllm:num_requests_running",
        "gauge",
        "Number of requests in model execution batches.",
        &labels,
        s.running as f64,
    );
    metric(
        "vllm:num_requests_waiting",
        "gauge",
        "Number of requests waiting to be processed.",
        &labels,
        s.waiting as f64,
    );
    metric("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", &labels, usage);
    metric(
        "vllm:prompt_tokens_total",
        "counter",
        "Number of prefill tokens processed.",
        &labels,
        s.prompt_tokens as f64,
    );
    metric(
        "vllm:generation_tokens_total",
        "counter",
        "Number of generation tokens processed.",
        &labels,
        s.generation_tokens as f64,
    );
    metric(
        "vllm:request_success_total",
        "counter",
        "Count of successfully processed requests.",
        &format!("engine=\"0\",finished_reason=\"stop\",model_name=\"{model}\""),
        s.responses_ok as f64,
    );
    // Each token's time since the one before: its engine step's (engine mode; nothing else).
    let _ = writeln!(out, "# HELP vllm:inter_token_latency_seconds Histogram of inter-token latency in seconds.");
    let _ = writeln!(out, "# TYPE vllm:inter_token_latency_seconds histogram");
    let _ = writeln!(out, "vllm:inter_token_latency_seconds_bucket{{{labels},le=\"+Inf\"}} {:?}", s.token_steps as f64);
    let _ = writeln!(out, "vllm:inter_token_latency_seconds_count{{{labels}}} {:?}", s.token_steps as f64);
    let _ = writeln!(out, "vllm:inter_token_latency_seconds_sum{{{labels}}} {:?}", s.token_step_seconds);
    out
}

/// Escapes a label value per the Prometheus text format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
