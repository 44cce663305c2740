//! Parsing public recipients (age X25519, SSH ed25519/RSA) into age encryptors.
//! Owns the rule that a pasted private key is recognised and never echoed back.
//! Must not read files or identities (that is `deliver`'s job).

use std::str::FromStr;

/// Why a recipient string was refused. Never contains the input when it looks private.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipientError {
    #[error("this is a PRIVATE key, not a public recipient (its value is not shown)")]
    PrivateKey,
    #[error("not a valid age recipient: {0}")]
    InvalidAge(String),
    #[error("not a valid SSH public key: {0}")]
    InvalidSsh(String),
    #[error("unsupported recipient type (expected `age1...`, `ssh-ed25519 ...` or `ssh-rsa ...`)")]
    Unsupported,
}

/// True when the text looks like private key material of any kind we know.
pub fn looks_private(text: &str) -> bool {
    let t = text.trim_start();
    let upper = t.to_ascii_uppercase();
    upper.contains("AGE-SECRET-KEY-")
        || upper.contains("AGE-PLUGIN-")
        || upper.contains("PRIVATE KEY")
        || t.starts_with("-----BEGIN")
}

/// Remove the Unicode isolation marks the age crate puts in its messages.
pub fn clean_age_message(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '\u{2068}' | '\u{2069}'))
        .collect()
}

/// A parsed recipient ready to encrypt to.
#[derive(Clone)]
pub enum Parsed {
    X25519(age::x25519::Recipient),
    Ssh(age::ssh::Recipient),
}

impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Parsed::X25519(r) => write!(f, "X25519({r})"),
            Parsed::Ssh(_) => f.write_str("Ssh(..)"),
        }
    }
}

impl Parsed {
    pub fn as_recipient(&self) -> &dyn age::Recipient {
        match self {
            Parsed::X25519(r) => r,
            Parsed::Ssh(r) => r,
        }
    }
}

/// Parse one public recipient. Private keys are refused before any parser sees them,
/// because parser errors may echo their input.
pub fn parse(text: &str) -> Result<Parsed, RecipientError> {
    if looks_private(text) {
        return Err(RecipientError::PrivateKey);
    }
    let t = text.trim();
    if t.starts_with("age1") {
        return age::x25519::Recipient::from_str(t)
            .map(Parsed::X25519)
            .map_err(|e| RecipientError::InvalidAge(clean_age_message(e)));
    }
    if t.starts_with("ssh-ed25519 ") || t.starts_with("ssh-rsa ") {
        return age::ssh::Recipient::from_str(t)
            .map(Parsed::Ssh)
            .map_err(|e| {
                use age::ssh::ParseRecipientKeyError as E;
                RecipientError::InvalidSsh(match e {
                    E::Ignore => "ignored key type".into(),
                    E::Invalid(m) => clean_age_message(m),
                    E::RsaModulusTooLarge => "RSA modulus too large".into(),
                    E::RsaModulusTooSmall => {
                        "RSA modulus too small (use at least 2048 bits)".into()
                    }
                    E::Unsupported(kind) => format!("unsupported SSH key type {kind}"),
                    _ => "unrecognised SSH key".into(),
                })
            });
    }
    Err(RecipientError::Unsupported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_keys_are_refused_without_echo() {
        let private = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ";
        let err = parse(private).unwrap_err();
        assert_eq!(err, RecipientError::PrivateKey);
        assert!(!err.to_string().contains("QQQQ"));
    }

    #[test]
    fn a_real_age_recipient_parses() {
        let id = age::x25519::Identity::generate();
        let public = id.to_public().to_string();
        assert!(matches!(parse(&public), Ok(Parsed::X25519(_))));
        assert!(matches!(
            parse("age1notvalid"),
            Err(RecipientError::InvalidAge(_))
        ));
        assert!(matches!(parse("pgp:123"), Err(RecipientError::Unsupported)));
        assert!(matches!(
            parse("ssh-ed25519 AAAAnot"),
            Err(RecipientError::InvalidSsh(_))
        ));
    }
}
