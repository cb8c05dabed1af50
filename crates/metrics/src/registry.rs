//! Every Prometheus metric of vllm-batch, defined once, here. Other crates record through the
//! typed handles of `metrics()`; names and labels are a contract with the dashboards and alert
//! rules under `monitoring/`. No label ever carries a batch, request, custom or file id.

use std::sync::OnceLock;

use prometheus::{
    CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Batches: seconds to a day.
const BATCH_BUCKETS: &[f64] =
    &[1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0];
/// Waiting for the first dispatch: a tenth of a second to hours.
const QUEUE_BUCKETS: &[f64] =
    &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0];
/// Chunks: a tenth of a second to half an hour.
const CHUNK_BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];
/// Lines per chunk.
const CHUNK_SIZE_BUCKETS: &[f64] = &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0];
/// API requests: a millisecond to a minute.
const API_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Upstream inference: ten milliseconds to ten minutes.
const INFERENCE_BUCKETS: &[f64] =
    &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// The typed handles of every metric.
pub struct Metrics {
    pub registry: Registry,

    // Batch lifecycle and queue.
    /// `vllm_batch_jobs_active{status}`: batches per non-terminal status (refreshed from the
    /// database by the API process at scrape time).
    pub jobs_active: IntGaugeVec,
    /// `vllm_batch_jobs_total{status}`: batches that reached a terminal status.
    pub jobs_total: IntCounterVec,
    /// `vllm_batch_requests_processed_total{status}`: requests written to the output
    /// (`completed`) or error (`failed`) file.
    pub requests_processed: IntCounterVec,
    /// `vllm_batch_processing_duration_seconds`: creation → terminal status.
    pub processing_duration: Histogram,
    /// `vllm_queue_depth`: requests of running batches not yet finished (waiting or on the wire).
    pub queue_depth: IntGauge,
    /// `vllm_queue_wait_time_seconds`: batch creation → first dispatch.
    pub queue_wait: Histogram,

    // Chunks.
    pub chunk_duration: Histogram,
    pub chunk_size: Histogram,
    /// `vllm_chunks_processed_total{status}`: `completed`, `lost` (lease taken over),
    /// `released` (shutdown), `error`.
    pub chunks_processed: IntCounterVec,

    // API.
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub http_errors: IntCounterVec,
    pub files_uploaded: IntCounter,
    pub files_bytes_uploaded: IntCounter,
    /// `vllm_errors_total{type}`: errors logged at error level, by kind.
    pub errors: IntCounterVec,

    // Webhooks.
    /// `vllm_webhook_deliveries_total{status}`: webhook delivery attempts by outcome
    /// (`delivered`: a 2xx; `error`: failed, retried later; `exhausted`: failed, given up).
    pub webhook_deliveries: IntCounterVec,
    /// `vllm_webhook_pending_deliveries`: deliveries not yet delivered nor given up (from the
    /// database, as the deliverer last read it).
    pub webhook_pending: IntGauge,

    // Garbage collector.
    /// `vllm_gc_deleted_total{kind}`: what the collector removed (`file`: an expired file;
    /// `part`: a part segment nothing will read; `upload`: an upload its process abandoned).
    pub gc_deleted: IntCounterVec,
    /// `vllm_gc_last_run_timestamp_seconds`: when a collector pass last finished (0: never).
    pub gc_last_run: Gauge,
    /// `vllm_storage_bytes{kind}`: stored bytes (`input`, `output`, `parts`, `other`), as the
    /// collector's last pass measured them.
    pub storage_bytes: GaugeVec,
    /// `vllm_disk_free_bytes`, `vllm_disk_total_bytes`: the data folder's volume;
    /// `vllm_disk_min_free_bytes`: the margin `--min-free-disk` keeps (0: not enforced).
    pub disk_free: Gauge,
    pub disk_total: Gauge,
    pub disk_min_free: Gauge,

    // Worker.
    pub worker_status: IntGaugeVec,
    pub worker_heartbeat: GaugeVec,
    /// `vllm_upstream_in_flight{upstream}`: requests on the wire per upstream (its index).
    pub upstream_in_flight: IntGaugeVec,
    /// `vllm_upstream_concurrency_limit{upstream}`: the in-flight limit per upstream (fixed, or
    /// where the adaptive controller has set it).
    pub upstream_concurrency_limit: IntGaugeVec,
    /// `vllm_upstream_other_requests{upstream}`: requests of other clients at the upstream
    /// (vLLM's running + waiting less this worker's own in flight), as `--background` sees them.
    pub upstream_other_requests: GaugeVec,
    /// `vllm_upstream_retries_total{reason}`.
    pub upstream_retries: IntCounterVec,
    /// `vllm_upstream_up{upstream}`: 1 while the upstream is up, 0 while it is down (outage
    /// evidence: refused or reset connections, 502/503/504, with no success between).
    pub upstream_up: IntGaugeVec,
    /// `vllm_upstream_down_seconds_total{upstream}`: time spent down.
    pub upstream_down_seconds: CounterVec,
    /// `vllm_upstream_outages_total{upstream}`: times the upstream went down.
    pub upstream_outages: IntCounterVec,
    /// `vllm_upstream_errors_total{class}`: failed attempts by `4xx`, `5xx`, `connect`,
    /// `timeout`, `body`.
    pub upstream_errors: IntCounterVec,

    // Inference.
    pub inference_duration: Histogram,
    pub tokens_generated: IntCounter,
    pub prompt_tokens: IntCounter,
    pub throughput: Gauge,
    pub model_loaded: IntGaugeVec,
    pub model_load_duration: GaugeVec,

    // GPU (NVML); series exist only for GPUs actually read.
    pub gpu_temperature: GaugeVec,
    pub gpu_memory_used: GaugeVec,
    pub gpu_memory_total: GaugeVec,
    pub gpu_utilization: GaugeVec,
    pub gpu_power: GaugeVec,
    /// `vllm_gpu_info{gpu,name,uuid}` = 1.
    pub gpu_info: IntGaugeVec,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    r.register(Box::new(c.clone())).expect("metric names are unique");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    register(r, Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())).unwrap())
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(r, IntCounterVec::new(Opts::new(name, help), labels).unwrap())
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    register(r, GaugeVec::new(Opts::new(name, help), labels).unwrap())
}

fn int_gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(r, IntGaugeVec::new(Opts::new(name, help), labels).unwrap())
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        let m = Metrics {
            jobs_active: int_gauge_vec(&r, "vllm_batch_jobs_active", "Batches per non-terminal status", &["status"]),
            upstream_other_requests: gauge_vec(
                &r,
                "vllm_upstream_other_requests",
                "Requests of other clients at the upstream (running + waiting less ours), as background mode sees them",
                &["upstream"],
            ),
            jobs_total: counter_vec(&r, "vllm_batch_jobs_total", "Batches that reached a terminal status", &["status"]),
            requests_processed: counter_vec(
                &r,
                "vllm_batch_requests_processed_total",
                "Requests written to a batch's output (completed) or error (failed) file",
                &["status"],
            ),
            processing_duration: histogram(
                &r,
                "vllm_batch_processing_duration_seconds",
                "Batch creation to terminal status",
                BATCH_BUCKETS,
            ),
            queue_depth: register(
                &r,
                IntGauge::new(
                    "vllm_queue_depth",
                    "Requests of running batches not yet finished (waiting or in flight)",
                )
                .unwrap(),
            ),
            queue_wait: histogram(
                &r,
                "vllm_queue_wait_time_seconds",
                "Batch creation to first dispatch",
                QUEUE_BUCKETS,
            ),
            chunk_duration: histogram(
                &r,
                "vllm_chunk_processing_duration_seconds",
                "Claim to completion of a chunk",
                CHUNK_BUCKETS,
            ),
            chunk_size: histogram(&r, "vllm_chunk_size", "Requests per processed chunk", CHUNK_SIZE_BUCKETS),
            chunks_processed: counter_vec(
                &r,
                "vllm_chunks_processed_total",
                "Chunks processed, by outcome",
                &["status"],
            ),
            http_requests: counter_vec(
                &r,
                "vllm_request_total",
                "API requests by method, route template and status code",
                &["method", "endpoint", "status"],
            ),
            http_duration: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("vllm_request_duration_seconds", "API request latency")
                        .buckets(API_BUCKETS.to_vec()),
                    &["method", "endpoint"],
                )
                .unwrap(),
            ),
            http_errors: counter_vec(
                &r,
                "vllm_request_errors_total",
                "API error responses by route template and error type",
                &["endpoint", "type"],
            ),
            files_uploaded: register(&r, IntCounter::new("vllm_files_uploaded_total", "Files uploaded").unwrap()),
            files_bytes_uploaded: register(
                &r,
                IntCounter::new("vllm_files_bytes_uploaded_total", "Bytes of uploaded files").unwrap(),
            ),
            errors: counter_vec(&r, "vllm_errors_total", "Errors by kind", &["type"]),
            webhook_deliveries: counter_vec(
                &r,
                "vllm_webhook_deliveries_total",
                "Webhook delivery attempts by outcome (delivered, error, exhausted)",
                &["status"],
            ),
            webhook_pending: register(
                &r,
                IntGauge::new("vllm_webhook_pending_deliveries", "Webhook deliveries not yet delivered nor given up")
                    .unwrap(),
            ),
            gc_deleted: counter_vec(
                &r,
                "vllm_gc_deleted_total",
                "Objects the garbage collector removed, by kind",
                &["kind"],
            ),
            gc_last_run: register(
                &r,
                Gauge::new("vllm_gc_last_run_timestamp_seconds", "Unix time the last garbage-collector pass finished")
                    .unwrap(),
            ),
            storage_bytes: gauge_vec(
                &r,
                "vllm_storage_bytes",
                "Stored bytes by kind (input, output, parts, other), as of the last garbage-collector pass",
                &["kind"],
            ),
            disk_free: register(
                &r,
                Gauge::new("vllm_disk_free_bytes", "Free bytes on the data folder's volume").unwrap(),
            ),
            disk_total: register(&r, Gauge::new("vllm_disk_total_bytes", "Size of the data folder's volume").unwrap()),
            disk_min_free: register(
                &r,
                Gauge::new(
                    "vllm_disk_min_free_bytes",
                    "Free bytes the server keeps on the data folder (--min-free-disk)",
                )
                .unwrap(),
            ),
            worker_status: int_gauge_vec(&r, "vllm_worker_status", "Worker state: 1 up, 0 draining", &["worker"]),
            worker_heartbeat: gauge_vec(
                &r,
                "vllm_worker_heartbeat_timestamp",
                "Unix time of the worker's last heartbeat",
                &["worker"],
            ),
            upstream_in_flight: int_gauge_vec(
                &r,
                "vllm_upstream_in_flight",
                "Requests on the wire to each upstream",
                &["upstream"],
            ),
            upstream_concurrency_limit: int_gauge_vec(
                &r,
                "vllm_upstream_concurrency_limit",
                "In-flight limit of each upstream (adaptive or fixed)",
                &["upstream"],
            ),
            upstream_retries: counter_vec(
                &r,
                "vllm_upstream_retries_total",
                "Upstream request retries by reason",
                &["reason"],
            ),
            upstream_up: int_gauge_vec(
                &r,
                "vllm_upstream_up",
                "1 while the upstream is up, 0 while down",
                &["upstream"],
            ),
            upstream_down_seconds: register(
                &r,
                CounterVec::new(
                    Opts::new("vllm_upstream_down_seconds_total", "Seconds the upstream has been down"),
                    &["upstream"],
                )
                .unwrap(),
            ),
            upstream_outages: counter_vec(
                &r,
                "vllm_upstream_outages_total",
                "Times the upstream went down",
                &["upstream"],
            ),
            upstream_errors: counter_vec(
                &r,
                "vllm_upstream_errors_total",
                "Failed upstream attempts by class",
                &["class"],
            ),
            inference_duration: histogram(
                &r,
                "vllm_inference_duration_seconds",
                "Duration of one upstream request",
                INFERENCE_BUCKETS,
            ),
            tokens_generated: register(
                &r,
                IntCounter::new("vllm_tokens_generated_total", "Completion tokens of recorded results").unwrap(),
            ),
            prompt_tokens: register(
                &r,
                IntCounter::new("vllm_prompt_tokens_total", "Prompt tokens of recorded results").unwrap(),
            ),
            throughput: register(
                &r,
                Gauge::new("vllm_throughput_tokens_per_second", "Generated tokens per second over the last minute")
                    .unwrap(),
            ),
            model_loaded: int_gauge_vec(&r, "vllm_model_loaded", "1 while an upstream reports the model", &["model"]),
            model_load_duration: gauge_vec(
                &r,
                "vllm_model_load_duration_seconds",
                "Worker start to the model's first report by its upstream",
                &["model"],
            ),
            gpu_temperature: gauge_vec(&r, "vllm_gpu_temperature_celsius", "GPU temperature", &["gpu"]),
            gpu_memory_used: gauge_vec(&r, "vllm_gpu_memory_used_bytes", "GPU memory in use", &["gpu"]),
            gpu_memory_total: gauge_vec(&r, "vllm_gpu_memory_total_bytes", "GPU memory in total", &["gpu"]),
            gpu_utilization: gauge_vec(&r, "vllm_gpu_utilization_percent", "GPU utilization", &["gpu"]),
            gpu_power: gauge_vec(&r, "vllm_gpu_power_watts", "GPU power draw", &["gpu"]),
            gpu_info: int_gauge_vec(&r, "vllm_gpu_info", "GPU identity (value 1)", &["gpu", "name", "uuid"]),
            registry: r,
        };
        // Terminal statuses and outcomes exist from the start, so rate() works from the first scrape.
        for s in ["completed", "failed", "expired", "cancelled"] {
            m.jobs_total.with_label_values(&[s]);
        }
        for s in ["completed", "failed"] {
            m.requests_processed.with_label_values(&[s]);
        }
        // Every labelled counter an alert or panel reads exists at 0 before its first event, so
        // a query on it reads 0 instead of "no data".
        for kind in ERROR_TYPES {
            m.errors.with_label_values(&[kind]);
        }
        for class in UPSTREAM_ERROR_CLASSES {
            m.upstream_errors.with_label_values(&[class]);
        }
        for reason in RETRY_REASONS {
            m.upstream_retries.with_label_values(&[reason]);
        }
        for status in ["completed", "lost", "released", "error"] {
            m.chunks_processed.with_label_values(&[status]);
        }
        for status in WEBHOOK_OUTCOMES {
            m.webhook_deliveries.with_label_values(&[status]);
        }
        for kind in GC_KINDS {
            m.gc_deleted.with_label_values(&[kind]);
        }
        for kind in STORAGE_KINDS {
            m.storage_bytes.with_label_values(&[kind]);
        }
        // The API families: the scrape that reads them is itself a request, counted once it has
        // been answered — so the first scrape would lack them.
        m.http_requests.with_label_values(&["GET", "/metrics", "200"]);
        m.http_duration.with_label_values(&["GET", "/metrics"]);
        for kind in API_ERROR_TYPES {
            m.http_errors.with_label_values(&["unmatched", kind]);
        }
        m
    }

    /// Counts a batch that reached its terminal `status` after `seconds` since its creation.
    pub fn batch_ended(&self, status: &str, seconds: f64) {
        self.jobs_total.with_label_values(&[status]).inc();
        self.processing_duration.observe(seconds.max(0.0));
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        String::from_utf8(buf).expect("exposition is UTF-8")
    }
}

/// The `type` label values of `vllm_errors_total`.
pub const ERROR_TYPES: [&str; 4] = ["api", "upstream", "chunk", "finalize"];
/// The `type` label values of `vllm_request_errors_total` (OpenAI's error types).
pub const API_ERROR_TYPES: [&str; 4] = ["invalid_request_error", "requests", "upstream_error", "server_error"];
/// The `class` label values of `vllm_upstream_errors_total`.
pub const UPSTREAM_ERROR_CLASSES: [&str; 5] = ["4xx", "5xx", "connect", "timeout", "body"];
/// The `status` label values of `vllm_webhook_deliveries_total`.
pub const WEBHOOK_OUTCOMES: [&str; 3] = ["delivered", "error", "exhausted"];
/// The `kind` label values of `vllm_gc_deleted_total`.
pub const GC_KINDS: [&str; 3] = ["file", "part", "upload"];
/// The `kind` label values of `vllm_storage_bytes`.
pub const STORAGE_KINDS: [&str; 4] = ["input", "output", "parts", "other"];
/// The `reason` label values of `vllm_upstream_retries_total`.
pub const RETRY_REASONS: [&str; 6] = ["status_408", "status_429", "status_5xx", "connect", "timeout", "body"];

/// Sets the per-upstream series for upstreams `0..n` (up, 0 s down, no outage yet), so they
/// exist from the first scrape.
pub fn init_upstreams(n: usize) {
    let m = metrics();
    for i in 0..n {
        let label = i.to_string();
        m.upstream_up.with_label_values(&[&label]).set(1);
        m.upstream_in_flight.with_label_values(&[&label]);
        m.upstream_down_seconds.with_label_values(&[&label]);
        m.upstream_outages.with_label_values(&[&label]);
        m.upstream_other_requests.with_label_values(&[&label]);
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The content type of `Metrics::encode`'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exposed_with_its_contract_name() {
        let m = metrics();
        m.queue_depth.set(3);
        m.http_requests.with_label_values(&["GET", "/v1/batches/{batch_id}", "200"]).inc();
        let text = m.encode();
        for name in
            ["vllm_batch_jobs_total", "vllm_batch_requests_processed_total", "vllm_queue_depth", "vllm_request_total"]
        {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
        assert!(text.contains("vllm_queue_depth 3"));
    }
}
