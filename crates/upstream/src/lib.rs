//! The upstream inference servers (vLLM or any OpenAI-compatible server): the `--upstream`
//! list, one shared HTTP client carrying the optional API key, and model discovery through
//! `GET /models`. Used by the API (for `/v1/models` and readiness) and by the worker (routing).

use std::collections::BTreeMap;
use std::time::Duration;

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
    #[error("upstream {url} unreachable: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("upstream {url} answered {status} to GET /models")]
    Status { url: String, status: u16 },
    #[error("no upstream answered its model list")]
    NoneAnswered,
}

/// The configured upstreams and the HTTP client shared by every request to them.
#[derive(Clone)]
pub struct Upstreams {
    specs: Vec<UpstreamSpec>,
    client: reqwest::Client,
    api_key: Option<String>,
}

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
        Upstreams { specs, client, api_key }
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
        let url = format!("{}/models", self.specs[index].base_url);
        // Errors name the URL redacted, and reqwest's own error loses its copy of the URL.
        let shown = || format!("{}/models", self.specs[index].shown());
        let unreachable =
            |source: reqwest::Error| UpstreamError::Unreachable { url: shown(), source: source.without_url() };
        let resp =
            self.authorize(self.client.get(&url)).timeout(Duration::from_secs(10)).send().await.map_err(unreachable)?;
        if !resp.status().is_success() {
            return Err(UpstreamError::Status { url: shown(), status: resp.status().as_u16() });
        }
        let list: ModelList = resp.json().await.map_err(unreachable)?;
        Ok(list.data)
    }

    /// Asks every upstream for its models. Fails only when none answered and no model is
    /// pinned, so one upstream being down does not stop work for the others.
    pub async fn discover(&self) -> Result<ModelMap, UpstreamError> {
        let answers = futures_util::future::join_all((0..self.specs.len()).map(|i| self.models_of(i))).await;
        let mut map = ModelMap::default();
        let mut any = false;
        for (i, answer) in answers.into_iter().enumerate() {
            let pinned = self.specs[i].model.clone();
            match answer {
                Ok(models) => {
                    any = true;
                    for m in models {
                        if pinned.as_ref().is_some_and(|p| p != &m.id) {
                            continue;
                        }
                        map.add(i, m);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "upstream did not list its models"),
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
