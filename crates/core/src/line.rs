//! One input line of a batch file: `{"custom_id", "method": "POST", "url", "body"}`.
//!
//! Parsing borrows from the line's bytes so that the worker can forward `body` upstream byte for
//! byte, and validation can check a 1 GiB file without copying it.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::Endpoint;

/// Why a line was refused; the code is what `errors.data[].code` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineErrorCode {
    InvalidJsonLine,
    MissingCustomId,
    InvalidCustomId,
    DuplicateCustomId,
    InvalidMethod,
    InvalidUrl,
    MissingBody,
    MissingModel,
    MismatchedModel,
    ModelNotFound,
    /// No upstream could be asked for its models until the discovery deadline.
    ModelDiscoveryFailed,
    EmptyFile,
    TooManyLines,
    LineTooLong,
}

impl LineErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            LineErrorCode::InvalidJsonLine => "invalid_json_line",
            LineErrorCode::MissingCustomId => "missing_custom_id",
            LineErrorCode::InvalidCustomId => "invalid_custom_id",
            LineErrorCode::DuplicateCustomId => "duplicate_custom_id",
            LineErrorCode::InvalidMethod => "invalid_method",
            LineErrorCode::InvalidUrl => "invalid_url",
            LineErrorCode::MissingBody => "missing_body",
            LineErrorCode::MissingModel => "missing_model",
            LineErrorCode::MismatchedModel => "mismatched_model",
            LineErrorCode::ModelNotFound => "model_not_found",
            LineErrorCode::ModelDiscoveryFailed => "model_discovery_failed",
            LineErrorCode::EmptyFile => "empty_file",
            LineErrorCode::TooManyLines => "too_many_lines",
            LineErrorCode::LineTooLong => "line_too_long",
        }
    }
}

impl fmt::Display for LineErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused line: code, a message for humans and the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub code: LineErrorCode,
    pub message: String,
    pub param: Option<&'static str>,
}

impl LineError {
    pub fn new(code: LineErrorCode, param: Option<&'static str>, message: impl Into<String>) -> Self {
        LineError { code, message: message.into(), param }
    }
}

#[derive(Deserialize)]
struct WireLine<'a> {
    #[serde(borrow, default)]
    custom_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    url: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    body: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct BodyModel<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
}

/// A line that passed every per-line check.
#[derive(Debug)]
pub struct ParsedLine<'a> {
    pub custom_id: Cow<'a, str>,
    pub model: Cow<'a, str>,
    /// The request body exactly as the client wrote it.
    pub body: &'a RawValue,
}

/// What the worker needs of a line it already knows to be valid.
#[derive(Debug, Deserialize)]
pub struct RequestLine<'a> {
    #[serde(borrow)]
    pub custom_id: Cow<'a, str>,
    #[serde(borrow)]
    pub body: &'a RawValue,
}

/// Strips what editors and Windows add around a line: a trailing `\r` and, on the first line,
/// a UTF-8 byte-order mark.
pub fn trim_line(line: &[u8], first: bool) -> &[u8] {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if first {
        line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line)
    } else {
        line
    }
}

/// True for a line holding only whitespace: such lines are skipped, as JSONL readers do.
pub fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| b.is_ascii_whitespace())
}

/// Checks one line against the batch's endpoint. Checks across lines (duplicate ids, one model
/// per file, the model being served) are the caller's.
pub fn parse_line<'a>(line: &'a [u8], endpoint: Endpoint) -> Result<ParsedLine<'a>, LineError> {
    use LineErrorCode::*;
    let text = std::str::from_utf8(line)
        .map_err(|e| LineError::new(InvalidJsonLine, None, format!("line is not valid UTF-8: {e}")))?;
    // serde's derived structs also accept a JSON array, field by field (`["id","POST",…]`);
    // a request line must be an object.
    if !text.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{') {
        return Err(LineError::new(InvalidJsonLine, None, "line is not a JSON object"));
    }
    let wire: WireLine<'a> = serde_json::from_str(text)
        .map_err(|e| LineError::new(InvalidJsonLine, None, format!("line is not a valid JSON object: {e}")))?;
    let custom_id = match wire.custom_id {
        None => return Err(LineError::new(MissingCustomId, Some("custom_id"), "custom_id is required")),
        Some(raw) => match serde_json::from_str::<Cow<'a, str>>(raw.get()) {
            Ok(s) if s.is_empty() => {
                return Err(LineError::new(MissingCustomId, Some("custom_id"), "custom_id must not be empty"))
            }
            Ok(s) if s.len() > 512 => {
                return Err(LineError::new(InvalidCustomId, Some("custom_id"), "custom_id is longer than 512 bytes"))
            }
            Ok(s) => s,
            Err(_) if raw.get() == "null" => {
                return Err(LineError::new(MissingCustomId, Some("custom_id"), "custom_id is required"))
            }
            Err(_) => {
                return Err(LineError::new(
                    InvalidCustomId,
                    Some("custom_id"),
                    format!("custom_id must be a string, got {}", raw.get()),
                ))
            }
        },
    };
    match wire.method.as_deref() {
        Some("POST") => {}
        Some(other) => {
            return Err(LineError::new(
                InvalidMethod,
                Some("method"),
                format!("method must be \"POST\", got {other:?}"),
            ))
        }
        None => return Err(LineError::new(InvalidMethod, Some("method"), "method is required and must be \"POST\"")),
    }
    match wire.url.as_deref() {
        Some(u) if u == endpoint.as_str() => {}
        other => {
            return Err(LineError::new(
                InvalidUrl,
                Some("url"),
                format!("url must be the batch's endpoint {:?}, got {:?}", endpoint.as_str(), other.unwrap_or("")),
            ))
        }
    }
    let body = match wire.body {
        Some(b) if b.get().starts_with('{') => b,
        _ => return Err(LineError::new(MissingBody, Some("body"), "body is required and must be a JSON object")),
    };
    if nesting_depth(body.get()) >= BODY_DEPTH_LIMIT {
        return Err(LineError::new(
            InvalidJsonLine,
            Some("body"),
            format!("body nests arrays and objects {BODY_DEPTH_LIMIT} levels deep or more"),
        ));
    }
    let model = serde_json::from_str::<BodyModel<'a>>(body.get())
        .ok()
        .and_then(|m| m.model)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| LineError::new(MissingModel, Some("body.model"), "body.model is required"))?;
    Ok(ParsedLine { custom_id, model, body })
}

/// Bodies nested this deep are refused. Parsing the line skips over `body` without recursing, so
/// depth costs the server nothing, but serde_json (and so many upstreams) refuses documents this
/// deep: such a request could only fail upstream, after the batch was accepted.
pub const BODY_DEPTH_LIMIT: usize = 128;

/// How deeply arrays and objects nest in `json` (valid JSON), counting up to `BODY_DEPTH_LIMIT`.
fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in json.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
                if deepest >= BODY_DEPTH_LIMIT {
                    break;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;
    use LineErrorCode::*;

    fn code(line: &str) -> Result<(), LineErrorCode> {
        parse_line(line.as_bytes(), Endpoint::ChatCompletions).map(|_| ()).map_err(|e| e.code)
    }

    #[test]
    fn accepts_a_good_line_and_keeps_the_body_verbatim() {
        let line =
            r#"{"custom_id":"a\"1","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[ ]}}"#;
        let p = parse_line(line.as_bytes(), Endpoint::ChatCompletions).unwrap();
        assert_eq!(p.custom_id, "a\"1");
        assert_eq!(p.model, "m");
        assert_eq!(p.body.get(), r#"{"model":"m","messages":[ ]}"#);
    }

    #[test]
    fn refuses_each_bad_shape_with_its_code() {
        assert_eq!(code("{not json"), Err(InvalidJsonLine));
        assert_eq!(code("[1,2]"), Err(InvalidJsonLine));
        assert_eq!(
            code(r#"{"method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}"#),
            Err(MissingCustomId)
        );
        assert_eq!(
            code(r#"{"custom_id":7,"method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}"#),
            Err(InvalidCustomId)
        );
        assert_eq!(
            code(r#"{"custom_id":"a","method":"GET","url":"/v1/chat/completions","body":{"model":"m"}}"#),
            Err(InvalidMethod)
        );
        assert_eq!(
            code(r#"{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{"model":"m"}}"#),
            Err(InvalidUrl)
        );
        assert_eq!(code(r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions"}"#), Err(MissingBody));
        assert_eq!(
            code(r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{}}"#),
            Err(MissingModel)
        );
        assert_eq!(parse_line(b"\xff\xfe", Endpoint::ChatCompletions).unwrap_err().code, InvalidJsonLine);
        // serde's derived structs also read a JSON array, field by field: still not an object.
        assert_eq!(code(r#"["a","POST","/v1/chat/completions",{"model":"m"}]"#), Err(InvalidJsonLine));
    }

    #[test]
    fn refuses_bodies_nested_as_deep_as_serde_json_refuses() {
        let line = |depth: usize| {
            let inner = format!("{}{}", "[".repeat(depth - 1), "]".repeat(depth - 1));
            format!(
                r#"{{"custom_id":"d","method":"POST","url":"/v1/chat/completions","body":{{"model":"m","x":{inner}}}}}"#
            )
        };
        let ok = line(BODY_DEPTH_LIMIT - 1);
        let p = parse_line(ok.as_bytes(), Endpoint::ChatCompletions).unwrap();
        serde_json::from_str::<serde_json::Value>(p.body.get()).expect("an accepted body parses");
        let deep = line(BODY_DEPTH_LIMIT);
        let e = parse_line(deep.as_bytes(), Endpoint::ChatCompletions).unwrap_err();
        assert_eq!((e.code, e.param), (InvalidJsonLine, Some("body")));
        assert!(
            serde_json::from_str::<serde_json::Value>(&deep[deep.find(r#"{"model"#).unwrap()..deep.len() - 1]).is_err()
        );
        let huge = line(100_000);
        assert_eq!(code(&huge), Err(InvalidJsonLine));
        // Brackets inside strings, escaped quotes included, are text.
        let text = format!(
            r#"{{"custom_id":"s","method":"POST","url":"/v1/chat/completions","body":{{"model":"m","x":"\"{}"}}}}"#,
            "[".repeat(500)
        );
        assert_eq!(code(&text), Ok(()));
    }

    #[test]
    fn trims_bom_and_crlf() {
        assert_eq!(trim_line(b"\xEF\xBB\xBF{}\r", true), b"{}");
        assert_eq!(trim_line(b"\xEF\xBB\xBF{}", false), b"\xEF\xBB\xBF{}");
        assert!(is_blank(b"  \t"));
    }
}
