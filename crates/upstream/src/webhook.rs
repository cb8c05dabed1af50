//! The outbound HTTP of webhooks, shared by the worker's deliverer and the API's
//! `POST /v1/webhook_endpoints/{id}/test`: which URLs are allowed (HTTPS unless
//! `--webhook-allow-http`), and one signed POST with a per-attempt timeout that follows no
//! redirect and sends nothing but the event.

use std::time::{Duration, Instant};

use vllm_batch_core::time::unix_now;
use vllm_batch_core::webhook::{signed_headers, AttemptRecord, Secret};

/// The default time limit of one attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses a receiver URL: `https://` (or `http://` with `allow_http`), with a host.
pub fn check_url(url: &str, allow_http: bool) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("Invalid url {url:?}: {e}"))?;
    match parsed.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(format!(
                "Invalid url {url:?}: webhook URLs must use https (this server accepts plain http only when \
                 started with --webhook-allow-http)"
            ))
        }
        other => return Err(format!("Invalid url {url:?}: unsupported scheme {other:?}; use https")),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("Invalid url {url:?}: no host"));
    }
    Ok(parsed)
}

/// A client for webhook receivers.
#[derive(Clone)]
pub struct WebhookClient {
    client: reqwest::Client,
}

impl WebhookClient {
    /// Each attempt is cut after `timeout`; redirects are not followed (a 3xx is a failed
    /// attempt: the event goes only where it was registered to go).
    pub fn new(timeout: Duration) -> WebhookClient {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("vllm-batch-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client without custom TLS builds");
        WebhookClient { client }
    }

    /// POSTs `body` to `url`, signed afresh (timestamp now) with every secret in `secrets`,
    /// under the constant `webhook_id`. The response body is not read.
    pub async fn send(&self, url: &str, webhook_id: &str, body: &str, secrets: &[&Secret]) -> AttemptRecord {
        let started = Instant::now();
        let mut request =
            self.client.post(url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_string());
        for (name, value) in signed_headers(webhook_id, unix_now(), body, secrets) {
            request = request.header(name, value);
        }
        let (status_code, error) = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let error = (!response.status().is_success()).then(|| format!("the receiver answered {status}"));
                (Some(status), error)
            }
            Err(e) if e.is_timeout() => (None, Some(format!("no answer within the timeout: {e}"))),
            Err(e) if e.is_connect() => (None, Some(format!("cannot connect: {e}"))),
            Err(e) => (None, Some(format!("request failed: {e}"))),
        };
        AttemptRecord { status_code, error, duration_ms: started.elapsed().as_millis() as i64 }
    }
}
