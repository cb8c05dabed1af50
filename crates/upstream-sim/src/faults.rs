//! Fault injection: deciding, per received inference request, whether to
//! answer with a simulated failure, and building those failure responses
//! (500, 429 + `Retry-After`, connection reset, hang, context-length 400).

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use rand::Rng;

use crate::det;
use crate::state::SimState;

/// Body marker that always yields the context-length 400.
pub const MARKER_400: &str = "__sim_400__";
/// Body marker that always yields a 500.
pub const MARKER_500: &str = "__sim_500__";

/// vLLM's context-length error message (vLLM 0.32's wording, for a prompt one token too long),
/// and the `param` it names.
pub(crate) const CONTEXT_LENGTH_MESSAGE: &str = "This model's maximum context length is 8192 tokens. However, your prompt contains at least 8193 input tokens, which exceeds this limit even without any output tokens. Please reduce the length of the input prompt. (parameter=input_tokens, value=8193)";
const CONTEXT_LENGTH_PARAM: &str = "input_tokens";

/// A simulated failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    Internal,
    RateLimited,
    Reset,
    Hang,
    ContextLength,
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Decides the fault (if any) for a request with raw body `body`.
///
/// Four uniform draws are taken from the seeded RNG for every request (so the
/// sequence does not depend on the rates), compared with the 500, 429, reset
/// and hang rates in that order of precedence. The 400 is decided from a hash
/// of the body, so a retried identical request gets the same answer. The test
/// markers [`MARKER_500`] and [`MARKER_400`] take precedence over everything.
pub(crate) fn decide(state: &SimState, body: &[u8]) -> Option<Fault> {
    let (rates, draws) = {
        let mut f = state.faults.lock().unwrap_or_else(|e| e.into_inner());
        let draws: [f64; 4] = std::array::from_fn(|_| f.rng.random::<f64>());
        (f.rates.clone(), draws)
    };
    if contains(body, MARKER_500) {
        return Some(Fault::Internal);
    }
    if contains(body, MARKER_400) {
        return Some(Fault::ContextLength);
    }
    let random = [
        (rates.error_500, Fault::Internal),
        (rates.error_429, Fault::RateLimited),
        (rates.reset, Fault::Reset),
        (rates.hang, Fault::Hang),
    ];
    for ((rate, fault), draw) in random.into_iter().zip(draws) {
        if draw < rate {
            return Some(fault);
        }
    }
    let threshold = (rates.error_400.clamp(0.0, 1.0) * 10_000.0).round() as u64;
    (det::stable_hash(body) % 10_000 < threshold).then_some(Fault::ContextLength)
}

/// vLLM's error envelope with the given status:
/// `{"error": {"message", "type", "param", "code"}}` (as vLLM 0.32 answers; older vLLM sent the
/// fields flat, with `"object": "error"`).
pub(crate) fn error_response(status: StatusCode, message: &str, kind: &str, param: Option<&str>) -> Response {
    let body = serde_json::json!({
        "error": {
            "message": message,
            "type": kind,
            "param": param,
            "code": status.as_u16(),
        }
    });
    (status, axum::Json(body)).into_response()
}

/// A 200 whose body breaks off: a first partial chunk, then an error, which
/// makes hyper abort the connection so the client sees an incomplete message.
pub(crate) fn broken_response() -> Response {
    let first =
        futures_util::stream::once(async { Ok::<_, std::io::Error>(Bytes::from_static(b"{\"id\":\"chatcmpl-")) });
    let fail = futures_util::stream::once(async {
        // Give hyper a chance to flush the head and first chunk.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        Err::<Bytes, _>(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "simulated connection reset"))
    });
    let mut resp = Response::new(Body::from_stream(first.chain(fail)));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Produces the response for `fault`. For [`Fault::Hang`] this waits an hour,
/// or until shutdown, and then breaks the connection.
pub(crate) async fn respond(state: &SimState, fault: Fault) -> Response {
    match fault {
        Fault::Internal => {
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "simulated internal error", "InternalServerError", None)
        }
        Fault::RateLimited => {
            let mut resp = error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "simulated rate limit: too many requests, retry later",
                "TooManyRequestsError",
                None,
            );
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
        Fault::Reset => broken_response(),
        Fault::Hang => {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
                _ = state.shutdown_requested() => {}
            }
            broken_response()
        }
        Fault::ContextLength => error_response(
            StatusCode::BAD_REQUEST,
            CONTEXT_LENGTH_MESSAGE,
            "BadRequestError",
            Some(CONTEXT_LENGTH_PARAM),
        ),
    }
}
