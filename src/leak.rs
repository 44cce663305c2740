//! Secret-shaped text: the one list of formats keyward refuses to keep or show (its own
//! `kw_` secrets, age and SSH/PEM private keys, Alma/Primo API keys, and the token formats
//! secret scanners know) and the redaction every output goes through.
//! Must not do I/O, and must never hand the matched text itself to a caller.

use std::sync::OnceLock;

use regex::{Regex, RegexSet};

/// What a secret-shaped string looks like. Its description names the format, never the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// keyward's own `kw_<env>_<id>_<body><crc>`.
    Keyward,
    /// `AGE-SECRET-KEY-1...` or an `AGE-PLUGIN-...` identity.
    AgeIdentity,
    /// A PEM, OpenSSH or PuTTY private key.
    PrivateKey,
    /// Ex Libris Alma/Primo API key (`l7xx` and 32 hex digits).
    AlmaPrimo,
    GitHub,
    GitLab,
    Aws,
    Slack,
    Stripe,
    Google,
    Jwt,
    Npm,
    PyPi,
    SendGrid,
    OpenAi,
}

impl Kind {
    /// "a GitHub token", for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Keyward => "a keyward secret (kw_...)",
            Kind::AgeIdentity => "an age private key (AGE-SECRET-KEY-...)",
            Kind::PrivateKey => "a private key (PEM/OpenSSH/PuTTY)",
            Kind::AlmaPrimo => "an Alma/Primo API key (l7xx...)",
            Kind::GitHub => "a GitHub token",
            Kind::GitLab => "a GitLab token",
            Kind::Aws => "an AWS access key id",
            Kind::Slack => "a Slack token or webhook",
            Kind::Stripe => "a Stripe secret key",
            Kind::Google => "a Google API key",
            Kind::Jwt => "a JSON Web Token",
            Kind::Npm => "an npm token",
            Kind::PyPi => "a PyPI token",
            Kind::SendGrid => "a SendGrid API key",
            Kind::OpenAi => "an OpenAI/Anthropic API key",
        }
    }

    /// Private key material (an identity that decrypts deliveries), not a bearer token.
    pub fn is_private_key(self) -> bool {
        matches!(self, Kind::AgeIdentity | Kind::PrivateKey)
    }
}

/// The body of a PEM block: base64, whitespace, and `\n` as JSON writes it. A header
/// line such as `Proc-Type:` ends it early, which only ever redacts less than the block;
/// the BEGIN line alone is enough to refuse it.
const PEM_BODY: &str = r"(?:[A-Za-z0-9+/=\s]|\\[nr])*";

fn patterns() -> Vec<(Kind, String)> {
    let pem = "-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----";
    let pem_end = "-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----";
    vec![
        (
            Kind::Keyward,
            r"kw_[a-z0-9]{1,16}_[a-z2-7]{16}_[a-z2-7]{40,}[0-9a-f]{0,8}".into(),
        ),
        (Kind::AgeIdentity, r"(?i)AGE-SECRET-KEY-1[0-9A-Z]*".into()),
        (Kind::AgeIdentity, r"(?i)AGE-PLUGIN-[0-9A-Z_.-]+".into()),
        (Kind::PrivateKey, format!("{pem}{PEM_BODY}(?:{pem_end})?")),
        (Kind::PrivateKey, r"PuTTY-User-Key-File-[0-9]+:.*".into()),
        (Kind::AlmaPrimo, r"\bl7xx[0-9a-f]{32}".into()),
        (
            Kind::GitHub,
            r"\b(?:ghp|gho|ghu|ghs|ghr)_[0-9A-Za-z]{36,}".into(),
        ),
        (Kind::GitHub, r"\bgithub_pat_[0-9A-Za-z_]{40,}".into()),
        (Kind::GitLab, r"\bglpat-[0-9A-Za-z_-]{20,}".into()),
        (Kind::Aws, r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b".into()),
        (Kind::Slack, r"\bxox[abposre]-[0-9A-Za-z-]{10,}".into()),
        (
            Kind::Slack,
            r"hooks\.slack\.com/services/T[0-9A-Z]+/B[0-9A-Z]+/[0-9A-Za-z]+".into(),
        ),
        (
            Kind::Stripe,
            r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}".into(),
        ),
        (Kind::Google, r"\bAIza[0-9A-Za-z_-]{35}".into()),
        (
            Kind::Jwt,
            r"\beyJ[0-9A-Za-z_-]{8,}\.eyJ[0-9A-Za-z_-]{8,}\.[0-9A-Za-z_-]{8,}".into(),
        ),
        (Kind::Npm, r"\bnpm_[0-9A-Za-z]{36}".into()),
        (
            Kind::PyPi,
            r"\bpypi-AgEIcHlwaS5vcmc[0-9A-Za-z_-]{50,}".into(),
        ),
        (
            Kind::SendGrid,
            r"\bSG\.[0-9A-Za-z_-]{22}\.[0-9A-Za-z_-]{43}".into(),
        ),
        (
            Kind::OpenAi,
            r"\bsk-(?:proj-|ant-[a-z0-9]+-)[0-9A-Za-z_-]{32,}|\bsk-[0-9A-Za-z]{48}\b".into(),
        ),
    ]
}

struct Compiled {
    set: RegexSet,
    each: Vec<(Kind, Regex)>,
}

fn compiled() -> &'static Compiled {
    static C: OnceLock<Compiled> = OnceLock::new();
    C.get_or_init(|| {
        let p = patterns();
        // The patterns are constants checked by the tests below.
        let set =
            RegexSet::new(p.iter().map(|(_, r)| r.as_str())).unwrap_or_else(|_| RegexSet::empty());
        let each = p
            .into_iter()
            .filter_map(|(k, r)| Regex::new(&r).ok().map(|re| (k, re)))
            .collect();
        Compiled { set, each }
    })
}

/// One secret-shaped string in a text: what it looks like and where (byte range). The
/// range is for locating and cutting it out; callers must not show what it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

/// Every secret-shaped string in `text`, in order, overlaps merged (the earlier wins).
pub fn find(text: &str) -> Vec<Found> {
    let c = compiled();
    let hits = c.set.matches(text);
    if !hits.matched_any() {
        return Vec::new();
    }
    let mut all: Vec<Found> = hits
        .iter()
        .flat_map(|i| {
            let (kind, re) = &c.each[i];
            re.find_iter(text).map(move |m| Found {
                kind: *kind,
                start: m.start(),
                end: m.end(),
            })
        })
        .collect();
    all.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end)));
    let mut out: Vec<Found> = Vec::with_capacity(all.len());
    for f in all {
        match out.last_mut() {
            Some(last) if f.start < last.end => last.end = last.end.max(f.end),
            _ => out.push(f),
        }
    }
    out
}

/// Does `text` hold anything secret-shaped?
pub fn contains(text: &str) -> bool {
    compiled().set.is_match(text)
}

/// The first secret-shaped string's kind, if any.
pub fn first_kind(text: &str) -> Option<Kind> {
    find(text).first().map(|f| f.kind)
}

/// `text` with every secret-shaped string replaced by `<redacted>`.
pub fn redact(text: &str) -> String {
    let found = find(text);
    if found.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in found {
        out.push_str(&text[at..f.start]);
        out.push_str("<redacted>");
        at = f.end;
    }
    out.push_str(&text[at..]);
    out
}

/// 1-based line numbers of `text` that any secret-shaped string touches (a PEM block
/// covers all its lines), so a caret rendering can withhold them.
pub fn lines_touched(text: &str) -> std::collections::BTreeSet<usize> {
    let mut lines = std::collections::BTreeSet::new();
    for f in find(text) {
        let first = line_of(text, f.start);
        let last = line_of(text, f.end.saturating_sub(1).max(f.start));
        lines.extend(first..=last);
    }
    lines
}

/// 1-based line and column (in characters) of byte offset `at`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn line_of(text: &str, at: usize) -> usize {
    line_col(text, at).0
}

/// Replace every secret-shaped string inside the strings (and object keys) of `v` with
/// `<redacted>`. Returns whether anything changed. (Redacting serialised JSON text could
/// miss a secret that follows an escape such as `\n`; this works on the values.)
pub fn redact_json(v: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::String(s) if contains(s) => {
            *s = redact(s);
            true
        }
        Value::Array(a) => a.iter_mut().fold(false, |acc, x| redact_json(x) | acc),
        Value::Object(o) => {
            let keys: Vec<String> = o.keys().filter(|k| contains(k)).cloned().collect();
            let changed = !keys.is_empty();
            for k in keys {
                if let Some(x) = o.remove(&k) {
                    o.insert(redact(&k), x);
                }
            }
            o.values_mut().fold(changed, |acc, x| redact_json(x) | acc)
        }
        _ => false,
    }
}

/// Pretty JSON of `value` with every secret-shaped string redacted. Output is the plain
/// serialisation whenever nothing secret-shaped is in it.
pub fn to_json_pretty<T: serde::Serialize>(value: &T) -> serde_json::Result<String> {
    let text = serde_json::to_string_pretty(value)?;
    if !contains(&text) && !text.contains('\\') {
        return Ok(text);
    }
    let mut v = serde_json::to_value(value)?;
    if redact_json(&mut v) {
        serde_json::to_string_pretty(&v)
    } else {
        Ok(text)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One sample per format, built at run time (so this file holds no literal token).
    pub(crate) fn samples() -> Vec<(Kind, String)> {
        let r = |c: &str, n: usize| c.repeat(n);
        let kw = crate::secret::generate("production", &crate::secret::new_key_id());
        vec![
            (
                Kind::Keyward,
                crate::secret::Secret::expose(&kw).to_string(),
            ),
            (Kind::AgeIdentity, format!("AGE-SECRET-KEY-1{}", r("Q", 58))),
            (
                Kind::AgeIdentity,
                format!("AGE-PLUGIN-YUBIKEY-1{}", r("Q", 30)),
            ),
            (
                Kind::PrivateKey,
                format!(
                    "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n{}\n-----END OPENSSH PRIVATE KEY-----",
                    r("b3Bl", 17),
                    r("QUFB", 10)
                ),
            ),
            (
                Kind::PrivateKey,
                format!("-----BEGIN RSA PRIVATE KEY-----{}", r("A", 40)),
            ),
            (Kind::AlmaPrimo, format!("l7xx{}", r("0123456789abcdef", 2))),
            (Kind::GitHub, format!("ghp_{}", r("aB3", 12))),
            (Kind::GitHub, format!("gho_{}", r("aB3", 12))),
            (
                Kind::GitHub,
                format!("github_pat_11{}_{}", r("A", 20), r("b", 59)),
            ),
            (Kind::GitLab, format!("glpat-{}", r("x1", 10))),
            (Kind::Aws, format!("AKIA{}", r("Z7", 8))),
            (Kind::Slack, format!("xoxb-{}-{}", r("1", 12), r("aZ", 12))),
            (Kind::Stripe, format!("sk_live_{}", r("4eC3", 6))),
            (Kind::Google, format!("AIza{}", r("Sy", 17) + "A")),
            (
                Kind::Jwt,
                format!("eyJhbGciOiJIUzI1NiJ9.eyJ{}.{}", r("zdWIi", 4), r("Sf1", 10)),
            ),
            (Kind::Npm, format!("npm_{}", r("a1", 18))),
            (Kind::SendGrid, format!("SG.{}.{}", r("a", 22), r("b", 43))),
            (Kind::OpenAi, format!("sk-proj-{}", r("Ab9", 12))),
        ]
    }

    #[test]
    fn every_pattern_compiles() {
        let c = compiled();
        assert_eq!(c.each.len(), patterns().len());
        assert_eq!(c.set.len(), patterns().len());
    }

    #[test]
    fn every_format_is_found_in_context_and_redacted() {
        for (kind, s) in samples() {
            for text in [
                s.clone(),
                format!("purpose: use {s} here"),
                format!("\"{s}\","),
                format!("x={s}\n"),
            ] {
                let f = find(&text);
                assert_eq!(f.len(), 1, "{kind:?} in {text:?}");
                assert_eq!(f[0].kind, kind, "{text:?}");
                let r = redact(&text);
                assert!(
                    r.contains("<redacted>") && !r.contains(&s[s.len() - 12..]),
                    "{r}"
                );
            }
        }
    }

    #[test]
    fn public_and_ordinary_text_is_left_alone() {
        let age_pub = age::x25519::Identity::generate().to_public().to_string();
        for text in [
            age_pub.as_str(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ0h5sH9dOn8ZmE5tQ2Hq0L7K2eXv9lJjwR3v7jA0b6c jdoe@laptop",
            "Never paste the AGE-SECRET-KEY line; a PRIVATE key was pasted",
            "-----BEGIN AGE ENCRYPTED FILE-----",
            "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "kw_prod_short key name illiad-barcode-lookup ticket LSIS-1234",
            "l7xx-is-a-prefix, sk_live_ alone, ghp_ alone, AKIA alone",
            "twy3p45kv3zsagrq 2027-06-30T00:00:00Z",
        ] {
            assert!(find(text).is_empty(), "{text}");
            assert_eq!(redact(text), text);
        }
    }

    #[test]
    fn lines_and_columns_point_at_the_start() {
        let (_, s) = &samples()[5];
        let text = format!("a: 1\nb: [x, {s}]\n");
        let f = find(&text);
        assert_eq!(line_col(&text, f[0].start), (2, 8));
        let (_, pem) = &samples()[3];
        let t = format!("k: |\n  {}\nz: 1\n", pem.replace('\n', "\n  "));
        assert_eq!(
            lines_touched(&t).into_iter().collect::<Vec<_>>(),
            vec![2, 3, 4, 5]
        );
    }

    #[test]
    fn json_values_are_redacted_even_after_an_escape() {
        let (_, s) = &samples()[10];
        let mut v = serde_json::json!({ "a": [format!("line\n{s}")], s.clone(): 1 });
        let text = to_json_pretty(&v).unwrap_or_default();
        assert!(
            !text.contains(s.as_str()) && text.contains("<redacted>"),
            "{text}"
        );
        assert!(redact_json(&mut v));
        let plain = serde_json::json!({ "b": "nothing\nhere" });
        assert_eq!(
            to_json_pretty(&plain).ok(),
            serde_json::to_string_pretty(&plain).ok()
        );
    }
}
