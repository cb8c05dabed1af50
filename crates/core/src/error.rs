//! OpenAI's error envelope: `{"error": {"message", "type", "param", "code"}}`.

use serde::{Deserialize, Serialize};

/// The inner object of OpenAI's error envelope.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApiErrorBody {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

/// `{"error": …}` as every non-2xx response of the API carries it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorEnvelope {
    pub error: ApiErrorBody,
}
