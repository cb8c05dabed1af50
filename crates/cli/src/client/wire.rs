//! What the client reads of the API's objects. Lenient on purpose: any OpenAI-compatible server
//! may omit or add fields, so everything but the id and status has a default. `--json` prints
//! the raw objects, never these views.

use std::collections::BTreeMap;
use std::str::FromStr;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use vllm_batch_core::BatchStatus;

/// Parses a view out of a raw API object.
pub fn view<T: DeserializeOwned>(v: &Value, what: &str) -> Result<T> {
    T::deserialize(v).with_context(|| format!("unexpected {what} object from the server: {v}"))
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
pub struct Counts {
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
}

impl Counts {
    pub fn done(&self) -> u64 {
        self.completed + self.failed
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ValidationError {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub line: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Errors {
    #[serde(default)]
    pub data: Vec<ValidationError>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Batch {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub endpoint: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub input_file_id: String,
    #[serde(default)]
    pub output_file_id: Option<String>,
    #[serde(default)]
    pub error_file_id: Option<String>,
    #[serde(default)]
    pub completion_window: String,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub in_progress_at: Option<i64>,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub completed_at: Option<i64>,
    #[serde(default)]
    pub failed_at: Option<i64>,
    #[serde(default)]
    pub expired_at: Option<i64>,
    #[serde(default)]
    pub cancelled_at: Option<i64>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub request_counts: Counts,
    #[serde(default, deserialize_with = "null_as_default")]
    pub usage: Usage,
    #[serde(default, deserialize_with = "null_as_default")]
    pub errors: Errors,
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: BTreeMap<String, String>,
}

impl Batch {
    /// The status, when it is one of OpenAI's.
    pub fn status(&self) -> Option<BatchStatus> {
        BatchStatus::from_str(&self.status).ok()
    }

    pub fn is_terminal(&self) -> bool {
        self.status().is_some_and(BatchStatus::is_terminal)
    }

    /// When the batch ended, if it has.
    pub fn ended_at(&self) -> Option<i64> {
        self.completed_at.or(self.failed_at).or(self.expired_at).or(self.cancelled_at)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct File {
    pub id: String,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub filename: String,
    #[serde(default)]
    pub purpose: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub expires_at: Option<i64>,
}

/// OpenAI's list envelope; `data` stays raw so that `--all` can print the objects unchanged.
#[derive(Debug, Clone, Deserialize)]
pub struct Page {
    #[serde(default)]
    pub data: Vec<Value>,
    #[serde(default)]
    pub has_more: bool,
    #[serde(default)]
    pub last_id: Option<String>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_sparse_batch_parses() {
        let b: Batch =
            view(&json!({"id": "batch_1", "status": "in_progress", "request_counts": null}), "batch").unwrap();
        assert_eq!(b.request_counts.total, 0);
        assert!(!b.is_terminal());
        let b: Batch = view(&json!({"id": "batch_1", "status": "cancelled", "metadata": {"a": "b"}}), "batch").unwrap();
        assert!(b.is_terminal());
        assert_eq!(b.metadata["a"], "b");
    }
}
