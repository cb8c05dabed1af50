//! Running Debian's `wrk` against one URL and reading its `--latency` report.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// `wrk -t2 -c<connections> -d<duration> --latency <url>`; the raw report is kept in `keep`.
pub async fn run(url: String, connections: usize, duration: Duration, keep: PathBuf) -> Result<Value> {
    let out = tokio::process::Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{}s", duration.as_secs()), "--latency", &url])
        .output()
        .await
        .context("running wrk (apt-get install -y wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    std::fs::write(&keep, &text)?;
    if !out.status.success() {
        bail!("wrk failed ({}): {}{}", out.status, text, String::from_utf8_lossy(&out.stderr));
    }
    let mut report = parse(&text)?;
    report["connections"] = json!(connections);
    report["duration_s"] = json!(duration.as_secs());
    report["url"] = json!(url);
    Ok(report)
}

/// Milliseconds of a wrk duration such as `812.00us`, `1.52ms`, `2.01s` or `1.00m`.
fn millis(v: &str) -> Option<f64> {
    let (num, factor) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * factor)
}

fn parse(text: &str) -> Result<Value> {
    let mut percentiles = serde_json::Map::new();
    let (mut requests, mut rps, mut non_2xx) = (None, None, 0u64);
    let mut socket_errors = serde_json::Map::new();
    let (mut mean_ms, mut max_ms) = (None, None);
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [p, v] if p.ends_with('%') => {
                if let Some(ms) = millis(v) {
                    percentiles.insert(format!("p{}_ms", p.trim_end_matches('%')), json!(ms));
                }
            }
            ["Latency", avg, _stdev, max, ..] => {
                mean_ms = millis(avg);
                max_ms = millis(max);
            }
            [n, "requests", "in", ..] => requests = n.parse::<u64>().ok(),
            ["Requests/sec:", v] => rps = v.parse::<f64>().ok(),
            ["Non-2xx", "or", "3xx", "responses:", n] => non_2xx = n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                for pair in rest.chunks(2) {
                    if let [k, v] = pair {
                        socket_errors.insert(k.to_string(), json!(v.trim_end_matches(',').parse::<u64>().unwrap_or(0)));
                    }
                }
            }
            _ => {}
        }
    }
    let socket_total: u64 = socket_errors.values().filter_map(Value::as_u64).sum();
    Ok(json!({
        "requests": requests.context("no request count in wrk's report")?,
        "requests_per_second": rps,
        "latency_mean_ms": mean_ms,
        "latency_max_ms": max_ms,
        "latency_percentiles": percentiles,
        "non_2xx_responses": non_2xx,
        "socket_errors": socket_errors,
        "errors": non_2xx + socket_total,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_latency_report() {
        let text = "Running 30s test @ http://127.0.0.1:1/v1/batches/b\n  2 threads and 64 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     1.23ms  456.00us  12.34ms   78.90%\n    Req/Sec    12.34k     1.23k   15.00k    70.00%\n  Latency Distribution\n     50%  812.00us\n     75%    1.50ms\n     90%    2.00ms\n     99%    1.02s\n  123456 requests in 30.00s, 12.34MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 12\nRequests/sec:   4115.20\nTransfer/sec:      1.23MB\n";
        let r = parse(text).unwrap();
        assert_eq!(r["requests"], 123456);
        assert_eq!(r["latency_percentiles"]["p50_ms"], 0.812);
        assert_eq!(r["latency_percentiles"]["p99_ms"], 1020.0);
        assert_eq!(r["latency_max_ms"], 12.34);
        assert_eq!(r["errors"], 15);
        assert_eq!(r["requests_per_second"], 4115.2);
    }
}
