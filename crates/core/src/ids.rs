//! Newtypes for the ids OpenAI's API hands out (`file-…`, `batch_…`, `batch_req_…`), parsed once
//! at the edge so that nothing downstream sees an unchecked string (ids also name storage keys).

use std::fmt;
use std::str::FromStr;

/// An id that failed to parse: wrong prefix, wrong length or a character outside `[0-9a-f]`.
#[derive(Debug, thiserror::Error)]
#[error("invalid {kind} id: {value:?}")]
pub struct IdError {
    pub kind: &'static str,
    pub value: String,
}

fn new_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Accepts exactly `prefix` + 32 lowercase hex digits; anything else (a path, `..`) is refused.
fn check(prefix: &str, kind: &'static str, s: &str) -> Result<(), IdError> {
    let ok = s
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    if ok {
        Ok(())
    } else {
        Err(IdError { kind, value: s.to_string() })
    }
}

macro_rules! id_type {
    ($name:ident, $prefix:literal, $kind:literal) => {
        #[doc = concat!("An id of the form `", $prefix, "` + 32 hex digits.")]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// A fresh random id.
            pub fn generate() -> Self {
                $name(format!("{}{}", $prefix, new_suffix()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                check($prefix, $kind, s)?;
                Ok($name(s.to_string()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(FileId, "file-", "file");
id_type!(BatchId, "batch_", "batch");

/// The id of one result line in an output or error file (`batch_req_…`).
pub fn new_request_line_id() -> String {
    format!("batch_req_{}", new_suffix())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_paths() {
        let id = FileId::generate();
        assert_eq!(id.as_str().parse::<FileId>().unwrap(), id);
        assert!("file-../../etc/passwd".parse::<FileId>().is_err());
        assert!("batch_abc".parse::<BatchId>().is_err());
        assert!(BatchId::generate().as_str().starts_with("batch_"));
        assert!("file-0123456789ABCDEF0123456789abcdef".parse::<FileId>().is_err());
    }
}
