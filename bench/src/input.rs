//! Batch input files: seeded, with realistic token counts. Every line is a chat completion
//! whose only message is `words` space-separated English words (the simulator counts one
//! prompt token per word) and whose `max_tokens` is the completion length (the simulator
//! produces exactly that many tokens).
//!
//! Both counts are log-normal, clamped: `exp(ln(median) + sigma * z)`, `z` standard normal.
//! Two shapes: [`Shape::CHAT`] (prompts 50–1500 words, median 300; outputs 16–256 tokens,
//! median 96) for the saturation, overhead and scale-out runs, and [`Shape::COMPACT`]
//! (prompts 20–600 words, median 135; same outputs) whose ~1.1 kB lines give the ~1 GiB,
//! ~1M-line files of the ingest and memory runs.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// The model the simulator serves.
pub const MODEL: &str = "sim-model";

/// A clamped log-normal distribution.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct LogNormal {
    pub median: f64,
    pub sigma: f64,
    pub min: u64,
    pub max: u64,
}

impl LogNormal {
    fn sample(&self, rng: &mut StdRng) -> u64 {
        // Box–Muller: two uniforms give one standard normal.
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        ((self.median.ln() + self.sigma * z).exp().round() as u64).clamp(self.min, self.max)
    }
}

/// Prompt and completion length distributions.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Shape {
    pub prompt_words: LogNormal,
    pub max_tokens: LogNormal,
}

impl Shape {
    /// Chat-like requests: prompts median 300 words (50–1500), outputs median 96 tokens (16–256).
    pub const CHAT: Shape = Shape {
        prompt_words: LogNormal { median: 300.0, sigma: 0.8, min: 50, max: 1500 },
        max_tokens: LogNormal { median: 96.0, sigma: 0.6, min: 16, max: 256 },
    };
    /// Shorter prompts (median 135 words, 20–600): ~1.1 kB lines, so 1 GiB stays under the server's default 1,000,000-line limit.
    pub const COMPACT: Shape = Shape {
        prompt_words: LogNormal { median: 135.0, sigma: 0.6, min: 20, max: 600 },
        max_tokens: LogNormal { median: 96.0, sigma: 0.6, min: 16, max: 256 },
    };
}

/// A generated input file.
pub struct Input {
    pub path: PathBuf,
    pub requests: u64,
    pub bytes: u64,
    /// `(prompt_tokens, completion_tokens)` per line, in file order.
    pub jobs: Vec<(u64, u64)>,
}

impl Input {
    /// Summary statistics of the token counts, for the result files.
    pub fn summary(&self) -> serde_json::Value {
        let n = self.jobs.len().max(1) as f64;
        let prompt: u64 = self.jobs.iter().map(|j| j.0).sum();
        let completion: u64 = self.jobs.iter().map(|j| j.1).sum();
        serde_json::json!({
            "requests": self.requests,
            "bytes": self.bytes,
            "mean_prompt_tokens": prompt as f64 / n,
            "mean_completion_tokens": completion as f64 / n,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
        })
    }
}

/// Words the prompts are drawn from (common English words, ~5 bytes with the space).
const VOCABULARY: &[&str] = &[
    "the",
    "model",
    "answer",
    "question",
    "data",
    "please",
    "explain",
    "why",
    "which",
    "summary",
    "of",
    "and",
    "write",
    "a",
    "short",
    "story",
    "about",
    "compute",
    "table",
    "list",
    "every",
    "value",
    "with",
    "in",
    "text",
    "code",
    "function",
    "return",
    "error",
    "result",
    "user",
    "system",
    "time",
    "first",
    "second",
    "number",
    "to",
    "translate",
    "into",
    "French",
    "given",
    "context",
    "below",
    "document",
    "reply",
    "only",
    "format",
    "JSON",
    "step",
    "by",
    "think",
    "carefully",
    "check",
    "is",
    "this",
    "true",
    "false",
    "name",
    "city",
    "country",
    "year",
    "price",
    "review",
    "good",
];

/// Writes `requests` lines (or lines until the file reaches `target_bytes`, whichever is set)
/// to `path`, drawn from `shape` with RNG `seed`.
pub fn generate(
    path: &Path,
    shape: Shape,
    seed: u64,
    requests: Option<u64>,
    target_bytes: Option<u64>,
) -> Result<Input> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let (mut bytes, mut n) = (0u64, 0u64);
    let mut jobs = Vec::new();
    let mut line = String::with_capacity(16 * 1024);
    loop {
        if requests.is_some_and(|r| n >= r) || target_bytes.is_some_and(|b| bytes >= b) {
            break;
        }
        let words = shape.prompt_words.sample(&mut rng);
        let max_tokens = shape.max_tokens.sample(&mut rng);
        line.clear();
        line.push_str(&format!(
            r#"{{"custom_id":"req-{n:07}","method":"POST","url":"/v1/chat/completions","body":{{"model":"{MODEL}","messages":[{{"role":"user","content":""#
        ));
        for i in 0..words {
            if i > 0 {
                line.push(' ');
            }
            line.push_str(VOCABULARY[rng.random_range(0..VOCABULARY.len())]);
        }
        line.push_str(&format!(r#""}}],"max_tokens":{max_tokens}}}}}"#));
        line.push('\n');
        out.write_all(line.as_bytes())?;
        bytes += line.len() as u64;
        n += 1;
        jobs.push((words, max_tokens));
    }
    out.flush()?;
    Ok(Input { path: path.to_path_buf(), requests: n, bytes, jobs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_valid_batch_lines_with_the_drawn_counts() {
        let dir = std::env::temp_dir().join(format!("vllm-batch-bench-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = generate(&dir.join("in.jsonl"), Shape::CHAT, 7, Some(50), None).unwrap();
        let text = std::fs::read_to_string(&input.path).unwrap();
        assert_eq!(text.len() as u64, input.bytes);
        for (line, &(words, max_tokens)) in text.lines().zip(&input.jobs) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let content = v["body"]["messages"][0]["content"].as_str().unwrap();
            assert_eq!(content.split_whitespace().count() as u64, words);
            assert_eq!(v["body"]["max_tokens"], max_tokens);
            assert!((50..=1500).contains(&words) && (16..=256).contains(&max_tokens));
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
