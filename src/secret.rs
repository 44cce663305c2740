//! Secret generation and the recognisable secret format `kw_<env>_<id>_<body><crc>`.
//! Owns the only plaintext-secret type (`Secret`, zeroized, never printable by accident).
//! Must not write secrets anywhere: callers seal them (deliver) or hash them (store).

use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::model::SecretHash;

const PREFIX: &str = "kw";
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// 32 random bytes in base32 without padding.
pub const BODY_LEN: usize = 52;
const CRC_LEN: usize = 8;
const ID_LEN: usize = 16;

/// A plaintext secret. Debug prints `<redacted>`; the text is only reachable through
/// `expose()`, which callers use to seal or hash it, never to print it.
pub struct Secret(SecretString);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    pub fn from_string(s: String) -> Secret {
        Secret(SecretString::from(s))
    }
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
    /// The hash that stores receive.
    pub fn hash(&self) -> SecretHash {
        hash_presented(self.expose())
    }
}

/// SHA-256 (hex) of a presented secret string.
pub fn hash_presented(s: &str) -> SecretHash {
    SecretHash(hex::encode(Sha256::digest(s.as_bytes())))
}

fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let mut buf: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Short environment tag used in the secret prefix.
pub fn env_tag(environment: &str) -> String {
    match environment {
        "production" => "prod".into(),
        "sandbox" => "sbx".into(),
        other => {
            let t: String = other
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(8)
                .collect();
            if t.is_empty() {
                "env".into()
            } else {
                t.to_ascii_lowercase()
            }
        }
    }
}

/// A new random key id (16 base32 characters, 80 bits).
pub fn new_key_id() -> String {
    let mut b = [0u8; 10];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base32(&b)
}

fn checksum(s: &str) -> String {
    format!("{:08x}", crc32fast::hash(s.as_bytes()))
}

/// Generate a new secret for key `id` in `environment`: 32 bytes from the OS RNG.
pub fn generate(environment: &str, id: &str) -> Secret {
    let mut raw = zeroize::Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(raw.as_mut());
    let body = zeroize::Zeroizing::new(base32(raw.as_ref()));
    let mut s = format!("{PREFIX}_{}_{id}_{}", env_tag(environment), body.as_str());
    let crc = checksum(&s);
    s.push_str(&crc);
    Secret::from_string(s)
}

/// The public parts of a well-formed secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub env_tag: String,
    pub id: String,
}

/// Check prefix, shape and checksum without any lookup. Never includes the input in errors.
pub fn parse(presented: &str) -> Option<Parsed> {
    let s = presented.trim();
    if s.len() > 200 || !s.is_ascii() {
        return None;
    }
    let mut parts = s.splitn(4, '_');
    let (p, env, id, tail) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if p != PREFIX || env.is_empty() || id.len() != ID_LEN || tail.len() != BODY_LEN + CRC_LEN {
        return None;
    }
    // The alphabet is a-z and 2-7 (checked by a test below).
    let ok_chars = |x: &str| {
        x.bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
    };
    if !ok_chars(id)
        || !ok_chars(&tail[..BODY_LEN])
        || !env.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return None;
    }
    let (head, crc) = s.split_at(s.len() - CRC_LEN);
    if checksum(head) != crc {
        return None;
    }
    Some(Parsed {
        env_tag: env.to_string(),
        id: id.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alphabet_check_in_parse_matches_the_alphabet() {
        for b in 0u8..=255 {
            let fast = b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b);
            assert_eq!(fast, ALPHABET.contains(&b), "byte {b}");
        }
    }

    #[test]
    fn generated_secrets_parse_and_carry_their_id() {
        let id = new_key_id();
        let s = generate("production", &id);
        let p = parse(s.expose()).expect("well-formed");
        assert_eq!(p.id, id);
        assert_eq!(p.env_tag, "prod");
        assert!(s.expose().starts_with("kw_prod_"));
    }

    #[test]
    fn a_flipped_character_fails_the_checksum() {
        let s = generate("sandbox", &new_key_id());
        let mut bytes = s.expose().as_bytes().to_vec();
        let i = bytes.len() - 20;
        bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
        assert!(parse(std::str::from_utf8(&bytes).unwrap()).is_none());
        assert!(parse("kw_prod_short").is_none());
        assert!(parse("").is_none());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = generate("sandbox", &new_key_id());
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert!(!format!("{:?}", s.hash()).contains(&s.hash().0));
    }

    #[test]
    fn two_secrets_differ() {
        let id = new_key_id();
        assert_ne!(
            generate("production", &id).expose(),
            generate("production", &id).expose()
        );
    }
}
