//! Finding a recipient's private identities the way sops and rage users expect, and
//! `keygen` for a new age identity file.
//! Owns the search order and the identity file format. Must never put key material in an
//! error, a `Debug` string or a log line (only file names, sources and public fingerprints),
//! and must not read the process environment except in `IdentitySources::from_process_env`.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use secrecy::{ExposeSecret, SecretString};
use sha2::Digest;
use zeroize::Zeroizing;

use super::DeliverError;
use super::fsio::{MODE_PRIVATE, create_new_atomic};
use crate::recipient::clean_age_message;
use crate::spec::model::RecipientKey;

/// Env var holding identity text itself (one or more `AGE-SECRET-KEY-1...` lines).
pub const ENV_IDENTITY: &str = "KEYWARD_AGE_IDENTITY";
/// Env var naming an identity file.
pub const ENV_IDENTITY_FILE: &str = "KEYWARD_AGE_IDENTITY_FILE";
const ENV_SOPS_FILE: &str = "SOPS_AGE_KEY_FILE";
const ENV_SOPS_KEY: &str = "SOPS_AGE_KEY";
const ENV_XDG: &str = "XDG_CONFIG_HOME";
const ENV_HOME: &str = "HOME";

/// Asks the user for the passphrase of a protected SSH key; the argument is the whole
/// question ("Passphrase for SSH key PATH"), to show as it is. Return None when nobody can
/// answer (no terminal).
pub type PassphrasePrompt = Arc<dyn Fn(&str) -> Option<SecretString> + Send + Sync>;

/// Where identities are looked for: a home directory and environment variables, passed in
/// explicitly so tests (and callers) never need to change the process environment.
#[derive(Clone, Default)]
pub struct IdentitySources {
    pub home: Option<PathBuf>,
    /// Environment variables by name (only the ones this module reads matter).
    pub vars: BTreeMap<String, String>,
    /// How to ask for the passphrase of a protected SSH key. Without it such keys are
    /// skipped (default locations) or refused (`-i`). Asked at most once per key, and only
    /// when no earlier identity could open the file.
    pub passphrase: Option<PassphrasePrompt>,
}

impl Drop for IdentitySources {
    /// `KEYWARD_AGE_IDENTITY` / `SOPS_AGE_KEY` hold private keys: wipe the copies.
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for v in self.vars.values_mut() {
            v.zeroize();
        }
    }
}

impl std::fmt::Debug for IdentitySources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentitySources")
            .field("home", &self.home)
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .field("passphrase", &self.passphrase.as_ref().map(|_| "<prompt>"))
            .finish()
    }
}

/// age callbacks that ask through a `PassphrasePrompt` once and remember the answer.
#[derive(Clone)]
struct PromptOnce {
    prompt: PassphrasePrompt,
    label: String,
    answer: Arc<Mutex<Asked>>,
}

/// Whether the user was asked already (never ask twice, even after a refusal).
enum Asked {
    No,
    Declined,
    Given(Zeroizing<String>),
}

impl age::Callbacks for PromptOnce {
    fn display_message(&self, _: &str) {}
    fn confirm(&self, _: &str, _: &str, _: Option<&str>) -> Option<bool> {
        None
    }
    fn request_public_string(&self, _: &str) -> Option<String> {
        None
    }
    fn request_passphrase(&self, _description: &str) -> Option<SecretString> {
        let mut answer = self
            .answer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if matches!(*answer, Asked::No) {
            *answer = match (self.prompt)(&format!("Passphrase for SSH key {}", self.label)) {
                Some(given) => Asked::Given(Zeroizing::new(given.expose_secret().to_string())),
                None => Asked::Declined,
            };
        }
        match &*answer {
            Asked::Given(p) => Some(SecretString::from(p.as_str().to_string())),
            _ => None,
        }
    }
}

impl IdentitySources {
    /// Read `HOME`, `XDG_CONFIG_HOME`, `KEYWARD_AGE_IDENTITY(_FILE)`, `SOPS_AGE_KEY(_FILE)`
    /// from the process environment.
    pub fn from_process_env() -> Self {
        let mut vars = BTreeMap::new();
        for k in [
            ENV_IDENTITY,
            ENV_IDENTITY_FILE,
            ENV_SOPS_FILE,
            ENV_SOPS_KEY,
            ENV_XDG,
            ENV_HOME,
        ] {
            if let Ok(v) = std::env::var(k) {
                vars.insert(k.to_string(), v);
            }
        }
        let home = vars
            .get(ENV_HOME)
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        IdentitySources {
            home,
            vars,
            passphrase: None,
        }
    }

    pub fn new(home: Option<PathBuf>) -> Self {
        IdentitySources {
            home,
            vars: BTreeMap::new(),
            passphrase: None,
        }
    }

    /// Ask for passphrases of protected SSH keys with `prompt`.
    pub fn with_passphrase_prompt(mut self, prompt: PassphrasePrompt) -> Self {
        self.passphrase = Some(prompt);
        self
    }

    pub fn with_var(mut self, name: &str, value: impl Into<String>) -> Self {
        self.vars.insert(name.to_string(), value.into());
        self
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// `$XDG_CONFIG_HOME`, else `$HOME/.config`.
    fn config_dir(&self) -> Option<PathBuf> {
        self.var(ENV_XDG)
            .map(PathBuf::from)
            .or_else(|| self.home.as_ref().map(|h| h.join(".config")))
    }

    /// The default keyward identity file: `$XDG_CONFIG_HOME/keyward/identities.txt` (or
    /// `~/.config/keyward/identities.txt`), where `keyward keygen` writes by default.
    pub fn default_identity_file(&self) -> Option<PathBuf> {
        self.config_dir()
            .map(|c| c.join("keyward").join("identities.txt"))
    }
}

/// Where a loaded identity came from, with the public fingerprints it answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityOrigin {
    /// `-i <path>`, `KEYWARD_AGE_IDENTITY`, or a file path.
    pub source: String,
    /// `RecipientKey` fingerprints (as in manifests) of the identities from this source.
    pub fingerprints: Vec<String>,
}

struct Entry {
    identity: Box<dyn age::Identity + Send + Sync>,
    /// For passphrase-protected SSH keys: the stanza tag a file must carry for this
    /// identity to be tried (so the passphrase is asked only when it can help).
    only_for: Option<[u8; 4]>,
}

/// Identities found for decryption, in search order. `Debug` shows sources only.
#[derive(Default)]
pub struct Identities {
    list: Vec<Entry>,
    pub origins: Vec<IdentityOrigin>,
    /// Sources skipped (e.g. a passphrase-protected SSH key), for error messages.
    pub notes: Vec<String>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("count", &self.list.len())
            .field("origins", &self.origins)
            .field("notes", &self.notes)
            .finish()
    }
}

impl Identities {
    pub fn len(&self) -> usize {
        self.list.len()
    }
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
    /// The identities, for `age::Decryptor::decrypt`.
    pub fn iter(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.list
            .iter()
            .map(|e| e.identity.as_ref() as &dyn age::Identity)
    }
    /// The identities worth trying on `ciphertext`: all, except protected SSH keys that
    /// have no stanza in its header.
    pub(crate) fn candidates(&self, ciphertext: &[u8]) -> Vec<&dyn age::Identity> {
        let tags = if self.list.iter().any(|e| e.only_for.is_some()) {
            ssh_stanza_tags(ciphertext)
        } else {
            None
        };
        self.list
            .iter()
            .filter(|e| match (&e.only_for, &tags) {
                (Some(tag), Some(tags)) => tags.contains(tag),
                _ => true,
            })
            .map(|e| e.identity.as_ref() as &dyn age::Identity)
            .collect()
    }
    /// Every public fingerprint these identities answer to.
    pub fn fingerprints(&self) -> Vec<String> {
        self.origins
            .iter()
            .flat_map(|o| o.fingerprints.iter().cloned())
            .collect()
    }
    /// `sha256:... (source)` strings for error messages.
    pub fn describe(&self) -> Vec<String> {
        self.origins
            .iter()
            .map(|o| {
                if o.fingerprints.is_empty() {
                    o.source.clone()
                } else {
                    format!("{} ({})", o.fingerprints.join(", "), o.source)
                }
            })
            .collect()
    }
    /// Add one X25519 identity (e.g. one generated in a test or by `keygen`).
    pub fn push_x25519(&mut self, source: &str, identity: age::x25519::Identity) {
        let fp = RecipientKey::new(&identity.to_public().to_string()).fingerprint;
        self.list.push(Entry {
            identity: Box::new(identity),
            only_for: None,
        });
        self.origins.push(IdentityOrigin {
            source: source.to_string(),
            fingerprints: vec![fp],
        });
    }
}

/// What a search step does when its file is missing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum IfMissing {
    /// Configured explicitly (`-i`, an env var): a missing file is an error.
    Fail,
    /// A default location: skip silently.
    Skip,
    /// A default SSH key (`~/.ssh/id_*`, which many tools share): skip when missing, and
    /// skip with a note when it cannot be used (protected, unsupported type).
    SkipUnusable,
}

/// Find identities. With explicit `-i` files, only those are used (as with age/rage).
/// Otherwise every source that exists is used, in this order:
/// 1. `KEYWARD_AGE_IDENTITY` (identity text in the variable),
/// 2. `KEYWARD_AGE_IDENTITY_FILE`,
/// 3. `$XDG_CONFIG_HOME/keyward/identities.txt` (or `~/.config/keyward/identities.txt`),
/// 4. the sops key: `SOPS_AGE_KEY`, `SOPS_AGE_KEY_FILE` or `$XDG_CONFIG_HOME/sops/age/keys.txt`
///    (or `~/.config/sops/age/keys.txt`),
/// 5. `~/.ssh/id_ed25519`, `~/.ssh/id_rsa` (OpenSSH keys). A passphrase-protected key is
///    used only when `sources.passphrase` can ask for the passphrase (once, and only for a
///    file that has a stanza for that key); otherwise it is skipped with a note (or refused
///    when given with `-i`).
///
/// A file is an age identity file (`AGE-SECRET-KEY-1...` lines, `#` comments) or an SSH
/// private key (detected by `-----BEGIN`). Fails with `NoIdentities` listing what was searched.
pub fn find_identities(
    sources: &IdentitySources,
    explicit: &[PathBuf],
) -> Result<Identities, DeliverError> {
    let mut ids = Identities::default();
    let mut searched = Vec::new();
    let prompt = sources.passphrase.as_ref();
    for source in search_order(sources, explicit) {
        match source {
            Source::Text { var, text } => {
                searched.push(var.to_string());
                load_text(&mut ids, prompt, &Zeroizing::new(text.to_string()), var)?;
            }
            Source::File {
                path,
                searched: listed,
                origin,
                if_missing,
            } => {
                searched.push(listed);
                load_file(&mut ids, prompt, &path, &origin, if_missing)?;
            }
        }
    }
    if ids.is_empty() {
        return Err(DeliverError::NoIdentities {
            searched,
            notes: ids.notes,
        });
    }
    Ok(ids)
}

/// One place `find_identities` reads identities from.
enum Source<'a> {
    /// Identity text in the environment variable `var`.
    Text { var: &'static str, text: &'a str },
    /// A file; `searched` is how the `NoIdentities` error lists it, `origin` how the
    /// identities it holds are named.
    File {
        path: PathBuf,
        searched: String,
        origin: String,
        if_missing: IfMissing,
    },
}

impl Source<'_> {
    /// A file listed and named as `shown`.
    fn named(path: PathBuf, shown: String, if_missing: IfMissing) -> Self {
        Source::File {
            path,
            searched: shown.clone(),
            origin: shown,
            if_missing,
        }
    }

    /// A file named where it is found: `searched` and `origin` are both its path.
    fn at(path: PathBuf, if_missing: IfMissing) -> Self {
        let shown = path.display().to_string();
        Self::named(path, shown, if_missing)
    }

    /// A file named by the environment variable `var` (`VAR=path` in the error).
    fn from_var(var: &str, path: &str) -> Self {
        let path = PathBuf::from(path);
        let searched = format!("{var}={}", path.display());
        let origin = path.display().to_string();
        Source::File {
            path,
            searched,
            origin,
            if_missing: IfMissing::Fail,
        }
    }
}

/// The sources `find_identities` reads, in its documented order: the `-i` files alone when
/// given, otherwise the environment, the default files and the default SSH keys.
fn search_order<'a>(sources: &'a IdentitySources, explicit: &[PathBuf]) -> Vec<Source<'a>> {
    if !explicit.is_empty() {
        return explicit
            .iter()
            .map(|p| Source::named(p.clone(), format!("-i {}", p.display()), IfMissing::Fail))
            .collect();
    }
    let text = |var: &'static str| sources.var(var).map(|text| Source::Text { var, text });
    let file = |var: &'static str| sources.var(var).map(|p| Source::from_var(var, p));
    let mut order: Vec<Source> = Vec::new();
    order.extend(text(ENV_IDENTITY));
    order.extend(file(ENV_IDENTITY_FILE));
    order.extend(
        sources
            .default_identity_file()
            .map(|p| Source::at(p, IfMissing::Skip)),
    );
    order.extend(text(ENV_SOPS_KEY));
    order.extend(file(ENV_SOPS_FILE).or_else(|| {
        sources
            .config_dir()
            .map(|c| Source::at(c.join("sops").join("age").join("keys.txt"), IfMissing::Skip))
    }));
    if let Some(home) = &sources.home {
        for name in ["id_ed25519", "id_rsa"] {
            order.push(Source::at(
                home.join(".ssh").join(name),
                IfMissing::SkipUnusable,
            ));
        }
    }
    order
}

fn load_file(
    ids: &mut Identities,
    prompt: Option<&PassphrasePrompt>,
    path: &Path,
    origin: &str,
    if_missing: IfMissing,
) -> Result<(), DeliverError> {
    let loaded = match read_identity_file(path, origin, if_missing) {
        Ok(Some(text)) => load_text(ids, prompt, &text, origin),
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    match loaded {
        // A default SSH key we cannot use must not stop the search: note it and go on.
        Err(e @ (DeliverError::Identity { .. } | DeliverError::Io { .. }))
            if if_missing == IfMissing::SkipUnusable =>
        {
            ids.notes.push(format!("{e} (skipped)"));
            Ok(())
        }
        other => other,
    }
}

/// The text of an identity file; None when it is missing and `if_missing` allows that.
fn read_identity_file(
    path: &Path,
    origin: &str,
    if_missing: IfMissing,
) -> Result<Option<Zeroizing<String>>, DeliverError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && if_missing != IfMissing::Fail => {
            return Ok(None);
        }
        Err(e) => return Err(DeliverError::io("read identity file", path, e)),
    };
    match std::str::from_utf8(&bytes) {
        Ok(t) => Ok(Some(Zeroizing::new(t.to_string()))),
        Err(_) => Err(identity_err(
            origin,
            "not a text file (expected an age identity file or an OpenSSH private key)",
        )),
    }
}

fn identity_err(origin: &str, message: impl Into<String>) -> DeliverError {
    DeliverError::Identity {
        origin: origin.to_string(),
        message: message.into(),
    }
}

fn load_text(
    ids: &mut Identities,
    prompt: Option<&PassphrasePrompt>,
    text: &str,
    origin: &str,
) -> Result<(), DeliverError> {
    let t = text.trim_start();
    if t.starts_with("-----BEGIN AGE ENCRYPTED FILE-----") || t.starts_with("age-encryption.org/") {
        return Err(identity_err(
            origin,
            "passphrase-encrypted identity files are not supported yet; decrypt it to a 0600 file first (`age -d`)",
        ));
    }
    if t.starts_with("-----BEGIN") {
        return load_ssh(ids, prompt, text, origin);
    }
    // age identity file: parse with age's own parser (which never echoes lines), and
    // compute the public fingerprints for messages from the same lines.
    let file = age::IdentityFile::from_buffer(text.as_bytes())
        .map_err(|e| identity_err(origin, clean_age_message(&e.to_string())))?;
    let mut fingerprints = Vec::new();
    for line in text.as_bytes().lines() {
        let line = Zeroizing::new(line.map_err(|_| identity_err(origin, "not valid text"))?);
        let parsed = line
            .starts_with("AGE-SECRET-KEY-1")
            .then(|| age::x25519::Identity::from_str(&line).ok())
            .flatten();
        if let Some(id) = parsed {
            fingerprints.push(RecipientKey::new(&id.to_public().to_string()).fingerprint);
        }
    }
    let list = file
        .into_identities()
        .map_err(|e| identity_err(origin, clean_age_message(&e.to_string())))?;
    if list.is_empty() {
        return Err(identity_err(
            origin,
            "contains no identities (expected `AGE-SECRET-KEY-1...` lines)",
        ));
    }
    ids.list.extend(list.into_iter().map(|b| Entry {
        identity: b as Box<dyn age::Identity + Send + Sync>,
        only_for: None,
    }));
    ids.origins.push(IdentityOrigin {
        source: origin.to_string(),
        fingerprints,
    });
    Ok(())
}

fn load_ssh(
    ids: &mut Identities,
    prompt: Option<&PassphrasePrompt>,
    text: &str,
    origin: &str,
) -> Result<(), DeliverError> {
    use age::ssh::{Identity as SshIdentity, UnsupportedKey};
    let identity =
        SshIdentity::from_buffer(text.as_bytes(), Some(origin.to_string())).map_err(|_| {
            identity_err(
                origin,
                "not a valid OpenSSH private key (or an unsupported format)",
            )
        })?;
    let mut protected = false;
    match &identity {
        SshIdentity::Unencrypted(_) => {}
        SshIdentity::Encrypted(_) if prompt.is_some() => protected = true,
        SshIdentity::Encrypted(_) => {
            return Err(identity_err(
                origin,
                "passphrase-protected SSH keys are not supported here (no terminal to ask for the passphrase); \
                 use an age identity (`keyward keygen`) or an unencrypted copy of the key",
            ));
        }
        SshIdentity::Unsupported(k) => {
            let why = match k {
                UnsupportedKey::EncryptedPem => {
                    "an encrypted PEM key (convert with `ssh-keygen -o -p`)".into()
                }
                UnsupportedKey::EncryptedSsh(c) => {
                    format!("encrypted with an unsupported cipher ({c})")
                }
                UnsupportedKey::Hardware(t) => format!("a hardware security key ({t})"),
                UnsupportedKey::Type(t) => format!("an unsupported key type ({t})"),
            };
            return Err(identity_err(origin, format!("this SSH key is {why}")));
        }
    }
    let public = openssh_public_key(text);
    let fingerprints = public
        .iter()
        .map(|(p, _)| RecipientKey::new(p).fingerprint)
        .collect();
    // A protected key is only offered a file that has a stanza for it, so nobody is asked
    // for a passphrase for a file that key cannot open.
    let only_for = public.as_ref().filter(|_| protected).map(|(_, tag)| *tag);
    match prompt.filter(|_| protected) {
        Some(prompt) => ids.list.push(Entry {
            identity: Box::new(identity.with_callbacks(PromptOnce {
                prompt: prompt.clone(),
                // The file's path: "Passphrase for SSH key PATH", not "... key -i PATH".
                label: origin.strip_prefix("-i ").unwrap_or(origin).to_string(),
                answer: Arc::new(Mutex::new(Asked::No)),
            })),
            only_for,
        }),
        None => ids.list.push(Entry {
            identity: Box::new(identity),
            only_for: None,
        }),
    }
    ids.origins.push(IdentityOrigin {
        source: origin.to_string(),
        fingerprints,
    });
    Ok(())
}

/// The public key line (`ssh-ed25519 AAAA...`) stored in the clear header of an
/// `openssh-key-v1` private key file, or None for other formats.
/// Returns the public key line and age's 4-byte stanza tag for it (SHA-256 of the blob).
fn openssh_public_key(text: &str) -> Option<(String, [u8; 4])> {
    let body: Zeroizing<String> = Zeroizing::new(
        text.lines()
            .skip_while(|l| !l.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .flat_map(|l| l.trim().chars())
            .collect(),
    );
    let raw = base64_decode(&body)?;
    let mut rest: &[u8] = raw.strip_prefix(b"openssh-key-v1\0")?;
    for _ in 0..3 {
        take_string(&mut rest)?; // cipher name, kdf name, kdf options
    }
    if take_u32(&mut rest)? != 1 {
        return None;
    }
    let blob = take_string(&mut rest)?;
    let kind_len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    let kind = std::str::from_utf8(blob.get(4..4 + kind_len)?).ok()?;
    let digest = sha2::Sha256::digest(blob);
    let tag = [digest[0], digest[1], digest[2], digest[3]];
    Some((ssh_public_key_text(kind, blob), tag))
}

/// The tags of the SSH stanzas in an age file's header (`-> ssh-ed25519 TAG ...`), or None
/// when the header cannot be read (then nothing is filtered).
pub(crate) fn ssh_stanza_tags(ciphertext: &[u8]) -> Option<Vec<[u8; 4]>> {
    use std::io::Read;
    let mut binary = Vec::new();
    age::armor::ArmoredReader::new(ciphertext)
        .take(1 << 21)
        .read_to_end(&mut binary)
        .ok()?;
    let end = binary.windows(4).position(|w| w == b"\n---")?;
    let header = std::str::from_utf8(&binary[..end]).ok()?;
    let mut tags = Vec::new();
    for line in header.lines() {
        let mut parts = line.split(' ');
        if parts.next() != Some("->") || !matches!(parts.next(), Some("ssh-ed25519" | "ssh-rsa")) {
            continue;
        }
        let raw = base64_decode(parts.next()?)?;
        tags.push(<[u8; 4]>::try_from(raw.as_slice()).ok()?);
    }
    Some(tags)
}

fn take_string<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = take_u32(rest)? as usize;
    let field = rest.get(..len)?;
    *rest = &rest[len..];
    Some(field)
}

fn take_u32(rest: &mut &[u8]) -> Option<u32> {
    let v = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    *rest = &rest[4..];
    Some(v)
}

fn base64_decode(s: &str) -> Option<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::with_capacity(s.len() / 4 * 3 + 3));
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// `"<kind> <base64 blob>"`: an SSH public key line (no comment) from the wire-format blob.
pub fn ssh_public_key_text(kind: &str, blob: &[u8]) -> String {
    format!("{kind} {}", base64(blob))
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// Write a new X25519 identity to `path` in age-keygen's format
/// (`# created: ...`, `# public key: age1...`, `AGE-SECRET-KEY-1...`), mode 0600, created
/// atomically; refuses to overwrite an existing file. Creates missing parent directories
/// (mode per umask). Returns the public recipient (`age1...`).
pub fn keygen(path: &Path) -> Result<String, DeliverError> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(DeliverError::AlreadyExists {
            path: path.to_path_buf(),
        });
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        super::fsio::create_dir_durable(parent)?;
    }
    let identity = age::x25519::Identity::generate();
    let public = identity.to_public().to_string();
    let created = chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let secret = identity.to_string();
    let mut text = Zeroizing::new(String::with_capacity(256));
    text.push_str("# created: ");
    text.push_str(&created);
    text.push_str("\n# public key: ");
    text.push_str(&public);
    text.push('\n');
    text.push_str(secret.expose_secret());
    text.push('\n');
    create_new_atomic(path, text.as_bytes(), MODE_PRIVATE)?;
    Ok(public)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn a_bad_identity_line_is_reported_without_its_content() {
        let mut ids = Identities::default();
        let err = load_text(
            &mut ids,
            None,
            "# c\nAGE-SECRET-KEY-1NOTAREALKEYXYZ\n",
            "test",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(!msg.contains("NOTAREALKEY"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
    }
}
