//! The envelope: the small JSON document sealed inside every `.age` delivery, and the pure
//! output helpers (`--format raw|env|json`) for a decrypted one.
//! Owns the envelope's field names (they are a public interface: `jq -r .secret`).
//! Must not do I/O; the secret only ever lives in zeroizing buffers and `Secret`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::secret::Secret;

/// Version written into every envelope (`envelope_version`).
pub const ENVELOPE_VERSION: u32 = 1;

fn default_version() -> u32 {
    ENVELOPE_VERSION
}

/// JSON Schema of the envelope document inside every `.age` delivery.
pub fn envelope_schema() -> serde_json::Value {
    schemars::schema_for!(Envelope).to_value()
}

/// Everything in an envelope except the secret. Safe to print and log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeMeta {
    /// The key's name in the spec.
    pub key: String,
    /// The store (from keyward.yaml) the key lives in.
    pub store: String,
    /// The key id (client id), stable across rotations.
    pub id: String,
    /// Delivery generation (1 for a new key, +1 per rotation).
    pub generation: u32,
    pub expires_at: Option<DateTime<Utc>>,
    /// Until when the previous generation's secret still verifies (rotation grace).
    pub previous_valid_until: Option<DateTime<Utc>>,
    /// The client id a vendor console shows with the secret (OpenText ALM), which the
    /// recipient presents with it; not secret. None for every other key.
    pub client_id: Option<String>,
}

/// The secret inside an envelope: zeroized on drop, `Debug` prints `<redacted>`.
pub struct EnvelopeSecret(Zeroizing<String>);

impl EnvelopeSecret {
    /// Copy a secret into an exactly-sized buffer (so no reallocation leaves copies behind).
    fn copy_of(s: &str) -> Self {
        let mut buf = String::with_capacity(s.len());
        buf.push_str(s);
        EnvelopeSecret(Zeroizing::new(buf))
    }
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }
    /// Move the text into a `Secret` without copying it.
    pub fn into_secret(mut self) -> Secret {
        Secret::from_string(std::mem::take(&mut *self.0))
    }
}

impl std::fmt::Debug for EnvelopeSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for EnvelopeSecret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for EnvelopeSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = EnvelopeSecret;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EnvelopeSecret, E> {
                Ok(EnvelopeSecret::copy_of(v))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<EnvelopeSecret, E> {
                let mut v = Zeroizing::new(v);
                Ok(EnvelopeSecret(Zeroizing::new(std::mem::take(&mut *v))))
            }
        }
        d.deserialize_str(V)
    }
}

/// The JSON document sealed in every delivery:
/// `{"key","store","id","generation","secret","expires_at","previous_valid_until","envelope_version"}`,
/// and `"client_id"` for a key whose console shows one with the secret (OpenText ALM).
/// `Debug` never shows the secret.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Envelope {
    pub key: String,
    pub store: String,
    pub id: String,
    pub generation: u32,
    #[schemars(with = "String")]
    pub secret: EnvelopeSecret,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub previous_valid_until: Option<DateTime<Utc>>,
    /// The client id the vendor console showed with the secret (OpenText ALM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default = "default_version")]
    pub envelope_version: u32,
}

/// Borrowed form used for sealing, so the secret is never copied into another `String`.
#[derive(Serialize)]
pub(crate) struct EnvelopeRef<'a> {
    key: &'a str,
    store: &'a str,
    id: &'a str,
    generation: u32,
    secret: &'a str,
    expires_at: Option<DateTime<Utc>>,
    previous_valid_until: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    envelope_version: u32,
}

impl<'a> EnvelopeRef<'a> {
    pub(crate) fn new(meta: &'a EnvelopeMeta, secret: &'a str) -> Self {
        EnvelopeRef {
            key: &meta.key,
            store: &meta.store,
            id: &meta.id,
            generation: meta.generation,
            secret,
            expires_at: meta.expires_at,
            previous_valid_until: meta.previous_valid_until,
            client_id: meta.client_id.as_deref(),
            envelope_version: ENVELOPE_VERSION,
        }
    }

    /// Serialize into a zeroizing buffer sized up front (no reallocation copies).
    pub(crate) fn to_json(&self) -> Result<Zeroizing<Vec<u8>>, serde_json::Error> {
        let mut buf = Zeroizing::new(Vec::with_capacity(
            1024 + 2 * (self.secret.len() + self.key.len() + self.store.len() + self.id.len()),
        ));
        serde_json::to_writer(&mut *buf, self)?;
        Ok(buf)
    }
}

impl Envelope {
    /// Split into the printable metadata and the secret.
    pub fn into_opened(self) -> Opened {
        Opened {
            meta: EnvelopeMeta {
                key: self.key,
                store: self.store,
                id: self.id,
                generation: self.generation,
                expires_at: self.expires_at,
                previous_valid_until: self.previous_valid_until,
                client_id: self.client_id,
            },
            secret: self.secret.into_secret(),
        }
    }
}

/// A decrypted envelope. `Debug` shows the metadata and `Secret(<redacted>)`.
#[derive(Debug)]
pub struct Opened {
    pub meta: EnvelopeMeta,
    pub secret: Secret,
}

/// How `keyward decrypt` / `keyward secret` print an opened envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// The secret alone, with a trailing newline.
    Raw,
    /// `KEYWARD_<NAME>_SECRET=...` and `KEYWARD_<NAME>_ID=...` lines (dotenv style), and
    /// `KEYWARD_<NAME>_CLIENT_ID=...` where the console showed a client id.
    Env,
    /// The envelope JSON (pretty-printed), as `age -d` would show it.
    Json,
}

/// `KEYWARD_<NAME>`: the key name upper-cased, every character other than A-Z/0-9 as `_`.
pub fn env_var_prefix(key_name: &str) -> String {
    let name: String = key_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("KEYWARD_{name}")
}

/// Quote a dotenv value only when it needs it (keyward secrets never do).
fn env_value(out: &mut String, v: &str) {
    let plain = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:/+=@".contains(&b));
    if plain {
        out.push_str(v);
    } else {
        out.push('\'');
        for c in v.chars() {
            if c == '\'' {
                out.push_str("'\\''");
            } else {
                out.push(c);
            }
        }
        out.push('\'');
    }
}

/// Render an opened envelope for output. The result holds the secret: it is zeroized on
/// drop, and callers must only print it where the user asked for it.
pub fn render(opened: &Opened, format: OutputFormat) -> Zeroizing<String> {
    let secret = opened.secret.expose();
    let mut out = Zeroizing::new(String::with_capacity(512 + 4 * secret.len()));
    match format {
        OutputFormat::Raw => {
            out.push_str(secret);
            out.push('\n');
        }
        OutputFormat::Env => {
            let p = env_var_prefix(&opened.meta.key);
            out.push_str(&p);
            out.push_str("_SECRET=");
            env_value(&mut out, secret);
            out.push('\n');
            out.push_str(&p);
            out.push_str("_ID=");
            env_value(&mut out, &opened.meta.id);
            out.push('\n');
            if let Some(client) = &opened.meta.client_id {
                out.push_str(&p);
                out.push_str("_CLIENT_ID=");
                env_value(&mut out, client);
                out.push('\n');
            }
        }
        OutputFormat::Json => {
            let doc = EnvelopeRef::new(&opened.meta, secret);
            // Serializing plain strings, numbers and timestamps to a String cannot fail.
            let mut buf = Zeroizing::new(Vec::with_capacity(out.capacity()));
            if serde_json::to_writer_pretty(&mut *buf, &doc).is_ok() {
                // Size the output exactly so growing it leaves no stray copy of the secret.
                let mut exact = Zeroizing::new(String::with_capacity(buf.len() + 1));
                exact.push_str(&String::from_utf8_lossy(&buf));
                exact.push('\n');
                return exact;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(name: &str, secret: &str) -> Opened {
        Opened {
            meta: EnvelopeMeta {
                key: name.into(),
                store: "alma-sandbox".into(),
                id: "abcdefgh23456723".into(),
                generation: 2,
                expires_at: None,
                previous_valid_until: None,
                client_id: None,
            },
            secret: Secret::from_string(secret.into()),
        }
    }

    #[test]
    fn env_format_upper_cases_and_replaces_dashes() {
        let o = opened("illiad-barcode.lookup", "kw_sbx_x_y");
        let text = render(&o, OutputFormat::Env);
        assert_eq!(
            text.as_str(),
            "KEYWARD_ILLIAD_BARCODE_LOOKUP_SECRET=kw_sbx_x_y\nKEYWARD_ILLIAD_BARCODE_LOOKUP_ID=abcdefgh23456723\n"
        );
        let odd = opened("k", "it's $x");
        assert_eq!(
            render(&odd, OutputFormat::Env).lines().next(),
            Some("KEYWARD_K_SECRET='it'\\''s $x'")
        );
    }

    #[test]
    fn a_console_client_id_is_shown_with_the_secret_and_absent_otherwise() {
        let mut o = opened("ops-bridge", "alm-secret");
        let plain = render(&o, OutputFormat::Json);
        assert!(!plain.contains("client_id"), "{}", plain.as_str());
        o.meta.client_id = Some("apikey-1".into());
        let v: serde_json::Value =
            serde_json::from_str(&render(&o, OutputFormat::Json)).expect("valid JSON");
        assert_eq!(v["client_id"], "apikey-1");
        let env = render(&o, OutputFormat::Env);
        assert!(
            env.ends_with("KEYWARD_OPS_BRIDGE_CLIENT_ID=apikey-1\n"),
            "{}",
            env.as_str()
        );
        let e: Envelope = serde_json::from_str(&v.to_string()).expect("parses");
        assert_eq!(e.into_opened().meta.client_id.as_deref(), Some("apikey-1"));
    }

    #[test]
    fn json_and_raw_formats_carry_the_secret() {
        let o = opened("k", "kw_sbx_secret");
        assert_eq!(render(&o, OutputFormat::Raw).as_str(), "kw_sbx_secret\n");
        let v: serde_json::Value =
            serde_json::from_str(&render(&o, OutputFormat::Json)).expect("valid JSON");
        assert_eq!(v["secret"], "kw_sbx_secret");
        assert_eq!(v["generation"], 2);
        assert_eq!(v["envelope_version"], 1);
    }

    #[test]
    fn debug_of_envelope_and_opened_hides_the_secret() {
        let json = r#"{"key":"k","store":"s","id":"i","generation":1,"secret":"kw_TOPSECRET"}"#;
        let e: Envelope = serde_json::from_str(json).expect("parses without optional fields");
        assert!(!format!("{e:?}").contains("TOPSECRET"));
        let o = e.into_opened();
        assert!(!format!("{o:?}").contains("TOPSECRET"));
        assert_eq!(o.secret.expose(), "kw_TOPSECRET");
    }
}
