//! SCRAM-SHA-256 verifiers (RFC 5802 / RFC 7677) as PostgreSQL stores them in
//! `pg_authid.rolpassword`, computed by keyward so that the server never sees a plaintext
//! password. Pure functions only; must not log or return the password.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The iteration count PostgreSQL uses by default (`scram_iterations`).
pub const ITERATIONS: u32 = 4096;

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    m.finalize().into_bytes().into()
}

/// The verifier for `password` with the given salt and iteration count:
/// `SCRAM-SHA-256$<iterations>:<b64 salt>$<b64 StoredKey>:<b64 ServerKey>`.
pub fn verifier_with(password: &str, salt: &[u8], iterations: u32) -> String {
    let mut salted = zeroize::Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2::<Hmac<Sha256>>(password.as_bytes(), salt, iterations, salted.as_mut())
        .expect("HMAC takes any key length");
    let client_key = zeroize::Zeroizing::new(hmac(salted.as_ref(), b"Client Key"));
    let stored_key = Sha256::digest(&client_key[..]);
    let server_key = hmac(salted.as_ref(), b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        B64.encode(salt),
        B64.encode(stored_key),
        B64.encode(server_key)
    )
}

/// A verifier for `password` with a fresh random 16-byte salt.
pub fn verifier(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    verifier_with(password, &salt, ITERATIONS)
}

/// Whether `text` has the shape of a SCRAM-SHA-256 verifier (and nothing else that could
/// break out of a quoted SQL literal).
pub fn is_verifier(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("SCRAM-SHA-256$") else {
        return false;
    };
    let b64 = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    };
    let mut parts = rest.split('$');
    let (Some(head), Some(keys), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let (Some((iter, salt)), Some((stored, server))) = (head.split_once(':'), keys.split_once(':'))
    else {
        return false;
    };
    iter.parse::<u32>().is_ok_and(|i| i > 0) && b64(salt) && b64(stored) && b64(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: user "user", password "pencil", salt "W22ZaJ0SNY7soEsUEjb6gQ==",
    /// 4096 iterations; its server-final message is `v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=`.
    /// Recomputing that server signature from our ServerKey proves the key derivation.
    #[test]
    fn matches_the_rfc_7677_example() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = verifier_with("pencil", &salt, 4096);
        assert!(is_verifier(&v), "{v}");
        let server_key = B64.decode(v.rsplit(':').next().unwrap()).unwrap();
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let sig = hmac(&server_key, auth_message.as_bytes());
        assert_eq!(
            B64.encode(sig),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn salts_differ_and_shapes_are_checked() {
        let (a, b) = (verifier("x"), verifier("x"));
        assert_ne!(a, b);
        assert!(is_verifier(&a));
        for bad in [
            "",
            "md5abc",
            "SCRAM-SHA-256$4096:c2FsdA==$a:b'; DROP",
            "SCRAM-SHA-256$x:a$b:c",
        ] {
            assert!(!is_verifier(bad), "{bad}");
        }
    }
}
