//! A small client of the OpenAI Files and Batches API over reqwest: the base URL and bearer key
//! of `ConnectArgs`, JSON in and out, and OpenAI's error envelope turned into an [`ApiError`]
//! whose message is the server's own.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;

use super::ConnectArgs;

/// Time limit of one JSON call (uploads and downloads have none: they take as long as they take).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The header that makes a create safe to retry.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// An API answer other than 2xx: OpenAI's `error` object, or the body's start when the server
/// sent no envelope.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub code: Option<String>,
    pub param: Option<String>,
}

impl ApiError {
    async fn from_response(resp: Response) -> ApiError {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let envelope: Option<Value> = serde_json::from_str(&text).ok();
        let error = envelope.as_ref().map(|v| &v["error"]).filter(|e| e.is_object());
        let field = |k: &str| error.and_then(|e| e[k].as_str()).map(str::to_string);
        let message = field("message").unwrap_or_else(|| {
            let body: String = text.trim().chars().take(300).collect();
            let reason = status.canonical_reason().unwrap_or("error");
            if body.is_empty() {
                reason.to_string()
            } else {
                format!("{reason}: {body}")
            }
        });
        ApiError { status: status.as_u16(), message, code: field("code"), param: field("param") }
    }

    /// Worth retrying while following a batch: the server is overloaded or restarting.
    pub fn is_transient(&self) -> bool {
        self.status == 429 || self.status >= 500
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (HTTP {}", self.message, self.status)?;
        if let Some(code) = &self.code {
            write!(f, ", code: {code}")?;
        }
        if let Some(param) = &self.param {
            write!(f, ", param: {param}")?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for ApiError {}

/// The server could not be reached, or the connection broke.
#[derive(Debug)]
pub struct Unreachable {
    pub url: String,
    pub cause: String,
    /// The connection could not even be opened: the base URL is likely wrong.
    pub connect: bool,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot reach {}: {}", self.url, self.cause)?;
        if self.connect {
            f.write_str(" (is the server running? set --base-url or OPENAI_BASE_URL)")?;
        }
        Ok(())
    }
}

impl std::error::Error for Unreachable {}

impl Unreachable {
    pub fn new(url: &str, e: &reqwest::Error) -> Unreachable {
        // reqwest's own message is generic ("error sending request"); the root cause says why.
        let mut cause: &dyn std::error::Error = e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        Unreachable { url: url.to_string(), cause: cause.to_string(), connect: e.is_connect() }
    }
}

/// Whether an error of a call is worth retrying while following a batch.
pub fn is_transient(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Unreachable>().is_some() || e.downcast_ref::<ApiError>().is_some_and(ApiError::is_transient)
}

/// The API at one base URL.
pub struct Api {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Api {
    pub fn new(c: &ConnectArgs) -> Result<Api> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("vllm-batch/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            // Below the server's `--header-read-timeout` (10 s), which closes idle kept-alive
            // connections: reusing one just as the server closes it fails the request (as the
            // OpenAI SDKs' 5 s keep-alive expiry avoids).
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        let base = c.base_url.trim_end_matches('/').to_string();
        reqwest::Url::parse(&base).with_context(|| format!("invalid base URL {base:?}"))?;
        let key = c.api_key.clone().filter(|k| !k.is_empty());
        Ok(Api { http, base, key })
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to `path` (relative to the base URL, e.g. `/batches`), with the key.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, self.url(path));
        match &self.key {
            Some(key) => req.bearer_auth(key),
            None => req,
        }
    }

    /// Sends `req`; anything but 2xx becomes an [`ApiError`], a transport failure [`Unreachable`].
    pub async fn send(&self, req: RequestBuilder) -> Result<Response> {
        let resp = req.send().await.map_err(|e| Unreachable::new(&self.base, &e))?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(ApiError::from_response(resp).await.into())
        }
    }

    /// Sends `req` and parses the answer as JSON.
    pub async fn json(&self, req: RequestBuilder) -> Result<Value> {
        let resp = self.send(req).await?;
        let url = resp.url().to_string();
        let bytes = resp.bytes().await.map_err(|e| Unreachable::new(&self.base, &e))?;
        serde_json::from_slice(&bytes).with_context(|| format!("the answer of {url} is not JSON"))
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        self.json(self.request(Method::GET, path).query(query).timeout(CALL_TIMEOUT)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.json(self.request(Method::POST, path).json(body).timeout(CALL_TIMEOUT)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value> {
        self.json(self.request(Method::DELETE, path).timeout(CALL_TIMEOUT)).await
    }
}

/// `id` as one URL path segment: anything but letters, digits, `-` and `_` is percent-encoded,
/// so an id can never reach another route.
pub fn segment(id: &str) -> String {
    let mut s = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_one_segment() {
        assert_eq!(segment("batch_abc-1"), "batch_abc-1");
        assert_eq!(segment("../files"), "%2E%2E%2Ffiles");
        assert_eq!(segment("a b?"), "a%20b%3F");
    }

    #[test]
    fn api_error_names_code_and_param() {
        let e = ApiError {
            status: 404,
            message: "No batch found with id 'x'.".into(),
            code: Some("not_found".into()),
            param: Some("batch_id".into()),
        };
        assert_eq!(e.to_string(), "No batch found with id 'x'. (HTTP 404, code: not_found, param: batch_id)");
    }
}
