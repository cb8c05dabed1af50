//! Webhooks as OpenAI sends them: the event types this server emits, the event body
//! (`{"object":"event","id":"evt_…","type","created_at","data":{"id":"batch_…"}}`), signing
//! secrets (`whsec_` + base64 of 32 random bytes) and Standard Webhooks signatures
//! (`webhook-signature: v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">`),
//! which the official SDKs' `client.webhooks.unwrap` verifies. Pure: no I/O.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::BatchStatus;

/// The events this server sends: a batch ended. OpenAI's other event types (responses, evals,
/// fine-tuning, …) name things this server does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    BatchCompleted,
    BatchFailed,
    BatchExpired,
    BatchCancelled,
}

impl EventType {
    pub const ALL: [EventType; 4] =
        [EventType::BatchCompleted, EventType::BatchFailed, EventType::BatchExpired, EventType::BatchCancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::BatchCompleted => "batch.completed",
            EventType::BatchFailed => "batch.failed",
            EventType::BatchExpired => "batch.expired",
            EventType::BatchCancelled => "batch.cancelled",
        }
    }

    /// The event a batch ending in `status` sends; `None` for a status that is not an end.
    pub fn for_status(status: BatchStatus) -> Option<EventType> {
        match status {
            BatchStatus::Completed => Some(EventType::BatchCompleted),
            BatchStatus::Failed => Some(EventType::BatchFailed),
            BatchStatus::Expired => Some(EventType::BatchExpired),
            BatchStatus::Cancelled => Some(EventType::BatchCancelled),
            _ => None,
        }
    }

    /// The supported types, comma-separated (for error messages).
    pub fn supported_list() -> String {
        EventType::ALL.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
    }
}

impl std::str::FromStr for EventType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            format!("Unsupported event type {s:?}: this server sends only {}", EventType::supported_list())
        })
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A new event id, `evt_` + 32 hex digits.
pub fn new_event_id() -> String {
    format!("evt_{}", uuid::Uuid::new_v4().simple())
}

/// A new delivery id: the `webhook-id` header, the same on every attempt of one delivery.
pub fn new_delivery_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

#[derive(Serialize)]
struct EventData<'a> {
    id: &'a str,
}

#[derive(Serialize)]
struct Event<'a> {
    object: &'static str,
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    created_at: i64,
    data: EventData<'a>,
}

/// The JSON body of an event about `batch_id`, exactly as it is sent (and stored).
pub fn event_body(event_id: &str, kind: EventType, created_at: i64, batch_id: &str) -> String {
    let event =
        Event { object: "event", id: event_id, kind: kind.as_str(), created_at, data: EventData { id: batch_id } };
    serde_json::to_string(&event).expect("an event serialises")
}

/// What one delivery attempt got: the receiver's status code, or why there was no answer.
/// Made by the sender (`vllm_batch_upstream::webhook`), recorded by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The receiver's status code, when it answered.
    pub status_code: Option<u16>,
    /// Why there was no usable answer (connect error, timeout), or the non-2xx status.
    pub error: Option<String>,
    pub duration_ms: i64,
}

impl AttemptRecord {
    /// Delivered: the receiver answered 2xx.
    pub fn succeeded(&self) -> bool {
        self.status_code.is_some_and(|s| (200..300).contains(&s))
    }
}

/// What a signing secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";

/// A signing secret: `whsec_` + base64 of the key bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    text: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({})", self.hint())
    }
}

impl Secret {
    /// A fresh secret of 32 random bytes.
    pub fn generate() -> Secret {
        let mut key = vec![0u8; 32];
        getrandom::fill(&mut key).expect("the operating system's random source");
        Secret { text: format!("{SECRET_PREFIX}{}", BASE64.encode(&key)), key }
    }

    /// Parses `whsec_<base64>` (at least 16 key bytes).
    pub fn parse(text: &str) -> Result<Secret, String> {
        let b64 = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or_else(|| format!("a webhook secret starts with {SECRET_PREFIX:?} followed by base64"))?;
        let key = BASE64.decode(b64).map_err(|e| format!("the part after {SECRET_PREFIX:?} is not base64: {e}"))?;
        if key.len() < 16 {
            return Err(format!("the secret holds {} bytes; at least 16 are needed", key.len()));
        }
        Ok(Secret { text: text.to_string(), key })
    }

    /// The secret as users write it (`whsec_…`).
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// A masked form that identifies the secret without revealing it: `whsec_…` + its last 4
    /// characters.
    pub fn hint(&self) -> String {
        let tail: String = self.text.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
        format!("{SECRET_PREFIX}…{tail}")
    }

    /// base64 of HMAC-SHA256 over `"{id}.{timestamp}.{body}"`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        BASE64.encode(mac.finalize().into_bytes())
    }
}

/// The Standard Webhooks headers of one attempt: `webhook-id` (the delivery's, constant across
/// attempts), `webhook-timestamp` (now: receivers refuse old ones, so every attempt is signed
/// afresh) and `webhook-signature` (`v1,<sig>`, one per active secret, space-separated).
pub fn signed_headers(id: &str, timestamp: i64, body: &str, secrets: &[&Secret]) -> [(&'static str, String); 3] {
    let signature = secrets.iter().map(|s| format!("v1,{}", s.sign(id, timestamp, body))).collect::<Vec<_>>().join(" ");
    [("webhook-id", id.to_string()), ("webhook-timestamp", timestamp.to_string()), ("webhook-signature", signature)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_standard_webhooks() {
        // The Standard Webhooks specification's example.
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_round_trip_and_refuse_garbage() {
        let s = Secret::generate();
        assert!(s.expose().starts_with("whsec_"));
        assert_eq!(Secret::parse(s.expose()).unwrap(), s);
        assert!(s.hint().starts_with("whsec_…") && !s.hint().contains(&s.expose()[6..20]));
        assert!(Secret::parse("nope").is_err());
        assert!(Secret::parse("whsec_!!!").is_err());
        assert!(Secret::parse("whsec_AAAA").is_err());
    }

    #[test]
    fn event_body_is_openais_shape() {
        let body = event_body("evt_1", EventType::BatchCompleted, 7, "batch_x");
        assert_eq!(
            body,
            r#"{"object":"event","id":"evt_1","type":"batch.completed","created_at":7,"data":{"id":"batch_x"}}"#
        );
        assert!("response.completed".parse::<EventType>().unwrap_err().contains("batch.completed"));
    }
}
