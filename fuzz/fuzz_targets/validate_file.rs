//! Fuzzes a whole input file through the validator's per-line pipeline: `LineReader` (bounded
//! line length, byte offsets) → `trim_line` → `is_blank` → `parse_line`, over an in-memory
//! reader with a tiny buffer so lines straddle reads.
//!
//! The validator's own loop needs a store, so this drives the same calls in the same order and
//! checks what the chunker relies on: line numbers count up from 1, each line starts where the
//! previous one ended, the lengths add up to the input, content is the input's bytes less the
//! `\n`, and no line over the limit is ever handed out.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tokio::io::BufReader;
use tokio::runtime::Runtime;
use vllm_batch_core::line::{is_blank, parse_line, trim_line};
use vllm_batch_core::Endpoint;
use vllm_batch_store::LineReader;

/// The limit the reader enforces here; small so the fuzzer reaches it easily.
const MAX_LINE: usize = 64;

/// A last line without a trailing `\n` may be one byte over `MAX_LINE`: `LineReader` compares
/// the limit against the line *including* its newline, which such a line lacks. Reported; set
/// to 0 once `LineReader` counts content bytes only.
const UNTERMINATED_LAST_LINE_SLACK: usize = 0;

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("runtime"))
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read buffer's size (1..=16 bytes); the rest is the file.
    let Some((&knob, file)) = data.split_first() else { return };
    let capacity = 1 + (knob as usize % 16);
    runtime().block_on(async {
        let mut lines = LineReader::new(BufReader::with_capacity(capacity, file), MAX_LINE);
        let mut expected_number = 1;
        let mut expected_offset = 0u64;
        while let Some(line) = lines.next_line().await.expect("reading memory cannot fail") {
            assert_eq!(line.number, expected_number, "line numbers count up from 1");
            assert_eq!(line.offset, expected_offset, "each line starts where the previous ended");
            assert!(line.len > 0, "an empty line still consumes its newline");
            let (start, end) = (line.offset as usize, (line.offset + line.len) as usize);
            assert!(end <= file.len(), "a line reaches past the input");
            let raw = &file[start..end];
            let terminated = raw.last() == Some(&b'\n');
            assert!(terminated || end == file.len(), "only the last line may lack its newline");
            assert!(!raw[..raw.len() - terminated as usize].contains(&b'\n'), "a line holds a newline");
            let text = &raw[..raw.len() - terminated as usize];
            match line.content {
                Some(content) => {
                    assert_eq!(content, text, "content is the line's bytes less its newline");
                    let slack = if terminated { 0 } else { UNTERMINATED_LAST_LINE_SLACK };
                    assert!(content.len() <= MAX_LINE + slack, "a line over the limit was handed out");
                    let content = trim_line(content, line.number == 1);
                    if !is_blank(content) {
                        if let Ok(p) = parse_line(content, Endpoint::ChatCompletions) {
                            assert!(!p.custom_id.is_empty());
                        }
                    }
                }
                None => assert!(text.len() > MAX_LINE, "a line within the limit was refused as too long"),
            }
            expected_number += 1;
            expected_offset += line.len;
        }
        assert_eq!(expected_offset, file.len() as u64, "line lengths add up to the input");
    });
});
