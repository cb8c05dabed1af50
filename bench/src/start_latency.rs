//! Benchmark 7 (start latency): how long an idle `vllm-batch serve` takes to start a batch —
//! from `POST /v1/batches` to the batch's `in_progress` and to its first request reaching the
//! upstream. One `serve` (SQLite, local folder, default flags) against a zero-latency
//! simulator runs one 1-line batch per round; between rounds the server is idle (the last
//! batch completed, its successor's input uploaded, then `idle` more).
//!
//! Nothing polls the server while a round is timed, since on a small machine the polls would
//! compete with what they measure (and `GET /v1/batches/{id}` answers from a 100 ms cache).
//! Both ends come from clocks taken where the event happens, on the same wall clock as the
//! driver's: the first request's arrival from the simulator's `last_arrival_unix_us` (its only
//! request in the round), `in_progress` from the timestamp of the worker's `batch validated`
//! log line, which it writes once the status change has committed.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::api::{Api, Sim};
use crate::input::{self, Shape};
use crate::stack::{self, Ctx, SimMode};

/// Options of a start-latency run.
pub struct Options {
    pub rounds: usize,
    /// Idle time before each creation (after the previous batch completed and the input was uploaded).
    pub idle: Duration,
    pub seed: u64,
    pub server_args: Vec<String>,
}

/// How often the driver asks the simulator whether the round's request has arrived (only
/// to know when to look for completion; the arrival time itself is the simulator's).
const ARRIVAL_POLL: Duration = Duration::from_millis(10);
/// A round whose request has not arrived by then fails the run.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(60);
/// The worker's log message written when a batch has moved to `in_progress`.
const VALIDATED_MESSAGE: &str = "batch validated";

/// One round's timings, in ms from just before `POST /v1/batches` was sent.
struct Round {
    batch_id: String,
    /// The driver's wall clock just before the POST, in µs since the Unix epoch.
    t0_unix_us: u64,
    /// When the creation answer came back.
    created_ms: f64,
    /// When the simulator received the batch's request.
    first_request_ms: f64,
}

pub async fn run(ctx: &Ctx, name: &str, opts: &Options) -> Result<Value> {
    let dir = ctx.scratch(name)?;
    let input = input::generate(&dir.join("input.jsonl"), Shape::CHAT, opts.seed, Some(1), None)?;
    let (sim_proc, sim) = stack::start_sim(ctx, &dir, "sim", SimMode::ZeroLatency).await?;
    let (serve, api) = stack::start_serve(ctx, &dir, &sim.base_url(), &opts.server_args).await?;

    let mut rounds = Vec::with_capacity(opts.rounds);
    for i in 0..opts.rounds {
        let r = round(&api, &sim, &input.path, opts.idle).await.with_context(|| format!("round {}", i + 1))?;
        eprintln!("{name}: round {:>3}: first request after {:7.2} ms", i + 1, r.first_request_ms);
        rounds.push(r);
    }
    let log = serve.log.clone();
    serve.stop(Duration::from_secs(30)).await;
    sim_proc.stop(Duration::from_secs(5)).await;

    // `round` took `t0` just before the POST; the log's timestamps are absolute.
    let validated = validated_at(&log)?;
    let in_progress: Vec<Option<f64>> = rounds
        .iter()
        .map(|r| validated.get(&r.batch_id).map(|&at| (at as f64 - r.t0_unix_us as f64) / 1000.0))
        .collect();
    let first: Vec<f64> = rounds.iter().map(|r| r.first_request_ms).collect();
    let created: Vec<f64> = rounds.iter().map(|r| r.created_ms).collect();
    let seen: Vec<f64> = in_progress.iter().flatten().copied().collect();
    eprintln!("{name}: first request {}", summary(&first));
    Ok(json!({
        "benchmark": name,
        "machine": stack::machine(),
        "rounds": opts.rounds,
        "idle_ms_before_each_create": opts.idle.as_millis() as u64,
        "server_args": opts.server_args,
        "upstream": "upstream-sim, zero-latency mode",
        "input": input.summary(),
        "first_request_ms": summary(&first),
        "in_progress_ms": summary(&seen),
        "in_progress_missing": in_progress.iter().filter(|v| v.is_none()).count(),
        "create_answer_ms": summary(&created),
        "first_request_ms_per_round": first,
        "in_progress_ms_per_round": in_progress,
        "method": format!(
            "t0 = driver's wall clock (µs) just before POST /v1/batches; first request = the simulator's \
             last_arrival_unix_us (the round's only request); in_progress = timestamp of the worker's \
             {VALIDATED_MESSAGE:?} log line; the server is not polled while a round is timed"
        ),
    }))
}

/// Uploads the input (not timed), waits `idle`, creates the batch, waits for its request to
/// reach the simulator and for the batch to complete.
async fn round(api: &Api, sim: &Sim, input: &Path, idle: Duration) -> Result<Round> {
    let file_id = api.upload(input).await?;
    let before = sim.stats().await?.requests_received;
    tokio::time::sleep(idle).await;

    let t0 = unix_us();
    let start = Instant::now();
    let batch_id = api.create_batch(&file_id).await?;
    let created_ms = start.elapsed().as_secs_f64() * 1000.0;
    let stats = loop {
        let stats = sim.stats().await?;
        if stats.requests_received > before {
            break stats;
        }
        if start.elapsed() > ARRIVAL_TIMEOUT {
            bail!("no request reached the simulator within {ARRIVAL_TIMEOUT:?}: {}", api.batch(&batch_id).await?);
        }
        tokio::time::sleep(ARRIVAL_POLL).await;
    };
    if stats.requests_received != before + 1 {
        bail!("expected 1 request at the simulator, got {}", stats.requests_received - before);
    }
    if stats.last_arrival_unix_us == 0 {
        bail!("the simulator reports no last_arrival_unix_us: rebuild upstream-sim from this checkout");
    }
    let first_request_ms = stats.last_arrival_unix_us.saturating_sub(t0) as f64 / 1000.0;

    let (batch, _) = api.wait_status(&batch_id, &["completed"], Duration::from_millis(20)).await?;
    if batch["status"] != "completed" {
        bail!("batch {batch_id} ended {}: {batch}", batch["status"]);
    }
    api.delete_file(&file_id).await?;
    Ok(Round { batch_id, t0_unix_us: t0, created_ms, first_request_ms })
}

/// The `batch validated` events of a `serve` log (JSON lines): batch id → when, in µs since
/// the Unix epoch.
fn validated_at(log: &Path) -> Result<HashMap<String, u64>> {
    let text = std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let mut out = HashMap::new();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else { continue };
        if event["message"] != VALIDATED_MESSAGE {
            continue;
        }
        let (Some(id), Some(at)) = (event["batch_id"].as_str(), event["timestamp"].as_str()) else { continue };
        out.insert(id.to_string(), parse_rfc3339_us(at).with_context(|| format!("timestamp {at:?}"))?);
    }
    Ok(out)
}

/// Parses the log's UTC timestamps (`2025-01-31T12:34:56.123456Z`, any number of fraction
/// digits) into µs since the Unix epoch.
fn parse_rfc3339_us(s: &str) -> Result<u64> {
    let s = s.strip_suffix('Z').context("not UTC")?;
    let (date, time) = s.split_once('T').context("no T")?;
    let num = |v: &str| v.parse::<i64>().with_context(|| format!("{v:?}"));
    let d: Vec<&str> = date.split('-').collect();
    let (clock, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<&str> = clock.split(':').collect();
    if d.len() != 3 || t.len() != 3 || frac.is_empty() {
        bail!("not YYYY-MM-DDTHH:MM:SS[.f]Z");
    }
    let days = days_from_civil(num(d[0])?, num(d[1])?, num(d[2])?);
    let seconds = days * 86_400 + num(t[0])? * 3600 + num(t[1])? * 60 + num(t[2])?;
    let micros = num(&format!("{frac:0<6}")[..6])?;
    Ok((seconds * 1_000_000 + micros) as u64)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// p50, p90, p99 (nearest rank), max and mean of `values`, in ms.
fn summary(values: &[f64]) -> Value {
    if values.is_empty() {
        return Value::Null;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = |p: f64| sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
    let round3 = |v: f64| (v * 1000.0).round() / 1000.0;
    json!({
        "n": sorted.len(),
        "p50": round3(rank(0.50)),
        "p90": round3(rank(0.90)),
        "p99": round3(rank(0.99)),
        "max": round3(sorted[sorted.len() - 1]),
        "min": round3(sorted[0]),
        "mean": round3(sorted.iter().sum::<f64>() / sorted.len() as f64),
    })
}

fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_timestamps_parse_to_unix_microseconds() {
        assert_eq!(parse_rfc3339_us("1970-01-01T00:00:00Z").unwrap(), 0);
        // `date -u -d 2025-03-01T12:34:56 +%s` = 1740832496
        assert_eq!(parse_rfc3339_us("2025-03-01T12:34:56.123456Z").unwrap(), 1_740_832_496_123_456);
        assert_eq!(parse_rfc3339_us("2024-02-29T00:00:00.5Z").unwrap(), 1_709_164_800_500_000);
        assert!(parse_rfc3339_us("2024-02-29 00:00:00Z").is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summary(&values);
        assert_eq!((s["p50"].as_f64(), s["p90"].as_f64(), s["p99"].as_f64()), (Some(50.0), Some(90.0), Some(99.0)));
        assert_eq!(s["max"], 100.0);
        assert_eq!(summary(&[]), Value::Null);
    }
}
