//! OpenAI's File object and the purposes a file can be uploaded for.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

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

/// OpenAI's File object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileObject {
    pub id: String,
    pub object: String,
    pub bytes: i64,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub filename: String,
    pub purpose: String,
    pub status: String,
    pub status_details: Option<String>,
}
