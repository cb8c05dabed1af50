//! Sending one request upstream: to an upstream that serves its model and is up (waiting while
//! none is), with a per-request timeout and retries with capped exponential backoff and full
//! jitter honouring `Retry-After`, on connect errors, timeouts, 408, 429 and 5xx. Other 4xx
//! answers are final.
//!
//! Failures that are evidence of an outage (refused or reset connections, 502/503/504: see
//! `vllm_batch_upstream::health`) feed the upstream's health. Once it is down, a request that
//! failed that way goes back to wait for an upstream of its model to be up — and does not spend
//! its own retries: those are for what is the request's own fault (a 500 while the server
//! answers others, its own timeout, a 429). An unreachable server (refused connection, 502/503/
//! 504) never costs a retry even before it is known down; see `Blame`.

use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use reqwest::StatusCode;

use vllm_batch_metrics::metrics;

use crate::chunk::{ChunkState, StopReason};
use crate::Shared;

/// An answer from upstream, as the output and error files record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpstreamResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The upstream's `x-request-id`, or one made up when it sent none.
    pub request_id: String,
    /// The body: always JSON (a body that was not is carried as a JSON string).
    pub body: Bytes,
}

/// How a request ended.
pub(crate) enum Outcome {
    /// 2xx with a JSON body.
    Success(UpstreamResponse),
    /// A final answer that is not a success: a 4xx, or the last transient failure.
    Failure { code: &'static str, message: String, response: Option<UpstreamResponse> },
    /// Dispatch was stopped before the request got an answer.
    Stopped(StopReason),
}

/// One attempt's result.
enum Attempt {
    Done(Outcome),
    /// A 400 saying the upstream does not take `priority` (vLLM releases before 0.32 without
    /// `--scheduling-policy priority`): sent again without it.
    PriorityRefused(String),
    Transient {
        /// What went wrong, which labels the retry and error metrics.
        reason: RetryReason,
        /// Whose fault it is.
        blame: Blame,
        message: String,
        retry_after: Option<Duration>,
        response: Option<UpstreamResponse>,
    },
}

/// Why an attempt failed transiently: the `reason` label of `vllm_upstream_retries_total`, and
/// through `class` the `class` label of `vllm_upstream_errors_total`. The label strings are a
/// contract (dashboards, alerts, README): they never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RetryReason {
    /// The upstream answered 408 Request Timeout.
    Status408,
    /// The upstream answered 429 Too Many Requests.
    Status429,
    /// The upstream answered a 5xx.
    Status5xx,
    /// The connection could not be made.
    Connect,
    /// The request's own time limit ran out.
    Timeout,
    /// The connection broke mid-answer, or a 2xx body was not JSON.
    Body,
}

impl RetryReason {
    /// The `reason` label of `vllm_upstream_retries_total`.
    fn label(self) -> &'static str {
        match self {
            Self::Status408 => "status_408",
            Self::Status429 => "status_429",
            Self::Status5xx => "status_5xx",
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Body => "body",
        }
    }

    /// The `class` label of `vllm_upstream_errors_total`.
    fn class(self) -> &'static str {
        match self {
            Self::Status408 | Self::Status429 => "4xx",
            Self::Status5xx => "5xx",
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Body => "body",
        }
    }
}

/// Whose fault a transient failure is, which decides whether it spends the request's retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blame {
    /// The request's own: a 500 or 429 while the server answers others, its own time limit, a
    /// body that is not JSON. Spends a retry.
    Request,
    /// The server's, mid-answer: a connection reset or closed before the answer was complete.
    /// Outage evidence; spends a retry only while the upstream is not (yet) down.
    Server,
    /// The server cannot be reached: a refused or timed-out connection, a 502/503/504 (what a
    /// proxy answers for a backend that is gone). Outage evidence; never spends a retry.
    Unreachable,
}

/// Sends `body` to an upstream serving the chunk's model, retrying transient failures; holds an
/// in-flight slot only while a request is actually on the wire.
pub(crate) async fn send(s: &Shared, state: &ChunkState, body: Bytes) -> Outcome {
    let health = s.router.upstreams.health();
    // vLLM's default priority is 0: sending it changes nothing, and any vLLM takes it. The body
    // with the priority is made once, for every attempt to an upstream that takes it.
    let prioritized =
        state.lease.priority.or(s.config.upstream_priority).filter(|p| *p != 0).map(|p| with_priority(&body, p));
    let mut attempt: u32 = 0;
    // Waits after failures that spent no retry (the server unreachable before it is known down).
    let mut unspent: u32 = 0;
    let mut on_the_wire = false;
    // The upstream this request last failed on: another one of its model is preferred next.
    let mut avoid = None;
    loop {
        let upstream = match route(s, state, avoid).await {
            Ok(upstream) => upstream,
            Err(reason) => return Outcome::Stopped(reason),
        };
        let permit = tokio::select! {
            p = s.router.acquire(upstream) => p,
            reason = state.stopped() => return Outcome::Stopped(reason),
        };
        // It may have gone down while this request waited for a slot.
        if !health.is_up(upstream) {
            continue;
        }
        if !on_the_wire {
            on_the_wire = true;
            state.dispatched(s);
        }
        let url = format!("{}{}", s.router.upstreams.specs()[upstream].base_url, state.lease.endpoint.upstream_path());
        let in_flight = metrics().upstream_in_flight.with_label_values(&[&upstream.to_string()]);
        in_flight.inc();
        let started = std::time::Instant::now();
        let sent = prioritized.as_ref().filter(|_| s.router.takes_priority(upstream));
        let result = attempt_once(s, &url, sent.unwrap_or(&body).clone(), sent.is_some()).await;
        let took = started.elapsed();
        metrics().inference_duration.observe(took.as_secs_f64());
        s.router.limits()[upstream].record(took);
        in_flight.dec();
        drop(permit);
        let (reason, blame, message, retry_after, response) = match result {
            Attempt::Done(outcome) => {
                health.record_answer(upstream, started);
                return outcome;
            }
            Attempt::PriorityRefused(message) => {
                health.record_answer(upstream, started);
                if s.router.refuse_priority(upstream) {
                    tracing::warn!(
                        upstream,
                        answer = %message,
                        "the upstream does not take request priorities (start vLLM with --scheduling-policy \
                         priority to use --upstream-priority or metadata.priority); sending without them"
                    );
                }
                continue;
            }
            Attempt::Transient { reason, blame, message, retry_after, response } => {
                (reason, blame, message, retry_after, response)
            }
        };
        metrics().upstream_errors.with_label_values(&[reason.class()]).inc();
        if blame == Blame::Request {
            health.record_answer(upstream, started);
        } else {
            avoid = Some(upstream);
            let down = health.record_outage(upstream, &message);
            if down {
                // The upstream is down: wait for one of the model's upstreams, retries unspent.
                tracing::debug!(upstream, %message, "request failed in an outage; it waits for an upstream");
                continue;
            }
            if blame == Blame::Unreachable {
                // Not known down yet (answers still come from requests already on the wire, or
                // this is one of the first failures): wait a little and go again, unspent.
                let wait = backoff(s, unspent, None);
                unspent += 1;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    reason = state.stopped() => return Outcome::Stopped(reason),
                }
                continue;
            }
        }
        if attempt >= s.config.max_retries {
            return Outcome::Failure {
                code: "upstream_error",
                message: format!("{message} (gave up after {} attempts)", attempt + 1),
                response,
            };
        }
        metrics().upstream_retries.with_label_values(&[reason.label()]).inc();
        let wait = backoff(s, attempt, retry_after);
        tracing::debug!(attempt, ?wait, %message, "transient upstream failure; retrying");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            reason = state.stopped() => return Outcome::Stopped(reason),
        }
        attempt += 1;
    }
}

/// An upstream that serves the chunk's model and is up, waiting (without a deadline of its own:
/// cancel and the completion window end the wait) until there is one.
async fn route(s: &Shared, state: &ChunkState, avoid: Option<usize>) -> Result<usize, StopReason> {
    let health = s.router.upstreams.health();
    loop {
        // Subscribed before looking, so a change between the look and the wait is not missed.
        let mut changed = health.subscribe();
        changed.borrow_and_update();
        if let Some(upstream) = s.router.pick(&state.lease.model, avoid) {
            return Ok(upstream);
        }
        tokio::select! {
            _ = changed.changed() => {}
            // A safety net: routes also change when discovery runs.
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            reason = state.stopped() => return Err(reason),
        }
    }
}

/// `body` (a JSON object) with `"priority": p` as its first member; a `priority` the line set
/// itself comes later and wins (JSON parsers keep the last of a repeated key, vLLM's included).
fn with_priority(body: &Bytes, p: i64) -> Bytes {
    let text = body.as_ref();
    let start = text.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(0);
    if text.get(start) != Some(&b'{') {
        return body.clone();
    }
    let rest = &text[start + 1..];
    let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
    let mut out = Vec::with_capacity(text.len() + 24);
    out.extend_from_slice(format!("{{\"priority\":{p}").as_bytes());
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Bytes::from(out)
}

async fn attempt_once(s: &Shared, url: &str, body: Bytes, has_priority: bool) -> Attempt {
    let req = s
        .router
        .upstreams
        .authorize(s.router.upstreams.client().post(url))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .timeout(s.config.request_timeout)
        .body(body);
    let resp = match req.send().await {
        Ok(r) => r,
        // A connection refused or timed out: the server is unreachable; reset or closed early:
        // the server's; the request's own time limit running out: the request's.
        Err(e) => {
            let blame = if e.is_connect() {
                Blame::Unreachable
            } else if e.is_timeout() {
                Blame::Request
            } else {
                Blame::Server
            };
            return transient(error_reason(&e), blame, describe(e), None, None);
        }
    };
    let status = resp.status();
    let request_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| format!("req-{}", uuid::Uuid::new_v4().simple()));
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|secs| secs.is_finite() && *secs >= 0.0)
        .map(|secs| Duration::from_secs_f64(secs.min(3600.0)));
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => {
            let blame = if e.is_timeout() { Blame::Request } else { Blame::Server };
            let message = format!("reading the response failed: {}", describe(e));
            return transient(RetryReason::Body, blame, message, None, None);
        }
    };
    let is_json = serde_json::from_slice::<&serde_json::value::RawValue>(&bytes).is_ok();
    if status.is_success() {
        if is_json {
            let response = UpstreamResponse { status: status.as_u16(), request_id, body: bytes };
            return Attempt::Done(Outcome::Success(response));
        }
        return transient(
            RetryReason::Body,
            Blame::Request,
            format!("upstream answered {status} with a body that is not JSON"),
            None,
            None,
        );
    }
    let message = upstream_message(&bytes).unwrap_or_else(|| format!("upstream answered {status}"));
    // Older vLLM releases without priority scheduling: "Got priority 10 but Priority
    // scheduling is not enabled." (vLLM 0.32 ignores the field instead.)
    if has_priority && status == StatusCode::BAD_REQUEST && message.contains("Priority scheduling is not enabled") {
        return Attempt::PriorityRefused(message);
    }
    let body = if is_json { bytes } else { Bytes::from(serde_json::to_vec(&String::from_utf8_lossy(&bytes)).unwrap()) };
    let response = Some(UpstreamResponse { status: status.as_u16(), request_id, body });
    let reason = match status {
        StatusCode::REQUEST_TIMEOUT => RetryReason::Status408,
        StatusCode::TOO_MANY_REQUESTS => RetryReason::Status429,
        s if s.is_server_error() => RetryReason::Status5xx,
        _ => {
            metrics().upstream_errors.with_label_values(&["4xx"]).inc();
            return Attempt::Done(Outcome::Failure { code: "invalid_request", message, response });
        }
    };
    // What a proxy answers for a backend that is gone.
    let blame = match status {
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => Blame::Unreachable,
        _ => Blame::Request,
    };
    transient(reason, blame, message, retry_after, response)
}

fn transient(
    reason: RetryReason,
    blame: Blame,
    message: String,
    retry_after: Option<Duration>,
    response: Option<UpstreamResponse>,
) -> Attempt {
    Attempt::Transient { reason, blame, message, retry_after, response }
}

fn error_reason(e: &reqwest::Error) -> RetryReason {
    if e.is_timeout() {
        RetryReason::Timeout
    } else if e.is_connect() {
        RetryReason::Connect
    } else {
        RetryReason::Body
    }
}

fn describe(e: reqwest::Error) -> String {
    // reqwest's message names the URL, userinfo and all; error lines never show it.
    let e = e.without_url();
    if e.is_timeout() {
        "upstream request timed out".into()
    } else if e.is_connect() {
        format!("could not connect to upstream: {e}")
    } else {
        format!("upstream connection failed: {e}")
    }
}

/// `min(max, base·2^attempt)` with full jitter, but never less than the upstream's `Retry-After`.
fn backoff(s: &Shared, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let exp = s.config.backoff_base.saturating_mul(1u32 << attempt.min(16));
    let capped = exp.min(s.config.backoff_max);
    let jittered = capped.mul_f64(rand::rng().random_range(0.0..=1.0));
    match retry_after {
        Some(ra) => ra.max(jittered).min(s.config.backoff_max.max(ra)),
        None => jittered,
    }
}

/// The human message of an upstream error body: OpenAI's `{"error": {"message"}}` or vLLM's
/// `{"message"}`.
fn upstream_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.pointer("/error/message").or_else(|| v.get("message")).and_then(|m| m.as_str()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use vllm_batch_metrics::registry::{RETRY_REASONS, UPSTREAM_ERROR_CLASSES};

    use super::RetryReason::{self, *};

    /// Every reason with the labels it must keep: they are a contract with the dashboards, the
    /// alerts and the README.
    const PINNED: [(RetryReason, &str, &str); 6] = [
        (Status408, "status_408", "4xx"),
        (Status429, "status_429", "4xx"),
        (Status5xx, "status_5xx", "5xx"),
        (Connect, "connect", "connect"),
        (Timeout, "timeout", "timeout"),
        (Body, "body", "body"),
    ];

    #[test]
    fn priority_goes_first_and_a_lines_own_wins() {
        let p = |body: &str| String::from_utf8(super::with_priority(&body.to_string().into(), 10).to_vec()).unwrap();
        assert_eq!(p(r#"{"model":"m"}"#), r#"{"priority":10,"model":"m"}"#);
        assert_eq!(p(r#" { } "#), r#"{"priority":10 } "#);
        let own: serde_json::Value = serde_json::from_str(&p(r#"{"priority":-3}"#)).unwrap();
        assert_eq!(own["priority"], -3, "serde_json, like Python's json, keeps the last");
        assert_eq!(p("[1]"), "[1]", "not an object: unchanged");
    }

    #[test]
    fn retry_reason_labels_are_pinned() {
        for (reason, label, class) in PINNED {
            assert_eq!(reason.label(), label, "{reason:?}");
            assert_eq!(reason.class(), class, "{reason:?}");
        }
    }

    #[test]
    fn retry_reasons_are_the_registered_label_values() {
        let labels: Vec<_> = PINNED.iter().map(|(r, ..)| r.label()).collect();
        assert_eq!(labels, RETRY_REASONS, "the metric is pre-registered with these reason labels");
        for (reason, ..) in PINNED {
            assert!(UPSTREAM_ERROR_CLASSES.contains(&reason.class()), "{reason:?}");
        }
    }
}
