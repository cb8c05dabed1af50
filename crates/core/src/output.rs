//! The line formats of a batch's output and error files, exactly OpenAI's:
//! `{"id": "batch_req_…", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}`.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::ids::new_request_line_id;

/// The error object of an error-file line.
#[derive(Debug, Serialize)]
pub struct LineFailure<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

#[derive(Serialize)]
struct Response<'a> {
    status_code: u16,
    request_id: &'a str,
    body: &'a RawValue,
}

#[derive(Serialize)]
struct ResultLine<'a> {
    id: String,
    custom_id: &'a str,
    response: Option<Response<'a>>,
    error: Option<LineFailure<'a>>,
}

/// One line (with its `\n`) of the output file: a request the upstream answered with 2xx.
pub fn output_line(custom_id: &str, status_code: u16, request_id: &str, body: &RawValue) -> Vec<u8> {
    render(ResultLine {
        id: new_request_line_id(),
        custom_id,
        response: Some(Response { status_code, request_id, body }),
        error: None,
    })
}

/// One line of the error file. `response` is the upstream's final answer when there was one
/// (a 4xx, or the last 5xx after retries), else `None`.
pub fn error_line(custom_id: &str, response: Option<(u16, &str, &RawValue)>, failure: LineFailure<'_>) -> Vec<u8> {
    render(ResultLine {
        id: new_request_line_id(),
        custom_id,
        response: response.map(|(status_code, request_id, body)| Response { status_code, request_id, body }),
        error: Some(failure),
    })
}

fn render(line: ResultLine<'_>) -> Vec<u8> {
    let mut out = serde_json::to_vec(&line).expect("result line serialises");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_openai_shape() {
        let body = RawValue::from_string(r#"{"ok":true}"#.into()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&output_line("c1", 200, "req-1", &body)).unwrap();
        assert!(v["id"].as_str().unwrap().starts_with("batch_req_"));
        assert_eq!(v["custom_id"], "c1");
        assert_eq!(v["response"]["status_code"], 200);
        assert_eq!(v["response"]["request_id"], "req-1");
        assert_eq!(v["response"]["body"]["ok"], true);
        assert!(v["error"].is_null());
        let e: serde_json::Value =
            serde_json::from_slice(&error_line("c2", None, LineFailure { code: "batch_expired", message: "m" }))
                .unwrap();
        assert!(e["response"].is_null());
        assert_eq!(e["error"]["code"], "batch_expired");
    }
}
