//! The shape of a pasted console value: one line, the vendor's format (Alma/Primo: `l7xx`
//! and 32 lowercase hex digits; generic: the store's `secret_pattern`), and not something
//! else pasted by mistake (an age or SSH private key, a keyward secret, another vendor's
//! key). Must never put the value into a message: errors say what is wrong, not what it was.

use super::preset::{Preset, SecretRule, Vendor, preset};
use crate::leak::Kind;

/// Longest value accepted from a console.
pub const MAX_VALUE_LEN: usize = 1024;
/// Shortest value accepted where the vendor documents no format.
pub const MIN_VALUE_LEN: usize = 8;

/// Why a pasted value was refused. Display never includes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("nothing was pasted")]
    Empty,
    #[error("several lines were pasted; paste only the key, on one line")]
    MultiLine,
    #[error(
        "that is an age private key (AGE-SECRET-KEY-...), not a key from the console; it was not kept"
    )]
    AgeKey,
    #[error("that is a private key (-----BEGIN ...), not a key from the console; it was not kept")]
    PrivateKey,
    #[error("that is a keyward secret (kw_...), not a key from the console")]
    KeywardSecret,
    #[error("that looks like {0} key, not {1} key")]
    OtherVendor(&'static str, &'static str),
    #[error("that is not {what}: expected {expected}")]
    Mismatch { what: String, expected: String },
    #[error("that is longer than {MAX_VALUE_LEN} characters")]
    TooLong,
    #[error("that contains spaces or control characters; paste only the key")]
    Whitespace,
    #[error(
        "that value is already recorded for `{0}` (an old value?); paste the one the console shows now"
    )]
    AlreadyRecorded(String),
}

/// How a vendor's key is named in messages ("an Alma", "an OpenAthens").
fn article(v: Vendor) -> &'static str {
    match v {
        Vendor::Alma => "an Alma",
        Vendor::Primo => "a Primo",
        Vendor::OpenAthens => "an OpenAthens",
        Vendor::Alm => "an ALM",
        Vendor::Generic => "a console",
    }
}

/// Check `pasted` (surrounding whitespace is ignored) against `p`; `store_pattern` is the
/// store's compiled `secret_pattern` for vendor `generic`. Returns the trimmed value.
pub fn check<'a>(
    p: &Preset,
    store_pattern: Option<&regex::Regex>,
    pasted: &'a str,
) -> Result<&'a str, ShapeError> {
    let v = pasted.trim();
    if v.is_empty() {
        return Err(ShapeError::Empty);
    }
    if v.contains('\n') || v.contains('\r') {
        return Err(ShapeError::MultiLine);
    }
    let upper = v.to_ascii_uppercase();
    let kind = crate::leak::first_kind(v);
    if kind == Some(Kind::AgeIdentity) {
        return Err(ShapeError::AgeKey);
    }
    if kind == Some(Kind::PrivateKey)
        || upper.contains("-----BEGIN")
        || upper.contains("PRIVATE KEY")
    {
        return Err(ShapeError::PrivateKey);
    }
    if v.len() > MAX_VALUE_LEN {
        return Err(ShapeError::TooLong);
    }
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ShapeError::Whitespace);
    }
    if kind == Some(Kind::Keyward) || v.starts_with("kw_") {
        return Err(ShapeError::KeywardSecret);
    }
    let mismatch = || ShapeError::Mismatch {
        what: format!("{} key", article(p.vendor)),
        expected: p.secret_example.clone(),
    };
    match &p.secret {
        SecretRule::Pattern(re) => re.is_match(v).then_some(v).ok_or_else(mismatch),
        SecretRule::FromStore => match store_pattern {
            Some(re) if re.is_match(v) => Ok(v),
            _ => Err(mismatch()),
        },
        SecretRule::Any => {
            if let Some(other) = other_vendor(p.vendor, v) {
                return Err(ShapeError::OtherVendor(article(other), article(p.vendor)));
            }
            if v.len() < MIN_VALUE_LEN {
                return Err(mismatch());
            }
            Ok(v)
        }
    }
}

/// A vendor with a known format (other than `mine`) whose format `v` has.
fn other_vendor(mine: Vendor, v: &str) -> Option<Vendor> {
    Vendor::ALL.into_iter().find(|o| {
        *o != mine && matches!(&preset(*o).secret, SecretRule::Pattern(re) if re.is_match(v))
    })
}

/// Compile a store's `secret_pattern` (already validated by the spec) for whole-value match.
pub fn store_pattern(pattern: Option<&str>) -> Option<regex::Regex> {
    regex::RegexBuilder::new(&format!("^(?:{})$", pattern?))
        .size_limit(1 << 20)
        .build()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alma_key() -> String {
        format!("l7xx{}", "9f86d081884c7d659a2feaa0c55ad015")
    }

    #[test]
    fn alma_values_have_one_shape_and_mistakes_are_named() {
        let alma = preset(Vendor::Alma);
        let k = alma_key();
        assert_eq!(check(alma, None, &format!("  {k}\n")), Ok(k.as_str()));
        assert_eq!(check(alma, None, ""), Err(ShapeError::Empty));
        assert_eq!(
            check(alma, None, &format!("{k}\n{k}")),
            Err(ShapeError::MultiLine)
        );
        let age = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ";
        assert_eq!(check(alma, None, age), Err(ShapeError::AgeKey));
        assert!(matches!(
            check(alma, None, &k.to_uppercase()),
            Err(ShapeError::Mismatch { .. })
        ));
        assert!(matches!(
            check(alma, None, &k[..20]),
            Err(ShapeError::Mismatch { .. })
        ));
        let kw = crate::secret::generate("production", &crate::secret::new_key_id());
        assert_eq!(
            check(alma, None, kw.expose()),
            Err(ShapeError::KeywardSecret)
        );
        for e in [
            check(alma, None, &k[..20]).unwrap_err(),
            check(alma, None, age).unwrap_err(),
        ] {
            assert!(
                !e.to_string().contains(&k[..20]) && !e.to_string().contains("1QQQQ"),
                "{e}"
            );
        }
    }

    #[test]
    fn vendors_without_a_format_refuse_another_vendors_key() {
        let oa = preset(Vendor::OpenAthens);
        assert_eq!(
            check(oa, None, &alma_key()),
            Err(ShapeError::OtherVendor("an Alma", "an OpenAthens"))
        );
        assert!(check(oa, None, "3c1f0e2a-77b9-4d1e-9a55-0f6d2b8c4e11").is_ok());
        assert!(matches!(
            check(oa, None, "short"),
            Err(ShapeError::Mismatch { .. })
        ));
        assert_eq!(check(oa, None, "two words"), Err(ShapeError::Whitespace));
    }

    #[test]
    fn a_generic_console_uses_the_stores_pattern() {
        let g = preset(Vendor::Generic);
        let re = store_pattern(Some("gk_[A-Za-z0-9]{20}"));
        assert!(check(g, re.as_ref(), "gk_abcdefghij0123456789").is_ok());
        assert!(check(g, re.as_ref(), "gk_abc").is_err());
        assert!(
            check(g, None, "gk_abcdefghij0123456789").is_err(),
            "no pattern: refused"
        );
    }
}
