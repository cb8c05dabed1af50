//! OpenAI's error envelope: `{"error": {"message", "type", "param", "code"}}`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The inner object of OpenAI's error envelope.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ApiErrorBody {
    pub message: String,
    /// `invalid_request_error`, `upstream_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request parameter at fault, if one is.
    #[schema(required = true)]
    pub param: Option<String>,
    /// A machine-readable code such as `file_too_large` or `unknown_url`, if there is one.
    #[schema(required = true)]
    pub code: Option<String>,
}

/// `{"error": …}` as every non-2xx response of the API carries it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ApiErrorBody,
}
