//! Sealing envelopes to recipients with age (ASCII-armored) and opening them again.
//! Owns the age encryption/decryption calls. Must not touch the outbox layout or find
//! identities; plaintext only ever sits in zeroizing memory, never in a file or an error.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use age::armor::{ArmoredReader, ArmoredWriter, Format};
use zeroize::Zeroizing;

use super::DeliverError;
use super::envelope::{Envelope, EnvelopeMeta, EnvelopeRef, Opened};
use super::error::json_error_summary;
use super::identity::Identities;
use super::manifest::{MANIFEST_FILE, Manifest, RecipientKind};
use crate::recipient::{self, clean_age_message};
use crate::secret::Secret;
use crate::spec::model::{Principal, RecipientKey};

/// Largest envelope plaintext accepted when decrypting (a real one is well under 1 KiB).
const MAX_PLAINTEXT: usize = 64 * 1024;
/// Largest ciphertext file read.
const MAX_CIPHERTEXT: u64 = 1024 * 1024;

/// One principal's sealed envelope, ready for [`super::Outbox::write_pending`].
/// Holds only ciphertext and public data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedFile {
    pub principal_id: String,
    pub kind: RecipientKind,
    /// Fingerprints of the public keys it was sealed to (`RecipientKey::fingerprint`).
    pub fingerprints: Vec<String>,
    /// ASCII-armored age file.
    pub armored: String,
}

fn seal_inner(
    plaintext: &[u8],
    principal: &str,
    recipients: &[RecipientKey],
) -> Result<String, DeliverError> {
    if recipients.is_empty() {
        return Err(DeliverError::NoRecipients {
            principal: principal.to_string(),
        });
    }
    let parsed = recipients
        .iter()
        .enumerate()
        .map(|(i, r)| {
            recipient::parse(&r.text).map_err(|source| DeliverError::Recipient {
                principal: principal.to_string(),
                index: i + 1,
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let encryptor = age::Encryptor::with_recipients(parsed.iter().map(|p| p.as_recipient()))
        .map_err(|e| DeliverError::Encrypt(clean_age_message(&e.to_string())))?;
    let io_err = |e: std::io::Error| DeliverError::Encrypt(clean_age_message(&e.to_string()));
    let armor = ArmoredWriter::wrap_output(
        Vec::with_capacity(plaintext.len() * 2 + 1024),
        Format::AsciiArmor,
    )
    .map_err(io_err)?;
    let mut stream = encryptor.wrap_output(armor).map_err(io_err)?;
    stream.write_all(plaintext).map_err(io_err)?;
    // Both finish() calls are required: the stream's writes the last chunk, the armor's
    // writes the end marker. Missing either gives a truncated file.
    let armor = stream.finish().map_err(io_err)?;
    let bytes = armor.finish().map_err(io_err)?;
    String::from_utf8(bytes)
        .map_err(|_| DeliverError::Internal("age armor produced non-UTF-8 output".into()))
}

/// Seal arbitrary plaintext (e.g. an envelope JSON built elsewhere) to `recipients`, all in
/// one ASCII-armored age file.
pub fn seal_bytes(plaintext: &[u8], recipients: &[RecipientKey]) -> Result<String, DeliverError> {
    seal_inner(plaintext, "(recipient list)", recipients)
}

/// Build the envelope for `meta` + `secret` in a zeroizing buffer and seal it to
/// `recipients` (one file for all of them). Returns the ASCII-armored age text.
pub fn seal(
    meta: &EnvelopeMeta,
    secret: &Secret,
    recipients: &[RecipientKey],
) -> Result<String, DeliverError> {
    let json = envelope_json(meta, secret)?;
    seal_inner(&json, "(recipient list)", recipients)
}

fn envelope_json(meta: &EnvelopeMeta, secret: &Secret) -> Result<Zeroizing<Vec<u8>>, DeliverError> {
    EnvelopeRef::new(meta, secret.expose())
        .to_json()
        .map_err(|e| {
            DeliverError::Internal(format!(
                "could not build the envelope: {}",
                json_error_summary(&e)
            ))
        })
}

/// Seal the envelope once per principal (each file holds all of that principal's keys).
/// Principals are delivered in the order given; duplicates are refused.
pub fn seal_for_principals(
    meta: &EnvelopeMeta,
    secret: &Secret,
    principals: &[&Principal],
) -> Result<Vec<SealedFile>, DeliverError> {
    let json = envelope_json(meta, secret)?;
    let mut out: Vec<SealedFile> = Vec::with_capacity(principals.len());
    for p in principals {
        if out.iter().any(|s| s.principal_id == p.id) {
            return Err(DeliverError::Internal(format!(
                "principal `{}` listed twice for {}",
                p.id, meta.key
            )));
        }
        let armored = seal_inner(&json, &p.id, &p.recipients)?;
        out.push(SealedFile {
            principal_id: p.id.clone(),
            kind: p.kind.into(),
            fingerprints: p.recipients.iter().map(|r| r.fingerprint.clone()).collect(),
            armored,
        });
    }
    Ok(out)
}

enum Failure {
    NoMatch,
    Other(String),
}

/// Decrypt age (armored or binary) into a zeroizing buffer.
fn decrypt_raw(ciphertext: &[u8], identities: &Identities) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let clean = |e: &dyn std::fmt::Display| Failure::Other(clean_age_message(&e.to_string()));
    let decryptor = age::Decryptor::new_buffered(ArmoredReader::new(ciphertext)).map_err(|e| {
        // Reading from memory, every header error means the input is not (intact) age.
        Failure::Other(format!(
            "not an age file (or a damaged one): {}",
            clean_age_message(&e.to_string())
        ))
    })?;
    if decryptor.is_scrypt() {
        return Err(Failure::Other(
            "it is passphrase-encrypted; keyward deliveries are sealed to public keys (use `age -d` for this file)"
                .into(),
        ));
    }
    let candidates = identities.candidates(ciphertext);
    let mut reader = decryptor
        .decrypt(candidates.into_iter())
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => Failure::NoMatch,
            age::DecryptError::KeyDecryptionFailed => Failure::Other(
                "the SSH key's passphrase is wrong (or the key file is damaged)".into(),
            ),
            other => clean(&other),
        })?;
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_PLAINTEXT + 1));
    (&mut reader)
        .take(MAX_PLAINTEXT as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| clean(&e))?;
    if buf.len() > MAX_PLAINTEXT {
        return Err(Failure::Other(format!(
            "the plaintext is larger than {MAX_PLAINTEXT} bytes; not an envelope"
        )));
    }
    Ok(buf)
}

fn parse_envelope(plain: &[u8], path: &Path) -> Result<Opened, DeliverError> {
    let env: Envelope = serde_json::from_slice(plain).map_err(|e| DeliverError::NotAnEnvelope {
        path: path.to_path_buf(),
        message: json_error_summary(&e),
    })?;
    Ok(env.into_opened())
}

fn open_inner(
    ciphertext: &[u8],
    identities: &Identities,
    path: &Path,
) -> Result<Opened, DeliverError> {
    match decrypt_raw(ciphertext, identities) {
        Ok(plain) => parse_envelope(&plain, path),
        Err(Failure::Other(message)) => Err(DeliverError::Decrypt {
            path: path.to_path_buf(),
            message,
        }),
        Err(Failure::NoMatch) => Err(no_match(path, identities)),
    }
}

/// The "no identity matches" error, naming the principal and fingerprints from the
/// manifest beside the file when there is one.
fn no_match(path: &Path, identities: &Identities) -> DeliverError {
    let mut for_whom = "an unknown recipient (no manifest.json beside it)".to_string();
    let mut fingerprints = Vec::new();
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
        let manifest_path = dir.join(MANIFEST_FILE);
        if let Ok(m) = Manifest::read(&manifest_path) {
            let name = name.to_string_lossy();
            if let Some(r) = m.recipients.iter().find(|r| r.file == name) {
                for_whom = format!("`{}` ({})", r.id, r.kind.as_str());
                fingerprints = r.fingerprints.clone();
            }
        }
    }
    DeliverError::NoMatchingIdentity {
        path: path.to_path_buf(),
        for_whom,
        fingerprints,
        tried: identities.describe(),
        notes: identities.notes.clone(),
    }
}

/// Decrypt an envelope held in memory. `label` names it in errors (e.g. `<stdin>`).
pub fn decrypt_bytes(
    ciphertext: &[u8],
    identities: &Identities,
    label: &str,
) -> Result<Opened, DeliverError> {
    open_inner(ciphertext, identities, &PathBuf::from(label))
}

/// Read `path` (ASCII-armored or binary age) and decrypt it with `identities`.
/// Fails with [`DeliverError::NoMatchingIdentity`] naming who the file is for when none fits.
pub fn decrypt_file(path: &Path, identities: &Identities) -> Result<Opened, DeliverError> {
    let bytes = read_ciphertext(path)?;
    open_inner(&bytes, identities, path)
}

pub(crate) fn read_ciphertext(path: &Path) -> Result<Vec<u8>, DeliverError> {
    let f = std::fs::File::open(path).map_err(|e| DeliverError::io("open", path, e))?;
    let mut bytes = Vec::new();
    f.take(MAX_CIPHERTEXT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| DeliverError::io("read", path, e))?;
    if bytes.len() as u64 > MAX_CIPHERTEXT {
        return Err(DeliverError::Decrypt {
            path: path.to_path_buf(),
            message: format!("larger than {MAX_CIPHERTEXT} bytes; not a keyward envelope"),
        });
    }
    Ok(bytes)
}
