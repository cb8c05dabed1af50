//! Fuzzes one input line: `trim_line` + `parse_line` against every endpoint must never panic,
//! and a line it accepts is a JSON object with a non-empty `custom_id`, a model, and a body that
//! is a JSON object which re-parses — the body the worker will forward upstream byte for byte.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vllm_batch_core::line::{is_blank, parse_line, trim_line};
use vllm_batch_core::Endpoint;

/// Parses accepted JSON into a `Value`; `None` when it may hold a UTF-16 surrogate escape
/// (`"\ud800"`). The grammar allows a lone one and Python's `json` (OpenAI's side) reads it,
/// but serde_json's `Value` refuses it, so such a line is accepted and its body forwarded as
/// written. Anything else that fails to parse here was wrongly accepted.
fn reparse(json: &[u8], what: &str) -> Option<Value> {
    let surrogate = json.windows(4).any(|w| {
        w[0] == b'\\' && w[1] == b'u' && (w[2] | 0x20) == b'd' && matches!(w[3] | 0x20, b'8'..=b'9' | b'a'..=b'f')
    });
    match serde_json::from_slice(json) {
        Ok(v) => Some(v),
        Err(_) if surrogate => None,
        Err(e) => panic!("an accepted {what} does not parse: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    for first in [true, false] {
        let line = trim_line(data, first);
        let at = line.as_ptr() as usize - data.as_ptr() as usize;
        assert!(at == 0 || (first && at == 3), "trim_line strips only a BOM from the front");
        assert!(data.len() - at - line.len() <= 1, "trim_line strips only a \\r from the back");
        let _ = is_blank(line);
        for endpoint in Endpoint::ALL {
            let Ok(p) = parse_line(line, endpoint) else { continue };
            if let Some(whole) = reparse(line, "line") {
                assert!(whole.is_object(), "accepted a line that is not a JSON object");
            }
            assert!(!p.custom_id.is_empty(), "accepted an empty custom_id");
            assert!(p.custom_id.len() <= 512, "accepted a custom_id over 512 bytes");
            assert!(!p.model.is_empty(), "accepted an empty model");
            assert!(p.body.get().starts_with('{'), "accepted a body that is not an object: {}", p.body.get());
            if let Some(body) = reparse(p.body.get().as_bytes(), "body") {
                assert!(body.is_object(), "accepted a body that is not an object: {}", p.body.get());
            }
            // The accepted body is a slice of the line, not a re-serialization.
            let (start, end) = (line.as_ptr() as usize, line.as_ptr() as usize + line.len());
            let b = p.body.get().as_ptr() as usize;
            assert!(b >= start && b + p.body.get().len() <= end, "body does not borrow from the line");
            // Only one endpoint's url can match.
            for other in Endpoint::ALL {
                if other != endpoint {
                    assert!(parse_line(line, other).is_err(), "a line matched two endpoints");
                }
            }
        }
    }
});
