//! API tokens as text: `skein_<id: 16 hex>_<secret: 64 hex>`. The id says
//! which stored token to compare with, so a check is one lookup; only the
//! SHA-256 of the secret is replicated, so neither a data directory nor a
//! backup holds a usable token.

use ring::rand::{SecureRandom, SystemRandom};

/// A token just made: `text` is shown once and never stored.
pub struct Issued {
    pub id: u64,
    pub text: String,
    pub hash: Vec<u8>,
}

const PREFIX: &str = "skein_";

/// A new token with a random id and a 256-bit random secret, from the
/// operating system's CSPRNG.
pub fn issue() -> Issued {
    let rng = SystemRandom::new();
    let mut bytes = [0u8; 40];
    // The OS generator fails only when the OS has none: nothing to fall back to.
    rng.fill(&mut bytes).expect("the operating system's random number generator failed");
    let id = u64::from_be_bytes(bytes[..8].try_into().unwrap_or_default());
    let secret = &bytes[8..];
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    Issued { id, hash: hash(&secret).to_vec(), text: format!("{PREFIX}{id:016x}_{secret}") }
}

/// The id and secret of a token's text, if it has a token's shape.
pub fn parse(text: &str) -> Option<(u64, &str)> {
    let rest = text.trim().strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 16 || secret.len() != 64 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((u64::from_str_radix(id, 16).ok()?, secret))
}

pub fn hash(secret: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Whether `secret` hashes to `stored`, in time independent of where they
/// differ.
pub fn matches(stored: &[u8], secret: &str) -> bool {
    let h = hash(secret);
    stored.len() == h.len() && stored.iter().zip(h.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_token_parses_back_and_matches_only_its_hash() {
        let t = issue();
        let (id, secret) = parse(&t.text).unwrap();
        assert_eq!(id, t.id);
        assert!(matches(&t.hash, secret));
        let other = issue();
        assert!(!matches(&other.hash, secret));
        assert!(!matches(&t.hash[..31], secret));
    }

    #[test]
    fn malformed_tokens_do_not_parse() {
        let t = issue();
        for bad in ["", "skein_", "bearer", &t.text[1..], &t.text[..t.text.len() - 1], &t.text.replace('_', "-")] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }
}
