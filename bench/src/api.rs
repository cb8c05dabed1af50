//! A small client of the vLLM-batch HTTP API (what a user's SDK does): streamed upload,
//! batch creation, polling, download; and of the simulator's `/metrics` and `/sim/stats`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::TryStreamExt;
use serde_json::{json, Value};
use upstream_sim::SimStats;

/// The vLLM-batch API at `base` (`http://127.0.0.1:PORT/v1`).
#[derive(Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: String) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(3600)).build().expect("a reqwest client");
        Api { base, http }
    }

    /// Uploads `path` (`purpose=batch`), streaming it from disk; returns the file id.
    pub async fn upload(&self, path: &Path) -> Result<String> {
        let file = tokio::fs::File::open(path).await?;
        let len = file.metadata().await?.len();
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
        let part = reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), len)
            .file_name("input.jsonl")
            .mime_str("application/jsonl")?;
        let form = reqwest::multipart::Form::new().text("purpose", "batch").part("file", part);
        let resp = self.http.post(format!("{}/files", self.base)).multipart(form).send().await?;
        let body = ok_json(resp).await.context("uploading the input file")?;
        Ok(body["id"].as_str().context("upload answer has no id")?.to_string())
    }

    /// The server's in-flight limits (`vllm_upstream_concurrency_limit`, summed over upstreams)
    /// and requests in flight (`vllm_upstream_in_flight`), from its `/metrics`.
    pub async fn in_flight(&self) -> Result<(u64, u64)> {
        let root = self.base.trim_end_matches("/v1");
        let text = self.http.get(format!("{root}/metrics")).send().await?.error_for_status()?.text().await?;
        let sum = |name: &str| -> u64 {
            text.lines()
                .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64
        };
        Ok((sum("vllm_upstream_concurrency_limit"), sum("vllm_upstream_in_flight")))
    }

    /// Creates a chat-completions batch over `file_id`; returns its id.
    pub async fn create_batch(&self, file_id: &str) -> Result<String> {
        let resp = self
            .http
            .post(format!("{}/batches", self.base))
            .json(&json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
            .send()
            .await?;
        let body = ok_json(resp).await.context("creating the batch")?;
        Ok(body["id"].as_str().context("batch answer has no id")?.to_string())
    }

    pub async fn batch(&self, id: &str) -> Result<Value> {
        ok_json(self.http.get(format!("{}/batches/{id}", self.base)).send().await?).await
    }

    pub async fn cancel(&self, id: &str) -> Result<Value> {
        ok_json(self.http.post(format!("{}/batches/{id}/cancel", self.base)).send().await?).await
    }

    /// Polls the batch every `every` until its status is one of `statuses` (or terminal);
    /// returns it and when the change was seen.
    pub async fn wait_status(&self, id: &str, statuses: &[&str], every: Duration) -> Result<(Value, Instant)> {
        const TERMINAL: [&str; 4] = ["completed", "failed", "expired", "cancelled"];
        loop {
            let b = self.batch(id).await?;
            let status = b["status"].as_str().unwrap_or_default();
            if statuses.contains(&status) || TERMINAL.contains(&status) {
                return Ok((b, Instant::now()));
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Deletes a file (`DELETE /v1/files/{id}`).
    pub async fn delete_file(&self, file_id: &str) -> Result<()> {
        let resp = self.http.delete(format!("{}/files/{file_id}", self.base)).send().await?;
        ok_json(resp).await.with_context(|| format!("deleting {file_id}"))?;
        Ok(())
    }

    /// Downloads a file's content to `dest`; returns (bytes, lines).
    pub async fn download(&self, file_id: &str, dest: &Path) -> Result<(u64, u64)> {
        use tokio::io::AsyncWriteExt;
        let resp = self.http.get(format!("{}/files/{file_id}/content", self.base)).send().await?;
        if !resp.status().is_success() {
            bail!("downloading {file_id}: {}", resp.status());
        }
        let mut out = tokio::io::BufWriter::new(tokio::fs::File::create(dest).await?);
        let mut stream = resp.bytes_stream();
        let (mut bytes, mut lines) = (0u64, 0u64);
        while let Some(chunk) = stream.try_next().await? {
            bytes += chunk.len() as u64;
            lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        Ok((bytes, lines))
    }
}

async fn ok_json(resp: reqwest::Response) -> Result<Value> {
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        bail!("HTTP {status}: {text}");
    }
    Ok(serde_json::from_str(&text)?)
}

/// One batch as a user runs it — upload, create, wait for validation, wait for `completed` — and
/// when each step ended. `batch` is its last state (check its status).
pub struct BatchRun {
    pub batch_id: String,
    pub batch: Value,
    pub start: Instant,
    pub uploaded: Instant,
    pub validated: Instant,
    pub done: Instant,
}

impl BatchRun {
    pub fn upload_s(&self) -> f64 {
        self.uploaded.duration_since(self.start).as_secs_f64()
    }
    pub fn validate_s(&self) -> f64 {
        self.validated.duration_since(self.uploaded).as_secs_f64()
    }
    pub fn run_s(&self) -> f64 {
        self.done.duration_since(self.validated).as_secs_f64()
    }
    pub fn total_s(&self) -> f64 {
        self.done.duration_since(self.start).as_secs_f64()
    }
}

impl Api {
    /// Runs `path` as one chat batch end to end (validation polled every 20 ms, completion every
    /// 50 ms).
    pub async fn run_batch(&self, path: &Path) -> Result<BatchRun> {
        let start = Instant::now();
        let file_id = self.upload(path).await?;
        let uploaded = Instant::now();
        let batch_id = self.create_batch(&file_id).await?;
        let (_, validated) =
            self.wait_status(&batch_id, &["in_progress", "finalizing"], Duration::from_millis(20)).await?;
        let (batch, done) = self.wait_status(&batch_id, &["completed"], Duration::from_millis(50)).await?;
        Ok(BatchRun { batch_id, batch, start, uploaded, validated, done })
    }
}

/// The simulator at `root` (`http://127.0.0.1:PORT`, no `/v1`).
#[derive(Clone)]
pub struct Sim {
    pub root: String,
    http: reqwest::Client,
}

/// One scrape of the simulator's `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gauges {
    pub running: u64,
    pub waiting: u64,
    pub succeeded: u64,
}

impl Sim {
    pub fn new(root: String) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("a reqwest client");
        Sim { root, http }
    }

    pub fn base_url(&self) -> String {
        format!("{}/v1", self.root)
    }

    pub async fn stats(&self) -> Result<SimStats> {
        Ok(self.http.get(format!("{}/sim/stats", self.root)).send().await?.error_for_status()?.json().await?)
    }

    /// Scrapes `/metrics` as the worker's controller would.
    pub async fn gauges(&self) -> Result<Gauges> {
        let text = self.http.get(format!("{}/metrics", self.root)).send().await?.error_for_status()?.text().await?;
        let value = |name: &str| -> u64 {
            text.lines()
                .find(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0) as u64
        };
        Ok(Gauges {
            running: value("vllm:num_requests_running"),
            waiting: value("vllm:num_requests_waiting"),
            succeeded: value("vllm:request_success_total"),
        })
    }
}
