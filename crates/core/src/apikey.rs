//! API keys: `sk-vb-` + 48 hex digits, shown once at creation. Only a salted SHA-256 of the key is
//! stored; its first 8 digits (the prefix) find the record without scanning.

use sha2::{Digest, Sha256};

/// What every key starts with.
pub const KEY_PREFIX: &str = "sk-vb-";
const PREFIX_DIGITS: usize = 8;

/// A freshly generated key: the secret (to show once) and what is stored.
pub struct GeneratedKey {
    pub secret: String,
    pub prefix: String,
    pub salt: String,
    pub hash: String,
}

fn random_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Makes a new random key.
pub fn generate() -> GeneratedKey {
    let body: String = format!("{}{}", random_hex(), random_hex()).chars().take(48).collect();
    let secret = format!("{KEY_PREFIX}{body}");
    let salt = random_hex();
    let hash = hash(&salt, &secret);
    GeneratedKey { prefix: body[..PREFIX_DIGITS].to_string(), secret, salt, hash }
}

/// The lookup prefix of a presented key, or `None` when it cannot be one of ours.
pub fn prefix_of(presented: &str) -> Option<&str> {
    let body = presented.strip_prefix(KEY_PREFIX)?;
    (body.len() == 48 && body.bytes().all(|b| b.is_ascii_hexdigit())).then(|| &body[..PREFIX_DIGITS])
}

/// The stored hash of `key` under `salt` (hex SHA-256 of salt ‖ key).
pub fn hash(salt: &str, key: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(key.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `presented` hashes to `stored` under `salt`, in time independent of where they differ.
pub fn verify(presented: &str, salt: &str, stored: &str) -> bool {
    constant_time_eq(&hash(salt, presented), stored)
}

/// String equality whose time does not depend on where the strings differ (for secrets).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How a key is shown after creation: its prefix, never the secret.
pub fn display(prefix: &str) -> String {
    format!("{KEY_PREFIX}{prefix}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_verify_and_others_do_not() {
        let k = generate();
        assert!(k.secret.starts_with("sk-vb-") && k.secret.len() == 6 + 48);
        assert_eq!(prefix_of(&k.secret), Some(k.prefix.as_str()));
        assert!(verify(&k.secret, &k.salt, &k.hash));
        let other = generate();
        assert!(!verify(&other.secret, &k.salt, &k.hash));
        assert_eq!(prefix_of("sk-vb-short"), None);
        assert_eq!(prefix_of("Bearer x"), None);
        assert_ne!(k.hash, hash(&other.salt, &k.secret), "salted");
    }
}
