//! Domain and wire types of vllm-batch: ids, the OpenAI `Batch` and `File` objects, statuses,
//! the OpenAI error envelope and input-line validation. No I/O lives here.

pub mod batch;
pub mod error;
pub mod file;
pub mod ids;
pub mod line;
pub mod output;
pub mod time;
pub mod window;

pub use batch::{Batch, BatchError, BatchErrors, BatchStatus, Endpoint, Metadata, RequestCounts, Usage};
pub use error::{ApiErrorBody, ErrorEnvelope};
pub use file::{FileObject, FilePurpose};
pub use ids::{BatchId, FileId, IdError};
pub use line::{LineError, LineErrorCode, ParsedLine, RequestLine};
pub use window::CompletionWindow;

/// A list envelope as OpenAI returns it for every paginated collection.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct List<T> {
    pub object: &'static str,
    pub data: Vec<T>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

impl<T> List<T> {
    /// Builds the envelope; `id_of` names each item's id for `first_id` / `last_id`.
    pub fn new(data: Vec<T>, has_more: bool, id_of: impl Fn(&T) -> String) -> Self {
        let first_id = data.first().map(&id_of);
        let last_id = data.last().map(&id_of);
        List { object: "list", data, first_id, last_id, has_more }
    }
}
