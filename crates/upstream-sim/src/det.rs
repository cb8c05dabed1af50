//! Deterministic derivations used to build response bodies and to decide
//! per-request faults: a stable hash, word-count token estimates, synthetic
//! embeddings and scores, and random-looking ids.
//!
//! Everything here except [`random_hex32`] is a pure function of its input, so
//! tests in other crates can recompute what the simulator must have answered.

/// Dimension of the synthetic embedding vectors returned by `/v1/embeddings`.
pub const EMBEDDING_DIM: usize = 8;

/// FNV-1a (64-bit) of `bytes`. Stable across Rust versions and platforms.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The splitmix64 finalizer: spreads the entropy of `x` over all bits.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Stable, well-mixed 64-bit hash of `bytes` (FNV-1a followed by [`mix64`]).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    mix64(fnv1a64(bytes))
}

/// Maps a 64-bit value to an `f64` in `[0, 1)` with six decimal places.
///
/// The coarse grid keeps values short in JSON and makes them parse back to
/// exactly the same `f64` with any correct-enough JSON parser (serde_json
/// without `float_roundtrip` included), so tests can compare with `==`.
fn unit_f64(x: u64) -> f64 {
    (x % 1_000_000) as f64 / 1_000_000.0
}

/// Number of whitespace-separated words in `text` (the simulator's "tokenizer").
pub fn word_count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Prompt-token count for a set of input texts: `max(1, total words)`.
pub fn prompt_tokens<'a>(texts: impl IntoIterator<Item = &'a str>) -> u64 {
    texts.into_iter().map(word_count).sum::<u64>().max(1)
}

/// The synthetic embedding of `input`: [`EMBEDDING_DIM`] values in `[-1, 1)`
/// (multiples of 2e-6) derived from [`stable_hash`] of the input's UTF-8 bytes.
pub fn embedding_for(input: &str) -> Vec<f64> {
    let mut state = stable_hash(input.as_bytes());
    (0..EMBEDDING_DIM)
        .map(|_| {
            state = mix64(state);
            unit_f64(state) * 2.0 - 1.0
        })
        .collect()
}

/// The synthetic score of a pair, in `[0, 1)` with six decimals, derived from [`stable_hash`] of
/// `text_1` followed by `text_2`. Used by `/v1/score` and `/v1/rerank`
/// (`query`, document).
pub fn score_for(text_1: &str, text_2: &str) -> f64 {
    let mut bytes = Vec::with_capacity(text_1.len() + text_2.len());
    bytes.extend_from_slice(text_1.as_bytes());
    bytes.extend_from_slice(text_2.as_bytes());
    unit_f64(stable_hash(&bytes))
}

/// 32 random lowercase hex characters (not deterministic; used for ids).
pub fn random_hex32() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_are_deterministic_and_bounded() {
        let a = embedding_for("hello world");
        assert_eq!(a, embedding_for("hello world"));
        assert_ne!(a, embedding_for("hello world!"));
        assert_eq!(a.len(), EMBEDDING_DIM);
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
    }

    #[test]
    fn scores_and_tokens() {
        let s = score_for("a", "b");
        assert!((0.0..1.0).contains(&s));
        assert_eq!(s, score_for("a", "b"));
        assert_eq!(prompt_tokens(["", "  "]), 1);
        assert_eq!(prompt_tokens(["one two", "three"]), 3);
        assert_eq!(random_hex32().len(), 32);
    }
}
