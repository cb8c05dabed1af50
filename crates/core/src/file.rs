//! OpenAI's File object and the purposes a file can be uploaded for.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

/// The purposes OpenAI's Files API accepts. Only `batch` files can be a batch's input;
/// `batch_output` is what the server itself writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilePurpose {
    Batch,
    BatchOutput,
    FineTune,
    Assistants,
    Vision,
    UserData,
    Evals,
}

impl FilePurpose {
    pub const ALL: [FilePurpose; 7] = [
        FilePurpose::Batch,
        FilePurpose::BatchOutput,
        FilePurpose::FineTune,
        FilePurpose::Assistants,
        FilePurpose::Vision,
        FilePurpose::UserData,
        FilePurpose::Evals,
    ];

    /// Whether a client may upload a file of this purpose: every OpenAI purpose but
    /// `batch_output`, which only the server's own output and error files have.
    pub fn uploadable(self) -> bool {
        self != FilePurpose::BatchOutput
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FilePurpose::Batch => "batch",
            FilePurpose::BatchOutput => "batch_output",
            FilePurpose::FineTune => "fine-tune",
            FilePurpose::Assistants => "assistants",
            FilePurpose::Vision => "vision",
            FilePurpose::UserData => "user_data",
            FilePurpose::Evals => "evals",
        }
    }
}

impl FromStr for FilePurpose {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FilePurpose::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            let all: Vec<_> = FilePurpose::ALL.iter().map(|p| p.as_str()).collect();
            format!("Invalid purpose {s:?}; expected one of: {}", all.join(", "))
        })
    }
}

/// A string enum of `FilePurpose::ALL`, so the document cannot drift from what the parser accepts.
impl utoipa::PartialSchema for FilePurpose {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(FilePurpose::ALL.map(FilePurpose::as_str)))
            .description(Some("What the file is for; a batch's input file has purpose `batch`."))
            .into()
    }
}

impl ToSchema for FilePurpose {}

/// OpenAI's File object. Every field is always sent, `null` where unset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FileObject {
    pub id: String,
    #[schema(pattern = "^file$")]
    pub object: String,
    /// Size in bytes.
    pub bytes: i64,
    pub created_at: i64,
    #[schema(required = true)]
    pub expires_at: Option<i64>,
    pub filename: String,
    #[schema(value_type = FilePurpose)]
    pub purpose: String,
    pub status: String,
    #[schema(required = true)]
    pub status_details: Option<String>,
}

/// What `DELETE /v1/files/{file_id}` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeletedFile {
    pub id: String,
    #[schema(pattern = "^file$")]
    pub object: String,
    pub deleted: bool,
}

impl DeletedFile {
    pub fn new(id: impl Into<String>) -> Self {
        DeletedFile { id: id.into(), object: "file".into(), deleted: true }
    }
}
