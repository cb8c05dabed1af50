//! Domain and wire types of vllm-batch: ids, the OpenAI `Batch` and `File` objects, statuses,
//! the OpenAI error envelope and input-line validation. No I/O lives here.

pub mod apikey;
pub mod batch;
pub mod error;
pub mod file;
pub mod ids;
pub mod line;
pub mod output;
pub mod redact;
pub mod time;
pub mod webhook;
pub mod window;

pub use batch::{Batch, BatchError, BatchErrors, BatchStatus, Endpoint, Metadata, RequestCounts, Usage};
pub use error::{ApiErrorBody, ErrorEnvelope};
pub use file::{DeletedFile, FileObject, FilePurpose};
pub use ids::{BatchId, FileId, IdError};
pub use line::{LineError, LineErrorCode, ParsedLine, RequestLine};
pub use redact::redact_url;
pub use window::CompletionWindow;

/// Bytes in binary units, for people: `512 B`, `12.3 KiB`, `1.5 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A list envelope as OpenAI returns it for every paginated collection.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct List<T> {
    pub object: &'static str,
    pub data: Vec<T>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

/// Written by hand rather than derived: utoipa inlines a generic argument's whole schema, where
/// a `$ref` to the item's component reads better and keeps one definition of each object.
impl<T: utoipa::ToSchema> utoipa::PartialSchema for List<T> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
        use utoipa::openapi::Ref;
        let nullable_id = |description: &str| {
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                .description(Some(description))
        };
        ObjectBuilder::new()
            .description(Some(format!("A page of {} objects.", T::name())))
            .property("object", ObjectBuilder::new().schema_type(Type::String).pattern(Some("^list$")))
            .property("data", ArrayBuilder::new().items(Ref::from_schema_name(T::name())))
            .property("first_id", nullable_id("The id of the first item of `data`; `null` when `data` is empty."))
            .property("last_id", nullable_id("The id of the last item of `data`: the `after` cursor of the next page."))
            .property(
                "has_more",
                ObjectBuilder::new().schema_type(Type::Boolean).description(Some("Whether items follow `last_id`.")),
            )
            .required("object")
            .required("data")
            .required("first_id")
            .required("last_id")
            .required("has_more")
            .into()
    }
}

/// `List<Batch>` and `List<FileObject>` by the names the OpenAPI document gives them. Handlers'
/// `#[utoipa::path]` attributes name these aliases: utoipa composes a generic type's schema
/// itself, through its derive only, but takes a non-generic path's `ToSchema` as written.
pub type BatchList = List<Batch>;
pub type FileList = List<FileObject>;

impl<T: utoipa::ToSchema> utoipa::ToSchema for List<T> {
    /// `BatchList`, `FileList` (`FileObject` loses its `Object`).
    fn name() -> std::borrow::Cow<'static, str> {
        format!("{}List", T::name().trim_end_matches("Object")).into()
    }

    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        schemas.push((T::name().into(), T::schema()));
        T::schemas(schemas);
    }
}

impl<T> List<T> {
    /// Builds the envelope; `id_of` names each item's id for `first_id` / `last_id`.
    pub fn new(data: Vec<T>, has_more: bool, id_of: impl Fn(&T) -> String) -> Self {
        let first_id = data.first().map(&id_of);
        let last_id = data.last().map(&id_of);
        List { object: "list", data, first_id, last_id, has_more }
    }
}
