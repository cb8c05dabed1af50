//! The OpenAI `Batch` object and the types it is made of: status, endpoint, request counts,
//! usage, metadata and validation errors.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

/// A batch's lifecycle, exactly OpenAI's statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    Validating,
    Failed,
    InProgress,
    Finalizing,
    Completed,
    Expired,
    Cancelling,
    Cancelled,
}

impl BatchStatus {
    pub const ALL: [BatchStatus; 8] = [
        BatchStatus::Validating,
        BatchStatus::Failed,
        BatchStatus::InProgress,
        BatchStatus::Finalizing,
        BatchStatus::Completed,
        BatchStatus::Expired,
        BatchStatus::Cancelling,
        BatchStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Validating => "validating",
            BatchStatus::Failed => "failed",
            BatchStatus::InProgress => "in_progress",
            BatchStatus::Finalizing => "finalizing",
            BatchStatus::Completed => "completed",
            BatchStatus::Expired => "expired",
            BatchStatus::Cancelling => "cancelling",
            BatchStatus::Cancelled => "cancelled",
        }
    }

    /// No further transition happens from a terminal status.
    pub fn is_terminal(self) -> bool {
        matches!(self, BatchStatus::Failed | BatchStatus::Completed | BatchStatus::Expired | BatchStatus::Cancelled)
    }
}

impl FromStr for BatchStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        BatchStatus::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| format!("unknown batch status {s:?}"))
    }
}

impl fmt::Display for BatchStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The upstream endpoints a batch can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Score,
    Rerank,
    /// OpenAI's Responses API (`/v1/responses`), which vLLM serves too.
    Responses,
}

impl Endpoint {
    pub const ALL: [Endpoint; 6] = [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Score,
        Endpoint::Rerank,
        Endpoint::Responses,
    ];

    /// The path as clients write it, e.g. `/v1/chat/completions`.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Score => "/v1/score",
            Endpoint::Rerank => "/v1/rerank",
            Endpoint::Responses => "/v1/responses",
        }
    }

    /// The path relative to an upstream base URL that already ends in `/v1`.
    pub fn upstream_path(self) -> &'static str {
        &self.as_str()[3..]
    }
}

impl FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Endpoint::ALL.into_iter().find(|e| e.as_str() == s).ok_or_else(|| {
            let all: Vec<_> = Endpoint::ALL.iter().map(|e| e.as_str()).collect();
            format!("Unsupported endpoint {s:?}; supported: {}", all.join(", "))
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string enum of `Endpoint::ALL`, so the document cannot drift from what the parser accepts.
impl utoipa::PartialSchema for Endpoint {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Endpoint::ALL.map(Endpoint::as_str)))
            .description(Some("The upstream endpoint every request of the batch goes to."))
            .into()
    }
}

impl ToSchema for Endpoint {}

impl Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Batch metadata: at most 16 pairs, keys at most 64 characters, values at most 512.
pub type Metadata = BTreeMap<String, String>;

/// Checks OpenAI's metadata limits; the error names the offending key.
pub fn check_metadata(m: &Metadata) -> Result<(), String> {
    if m.len() > 16 {
        return Err(format!("metadata has {} pairs; at most 16 are allowed", m.len()));
    }
    for (k, v) in m {
        if k.chars().count() > 64 {
            return Err(format!("metadata key {k:?} is longer than 64 characters"));
        }
        if v.chars().count() > 512 {
            return Err(format!("metadata value of {k:?} is longer than 512 characters"));
        }
    }
    Ok(())
}

/// The metadata key that sets a batch's priority (an extension): an integer, lower runs first
/// (vLLM's convention), from -1,000,000 to 1,000,000.
pub const PRIORITY_KEY: &str = "priority";

/// The batch priority `metadata.priority` sets: `None` when absent, an error naming the rule
/// when it is not an integer in range.
pub fn metadata_priority(m: Option<&Metadata>) -> Result<Option<i64>, String> {
    let Some(v) = m.and_then(|m| m.get(PRIORITY_KEY)) else { return Ok(None) };
    match v.trim().parse::<i64>() {
        Ok(p) if (-1_000_000..=1_000_000).contains(&p) => Ok(Some(p)),
        _ => {
            Err(format!("metadata.priority must be an integer from -1000000 to 1000000 (lower runs first), not {v:?}"))
        }
    }
}

/// The OpenAPI schema of `metadata`, with the limits `check_metadata` enforces; `null` is
/// accepted in requests and sent in responses when a batch has none.
pub fn metadata_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .description(Some(
            "Up to 16 key-value pairs attached to the batch: keys at most 64 characters, values at most 512.",
        ))
        .max_properties(Some(16))
        .property_names(Some(ObjectBuilder::new().schema_type(Type::String).max_length(Some(64))))
        .additional_properties(Some(ObjectBuilder::new().schema_type(Type::String).max_length(Some(512))))
        .into()
}

/// `request_counts` of a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RequestCounts {
    pub total: i64,
    pub completed: i64,
    pub failed: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InputTokensDetails {
    pub cached_tokens: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OutputTokensDetails {
    pub reasoning_tokens: i64,
}

/// `usage` of a batch: the sum of the upstream responses' usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub input_tokens: i64,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens: i64,
    pub output_tokens_details: OutputTokensDetails,
    pub total_tokens: i64,
}

impl std::ops::AddAssign<&Usage> for Usage {
    fn add_assign(&mut self, u: &Usage) {
        self.input_tokens += u.input_tokens;
        self.input_tokens_details.cached_tokens += u.input_tokens_details.cached_tokens;
        self.output_tokens += u.output_tokens;
        self.output_tokens_details.reasoning_tokens += u.output_tokens_details.reasoning_tokens;
        self.total_tokens += u.total_tokens;
    }
}

/// One entry of `errors.data`: why validation failed, with the input line when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BatchError {
    pub code: String,
    pub message: String,
    #[schema(required = true)]
    pub param: Option<String>,
    /// The 1-based input line the error is about, if any.
    #[schema(required = true)]
    pub line: Option<u64>,
}

/// `errors` of a batch: `{"object": "list", "data": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BatchErrors {
    #[schema(pattern = "^list$")]
    pub object: String,
    pub data: Vec<BatchError>,
}

impl BatchErrors {
    pub fn new(data: Vec<BatchError>) -> Self {
        BatchErrors { object: "list".into(), data }
    }
}

/// OpenAI's Batch object, field for field. Every field is always sent, `null` where unset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Batch {
    pub id: String,
    #[schema(pattern = "^batch$")]
    pub object: String,
    #[schema(value_type = Endpoint)]
    pub endpoint: String,
    /// The `body.model` of the input lines, once validation has read them.
    #[schema(required = true)]
    pub model: Option<String>,
    /// Why validation failed (status `failed`).
    #[schema(required = true)]
    pub errors: Option<BatchErrors>,
    pub input_file_id: String,
    pub completion_window: String,
    pub status: BatchStatus,
    #[schema(required = true)]
    pub output_file_id: Option<String>,
    #[schema(required = true)]
    pub error_file_id: Option<String>,
    pub created_at: i64,
    #[schema(required = true)]
    pub in_progress_at: Option<i64>,
    #[schema(required = true)]
    pub expires_at: Option<i64>,
    #[schema(required = true)]
    pub finalizing_at: Option<i64>,
    #[schema(required = true)]
    pub completed_at: Option<i64>,
    #[schema(required = true)]
    pub failed_at: Option<i64>,
    #[schema(required = true)]
    pub expired_at: Option<i64>,
    #[schema(required = true)]
    pub cancelling_at: Option<i64>,
    #[schema(required = true)]
    pub cancelled_at: Option<i64>,
    pub request_counts: RequestCounts,
    pub usage: Usage,
    #[schema(required = true, schema_with = metadata_schema)]
    pub metadata: Option<Metadata>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_and_status_names() {
        assert_eq!("/v1/embeddings".parse::<Endpoint>().unwrap(), Endpoint::Embeddings);
        assert_eq!(Endpoint::ChatCompletions.upstream_path(), "/chat/completions");
        assert!("/v1/images".parse::<Endpoint>().is_err());
        for s in BatchStatus::ALL {
            assert_eq!(s.as_str().parse::<BatchStatus>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn metadata_limits() {
        let mut m = Metadata::new();
        m.insert("k".into(), "v".repeat(512));
        assert!(check_metadata(&m).is_ok());
        m.insert("k".repeat(65), "v".into());
        assert!(check_metadata(&m).is_err());
        let many: Metadata = (0..17).map(|i| (i.to_string(), String::new())).collect();
        assert!(check_metadata(&many).is_err());
    }
}
