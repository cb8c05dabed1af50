//! Who is calling: API keys (`Authorization: Bearer sk-vb-…`, as OpenAI's SDKs send it), the
//! owner each key acts for, per-key rate limits, and the rule for servers where no key was ever
//! created — they answer only loopback clients, addressed by a loopback name and not driven by
//! another site's page, unless started with `--insecure-no-auth`.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
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
    /// Set once a key is known to have been created. Keys are never deleted (only revoked), so
    /// `true` holds for good and is never re-read; `false` is re-read on every request, so the
    /// switch to keyed mode takes effect at once in every API process.
    keyed: AtomicBool,
}

impl Auth {
    /// `rate_per_second` 0 turns the per-key rate limit off.
    pub fn new(insecure_no_auth: bool, metrics_token: Option<String>, rate_per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(rate_per_second).map(|rate| {
            let burst = NonZeroU32::new(burst.max(rate_per_second)).expect("burst ≥ rate > 0");
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Auth { insecure_no_auth, metrics_token, limiter, keyed: AtomicBool::new(false) }
    }

    /// Whether the server is in keyed mode: a key was ever created (revoked ones count).
    async fn keyed(&self, store: &dyn Store) -> Result<bool, Error> {
        if self.keyed.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let keyed = store.any_key_created().await?;
        if keyed {
            self.keyed.store(true, Ordering::Relaxed);
        }
        Ok(keyed)
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
/// The verbose health answer (`/v1/health`, `/health?verbose=1`: upstreams, models, GPUs, host
/// memory, queue counts) is not among them: it needs what the API needs, or the metrics token.
fn is_public(path: &str, query: &str) -> bool {
    let verbose = path == "/health" && query.split('&').any(|kv| matches!(kv, "verbose=1" | "verbose=true"));
    (matches!(path, "/health" | "/ready" | "/" | "/openapi.json") && !verbose) || path.starts_with("/assets/")
}

/// What the middleware knows of one request, as owned values (a request body is not `Sync`).
struct Call {
    path: String,
    query: String,
    presented: Option<String>,
    /// The peer is this machine (IPv4-mapped loopback included).
    loopback: bool,
    /// The `Host` header names this machine (`localhost`, `127.x.x.x`, `[::1]`, any port), or is absent.
    loopback_host: bool,
    /// A state-changing method sent with an `Origin` other than the `Host` it was sent to.
    foreign_origin: Option<String>,
}

impl Call {
    fn of(req: &Request) -> Call {
        let headers = req.headers();
        // No `Host` at all (HTTP/1.0, an in-process call) names no foreign site; browsers always send one.
        let host_header = headers.get(header::HOST);
        let host = host_header.and_then(|v| v.to_str().ok()).unwrap_or("");
        let changes_state = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        let origin = headers.get(header::ORIGIN).map(|v| v.to_str().unwrap_or("(not text)").to_string());
        let foreign_origin = origin.filter(|o| changes_state && !same_origin(o, host));
        Call {
            path: req.uri().path().to_string(),
            query: req.uri().query().unwrap_or("").to_string(),
            presented: bearer(headers).map(str::to_string),
            loopback: req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .is_none_or(|c| crate::server::is_loopback(&c.0)),
            loopback_host: host_header.is_none() || is_loopback_host(host),
            foreign_origin,
        }
    }
}

/// Whether a `Host` header value names this machine.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => {
            host.rsplit_once(':').map_or(host, |(name, port)| if port.parse::<u16>().is_ok() { name } else { host })
        }
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// Whether `origin` (`scheme://host[:port]`) is the server's own, i.e. names the `Host` the
/// request was sent to.
fn same_origin(origin: &str, host: &str) -> bool {
    let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| !host.is_empty() && a.eq_ignore_ascii_case(host))
}

/// Middleware: resolves the caller into a `Principal` extension, or answers 401/403/429.
pub async fn authenticate(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let call = Call::of(&req);
    match resolve(&st, &call).await {
        Ok(Some(principal)) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Ok(None) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn resolve(st: &AppState, call: &Call) -> Result<Option<Principal>, Error> {
    let auth = &st.auth;
    let presented = call.presented.as_deref();
    let token_matches = |token: &Option<String>| {
        token.as_ref().is_some_and(|t| presented.is_some_and(|b| apikey::constant_time_eq(b, t)))
    };
    if call.path == "/metrics" {
        return match &auth.metrics_token {
            Some(_) if !token_matches(&auth.metrics_token) => {
                Err(Error::Unauthorized("/metrics needs its bearer token (--metrics-token).".into()))
            }
            _ => Ok(None),
        };
    }
    if is_public(&call.path, &call.query) {
        return Ok(None);
    }
    let verbose_health = matches!(call.path.as_str(), "/health" | "/v1/health");
    if verbose_health && token_matches(&auth.metrics_token) {
        return Ok(None);
    }
    if !auth.keyed(st.store.as_ref()).await? {
        // No key was ever created: whatever an SDK sends as its key is ignored (they always
        // send one); the peer's address decides.
        if auth.insecure_no_auth {
            return Ok(Some(Principal::anonymous()));
        }
        if !call.loopback {
            return Err(Error::Unauthorized(
                "This server has no API keys, so it only answers clients on loopback. Create a key with \
                 `vllm-batch keys create --name NAME`, or start it with --insecure-no-auth."
                    .into(),
            ));
        }
        // Loopback trust must not extend to a web page the operator's browser opened: a page of
        // another site reaches loopback through DNS rebinding (its own name, resolved to
        // 127.0.0.1: the `Host` header gives it away) or by posting a form cross-site (the
        // `Origin` header gives it away).
        if !call.loopback_host {
            return Err(Error::Forbidden(
                "Without API keys this server answers only requests addressed to localhost, 127.0.0.1 or [::1] \
                 (the Host header named another name). Create a key to serve other names."
                    .into(),
            ));
        }
        if let Some(origin) = &call.foreign_origin {
            return Err(Error::Forbidden(format!(
                "Without API keys this server refuses changes sent by web pages of other origins ({origin})."
            )));
        }
        return Ok(Some(Principal::anonymous()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for (host, ok) in [
            ("127.0.0.1:8080", true),
            ("127.0.0.1", true),
            ("localhost:1", true),
            ("LOCALHOST", true),
            ("[::1]:8080", true),
            ("[::ffff:127.0.0.1]:8080", true),
            ("attacker.example", false),
            ("attacker.example:8080", false),
            ("localhost.attacker.example", false),
            ("10.0.0.1:8080", false),
            ("", false),
        ] {
            assert_eq!(is_loopback_host(host), ok, "{host}");
        }
    }

    #[test]
    fn origins() {
        assert!(same_origin("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(!same_origin("http://127.0.0.1:9999", "127.0.0.1:8080"));
        assert!(!same_origin("http://attacker.example", "127.0.0.1:8080"));
        assert!(!same_origin("null", "127.0.0.1:8080"));
    }

    #[test]
    fn verbose_health_is_not_public() {
        assert!(is_public("/health", ""));
        assert!(is_public("/health", "x=1"));
        assert!(!is_public("/health", "verbose=1"));
        assert!(!is_public("/v1/health", ""));
        assert!(is_public("/ready", ""));
    }
}
