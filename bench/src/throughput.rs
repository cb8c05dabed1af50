//! Benchmarks 2–4, all against a zero-latency simulator: the overhead ceiling (end-to-end
//! requests/s and server CPU per request), ingest (upload + validation MB/s and peak RSS) and
//! memory (peak RSS across batch sizes).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::input::{self, Input, Shape};
use crate::procs::Proc;
use crate::stack::{self, Ctx, SimMode};

const MIB: f64 = 1024.0 * 1024.0;

/// Options shared by the zero-latency runs.
pub struct Options {
    pub seed: u64,
    pub server_args: Vec<String>,
    /// Record the server with `perf record` while the batch runs, into this file.
    pub perf: Option<std::path::PathBuf>,
}

/// One batch end to end: upload → validated → completed → output downloaded.
struct EndToEnd {
    upload_s: f64,
    validate_s: f64,
    run_s: f64,
    total_s: f64,
    server_cpu_s: f64,
    sim_cpu_s: f64,
    peak_rss_kib: u64,
    rss_series_mib: Vec<(f64, f64)>,
    /// (seconds, in-flight limit, requests in flight) every 250 ms.
    in_flight_series: Vec<(f64, u64, u64)>,
    counts: Value,
    output_lines: u64,
    output_bytes: u64,
}

impl EndToEnd {
    fn json(&self, requests: u64) -> Value {
        json!({
            "upload_seconds": self.upload_s,
            "validation_seconds": self.validate_s,
            "processing_seconds": self.run_s,
            "end_to_end_seconds": self.total_s,
            "requests_per_second": requests as f64 / self.total_s,
            "server_cpu_seconds": self.server_cpu_s,
            "server_cpu_us_per_request": 1e6 * self.server_cpu_s / requests as f64,
            "sim_cpu_seconds": self.sim_cpu_s,
            "server_peak_rss_mib": self.peak_rss_kib as f64 / 1024.0,
            "request_counts": self.counts,
            "output_lines": self.output_lines,
            "output_bytes": self.output_bytes,
            "rss_series_mib": self.rss_series_mib.iter().map(|(t, m)| json!([t, m])).collect::<Vec<_>>(),
            "in_flight_limit_max": self.in_flight_series.iter().map(|s| s.1).max(),
            "in_flight_series": self.in_flight_series.iter().map(|(t, l, n)| json!([t, l, n])).collect::<Vec<_>>(),
        })
    }
}

/// Runs `input` through a fresh server and zero-latency simulator in `dir`.
async fn end_to_end(ctx: &Ctx, dir: &Path, input: &Input, opts: &Options) -> Result<EndToEnd> {
    let mut runs = end_to_end_repeated(ctx, dir, input, opts, 1).await?;
    Ok(runs.remove(0))
}

/// `batches` batches of `input`, one after another, through one server: the server's memory
/// after each (its peak so far) shows whether it keeps growing with the requests it has run.
async fn end_to_end_repeated(
    ctx: &Ctx,
    dir: &Path,
    input: &Input,
    opts: &Options,
    batches: usize,
) -> Result<Vec<EndToEnd>> {
    let (sim_proc, sim) = stack::start_sim(ctx, dir, "sim", SimMode::ZeroLatency).await?;
    let (serve, api) = stack::start_serve(ctx, dir, &sim.base_url(), &opts.server_args).await?;
    let mut runs = Vec::with_capacity(batches);
    for n in 0..batches {
        let stop = CancellationToken::new();
        let rss = tokio::spawn(sample_rss(serve.pid, stop.clone()));
        let in_flight = tokio::spawn(sample_in_flight(api.clone(), stop.clone()));
        let (cpu0, sim_cpu0) = (serve.cpu_seconds()?, sim_proc.cpu_seconds()?);
        let perf = match (&opts.perf, n) {
            (Some(out), 0) => Some(start_perf(serve.pid, out, &dir.join("perf.log"))?),
            _ => None,
        };

        let run = api.run_batch(&input.path).await?;
        let (server_cpu_s, sim_cpu_s) = (serve.cpu_seconds()? - cpu0, sim_proc.cpu_seconds()? - sim_cpu0);
        if let Some(perf) = perf {
            perf.stop(Duration::from_secs(120)).await;
        }
        stop.cancel();
        let rss_series_mib = rss.await?;
        let in_flight_series = in_flight.await?;
        let peak_rss_kib = serve.peak_rss_kib()?;
        let batch = &run.batch;
        if batch["status"] != "completed" {
            bail!("batch {} ended {}: {batch}", run.batch_id, batch["status"]);
        }
        let output = batch["output_file_id"].as_str().context("no output file")?;
        let out_path = dir.join("output.jsonl");
        let (output_bytes, output_lines) = api.download(output, &out_path).await?;
        std::fs::remove_file(&out_path)?;
        if batches > 1 {
            // As a long-lived server's users do: the next batch's files replace this one's (a
            // soak of many large batches would otherwise fill the disk).
            let input = batch["input_file_id"].as_str().context("no input file id")?;
            api.delete_file(input).await?;
            api.delete_file(output).await?;
        }
        runs.push(EndToEnd {
            upload_s: run.upload_s(),
            validate_s: run.validate_s(),
            run_s: run.run_s(),
            total_s: run.total_s(),
            server_cpu_s,
            sim_cpu_s,
            peak_rss_kib,
            rss_series_mib,
            in_flight_series,
            counts: batch["request_counts"].clone(),
            output_lines,
            output_bytes,
        });
    }
    serve.stop(Duration::from_secs(30)).await;
    sim_proc.stop(Duration::from_secs(5)).await;
    Ok(runs)
}

/// `perf record` with DWARF call graphs (release builds keep no frame pointers) on `pid`,
/// stopped with SIGTERM by [`Proc::stop`] (perf then writes its file).
fn start_perf(pid: u32, out: &Path, log: &Path) -> Result<Proc> {
    let args =
        ["record", "-F", "499", "--call-graph", "dwarf", "-p", &pid.to_string(), "-o", &out.display().to_string()]
            .map(String::from)
            .to_vec();
    Proc::spawn("perf", Path::new("perf"), &args, &[], log)
}

/// `probe`'s answer every 250 ms until `stop`, each with the seconds since the start (to 10 ms);
/// samples it has no answer for are skipped.
async fn sample_every_250ms<T, F, Fut>(stop: CancellationToken, mut probe: F) -> Vec<(f64, T)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut out = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return out,
            _ = tick.tick() => {}
        }
        if let Some(v) = probe().await {
            out.push(((start.elapsed().as_secs_f64() * 100.0).round() / 100.0, v));
        }
    }
}

/// `VmRSS` of `pid` every 250 ms, as (seconds, MiB).
async fn sample_rss(pid: u32, stop: CancellationToken) -> Vec<(f64, f64)> {
    sample_every_250ms(stop, || async move {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())?;
        Some((kib / 1024.0 * 10.0).round() / 10.0)
    })
    .await
}

/// The server's in-flight limit and requests in flight every 250 ms, as (seconds, limit, in flight):
/// what its memory follows.
async fn sample_in_flight(api: Api, stop: CancellationToken) -> Vec<(f64, u64, u64)> {
    let samples = sample_every_250ms(stop, || {
        let api = api.clone();
        async move { api.in_flight().await.ok() }
    })
    .await;
    samples.into_iter().map(|(t, (limit, n))| (t, limit, n)).collect()
}

/// Benchmark 2: the overhead ceiling.
pub async fn overhead(ctx: &Ctx, name: &str, requests: u64, shape: Shape, opts: &Options) -> Result<Value> {
    let dir = ctx.scratch(name)?;
    let input = input::generate(&dir.join("input.jsonl"), shape, opts.seed, Some(requests), None)?;
    eprintln!("{name}: {} requests, {:.1} MiB", input.requests, input.bytes as f64 / MIB);
    let run = end_to_end(ctx, &dir, &input, opts).await?;
    eprintln!(
        "  {:.0} requests/s end to end ({:.2} s), {:.1} µs server CPU per request",
        requests as f64 / run.total_s,
        run.total_s,
        1e6 * run.server_cpu_s / requests as f64
    );
    std::fs::remove_file(&input.path)?;
    Ok(json!({
        "benchmark": name,
        "machine": stack::machine(),
        "input": input.summary(),
        "input_shape": shape,
        "seed": opts.seed,
        "server_args": opts.server_args,
        "result": run.json(requests),
    }))
}

/// Benchmark 3: upload + validation of a `bytes`-sized file.
pub async fn ingest(ctx: &Ctx, name: &str, bytes: u64, opts: &Options) -> Result<Value> {
    let dir = ctx.scratch(name)?;
    let input = input::generate(&dir.join("input.jsonl"), Shape::COMPACT, opts.seed, None, Some(bytes))?;
    eprintln!("{name}: {} requests, {:.1} MiB", input.requests, input.bytes as f64 / MIB);
    let (sim_proc, sim) = stack::start_sim(ctx, &dir, "sim", SimMode::ZeroLatency).await?;
    let (serve, api) = stack::start_serve(ctx, &dir, &sim.base_url(), &opts.server_args).await?;
    let cpu0 = serve.cpu_seconds()?;

    let start = Instant::now();
    let file_id = api.upload(&input.path).await?;
    let uploaded = Instant::now();
    let upload_rss_kib = serve.peak_rss_kib()?;
    let batch_id = api.create_batch(&file_id).await?;
    let (batch, validated) = api.wait_status(&batch_id, &["in_progress"], Duration::from_millis(20)).await?;
    let peak_rss_kib = serve.peak_rss_kib()?;
    let cpu = serve.cpu_seconds()? - cpu0;
    if batch["status"] != "in_progress" {
        bail!("batch {batch_id} did not validate: {batch}");
    }
    // Ingest is measured; the requests themselves are not this benchmark's business.
    api.cancel(&batch_id).await?;
    serve.stop(Duration::from_secs(30)).await;
    sim_proc.stop(Duration::from_secs(5)).await;
    std::fs::remove_file(&input.path)?;

    let upload_s = uploaded.duration_since(start).as_secs_f64();
    let validate_s = validated.duration_since(uploaded).as_secs_f64();
    let mb = input.bytes as f64 / 1e6;
    let total = upload_s + validate_s;
    eprintln!(
        "  upload {upload_s:.2} s + validation {validate_s:.2} s: {:.0} MB/s; peak RSS {:.1} MiB",
        mb / total,
        peak_rss_kib as f64 / 1024.0
    );
    Ok(json!({
        "benchmark": name,
        "machine": stack::machine(),
        "input": input.summary(),
        "input_shape": Shape::COMPACT,
        "seed": opts.seed,
        "server_args": opts.server_args,
        "result": {
            "bytes": input.bytes,
            "lines": input.requests,
            "upload_seconds": upload_s,
            "validation_seconds": validate_s,
            "mb_per_second": mb / total,
            "upload_mb_per_second": mb / upload_s,
            "validation_mb_per_second": mb / validate_s,
            "server_cpu_seconds": cpu,
            "server_peak_rss_mib_after_upload": upload_rss_kib as f64 / 1024.0,
            "server_peak_rss_mib": peak_rss_kib as f64 / 1024.0,
        },
    }))
}

/// Benchmark 4: peak RSS of a fresh server per batch size.
pub async fn memory(ctx: &Ctx, name: &str, sizes: &[u64], batches: usize, opts: &Options) -> Result<Value> {
    let mut runs = Vec::new();
    for &n in sizes {
        let dir = ctx.scratch(&format!("{name}-{n}"))?;
        let input = input::generate(&dir.join("input.jsonl"), Shape::COMPACT, opts.seed, Some(n), None)?;
        eprintln!("{name}: {n} requests, {:.1} MiB", input.bytes as f64 / MIB);
        let all = end_to_end_repeated(ctx, &dir, &input, opts, batches.max(1)).await?;
        for (k, run) in all.iter().enumerate() {
            eprintln!(
                "  batch {}: peak RSS so far {:.1} MiB, {:.2} s end to end",
                k + 1,
                run.peak_rss_kib as f64 / 1024.0,
                run.total_s
            );
        }
        let mut entry = json!({"requests": n, "input": input.summary(), "result": all[0].json(n)});
        if all.len() > 1 {
            // `server_peak_rss_mib` of batch k is the server's peak over batches 1..=k.
            entry["batches"] = all.iter().map(|r| r.json(n)).collect();
        }
        runs.push(entry);
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(json!({
        "benchmark": name,
        "machine": stack::machine(),
        "input_shape": Shape::COMPACT,
        "seed": opts.seed,
        "server_args": opts.server_args,
        "batches_per_server": batches.max(1),
        "runs": runs,
    }))
}
