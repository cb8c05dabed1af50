//! The upstream inference servers (vLLM or any OpenAI-compatible server): the `--upstream`
//! list, one shared HTTP client carrying the optional API key, each upstream's health
//! (`health.rs`), and model discovery through `GET /models` that keeps the last answer of an
//! upstream that is slow or down. Used by the API (for `/v1/models` and readiness) and by the
//! worker (routing). Also the outbound HTTP of webhooks (`webhook.rs`), which both use.

pub mod health;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use health::{Health, HealthReport, HealthState};

use serde::{Deserialize, Serialize};

/// One entry of `--upstream`: a base URL ending in `/v1`, optionally pinned to one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSpec {
    pub model: Option<String>,
    pub base_url: String,
}

impl UpstreamSpec {
    /// The base URL as every answer, log line and error shows it: userinfo and secret query
    /// parameters redacted (`vllm_batch_core::redact_url`).
    pub fn shown(&self) -> String {
        vllm_batch_core::redact_url(&self.base_url)
    }
}

/// Parses `url[,url…]` where each item is `URL` or `MODEL=URL`.
pub fn parse_upstreams(s: &str) -> Result<Vec<UpstreamSpec>, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (model, url) = match item.split_once('=') {
            Some((m, u)) if !m.contains("://") => (Some(m.trim().to_string()), u.trim()),
            _ => (None, item),
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("upstream {item:?}: expected an http(s) URL such as http://127.0.0.1:8000/v1"));
        }
        out.push(UpstreamSpec { model, base_url: url.trim_end_matches('/').to_string() });
    }
    if out.is_empty() {
        return Err("at least one upstream is required".into());
    }
    Ok(out)
}

/// A model as `GET /v1/models` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelInfo {
    pub id: String,
    #[serde(default = "model_object")]
    pub object: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default = "owner")]
    pub owned_by: String,
}

fn model_object() -> String {
    "model".into()
}
fn owner() -> String {
    "vllm".into()
}

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelInfo>,
}

/// Why an upstream did not answer its model list.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {url} did not answer within {seconds} s")]
    Timeout { url: String, seconds: u64 },
    #[error("upstream {url} unreachable: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("upstream {url} answered {status} to GET /models")]
    Status { url: String, status: u16 },
    #[error("no upstream answered its model list")]
    NoneAnswered,
}

impl UpstreamError {
    /// Evidence of an outage rather than an answer: no connection, or a proxy's 502/503/504
    /// for a dead backend. A timeout is not (a busy server is slow, not gone).
    pub fn is_outage(&self) -> bool {
        match self {
            // A model list that is not JSON came from a server that is there.
            UpstreamError::Unreachable { source, .. } => !source.is_decode(),
            UpstreamError::Status { status, .. } => matches!(status, 502..=504),
            UpstreamError::Timeout { .. } | UpstreamError::NoneAnswered => false,
        }
    }
}

/// The configured upstreams and the HTTP client shared by every request to them. Clones share
/// the health and the last known model lists.
#[derive(Clone)]
pub struct Upstreams {
    specs: Vec<UpstreamSpec>,
    client: reqwest::Client,
    api_key: Option<String>,
    health: Arc<Health>,
    known: Arc<Mutex<Vec<Discovered>>>,
}

/// What discovery last learnt of one upstream.
#[derive(Debug, Clone, Default)]
pub struct Discovered {
    /// The models of its last answer, and when that was; `None` before any answer.
    pub models: Option<(Vec<ModelInfo>, Instant)>,
    /// Why the latest attempt failed (`None`: it answered).
    pub error: Option<String>,
}

/// How long discovery waits for one upstream's model list.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The models each upstream serves, as discovered (explicit `MODEL=URL` pins included).
#[derive(Debug, Clone, Default)]
pub struct ModelMap {
    /// model id → indexes into the upstream list.
    pub routes: BTreeMap<String, Vec<usize>>,
    pub models: Vec<ModelInfo>,
}

impl Upstreams {
    pub fn new(specs: Vec<UpstreamSpec>, api_key: Option<String>) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .build()
            .expect("HTTP client builds");
        let health = Arc::new(Health::new(specs.iter().map(UpstreamSpec::shown).collect()));
        let known = Arc::new(Mutex::new(vec![Discovered::default(); specs.len()]));
        Upstreams { specs, client, api_key, health, known }
    }

    /// Each upstream's health, shared by every clone.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// What discovery last learnt of upstream `i`.
    pub fn discovered(&self, i: usize) -> Discovered {
        self.known.lock().unwrap()[i].clone()
    }

    pub fn specs(&self) -> &[UpstreamSpec] {
        &self.specs
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Adds the upstream API key, when configured, as a bearer token.
    pub fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => req.bearer_auth(key),
            None => req,
        }
    }

    /// `GET {base}/models` of one upstream.
    pub async fn models_of(&self, index: usize) -> Result<Vec<ModelInfo>, UpstreamError> {
        self.models_within(index, DISCOVERY_TIMEOUT).await
    }

    /// `GET {base}/models` of one upstream, waiting at most `timeout`; the answer (or why there
    /// was none) is remembered as what discovery knows of it.
    pub async fn models_within(&self, index: usize, timeout: Duration) -> Result<Vec<ModelInfo>, UpstreamError> {
        let answer = self.ask_models(index, timeout).await;
        let mut known = self.known.lock().unwrap();
        match &answer {
            Ok(models) => known[index] = Discovered { models: Some((models.clone(), Instant::now())), error: None },
            Err(e) => {
                known[index].error = Some(e.to_string());
                self.health.note_failure(index);
            }
        }
        answer
    }

    async fn ask_models(&self, index: usize, timeout: Duration) -> Result<Vec<ModelInfo>, UpstreamError> {
        let url = format!("{}/models", self.specs[index].base_url);
        // Errors name the URL redacted, and reqwest's own error loses its copy of the URL.
        let shown = || format!("{}/models", self.specs[index].shown());
        let failed = |source: reqwest::Error| {
            if source.is_timeout() {
                UpstreamError::Timeout { url: shown(), seconds: timeout.as_secs().max(1) }
            } else {
                UpstreamError::Unreachable { url: shown(), source: source.without_url() }
            }
        };
        let resp = self.authorize(self.client.get(&url)).timeout(timeout).send().await.map_err(failed)?;
        if !resp.status().is_success() {
            return Err(UpstreamError::Status { url: shown(), status: resp.status().as_u16() });
        }
        let list: ModelList = resp.json().await.map_err(failed)?;
        Ok(list.data)
    }

    /// Asks every upstream for its models. An upstream that does not answer (down, or too busy
    /// to answer in time) keeps its last known list — stale, with the error beside it — so a
    /// slow answer never drops its models or sends their work elsewhere. Fails only when no
    /// upstream has ever answered and no model is pinned.
    pub async fn discover(&self) -> Result<ModelMap, UpstreamError> {
        let answers = futures_util::future::join_all((0..self.specs.len()).map(|i| self.models_of(i))).await;
        let known = self.known.lock().unwrap();
        for (i, answer) in answers.into_iter().enumerate() {
            if let Err(e) = answer {
                let stale = known[i].models.as_ref().map(|(_, at)| at.elapsed().as_secs());
                tracing::warn!(upstream = i, error = %e, stale_seconds = stale, "upstream did not list its models");
            }
        }
        self.model_map(&known)
    }

    fn model_map(&self, known: &[Discovered]) -> Result<ModelMap, UpstreamError> {
        let mut map = ModelMap::default();
        let mut any = false;
        for (i, d) in known.iter().enumerate() {
            let pinned = self.specs[i].model.clone();
            if let Some((models, _)) = &d.models {
                any = true;
                for m in models {
                    if pinned.as_ref().is_none_or(|p| p == &m.id) {
                        map.add(i, m.clone());
                    }
                }
            }
            if let Some(model) = pinned {
                any = true;
                map.add(i, ModelInfo { id: model, object: model_object(), created: 0, owned_by: owner() });
            }
        }
        if any {
            Ok(map)
        } else {
            Err(UpstreamError::NoneAnswered)
        }
    }

    /// Whether the latest discovery of any upstream failed (its list may be stale or missing).
    pub fn discovery_failing(&self) -> Option<String> {
        let known = self.known.lock().unwrap();
        let errors: Vec<String> = known.iter().filter_map(|d| d.error.clone()).collect();
        (!errors.is_empty()).then(|| errors.join("; "))
    }
}

impl ModelMap {
    fn add(&mut self, upstream: usize, model: ModelInfo) {
        let routes = self.routes.entry(model.id.clone()).or_default();
        if !routes.contains(&upstream) {
            routes.push(upstream);
        }
        if !self.models.iter().any(|m| m.id == model.id) {
            self.models.push(model);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_pinned_upstreams() {
        let u = parse_upstreams("http://a:8000/v1/, llama=http://b:8000/v1").unwrap();
        assert_eq!(u[0], UpstreamSpec { model: None, base_url: "http://a:8000/v1".into() });
        assert_eq!(u[1], UpstreamSpec { model: Some("llama".into()), base_url: "http://b:8000/v1".into() });
        assert!(parse_upstreams("").is_err());
        assert!(parse_upstreams("ftp://x").is_err());
    }
}
