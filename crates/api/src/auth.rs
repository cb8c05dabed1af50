//! Who is calling: API keys (`Authorization: Bearer sk-vb-…`, as OpenAI's SDKs send it), the
//! owner each key acts for, per-key rate limits, and the rule for servers without keys — they
//! answer only loopback clients unless started with `--insecure-no-auth`.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use vllm_batch_core::apikey;
use vllm_batch_store::Store;

use crate::error::Error;
use crate::AppState;

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The owner recorded on what the caller creates; `None` without a key.
    pub owner: Option<String>,
    /// Sees every owner's objects (admin keys, and callers without a key).
    pub admin: bool,
}

impl Principal {
    /// What the caller may see: `None` (everything) for admins.
    pub fn scope(&self) -> Option<&str> {
        if self.admin {
            None
        } else {
            self.owner.as_deref()
        }
    }

    fn anonymous() -> Self {
        Principal { owner: None, admin: true }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Set by `authenticate`; a router used in-process without it acts as an anonymous admin.
        Ok(parts.extensions.get::<Principal>().cloned().unwrap_or_else(Principal::anonymous))
    }
}

/// Authentication settings and state.
pub struct Auth {
    /// Serve clients that are not on loopback even though no key exists.
    pub insecure_no_auth: bool,
    /// Bearer token `/metrics` requires, when set.
    pub metrics_token: Option<String>,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    /// Whether any key exists, re-read at most every `KEYS_TTL` (keys are made by the CLI).
    keys_exist: Mutex<Option<(Instant, bool)>>,
}

const KEYS_TTL: Duration = Duration::from_secs(2);

impl Auth {
    /// `rate_per_second` 0 turns the per-key rate limit off.
    pub fn new(insecure_no_auth: bool, metrics_token: Option<String>, rate_per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(rate_per_second).map(|rate| {
            let burst = NonZeroU32::new(burst.max(rate_per_second)).expect("burst ≥ rate > 0");
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Auth { insecure_no_auth, metrics_token, limiter, keys_exist: Mutex::new(None) }
    }

    async fn keys_exist(&self, store: &dyn Store) -> Result<bool, Error> {
        if let Some((at, exist)) = *self.keys_exist.lock().unwrap() {
            if at.elapsed() < KEYS_TTL {
                return Ok(exist);
            }
        }
        let exist = store.count_active_keys().await? > 0;
        *self.keys_exist.lock().unwrap() = Some((Instant::now(), exist));
        Ok(exist)
    }
}

impl Default for Auth {
    fn default() -> Self {
        Auth::new(false, None, 0, 0)
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether the request carries `Authorization: Bearer <token>` (compared in constant time).
pub fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    bearer(headers).is_some_and(|b| apikey::constant_time_eq(b, token))
}

/// Paths anyone may read: liveness and readiness, the page and its assets, the API document.
fn is_public(path: &str) -> bool {
    matches!(path, "/health" | "/ready" | "/v1/health" | "/" | "/openapi.json") || path.starts_with("/assets/")
}

/// Middleware: resolves the caller into a `Principal` extension, or answers 401/429.
pub async fn authenticate(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    // Only owned facts cross the awaits below (a request body is not `Sync`).
    let path = req.uri().path().to_string();
    let presented = bearer(req.headers()).map(str::to_string);
    let loopback = req.extensions().get::<ConnectInfo<SocketAddr>>().is_none_or(|c| c.0.ip().is_loopback());
    match resolve(&st, &path, presented.as_deref(), loopback).await {
        Ok(Some(principal)) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Ok(None) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn resolve(
    st: &AppState,
    path: &str,
    presented: Option<&str>,
    loopback: bool,
) -> Result<Option<Principal>, Error> {
    let auth = &st.auth;
    if path == "/metrics" {
        return match &auth.metrics_token {
            Some(token) if !presented.is_some_and(|b| apikey::constant_time_eq(b, token)) => {
                Err(Error::Unauthorized("/metrics needs its bearer token (--metrics-token).".into()))
            }
            _ => Ok(None),
        };
    }
    if is_public(path) {
        return Ok(None);
    }
    if !auth.keys_exist(st.store.as_ref()).await? {
        // No key exists yet: whatever an SDK sends as its key is ignored (they always send one);
        // the peer's address decides.
        if loopback || auth.insecure_no_auth {
            return Ok(Some(Principal::anonymous()));
        }
        return Err(Error::Unauthorized(
            "This server has no API keys, so it only answers clients on loopback. Create a key with \
             `vllm-batch keys create --name NAME`, or start it with --insecure-no-auth."
                .into(),
        ));
    }
    if let Some(presented) = presented {
        let key = match apikey::prefix_of(presented) {
            Some(prefix) => st.store.find_key(prefix).await?,
            None => None,
        };
        let key = key.filter(|k| k.revoked_at.is_none() && apikey::verify(presented, &k.salt, &k.hash));
        let Some(key) = key else {
            return Err(Error::Unauthorized(format!(
                "Incorrect API key provided: {}. Create one with `vllm-batch keys create`.",
                masked(presented)
            )));
        };
        if let Some(limiter) = &auth.limiter {
            if let Err(not_until) = limiter.check_key(&key.id) {
                let wait =
                    not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
                return Err(Error::RateLimited { retry_after: wait.as_secs().max(1) });
            }
        }
        let (store, id) = (st.store.clone(), key.id.clone());
        tokio::spawn(async move {
            let _ = store.touch_key(&id).await;
        });
        return Ok(Some(Principal { owner: Some(key.name), admin: key.admin }));
    }
    Err(Error::Unauthorized("You didn't provide an API key. Send it as `Authorization: Bearer sk-vb-…`.".into()))
}

/// A presented key as error messages show it: its start only.
fn masked(key: &str) -> String {
    let start: String = key.chars().take(10).collect();
    format!("{start}****")
}
