//! The web status page: `/` and its two assets (plain HTML, CSS and JavaScript under
//! `crates/api/assets/`, embedded in the binary), and the system panel's figures at
//! `GET /api/metrics/gpu` and `GET /api/metrics/vllm`.
//!
//! The figures come from Prometheus when `--prometheus-url` is set — the one source of truth
//! when several processes (API, workers, vLLM) are scraped — and else from this process's own
//! registry and GPU sampler. Each answer says which in `source`.

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use vllm_batch_metrics::gpu::GpuReading;
use vllm_batch_metrics::metrics;

use crate::error::{Error, Result};
use crate::AppState;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// How long the panel waits for Prometheus before answering 502: the page refreshes every
/// two seconds, so a slow Prometheus must not pile requests up.
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(3);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/assets/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/assets/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/api/metrics/gpu", get(gpu_panel))
        .route("/api/metrics/vllm", get(vllm_panel))
}

/// An embedded file. `no-cache`: browsers revalidate, so a new binary's page shows at once.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
}

/// Where the figures of an answer were read.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
enum Source {
    Prometheus,
    Process,
}

/// `GET /api/metrics/gpu`.
#[derive(Debug, Serialize)]
struct GpuPanel {
    source: Source,
    gpus: Vec<GpuFigures>,
}

/// One GPU; a figure nobody could read is `null`.
#[derive(Debug, Default, Serialize)]
struct GpuFigures {
    /// NVML's index (the `gpu` label).
    gpu: String,
    /// Prometheus's `instance` label of the process that read it; `null` from this process.
    instance: Option<String>,
    name: String,
    uuid: String,
    temperature_celsius: Option<f64>,
    memory_used_bytes: Option<f64>,
    memory_total_bytes: Option<f64>,
    utilization_percent: Option<f64>,
    power_watts: Option<f64>,
}

/// `GET /api/metrics/vllm`.
#[derive(Debug, Serialize)]
struct VllmPanel {
    source: Source,
    /// Requests the inference servers are running: vLLM's `num_requests_running`, else ours on
    /// the wire.
    running: Option<i64>,
    /// Requests waiting: vLLM's `num_requests_waiting`, else those of running batches not yet
    /// sent.
    waiting: Option<i64>,
    /// Generated tokens per second: the rate of vLLM's `generation_tokens_total` over a
    /// minute, else our own one-minute throughput.
    tokens_per_second: Option<f64>,
    /// Requests of running batches not yet finished (`vllm_queue_depth`).
    queue_depth: Option<i64>,
    /// Upstreams that are down now: this process's health (its embedded worker's evidence), and
    /// with Prometheus, every worker's `vllm_upstream_up == 0`.
    upstreams_down: Vec<DownUpstream>,
}

/// An upstream that is down.
#[derive(Debug, Serialize)]
struct DownUpstream {
    /// Its index in `--upstream`.
    upstream: usize,
    /// Its URL, redacted; `null` when only Prometheus knows of it.
    url: Option<String>,
    /// Unix time it went down, where this process saw it.
    since: Option<u64>,
    error: Option<String>,
}

/// The upstreams this process finds down.
fn down_here(st: &AppState) -> Vec<DownUpstream> {
    let health = st.upstreams.health();
    (0..st.upstreams.specs().len())
        .filter(|&i| !health.is_up(i))
        .map(|i| {
            let report = health.report(i);
            DownUpstream {
                upstream: i,
                url: Some(st.upstreams.specs()[i].shown()),
                since: report.down_since,
                error: report.last_error,
            }
        })
        .collect()
}

async fn gpu_panel(State(st): State<AppState>) -> Result<Json<GpuPanel>> {
    let (source, gpus) = match &st.prometheus_url {
        Some(url) => (Source::Prometheus, gpus_from_prometheus(url).await?),
        None => (Source::Process, st.gpus.latest().into_iter().map(GpuFigures::from).collect()),
    };
    Ok(Json(GpuPanel { source, gpus }))
}

async fn vllm_panel(State(st): State<AppState>) -> Result<Json<VllmPanel>> {
    match &st.prometheus_url {
        Some(url) => Ok(Json(vllm_from_prometheus(&st, url).await?)),
        None => Ok(Json(vllm_from_process(&st).await?)),
    }
}

impl From<GpuReading> for GpuFigures {
    fn from(r: GpuReading) -> Self {
        GpuFigures {
            gpu: r.index.to_string(),
            instance: None,
            name: r.name,
            uuid: r.uuid,
            temperature_celsius: r.temperature_celsius,
            memory_used_bytes: r.memory_used_bytes,
            memory_total_bytes: r.memory_total_bytes,
            utilization_percent: r.utilization_percent,
            power_watts: r.power_watts,
        }
    }
}

/// This process's figures: the worker's in-flight gauges and throughput window (present when
/// a worker runs in this process, as with `serve`) and the database's queue.
async fn vllm_from_process(st: &AppState) -> Result<VllmPanel> {
    let m = metrics();
    let running: i64 =
        (0..st.upstreams.specs().len()).map(|i| m.upstream_in_flight.with_label_values(&[&i.to_string()]).get()).sum();
    let queue_depth = st.store.queue_stats().await?.queue_depth;
    Ok(VllmPanel {
        source: Source::Process,
        running: Some(running),
        // The queue counts the requests on the wire too.
        waiting: Some((queue_depth - running).max(0)),
        tokens_per_second: Some(m.throughput.get()),
        queue_depth: Some(queue_depth),
        upstreams_down: down_here(st),
    })
}

// PromQL of the vLLM figures. `A or B` answers B where A has no series: vLLM's own metrics when
// Prometheus scrapes vLLM, else vllm-batch's.
const RUNNING: &str = "sum(vllm:num_requests_running) or sum(vllm_upstream_in_flight)";
const WAITING: &str =
    "sum(vllm:num_requests_waiting) or clamp_min(sum(vllm_queue_depth) - sum(vllm_upstream_in_flight), 0)";
const TOKENS_PER_SECOND: &str = "sum(rate(vllm:generation_tokens_total[1m])) or sum(vllm_throughput_tokens_per_second)";
// Every API process reports the whole database's queue: take one, don't add them up.
const QUEUE_DEPTH: &str = "max(vllm_queue_depth)";
// Upstreams any worker finds down.
const DOWN: &str = "min by (upstream) (vllm_upstream_up) == 0";

async fn vllm_from_prometheus(st: &AppState, url: &str) -> Result<VllmPanel> {
    let (running, waiting, tokens, queue, down) = tokio::try_join!(
        query(url, RUNNING),
        query(url, WAITING),
        query(url, TOKENS_PER_SECOND),
        query(url, QUEUE_DEPTH),
        query(url, DOWN),
    )?;
    let count = |s: &[Sample]| scalar(s).map(|v| v.round() as i64);
    let mut upstreams_down = down_here(st);
    for sample in &down {
        if let Ok(i) = sample.label("upstream").parse::<usize>() {
            if !upstreams_down.iter().any(|d| d.upstream == i) {
                let url = st.upstreams.specs().get(i).map(|s| s.shown());
                upstreams_down.push(DownUpstream { upstream: i, url, since: None, error: None });
            }
        }
    }
    Ok(VllmPanel {
        source: Source::Prometheus,
        running: count(&running),
        waiting: count(&waiting),
        tokens_per_second: scalar(&tokens),
        queue_depth: count(&queue),
        upstreams_down,
    })
}

/// Every process that samples GPUs exports them, keyed by its `instance` and the `gpu` index;
/// two processes on one host read the same GPUs, told apart by the UUID of `vllm_gpu_info`.
async fn gpus_from_prometheus(url: &str) -> Result<Vec<GpuFigures>> {
    let (temperature, used, total, utilization, power, info) = tokio::try_join!(
        query(url, "vllm_gpu_temperature_celsius"),
        query(url, "vllm_gpu_memory_used_bytes"),
        query(url, "vllm_gpu_memory_total_bytes"),
        query(url, "vllm_gpu_utilization_percent"),
        query(url, "vllm_gpu_power_watts"),
        query(url, "vllm_gpu_info"),
    )?;
    let mut by_gpu: BTreeMap<(String, String), GpuFigures> = BTreeMap::new();
    fn entry<'a>(by_gpu: &'a mut BTreeMap<(String, String), GpuFigures>, s: &Sample) -> &'a mut GpuFigures {
        let (instance, gpu) = (s.label("instance"), s.label("gpu"));
        by_gpu.entry((instance.clone(), gpu.clone())).or_insert_with(|| GpuFigures {
            gpu,
            instance: Some(instance),
            ..GpuFigures::default()
        })
    }
    for s in &info {
        let g = entry(&mut by_gpu, s);
        g.name = s.label("name");
        g.uuid = s.label("uuid");
    }
    for (samples, field) in [
        (&temperature, (|g| &mut g.temperature_celsius) as fn(&mut GpuFigures) -> &mut Option<f64>),
        (&used, |g| &mut g.memory_used_bytes),
        (&total, |g| &mut g.memory_total_bytes),
        (&utilization, |g| &mut g.utilization_percent),
        (&power, |g| &mut g.power_watts),
    ] {
        for s in samples {
            *field(entry(&mut by_gpu, s)) = s.value;
        }
    }
    let mut seen = HashSet::new();
    let mut gpus: Vec<GpuFigures> =
        by_gpu.into_values().filter(|g| g.uuid.is_empty() || seen.insert(g.uuid.clone())).collect();
    gpus.sort_by_key(|g| (g.gpu.parse::<u32>().unwrap_or(u32::MAX), g.instance.clone()));
    Ok(gpus)
}

/// One series of an instant vector.
#[derive(Debug, Deserialize)]
struct Sample {
    metric: BTreeMap<String, String>,
    #[serde(deserialize_with = "sample_value")]
    value: Option<f64>,
}

impl Sample {
    fn label(&self, name: &str) -> String {
        self.metric.get(name).cloned().unwrap_or_default()
    }
}

/// `[<unix time>, "<value>"]`; NaN and infinities (an empty rate, say) read as no value.
fn sample_value<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<f64>, D::Error> {
    let (_, value): (serde_json::Value, String) = Deserialize::deserialize(d)?;
    Ok(value.parse::<f64>().ok().filter(|v| v.is_finite()))
}

/// The value of an aggregated (one-series) answer.
fn scalar(samples: &[Sample]) -> Option<f64> {
    samples.first().and_then(|s| s.value)
}

/// Prometheus's answer to `GET /api/v1/query`.
#[derive(Debug, Deserialize)]
struct QueryAnswer {
    status: String,
    #[serde(default)]
    data: Option<QueryData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct QueryData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(PROMETHEUS_TIMEOUT)
            .build()
            .expect("an HTTP client without TLS settings always builds")
    })
}

/// Evaluates `expr` now. Prometheus unreachable, slow or refusing the query: 502.
async fn query(base: &str, expr: &str) -> Result<Vec<Sample>> {
    let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
    let unreachable = |e: reqwest::Error| Error::Upstream(format!("Prometheus at {base} did not answer: {e}"));
    let resp = http().get(&url).query(&[("query", expr)]).send().await.map_err(unreachable)?;
    let status = resp.status();
    let answer: QueryAnswer = resp.json().await.map_err(|e| {
        Error::Upstream(format!("Prometheus at {base} answered {status} with something other than its API: {e}"))
    })?;
    match answer.data {
        Some(data) if answer.status == "success" && data.result_type == "vector" => {
            serde_json::from_value(data.result).map_err(|e| Error::Upstream(format!("Prometheus's answer: {e}")))
        }
        _ => Err(Error::Upstream(format!(
            "Prometheus at {base} refused `{expr}`: {}",
            answer.error.unwrap_or_else(|| format!("status {status}"))
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_parse_and_non_finite_values_read_as_none() {
        let v = serde_json::json!([
            {"metric": {"gpu": "0", "instance": "a:1"}, "value": [1.5, "71"]},
            {"metric": {}, "value": [1.5, "NaN"]},
            {"metric": {}, "value": [1.5, "+Inf"]}
        ]);
        let s: Vec<Sample> = serde_json::from_value(v).unwrap();
        assert_eq!(s[0].value, Some(71.0));
        assert_eq!(s[0].label("gpu"), "0");
        assert_eq!(s[0].label("missing"), "");
        assert_eq!(s[1].value, None);
        assert_eq!(s[2].value, None);
        assert_eq!(scalar(&s), Some(71.0));
        assert_eq!(scalar(&[]), None);
    }
}
